//! The Bolt channel: an invoke call becomes a SOFA Bolt v1 request — content = the call's data,
//! serialised by the application (Hessian2 `SofaRequest`, as with Layotto), class from
//! `ext.class`, timeout = the time left, metadata as Bolt headers, and, unlike Layotto, the
//! target id and method on the wire as `service`, `sofa_head_target_service` and
//! `sofa_head_method_name` — multiplexed on the channel's shared connections to the proxy core.
//! The answer's content is the call's answer; a non-success status is an error, classified by
//! the proxy's own marker when the proxy generated it.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_codec::{Limits, bolt};
use outrigger_config::ChannelConfig;

use super::{CHANNEL_IDLE_TIMEOUT, Carrier, Dial, mux_error, one_way, proxy_error_kind};
use crate::{
    invoke::{ErrorKind, InvokeError, RpcRequest, RpcResponse},
    metrics::Metrics,
    pool::mux::{self, Heartbeat, MuxPool, MuxSettings},
    proxy::{ERROR_HEADER, ERROR_MESSAGE_HEADER, ProxyError},
};

/// The request class SOFARPC writes, used when `ext.class` is not set.
pub(crate) const DEFAULT_CLASS: &str = "com.alipay.sofa.rpc.core.request.SofaRequest";
/// Bolt header carrying the target service (SOFARPC's `serverSignature`).
pub(crate) const SERVICE: &str = "service";
/// Bolt header SOFARPC's protobuf path uses for the target service.
pub(crate) const TARGET_SERVICE: &str = "sofa_head_target_service";
/// Bolt header carrying the method name.
pub(crate) const METHOD_NAME: &str = "sofa_head_method_name";

/// The Bolt channel service.
pub(crate) struct BoltChannel {
    pool: MuxPool<mux::Bolt>,
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
    async fn call(&self, mut req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let one_way = one_way(&mut req)?;
        let deadline = req.deadline;
        let frame = to_frame(req, self.class.clone(), one_way);
        match self.pool.call(frame, deadline).await {
            Ok(None) => Ok(RpcResponse::default()),
            Ok(Some(answer)) => from_frame(answer),
            Err(e) => Err(mux_error("bolt", &e)),
        }
    }
}

/// The Bolt request for a call (its id is set by the pool).
fn to_frame(req: RpcRequest, class: Bytes, one_way: bool) -> bolt::Frame {
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
            content_type: String::new(),
            data: answer.content,
            headers: http_headers(&answer.headers),
        });
    }
    if let Some(cause) = answer
        .headers
        .get_str(ERROR_HEADER)
        .and_then(ProxyError::parse)
    {
        let message = answer
            .headers
            .get_str(ERROR_MESSAGE_HEADER)
            .unwrap_or(cause.as_str())
            .to_owned();
        return Err(InvokeError::new(proxy_error_kind(cause), message));
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
            status_name(status)
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

/// SOFABolt's name of a response status.
pub(crate) fn status_name(status: u16) -> &'static str {
    match status {
        bolt::status::SUCCESS => "success",
        bolt::status::ERROR => "error",
        bolt::status::SERVER_EXCEPTION => "server exception",
        bolt::status::UNKNOWN => "unknown",
        bolt::status::SERVER_THREADPOOL_BUSY => "server thread pool busy",
        bolt::status::ERROR_COMM => "communication error",
        bolt::status::NO_PROCESSOR => "no processor",
        bolt::status::TIMEOUT => "timeout",
        bolt::status::CLIENT_SEND_ERROR => "client send error",
        bolt::status::CODEC_EXCEPTION => "codec exception",
        bolt::status::CONNECTION_CLOSED => "connection closed",
        bolt::status::SERVER_SERIAL_EXCEPTION => "server serialization exception",
        bolt::status::SERVER_DESERIAL_EXCEPTION => "server deserialization exception",
        _ => "not a known status",
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::{Duration, Instant};

    use super::*;

    fn req() -> RpcRequest {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("blue"));
        headers.insert(SERVICE, HeaderValue::from_static("spoofed"));
        RpcRequest {
            id: "com.outrigger.test.EchoService:1.0".into(),
            method: "hello".into(),
            content_type: String::new(),
            data: Bytes::from_static(b"\x4fcontent"),
            verb: http::Method::GET,
            query: String::new(),
            headers,
            deadline: Instant::now() + Duration::from_millis(1500),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_carries_target_method_and_metadata() {
        let frame = to_frame(req(), Bytes::from_static(DEFAULT_CLASS.as_bytes()), false);
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
        let oneway = to_frame(req(), Bytes::from_static(b"C"), true);
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
