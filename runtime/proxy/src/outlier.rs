//! Outlier detection: passive health from the answers a cluster's hosts give, in every
//! protocol. A try's outcome is judged once ([`verdict`]: a connect failure, reset or timeout,
//! an HTTP 5xx, a gRPC UNAVAILABLE or RESOURCE_EXHAUSTED status, a Bolt server-busy or
//! server-exception status, a Dubbo thread-pool-exhausted, server-error or service-error
//! status is a failure); a host failing `consecutiveFailures` times in a row is ejected for
//! `baseEjectionMs` times the number of its ejections (at most `maxEjectionMs`), never more
//! than `maxEjectionPercent` of the hosts at once, and returns on probation: a failure of its
//! first answer ejects it again. Load balancers skip ejected hosts (see `cluster`). Not for
//! active health checks, for retries (see `forward`) or for capping load (see `breaker`).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use outrigger_codec::{bolt, dubbo};
use outrigger_config::OutlierDetection;
use outrigger_core::{Cause, EjectionLabels, Failure, LabelStr, Metrics, NameLabels};
use parking_lot::Mutex;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tokio::time::Instant;

/// A failure that counts against a host, named as the ejection metric's `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HostFailure {
    ConnectFailure,
    Reset,
    Timeout,
    Http5xx,
    GrpcStatus,
    BoltStatus,
    DubboStatus,
}

impl HostFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HostFailure::ConnectFailure => "connect_failure",
            HostFailure::Reset => "reset",
            HostFailure::Timeout => "timeout",
            HostFailure::Http5xx => "http_5xx",
            HostFailure::GrpcStatus => "grpc_status",
            HostFailure::BoltStatus => "bolt_status",
            HostFailure::DubboStatus => "dubbo_status",
        }
    }
}

/// What one try says about the host it went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The host answered well.
    Healthy,
    /// The host failed.
    Failed(HostFailure),
    /// Nothing about the host: the request was bad, or the proxy's own bounds turned it away.
    Unknown,
}

/// What an upstream's answer says about the host that gave it.
pub(crate) trait Health {
    /// The failure the answer stands for, if it is one.
    fn failure(&self) -> Option<HostFailure>;
}

/// gRPC status codes that say the server is unwell: RESOURCE_EXHAUSTED and UNAVAILABLE.
const GRPC_UNWELL: [&[u8]; 2] = [b"8", b"14"];

impl<B> Health for http::Response<B> {
    fn failure(&self) -> Option<HostFailure> {
        if self.status().is_server_error() {
            return Some(HostFailure::Http5xx);
        }
        // A gRPC answer carries its status in a header when the body is empty (or in the
        // trailers, which an answer read as a whole body does not show).
        self.headers()
            .get("grpc-status")
            .is_some_and(|v| GRPC_UNWELL.contains(&v.as_bytes()))
            .then_some(HostFailure::GrpcStatus)
    }
}

impl Health for bolt::Frame {
    fn failure(&self) -> Option<HostFailure> {
        match self.kind {
            bolt::Kind::Response {
                status: bolt::status::SERVER_THREADPOOL_BUSY | bolt::status::SERVER_EXCEPTION,
            } => Some(HostFailure::BoltStatus),
            _ => None,
        }
    }
}

impl Health for dubbo::Frame {
    fn failure(&self) -> Option<HostFailure> {
        match self.status {
            dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR
            | dubbo::status::SERVER_ERROR
            | dubbo::status::SERVICE_ERROR => Some(HostFailure::DubboStatus),
            _ => None,
        }
    }
}

/// No answer (a one-way request) says nothing against the host.
impl<F: Health> Health for Option<F> {
    fn failure(&self) -> Option<HostFailure> {
        self.as_ref().and_then(Health::failure)
    }
}

