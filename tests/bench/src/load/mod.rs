//! Load generation, in the bench process: HTTP/1.1 keep-alive clients (hyper) and gRPC clients
//! (tonic over a few HTTP/2 connections; calls shaped for the sidecar's HTTP or Bolt channel),
//! driven either **open-loop** (a fixed rate, latency from each request's scheduled send time)
//! or **closed-loop** (N workers each sending the next request as soon as the last one
//! answers: maximum throughput at that concurrency). Every phase is bounded by time and by
//! request count. Latencies go into an HdrHistogram (ns).
//! Not for starting servers or measuring processes (see `scenario`, `procstat`).

mod grpc;
mod http;
mod pacer;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::{sync::Semaphore, task::JoinSet};

pub(crate) use self::grpc::Invoke;
use self::{grpc::GrpcConn, http::HttpConn, pacer::Schedule};

/// Slack after a phase's duration before outstanding requests are abandoned (and counted as
/// dropped).
const GRACE: Duration = Duration::from_secs(3);
/// Highest latency the histograms hold (larger values are clamped).
const MAX_LATENCY: Duration = Duration::from_secs(60);

/// Why one request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("http: {0}")]
    Http(#[source] hyper::Error),
    #[error("http status {0}: {1}")]
    Status(u16, String),
    #[error("grpc status {0}: {1}")]
    Grpc(i32, String),
    #[error("response body of {0} bytes, expected 1024")]
    BodyLength(usize),
    #[error("{0}")]
    Other(String),
}

/// What a scenario's clients talk to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// An HTTP/1.1 server or proxy.
    Http(SocketAddr),
    /// A gRPC server answering Layotto's `InvokeService`, sent calls of this kind.
    Grpc(SocketAddr, Invoke),
    /// The same on a unix socket.
    GrpcUnix(std::path::PathBuf, Invoke),
}

/// One worker's connection.
pub(crate) enum Conn {
    Http(HttpConn),
    Grpc(Box<GrpcConn>),
}

impl Conn {
    async fn call(&mut self) -> Result<(), CallError> {
        match self {
            Conn::Http(c) => c.call().await,
            Conn::Grpc(c) => c.call().await,
        }
    }
}

impl Target {
    /// Connections for `workers` concurrent workers.
    pub(crate) async fn connect(&self, workers: usize) -> Result<Vec<Conn>, CallError> {
        match self {
            &Target::Http(addr) => {
                let mut conns = Vec::with_capacity(workers);
                for _ in 0..workers {
                    conns.push(Conn::Http(HttpConn::connect(addr).await?));
                }
                Ok(conns)
            }
            &Target::Grpc(addr, invoke) => Ok(grpc::connect(addr, invoke, workers)
                .await?
                .into_iter()
                .map(|c| Conn::Grpc(Box::new(c)))
                .collect()),
            Target::GrpcUnix(path, invoke) => Ok(grpc::connect_unix(path, *invoke, workers)
                .await?
                .into_iter()
                .map(|c| Conn::Grpc(Box::new(c)))
                .collect()),
        }
    }
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    pub count: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Self {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
            count: h.len(),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to [`MAX_LATENCY`], 3 significant digits.
#[allow(clippy::expect_used)]
pub(crate) fn new_histogram() -> Histogram<u64> {
    let high = u64::try_from(MAX_LATENCY.as_nanos()).unwrap_or(u64::MAX);
    // Constant bounds that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5);
    // `tests::histogram_bounds_are_valid` pins it.
    Histogram::new_with_bounds(1, high, 3).expect("constant histogram bounds are valid")
}

/// What one load phase did.
#[derive(Clone, Debug, Serialize)]
pub struct LoadResult {
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Requests per second asked for (open-loop).
    pub rate: Option<u64>,
    /// Workers (HTTP connections, or gRPC streams in flight at most).
    pub concurrency: usize,
    /// Requests the phase meant to send (open-loop: rate × duration, capped by the count bound).
    pub scheduled: u64,
    /// Requests answered correctly.
    pub ok: u64,
    /// Requests that failed (transport error, bad status, short body).
    pub errors: u64,
    /// Scheduled requests never sent because the phase ran out of time.
    pub dropped: u64,
    /// The first error, as an example.
    pub first_error: Option<String>,
    /// Wall time of the phase, seconds.
    pub elapsed_s: f64,
    /// Correct answers per second.
    pub throughput_rps: f64,
    /// Open-loop: from scheduled send time to response; closed-loop: from send to response.
    pub latency: Latency,
    /// From the moment the request was actually sent to its response (open-loop: without the
    /// wait for the pacer or a free connection; closed-loop: same as `latency`).
    pub service: Latency,
    /// Open-loop: how late the pacer released slots (the schedule's precision).
    pub pacer_lag: Option<Latency>,
    /// Open-loop: whether the pacer thread ran under SCHED_FIFO (set with chrt when allowed),
    /// so that busy cores do not delay the schedule.
    pub pacer_realtime: Option<bool>,
}

impl LoadResult {
    /// A phase that could not run at all (counted as one error).
    pub(crate) fn failed(rate: Option<u64>, concurrency: usize, error: String) -> Self {
        Self {
            mode: if rate.is_some() { "open" } else { "closed" },
            rate,
            concurrency,
            scheduled: 0,
            ok: 0,
            errors: 1,
            dropped: 0,
            first_error: Some(error),
            elapsed_s: 0.0,
            throughput_rps: 0.0,
            latency: Latency::default(),
            service: Latency::default(),
            pacer_lag: None,
            pacer_realtime: None,
        }
    }
}

/// Counters the workers of one phase share.
struct Tally {
    hist: Mutex<Histogram<u64>>,
    service: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            hist: Mutex::new(new_histogram()),
            service: Mutex::new(new_histogram()),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
    }

    /// Records one outcome: `latency` from the scheduled (or send) time, `service` from the
    /// send time.
    fn record(&self, outcome: Result<(), CallError>, latency: Duration, service: Duration) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1);
        match outcome {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.hist.lock().saturating_record(ns(latency));
                self.service.lock().saturating_record(ns(service));
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

/// Sends `per_conn` requests on every connection (concurrently) and gives them back; counts
/// failures.
pub(crate) async fn warm_up(conns: Vec<Conn>, per_conn: usize) -> (Vec<Conn>, u64) {
    let mut set = JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            let mut failed = 0;
            for _ in 0..per_conn {
                if c.call().await.is_err() {
                    failed += 1;
                }
            }
            (c, failed)
        });
    }
    let mut out = Vec::new();
    let mut failed = 0;
    while let Some(Ok((c, f))) = set.join_next().await {
        out.push(c);
        failed += f;
    }
    (out, failed)
}

