//! The scenarios and how one run goes: start the shared servers (HTTP upstream, and the gRPC
//! floor and the Bolt upstream when a scenario needs them), then for each scenario start a
//! fresh system under test (the sidecar, nginx or HAProxy; none for the direct baselines),
//! measure its idle memory, warm it up, and run every load phase (open loop at each rate,
//! closed loop at each concurrency) while watching the proxy, the upstream and the bench
//! itself. A proxy scenario (the sidecar's and the peers') runs once per worker-thread count
//! of the sweep (`Settings::threads`). Not for generating load (see `load`) or rendering
//! results (see `report`).

mod monitor;

use std::{
    fmt,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
    time::Duration,
};

use serde::Serialize;

use self::monitor::{Monitor, Watched};
pub use self::monitor::{ProcCost, Role};
use crate::{
    BenchError,
    load::{self, Invoke, LoadResult, Target},
    machine::Machine,
    peers::Peer,
    process::Proc,
    procstat,
    sidecar::{self, Setup},
};

/// One way of asking for the same 1 KiB answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Baseline: HTTP client → upstream.
    DirectHttp,
    /// The gRPC floor: tonic client → minimal tonic server answering `InvokeService`.
    DirectGrpc,
    /// tonic client → sidecar `InvokeService` → HTTP channel → named in-process listener →
    /// proxy core → upstream.
    InvokeHttp,
    /// `invoke-http` with the client on the sidecar's unix socket (`--grpc-socket`, what
    /// `outrigger.dev/api-socket` sets up in a pod) instead of TCP.
    InvokeUnix,
    /// HTTP client → sidecar's TCP-bound proxy listener → proxy core → upstream.
    ProxyHttp,
    /// HTTP client → nginx → upstream.
    NginxHttp,
    /// HTTP client → HAProxy → upstream.
    HaproxyHttp,
    /// tonic client → sidecar `InvokeService` → Bolt channel → named in-process Bolt listener
    /// → proxy core → Bolt upstream (its own sidecar process and config; the call carries
    /// 1 KiB of opaque content).
    InvokeBolt,
    /// HTTP client → sidecar A's proxy listener → plaintext → sidecar B's inbound listener →
    /// upstream: the mesh path without TLS (CPU of both sidecars).
    MeshHttp,
    /// The same with mutual TLS between A and B (SPIFFE certificates of a throwaway CA).
    MeshMtls,
    /// `mesh-mtls` with a 20-rule authorization policy on B's inbound listener, the allowing
    /// rule evaluated last.
    MeshAuthz,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 11] = [
        Scenario::DirectHttp,
        Scenario::DirectGrpc,
        Scenario::InvokeHttp,
        Scenario::InvokeUnix,
        Scenario::ProxyHttp,
        Scenario::NginxHttp,
        Scenario::HaproxyHttp,
        Scenario::InvokeBolt,
        Scenario::MeshHttp,
        Scenario::MeshMtls,
        Scenario::MeshAuthz,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::DirectHttp => "direct-http",
            Scenario::DirectGrpc => "direct-grpc",
            Scenario::InvokeHttp => "invoke-http",
            Scenario::InvokeUnix => "invoke-unix",
            Scenario::ProxyHttp => "proxy-http",
            Scenario::NginxHttp => "nginx-http",
            Scenario::HaproxyHttp => "haproxy-http",
            Scenario::InvokeBolt => "invoke-bolt",
            Scenario::MeshHttp => "mesh-http",
            Scenario::MeshMtls => "mesh-mtls",
            Scenario::MeshAuthz => "mesh-authz",
        }
    }

    /// What the scenario measures, in one line.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::DirectHttp => "baseline: HTTP/1.1 client → upstream",
            Scenario::DirectGrpc => "gRPC floor: tonic client → minimal tonic InvokeService server",
            Scenario::InvokeHttp => {
                "tonic client → sidecar InvokeService → HTTP channel → in-process listener → proxy core → upstream"
            }
            Scenario::InvokeUnix => {
                "tonic client → sidecar InvokeService over its unix socket → HTTP channel → in-process listener → proxy core → upstream"
            }
            Scenario::ProxyHttp => {
                "HTTP/1.1 client → sidecar proxy listener (TCP) → proxy core → upstream"
            }
            Scenario::NginxHttp => "HTTP/1.1 client → nginx (keep-alive pool) → upstream",
            Scenario::HaproxyHttp => "HTTP/1.1 client → HAProxy (http-reuse always) → upstream",
            Scenario::InvokeBolt => {
                "tonic client → sidecar InvokeService → Bolt channel → in-process listener → proxy core → Bolt upstream"
            }
            Scenario::MeshHttp => {
                "HTTP/1.1 client → sidecar A proxy listener → plaintext → sidecar B inbound listener → upstream (CPU: both sidecars)"
            }
            Scenario::MeshMtls => {
                "HTTP/1.1 client → sidecar A proxy listener → mutual TLS 1.3 → sidecar B inbound listener → upstream (CPU: both sidecars)"
            }
            Scenario::MeshAuthz => {
                "mesh-mtls with a 20-rule authorization policy on sidecar B's inbound listener (CPU: both sidecars)"
            }
        }
    }

    /// Whether the scenario calls the sidecar's `InvokeService`, and so is compared with the
    /// gRPC floor (`direct-grpc`) as well as with `direct-http`.
    pub fn is_invoke(self) -> bool {
        matches!(
            self,
            Scenario::InvokeHttp | Scenario::InvokeUnix | Scenario::InvokeBolt
        )
    }

    /// Whether the scenario runs the sidecar.
    pub fn is_sidecar(self) -> bool {
        matches!(
            self,
            Scenario::InvokeHttp
                | Scenario::InvokeUnix
                | Scenario::ProxyHttp
                | Scenario::InvokeBolt
                | Scenario::MeshHttp
                | Scenario::MeshMtls
                | Scenario::MeshAuthz
        )
    }

    /// Whether the scenario has a proxy whose worker threads (or processes) the sweep sets:
    /// the sidecar's scenarios and the peers'. The direct baselines have none.
    pub fn has_workers(self) -> bool {
        self.is_sidecar() || matches!(self, Scenario::NginxHttp | Scenario::HaproxyHttp)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = BenchError;

    fn from_str(s: &str) -> Result<Self, BenchError> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s.trim())
            .ok_or_else(|| BenchError::UnknownScenario {
                name: s.to_owned(),
                known: Scenario::ALL.map(Scenario::name).join(", "),
            })
    }
}

