//! The HTTP channel: an invoke call becomes an HTTP/1.1 request (path = method, header `id` =
//! target id, verb and query string from the HTTP extension, metadata as headers) on a pooled
//! connection to the proxy core, and the response becomes the call's answer. Non-2xx answers
//! are errors, unless the request asks for them as answers ([`NonSuccess::Answer`], Dapr's
//! HTTP API). The proxy core's own failures come back typed from a named in-process listener,
//! and marked with `x-outrigger-error` from a listener reached over a socket.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Uri, header};

use http_body_util::BodyExt;
use outrigger_core::{
    Cause, ERROR_HEADER, Failure, Metrics, ProxyError, StreamBody, TIMEOUT_HEADER, full_body,
    strip_hop_by_hop,
};
use outrigger_invoke::{ErrorKind, InvokeError, NonSuccess, RpcRequest, RpcResponse};
use outrigger_pool::{
    BodyError, Dial, ExchangeError, Http1Connector, Http1Pool, PoolSettings, exchange,
};

use crate::{CHANNEL_IDLE_TIMEOUT, Carrier};

/// Error bodies are quoted in messages up to this many bytes.
const MAX_QUOTED_BODY: usize = 1024;

/// The HTTP channel service.
pub(crate) struct HttpChannel {
    /// Answers larger than this are refused (`grpc.maxMessageBytes`).
    max_answer_bytes: usize,
    pool: Http1Pool,
    dial: Dial,
    /// The `Host` header: the target's authority on a socket; none for a listener in this
    /// process (the proxy then sends the upstream host's).
    host: Option<HeaderValue>,
}

impl HttpChannel {
    pub(crate) fn new(dial: Dial, size: usize, max_answer_bytes: usize, metrics: &Metrics) -> Self {
        let pool = Http1Pool::new(
            PoolSettings {
                name: "channel/http".to_owned(),
                size,
                idle_timeout: CHANNEL_IDLE_TIMEOUT,
            },
            Http1Connector { dial: dial.clone() },
            metrics,
        );
        let host = match &dial {
            Dial::InProcess { .. } => None,
            Dial::Tcp { addr, .. } => HeaderValue::from_str(&addr.to_string()).ok(),
            Dial::Unix(_) => Some(HeaderValue::from_static("localhost")),
        };
        Self {
            max_answer_bytes,
            pool,
            dial,
            host,
        }
    }
}

impl Carrier for HttpChannel {
    async fn call(&self, req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let deadline = req.deadline;
        let non_success = req.non_success;
        let http_req = to_http(req, self.host.as_ref())?.map(full_body);
        let resp = exchange(&self.pool, &self.dial, http_req, deadline)
            .await
            .map_err(classify)?;
        let resp = read_answer(resp, self.max_answer_bytes).await?;
        from_http(resp, non_success)
    }
}

/// Reads the answer's body whole, refusing as soon as it is known to be larger than `max`
/// bytes — from its `content-length`, or once that many bytes have come — without reading
/// the rest (the connection it came on is closed, not reused).
async fn read_answer(
    resp: http::Response<StreamBody>,
    max: usize,
) -> Result<http::Response<Bytes>, InvokeError> {
    let too_big = |size: Option<u64>| {
        let size = size.map_or_else(String::new, |n| format!(" of {n} bytes"));
        InvokeError::new(
            ErrorKind::ResourceExhausted,
            format!("the answer{size} is larger than grpc.maxMessageBytes ({max} bytes)"),
        )
    };
    let (parts, mut body) = resp.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_big(Some(len)));
    }
    let mut read = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            // A body that failed in the pool knows why (a stall past the deadline, a reset).
            let kind = e
                .downcast_ref::<BodyError>()
                .map_or(ErrorKind::Unavailable, |b| b.cause().into());
            InvokeError::new(kind, format!("http channel: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if read.len() + data.len() > max {
                return Err(too_big(None));
            }
            read.extend_from_slice(&data);
        }
    }
    Ok(http::Response::from_parts(parts, read.freeze()))
}

fn classify(e: ExchangeError) -> InvokeError {
    let message = match &e {
        // The proxy's own failure, handed over typed: its message is the proxy's.
        ExchangeError::Local(p) => p.message().to_owned(),
        other => format!("http channel: {other}"),
    };
    InvokeError::from_failure(e, message)
}

