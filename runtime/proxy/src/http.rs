//! What the proxy core does with one decoded HTTP request: find the route, bound the request by
//! the route timeout (and the caller's remaining time, when the channel sent it), pick a host,
//! exchange on its pool, retry on the route's conditions while time remains, and write back
//! either the upstream's answer or an error of its own, marked with `x-outrigger-error` so the
//! channel can tell "no route" from "the upstream said 404".

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use outrigger_config::RetryOn;
use tokio::time::Instant;

use super::{Shared, cluster::UpstreamPool, route::Route};
use crate::{
    metrics::{LabelStr, ProxyLabels},
    pool::{
        PoolError,
        http1::{ExchangeError, MAX_BODY_BYTES, exchange},
    },
};

/// Marks a response the proxy core generated itself; the value names the cause.
pub const ERROR_HEADER: &str = "x-outrigger-error";
/// Milliseconds the sender will still wait; the proxy never works on a request longer.
pub const TIMEOUT_HEADER: &str = "x-outrigger-timeout-ms";

/// Causes of proxy-generated responses (the values of [`ERROR_HEADER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyError {
    BadRequest,
    NoRoute,
    NoHealthyHost,
    Overflow,
    ConnectFailure,
    Reset,
    Timeout,
}

impl ProxyError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProxyError::BadRequest => "bad_request",
            ProxyError::NoRoute => "no_route",
            ProxyError::NoHealthyHost => "no_healthy_host",
            ProxyError::Overflow => "overflow",
            ProxyError::ConnectFailure => "connect_failure",
            ProxyError::Reset => "reset",
            ProxyError::Timeout => "timeout",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "bad_request" => ProxyError::BadRequest,
            "no_route" => ProxyError::NoRoute,
            "no_healthy_host" => ProxyError::NoHealthyHost,
            "overflow" => ProxyError::Overflow,
            "connect_failure" => ProxyError::ConnectFailure,
            "reset" => ProxyError::Reset,
            "timeout" => ProxyError::Timeout,
            _ => return None,
        })
    }

    fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

fn error_response(kind: ProxyError, message: String) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from(message));
    *resp.status_mut() = kind.status();
    let h = resp.headers_mut();
    h.insert(ERROR_HEADER, HeaderValue::from_static(kind.as_str()));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Headers that describe one connection, not the message, and are never forwarded.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        strip_connection_named(headers);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Removes the headers the `Connection` header names (rare, so it may allocate).
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<header::HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| header::HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in &named {
        headers.remove(n);
    }
}

/// Handles one request decoded by an HTTP listener. Never fails: errors become responses.
pub(crate) async fn handle(
    shared: &Shared,
    listener: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let resp = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(body) => dispatch(shared, listener, parts, body.to_bytes()).await,
        Err(e) => {
            let resp = error_response(
                ProxyError::BadRequest,
                format!("cannot read the request body: {e}"),
            );
            record(shared, LabelStr::Shared(listener.into()), "".into(), &resp);
            resp
        }
    };
    resp.map(Full::new)
}

