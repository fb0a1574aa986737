//! Route tables compiled once per config load: ordered routes whose matchers (exact, prefix,
//! regex on headers and path; method) are built up front, so matching a request allocates
//! nothing and compiles nothing. One matcher serves every protocol through a [`RequestView`]:
//! an HTTP request's method, path and headers, or a Bolt/Dubbo request's RPC method and its
//! header map or attachments. A route only takes requests of its cluster's protocol. Not for
//! choosing a host (see `cluster`).

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use http::{HeaderMap, HeaderName, Method, StatusCode};
use outrigger_config::{
    DEFAULT_REPLAY_BUFFER_BYTES, IDEMPOTENT_METHODS, Protocol, RetryOn, RouteConfig, RouteMatch,
    ValueMatch,
};
use outrigger_core::{LabelStr, Metrics, ProxyLabels};
use prometheus_client::metrics::counter::Counter;
use regex::Regex;
use tokio::time::Instant;

use crate::{budget::RetryBudget, cluster::Cluster, ratelimit::TokenBucket};

/// What a matcher sees of a request, whatever its protocol.
pub(crate) trait RequestView {
    /// The request's protocol (`http`, `bolt` or `dubbo`).
    fn protocol(&self) -> Protocol;
    /// The HTTP method, or the RPC method name.
    fn method(&self) -> Option<&str>;
    /// The HTTP path; Bolt and Dubbo requests have none.
    fn path(&self) -> Option<&str>;
    /// Whether any value of the header `name` (lower case) satisfies `pred`.
    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// An HTTP request as a [`RequestView`].
pub(crate) struct HttpView<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) headers: &'a HeaderMap,
}

impl RequestView for HttpView<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Http
    }

    fn method(&self) -> Option<&str> {
        Some(self.method.as_str())
    }

    fn path(&self) -> Option<&str> {
        Some(self.path)
    }

    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *pred))
    }
}

/// An ordered list of routes; the first whose matcher holds wins.
#[derive(Debug)]
pub(crate) struct RouteTable {
    pub(crate) name: String,
    pub(crate) routes: Vec<Route>,
}

/// A compiled route.
#[derive(Debug)]
pub(crate) struct Route {
    /// `<route table>/<index>`, for access logs.
    pub(crate) name: Arc<str>,
    pub(crate) matcher: Matcher,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) timeout: Duration,
    pub(crate) retry: Option<Retry>,
    /// The route's local rate limit, if any.
    pub(crate) rate_limit: Option<TokenBucket>,
    /// The `outrigger_proxy_requests_total` series of this route's 200 answers on the first
    /// listener that counted one, looked up once: see [`Route::count`].
    ok_requests: OnceLock<(LabelStr, Counter)>,
}

/// A compiled retry policy.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    pub(crate) attempts: u32,
    pub(crate) per_try_timeout: Option<Duration>,
    pub(crate) on: Vec<RetryOn>,
    /// HTTP methods replayed after they were sent.
    pub(crate) methods: Vec<Method>,
    /// Larger request bodies are never replayed.
    pub(crate) replay_limit: usize,
    /// Backoff before retry n: up to `min(backoff_max, backoff_base · 2^(n-1))`.
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    /// Caps retries at a share of the route's recent requests, if set.
    pub(crate) budget: Option<Arc<RetryBudget>>,
}

impl Retry {
    pub(crate) fn on(&self, cond: RetryOn) -> bool {
        self.on.contains(&cond)
    }
}

/// The conditions of one route.
#[derive(Debug, Default)]
pub(crate) struct Matcher {
    headers: Vec<(HeaderName, ValueMatcher)>,
    path: Option<ValueMatcher>,
    method: Option<Method>,
}

#[derive(Debug)]
enum ValueMatcher {
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn matches(&self, v: &str) -> bool {
        match self {
            ValueMatcher::Exact(e) => v == e,
            ValueMatcher::Prefix(p) => v.starts_with(p.as_str()),
            ValueMatcher::Regex(r) => r.is_match(v),
        }
    }
}

/// A regex that must match the whole value.
fn whole(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regex {re:?}: {e}"))
}

