//! The one forwarding pipeline of the proxy core, for every upstream protocol: pick a host of
//! the route's cluster, exchange the request on that host's pool within the try's deadline, and
//! retry while the route's policy allows it ([`Route::may_retry`]: a listed condition, tries
//! left, time left). What differs by protocol — which pool a host has, one exchange on it, the
//! retry condition a successful answer meets — is an [`Upstream`]. Failures come back as the
//! proxy's own [`ProxyError`], with the [`Cause`] the pool classified; nothing here looks at
//! messages to find out what happened. Resilience hooks in at three points: admission (rate
//! limit, circuit breaker, retry budget: see `resilience`), host choice and the verdict on each
//! try (outlier detection: see `cluster`), and each retry (breaker and budget again).

use std::future::Future;

use outrigger_config::RetryOn;
use outrigger_core::{Cause, Failure, ProxyError};
use tokio::time::Instant;

use crate::{
    cluster::Host,
    outlier::{Health, verdict},
    resilience,
    route::Route,
    snapshot::Shared,
};

/// One upstream protocol, as the forwarding pipeline sees it.
pub(crate) trait Upstream {
    /// `http`, `bolt` or `dubbo`, for messages.
    const NAME: &'static str;
    /// A host's pool in this protocol.
    type Pool;
    /// What is sent on each try (cloned for every try but the last).
    type Request: Clone + Send;
    /// What a successful exchange brings back; it tells whether the host is unwell.
    type Response: Send + Health;
    /// Why an exchange failed; it knows its cause.
    type Error: Failure;

    /// The host's pool, when the host speaks this protocol.
    fn pool(host: &Host) -> Option<&Self::Pool>;
    /// One exchange on `pool` (a pool of `host`), finished by `deadline`.
    fn exchange<'a>(
        pool: &'a Self::Pool,
        host: &'a Host,
        req: Self::Request,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send + 'a;
    /// The retry condition a successful exchange's answer meets (an HTTP status), if any.
    fn answered(resp: &Self::Response) -> Option<RetryOn>;
}

/// The retry condition a failure meets. A try cut short by its own (per-try) deadline while
/// time is left overall counts as a reset.
pub(crate) fn failed(cause: Cause, cut_by_try_deadline: bool) -> Option<RetryOn> {
    match cause {
        Cause::ConnectFailure => Some(RetryOn::ConnectFailure),
        Cause::Reset => Some(RetryOn::Reset),
        Cause::Timeout if cut_by_try_deadline => Some(RetryOn::Reset),
        _ => None,
    }
}

/// Sends `req` to the route's cluster by `deadline`, retrying on the route's conditions.
pub(crate) async fn forward<U: Upstream>(
    shared: &Shared,
    route: &Route,
    req: U::Request,
    deadline: Instant,
) -> Result<U::Response, ProxyError> {
    let cluster = &route.cluster;
    let mut admission = resilience::admit(route)?;
    let tries = route.tries();
    // The last try takes the request instead of a copy of it.
    let mut req = Some(req);
    let mut try_no = 0;
    loop {
        try_no += 1;
        let Some(host) = cluster.pick() else {
            return Err(cluster.no_healthy_host());
        };
        let Some(pool) = U::pool(&host) else {
            // Routes only take requests of their cluster's protocol; this is a bug guard.
            return Err(ProxyError::new(
                Cause::NoRoute,
                format!("cluster {} does not speak {}", cluster.name, U::NAME),
            ));
        };
        let try_deadline = route.try_deadline(deadline);
        let this = if try_no >= tries {
            req.take()
        } else {
            req.clone()
        };
        let Some(this) = this else {
            // Unreachable: the request is taken only on the last try.
            return Err(ProxyError::new(Cause::Reset, "request lost before a retry"));
        };
        let outcome = U::exchange(pool, &host, this, try_deadline).await;
        cluster.observe(&host, verdict(&outcome));
        let addr = host.addr;
        drop(host);
        let condition = match &outcome {
            Ok(resp) => U::answered(resp),
            Err(e) => failed(e.cause(), try_deadline < deadline),
        };
        if route.may_retry(try_no, deadline, condition) && admission.retry(route) {
            shared.count_retry(cluster, addr, try_no);
            continue;
        }
        return outcome.map_err(|e| {
            let cause = e.cause();
            let message = if cause == Cause::Timeout {
                format!(
                    "cluster {} host {addr}: no answer within the route timeout of {} ms",
                    cluster.name,
                    route.timeout.as_millis()
                )
            } else {
                format!("cluster {} host {addr}: {e}", cluster.name)
            };
            ProxyError::new(cause, message)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_meet_retry_conditions() {
        assert_eq!(
            failed(Cause::ConnectFailure, false),
            Some(RetryOn::ConnectFailure)
        );
        assert_eq!(failed(Cause::Reset, false), Some(RetryOn::Reset));
        assert_eq!(failed(Cause::Timeout, true), Some(RetryOn::Reset));
        assert_eq!(
            failed(Cause::Timeout, false),
            None,
            "the overall deadline passed"
        );
        for c in [
            Cause::Overflow,
            Cause::BadRequest,
            Cause::NoRoute,
            Cause::NoHealthyHost,
        ] {
            assert_eq!(failed(c, true), None, "{c}");
        }
    }
}
