//! Streaming pass-through in the proxy core: a whole HTTP/2 request (a native gRPC call that
//! carried `dapr-app-id`) is matched against the pass-through route table — the one of the
//! listener the `http` channel reaches by name — where only routes to `http2` clusters take it,
//! seeing the app id as header `id` and the gRPC path as the path; then it goes to one host of
//! the cluster on its h2c connection, its body and trailers streaming both ways. A streamed
//! request is tried once: its body cannot be replayed. Not for whole-body HTTP/1.1, Bolt or
//! Dubbo requests (see `http`, `xproto`).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body as _;
use outrigger_config::Protocol;
use outrigger_core::{
    AccessRecord, AttrValue, Cause, Failure, LabelStr, Passthrough, PassthroughFuture, ProxyError,
    ProxyLabels, Span, SpanKind, StreamBody, TRACEPARENT, TryAttributes, strip_hop_by_hop,
};
use tokio::time::Instant;

use crate::{cluster::UpstreamPool, http::status, route::RequestView, snapshot::Shared};

/// The metric label of pass-through requests' listener.
const LISTENER_LABEL: &str = "passthrough";

/// What the route matchers see of a pass-through request.
struct H2View<'a> {
    app_id: &'a str,
    method: &'a Method,
    path: &'a str,
    headers: &'a HeaderMap,
}

impl RequestView for H2View<'_> {
    fn protocol(&self) -> Protocol {
        Protocol::Http2
    }

    fn method(&self) -> Option<&str> {
        Some(self.method.as_str())
    }

    fn path(&self) -> Option<&str> {
        Some(self.path)
    }

    fn any_header(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> bool {
        if name == "id" {
            return pred(self.app_id);
        }
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *pred))
    }
}

/// The proxy core's [`Passthrough`].
#[derive(Clone)]
pub struct Streams {
    pub(crate) shared: Arc<Shared>,
}

impl Passthrough for Streams {
    fn forward(
        &self,
        app_id: &str,
        req: Request<StreamBody>,
        timeout: Option<Duration>,
    ) -> PassthroughFuture {
        let shared = self.shared.clone();
        let app_id = app_id.to_owned();
        Box::pin(async move { observed(&shared, &app_id, req, timeout).await })
    }
}

/// What the one try of a proxied call went to, for its access line and spans.
#[derive(Default)]
struct Hop {
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    host: Option<SocketAddr>,
}

/// [`forward`], leaving an access line (`grpc-proxy`) and a server span with the try's client
/// span as its child when those are on. The call ends, for both, when the answer's head
/// arrives: its body (a stream, maybe long-lived) is not waited for.
async fn observed(
    shared: &Shared,
    app_id: &str,
    mut req: Request<StreamBody>,
    timeout: Option<Duration>,
) -> Result<Response<StreamBody>, ProxyError> {
    let obs = &shared.obs;
    let span = obs.span(|| req.headers().get(TRACEPARENT).map(HeaderValue::as_bytes));
    let client = span.as_ref().map(Span::child);
    if let Some(client) = &client {
        client.context.inject(req.headers_mut());
    }
    let recorder = obs.recorder(span.as_ref());
    if obs.access_log.is_none() && recorder.is_none() {
        return forward(shared, app_id, req, timeout, &mut Hop::default()).await;
    }
    let mut line = AccessRecord::new("grpc-proxy", SystemTime::now());
    let arrival = Instant::now();
    line.trace_id = span.map(|s| s.context.trace_id);
    line.target = app_id.to_owned();
    line.method = req.uri().path().to_owned();
    line.bytes_in = req.body().size_hint().exact().unwrap_or(0);
    let mut hop = Hop::default();
    let result = forward(shared, app_id, req, timeout, &mut hop).await;
    line.route = hop.route;
    line.cluster = hop.cluster;
    line.upstream_host = hop.host;
    line.attempts = u32::from(hop.host.is_some());
    let code = match &result {
        Ok(resp) => resp.status(),
        Err(e) => status(e.cause()),
    };
    line.status = Some(u32::from(code.as_u16()));
    // A trailers-only answer carries its gRPC status in the head; the proxy's own failure is
    // given its gRPC status by the API edge, and shows here as the HTTP status of its cause.
    line.grpc_status = result.as_ref().ok().and_then(|resp| {
        resp.headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse().ok())
    });
    line.bytes_out = match &result {
        Ok(resp) => resp.body().size_hint().exact().unwrap_or(0),
        Err(_) => 0,
    };
    line.duration = arrival.elapsed();
    if let (Some(sink), Some(span), Some(client)) = (recorder, &span, &client) {
        let error = result.as_ref().err();
        let mut attrs = vec![
            ("rpc.system", AttrValue::from("grpc")),
            ("outrigger.api", "grpc-proxy".into()),
            ("outrigger.target_id", line.target.clone().into()),
            ("rpc.method", line.method.clone().into()),
            ("http.response.status_code", i64::from(code.as_u16()).into()),
        ];
        if let Some(g) = line.grpc_status {
            attrs.push(("rpc.grpc.status_code", i64::from(g).into()));
        }
        if let Some(e) = error {
            attrs.push(("error.type", e.cause().as_str().into()));
        }
        sink.record(span.finish(
            SpanKind::Server,
            line.method.clone(),
            attrs,
            error.map(ToString::to_string),
        ));
        if let (Some(route), Some(cluster), Some(host)) = (&line.route, &line.cluster, hop.host) {
            let attributes = TryAttributes {
                protocol: "http2",
                route,
                cluster,
                host,
                attempt: 1,
                pool_wait: None,
                status: Some(i64::from(code.as_u16())),
                cause: error.map(Failure::cause),
            };
            sink.record(client.finish(
                SpanKind::Client,
                line.method.clone(),
                attributes.into_attributes(),
                error.map(ToString::to_string),
            ));
        }
    }
    if let Some(log) = &obs.access_log {
        log.log(line);
    }
    result
}