/// How a run goes.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Scenarios to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Open-loop rates, requests per second.
    pub rates: Vec<u64>,
    /// Closed-loop concurrencies.
    pub concurrency: Vec<usize>,
    /// Length of each phase.
    pub phase: Duration,
    /// Most requests one phase sends.
    pub max_requests: u64,
    /// Connections (HTTP) or streams in flight at most (gRPC) in the open-loop phases.
    pub open_loop_connections: usize,
    /// Requests each connection sends before a phase is measured.
    pub warmup_requests: usize,
    /// The `outrigger` binary.
    pub sidecar_bin: PathBuf,
    /// The worker-thread counts of the proxies, in run order: every proxy scenario runs once
    /// per count (the sidecar with that many worker threads, `--threads`;
    /// nginx with that many worker processes; HAProxy with that many threads; 0: one per
    /// core). The first is the *primary* count, the one every comparison between scenarios
    /// uses. Never empty.
    pub threads: Vec<usize>,
    /// The bench executable, re-run with a hidden subcommand to start our own servers.
    pub self_exe: PathBuf,
    /// Smoke mode: tiny phases, only correctness matters.
    pub smoke: bool,
}

impl Settings {
    /// The full run of issue 6: 1k and 10k rps open loop, concurrency 1, 16, 64 closed loop,
    /// 5 s per phase, 64 connections in the open-loop phases.
    pub fn full(self_exe: PathBuf, sidecar_bin: PathBuf) -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            rates: vec![1_000, 10_000],
            concurrency: vec![1, 16, 64],
            phase: Duration::from_secs(5),
            max_requests: 5_000_000,
            open_loop_connections: 64,
            warmup_requests: 20,
            sidecar_bin,
            threads: vec![1],
            self_exe,
            smoke: false,
        }
    }

    /// A few seconds in all: small rates, short phases, bounded counts.
    pub fn smoke(self_exe: PathBuf, sidecar_bin: PathBuf) -> Self {
        Self {
            rates: vec![200, 500],
            concurrency: vec![1, 4, 8],
            phase: Duration::from_millis(250),
            max_requests: 500,
            open_loop_connections: 8,
            warmup_requests: 2,
            smoke: true,
            ..Self::full(self_exe, sidecar_bin)
        }
    }

    /// The worker-thread count every comparison between scenarios uses: the first of
    /// [`Settings::threads`].
    pub fn primary_threads(&self) -> usize {
        self.threads.first().copied().unwrap_or(1)
    }

    /// Whether this run sweeps more than one worker-thread count.
    pub fn is_sweep(&self) -> bool {
        self.threads.len() > 1
    }
}

