//! Dapr's HTTP API on its own port (Dapr's 3500 by default): `GET /v1.0/healthz` and
//! `GET /v1.0/healthz/outbound` (204 when ready, 500 otherwise), and service invocation —
//! `/v1.0/invoke/{app-id}/method/{method...}` with any verb, or any path with the header
//! `dapr-app-id` — through the same invoker, filters, channels and proxy core as
//! `InvokeService`. The app's answer comes back as it is, status included (an app's 404 is the
//! caller's 404); only the sidecar's own failures use Dapr's JSON error shape. Request bodies
//! are read whole, up to `grpc.maxMessageBytes` and within `rpc.timeoutMs`. `GET /v1.0/metadata` answers a minimal document
//! (SDKs poll it to learn the sidecar is up). Not for Dapr's other building blocks.

use std::{
    convert::Infallible,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{
    body::{Body as _, Incoming},
    service::service_fn,
};
use outrigger_core::{
    AccessRecord, AttrValue, KindLabels, LabelStr, ServerLimits, Shutdown, Span, SpanKind,
    TRACEPARENT, accept_loop, serve_http1, strip_hop_by_hop,
};
use outrigger_invoke::{ErrorKind, InvokeError, NonSuccess, RpcRequest, deadline_after};
use tokio::{net::TcpListener, runtime::Handle, time::Instant};

use crate::{
    RuntimeApi, TIMEOUT_METADATA,
    grpc_proxy::APP_ID_METADATA,
    status::{self, DaprError},
    token::ApiToken,
};

const INVOKE_PREFIX: &str = "/v1.0/invoke/";

/// What the health endpoints report.
pub trait Health: Send + Sync + 'static {
    /// Everything is serving and the sidecar is not shutting down (`/v1.0/healthz`).
    fn healthy(&self) -> bool;
    /// A config is loaded and every channel reaches its listener (`/v1.0/healthz/outbound`).
    fn outbound_ready(&self) -> bool;
}

/// The HTTP API's handler.
#[derive(Clone)]
pub struct HttpApi {
    api: RuntimeApi,
    health: Arc<dyn Health>,
    token: Option<ApiToken>,
    max_body_bytes: usize,
}

impl HttpApi {
    /// Invokes through `api`, reports `health`, checks `token` when there is one, and reads
    /// request bodies of at most `max_body_bytes`.
    pub fn new(
        api: RuntimeApi,
        health: Arc<dyn Health>,
        token: Option<ApiToken>,
        max_body_bytes: usize,
    ) -> Self {
        Self {
            api,
            health,
            token,
            max_body_bytes,
        }
    }

