//! Streaming pass-through in the proxy core, for HTTP/2 requests from two entries: a native gRPC
//! call that carried `dapr-app-id` (handed over by the gRPC edge, matched against the
//! pass-through route table — the one of the listener the `http` channel reaches by name —
//! seeing the app id as header `id`), and a stream an HTTP/2 listener accepted (matched against
//! the listener's own table, after its authorization policy, with the caller's identity). Only
//! routes to `http2` clusters take them; the path is the gRPC method. The request goes to one
//! host of the cluster on its h2c connection, its body and trailers streaming both ways. A
//! streamed request is tried once: its body cannot be replayed. Not for whole-body HTTP/1.1,
//! Bolt or Dubbo requests (see `http`, `xproto`).

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use outrigger_config::Protocol;
use outrigger_core::{
    AccessRecord, AttrValue, BoxError, Cause, ERROR_HEADER, Failure, LabelStr, Passthrough,
    PassthroughFuture, ProxyError, Span, SpanKind, StreamBody, TRACEPARENT, TryAttributes,
    full_body, grpc_timeout, strip_hop_by_hop,
};
use tokio::time::Instant;

use crate::{
    authz::{self, Decision},
    cluster::UpstreamPool,
    http::status,
    route::{RequestView, count_request},
    snapshot::Shared,
};

/// The metric label of the gRPC edge's pass-through requests' listener.
const LISTENER_LABEL: &str = "passthrough";

/// What the route matchers see of a pass-through request.
struct H2View<'a> {
    /// The app id a gRPC edge call was for (seen as header `id`).
    app_id: Option<&'a str>,
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
        if name == "id"
            && let Some(app_id) = self.app_id
        {
            return pred(app_id);
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
        Box::pin(
            async move { observed(&shared, Entry::Edge { app_id: &app_id }, req, timeout).await },
        )
    }
}

/// Where a streamed request entered the proxy core.
#[derive(Clone, Copy)]
pub(crate) enum Entry<'a> {
    /// The gRPC edge, for the app `app_id`: routed on the pass-through table.
    Edge { app_id: &'a str },
    /// A stream an HTTP/2 listener accepted from `peer` (its SPIFFE id, over mutual TLS).
    Listener {
        name: &'a str,
        peer: Option<&'a Arc<str>>,
    },
}

impl Entry<'_> {
    /// The access line's edge name.
    fn protocol(self) -> &'static str {
        match self {
            Entry::Edge { .. } => "grpc-proxy",
            Entry::Listener { .. } => "proxy-http2",
        }
    }
}

/// What the one try of a proxied call went to, for its access line and spans.
#[derive(Default)]
struct Hop {
    /// The listener's authorization decision, when it has a policy.
    decision: Option<Decision>,
    route: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    host: Option<SocketAddr>,
}

/// [`forward`], leaving an access line (`grpc-proxy` or `proxy-http2`) and a server span with
/// the try's client span as its child when those are on. The call ends, for both, when the answer's head
/// arrives: its body (a stream, maybe long-lived) is not waited for.
pub(crate) async fn observed(
    shared: &Shared,
    entry: Entry<'_>,
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
        return forward(shared, entry, req, timeout, &mut Hop::default()).await;
    }
    let mut line = AccessRecord::new(entry.protocol(), SystemTime::now());
    let arrival = Instant::now();
    line.trace_id = span.map(|s| s.context.trace_id);
    line.target = match entry {
        Entry::Edge { app_id } => app_id.to_owned(),
        Entry::Listener { .. } => req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
    };
    line.method = req.uri().path().to_owned();
    line.bytes_in = req.body().size_hint().exact().unwrap_or(0);
    if let Entry::Listener { peer, .. } = entry {
        line.peer_identity = peer.cloned();
    }
    let mut hop = Hop::default();
    let result = forward(shared, entry, req, timeout, &mut hop).await;
    line.authz_decision = hop.decision.as_ref().map(|d| d.verdict.as_str());
    line.authz_rule = hop.decision.map(|d| d.rule);
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
            ("outrigger.api", entry.protocol().into()),
            ("outrigger.target_id", line.target.clone().into()),
            ("rpc.method", line.method.clone().into()),
            ("http.response.status_code", i64::from(code.as_u16()).into()),
        ];
        if let Entry::Listener { name, .. } = entry {
            attrs.push(("outrigger.listener", name.to_owned().into()));
        }
        if let Some(peer) = &line.peer_identity {
            attrs.push(("outrigger.peer_identity", peer.to_string().into()));
        }
        authz::span_attributes(&line, &mut attrs);
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
    entry: Entry<'_>,
    mut req: Request<StreamBody>,
    timeout: Option<Duration>,
    hop: &mut Hop,
) -> Result<Response<StreamBody>, ProxyError> {
    let snapshot = shared.live.load_full();
    let (table, listener) = match entry {
        Entry::Edge { app_id } => match &snapshot.passthrough {
            Some(table) => (table, LabelStr::Static(LISTENER_LABEL)),
            None => {
                let e = ProxyError::new(
                    Cause::NoRoute,
                    format!(
                        "no route for app {app_id}: proxying needs an http channel whose listener is a listener name in the config"
                    ),
                );
                count_request(
                    &shared.metrics,
                    LabelStr::Static(LISTENER_LABEL),
                    "".into(),
                    status(e.cause()),
                );
                return Err(e);
            }
        },
        Entry::Listener { name, .. } => match snapshot.listeners.get_key_value(name) {
            Some((name, table)) => (table, LabelStr::from(name)),
            None => {
                let e = ProxyError::new(
                    Cause::NoRoute,
                    format!("listener {name} is not in the live config"),
                );
                count_request(
                    &shared.metrics,
                    LabelStr::Shared(name.into()),
                    "".into(),
                    status(e.cause()),
                );
                return Err(e);
            }
        },
    };
    let view = H2View {
        app_id: match entry {
            Entry::Edge { app_id } => Some(app_id),
            Entry::Listener { .. } => None,
        },
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    if let Entry::Listener { name, peer } = entry {
        let (decision, allowed) = authz::check(
            snapshot.policy(name),
            &shared.metrics,
            name,
            peer.map(|p| &**p),
            &view,
        );
        hop.decision = decision;
        if let Err(e) = allowed.and_then(|()| snapshot.admit_listener(name)) {
            count_request(&shared.metrics, listener, "".into(), status(e.cause()));
            return Err(e);
        }
    }
    let Some(route) = table.find_view(&view) else {
        let target = match entry {
            Entry::Edge { app_id } => format!(" (id {app_id})"),
            Entry::Listener { .. } => String::new(),
        };
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route to an http2 cluster in table {} matches {}{target}",
                table.name,
                req.uri().path()
            ),
        );
        count_request(&shared.metrics, listener, "".into(), status(e.cause()));
        return Err(e);
    };
    let cluster = &route.cluster;
    hop.route = Some(route.name.clone());
    hop.cluster = Some(cluster.name.clone());
    let deadline = route.deadline(timeout);
    let allowed = deadline.saturating_duration_since(tokio::time::Instant::now());
    let Some(host) = cluster.pick() else {
        let e = ProxyError::new(
            Cause::NoHealthyHost,
            format!("cluster {} has no resolved hosts", cluster.name),
        );
        count_request(
            &shared.metrics,
            listener,
            LabelStr::from(&cluster.name),
            status(e.cause()),
        );
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
    route.count(&shared.metrics, listener, code);
    result
}