/// A worker-thread count in words.
pub(crate) fn threads_label(threads: usize) -> String {
    match threads {
        0 => "one thread per core".to_owned(),
        1 => "1 thread".to_owned(),
        n => format!("{n} threads"),
    }
}

/// The result of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub name: &'static str,
    pub description: &'static str,
    /// Why it did not run (a peer not installed).
    pub skipped: Option<String>,
    /// Why it stopped early (a process that would not start or died).
    pub failure: Option<String>,
    /// The proxy under test and its version, if any.
    pub proxy: Option<String>,
    /// The proxy's worker threads in this run (the sidecar's worker threads, nginx's
    /// worker processes, HAProxy's threads; 0: one per core); `None` for the direct
    /// baselines, which have no proxy.
    pub threads: Option<usize>,
    /// The proxy's memory after start, before any load.
    pub idle_rss_kib: Option<u64>,
    pub phases: Vec<PhaseResult>,
}

impl ScenarioResult {
    pub(crate) fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            name: scenario.name(),
            description: scenario.description(),
            skipped: None,
            failure: None,
            proxy: None,
            threads: None,
            idle_rss_kib: None,
            phases: Vec::new(),
        }
    }

    /// The name, with the worker-thread count when the run sweeps several
    /// (`invoke-http [2 threads]`).
    pub fn label(&self, sweep: bool) -> String {
        match self.threads {
            Some(t) if sweep => format!("{} [{}]", self.name, threads_label(t)),
            _ => self.name.to_owned(),
        }
    }

    /// The phase with this key (`open-1000`, `closed-64`).
    pub fn phase(&self, key: &str) -> Option<&PhaseResult> {
        self.phases.iter().find(|p| p.key == key)
    }

    /// Requests that failed or were dropped, over all phases.
    pub fn failed_requests(&self) -> u64 {
        self.phases
            .iter()
            .map(|p| p.load.errors + p.load.dropped)
            .sum()
    }
}

/// One load phase of one scenario.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseResult {
    /// `open-<rate>` or `closed-<concurrency>`.
    pub key: String,
    pub load: LoadResult,
    pub procs: Vec<ProcCost>,
}

impl PhaseResult {
    /// The cost of the process with this role.
    pub fn cost(&self, role: Role) -> Option<&ProcCost> {
        self.procs.iter().find(|p| p.role == role)
    }
}

/// Our own server, running in a child process.
struct Server {
    proc: Proc,
    addr: SocketAddr,
}

impl Server {
    async fn start(kind: &str, settings: &Settings, dir: &Path) -> Result<Self, BenchError> {
        let file = dir.join(format!("{kind}.addr"));
        let mut cmd = Command::new(&settings.self_exe);
        cmd.arg(kind).arg("--addr-file").arg(&file);
        let mut proc = Proc::spawn(kind, cmd, dir)?;
        let addr = proc.wait_address_file(&file).await?;
        proc.wait_ready(&[addr]).await?;
        Ok(Self { proc, addr })
    }