impl Matcher {
    /// Compiles a match; fails only on input that validation rejects.
    pub(crate) fn compile(m: &RouteMatch) -> Result<Self, String> {
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("invalid header name {:?}", h.name))?;
                let value = match &h.value {
                    ValueMatch::Exact(e) => ValueMatcher::Exact(e.clone()),
                    ValueMatch::Prefix(p) => ValueMatcher::Prefix(p.clone()),
                    ValueMatch::Regex(r) => ValueMatcher::Regex(whole(r)?),
                };
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let path = match (&m.path, &m.path_prefix, &m.path_regex) {
            (Some(p), _, _) => Some(ValueMatcher::Exact(p.clone())),
            (None, Some(p), _) => Some(ValueMatcher::Prefix(p.clone())),
            (None, None, Some(r)) => Some(ValueMatcher::Regex(whole(r)?)),
            (None, None, None) => None,
        };
        let method = m
            .method
            .as_deref()
            .map(|s| Method::from_bytes(s.as_bytes()).map_err(|_| format!("invalid method {s:?}")))
            .transpose()?;
        Ok(Self {
            headers,
            path,
            method,
        })
    }

    /// Whether an HTTP request with this method, path and headers matches.
    #[cfg(test)]
    pub(crate) fn matches(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        self.matches_view(&HttpView {
            method,
            path,
            headers,
        })
    }

    /// Whether a request of any protocol matches.
    pub(crate) fn matches_view(&self, view: &dyn RequestView) -> bool {
        if let Some(m) = &self.method
            && view.method() != Some(m.as_str())
        {
            return false;
        }
        if let Some(p) = &self.path
            && !view.path().is_some_and(|path| p.matches(path))
        {
            return false;
        }
        self.headers
            .iter()
            .all(|(name, vm)| view.any_header(name.as_str(), &mut |s| vm.matches(s)))
    }
}