async fn forward(
    shared: &Shared,
    app_id: &str,
    mut req: Request<StreamBody>,
    timeout: Option<Duration>,
    hop: &mut Hop,
) -> Result<Response<StreamBody>, ProxyError> {
    let snapshot = shared.live.load_full();
    let Some(table) = &snapshot.passthrough else {
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route for app {app_id}: proxying needs an http channel whose listener is a listener name in the config"
            ),
        );
        record(shared, "".into(), status(e.cause()));
        return Err(e);
    };
    let view = H2View {
        app_id,
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    let Some(route) = table.find_view(&view) else {
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route to an http2 cluster in table {} matches {} (id {app_id})",
                table.name,
                req.uri().path()
            ),
        );
        record(shared, "".into(), status(e.cause()));
        return Err(e);
    };
    let cluster = &route.cluster;
    hop.route = Some(route.name.clone());
    hop.cluster = Some(cluster.name.clone());
    let cluster_label = LabelStr::from(&cluster.name);
    let deadline = route.deadline(timeout);
    let allowed = deadline.saturating_duration_since(tokio::time::Instant::now());
    let Some(host) = cluster.pick() else {
        let e = ProxyError::new(
            Cause::NoHealthyHost,
            format!("cluster {} has no resolved hosts", cluster.name),
        );
        record(shared, cluster_label, status(e.cause()));
        return Err(e);
    };
    let UpstreamPool::Http2(pool) = &host.pool else {
        // Routes only take requests of their cluster's protocol; this is a bug guard.
        return Err(ProxyError::new(
            Cause::NoRoute,
            format!("cluster {} does not speak http2", cluster.name),
        ));
    };
    // `te: trailers` is the one hop-by-hop header HTTP/2 keeps, and gRPC servers require it.
    let te_trailers = req
        .headers()
        .get(http::header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(req.headers_mut());
    if te_trailers {
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
    }
    // The connection's own authority, as a client dialling the host would send it.
    if let Ok(uri) = http::Uri::builder()
        .scheme("http")
        .authority(host.addr.to_string())
        .path_and_query(
            req.uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        )
        .build()
    {
        *req.uri_mut() = uri;
    }
    let addr = host.addr;
    hop.host = Some(addr);
    let result = pool.send(req, deadline).await.map_err(|e| {
        let cause = e.cause();
        let message = if cause == Cause::Timeout {
            format!(
                "cluster {} host {addr}: no response headers within {} ms",
                cluster.name,
                allowed.as_millis()
            )
        } else {
            format!("cluster {} host {addr}: {e}", cluster.name)
        };
        ProxyError::new(cause, message)
    });
    drop(host);
    let code = match &result {
        Ok(resp) => resp.status(),
        Err(e) => status(e.cause()),
    };
    record(shared, cluster_label, code);
    result
}

fn record(shared: &Shared, cluster: LabelStr, status: StatusCode) {
    shared
        .metrics
        .proxy_requests
        .get_or_create(&ProxyLabels {
            listener: LabelStr::Static(LISTENER_LABEL),
            cluster,
            status: status.as_u16(),
        })
        .inc();
}
