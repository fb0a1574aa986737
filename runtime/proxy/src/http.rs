//! HTTP in the proxy core: what happens to one decoded HTTP request — find the route, bound the
//! request by the route timeout (and the caller's remaining time, when the channel sent it),
//! forward it through the one pipeline with an HTTP/1.1 exchange per try — and the HTTP edge of
//! failures: a listener on a byte stream answers the proxy's own failure with an HTTP status and
//! the `x-outrigger-error` marker, while the in-process hand-off returns it typed.

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use outrigger_config::RetryOn;
use outrigger_core::{
    AccessRecord, AttrValue, BoxError, Cause, ERROR_HEADER, Failure, LabelStr, ProxyError, Span,
    SpanKind, StreamBody, TIMEOUT_HEADER, TRACEPARENT, TraceContext, full_body, strip_hop_by_hop,
};
use outrigger_pool::{ExchangeError, Http1Pool, exchange_waited};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{
    authz,
    cluster::{Host, UpstreamPool},
    forward::{Trail, Upstream, forward},
    route::{HttpView, Retry, count_request},
    snapshot::{ProxySnapshot, Shared},
};

/// [`TIMEOUT_HEADER`] and [`ERROR_HEADER`] as header names, parsed once.
const TIMEOUT_NAME: HeaderName = HeaderName::from_static(TIMEOUT_HEADER);
const ERROR_NAME: HeaderName = HeaderName::from_static(ERROR_HEADER);

/// The HTTP status of the proxy's own answer.
pub(crate) fn status(cause: Cause) -> StatusCode {
    match cause {
        Cause::BadRequest => StatusCode::BAD_REQUEST,
        Cause::NoRoute => StatusCode::NOT_FOUND,
        Cause::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Cause::NoHealthyHost
        | Cause::Overflow
        | Cause::ConnectFailure
        | Cause::Reset
        | Cause::CircuitOpen => StatusCode::SERVICE_UNAVAILABLE,
        Cause::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Cause::Denied => StatusCode::FORBIDDEN,
    }
}

/// The proxy's own answer on the wire: the status of its cause, the cause in
/// `x-outrigger-error`, the message as the body.
/// A denial is Dapr's error JSON (`ERR_PERMISSION_DENIED`), which Dapr clients read.
pub(crate) fn error_response(e: &ProxyError) -> Response<Bytes> {
    let (body, content_type) = if e.cause() == Cause::Denied {
        let json =
            serde_json::json!({"errorCode": "ERR_PERMISSION_DENIED", "message": e.message()});
        (Bytes::from(json.to_string()), "application/json")
    } else {
        (
            Bytes::from(e.message().to_owned()),
            "text/plain; charset=utf-8",
        )
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status(e.cause());
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(e.cause().as_str()));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// Handles one request decoded by an HTTP listener. Never fails: errors become responses. The
/// request body and the answer's body are streamed, not read whole.
pub(crate) async fn handle(
    shared: &Shared,
    listener: &str,
    req: Request<Incoming>,
) -> Response<StreamBody> {
    let (parts, body) = req.into_parts();
    match dispatch(
        shared,
        shared.live.load_full(),
        listener,
        parts,
        body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync(),
        Origin::Socket,
    )
    .await
    {
        Ok(resp) => resp,
        Err(e) => error_response(&e).map(full_body),
    }
}

/// The caller's SPIFFE id, on a request that came over mutual TLS (a request extension).
#[derive(Clone, Debug)]
pub(crate) struct PeerIdentity(pub(crate) Arc<str>);

/// Where a request came from, which decides whose span its tries are children of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A listener's socket: the proxy's own server span continues the caller's trace.
    Socket,
    /// A channel of this sidecar, in process: its `traceparent` names the sidecar's server span
    /// of the call (an API edge's), which the tries continue; no second server span is made.
    InProcess,
}

