//! The one forwarding pipeline of the proxy core, for every upstream protocol: pick a host of
//! the route's cluster, exchange the request on that host's pool within the try's deadline, and
//! retry while the route's policy allows it ([`Route::may_retry`]: a listed condition, tries
//! left, time left) and the request is safe to send again (nothing was sent, or the request
//! is replayable: an idempotent or opted-in HTTP method with a body within the replay buffer),
//! after an exponential backoff with full jitter that never runs past the deadline. What
//! differs by protocol — which pool a host has, one exchange on it, whether a request may be
//! replayed, the retry condition a successful answer meets — is an [`Upstream`]. Failures come back as the
//! proxy's own [`ProxyError`], with the [`Cause`] the pool classified; nothing here looks at
//! messages to find out what happened. Resilience hooks in at three points: admission (rate
//! limit, circuit breaker, retry budget: see `resilience`), host choice and the verdict on each
//! try (outlier detection: see `cluster`), and each retry (breaker and budget again).

use std::{borrow::Cow, future::Future, net::SocketAddr, time::Duration};

use outrigger_config::RetryOn;
use outrigger_core::{Cause, Failure, ProxyError, Span, SpanKind, TraceContext, TryAttributes};
use tokio::time::Instant;

use crate::{
    cluster::Host,
    outlier::{Health, verdict},
    resilience,
    route::{Retry, Route},
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
    /// One exchange on `pool` (a pool of `host`), finished by `deadline`; adds to `waited`
    /// (when asked) the time spent waiting for a connection.
    fn exchange<'a>(
        pool: &'a Self::Pool,
        host: &'a Host,
        req: Self::Request,
        deadline: Instant,
        waited: Option<&'a mut Duration>,
    ) -> impl Future<Output = Result<Self::Response, Self::Error>> + Send + 'a;
    /// Names the try's span as the upstream's parent in `req` (a `traceparent` header), when
    /// the protocol's requests can carry it per try.
    fn trace(req: &mut Self::Request, context: &TraceContext);
    /// The name of a try's client span.
    fn operation(req: &Self::Request) -> Cow<'static, str>;
    /// The upstream's status in a successful exchange's answer, for the try's span.
    fn status(resp: &Self::Response) -> Option<i64>;
    /// The retry condition a successful exchange's answer meets (an HTTP status), if any.
    fn answered(resp: &Self::Response) -> Option<RetryOn>;
    /// Whether `req` may be sent again after it was sent once.
    fn replayable(req: &Self::Request, retry: &Retry) -> bool;
    /// Whether `req` can be sent again at all: a streamed body that a failed try took is
    /// gone, even when nothing of it reached the upstream.
    fn intact(req: &Self::Request) -> bool;
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

/// What the forwarding pipeline did with one request, for its access log line: tries made
/// and the host of the last. Lives on the caller's stack; filling it costs no allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Trail {
    /// Tries sent (0 when the request never reached a host).
    pub(crate) attempts: u32,
    /// The host of the last try.
    pub(crate) host: Option<SocketAddr>,
}