impl Route {
    /// Compiles a route against its already-built cluster.
    pub(crate) fn compile(
        cfg: &RouteConfig,
        cluster: Arc<Cluster>,
        default_timeout: Duration,
    ) -> Result<Self, String> {
        let retry = match &cfg.retry {
            None => None,
            Some(r) => {
                let methods = match &r.methods {
                    Some(list) => list
                        .iter()
                        .map(|m| {
                            Method::from_bytes(m.as_bytes())
                                .map_err(|_| format!("invalid retry method {m:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    None => IDEMPOTENT_METHODS
                        .iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect(),
                };
                let backoff = r.backoff.unwrap_or_default();
                Some(Retry {
                    attempts: r.attempts,
                    per_try_timeout: r.per_try_timeout_ms.map(Duration::from_millis),
                    on: r.retry_on.clone(),
                    methods,
                    replay_limit: usize::try_from(
                        r.replay_buffer_bytes.unwrap_or(DEFAULT_REPLAY_BUFFER_BYTES),
                    )
                    .unwrap_or(usize::MAX),
                    backoff_base: Duration::from_millis(backoff.base_ms),
                    backoff_max: Duration::from_millis(backoff.max_ms.max(backoff.base_ms)),
                    budget: r
                        .budget
                        .as_ref()
                        .map(|b| Arc::new(RetryBudget::new(b, cluster.budget_exhausted.clone()))),
                })
            }
        };
        Ok(Self {
            // Named `<table>/<index>` by the snapshot that holds it.
            name: Arc::from(""),
            matcher: Matcher::compile(&cfg.matcher)?,
            cluster,
            timeout: cfg
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(default_timeout),
            retry,
            rate_limit: None,
            ok_requests: OnceLock::new(),
        })
    }
}

impl Route {
    /// Counts a request this route forwarded, answered `status`, in
    /// `outrigger_proxy_requests_total`. A 200 on the listener that first counted one here
    /// increments the series kept on the route (no labels hashed, no family lock); any other
    /// answer, or a listener sharing the route table, is looked up in the family.
    pub(crate) fn count(&self, metrics: &Metrics, listener: LabelStr, status: StatusCode) {
        if status == StatusCode::OK {
            let (first, counter) = self.ok_requests.get_or_init(|| {
                let labels = ProxyLabels {
                    listener: listener.clone(),
                    cluster: LabelStr::from(&self.cluster.name),
                    status: StatusCode::OK.as_u16(),
                };
                (
                    listener.clone(),
                    metrics.proxy_requests.get_or_create(&labels).clone(),
                )
            });
            if *first == listener {
                counter.inc();
                return;
            }
        }
        count_request(
            metrics,
            listener,
            LabelStr::from(&self.cluster.name),
            status,
        );
    }
}

/// Counts one proxied request in `outrigger_proxy_requests_total`: `cluster` is empty when no
/// route took it. The labels share names already held (no string is built), except when the
/// listener is not in the live config.
pub(crate) fn count_request(
    metrics: &Metrics,
    listener: LabelStr,
    cluster: LabelStr,
    status: StatusCode,
) {
    metrics
        .proxy_requests
        .get_or_create(&ProxyLabels {
            listener,
            cluster,
            status: status.as_u16(),
        })
        .inc();
}

impl Route {
    /// When a request arriving now must be answered: the route timeout, or the caller's own
    /// when it is shorter. Never panics, however large either is (the deadline then lies far
    /// in the future).
    pub(crate) fn deadline(&self, caller_timeout: Option<Duration>) -> Instant {
        let timeout = caller_timeout.map_or(self.timeout, |t| t.min(self.timeout));
        let now = Instant::now();
        now.checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    }

    /// How many tries a request gets at most.
    pub(crate) fn tries(&self) -> u32 {
        1 + self.retry.as_ref().map_or(0, |r| r.attempts)
    }

    /// The deadline of a try starting now: the per-try timeout when the policy has one, never
    /// past the request's `deadline`.
    pub(crate) fn try_deadline(&self, deadline: Instant) -> Instant {
        self.retry
            .as_ref()
            .and_then(|r| r.per_try_timeout)
            .and_then(|t| Instant::now().checked_add(t))
            .map_or(deadline, |t| t.min(deadline))
    }

    /// The wait before retry `retry_no` (1 for the first): a random duration up to
    /// `min(max, base · 2^(retry_no - 1))` (full jitter, so retries of many callers spread).
    pub(crate) fn backoff(&self, retry_no: u32) -> Duration {
        let Some(r) = &self.retry else {
            return Duration::ZERO;
        };
        let factor = 1u32
            .checked_shl(retry_no.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let cap = r.backoff_base.saturating_mul(factor).min(r.backoff_max);
        cap.mul_f64(fastrand::f64())
    }

    /// Whether a failed try may be retried: the policy lists the condition, tries are left, and
    /// so is time (a request is never retried after its deadline).
    pub(crate) fn may_retry(
        &self,
        try_no: u32,
        deadline: Instant,
        condition: Option<RetryOn>,
    ) -> bool {
        let Some(retry) = &self.retry else {
            return false;
        };
        try_no <= retry.attempts
            && Instant::now() < deadline
            && condition.is_some_and(|c| retry.on(c))
    }
}

impl RouteTable {
    /// The first route matching the HTTP request.
    pub(crate) fn find(&self, method: &Method, path: &str, headers: &HeaderMap) -> Option<&Route> {
        self.find_view(&HttpView {
            method,
            path,
            headers,
        })
    }

    /// The first route to a cluster of the request's protocol whose matcher holds.
    pub(crate) fn find_view(&self, view: &dyn RequestView) -> Option<&Route> {
        let protocol = view.protocol();
        self.routes
            .iter()
            .find(|r| r.cluster.protocol() == protocol && r.matcher.matches_view(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(yaml: &str) -> Matcher {
        let rm: RouteMatch = serde_json::from_str(yaml).expect("match json");
        Matcher::compile(&rm).expect("compiles")
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().expect("value"));
        }
        map
    }

    #[test]
    fn matcher_table() {
        let get = Method::GET;
        let post = Method::POST;
        let id = h(&[("id", "org.apache.dubbo.samples.UserProvider")]);
        let cases: &[(&str, &Method, &str, &HeaderMap, bool)] = &[
            ("{}", &get, "/anything", &HeaderMap::new(), true),
            (r#"{"path":"/a"}"#, &get, "/a", &id, true),
            (r#"{"path":"/a"}"#, &get, "/a/b", &id, false),
            (r#"{"pathPrefix":"/a"}"#, &get, "/a/b", &id, true),
            (r#"{"pathPrefix":"/a"}"#, &get, "/b", &id, false),
            (
                r#"{"pathRegex":"/v[0-9]+/.*"}"#,
                &get,
                "/v2/users",
                &id,
                true,
            ),
            (r#"{"pathRegex":"/v[0-9]+"}"#, &get, "/v2/users", &id, false),
            (r#"{"method":"POST"}"#, &post, "/", &id, true),
            (r#"{"method":"POST"}"#, &get, "/", &id, false),
            (
                r#"{"headers":[{"name":"id","exact":"org.apache.dubbo.samples.UserProvider"}]}"#,
                &get,
                "/",
                &id,
                true,
            ),
            (
                r#"{"headers":[{"name":"ID","prefix":"org.apache."}]}"#,
                &get,
                "/",
                &id,
                true,
            ),
            (
                r#"{"headers":[{"name":"id","regex":".*Provider"}]}"#,
                &get,
                "/",
                &id,
                true,
            ),
            (
                r#"{"headers":[{"name":"id","regex":"Provider"}]}"#,
                &get,
                "/",
                &id,
                false,
            ),
            (
                r#"{"headers":[{"name":"id","exact":"x"}]}"#,
                &get,
                "/",
                &id,
                false,
            ),
            (
                r#"{"headers":[{"name":"missing","exact":"x"}]}"#,
                &get,
                "/",
                &id,
                false,
            ),
            (
                r#"{"headers":[{"name":"id","prefix":"org"}],"pathPrefix":"/u","method":"GET"}"#,
                &get,
                "/users",
                &id,
                true,
            ),
        ];
        for (json, method, path, headers, want) in cases {
            assert_eq!(
                m(json).matches(method, path, headers),
                *want,
                "{json} vs {method} {path}"
            );
        }
    }

    #[test]
    fn any_value_of_a_repeated_header_may_match() {
        let mut headers = h(&[("x-tenant", "a")]);
        headers.append("x-tenant", "b".parse().expect("value"));
        assert!(
            m(r#"{"headers":[{"name":"x-tenant","exact":"b"}]}"#).matches(
                &Method::GET,
                "/",
                &headers
            )
        );
    }
}