/// Serves one stream an HTTP/2 listener accepted: routed by the listener's table after its
/// policy, forwarded as it is. Never fails: the proxy's own failure becomes a gRPC status for a
/// gRPC request (a trailers-only answer: `grpc-status`, `grpc-message`) and an HTTP error
/// answer otherwise, so a denial is `PERMISSION_DENIED` or a 403.
pub(crate) async fn serve_stream(
    shared: &Shared,
    listener: &str,
    peer: Option<&Arc<str>>,
    req: Request<hyper::body::Incoming>,
) -> Response<StreamBody> {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // The caller's deadline bounds the wait for the answer's head, as on the gRPC edge.
    let timeout = req
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(grpc_timeout);
    let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
    let entry = Entry::Listener {
        name: listener,
        peer,
    };
    match observed(shared, entry, req, timeout).await {
        Ok(resp) => resp,
        Err(e) if grpc => grpc_error(&e),
        Err(e) => crate::http::error_response(&e).map(full_body),
    }
}

/// The gRPC status code of the proxy's own failure (DESIGN.md's error mapping).
fn grpc_code(cause: Cause) -> u8 {
    match cause {
        Cause::BadRequest => 3,                    // INVALID_ARGUMENT
        Cause::Timeout => 4,                       // DEADLINE_EXCEEDED
        Cause::NoRoute => 5,                       // NOT_FOUND
        Cause::Denied => 7,                        // PERMISSION_DENIED
        Cause::Overflow | Cause::RateLimited => 8, // RESOURCE_EXHAUSTED
        Cause::NoHealthyHost | Cause::ConnectFailure | Cause::Reset | Cause::CircuitOpen => 14, // UNAVAILABLE
    }
}

/// A trailers-only gRPC answer carrying the proxy's own failure, marked like every answer of
/// the proxy's own.
fn grpc_error(e: &ProxyError) -> Response<StreamBody> {
    let mut resp = Response::new(full_body(bytes::Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(
        "grpc-status",
        HeaderValue::from(u16::from(grpc_code(e.cause()))),
    );
    if let Ok(v) = HeaderValue::from_str(&percent_encode(e.message())) {
        h.insert("grpc-message", v);
    }
    h.insert(ERROR_HEADER, HeaderValue::from_static(e.cause().as_str()));
    resp
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn a_grpc_refusal_is_a_trailers_only_status_with_the_message() {
        let resp = grpc_error(&ProxyError::new(
            Cause::Denied,
            "caller x is denied by rule \"r\" 100%",
        ));
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "7");
        assert_eq!(
            resp.headers()["grpc-message"],
            "caller x is denied by rule \"r\" 100%25"
        );
        assert_eq!(resp.headers()[ERROR_HEADER], "permission_denied");
        for (cause, code) in [
            (Cause::NoRoute, 5),
            (Cause::Timeout, 4),
            (Cause::ConnectFailure, 14),
            (Cause::RateLimited, 8),
        ] {
            assert_eq!(grpc_code(cause), code, "{cause}");
        }
    }
}