    /// Answers one request. Never fails: errors become Dapr's JSON error responses.
    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let arrival = Instant::now();
        let path = req.uri().path();
        if let Some(which) = path.strip_prefix("/v1.0/healthz") {
            let ok = match which {
                "" => self.health.healthy(),
                "/outbound" => self.health.outbound_ready(),
                _ => return not_served(path),
            };
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return DaprError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "ERR_METHOD_NOT_ALLOWED",
                    "the health endpoints take GET",
                )
                .response();
            }
            return if ok {
                empty(StatusCode::NO_CONTENT)
            } else {
                DaprError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "ERR_HEALTH_NOT_READY",
                    "outrigger is not ready",
                )
                .response()
            };
        }
        let (mut parts, body) = req.into_parts();
        if let Err(e) = ApiToken::check(self.token.as_ref(), &mut parts.headers) {
            return DaprError::new(
                StatusCode::UNAUTHORIZED,
                "ERR_API_UNAUTHORIZED",
                e.to_string(),
            )
            .response();
        }
        if parts.uri.path() == "/v1.0/metadata" && !parts.headers.contains_key(APP_ID_METADATA) {
            return metadata();
        }
        let target = match invoke_target(parts.uri.path(), &parts.headers) {
            Ok(t) => t,
            Err(resp) => return *resp,
        };
        let (id, method) = target;
        let obs = &self.api.obs;
        let span = obs
            .span(|| parts.headers.get(TRACEPARENT).map(HeaderValue::as_bytes))
            .map(|s| s.since(arrival));
        let recorder = obs.recorder(span.as_ref());
        if obs.access_log.is_none() && recorder.is_none() {
            return self
                .read_and_invoke(&id, &method, parts, body, arrival, span)
                .await
                .0;
        }
        let start = SystemTime::now()
            .checked_sub(arrival.elapsed())
            .unwrap_or_else(SystemTime::now);
        let verb = parts.method.clone();
        let (resp, bytes_in) = self
            .read_and_invoke(&id, &method, parts, body, arrival, span)
            .await;
        let status = resp.status().as_u16();
        if let (Some(sink), Some(span)) = (recorder, &span) {
            let mut attrs = vec![
                ("http.request.method", AttrValue::from(verb.to_string())),
                ("http.response.status_code", i64::from(status).into()),
                ("outrigger.api", "dapr-http".into()),
                ("outrigger.target_id", id.clone().into()),
                ("outrigger.method", method.clone().into()),
            ];
            let error = (status >= 500).then(|| {
                attrs.push(("error.type", status.to_string().into()));
                format!("answered {status}")
            });
            sink.record(span.finish(
                SpanKind::Server,
                format!("{verb} /v1.0/invoke/{{id}}/method"),
                attrs,
                error,
            ));
        }
        if let Some(log) = &obs.access_log {
            let mut line = AccessRecord::new("http-api", start);
            line.trace_id = span.map(|s| s.context.trace_id);
            line.target = id;
            line.method = method;
            line.status = Some(u32::from(status));
            line.bytes_in = bytes_in;
            line.bytes_out = resp.body().size_hint().exact().unwrap_or_default();
            line.duration = arrival.elapsed();
            log.log(line);
        }
        resp
    }

    /// Reads the body of an invocation request and invokes; the answer and the body's size.
    async fn read_and_invoke<B>(
        &self,
        id: &str,
        method: &str,
        mut parts: http::request::Parts,
        body: B,
        arrival: Instant,
        span: Option<Span>,
    ) -> (Response<Full<Bytes>>, u64)
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The body must arrive within the call's default timeout, like the answer.
        let read_timeout = self.api.invokers.current().default_timeout();
        let read = tokio::time::timeout(
            read_timeout,
            Limited::new(body, self.max_body_bytes).collect(),
        )
        .await;
        let Ok(read) = read else {
            return (DaprError::new(
                StatusCode::REQUEST_TIMEOUT,
                "ERR_DIRECT_INVOKE",
                format!(
                    "invoke {method:?} on {id:?} failed: the request body did not arrive within {} ms",
                    read_timeout.as_millis()
                ),
            )
            .response(), 0);
        };
        let data = match read {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                let too_big = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                let resp = if too_big {
                    DaprError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "ERR_DIRECT_INVOKE",
                        format!(
                            "invoke {method:?} on {id:?} failed: the request body is larger than {} bytes (grpc.maxMessageBytes)",
                            self.max_body_bytes
                        ),
                    )
                    .response()
                } else {
                    DaprError::new(
                        StatusCode::BAD_REQUEST,
                        "ERR_MALFORMED_REQUEST",
                        format!("cannot read the request body: {e}"),
                    )
                    .response()
                };
                return (resp, 0);
            }
        };
        let bytes_in = data.len() as u64;
        if let Some(span) = span {
            span.context.inject(&mut parts.headers);
        }
        let query = parts.uri.query().unwrap_or_default().to_owned();
        let resp = match self
            .invoke(
                id,
                method,
                parts.method,
                query,
                parts.headers,
                data,
                arrival,
            )
            .await
        {
            Ok(resp) => resp,
            Err(e) => {
                self.api
                    .metrics
                    .invoke_errors
                    .get_or_create(&KindLabels {
                        kind: e.kind().as_str().to_owned(),
                    })
                    .inc();
                tracing::debug!(%id, %method, error = %e, "http invoke failed");
                status::to_dapr(id, method, &e).response()
            }
        };
        (resp, bytes_in)
    }

    #[allow(clippy::too_many_arguments)]
    async fn invoke(
        &self,
        id: &str,
        method: &str,
        verb: Method,
        query: String,
        mut headers: HeaderMap,
        data: Bytes,
        arrival: Instant,
    ) -> Result<Response<Full<Bytes>>, InvokeError> {
        let invoker = self.api.invokers.current();
        let timeout = match headers.remove(TIMEOUT_METADATA) {
            None => invoker.default_timeout(),
            Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
                Some(ms) if ms > 0 => Duration::from_millis(ms),
                _ => {
                    return Err(InvokeError::new(
                        ErrorKind::InvalidArgument,
                        "header rpc_request_timeout must be a positive number of milliseconds",
                    ));
                }
            },
        };
        strip_hop_by_hop(&mut headers);
        for h in [header::HOST, header::CONTENT_LENGTH] {
            headers.remove(h);
        }
        headers.remove(APP_ID_METADATA);
        let content_type = headers
            .remove(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default();
        let mut req = RpcRequest::new(id, method, deadline_after(arrival, timeout));
        req.verb = verb;
        req.query = query;
        req.headers = headers;
        req.content_type = content_type;
        req.data = data;
        req.non_success = NonSuccess::Answer;
        req.take_control_metadata()?;
        let resp = match AssertUnwindSafe(invoker.invoke(req)).catch_unwind().await {
            Ok(r) => r?,
            Err(_) => {
                tracing::error!("invoke panicked; the call fails, the sidecar keeps serving");
                return Err(InvokeError::new(
                    ErrorKind::Internal,
                    "internal error (panic) in the sidecar",
                ));
            }
        };
        let mut out = Response::new(Full::new(resp.data));
        *out.status_mut() = resp.status;
        *out.headers_mut() = resp.headers;
        if !resp.content_type.is_empty()
            && !out.headers().contains_key(header::CONTENT_TYPE)
            && let Ok(v) = HeaderValue::from_str(&resp.content_type)
        {
            out.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        Ok(out)
    }
}