    fn watched(&self, name: &str) -> Watched {
        Watched {
            role: Role::Upstream,
            name: name.to_owned(),
            pids: vec![self.proc.pid()],
        }
    }
}

/// Runs every scenario of `settings`, printing progress to `progress`; returns the machine it
/// ran on and each scenario's results.
pub(crate) async fn run_all(
    settings: &Settings,
    progress: &mut (dyn Write + Send),
) -> Result<(Machine, Vec<ScenarioResult>), BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("outrigger-bench-")
        .tempdir()
        .map_err(|e| BenchError::io("create a temp dir".to_owned(), e))?;
    let machine = Machine::describe();
    let _ = writeln!(progress, "{}", machine.one_line());
    let servers = Servers::start(settings, dir.path()).await?;
    let _ = writeln!(
        progress,
        "upstream (1 KiB HTTP/1.1) on {}",
        servers.upstream.addr
    );
    if let Some(bolt) = &servers.bolt {
        let _ = writeln!(progress, "bolt upstream (1 KiB Bolt v1) on {}", bolt.addr);
    }
    let mut results = Vec::new();
    for &sc in &settings.scenarios {
        // A proxy scenario once per thread count, one after the other, so that the counts
        // are compared minutes rather than the whole run apart.
        let counts: Vec<Option<usize>> = if sc.has_workers() {
            settings.threads.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for threads in counts {
            let sdir = match threads {
                Some(t) => dir.path().join(format!("{}-{t}", sc.name())),
                None => dir.path().join(sc.name()),
            };
            std::fs::create_dir_all(&sdir)
                .map_err(|e| BenchError::io(format!("create {}", sdir.display()), e))?;
            let result = run_scenario(sc, threads, settings, &sdir, &servers, progress).await;
            results.push(result);
        }
    }
    servers.stop().await;
    Ok((machine, results))
}

/// The servers every scenario of a run shares.
struct Servers {
    /// The HTTP/1.1 upstream.
    upstream: Server,
    /// The gRPC floor, when `direct-grpc` runs.
    echo: Option<Server>,
    /// The Bolt upstream, when `invoke-bolt` runs.
    bolt: Option<Server>,
}

impl Servers {
    async fn start(settings: &Settings, dir: &Path) -> Result<Self, BenchError> {
        let wanted = |sc| settings.scenarios.contains(&sc);
        let upstream = Server::start("upstream", settings, dir).await?;
        let echo = if wanted(Scenario::DirectGrpc) {
            Some(Server::start("echo", settings, dir).await?)
        } else {
            None
        };
        let bolt = if wanted(Scenario::InvokeBolt) {
            Some(Server::start("bolt-upstream", settings, dir).await?)
        } else {
            None
        };
        Ok(Self {
            upstream,
            echo,
            bolt,
        })
    }

    async fn stop(self) {
        for server in [self.bolt, self.echo].into_iter().flatten() {
            server.proc.stop().await;
        }
        self.upstream.proc.stop().await;
    }
}

/// The system under test of one scenario.
struct Subject {
    proc: Option<Proc>,
    /// A second process of the system under test (the callee sidecar of the mesh scenarios).
    peer: Option<Proc>,
    target: Target,
    label: Option<String>,
}