/// Routes and forwards one request that arrived on `listener`: what an HTTP listener does once
/// it decoded a request head, and what the HTTP channel calls directly for a named in-process
/// listener (the same routing, timeouts, retries and metrics, without encoding the request to
/// HTTP/1.1 and parsing it back). The upstream's answer with its body streaming, or the proxy's
/// own failure.
pub(crate) async fn dispatch(
    shared: &Shared,
    snapshot: Arc<ProxySnapshot>,
    listener: &str,
    parts: http::request::Parts,
    body: StreamBody,
    origin: Origin,
) -> Result<Response<StreamBody>, ProxyError> {
    let obs = &shared.obs;
    let incoming = || parts.headers.get(TRACEPARENT).map(HeaderValue::as_bytes);
    let span = match origin {
        Origin::Socket => obs.span(incoming),
        Origin::InProcess => obs
            .traces()
            .then(|| incoming().and_then(|t| TraceContext::parse(t).ok()))
            .flatten()
            .map(|context| obs.adopt(context, None)),
    };
    // Only a socket request's span is the proxy's own, recorded when it ends.
    let recorder = obs
        .recorder(span.as_ref())
        .filter(|_| origin == Origin::Socket);
    if obs.access_log.is_none() && recorder.is_none() {
        return route_and_forward(shared, snapshot, listener, parts, body, span, None).await;
    }
    let (start, arrival) = (SystemTime::now(), Instant::now());
    let mut line = AccessRecord::new("proxy-http", start);
    line.trace_id = span.map(|s| s.context.trace_id);
    line.target = parts
        .headers
        .get("id")
        .or_else(|| parts.headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    line.method = parts.uri.path().to_owned();
    line.peer_identity = parts.extensions.get::<PeerIdentity>().map(|p| p.0.clone());
    let verb = recorder.map(|_| parts.method.clone());
    // Bodies stream: their sizes are what their lengths say when they say it.
    line.bytes_in = body.size_hint().exact().unwrap_or(0);
    let result = route_and_forward(
        shared,
        snapshot,
        listener,
        parts,
        body,
        span,
        Some(&mut line),
    )
    .await;
    let code = match &result {
        Ok(resp) => resp.status(),
        Err(e) => status(e.cause()),
    };
    line.status = Some(u32::from(code.as_u16()));
    line.bytes_out = match &result {
        Ok(resp) => resp.body().size_hint().exact().unwrap_or(0),
        Err(e) => e.message().len() as u64,
    };
    line.duration = arrival.elapsed();
    if let (Some(sink), Some(span), Some(verb)) = (recorder, &span, verb) {
        sink.record(span.finish(
            SpanKind::Server,
            verb.as_str().to_owned(),
            server_attributes(listener, &line, code, result.as_ref().err()),
            result.as_ref().err().map(ToString::to_string),
        ));
    }
    if let Some(log) = &obs.access_log {
        log.log(line);
    }
    result
}

/// The attributes of a proxy listener's server span, from what its access line gathered.
fn server_attributes(
    listener: &str,
    line: &AccessRecord,
    code: StatusCode,
    error: Option<&ProxyError>,
) -> Vec<(&'static str, AttrValue)> {
    let mut attrs = vec![
        ("outrigger.listener", AttrValue::from(listener.to_owned())),
        ("url.path", line.method.clone().into()),
        ("outrigger.target_id", line.target.clone().into()),
        ("http.response.status_code", i64::from(code.as_u16()).into()),
        ("outrigger.attempts", i64::from(line.attempts).into()),
    ];
    if let Some(route) = &line.route {
        attrs.push(("outrigger.route", route.to_string().into()));
    }
    if let Some(cluster) = &line.cluster {
        attrs.push(("outrigger.cluster", cluster.to_string().into()));
    }
    if let Some(peer) = &line.peer_identity {
        attrs.push(("outrigger.peer_identity", peer.to_string().into()));
    }
    authz::span_attributes(line, &mut attrs);
    if let Some(e) = error {
        attrs.push(("error.type", e.cause().as_str().into()));
    }
    attrs
}

/// Routes and forwards one request; fills `line` (route, cluster, tries) when it is logged.
async fn route_and_forward(
    shared: &Shared,
    snapshot: Arc<ProxySnapshot>,
    listener: &str,
    mut parts: http::request::Parts,
    body: StreamBody,
    span: Option<Span>,
    mut line: Option<&mut AccessRecord>,
) -> Result<Response<StreamBody>, ProxyError> {
    let Some((name, table)) = snapshot.listeners.get_key_value(listener) else {
        let e = ProxyError::new(
            Cause::NoRoute,
            format!("listener {listener} is not in the live config"),
        );
        count_request(
            &shared.metrics,
            LabelStr::Shared(listener.into()),
            "".into(),
            status(e.cause()),
        );
        return Err(e);
    };
    // The live config's copy of the name: the label costs a reference count, not a copy.
    let listener = LabelStr::from(name);
    let (decision, allowed) = authz::check(
        snapshot.policy(name),
        &shared.metrics,
        name,
        parts.extensions.get::<PeerIdentity>().map(|p| &*p.0),
        &HttpView {
            method: &parts.method,
            path: parts.uri.path(),
            headers: &parts.headers,
        },
    );
    if let (Some(line), Some(d)) = (line.as_deref_mut(), decision) {
        line.authz_decision = Some(d.verdict.as_str());
        line.authz_rule = Some(d.rule);
    }
    if let Err(e) = allowed {
        count_request(&shared.metrics, listener, "".into(), status(e.cause()));
        return Err(e);
    }
    if let Err(e) = snapshot.admit_listener(name) {
        count_request(&shared.metrics, listener, "".into(), status(e.cause()));
        return Err(e);
    }
    let caller_timeout = parts
        .headers
        .remove(&TIMEOUT_NAME)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_millis);
    let Some(route) = table.find(&parts.method, parts.uri.path(), &parts.headers) else {
        let id = parts
            .headers
            .get("id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let e = ProxyError::new(
            Cause::NoRoute,
            format!(
                "no route in table {} matches {} {} (id {id})",
                table.name,
                parts.method,
                parts.uri.path()
            ),
        );
        count_request(&shared.metrics, listener, "".into(), status(e.cause()));
        return Err(e);
    };
    strip_hop_by_hop(&mut parts.headers);
    let deadline = route.deadline(caller_timeout);
    let replay_limit = route.retry.as_ref().map_or(0, |r| r.replay_limit);
    let body = match ReplayBody::read(body, replay_limit, deadline).await {
        Ok(b) => b,
        Err(e) => {
            count_request(
                &shared.metrics,
                listener,
                LabelStr::from(&route.cluster.name),
                status(e.cause()),
            );
            return Err(e);
        }
    };
    let mut trail = Trail::default();
    let result = forward::<Http>(
        shared,
        route,
        HttpRequest { parts, body },
        deadline,
        &mut trail,
        span.as_ref(),
    )
    .await;
    if let Some(line) = line {
        line.route = Some(route.name.clone());
        line.cluster = Some(route.cluster.name.clone());
        line.upstream_host = trail.host;
        line.attempts = trail.attempts;
    }
    let result = result.map(|resp| {
        let (mut parts, body) = resp.into_parts();
        // The body passes through as it came, so its content-length (if any) stays true.
        strip_hop_by_hop(&mut parts.headers);
        // Only the proxy marks its own answers; an upstream's marker is not passed on.
        parts.headers.remove(&ERROR_NAME);
        Response::from_parts(parts, body)
    });
    let code = match &result {
        Ok(resp) => resp.status(),
        Err(e) => status(e.cause()),
    };
    route.count(&shared.metrics, listener, code);
    result
}

