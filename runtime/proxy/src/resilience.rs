//! The resilience hooks of the forwarding pipeline, in the order a request meets them: the
//! route's rate limit, the cluster's circuit breaker (`maxRequests`), the route's retry budget
//! (every admitted request earns its share) — and, for each retry the route's policy allows,
//! the breaker's `maxRetries` and the budget again. Outlier detection hooks in at host choice
//! and after each try (see `cluster`). Not for the decisions themselves (see `ratelimit`,
//! `breaker`, `budget`, `outlier`).

use outrigger_core::ProxyError;

use crate::{breaker::Admitted, route::Route};

/// One request's places under the cluster's circuit breaker, held until it is answered.
pub(crate) struct Admission<'a> {
    _request: Option<Admitted<'a>>,
    retry: Option<Admitted<'a>>,
}

/// Lets a request through the route's rate limit and the cluster's breaker, or answers it.
pub(crate) fn admit(route: &Route) -> Result<Admission<'_>, ProxyError> {
    if let Some(limit) = &route.rate_limit {
        limit.admit()?;
    }
    let request = route
        .cluster
        .breaker
        .as_ref()
        .map(|b| b.admit())
        .transpose()?;
    if let Some(budget) = route.retry.as_ref().and_then(|r| r.budget.as_ref()) {
        budget.deposit();
    }
    Ok(Admission {
        _request: request,
        retry: None,
    })
}

impl<'a> Admission<'a> {
    /// Whether a retry the route's policy allows may be made: a place under the breaker's
    /// `maxRetries` (held until the next retry or the answer) and a retry left in the budget.
    pub(crate) fn retry(&mut self, route: &'a Route) -> bool {
        self.retry = None;
        let place = match &route.cluster.breaker {
            Some(b) => match b.admit_retry() {
                Some(place) => Some(place),
                None => return false,
            },
            None => None,
        };
        if let Some(budget) = route.retry.as_ref().and_then(|r| r.budget.as_ref())
            && !budget.withdraw()
        {
            tracing::debug!(cluster = %route.cluster.name, "retry not made: the retry budget is spent");
            return false;
        }
        self.retry = place;
        true
    }
}