/// Sends `req` to the route's cluster by `deadline`, retrying on the route's conditions, and
/// notes in `trail` the tries made. With a `parent` span (trace context handled), each try is a
/// client span of its own, a child of `parent`, named to the upstream as its parent where the
/// protocol allows, and recorded when spans are exported.
pub(crate) async fn forward<U: Upstream>(
    shared: &Shared,
    route: &Route,
    req: U::Request,
    deadline: Instant,
    trail: &mut Trail,
    parent: Option<&Span>,
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
        let Some(mut this) = this else {
            // Unreachable: the request is taken only on the last try.
            return Err(ProxyError::new(Cause::Reset, "request lost before a retry"));
        };
        trail.attempts = try_no;
        trail.host = Some(host.addr);
        let span = parent.map(Span::child);
        if let Some(span) = &span {
            U::trace(&mut this, &span.context);
        }
        let recorded = shared
            .obs
            .recorder(span.as_ref())
            .map(|_| (U::operation(&this), Duration::ZERO));
        let (operation, mut waited) = recorded.unzip();
        let outcome = U::exchange(pool, &host, this, try_deadline, waited.as_mut()).await;
        if let (Some(span), Some(operation)) = (&span, operation) {
            let (status, cause) = match &outcome {
                Ok(resp) => (U::status(resp), None),
                Err(e) => (None, Some(e.cause())),
            };
            let attributes = TryAttributes {
                protocol: U::NAME,
                route: &route.name,
                cluster: &cluster.name,
                host: host.addr,
                attempt: try_no,
                pool_wait: waited,
                status,
                cause,
            };
            let error = outcome.as_ref().err().map(ToString::to_string);
            shared.obs.record(span.finish(
                SpanKind::Client,
                operation,
                attributes.into_attributes(),
                error,
            ));
        }
        cluster.observe(&host, verdict(&outcome));
        let addr = host.addr;
        drop(host);
        let condition = match &outcome {
            Ok(resp) => U::answered(resp),
            Err(e) => failed(e.cause(), try_deadline < deadline),
        }
        .filter(|&c| {
            // Nothing was sent on a connect failure: any request that is still whole may go
            // again; a sent one only when replaying it is safe.
            (c == RetryOn::ConnectFailure && req.as_ref().is_some_and(U::intact))
                || route
                    .retry
                    .as_ref()
                    .zip(req.as_ref())
                    .is_some_and(|(retry, req)| U::replayable(req, retry))
        });
        if let Some(reason) = condition
            && route.may_retry(try_no, deadline, condition)
            && admission.retry(route)
        {
            let resume = Instant::now().checked_add(route.backoff(try_no));
            if resume.is_some_and(|t| t < deadline) {
                if let Some(t) = resume {
                    tokio::time::sleep_until(t).await;
                }
                shared.count_retry(cluster, addr, try_no, reason);
                continue;
            }
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
    use std::{
        cell::RefCell,
        collections::VecDeque,
        net::SocketAddr,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use arc_swap::ArcSwap;
    use outrigger_config::{ClusterConfig, RouteConfig};
    use outrigger_core::{Metrics, Shutdown};

    use super::*;
    use crate::{cluster::Cluster, snapshot::ProxySnapshot};

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

    /// What one scripted try does.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// Answers with this status.
        Answer(u16),
        /// Fails with this cause.
        Fail(Cause),
        /// Never answers (the try's deadline cuts it).
        Hang,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("scripted {0}")]
    struct Scripted(Cause);

    impl Failure for Scripted {
        fn cause(&self) -> Cause {
            self.0
        }
    }

    thread_local! {
        /// The steps left, and the hosts each try went to.
        static SCRIPT: RefCell<(VecDeque<Step>, Vec<SocketAddr>)> = RefCell::default();
        /// Whether the fake's requests may be replayed.
        static REPLAYABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
    }

    /// A request that counts its copies.
    #[derive(Debug)]
    struct Req(Arc<AtomicUsize>);

    impl Clone for Req {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::Relaxed);
            Req(self.0.clone())
        }
    }

    impl Health for u16 {
        fn failure(&self) -> Option<crate::outlier::HostFailure> {
            (*self >= 500).then_some(crate::outlier::HostFailure::Http5xx)
        }
    }

    /// An upstream whose tries follow [`SCRIPT`].
    struct Fake;

    impl Upstream for Fake {
        const NAME: &'static str = "fake";
        type Pool = Host;
        type Request = Req;
        type Response = u16;
        type Error = Scripted;

        fn pool(host: &Host) -> Option<&Host> {
            Some(host)
        }

        async fn exchange(
            _: &Host,
            host: &Host,
            _: Req,
            deadline: Instant,
            _: Option<&mut Duration>,
        ) -> Result<u16, Scripted> {
            let step = SCRIPT.with_borrow_mut(|(steps, hosts)| {
                hosts.push(host.addr);
                steps.pop_front().unwrap_or(Step::Answer(200))
            });
            match step {
                Step::Answer(s) => Ok(s),
                Step::Fail(c) => Err(Scripted(c)),
                Step::Hang => {
                    tokio::time::sleep_until(deadline).await;
                    Err(Scripted(Cause::Timeout))
                }
            }
        }

        fn answered(resp: &u16) -> Option<RetryOn> {
            Some(RetryOn::Status(*resp))
        }

        fn replayable(_: &Req, _: &Retry) -> bool {
            REPLAYABLE.with(std::cell::Cell::get)
        }

        fn intact(_: &Req) -> bool {
            true
        }

        fn trace(_: &mut Req, _: &TraceContext) {}

        fn operation(_: &Req) -> Cow<'static, str> {
            "fake".into()
        }

        fn status(resp: &u16) -> Option<i64> {
            Some(i64::from(*resp))
        }
    }

    async fn setup(retry: &str, hosts: &[&str]) -> (Shared, Route) {
        let metrics = Metrics::new();
        let cluster: ClusterConfig = serde_json::from_value(serde_json::json!({
            "name": "c",
            "hosts": hosts.iter().map(|h| serde_json::json!({"address": h})).collect::<Vec<_>>(),
        }))
        .expect("cluster");
        let timeout = if retry.contains("timeoutMs") {
            ""
        } else {
            r#", "timeoutMs": 1000"#
        };
        let cfg: RouteConfig = serde_json::from_str(&format!(
            r#"{{"match": {{}}, "cluster": "c"{timeout}{retry}}}"#
        ))
        .expect("route");
        let cluster = Cluster::build(&cluster, &metrics, None, None)
            .await
            .expect("cluster");
        let route = Route::compile(&cfg, cluster, Duration::from_secs(3)).expect("compiles");
        let shared = Shared {
            live: ArcSwap::from_pointee(ProxySnapshot::default()),
            metrics,
            shutdown: Shutdown::new(),
            obs: Default::default(),
            identity: None,
            discovery: None,
            workers: outrigger_core::Workers::current(),
        };
        (shared, route)
    }

    fn script(steps: &[Step]) {
        SCRIPT.with_borrow_mut(|(s, h)| {
            *s = steps.iter().copied().collect();
            h.clear();
        });
    }

    fn tries() -> Vec<SocketAddr> {
        SCRIPT.with_borrow(|(_, h)| h.clone())
    }

    fn retries(shared: &Shared) -> String {
        shared.metrics.encode()
    }

    async fn send(shared: &Shared, route: &Route) -> (Result<u16, ProxyError>, usize) {
        let copies = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + route.timeout;
        let mut trail = Trail::default();
        let out = forward::<Fake>(
            shared,
            route,
            Req(copies.clone()),
            deadline,
            &mut trail,
            None,
        )
        .await;
        // Every test checks that the trail tells the tries as they were made.
        let made = tries();
        assert_eq!(trail.attempts as usize, made.len(), "attempts in the trail");
        assert_eq!(trail.host, made.last().copied(), "host of the last try");
        (out, copies.load(Ordering::Relaxed))
    }

    const RETRY: &str = r#", "retry": {"attempts": 2, "on": ["connect-failure", "reset", "503"]}"#;

    #[tokio::test(start_paused = true)]
    async fn listed_conditions_are_retried_on_the_next_host_until_tries_run_out() {
        let (shared, route) = setup(RETRY, &["127.0.0.1:1", "127.0.0.1:2"]).await;
        script(&[
            Step::Fail(Cause::ConnectFailure),
            Step::Answer(503),
            Step::Answer(200),
        ]);
        let (out, copies) = send(&shared, &route).await;
        assert_eq!(out, Ok(200));
        assert_eq!(tries().len(), 3);
        assert_eq!(tries()[0], tries()[2], "round robin over two hosts");
        assert_ne!(tries()[0], tries()[1]);
        assert_eq!(copies, 2, "the last try takes the request itself");
        assert!(
            retries(&shared).contains(
                "outrigger_proxy_retries_total{cluster=\"c\",reason=\"connect_failure\"} 1"
            ) && retries(&shared)
                .contains("outrigger_proxy_retries_total{cluster=\"c\",reason=\"503\"} 1"),
            "{}",
            retries(&shared)
        );

        script(&[
            Step::Answer(503),
            Step::Answer(503),
            Step::Answer(503),
            Step::Answer(200),
        ]);
        let (out, _) = send(&shared, &route).await;
        assert_eq!(
            out,
            Ok(503),
            "after attempts + 1 tries the last answer stands"
        );
        assert_eq!(tries().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unlisted_conditions_and_routes_without_a_policy_are_not_retried() {
        let (shared, route) = setup(RETRY, &["127.0.0.1:1"]).await;
        script(&[Step::Answer(500)]);
        assert_eq!(send(&shared, &route).await.0, Ok(500));
        assert_eq!(tries().len(), 1);
        script(&[Step::Fail(Cause::Overflow)]);
        let err = send(&shared, &route).await.0.expect_err("overflow");
        assert_eq!(err.cause(), Cause::Overflow);
        assert_eq!(
            err.message(),
            "cluster c host 127.0.0.1:1: scripted overflow"
        );
        assert_eq!(tries().len(), 1);

        let (shared, plain) = setup("", &["127.0.0.1:1"]).await;
        script(&[Step::Fail(Cause::Reset)]);
        let (out, copies) = send(&shared, &plain).await;
        assert_eq!(out.expect_err("reset").cause(), Cause::Reset);
        assert_eq!((tries().len(), copies), (1, 0), "one try, no copy");
    }

    #[tokio::test(start_paused = true)]
    async fn a_try_cut_by_its_own_deadline_is_retried_but_not_the_last_one() {
        let per_try = r#", "retry": {"attempts": 3, "perTryTimeoutMs": 300, "on": ["reset"]}"#;
        let (shared, route) = setup(per_try, &["127.0.0.1:1"]).await;
        script(&[Step::Hang, Step::Answer(200)]);
        let start = Instant::now();
        assert_eq!(send(&shared, &route).await.0, Ok(200));
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took <= Duration::from_millis(325),
            "one 300 ms try and a backoff of at most 25 ms: {took:?}"
        );
        assert_eq!(tries().len(), 2);

        // Every try hangs: 300 ms tries with backoffs between them until the route timeout
        // (1000 ms) ends the last one, which is not retried: the request's deadline has passed.
        script(&[Step::Hang; 4]);
        let start = Instant::now();
        let err = send(&shared, &route).await.0.expect_err("timeout");
        assert!(
            start.elapsed() <= Duration::from_millis(1000),
            "{:?}",
            start.elapsed()
        );
        assert!(tries().len() >= 3, "{}", tries().len());
        assert_eq!(err.cause(), Cause::Timeout);
        assert_eq!(
            err.message(),
            "cluster c host 127.0.0.1:1: no answer within the route timeout of 1000 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_not_safe_to_replay_are_retried_only_when_nothing_was_sent() {
        let (shared, route) = setup(RETRY, &["127.0.0.1:1"]).await;
        REPLAYABLE.with(|r| r.set(false));
        script(&[Step::Answer(503), Step::Answer(200)]);
        assert_eq!(
            send(&shared, &route).await.0,
            Ok(503),
            "a sent POST is not replayed"
        );
        assert_eq!(tries().len(), 1);
        script(&[Step::Fail(Cause::Reset), Step::Answer(200)]);
        assert_eq!(
            send(&shared, &route).await.0.expect_err("reset").cause(),
            Cause::Reset
        );
        assert_eq!(tries().len(), 1);
        script(&[Step::Fail(Cause::ConnectFailure), Step::Answer(200)]);
        assert_eq!(send(&shared, &route).await.0, Ok(200), "nothing was sent");
        assert_eq!(tries().len(), 2);
        REPLAYABLE.with(|r| r.set(true));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_exponentially_with_jitter_within_the_deadline() {
        let slow = r#", "retry": {"attempts": 3, "on": ["503"], "backoff": {"baseMs": 100, "maxMs": 150}}"#;
        let (shared, route) = setup(slow, &["127.0.0.1:1"]).await;
        for n in 1..=3 {
            let cap = Duration::from_millis([100, 150, 150][n - 1]);
            for _ in 0..50 {
                assert!(route.backoff(u32::try_from(n).expect("small")) <= cap);
            }
        }
        script(&[
            Step::Answer(503),
            Step::Answer(503),
            Step::Answer(503),
            Step::Answer(200),
        ]);
        let start = Instant::now();
        assert_eq!(send(&shared, &route).await.0, Ok(200));
        assert!(
            start.elapsed() <= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(tries().len(), 4);

        // A backoff that would end past the deadline ends the retries instead.
        let long = r#", "timeoutMs": 100, "retry": {"attempts": 3, "on": ["503"], "backoff": {"baseMs": 10000, "maxMs": 10000}}"#;
        let (shared, route) = setup(long, &["127.0.0.1:1"]).await;
        let mut gave_up_early = false;
        for _ in 0..20 {
            script(&[Step::Answer(503), Step::Answer(200)]);
            let start = Instant::now();
            let out = send(&shared, &route).await.0;
            if out == Ok(503) {
                assert_eq!(tries().len(), 1);
                assert!(start.elapsed() < Duration::from_millis(100));
                gave_up_early = true;
            }
        }
        assert!(
            gave_up_early,
            "a jittered wait beyond the deadline ends the retries"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_take_the_shorter_timeout_and_never_overflow() {
        let (_, route) = setup("", &["127.0.0.1:1"]).await;
        let now = Instant::now();
        assert_eq!(route.deadline(None), now + Duration::from_millis(1000));
        assert_eq!(
            route.deadline(Some(Duration::from_millis(100))),
            now + Duration::from_millis(100)
        );
        assert_eq!(
            route.deadline(Some(Duration::MAX)),
            now + Duration::from_millis(1000),
            "the route timeout bounds a caller's absurd one"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_without_hosts_fails_fast() {
        let (shared, route) = setup(RETRY, &[]).await;
        script(&[]);
        let err = send(&shared, &route).await.0.expect_err("no hosts");
        assert_eq!(err.cause(), Cause::NoHealthyHost);
        assert_eq!(err.message(), "cluster c has no resolved hosts");
        assert!(tries().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn every_try_is_a_client_span_of_the_server_span() {
        use outrigger_core::{AttrValue, SpanMessage, SpanSink};
        let (mut shared, route) = setup(RETRY, &["127.0.0.1:1", "127.0.0.1:2"]).await;
        let (sink, mut rx) = SpanSink::channel(Default::default());
        shared.obs.spans = Some(sink);
        script(&[Step::Fail(Cause::ConnectFailure), Step::Answer(200)]);
        let server = Span::start(TraceContext::new_root(1.0), None);
        let mut trail = Trail::default();
        let deadline = Instant::now() + route.timeout;
        let copies = Arc::new(AtomicUsize::new(0));
        let out = forward::<Fake>(
            &shared,
            &route,
            Req(copies),
            deadline,
            &mut trail,
            Some(&server),
        )
        .await;
        assert_eq!(out, Ok(200));
        let mut spans = Vec::new();
        while let Ok(SpanMessage::Span(s)) = rx.try_recv() {
            spans.push(s);
        }
        assert_eq!(spans.len(), 2, "one span per try");
        for (n, span) in spans.iter().enumerate() {
            assert_eq!(span.kind, SpanKind::Client);
            assert_eq!(span.context.trace_id, server.context.trace_id);
            assert_eq!(span.parent, Some(server.context.span_id));
            let attempt = span
                .attributes
                .iter()
                .find(|(k, _)| *k == "outrigger.attempt")
                .map(|(_, v)| v.clone());
            assert_eq!(attempt, Some(AttrValue::Int(n as i64 + 1)));
        }
        assert_ne!(spans[0].context.span_id, spans[1].context.span_id);
        assert!(spans[0].error.is_some(), "the failed try says why");
        assert!(spans[1].error.is_none());

        // An unsampled trace records nothing.
        script(&[Step::Answer(200)]);
        let unsampled = Span::start(TraceContext::new_root(0.0), None);
        let copies = Arc::new(AtomicUsize::new(0));
        let _ = forward::<Fake>(
            &shared,
            &route,
            Req(copies),
            deadline,
            &mut trail,
            Some(&unsampled),
        )
        .await;
        assert!(rx.try_recv().is_err());
    }
}