async fn start_subject(
    sc: Scenario,
    threads: usize,
    settings: &Settings,
    dir: &Path,
    servers: &Servers,
) -> Result<Result<Subject, String>, BenchError> {
    Ok(Ok(match sc {
        Scenario::DirectHttp => Subject {
            peer: None,
            proc: None,
            target: Target::Http(servers.upstream.addr),
            label: None,
        },
        Scenario::DirectGrpc => {
            let Some(echo) = &servers.echo else {
                return Ok(Err("the gRPC floor server is not running".to_owned()));
            };
            Subject {
                peer: None,
                proc: None,
                target: Target::Grpc(echo.addr, Invoke::Http),
                label: None,
            }
        }
        Scenario::InvokeHttp
        | Scenario::InvokeUnix
        | Scenario::ProxyHttp
        | Scenario::InvokeBolt => {
            if !settings.sidecar_bin.is_file() {
                return Err(BenchError::NoSidecar(settings.sidecar_bin.clone()));
            }
            let setup = if sc == Scenario::InvokeBolt {
                let Some(bolt) = &servers.bolt else {
                    return Ok(Err("the Bolt upstream is not running".to_owned()));
                };
                Setup::Bolt {
                    upstream: bolt.addr,
                }
            } else {
                Setup::Http {
                    upstream: servers.upstream.addr,
                }
            };
            let socket = (sc == Scenario::InvokeUnix).then(|| dir.join("grpc.sock"));
            let (proc, addrs) = sidecar::start(
                &settings.sidecar_bin,
                dir,
                setup,
                threads,
                socket.as_deref(),
            )
            .await?;
            let threads = match threads {
                0 => "default worker threads".to_owned(),
                n => format!("{n} worker thread{}", if n == 1 { "" } else { "s" }),
            };
            let target = match (sc, addrs.proxy) {
                (Scenario::InvokeBolt, _) => Target::Grpc(addrs.grpc, Invoke::Bolt),
                (Scenario::InvokeUnix, _) => match socket {
                    Some(path) => Target::GrpcUnix(path, Invoke::Http),
                    None => unreachable!("invoke-unix always has a socket"),
                },
                (Scenario::ProxyHttp, Some(proxy)) => Target::Http(proxy),
                (Scenario::ProxyHttp, None) => {
                    return Ok(Err("the sidecar has no TCP proxy listener".to_owned()));
                }
                _ => Target::Grpc(addrs.grpc, Invoke::Http),
            };
            Subject {
                peer: None,
                proc: Some(proc),
                target,
                label: Some(format!("outrigger ({threads})")),
            }
        }
        Scenario::MeshHttp | Scenario::MeshMtls | Scenario::MeshAuthz => {
            if !settings.sidecar_bin.is_file() {
                return Err(BenchError::NoSidecar(settings.sidecar_bin.clone()));
            }
            let tls = sc != Scenario::MeshHttp;
            let (callee, caller, entry) = sidecar::start_mesh(
                &settings.sidecar_bin,
                dir,
                servers.upstream.addr,
                tls,
                sc == Scenario::MeshAuthz,
                threads,
            )
            .await?;
            let threads = match threads {
                0 => "default worker threads".to_owned(),
                n => format!("{n} worker thread{} each", if n == 1 { "" } else { "s" }),
            };
            Subject {
                peer: Some(callee),
                proc: Some(caller),
                target: Target::Http(entry),
                label: Some(format!("2 × outrigger ({threads})")),
            }
        }
        Scenario::NginxHttp | Scenario::HaproxyHttp => {
            let peer = if sc == Scenario::NginxHttp {
                Peer::Nginx
            } else {
                Peer::Haproxy
            };
            let Some(bin) = peer.find() else {
                return Ok(Err(format!(
                    "{} is not installed (apt-get install {})",
                    peer.binary(),
                    peer.binary()
                )));
            };
            let version = peer.version(&bin);
            let (proc, listen) = peer
                .start(&bin, dir, servers.upstream.addr, threads)
                .await?;
            Subject {
                peer: None,
                proc: Some(proc),
                target: Target::Http(listen),
                label: Some(format!("{version} ({})", peer.workers_label(threads))),
            }
        }
    }))
}