/// Open loop: `rate` requests per second for `duration` (at most `max_requests`), spread
/// over the connections (a free connection takes the next slot; a slot with no free
/// connection waits, and that wait counts as latency).
pub(crate) async fn open_loop(
    conns: Vec<Conn>,
    rate: u64,
    duration: Duration,
    max_requests: u64,
) -> LoadResult {
    let rate = rate.max(1);
    let workers = conns.len();
    let wanted = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let schedule = Schedule {
        // Time for the pacer thread to start and switch to SCHED_FIFO before the first slot.
        start: Instant::now() + Duration::from_millis(20),
        interval: Duration::from_nanos(1_000_000_000 / rate),
        total: wanted.min(max_requests).max(1),
    };
    let permits = Arc::new(Semaphore::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let tally = Tally::new();
    let mut set = JoinSet::new();
    for mut conn in conns {
        let (permits, next, tally) = (permits.clone(), next.clone(), tally.clone());
        set.spawn(async move {
            loop {
                match permits.acquire().await {
                    Ok(p) => p.forget(),
                    Err(_) => break,
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= schedule.total {
                    break;
                }
                let sent = Instant::now();
                let outcome = conn.call().await;
                tally.record(outcome, schedule.slot(i).elapsed(), sent.elapsed());
            }
        });
    }
    let pacer = {
        let permits = permits.clone();
        std::thread::spawn(move || pacer::pace(schedule, permits, workers))
    };
    let limit = duration + GRACE.max(duration);
    let finished = tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} })
        .await
        .is_ok();
    if !finished {
        permits.close();
        set.abort_all();
    }
    let elapsed = schedule.start.elapsed();
    let paced = tokio::task::spawn_blocking(move || pacer.join().ok())
        .await
        .ok()
        .flatten();
    let mut result = finish(&tally, "open", workers, schedule.total, elapsed);
    result.rate = Some(rate);
    result.pacer_lag = paced.as_ref().map(|p| Latency::of(&p.lag));
    result.pacer_realtime = paced.map(|p| p.realtime);
    result
}

/// Closed loop: every connection sends its next request when the last one is answered, for
/// `duration` or until `max_requests` have been sent.
pub(crate) async fn closed_loop(
    conns: Vec<Conn>,
    duration: Duration,
    max_requests: u64,
) -> LoadResult {
    let workers = conns.len();
    let start = Instant::now();
    let end = start + duration;
    let budget = Arc::new(AtomicU64::new(max_requests));
    let tally = Tally::new();
    let mut set = JoinSet::new();
    for mut conn in conns {
        let (budget, tally) = (budget.clone(), tally.clone());
        set.spawn(async move {
            while Instant::now() < end
                && budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_ok()
            {
                let sent = Instant::now();
                let outcome = conn.call().await;
                let took = sent.elapsed();
                tally.record(outcome, took, took);
            }
        });
    }
    let finished = tokio::time::timeout(duration + GRACE, async {
        while set.join_next().await.is_some() {}
    })
    .await
    .is_ok();
    if !finished {
        set.abort_all();
    }
    let elapsed = start.elapsed();
    let sent = max_requests - budget.load(Ordering::Relaxed);
    finish(&tally, "closed", workers, sent, elapsed)
}

fn finish(
    tally: &Tally,
    mode: &'static str,
    workers: usize,
    scheduled: u64,
    elapsed: Duration,
) -> LoadResult {
    let ok = tally.ok.load(Ordering::Relaxed);
    let errors = tally.errors.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    LoadResult {
        mode,
        rate: None,
        concurrency: workers,
        scheduled,
        ok,
        errors,
        dropped: scheduled.saturating_sub(ok + errors),
        first_error: tally.first_error.lock().clone(),
        elapsed_s: secs,
        throughput_rps: ok as f64 / secs,
        latency: Latency::of(&tally.hist.lock()),
        service: Latency::of(&tally.service.lock()),
        pacer_lag: None,
        pacer_realtime: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_valid() {
        let mut h = new_histogram();
        h.saturating_record(25_000);
        h.saturating_record(u64::MAX);
        let l = Latency::of(&h);
        assert_eq!(l.count, 2);
        assert!((l.p50_us - 25.0).abs() < 0.1, "{l:?}");
        assert!(l.max_us >= 59e6, "{l:?}");
    }
}