/// The verdict on one try's outcome.
pub(crate) fn verdict<R: Health, E: Failure>(outcome: &Result<R, E>) -> Verdict {
    match outcome {
        Ok(answer) => answer.failure().map_or(Verdict::Healthy, Verdict::Failed),
        Err(e) => match Failure::cause(e) {
            Cause::ConnectFailure => Verdict::Failed(HostFailure::ConnectFailure),
            Cause::Reset => Verdict::Failed(HostFailure::Reset),
            Cause::Timeout => Verdict::Failed(HostFailure::Timeout),
            Cause::BadRequest
            | Cause::NoRoute
            | Cause::NoHealthyHost
            | Cause::Overflow
            | Cause::CircuitOpen
            | Cause::RateLimited
            | Cause::Denied => Verdict::Unknown,
        },
    }
}

/// One host's health, as outlier detection keeps it.
#[derive(Debug, Default)]
pub(crate) struct HostHealth {
    /// Milliseconds after the detector's epoch until which the host is ejected; 0 when it is
    /// not. Read without a lock by every pick.
    ejected_until: AtomicU64,
    /// Failures in a row.
    consecutive: AtomicU32,
    /// Back from an ejection, its next answer not seen yet.
    probation: AtomicBool,
    /// How often it was ejected, and when it last came back well.
    history: Mutex<History>,
}

#[derive(Debug, Default)]
struct History {
    ejections: u32,
    returned_at: Option<Instant>,
}

/// The outlier detector of one cluster.
pub(crate) struct Outlier {
    cluster: Arc<str>,
    consecutive_failures: u32,
    base: Duration,
    max: Duration,
    max_percent: u32,
    epoch: Instant,
    /// Ejection decisions are taken one at a time, so the share ejected stays within bounds.
    deciding: Mutex<()>,
    ejected_hosts: Gauge,
    ejections: Family<EjectionLabels, Counter>,
}

/// A host of the cluster, as the detector sees it.
pub(crate) trait Judged {
    fn addr(&self) -> SocketAddr;
    fn health(&self) -> &HostHealth;
}

impl Outlier {
    pub(crate) fn new(cluster: Arc<str>, cfg: &OutlierDetection, metrics: &Metrics) -> Self {
        let ejected_hosts = metrics
            .outlier_ejected_hosts
            .get_or_create(&NameLabels {
                name: cluster.to_string(),
            })
            .clone();
        // A new config version starts with every host in.
        ejected_hosts.set(0);
        Self {
            cluster,
            consecutive_failures: cfg.consecutive_failures.max(1),
            base: cfg.base_ejection(),
            max: cfg.max_ejection().max(cfg.base_ejection()),
            max_percent: cfg.max_ejection_percent.min(100),
            epoch: Instant::now(),
            deciding: Mutex::new(()),
            ejected_hosts,
            ejections: metrics.outlier_ejections.clone(),
        }
    }

    fn millis(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether `host` may take a request at `now`. A host whose ejection is over comes back
    /// on probation (and the gauge is recounted over `hosts`).
    pub(crate) fn available<H: Judged>(&self, host: &H, hosts: &[H], now: Instant) -> bool {
        let until = host.health().ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if self.millis(now) < until {
            return false;
        }
        let h = host.health();
        if h.ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            h.probation.store(true, Ordering::Release);
            tracing::info!(cluster = %self.cluster, host = %host.addr(), "ejected host back on probation");
            self.recount(hosts, now);
        }
        true
    }

    /// Whether `host` is ejected at `now` (without bringing it back).
    pub(crate) fn is_ejected(&self, health: &HostHealth, now: Instant) -> bool {
        let until = health.ejected_until.load(Ordering::Acquire);
        until != 0 && self.millis(now) < until
    }

    fn recount<H: Judged>(&self, hosts: &[H], now: Instant) -> usize {
        let n = hosts
            .iter()
            .filter(|h| self.is_ejected(h.health(), now))
            .count();
        self.ejected_hosts.set(i64::try_from(n).unwrap_or(i64::MAX));
        n
    }

