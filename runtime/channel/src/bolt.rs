//! The Bolt channel: an invoke call becomes a SOFA Bolt v1 request — content = the call's data,
//! serialised by the application (Hessian2 `SofaRequest`, as with Layotto), class from
//! `ext.class`, timeout = the time left, metadata as Bolt headers, and, unlike Layotto, the
//! target id and method on the wire as `service`, `sofa_head_target_service` and
//! `sofa_head_method_name` — multiplexed on the channel's shared connections to the proxy core.
//! The answer's content is the call's answer; a non-success status is an error, classified by
//! the proxy's own marker when the proxy generated it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_codec::{
    Limits, bolt,
    bolt::sofa::{DEFAULT_REQUEST_CLASS as DEFAULT_CLASS, METHOD_NAME, SERVICE, TARGET_SERVICE},
};
use outrigger_config::ChannelConfig;

use outrigger_core::{Cause, ERROR_HEADER, ERROR_MESSAGE_HEADER, Metrics, ProxyError};
use outrigger_invoke::{ErrorKind, InvokeError, RpcRequest, RpcResponse};
use outrigger_pool::{Bolt, Dial, Heartbeat, MuxPool, MuxSettings};

use crate::{CHANNEL_IDLE_TIMEOUT, Carrier, mux_error};

/// The Bolt channel service.
pub(crate) struct BoltChannel {
    pool: MuxPool<Bolt>,
    class: Bytes,
}

impl BoltChannel {
    pub(crate) fn new(dial: Dial, cfg: &ChannelConfig, metrics: &Metrics) -> Self {
        let pool = MuxPool::new(
            MuxSettings {
                name: "channel/bolt".to_owned(),
                size: usize::try_from(cfg.size).unwrap_or(usize::MAX),
                idle_timeout: CHANNEL_IDLE_TIMEOUT,
                heartbeat: Heartbeat::from_config(&cfg.heartbeat),
                limits: Limits::default(),
            },
            dial,
            metrics,
        );
        let class = cfg.ext.class.as_deref().unwrap_or(DEFAULT_CLASS);
        Self {
            pool,
            class: Bytes::copy_from_slice(class.as_bytes()),
        }
    }
}

impl Carrier for BoltChannel {
    async fn call(&self, req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let deadline = req.deadline;
        let frame = to_frame(req, self.class.clone());
        match self.pool.call(frame, deadline).await {
            Ok(None) => Ok(RpcResponse::default()),
            Ok(Some(answer)) => from_frame(answer),
            Err(e) => Err(mux_error("bolt", e)),
        }
    }
}

/// The Bolt request for a call (its id is set by the pool).
fn to_frame(req: RpcRequest, class: Bytes) -> bolt::Frame {
    let one_way = req.one_way;
    let mut headers = bolt::HeaderMap::new();
    for (name, value) in &req.headers {
        if let Ok(v) = value.to_str()
            && !matches!(name.as_str(), SERVICE | TARGET_SERVICE | METHOD_NAME)
        {
            headers.push(
                Bytes::copy_from_slice(name.as_str().as_bytes()),
                Some(Bytes::copy_from_slice(v.as_bytes())),
            );
        }
    }
    let id = Bytes::from(req.id.into_bytes());
    headers.insert(SERVICE, id.clone());
    headers.insert(TARGET_SERVICE, id);
    headers.insert(METHOD_NAME, Bytes::from(req.method.into_bytes()));
    let timeout_ms = i32::try_from(
        req.deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .as_millis()
            .max(1),
    )
    .unwrap_or(i32::MAX);
    let mut frame = bolt::Frame::request(0, timeout_ms, class, headers, req.data);
    if one_way {
        frame.kind = bolt::Kind::OneWay { timeout_ms };
    }
    frame
}

