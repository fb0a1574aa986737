//! Watching processes through one load phase: CPU time before and after (so CPU per request is
//! the delta over the requests the phase completed), resident memory sampled every few tens of
//! milliseconds for the phase's peak, and the kernel's high-water mark at the end. Not for
//! reading `/proc` itself (see `procstat`).

use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::{task::JoinHandle, time::Instant};

use crate::procstat::{self, Sample};

/// How often resident memory is sampled during a phase.
const RSS_EVERY: Duration = Duration::from_millis(50);

/// What a watched process is in the scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The system under test: the sidecar or a peer proxy.
    Proxy,
    /// The server at the end of the path: the HTTP upstream or the gRPC floor.
    Upstream,
    /// The bench process itself (load generator and this monitor).
    LoadGenerator,
}

/// A process (tree) to watch.
#[derive(Clone, Debug)]
pub(crate) struct Watched {
    pub(crate) role: Role,
    pub(crate) name: String,
    pub(crate) pids: Vec<u32>,
}

/// One process's cost over one phase.
#[derive(Clone, Debug, Serialize)]
pub struct ProcCost {
    pub role: Role,
    pub name: String,
    /// CPU seconds (user + system) spent during the phase.
    pub cpu_s: f64,
    /// CPU microseconds per completed request.
    pub cpu_us_per_req: f64,
    /// Average cores busy during the phase.
    pub cores: f64,
    /// Highest resident set sampled during the phase, KiB.
    pub rss_max_kib: u64,
    /// Resident set at the end of the phase, KiB.
    pub rss_end_kib: u64,
    /// Peak resident set since the process started (`VmHWM`), at the end of the phase, KiB.
    pub hwm_kib: u64,
}

/// A phase being watched.
pub(crate) struct Monitor {
    watched: Vec<Watched>,
    before: Vec<Sample>,
    started: Instant,
    peaks: Arc<Mutex<Vec<u64>>>,
    sampler: JoinHandle<()>,
}

impl Monitor {
    /// Takes the "before" samples and starts sampling memory.
    pub(crate) fn start(watched: Vec<Watched>) -> Self {
        let before: Vec<Sample> = watched.iter().map(|w| procstat::sample(&w.pids)).collect();
        let peaks = Arc::new(Mutex::new(
            before.iter().map(|s| s.rss_kib).collect::<Vec<_>>(),
        ));
        let sampler = {
            let pids: Vec<Vec<u32>> = watched.iter().map(|w| w.pids.clone()).collect();
            let peaks = peaks.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RSS_EVERY);
                loop {
                    tick.tick().await;
                    let now: Vec<u64> = pids.iter().map(|p| procstat::sample(p).rss_kib).collect();
                    let mut peaks = peaks.lock();
                    for (peak, rss) in peaks.iter_mut().zip(now) {
                        *peak = (*peak).max(rss);
                    }
                }
            })
        };
        Self {
            watched,
            before,
            started: Instant::now(),
            peaks,
            sampler,
        }
    }

    /// Takes the "after" samples; costs are per `requests` completed.
    pub(crate) fn stop(self, requests: u64) -> Vec<ProcCost> {
        self.sampler.abort();
        let wall = self.started.elapsed().as_secs_f64().max(1e-9);
        let peaks = self.peaks.lock().clone();
        self.watched
            .iter()
            .zip(&self.before)
            .zip(peaks)
            .map(|((w, before), peak)| {
                let after = procstat::sample(&w.pids);
                let cpu = after.cpu.saturating_sub(before.cpu).as_secs_f64();
                ProcCost {
                    role: w.role,
                    name: w.name.clone(),
                    cpu_s: cpu,
                    cpu_us_per_req: if requests == 0 {
                        0.0
                    } else {
                        cpu * 1e6 / requests as f64
                    },
                    cores: cpu / wall,
                    rss_max_kib: peak.max(after.rss_kib),
                    rss_end_kib: after.rss_kib,
                    hwm_kib: after.hwm_kib,
                }
            })
            .collect()
    }
}