/// An HTTP request as the forwarding pipeline sends it.
#[derive(Clone)]
pub(crate) struct HttpRequest {
    parts: http::request::Parts,
    body: ReplayBody,
}

/// A request body: whole in memory when it fit the route's replay buffer (then a retry can send
/// it again), else streamed from the client, which only one try can take.
#[derive(Clone)]
enum ReplayBody {
    Whole(Bytes),
    Streamed(Arc<Mutex<Option<StreamBody>>>),
}

impl ReplayBody {
    /// Reads `body` into memory if it ends within `limit` bytes (an empty limit keeps it
    /// streaming, unless the body is known to be empty), else keeps the bytes read in front of
    /// the rest of the stream.
    async fn read(
        mut body: StreamBody,
        limit: usize,
        deadline: Instant,
    ) -> Result<Self, ProxyError> {
        if body.is_end_stream() {
            return Ok(ReplayBody::Whole(Bytes::new()));
        }
        if limit == 0 || body.size_hint().lower() > limit as u64 {
            return Ok(ReplayBody::Streamed(Arc::new(Mutex::new(Some(body)))));
        }
        let mut read = BytesMut::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    return Err(ProxyError::new(
                        Cause::Timeout,
                        "the request body did not arrive before the route timeout",
                    ));
                }
                Ok(None) => return Ok(ReplayBody::Whole(read.freeze())),
                Ok(Some(Err(e))) => {
                    return Err(ProxyError::new(
                        Cause::BadRequest,
                        format!("cannot read the request body: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                read.extend_from_slice(&data);
            }
            if read.len() > limit {
                // Too big to replay: send what was read, then the rest as it comes.
                let head = futures_util::stream::once(std::future::ready(Ok::<_, BoxError>(
                    http_body::Frame::data(read.freeze()),
                )));
                let rest = http_body_util::BodyStream::new(body);
                let joined = http_body_util::StreamBody::new(head.chain(rest));
                return Ok(ReplayBody::Streamed(Arc::new(Mutex::new(Some(
                    joined.boxed_unsync(),
                )))));
            }
        }
    }

    fn len(&self) -> Option<usize> {
        match self {
            ReplayBody::Whole(b) => Some(b.len()),
            ReplayBody::Streamed(_) => None,
        }
    }

    /// The body for one try; a streamed body can be taken once.
    fn take(&self) -> StreamBody {
        match self {
            ReplayBody::Whole(b) => full_body(b.clone()),
            ReplayBody::Streamed(s) => s.lock().take().unwrap_or_else(|| {
                // Never reached (`intact` keeps a taken stream from another try); if it were,
                // the upstream gets a failed body, never a silently empty one.
                let gone: BoxError = "the request body was already sent on an earlier try".into();
                http_body_util::StreamBody::new(futures_util::stream::once(std::future::ready(
                    Err::<http_body::Frame<Bytes>, BoxError>(gone),
                )))
                .boxed_unsync()
            }),
        }
    }
}

/// HTTP/1.1 upstreams.
struct Http;

impl Upstream for Http {
    const NAME: &'static str = "http";
    type Pool = Http1Pool;
    type Request = HttpRequest;
    type Response = Response<StreamBody>;
    type Error = ExchangeError;