/// The call's answer (or error) from a Bolt response.
fn from_frame(answer: bolt::Frame) -> Result<RpcResponse, InvokeError> {
    let status = match answer.kind {
        bolt::Kind::Response { status } => status,
        other => {
            return Err(InvokeError::new(
                ErrorKind::Unavailable,
                format!("bolt channel: the proxy answered with a {other:?} frame"),
            ));
        }
    };
    if status == bolt::status::SUCCESS {
        return Ok(RpcResponse {
            status: http::StatusCode::OK,
            content_type: String::new(),
            data: answer.content,
            headers: http_headers(&answer.headers),
        });
    }
    if let Some(cause) = answer.headers.get_str(ERROR_HEADER).and_then(Cause::parse) {
        let message = answer
            .headers
            .get_str(ERROR_MESSAGE_HEADER)
            .unwrap_or(cause.as_str())
            .to_owned();
        return Err(InvokeError::from_failure(
            ProxyError::new(cause, message.clone()),
            message,
        ));
    }
    let kind = match status {
        bolt::status::TIMEOUT => ErrorKind::DeadlineExceeded,
        bolt::status::SERVER_THREADPOOL_BUSY => ErrorKind::ResourceExhausted,
        _ => ErrorKind::Unavailable,
    };
    Err(InvokeError::new(
        kind,
        format!(
            "upstream answered bolt status {status} ({})",
            bolt::status::name(status)
        ),
    ))
}

/// Bolt response headers that are valid HTTP headers, for the gRPC response metadata.
fn http_headers(headers: &bolt::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers.iter() {
        let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(&k.to_ascii_lowercase()),
            v.map(|v| HeaderValue::from_bytes(v)),
        ) else {
            continue;
        };
        out.append(name, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use tokio::time::{Duration, Instant};

    use super::*;

    fn req() -> RpcRequest {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("blue"));
        headers.insert(SERVICE, HeaderValue::from_static("spoofed"));
        let mut r = RpcRequest::new(
            "com.outrigger.test.EchoService:1.0",
            "hello",
            Instant::now() + Duration::from_millis(1500),
        );
        r.data = Bytes::from_static(b"\x4fcontent");
        r.headers = headers;
        r
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_carries_target_method_and_metadata() {
        let frame = to_frame(req(), Bytes::from_static(DEFAULT_CLASS.as_bytes()));
        assert_eq!(frame.kind, bolt::Kind::Request { timeout_ms: 1500 });
        assert_eq!(frame.class, DEFAULT_CLASS.as_bytes());
        assert_eq!(
            frame.headers.get_str(SERVICE),
            Some("com.outrigger.test.EchoService:1.0"),
            "the id wins over a metadata entry of the same name"
        );
        assert_eq!(
            frame.headers.get_str(TARGET_SERVICE),
            Some("com.outrigger.test.EchoService:1.0")
        );
        assert_eq!(frame.headers.get_str(METHOD_NAME), Some("hello"));
        assert_eq!(frame.headers.get_str("x-tenant"), Some("blue"));
        assert_eq!(frame.content, &b"\x4fcontent"[..]);
        let mut one_way = req();
        one_way.one_way = true;
        let oneway = to_frame(one_way, Bytes::from_static(b"C"));
        assert_eq!(oneway.kind, bolt::Kind::OneWay { timeout_ms: 1500 });
    }

    #[test]
    fn statuses_become_error_kinds() {
        let request = bolt::Frame::request(1, 10, "C", bolt::HeaderMap::new(), "x");
        let mut ok = request.response(bolt::status::SUCCESS);
        ok.content = Bytes::from_static(b"answer");
        ok.headers.insert("x-served-by", "sofa");
        let resp = from_frame(ok).expect("success");
        assert_eq!(resp.data, &b"answer"[..]);
        assert_eq!(resp.headers["x-served-by"], "sofa");

        let mut proxy = request.response(bolt::status::NO_PROCESSOR);
        proxy.headers.insert(ERROR_HEADER, "no_route");
        proxy
            .headers
            .insert(ERROR_MESSAGE_HEADER, "no route in table t");
        let e = from_frame(proxy).expect_err("no route");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "no route in table t");

        let cases = [
            (bolt::status::TIMEOUT, ErrorKind::DeadlineExceeded),
            (
                bolt::status::SERVER_THREADPOOL_BUSY,
                ErrorKind::ResourceExhausted,
            ),
            (bolt::status::SERVER_EXCEPTION, ErrorKind::Unavailable),
            (bolt::status::NO_PROCESSOR, ErrorKind::Unavailable),
        ];
        for (status, kind) in cases {
            let e = from_frame(request.response(status)).expect_err("error status");
            assert_eq!(e.kind(), kind, "status {status}");
            assert!(e.message().starts_with("upstream answered bolt status"));
        }
    }
}