/// The app id and method of an invocation request, or the answer for a path this API does
/// not serve.
fn invoke_target(
    path: &str,
    headers: &HeaderMap,
) -> Result<(String, String), Box<Response<Full<Bytes>>>> {
    if let Some(rest) = path.strip_prefix(INVOKE_PREFIX) {
        let bad = |m: &str| {
            Box::new(
                DaprError::new(StatusCode::BAD_REQUEST, "ERR_DIRECT_INVOKE", m.to_owned())
                    .response(),
            )
        };
        let Some((id, method)) = rest
            .split_once('/')
            .and_then(|(id, rest)| Some((id, rest.strip_prefix("method/")?)))
        else {
            return Err(bad(
                "the invoke path is /v1.0/invoke/{app-id}/method/{method}",
            ));
        };
        if id.is_empty() || method.is_empty() {
            return Err(bad("the app id and the method must not be empty"));
        }
        return Ok((id.to_owned(), method.to_owned()));
    }
    if let Some(id) = headers.get(APP_ID_METADATA).and_then(|v| v.to_str().ok()) {
        let method = path.strip_prefix('/').unwrap_or(path);
        if id.is_empty() || method.is_empty() {
            return Err(Box::new(
                DaprError::new(
                    StatusCode::BAD_REQUEST,
                    "ERR_DIRECT_INVOKE",
                    format!("with {APP_ID_METADATA}, the app id and the path must not be empty"),
                )
                .response(),
            ));
        }
        return Ok((id.to_owned(), method.to_owned()));
    }
    Err(Box::new(not_served(path)))
}

/// `GET /v1.0/metadata`, as far as this sidecar has it: SDKs (the JavaScript one) read it to
/// learn that the sidecar is up. No components, subscriptions or HTTP endpoints.
fn metadata() -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "id": "",
        "runtimeVersion": concat!("outrigger/", env!("CARGO_PKG_VERSION")),
        "enabledFeatures": [],
        "components": [],
        "httpEndpoints": [],
        "subscriptions": [],
        "extended": {},
    });
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn not_served(path: &str) -> Response<Full<Bytes>> {
    DaprError::new(
        StatusCode::NOT_FOUND,
        "ERR_NOT_SUPPORTED",
        format!(
            "{path} is not served: outrigger serves /v1.0/healthz, /v1.0/healthz/outbound, \
             /v1.0/metadata, /v1.0/invoke/{{app-id}}/method/{{method}} and requests carrying \
             {APP_ID_METADATA} (no other Dapr building block yet)"
        ),
    )
    .response()
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Connections the HTTP API serves at once; one more is closed as it arrives.
const HTTP_API_MAX_CONNECTIONS: usize = 1024;
/// How long an HTTP API client may take to send a request head (or stay idle between requests).
const HTTP_API_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the HTTP API on every listener, each on its runtime, until `shutdown`; then in-flight
/// requests finish. The connection cap is shared by all of them.
pub async fn serve_http_api(
    listeners: Vec<(TcpListener, Handle)>,
    api: HttpApi,
    shutdown: Shutdown,
) {
    // One connection cap for every accepting socket.
    let limits = ServerLimits::new(
        LabelStr::Static("http_api"),
        HTTP_API_MAX_CONNECTIONS,
        HTTP_API_HEADER_READ_TIMEOUT,
        &api.api.metrics,
    );
    let api = Arc::new(api);
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|(listener, worker)| {
            let (api, limits, shutdown) = (api.clone(), limits.clone(), shutdown.clone());
            worker.spawn(async move {
                let conn_limits = limits.clone();
                let conn_shutdown = shutdown.clone();
                accept_loop(&listener, &limits, shutdown, move |stream, _| {
                    let api = api.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let api = api.clone();
                        async move { Ok::<_, Infallible>(api.handle(req).await) }
                    });
                    let (limits, shutdown) = (conn_limits.clone(), conn_shutdown.clone());
                    async move { serve_http1(stream, svc, Some(&limits), shutdown).await }
                })
                .await;
            })
        })
        .collect();
    for accepting in loops {
        let _ = accepting.await;
    }
}

