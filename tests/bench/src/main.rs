//! `outrigger-bench`: parses flags and runs the harness, or (re-executed by the harness with a
//! hidden subcommand) one of its own servers in a process of its own. Everything else is in
//! the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use outrigger_bench::{Scenario, Settings};

#[derive(Parser, Debug)]
#[command(
    name = "outrigger-bench",
    about = "Benchmarks the outrigger sidecar against direct calls and peer proxies (issues 6 and 15)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// A few seconds in all, small rates; fails when any request fails. Never checks timing.
    #[arg(long)]
    smoke: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the Markdown report to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Scenarios to run, comma-separated (default: all): direct-http, direct-grpc,
    /// invoke-http, proxy-http, nginx-http, haproxy-http, invoke-bolt.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Seconds per phase (default 5; smoke 0.25).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Open-loop rates in requests per second, comma-separated (default 1000,10000).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<u64>,
    /// Closed-loop concurrencies, comma-separated (default 1,16,64).
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Connections (HTTP) or streams (gRPC) in the open-loop phases (default 64).
    #[arg(long)]
    connections: Option<usize>,
    /// Most requests in one phase.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Tokio worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Worker-thread counts to sweep, comma-separated (default 1; 0: one per core): every
    /// proxy scenario runs once per count, the sidecar with that many worker threads,
    /// nginx with that many worker processes, HAProxy with that many threads. The first count
    /// is the one scenarios are compared at. `--sidecar-threads N` is the same flag.
    #[arg(long, value_delimiter = ',', visible_alias = "sidecar-threads")]
    threads: Vec<usize>,
    /// The outrigger binary (default: next to this executable, rebuilt first when run by cargo).
    #[arg(long, env = "OUTRIGGER_BIN", value_name = "PATH")]
    sidecar_bin: Option<PathBuf>,
    /// Do not rebuild the outrigger binary before the run.
    #[arg(long)]
    no_build: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The 1 KiB HTTP/1.1 upstream (started by the harness).
    #[command(hide = true)]
    Upstream {
        #[arg(long)]
        addr_file: PathBuf,
    },
    /// The gRPC floor server (started by the harness).
    #[command(hide = true)]
    Echo {
        #[arg(long)]
        addr_file: PathBuf,
    },
    /// The 1 KiB Bolt v1 upstream (started by the harness).
    #[command(hide = true)]
    BoltUpstream {
        #[arg(long)]
        addr_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let served = match &cli.command {
        Some(Command::Upstream { addr_file }) => Some(outrigger_bench::run_upstream(addr_file)),
        Some(Command::Echo { addr_file }) => Some(outrigger_bench::run_echo(addr_file)),
        Some(Command::BoltUpstream { addr_file }) => {
            Some(outrigger_bench::run_bolt_upstream(addr_file))
        }
        None => None,
    };
    if let Some(result) = served {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outrigger-bench server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match bench(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("outrigger-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let exe = std::env::current_exe().context("cannot find this executable")?;
    let sidecar_bin = match &cli.sidecar_bin {
        Some(p) => p.clone(),
        None => {
            let bin = outrigger_bench::sidecar_next_to(&exe);
            // Under `cargo run` / `cargo test`, rebuild the sidecar so a stale binary is never
            // measured.
            if let Some(cargo) = std::env::var_os("CARGO").filter(|_| !cli.no_build) {
                eprintln!("outrigger-bench: building outrigger ({})", bin.display());
                outrigger_bench::build_sidecar(PathBuf::from(cargo).as_path(), &exe)?;
            }
            bin
        }
    };
    let mut s = if cli.smoke {
        Settings::smoke(exe, sidecar_bin)
    } else {
        Settings::full(exe, sidecar_bin)
    };
    if !cli.scenarios.is_empty() {
        s.scenarios = cli
            .scenarios
            .iter()
            .map(|n| n.parse::<Scenario>())
            .collect::<Result<_, _>>()?;
    }
    if let Some(d) = cli.duration_secs {
        anyhow::ensure!(d > 0.0 && d.is_finite(), "--duration-secs must be positive");
        s.phase = Duration::from_secs_f64(d);
    }
    if !cli.rates.is_empty() {
        s.rates = cli.rates.clone();
    }
    if !cli.concurrency.is_empty() {
        s.concurrency = cli.concurrency.clone();
    }
    if let Some(c) = cli.connections {
        s.open_loop_connections = c.max(1);
    }
    if let Some(m) = cli.max_requests {
        s.max_requests = m.max(1);
    }
    if !cli.threads.is_empty() {
        s.threads.clear();
        for &t in &cli.threads {
            if !s.threads.contains(&t) {
                s.threads.push(t);
            }
        }
    }
    Ok(s)
}

fn bench(cli: &Cli) -> anyhow::Result<ExitCode> {
    let settings = settings(cli)?;
    let command = std::iter::once("outrigger-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.client_threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the load generator's runtime")?;
    let mut progress = std::io::stderr();
    let report = rt.block_on(outrigger_bench::run(&settings, command, &mut progress))?;
    rt.shutdown_timeout(Duration::from_secs(1));

    let markdown = report.to_markdown();
    println!("{markdown}");
    if let Some(path) = &cli.markdown {
        std::fs::write(path, &markdown)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &cli.json {
        std::fs::write(path, report.to_json()?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("outrigger-bench: JSON written to {}", path.display());
    }
    let failures = report.smoke_failures();
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("outrigger-bench: {} problem(s):", failures.len());
    for f in &failures {
        eprintln!("  - {f}");
    }
    // Failed requests fail a smoke run; a full run reports them and still succeeds, since
    // overload errors at high rates are results.
    Ok(if cli.smoke {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