/// Runs one scenario; `threads` is the proxy's worker-thread count (`None` for the direct
/// baselines).
async fn run_scenario(
    sc: Scenario,
    threads: Option<usize>,
    settings: &Settings,
    dir: &Path,
    servers: &Servers,
    progress: &mut (dyn Write + Send),
) -> ScenarioResult {
    let mut result = ScenarioResult::new(sc);
    result.threads = threads;
    let name = result.label(settings.is_sweep());
    let subject = match start_subject(sc, threads.unwrap_or(1), settings, dir, servers).await {
        Ok(Ok(s)) => s,
        Ok(Err(skip)) => {
            let _ = writeln!(progress, "{name}: skipped: {skip}");
            result.skipped = Some(skip);
            return result;
        }
        Err(e) => {
            let _ = writeln!(progress, "{name}: FAILED to start: {e}");
            result.failure = Some(e.to_string());
            return result;
        }
    };
    result.proxy = subject.label.clone();
    let _ = writeln!(progress, "{name}: {}", sc.description());

    let mut watched = Vec::new();
    if let Some(proc) = &subject.proc {
        tokio::time::sleep(Duration::from_millis(if settings.smoke { 50 } else { 500 })).await;
        let mut pids = proc.pids();
        // Both sidecars of a mesh path are the system under test.
        pids.extend(subject.peer.iter().flat_map(Proc::pids));
        result.idle_rss_kib = Some(procstat::sample(&pids).rss_kib);
        watched.push(Watched {
            role: Role::Proxy,
            name: subject.label.clone().unwrap_or_default(),
            pids,
        });
    }
    let server = match (sc, &servers.echo, &servers.bolt) {
        (Scenario::DirectGrpc, Some(echo), _) => echo.watched("grpc floor (tonic)"),
        (Scenario::InvokeBolt, _, Some(bolt)) => bolt.watched("bolt upstream (outrigger-codec)"),
        _ => servers.upstream.watched("upstream (hyper)"),
    };
    watched.push(server);
    watched.push(Watched {
        role: Role::LoadGenerator,
        name: "outrigger-bench".to_owned(),
        pids: vec![std::process::id()],
    });

    for &rate in &settings.rates {
        let phase = run_phase(
            settings,
            &subject.target,
            &watched,
            format!("open-{rate}"),
            settings.open_loop_connections,
            Some(rate),
        )
        .await;
        report_phase(progress, &name, &phase);
        result.phases.push(phase);
    }
    for &c in &settings.concurrency {
        let phase = run_phase(
            settings,
            &subject.target,
            &watched,
            format!("closed-{c}"),
            c,
            None,
        )
        .await;
        report_phase(progress, &name, &phase);
        result.phases.push(phase);
    }
    for mut proc in subject.proc.into_iter().chain(subject.peer) {
        if let Err(e) = proc.check_running() {
            result.failure = Some(e.to_string());
        }
        proc.stop().await;
    }
    result
}

async fn run_phase(
    settings: &Settings,
    target: &Target,
    watched: &[Watched],
    key: String,
    workers: usize,
    rate: Option<u64>,
) -> PhaseResult {
    let conns = match target.connect(workers).await {
        Ok(c) => c,
        Err(e) => {
            return PhaseResult {
                key,
                load: LoadResult::failed(rate, workers, format!("connect: {e}")),
                procs: Vec::new(),
            };
        }
    };
    let (conns, warmup_errors) = load::warm_up(conns, settings.warmup_requests).await;
    let monitor = Monitor::start(watched.to_vec());
    let mut load = match rate {
        Some(rate) => load::open_loop(conns, rate, settings.phase, settings.max_requests).await,
        None => load::closed_loop(conns, settings.phase, settings.max_requests).await,
    };
    let procs = monitor.stop(load.ok + load.errors);
    if warmup_errors > 0 {
        load.errors += warmup_errors;
        load.first_error
            .get_or_insert_with(|| "a warm-up request failed".to_owned());
    }
    PhaseResult { key, load, procs }
}

fn report_phase(progress: &mut (dyn Write + Send), sc: &str, p: &PhaseResult) {
    let l = &p.load;
    let proxy_cpu = p
        .cost(Role::Proxy)
        .map(|c| format!(", proxy {:.1} µs CPU/req", c.cpu_us_per_req))
        .unwrap_or_default();
    let _ = writeln!(
        progress,
        "  {sc} {:<11} {:>9.0} rps  p50 {:>8.1} µs  p99 {:>8.1} µs  ok {} errors {} dropped {}{proxy_cpu}",
        p.key, l.throughput_rps, l.latency.p50_us, l.latency.p99_us, l.ok, l.errors, l.dropped
    );
    if let Some(e) = &l.first_error {
        let _ = writeln!(progress, "    first error: {e}");
    }
}
