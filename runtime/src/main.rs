//! `outrigger`: the sidecar binary. Parses flags, sets up logging and metrics, and runs either
//! the sidecar on a config file or the built-in demo. Everything else is in the library.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use outrigger_config::{IdentityConfig, OperatorEndpoint, Protocol};
use outrigger_runtime::{Demo, InboundApp, Metrics, Options, Overrides, Sidecar, wait_for_signal};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a call allocates a few dozen times (headers, boxed
/// futures, h2 and hyper buffers), and with one runtime per thread glibc's arenas cost a quarter
/// of the CPU per request at 2 threads (BENCHMARKS.md, issue 21); mimalloc's thread-local free
/// lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a config that cannot be used (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "outrigger",
    version,
    about = "Outrigger sidecar runtime: Layotto/Dapr-compatible InvokeService on a MOSN-style proxy core"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The runtime.yaml to serve; watched and hot-reloaded.
    #[arg(
        long,
        short = 'c',
        env = "OUTRIGGER_CONFIG",
        default_value = "/etc/outrigger/runtime.yaml",
        global = true
    )]
    config: PathBuf,
    /// Replaces `grpc.address` (host:port or unix:///path).
    #[arg(long, global = true)]
    grpc_address: Option<String>,
    /// A unix socket the gRPC API also accepts on (the injector sets it for
    /// `outrigger.dev/api-socket`).
    #[arg(long, global = true)]
    grpc_socket: Option<PathBuf>,
    /// Worker threads serving connections, each with its own runtime and its own
    /// `SO_REUSEPORT` socket of every address; 0: one per CPU the process may use (its CPU
    /// limit or affinity).
    #[arg(long, env = "OUTRIGGER_THREADS", default_value_t = 0, global = true)]
    threads: usize,
    /// Replaces `admin.address` (host:port).
    #[arg(long, global = true)]
    admin_address: Option<String>,
    /// Replaces `httpApi.address` (host:port), Dapr's HTTP API.
    #[arg(long, global = true)]
    http_api_address: Option<String>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, env = "OUTRIGGER_LOG", default_value = "info", global = true)]
    log_level: String,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text", global = true)]
    log_format: String,
    /// How often the config file is checked for changes, in milliseconds.
    #[arg(long, default_value_t = 1000, global = true)]
    watch_interval_ms: u64,
    /// How long in-flight calls may take to finish on shutdown, in milliseconds.
    #[arg(long, default_value_t = 10_000, global = true)]
    drain_timeout_ms: u64,
    /// Adds the listener `inbound` forwarding to the app on this loopback port (the injector
    /// sets it from `outrigger.dev/app-port`).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    inbound_app_port: Option<u16>,
    /// What the app behind `inbound` speaks (`outrigger.dev/app-protocol`).
    #[arg(long, global = true, value_parser = ["http", "http2", "bolt", "dubbo", "auto"], default_value = "auto")]
    inbound_app_protocol: String,
    /// Where the `inbound` listener accepts.
    #[arg(long, global = true, default_value = "0.0.0.0:34906")]
    inbound_address: String,
    /// The credential bundle (PEM key, then chain), when the file sets no `identity`.
    #[arg(
        long,
        global = true,
        group = "identity_source",
        requires = "identity_trust_bundle"
    )]
    identity_credential_bundle: Option<String>,
    /// The operator's identity endpoint (`host:port`), to get the certificate from instead of a
    /// file, when the file sets no `identity`.
    #[arg(
        long,
        global = true,
        group = "identity_source",
        requires_all = ["identity_trust_bundle", "identity_csr_token"]
    )]
    identity_csr_endpoint: Option<String>,
    /// The name the identity endpoint's certificate carries; default: the endpoint's host.
    #[arg(long, global = true, requires = "identity_csr_endpoint")]
    identity_csr_server_name: Option<String>,
    /// The projected ServiceAccount token (audience `identity.outrigger.dev`) the identity
    /// endpoint is called with.
    #[arg(long, global = true, requires = "identity_csr_endpoint")]
    identity_csr_token: Option<String>,
    /// The trust bundle (PEM roots), with a credential bundle or the identity endpoint.
    #[arg(long, global = true, requires = "identity_source")]
    identity_trust_bundle: Option<String>,
    /// The operator's discovery endpoint (`host:port`), where clusters with `discovery` learn
    /// their pods, when the file sets no `discoveryService`.
    #[arg(long, global = true, requires = "discovery_token")]
    discovery_endpoint: Option<String>,
    /// The name the discovery endpoint's certificate carries; default: the endpoint's host.
    #[arg(long, global = true, requires = "discovery_endpoint")]
    discovery_server_name: Option<String>,
    /// The projected ServiceAccount token the discovery endpoint is called with.
    #[arg(long, global = true, requires = "discovery_endpoint")]
    discovery_token: Option<String>,
    /// The SPIFFE trust domain, with the identity flags.
    #[arg(long, global = true, default_value = outrigger_config::DEFAULT_TRUST_DOMAIN)]
    identity_trust_domain: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a sample upstream and the sidecar on an embedded config, make the seed's
    /// dubbo JSON-RPC call through the full path, print it, and keep serving.
    Demo,
}