    /// How many of `n` hosts may be ejected at once: `maxEjectionPercent` of them rounded
    /// down, but at least one of several (unless it is 0), and one is always kept below 100 %.
    pub(crate) fn max_ejected(&self, n: usize) -> usize {
        if self.max_percent >= 100 {
            return n;
        }
        if self.max_percent == 0 {
            return 0;
        }
        let share = n.saturating_mul(self.max_percent as usize) / 100;
        share.max(1).min(n.saturating_sub(1))
    }

    /// Takes note of one try's verdict on `host` (one of `hosts`) at `now`.
    pub(crate) fn observe<H: Judged>(&self, host: &H, hosts: &[H], verdict: Verdict, now: Instant) {
        let h = host.health();
        match verdict {
            Verdict::Unknown => {}
            Verdict::Healthy => {
                if h.probation.swap(false, Ordering::AcqRel) {
                    h.history.lock().returned_at = Some(now);
                }
                if h.consecutive.load(Ordering::Relaxed) != 0 {
                    h.consecutive.store(0, Ordering::Relaxed);
                }
            }
            Verdict::Failed(why) => {
                if self.is_ejected(h, now) {
                    // An answer to a request sent before the ejection.
                    return;
                }
                let on_probation = h.probation.swap(false, Ordering::AcqRel);
                let failures = h
                    .consecutive
                    .fetch_add(1, Ordering::AcqRel)
                    .saturating_add(1);
                if on_probation || failures >= self.consecutive_failures {
                    self.eject(host, hosts, why, now);
                }
            }
        }
    }

    fn eject<H: Judged>(&self, host: &H, hosts: &[H], why: HostFailure, now: Instant) {
        let _one_at_a_time = self.deciding.lock();
        let h = host.health();
        if self.is_ejected(h, now) {
            return;
        }
        // Hosts whose ejection is over count as back.
        let ejected = self.recount(hosts, now);
        let allowed = self.max_ejected(hosts.len());
        if ejected >= allowed {
            tracing::debug!(
                cluster = %self.cluster, host = %host.addr(), ejected, allowed,
                "host keeps failing but no more hosts may be ejected"
            );
            return;
        }
        let duration = {
            let mut history = h.history.lock();
            // A host that stayed well for the longest ejection time starts over.
            if history
                .returned_at
                .is_some_and(|t| now.saturating_duration_since(t) >= self.max)
            {
                history.ejections = 0;
            }
            history.ejections = history.ejections.saturating_add(1);
            self.base.saturating_mul(history.ejections).min(self.max)
        };
        let until = self.millis(now.checked_add(duration).unwrap_or(now)).max(1);
        h.consecutive.store(0, Ordering::Release);
        h.ejected_until.store(until, Ordering::Release);
        self.ejected_hosts
            .set(i64::try_from(ejected.saturating_add(1)).unwrap_or(i64::MAX));
        self.ejections
            .get_or_create(&EjectionLabels {
                cluster: LabelStr::from(&self.cluster),
                reason: why.as_str(),
            })
            .inc();
        tracing::warn!(
            cluster = %self.cluster, host = %host.addr(), reason = why.as_str(),
            ejection_ms = duration.as_millis() as u64, "host ejected"
        );
    }

