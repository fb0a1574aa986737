//! Retry budgets of routes: retries may be at most `ratio` times the requests of the last ten
//! seconds, plus `minPerSecond` retries a second whatever the traffic (Linkerd's budget, kept by
//! tower's [`TpsBudget`]), so that retries cannot multiply the load on a cluster that is
//! failing anyway. A retry beyond the budget is not made and the last try's outcome is the
//! answer. Not for when a retry is allowed at all (see `route`) or for caps on retries in
//! flight (see `breaker`).

use std::time::Duration;

use outrigger_config::RetryBudget as BudgetConfig;
use prometheus_client::metrics::counter::Counter;
use tower::retry::budget::{Budget as _, TpsBudget};

/// How far back requests earn retries.
const WINDOW: Duration = Duration::from_secs(10);

/// One route's retry budget.
pub(crate) struct RetryBudget {
    budget: TpsBudget,
    exhausted: Counter,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget").finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget as configured (a ratio outside 0..=10 is clamped; validation rejects it);
    /// `exhausted` counts the retries it refuses.
    pub(crate) fn new(cfg: &BudgetConfig, exhausted: Counter) -> Self {
        let ratio = if cfg.ratio.is_finite() {
            cfg.ratio.clamp(0.0, 10.0)
        } else {
            0.0
        };
        // TpsBudget takes at most i32::MAX - 1 retries a second.
        let min_per_second = cfg.min_per_second.min(1_000_000);
        Self {
            budget: TpsBudget::new(WINDOW, min_per_second, ratio as f32),
            exhausted,
        }
    }

    /// Counts one request, which earns `ratio` retries.
    pub(crate) fn deposit(&self) {
        self.budget.deposit();
    }

    /// Spends one retry; `false` (counted) when the budget is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let ok = self.budget.withdraw();
        if !ok {
            self.exhausted.inc();
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_second: u32) -> (RetryBudget, Counter) {
        let exhausted = Counter::default();
        (
            RetryBudget::new(
                &BudgetConfig {
                    ratio,
                    min_per_second,
                },
                exhausted.clone(),
            ),
            exhausted,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_recent_requests() {
        let (b, exhausted) = budget(0.2, 0);
        for _ in 0..50 {
            b.deposit();
        }
        let allowed = (0..50).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 10, "0.2 of 50 requests");
        assert_eq!(exhausted.get(), 40);
        // Deposits older than the window no longer count.
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        assert!(!b.withdraw());
        b.deposit();
        assert!(!b.withdraw(), "one request earns a fifth of a retry");
        for _ in 0..4 {
            b.deposit();
        }
        assert!(b.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn a_minimum_rate_is_allowed_without_traffic() {
        let (b, _) = budget(0.0, 2);
        let allowed = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(allowed, 20, "2 a second over the 10 second window");
    }
}