/// Routes and forwards one whole request that arrived on `listener`: what an HTTP listener does
/// once it decoded a request, and what the HTTP channel calls directly for a named in-process
/// listener (the same routing, timeouts, retries, metrics and errors, without encoding the
/// request to HTTP/1.1 and parsing it back). Never fails: errors become responses.
pub(crate) async fn dispatch(
    shared: &Shared,
    listener: &str,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Response<Bytes> {
    let snapshot = shared.live.load_full();
    let Some((name, table)) = snapshot.listeners.get_key_value(listener) else {
        let resp = error_response(
            ProxyError::NoRoute,
            format!("listener {listener} is not in the live config"),
        );
        record(shared, LabelStr::Shared(listener.into()), "".into(), &resp);
        return resp;
    };
    // The live config's copy of the name: the label costs a reference count, not a copy.
    let listener = LabelStr::from(name);
    let caller_timeout = parts
        .headers
        .remove(TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map(Duration::from_millis);
    let Some(route) = table.find(&parts.method, parts.uri.path(), &parts.headers) else {
        let id = parts
            .headers
            .get("id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        let msg = format!(
            "no route in table {} matches {} {} (id {id})",
            table.name,
            parts.method,
            parts.uri.path()
        );
        let resp = error_response(ProxyError::NoRoute, msg);
        record(shared, listener, "".into(), &resp);
        return resp;
    };
    strip_hop_by_hop(&mut parts.headers);
    let timeout = caller_timeout.map_or(route.timeout, |t| t.min(route.timeout));
    let resp = forward(shared, route, parts, body, Instant::now() + timeout).await;
    record(shared, listener, LabelStr::from(&route.cluster.name), &resp);
    resp
}

/// Counts one request. The labels share names already held (no string is built), except
/// when the listener is not in the live config.
fn record(shared: &Shared, listener: LabelStr, cluster: LabelStr, resp: &Response<Bytes>) {
    shared
        .metrics
        .proxy_requests
        .get_or_create(&ProxyLabels {
            listener,
            cluster,
            status: resp.status().as_u16(),
        })
        .inc();
}

/// Sends the request to the route's cluster, with retries, by `deadline`.
async fn forward(
    shared: &Shared,
    route: &Route,
    parts: http::request::Parts,
    body: Bytes,
    deadline: Instant,
) -> Response<Bytes> {
    // The last try takes the request head instead of a copy of it.
    let mut parts = Some(parts);
    let cluster = &route.cluster;
    let tries = 1 + route.retry.as_ref().map_or(0, |r| r.attempts);
    let mut try_no = 0;
    loop {
        try_no += 1;
        let Some(host) = cluster.pick() else {
            return error_response(
                ProxyError::NoHealthyHost,
                format!("cluster {} has no resolved hosts", cluster.name),
            );
        };
        let try_deadline = route
            .retry
            .as_ref()
            .and_then(|r| r.per_try_timeout)
            .map_or(deadline, |t| (Instant::now() + t).min(deadline));
        let head = if try_no == tries {
            parts.take()
        } else {
            parts.clone()
        };
        let Some(head) = head else {
            // Unreachable: the head is taken only on the last try.
            return error_response(ProxyError::Reset, "request head lost".to_owned());
        };
        let req = Request::from_parts(head, body.clone());
        let UpstreamPool::Http(pool) = &host.pool else {
            // Routes only take requests of their cluster's protocol; this is a bug guard.
            return error_response(
                ProxyError::NoRoute,
                format!("cluster {} does not speak http", cluster.name),
            );
        };
        let outcome = exchange(pool, &host.dial, req, try_deadline).await;
        let addr = host.addr;
        drop(host);

        let condition = match &outcome {
            Ok(resp) => Some(RetryOn::Status(resp.status().as_u16())),
            Err(ExchangeError::Pool(
                PoolError::Connect { .. } | PoolError::ConnectTimeout { .. },
            )) => Some(RetryOn::ConnectFailure),
            Err(ExchangeError::Reset { .. } | ExchangeError::Body { .. }) => Some(RetryOn::Reset),
            // A per-try timeout with time left overall is retried like a reset.
            Err(ExchangeError::Timeout { .. }) if try_deadline < deadline => Some(RetryOn::Reset),
            Err(_) => None,
        };
        if route.may_retry(try_no, deadline, condition) {
            shared.count_retry(cluster, addr, try_no);
            continue;
        }
        return match outcome {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.headers.remove(header::CONTENT_LENGTH);
                Response::from_parts(parts, body)
            }
            Err(e) => {
                let kind = match &e {
                    ExchangeError::Pool(PoolError::Exhausted { .. }) => ProxyError::Overflow,
                    ExchangeError::Pool(_) => ProxyError::ConnectFailure,
                    ExchangeError::Reset { .. } | ExchangeError::Body { .. } => ProxyError::Reset,
                    ExchangeError::Timeout { .. } => ProxyError::Timeout,
                };
                let detail = if kind == ProxyError::Timeout {
                    format!(
                        "cluster {} host {addr}: no answer within the route timeout of {} ms",
                        cluster.name,
                        route.timeout.as_millis()
                    )
                } else {
                    format!("cluster {} host {addr}: {e}", cluster.name)
                };
                error_response(kind, detail)
            }
        };
    }
}