fn invalid(msg: String) -> InvokeError {
    InvokeError::new(ErrorKind::InvalidArgument, msg)
}

/// Builds the HTTP request for a call.
fn to_http(req: RpcRequest, host: Option<&HeaderValue>) -> Result<Request<Bytes>, InvokeError> {
    let mut target = String::with_capacity(req.method.len() + req.query.len() + 2);
    if !req.method.starts_with('/') {
        target.push('/');
    }
    target.push_str(&req.method);
    if !req.query.is_empty() {
        target.push('?');
        target.push_str(&req.query);
    }
    let uri: Uri = target.parse().map_err(|_| {
        invalid(format!(
            "method {:?} with query {:?} is not a valid request path",
            req.method, req.query
        ))
    })?;
    let id = HeaderValue::from_str(&req.id)
        .map_err(|_| invalid(format!("id {:?} is not a valid header value", req.id)))?;
    let remaining_ms = req.remaining().as_millis().max(1);
    let mut http_req = Request::new(req.data);
    *http_req.method_mut() = req.verb;
    *http_req.uri_mut() = uri;
    let headers = http_req.headers_mut();
    *headers = req.headers;
    headers.insert("id", id);
    match host {
        Some(h) => {
            headers.insert(header::HOST, h.clone());
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    if !req.content_type.is_empty() {
        let ct = HeaderValue::from_str(&req.content_type).map_err(|_| {
            invalid(format!(
                "content type {:?} is not a valid header value",
                req.content_type
            ))
        })?;
        headers.insert(header::CONTENT_TYPE, ct);
    }
    headers.insert(
        TIMEOUT_HEADER,
        HeaderValue::from(u64::try_from(remaining_ms).unwrap_or(u64::MAX)),
    );
    Ok(http_req)
}

/// Turns the HTTP response into the call's answer or error.
fn from_http(
    resp: http::Response<Bytes>,
    non_success: NonSuccess,
) -> Result<RpcResponse, InvokeError> {
    let (mut parts, body) = resp.into_parts();
    // A proxy listener reached over a socket marks its own answers.
    if let Some(cause) = parts
        .headers
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(Cause::parse)
    {
        let message = quote(&body);
        return Err(InvokeError::from_failure(
            ProxyError::new(cause, message.clone()),
            message,
        ));
    }
    if !parts.status.is_success() && non_success == NonSuccess::Error {
        // A 403 is a refusal, not an outage: above all the callee's sidecar denying the call by
        // its authorization policy (the body names the rule and the caller), which a caller's
        // gRPC client should see as PERMISSION_DENIED, as Dapr maps it.
        let kind = if parts.status == http::StatusCode::FORBIDDEN {
            ErrorKind::PermissionDenied
        } else {
            ErrorKind::Unavailable
        };
        return Err(InvokeError::new(
            kind,
            format!("upstream answered {}: {}", parts.status, quote(&body)),
        ));
    }
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok(RpcResponse {
        status: parts.status,
        content_type,
        data: body,
        headers: parts.headers,
    })
}

fn quote(body: &[u8]) -> String {
    let cut = &body[..body.len().min(MAX_QUOTED_BODY)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > MAX_QUOTED_BODY {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    fn answer(status: u16, marker: Option<&'static str>) -> http::Response<Bytes> {
        let mut r = http::Response::new(Bytes::from_static(b"nope"));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or_default();
        if let Some(m) = marker {
            r.headers_mut()
                .insert(ERROR_HEADER, HeaderValue::from_static(m));
        }
        r
    }

    #[test]
    fn non_2xx_is_an_error_or_the_answer_as_the_request_asks() {
        let e = from_http(answer(404, None), NonSuccess::Error).expect_err("an error");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(e.message(), "upstream answered 404 Not Found: nope");
        let e = from_http(answer(403, None), NonSuccess::Error).expect_err("an error");
        assert_eq!(
            e.kind(),
            ErrorKind::PermissionDenied,
            "a refusal, not an outage"
        );

        let a = from_http(answer(404, None), NonSuccess::Answer).expect("the answer");
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_eq!(a.data, Bytes::from_static(b"nope"));

        // The proxy's own failure stays an error in both modes.
        let e = from_http(answer(404, Some("no_route")), NonSuccess::Answer).expect_err("proxy");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}