fn init_logging(cli: &Cli) {
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a pod's log is a file, read by people and parsers alike.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The operator's endpoint the flags name (`--identity-csr-*` or `--discovery-*`), when both
/// its address and its token are given.
fn operator_endpoint(
    endpoint: Option<&String>,
    server_name: Option<&String>,
    token_path: Option<&String>,
) -> Option<OperatorEndpoint> {
    Some(OperatorEndpoint {
        endpoint: endpoint?.clone(),
        server_name: server_name.cloned(),
        token_path: token_path?.clone(),
    })
}

/// The identity the command line gives, if any: a credential bundle file or the identity
/// endpoint (clap allows one of them, and only with the trust bundle), with the trust bundle.
fn identity_flags(cli: &Cli) -> Option<IdentityConfig> {
    let trust_bundle_path = cli.identity_trust_bundle.clone()?;
    let csr = operator_endpoint(
        cli.identity_csr_endpoint.as_ref(),
        cli.identity_csr_server_name.as_ref(),
        cli.identity_csr_token.as_ref(),
    );
    let credential_bundle_path = cli.identity_credential_bundle.clone();
    (csr.is_some() || credential_bundle_path.is_some()).then(|| IdentityConfig {
        trust_domain: cli.identity_trust_domain.clone(),
        credential_bundle_path,
        csr,
        trust_bundle_path,
    })
}

/// The worker threads `--threads` asks for: as given, or one per CPU the process may use
/// (`available_parallelism` reads the cgroup CPU limit and the affinity mask).
fn worker_threads(flag: usize) -> usize {
    if flag > 0 {
        return flag;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

// The control plane (config reload, admin, identity, exporters) runs on this thread; connections
// are served on the worker threads `--threads` starts.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let options = Options {
        overrides: Overrides {
            grpc_address: cli.grpc_address.clone(),
            admin_address: cli.admin_address.clone(),
            http_api_address: cli.http_api_address.clone(),
            inbound: cli.inbound_app_port.map(|port| InboundApp {
                address: cli.inbound_address.clone(),
                port,
                protocol: Protocol::WIRE
                    .into_iter()
                    .chain([Protocol::Http2])
                    .find(|p| p.as_str() == cli.inbound_app_protocol)
                    .unwrap_or(Protocol::Auto),
            }),
            identity: identity_flags(&cli),
            discovery_service: operator_endpoint(
                cli.discovery_endpoint.as_ref(),
                cli.discovery_server_name.as_ref(),
                cli.discovery_token.as_ref(),
            ),
        },
        api_token: std::env::var(outrigger_config::API_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty()),
        config_path: None,
        watch_interval: Duration::from_millis(cli.watch_interval_ms.max(50)),
        drain_timeout: Duration::from_millis(cli.drain_timeout_ms),
        worker_threads: worker_threads(cli.threads),
        grpc_socket: cli.grpc_socket.clone(),
    };
    let metrics = Metrics::new();
    match cli.command {
        Some(Command::Demo) => {
            let mut out = std::io::stdout();
            match Demo::run(options, metrics, &mut out).await {
                Ok(demo) => {
                    if let Err(e) = wait_for_signal().await {
                        eprintln!("outrigger: cannot wait for signals: {e}");
                    }
                    demo.sidecar.shutdown().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("outrigger demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        None => serve(&cli, options, metrics).await,
    }
}

async fn serve(cli: &Cli, mut options: Options, metrics: Metrics) -> ExitCode {
    let text = match std::fs::read_to_string(&cli.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "outrigger: cannot read the config {}: {e}\n(pass --config FILE, or try `outrigger demo`)",
                cli.config.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let spec = match outrigger_config::load_yaml(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("outrigger: {}: {e}", cli.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    options.config_path = Some(cli.config.clone());
    match Sidecar::start(spec, options, metrics).await {
        Ok(sidecar) => match sidecar.run_until_signal().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("outrigger: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e @ outrigger_runtime::StartError::Config(_)) => {
            eprintln!("outrigger: {}: {e}", cli.config.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("outrigger: {e}");
            ExitCode::FAILURE
        }
    }
}