    /// The hosts ejected at `now`, for the config dump.
    pub(crate) fn ejected<H: Judged>(&self, hosts: &[H], now: Instant) -> Vec<SocketAddr> {
        hosts
            .iter()
            .filter(|h| self.is_ejected(h.health(), now))
            .map(Judged::addr)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(SocketAddr, HostHealth);

    impl Judged for H {
        fn addr(&self) -> SocketAddr {
            self.0
        }
        fn health(&self) -> &HostHealth {
            &self.1
        }
    }

    fn hosts(n: u16) -> Vec<H> {
        (0..n)
            .map(|i| {
                H(
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i)),
                    HostHealth::default(),
                )
            })
            .collect()
    }

    fn detector(
        consecutive: u32,
        base_ms: u64,
        max_ms: u64,
        pct: u32,
        metrics: &Metrics,
    ) -> Outlier {
        Outlier::new(
            Arc::from("users"),
            &OutlierDetection {
                consecutive_failures: consecutive,
                base_ejection_ms: base_ms,
                max_ejection_ms: max_ms,
                max_ejection_percent: pct,
            },
            metrics,
        )
    }

    const FAIL: Verdict = Verdict::Failed(HostFailure::Http5xx);

    fn fail(o: &Outlier, hs: &[H], i: usize, times: u32) {
        for _ in 0..times {
            o.observe(&hs[i], hs, FAIL, Instant::now());
        }
    }

    fn available(o: &Outlier, hs: &[H], i: usize) -> bool {
        o.available(&hs[i], hs, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_a_growing_time_then_probation_decides() {
        let metrics = Metrics::new();
        let o = detector(3, 1000, 2500, 50, &metrics);
        let hs = hosts(4);
        fail(&o, &hs, 0, 2);
        o.observe(&hs[0], &hs, Verdict::Healthy, Instant::now());
        fail(&o, &hs, 0, 2);
        assert!(
            available(&o, &hs, 0),
            "a success in between resets the count"
        );
        fail(&o, &hs, 0, 1);
        assert!(!available(&o, &hs, 0), "third failure in a row ejects");
        // First ejection: base time.
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(!available(&o, &hs, 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(available(&o, &hs, 0), "back after 1000 ms");
        // Probation: one failure re-ejects, for twice the base time.
        fail(&o, &hs, 0, 1);
        assert!(!available(&o, &hs, 0));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!available(&o, &hs, 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(available(&o, &hs, 0), "back after 2000 ms");
        // Third ejection: 3000 ms capped at the 2500 ms maximum.
        fail(&o, &hs, 0, 1);
        tokio::time::advance(Duration::from_millis(2499)).await;
        assert!(!available(&o, &hs, 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(available(&o, &hs, 0));
        // A good first answer ends probation: one failure no longer ejects.
        o.observe(&hs[0], &hs, Verdict::Healthy, Instant::now());
        fail(&o, &hs, 0, 1);
        assert!(available(&o, &hs, 0));
        // Healthy for the longest ejection time: the next ejection is a first one again.
        o.observe(&hs[0], &hs, Verdict::Healthy, Instant::now());
        tokio::time::advance(Duration::from_millis(2500)).await;
        fail(&o, &hs, 0, 3);
        assert!(!available(&o, &hs, 0));
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(available(&o, &hs, 0), "base time again");
        let m = metrics.encode();
        assert!(
            m.contains(r#"outrigger_outlier_ejections_total{cluster="users",reason="http_5xx"} 4"#),
            "{m}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_verdicts_and_late_answers_do_not_count() {
        let metrics = Metrics::new();
        let o = detector(2, 1000, 1000, 50, &metrics);
        let hs = hosts(2);
        fail(&o, &hs, 0, 1);
        o.observe(&hs[0], &hs, Verdict::Unknown, Instant::now());
        fail(&o, &hs, 0, 1);
        assert!(
            !available(&o, &hs, 0),
            "unknown verdicts neither count nor reset"
        );
        // Failures of requests sent before the ejection do not lengthen it.
        fail(&o, &hs, 0, 5);
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(available(&o, &hs, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_configured_share_is_ejected_and_one_host_is_kept() {
        let metrics = Metrics::new();
        let cases: &[(u32, u16, usize)] = &[
            // (maxEjectionPercent, hosts, ejected at most)
            (50, 4, 2),
            (50, 3, 1),
            (67, 3, 2),
            (10, 3, 1),
            (0, 3, 0),
            (99, 3, 2),
            (100, 3, 3),
            (50, 1, 0),
            (100, 1, 1),
        ];
        for &(pct, n, want) in cases {
            let o = detector(1, 1000, 1000, pct, &metrics);
            let hs = hosts(n);
            assert_eq!(o.max_ejected(hs.len()), want, "{pct}% of {n}");
            for i in 0..hs.len() {
                fail(&o, &hs, i, 1);
            }
            let out = (0..hs.len()).filter(|&i| !available(&o, &hs, i)).count();
            assert_eq!(out, want, "{pct}% of {n}");
            assert_eq!(o.ejected(&hs, Instant::now()).len(), want);
        }
        // When an ejection ends, another failing host may take its place.
        let o = detector(1, 1000, 1000, 50, &metrics);
        let hs = hosts(2);
        fail(&o, &hs, 0, 1);
        fail(&o, &hs, 1, 1);
        assert!(!available(&o, &hs, 0) && available(&o, &hs, 1));
        tokio::time::advance(Duration::from_millis(1000)).await;
        o.observe(&hs[0], &hs, Verdict::Healthy, Instant::now());
        fail(&o, &hs, 1, 1);
        assert!(available(&o, &hs, 0) && !available(&o, &hs, 1));
        let m = metrics.encode();
        assert!(
            m.contains(r#"outrigger_outlier_ejected_hosts{name="users"} 1"#),
            "{m}"
        );
    }

    #[test]
    fn answers_are_judged_per_protocol() {
        let http = |status: u16, grpc: Option<&str>| {
            let mut r = http::Response::new(());
            *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
            if let Some(g) = grpc {
                r.headers_mut()
                    .insert("grpc-status", g.parse().expect("value"));
            }
            r.failure()
        };
        assert_eq!(http(200, None), None);
        assert_eq!(http(404, None), None);
        assert_eq!(http(503, None), Some(HostFailure::Http5xx));
        assert_eq!(http(500, None), Some(HostFailure::Http5xx));
        assert_eq!(http(200, Some("14")), Some(HostFailure::GrpcStatus));
        assert_eq!(http(200, Some("8")), Some(HostFailure::GrpcStatus));
        assert_eq!(http(200, Some("5")), None);
        assert_eq!(http(200, Some("0")), None);

        let req = bolt::Frame::request(1, 100, "C", bolt::HeaderMap::new(), "x");
        for (status, failed) in [
            (bolt::status::SUCCESS, false),
            (bolt::status::SERVER_THREADPOOL_BUSY, true),
            (bolt::status::SERVER_EXCEPTION, true),
            (bolt::status::TIMEOUT, false),
            (bolt::status::NO_PROCESSOR, false),
        ] {
            assert_eq!(
                Some(req.response(status)).failure().is_some(),
                failed,
                "bolt {status}"
            );
        }
        assert_eq!(None::<bolt::Frame>.failure(), None, "one-way");

        let call = dubbo::Frame::request(1, bytes::Bytes::new());
        for (status, failed) in [
            (dubbo::status::OK, false),
            (dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR, true),
            (dubbo::status::SERVER_ERROR, true),
            (dubbo::status::SERVICE_ERROR, true),
            (dubbo::status::SERVICE_NOT_FOUND, false),
            (dubbo::status::BAD_REQUEST, false),
        ] {
            assert_eq!(
                Some(call.error_response(status, "x")).failure().is_some(),
                failed,
                "dubbo {status}"
            );
        }
    }

    #[test]
    fn verdicts_of_failures_follow_their_cause() {
        use outrigger_core::ProxyError;
        let v = |c: Cause| verdict::<Option<dubbo::Frame>, _>(&Err(ProxyError::new(c, "x")));
        assert_eq!(
            v(Cause::ConnectFailure),
            Verdict::Failed(HostFailure::ConnectFailure)
        );
        assert_eq!(v(Cause::Reset), Verdict::Failed(HostFailure::Reset));
        assert_eq!(v(Cause::Timeout), Verdict::Failed(HostFailure::Timeout));
        for c in [
            Cause::BadRequest,
            Cause::Overflow,
            Cause::CircuitOpen,
            Cause::RateLimited,
        ] {
            assert_eq!(v(c), Verdict::Unknown, "{c}");
        }
        assert_eq!(
            verdict::<Option<dubbo::Frame>, ProxyError>(&Ok(None)),
            Verdict::Healthy
        );
    }
}