#[cfg(test)]
mod tests {
    use outrigger_core::Metrics;
    use outrigger_invoke::{InvokeService, Invoker, Invokers};

    use super::*;

    struct Fixed {
        healthy: bool,
        outbound: bool,
    }

    impl Health for Fixed {
        fn healthy(&self) -> bool {
            self.healthy
        }
        fn outbound_ready(&self) -> bool {
            self.outbound
        }
    }

    struct One(Arc<Invoker>);

    impl Invokers for One {
        fn current(&self) -> Arc<Invoker> {
            self.0.clone()
        }
    }

    fn api(healthy: bool, outbound: bool) -> HttpApi {
        let channel = InvokeService::new(tower::service_fn(|_req: RpcRequest| async {
            Err(InvokeError::new(
                ErrorKind::Unavailable,
                "connect to 127.0.0.1:9 failed",
            ))
        }));
        let invoker = Arc::new(Invoker::new(channel, &[], &[], Duration::from_secs(1)));
        HttpApi::new(
            RuntimeApi::new(Arc::new(One(invoker)), Metrics::new()),
            Arc::new(Fixed { healthy, outbound }),
            ApiToken::new("t"),
            16,
        )
    }

    async fn call(
        api: &HttpApi,
        method: &str,
        path: &str,
        token: bool,
        body: &'static str,
    ) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(path);
        if token {
            req = req.header("dapr-api-token", "t");
        }
        let resp = api
            .handle(
                req.body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            )
            .await;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn health_follows_readiness_without_a_token() {
        // Starting up (or draining): both 500.
        let starting = api(false, false);
        for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
            let (status, body) = call(&starting, "GET", path, false, "").await;
            assert_eq!(status, 500, "{path}");
            assert!(body.contains("ERR_HEALTH_NOT_READY"), "{body}");
        }
        // Serving, but a channel has no listener: only outbound is 500.
        let no_outbound = api(true, false);
        assert_eq!(
            call(&no_outbound, "GET", "/v1.0/healthz", false, "")
                .await
                .0,
            204
        );
        assert_eq!(
            call(&no_outbound, "GET", "/v1.0/healthz/outbound", false, "")
                .await
                .0,
            500
        );
        let ready = api(true, true);
        assert_eq!(
            call(&ready, "GET", "/v1.0/healthz/outbound", false, "")
                .await
                .0,
            204
        );
        assert_eq!(
            call(&ready, "POST", "/v1.0/healthz", false, "").await.0,
            405
        );
    }

    #[tokio::test]
    async fn invoke_errors_use_daprs_shape() {
        let a = api(true, true);
        let (status, body) = call(&a, "GET", "/v1.0/invoke/orders/method/x", false, "").await;
        assert_eq!(status, 401);
        assert!(body.contains("ERR_API_UNAUTHORIZED"), "{body}");
        let (status, body) = call(&a, "GET", "/v1.0/invoke/orders/method/x", true, "").await;
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errorCode"], "ERR_DIRECT_INVOKE");
        assert_eq!(
            v["message"],
            "invoke \"x\" on \"orders\" failed: connect to 127.0.0.1:9 failed"
        );
        let (status, _) = call(
            &a,
            "POST",
            "/v1.0/invoke/orders/method/x",
            true,
            "seventeen bytes!!",
        )
        .await;
        assert_eq!(status, 413, "the body limit");
        let (status, body) = call(&a, "GET", "/v1.0/metadata", true, "").await;
        assert_eq!(status, 200);
        assert!(body.contains("runtimeVersion"), "{body}");
    }

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn invoke_targets() {
        let none = HeaderMap::new();
        let ok = |p: &str, hs: &HeaderMap| invoke_target(p, hs).ok();
        assert_eq!(
            ok("/v1.0/invoke/orders/method/api/v1/items", &none),
            Some(("orders".into(), "api/v1/items".into()))
        );
        assert_eq!(
            ok("/v1.0/invoke/orders.prod/method/x", &none),
            Some(("orders.prod".into(), "x".into()))
        );
        assert_eq!(
            ok("/api/items", &h(&[("dapr-app-id", "orders")])),
            Some(("orders".into(), "api/items".into()))
        );
        for (p, hs, status) in [
            ("/v1.0/invoke/orders/x", none.clone(), 400),
            ("/v1.0/invoke/orders/method/", none.clone(), 400),
            ("/v1.0/state/store", none.clone(), 404),
            ("/", h(&[("dapr-app-id", "orders")]), 400),
        ] {
            let resp = invoke_target(p, &hs).expect_err(p);
            assert_eq!(resp.status().as_u16(), status, "{p}");
        }
    }
}
