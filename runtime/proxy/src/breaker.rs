//! Circuit breaking of a cluster (Envoy's thresholds, not a failure-rate breaker): caps on the
//! requests in flight to its hosts (`maxRequests`), on the requests waiting for a connection
//! (`maxPendingRequests`, a [`WaitLimit`] the cluster's host pools share) and on the retries in
//! flight (`maxRetries`). A request over a cap is turned away at once with the cap named, so
//! that a slow cluster cannot soak up every caller and connection; it is never queued. Not for
//! ejecting failing hosts (see `outlier`) or for rate limits (see `ratelimit`).

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use outrigger_config::CircuitBreaker;
use outrigger_core::{BreakerLabels, Cause, LabelStr, Metrics, ProxyError};
use outrigger_pool::WaitLimit;
use prometheus_client::metrics::counter::Counter;

/// The circuit breaker of one cluster.
pub(crate) struct Breaker {
    cluster: Arc<str>,
    max_requests: usize,
    max_retries: usize,
    requests: AtomicUsize,
    retries: AtomicUsize,
    rejected_requests: Counter,
    rejected_retries: Counter,
    /// Shared by the pools of the cluster's hosts.
    pub(crate) waiters: Arc<WaitLimit>,
}

/// A counted place under one of the breaker's caps, given back on drop.
pub(crate) struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn take(count: &AtomicUsize, max: usize) -> Option<Admitted<'_>> {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Admitted(count))
}

impl Breaker {
    pub(crate) fn new(cluster: Arc<str>, cfg: &CircuitBreaker, metrics: &Metrics) -> Self {
        let counter = |limit| {
            metrics
                .circuit_breaker_rejections
                .get_or_create(&BreakerLabels {
                    cluster: LabelStr::from(&cluster),
                    limit,
                })
                .clone()
        };
        let waiters = Arc::new(WaitLimit::new(
            usize::try_from(cfg.max_pending_requests).unwrap_or(usize::MAX),
            format!("cluster {cluster}"),
            counter("max_pending_requests"),
        ));
        Self {
            max_requests: usize::try_from(cfg.max_requests).unwrap_or(usize::MAX),
            max_retries: usize::try_from(cfg.max_retries).unwrap_or(usize::MAX),
            requests: AtomicUsize::new(0),
            retries: AtomicUsize::new(0),
            rejected_requests: counter("max_requests"),
            rejected_retries: counter("max_retries"),
            waiters,
            cluster,
        }
    }

    /// A place for one request until the guard drops, or the proxy's answer naming the cap.
    pub(crate) fn admit(&self) -> Result<Admitted<'_>, ProxyError> {
        take(&self.requests, self.max_requests).ok_or_else(|| {
            self.rejected_requests.inc();
            ProxyError::new(
                Cause::CircuitOpen,
                format!(
                    "circuit breaker of cluster {}: {} requests already in flight (maxRequests)",
                    self.cluster, self.max_requests
                ),
            )
        })
    }

    /// A place for one retry until the guard drops, or `None` (counted) at the cap.
    pub(crate) fn admit_retry(&self) -> Option<Admitted<'_>> {
        let admitted = take(&self.retries, self.max_retries);
        if admitted.is_none() {
            self.rejected_retries.inc();
            tracing::debug!(cluster = %self.cluster, max = self.max_retries, "retry not made: maxRetries in flight");
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(requests: u32, pending: u32, retries: u32, metrics: &Metrics) -> Breaker {
        Breaker::new(
            Arc::from("users"),
            &CircuitBreaker {
                max_requests: requests,
                max_pending_requests: pending,
                max_retries: retries,
            },
            metrics,
        )
    }

    #[test]
    fn caps_requests_and_retries_in_flight() {
        let metrics = Metrics::new();
        let b = breaker(2, 0, 1, &metrics);
        let first = b.admit().expect("first");
        let _second = b.admit().expect("second");
        let Err(e) = b.admit() else {
            panic!("over the cap")
        };
        assert_eq!(e.cause(), Cause::CircuitOpen);
        assert_eq!(
            e.message(),
            "circuit breaker of cluster users: 2 requests already in flight (maxRequests)"
        );
        drop(first);
        let _third = b.admit().expect("a place came free");
        let retry = b.admit_retry().expect("one retry");
        assert!(b.admit_retry().is_none());
        drop(retry);
        assert!(b.admit_retry().is_some());
        assert!(
            b.waiters.enter().is_none(),
            "maxPendingRequests 0: nobody waits"
        );
        let m = metrics.encode();
        for limit in ["max_requests", "max_retries", "max_pending_requests"] {
            assert!(
                m.contains(&format!(
                    "outrigger_circuit_breaker_rejections_total{{cluster=\"users\",limit=\"{limit}\"}} 1"
                )),
                "{limit}: {m}"
            );
        }
    }

    use outrigger_core::Failure as _;
}