    fn pool(host: &Host) -> Option<&Http1Pool> {
        match &host.pool {
            UpstreamPool::Http(pool) => Some(pool),
            _ => None,
        }
    }

    async fn exchange(
        pool: &Http1Pool,
        host: &Host,
        req: HttpRequest,
        deadline: Instant,
        waited: Option<&mut Duration>,
    ) -> Result<Response<StreamBody>, ExchangeError> {
        let body = req.body.take();
        let mut req = Request::from_parts(req.parts, body);
        // A request that names no host (the channel's, handed over in process) is for the
        // upstream host as configured.
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, host.authority.clone());
        }
        exchange_waited(pool, &host.dial, req, deadline, waited).await
    }

    fn answered(resp: &Response<StreamBody>) -> Option<RetryOn> {
        Some(RetryOn::Status(resp.status().as_u16()))
    }

    fn intact(req: &HttpRequest) -> bool {
        match &req.body {
            ReplayBody::Whole(_) => true,
            ReplayBody::Streamed(s) => s.lock().is_some(),
        }
    }

    fn replayable(req: &HttpRequest, retry: &Retry) -> bool {
        retry.methods.contains(&req.parts.method)
            && req.body.len().is_some_and(|n| n <= retry.replay_limit)
    }

    fn trace(req: &mut HttpRequest, context: &TraceContext) {
        context.inject(&mut req.parts.headers);
    }

    fn operation(req: &HttpRequest) -> Cow<'static, str> {
        // OpenTelemetry names HTTP client spans by their method.
        Cow::Owned(req.parts.method.as_str().to_owned())
    }

    fn status(resp: &Response<StreamBody>) -> Option<i64> {
        Some(i64::from(resp.status().as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_errors_use_http_statuses_and_the_marker() {
        for (cause, want) in [
            (Cause::BadRequest, 400),
            (Cause::NoRoute, 404),
            (Cause::Timeout, 504),
            (Cause::NoHealthyHost, 503),
            (Cause::Overflow, 503),
            (Cause::ConnectFailure, 503),
            (Cause::Reset, 503),
            (Cause::CircuitOpen, 503),
            (Cause::RateLimited, 429),
        ] {
            let resp = error_response(&ProxyError::new(cause, "why"));
            assert_eq!(resp.status().as_u16(), want, "{cause}");
            assert_eq!(resp.headers()[ERROR_HEADER], cause.as_str());
            assert_eq!(resp.body(), "why");
        }
    }

    #[test]
    fn a_denial_is_a_403_with_dapr_error_json() {
        let resp = error_response(&ProxyError::new(Cause::Denied, "caller \"x\" denied\n"));
        assert_eq!(resp.status().as_u16(), 403);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()[ERROR_HEADER], "permission_denied");
        assert_eq!(
            resp.body(),
            r#"{"errorCode":"ERR_PERMISSION_DENIED","message":"caller \"x\" denied\n"}"#
        );
    }
}
