//! Local rate limits of listeners and routes: a token bucket holding up to `burst` tokens,
//! refilled at `requestsPerSecond`; a request takes one token or is turned away at once with
//! [`Cause::RateLimited`] (HTTP 429, gRPC RESOURCE_EXHAUSTED, the Bolt and Dubbo overflow
//! statuses). The clock is tokio's, so tests can pause it. Not a global (cross-pod) limit and
//! not a queue: nothing waits for a token.

use outrigger_config::RateLimit;
use outrigger_core::{Cause, LabelStr, Metrics, ProxyError, RateLimitLabels};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;

/// One token bucket.
pub(crate) struct TokenBucket {
    /// Tokens added per second.
    rate: f64,
    /// Tokens held at most.
    burst: f64,
    state: Mutex<Bucket>,
    /// What the limit belongs to, for messages: `listener egress`, `route main/0`.
    owner: String,
    rejected: Counter,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl std::fmt::Debug for TokenBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBucket")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl TokenBucket {
    /// A full bucket for `scope` (`listener` or `route`) `name`.
    pub(crate) fn new(scope: &'static str, name: &str, cfg: &RateLimit, metrics: &Metrics) -> Self {
        let burst = f64::from(cfg.burst().max(1));
        Self {
            rate: f64::from(cfg.requests_per_second.max(1)),
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                at: Instant::now(),
            }),
            owner: format!("{scope} {name}"),
            rejected: metrics
                .rate_limited
                .get_or_create(&RateLimitLabels {
                    scope,
                    name: LabelStr::Shared(name.into()),
                })
                .clone(),
        }
    }

    /// Takes a token, or answers with the proxy's rate-limited error.
    pub(crate) fn admit(&self) -> Result<(), ProxyError> {
        let now = Instant::now();
        let taken = {
            let mut b = self.state.lock();
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                true
            } else {
                false
            }
        };
        if taken {
            return Ok(());
        }
        self.rejected.inc();
        Err(ProxyError::new(
            Cause::RateLimited,
            format!(
                "{}: rate limit of {} requests per second (burst {}) reached",
                self.owner, self.rate, self.burst
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use outrigger_core::Failure as _;

    use super::*;

    fn bucket(rps: u32, burst: Option<u32>) -> TokenBucket {
        TokenBucket::new(
            "listener",
            "egress",
            &RateLimit {
                requests_per_second: rps,
                burst,
            },
            &Metrics::new(),
        )
    }

    fn admitted(b: &TokenBucket, n: usize) -> usize {
        (0..n).filter(|_| b.admit().is_ok()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_sustained_rate() {
        let b = bucket(10, Some(5));
        assert_eq!(admitted(&b, 20), 5, "the burst");
        let e = b.admit().expect_err("empty");
        assert_eq!(e.cause(), Cause::RateLimited);
        assert_eq!(
            e.message(),
            "listener egress: rate limit of 10 requests per second (burst 5) reached"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(admitted(&b, 5), 1, "one token per 100 ms");
        tokio::time::advance(Duration::from_millis(350)).await;
        assert_eq!(admitted(&b, 5), 3, "3.5 tokens refilled");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(admitted(&b, 20), 5, "never more than the burst");
        let mut total = 0;
        for _ in 0..10 {
            tokio::time::advance(Duration::from_millis(100)).await;
            total += admitted(&b, 3);
        }
        assert_eq!(total, 10, "10 a second sustained");
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_defaults_to_the_rate() {
        let b = bucket(3, None);
        assert_eq!(admitted(&b, 10), 3);
    }
}
