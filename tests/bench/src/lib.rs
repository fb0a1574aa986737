//! The benchmark harness of issues 6 and 15: it starts its own upstreams (HTTP/1.1 and Bolt,
//! each answering a fixed 1 KiB) and gRPC floor in processes of their own, the real
//! `outrigger` sidecar, and nginx and HAProxy as peer proxies when they are installed; drives
//! each scenario open-loop at fixed rates (latency from the scheduled send time, HdrHistogram)
//! and closed-loop at fixed concurrency, the proxies once per worker-thread count of the
//! sweep; measures each process's CPU per request and memory from `/proc`; and reports every
//! scenario side by side, in Markdown and JSON, with both issues' targets checked.
//! `main.rs` only parses flags; `--smoke` is what CI runs. Loopback only.

mod load;
mod machine;
mod peers;
mod process;
mod procstat;
mod report;
mod scenario;
mod servers;
mod sidecar;

use std::path::PathBuf;

pub use crate::{
    load::{Latency, LoadResult},
    machine::Machine,
    report::{Comparison, Report, TargetCheck},
    scenario::{PhaseResult, ProcCost, Role, Scenario, ScenarioResult, Settings},
    servers::{BODY_LEN, run_bolt_upstream, run_echo, run_upstream},
    sidecar::{build as build_sidecar, sibling_binary as sidecar_next_to},
};

/// Runs every scenario of `settings`, printing progress to `progress`, and reports them side by
/// side.
pub async fn run(
    settings: &Settings,
    command: String,
    progress: &mut (dyn std::io::Write + Send),
) -> Result<Report, BenchError> {
    let (machine, results) = scenario::run_all(settings, progress).await?;
    Ok(report::build(machine, command, settings, results))
}

/// Why a run could not be carried out (failed requests are results, not errors).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A child process exited early.
    #[error("{name} exited ({status}); its log ends with:\n{log_tail}")]
    ChildExited {
        name: String,
        status: String,
        log_tail: String,
    },
    /// A child process did not start accepting connections in time.
    #[error("{name} did not accept connections on {} in time; its log ends with:\n{log_tail}", addrs.join(", "))]
    NotReady {
        name: String,
        addrs: Vec<String>,
        log_tail: String,
    },
    /// The sidecar binary is not where it should be.
    #[error(
        "no outrigger binary at {0}: build it (`cargo build --release -p outrigger-runtime --bin outrigger`) or pass --sidecar-bin"
    )]
    NoSidecar(PathBuf),
    /// Building the sidecar failed.
    #[error("cannot build the sidecar: {0}")]
    Build(String),
    /// `--scenarios` named something unknown.
    #[error("unknown scenario {name:?} (known: {known})")]
    UnknownScenario { name: String, known: String },
    /// The report could not be serialised.
    #[error("cannot serialise the report: {0}")]
    Json(#[source] serde_json::Error),
}

impl BenchError {
    pub(crate) fn io(what: String, source: std::io::Error) -> Self {
        BenchError::Io { what, source }
    }
}
