//! The Dubbo channel: an invoke call becomes a Dubbo 2 request — service path = the target id,
//! method = the call's method, the arguments = the call's data (Hessian2 values serialised by
//! the application, one per parameter type the call names), service version and group from the
//! call, other metadata as attachments — multiplexed on the channel's shared connections to the
//! proxy core. An OK answer's value (Hessian2) is the call's answer and its attachments the
//! response metadata; an exception or an error status is an error, classified by the proxy's
//! own marker when the proxy generated it. The `dubbo_generic` filter builds such calls from
//! JSON.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_codec::{
    Limits, dubbo,
    hessian::{Reader, Value, Writer},
};
use outrigger_config::ChannelConfig;
use outrigger_core::{Metrics, ProxyError, parse_error_marker};
use outrigger_invoke::{ErrorKind, InvokeError, PARAMETER_TYPES_METADATA, RpcRequest, RpcResponse};
use outrigger_pool::{Dial, Dubbo, Heartbeat, MuxPool, MuxSettings};

use crate::{CHANNEL_IDLE_TIMEOUT, Carrier, mux_error};

/// The Dubbo channel service.
pub(crate) struct DubboChannel {
    pool: MuxPool<Dubbo>,
    limits: Limits,
}

impl DubboChannel {
    pub(crate) fn new(dial: Dial, cfg: &ChannelConfig, metrics: &Metrics) -> Self {
        let limits = Limits::default();
        let pool = MuxPool::new(
            MuxSettings {
                name: "channel/dubbo".to_owned(),
                size: usize::try_from(cfg.size).unwrap_or(usize::MAX),
                idle_timeout: CHANNEL_IDLE_TIMEOUT,
                heartbeat: Heartbeat::from_config(&cfg.heartbeat),
                limits: limits.clone(),
            },
            dial,
            metrics,
        );
        Self { pool, limits }
    }
}

impl Carrier for DubboChannel {
    async fn call(&self, req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let deadline = req.deadline;
        let two_way = !req.one_way;
        let mut frame = dubbo::Frame::request(0, request_body(req, &self.limits)?);
        frame.two_way = two_way;
        match self.pool.call(frame, deadline).await {
            Ok(None) => Ok(RpcResponse::default()),
            Ok(Some(answer)) => from_frame(&answer, &self.limits),
            Err(e) => Err(mux_error("dubbo", e)),
        }
    }
}

fn invalid(message: String) -> InvokeError {
    InvokeError::new(ErrorKind::InvalidArgument, message)
}

/// The Hessian2 body of the request for a call: the header strings, the application's
/// arguments as they are, and the attachments.
fn request_body(req: RpcRequest, limits: &Limits) -> Result<Bytes, InvokeError> {
    let call = req.dubbo;
    let desc = dubbo::descriptor(&call.parameter_types).map_err(invalid)?;
    let count = dubbo::parameter_types(&desc)
        .map_err(|e| invalid(format!("metadata {PARAMETER_TYPES_METADATA}: {e}")))?
        .len();
    check_arguments(&req.data, count, limits)?;

    let mut head = Writer::new();
    head.write_str(dubbo::DEFAULT_DUBBO_VERSION);
    head.write_str(&req.id);
    head.write_str(&call.version);
    head.write_str(&req.method);
    head.write_str(&desc);
    let head = head.finish();

    let remaining_ms = req
        .deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .as_millis()
        .max(1);
    let mut attachments = vec![
        ("path".to_owned(), Value::string(req.id.clone())),
        ("interface".to_owned(), Value::string(req.id.clone())),
        ("version".to_owned(), Value::string(call.version)),
        (
            dubbo::TIMEOUT_ATTACHMENT.to_owned(),
            Value::string(remaining_ms.to_string()),
        ),
    ];
    if !call.group.is_empty() {
        attachments.push(("group".to_owned(), Value::string(call.group)));
    }
    if call.generic {
        attachments.push(("generic".to_owned(), Value::string("true")));
    }
    for (name, value) in &req.headers {
        if let Ok(v) = value.to_str()
            && !attachments.iter().any(|(k, _)| k == name.as_str())
        {
            attachments.push((name.as_str().to_owned(), Value::string(v)));
        }
    }
    // A separate stream is safe here: header strings and a map of strings define no classes
    // or types and refer to nothing, so the arguments' numbering is the same in the body.
    let mut tail = Writer::new();
    tail.write(&Value::string_map(attachments));
    let tail = tail.finish();

    let mut body = BytesMut::with_capacity(head.len() + req.data.len() + tail.len());
    body.extend_from_slice(&head);
    body.extend_from_slice(&req.data);
    body.extend_from_slice(&tail);
    Ok(body.freeze())
}

/// The data must be exactly `count` Hessian2 values.
fn check_arguments(data: &Bytes, count: usize, limits: &Limits) -> Result<(), InvokeError> {
    let mut r = Reader::with_limits(data.clone(), limits);
    for i in 0..count {
        if r.is_empty() {
            return Err(invalid(format!(
                "data holds {i} hessian2 value(s) but metadata {PARAMETER_TYPES_METADATA} names {count} parameter(s)"
            )));
        }
        r.skip_value().map_err(|e| {
            invalid(format!(
                "data is not {count} hessian2 value(s): argument {i}: {e}"
            ))
        })?;
    }
    if !r.is_empty() {
        return Err(invalid(format!(
            "data holds more than the {count} hessian2 value(s) metadata {PARAMETER_TYPES_METADATA} names"
        )));
    }
    Ok(())
}

/// The call's answer (or error) from a Dubbo response.
fn from_frame(answer: &dubbo::Frame, limits: &Limits) -> Result<RpcResponse, InvokeError> {
    let bad = |e: String| {
        InvokeError::new(
            ErrorKind::Unavailable,
            format!("dubbo channel: undecodable answer: {e}"),
        )
    };
    if answer.serialization != dubbo::SERIALIZATION_HESSIAN2 {
        return Err(bad(format!(
            "serialization id {} is not hessian2",
            answer.serialization
        )));
    }
    if answer.status != dubbo::status::OK {
        let message = match dubbo::Reply::decode(answer, limits) {
            Ok(dubbo::Reply::Error { message, .. }) => message,
            Ok(dubbo::Reply::Result(_)) => String::new(),
            Err(e) => return Err(bad(e.to_string())),
        };
        // A proxy listener marks its own answers.
        if let Some((cause, rest)) = parse_error_marker(&message) {
            return Err(InvokeError::from_failure(
                ProxyError::new(cause, rest),
                rest.to_owned(),
            ));
        }
        let kind = match answer.status {
            dubbo::status::CLIENT_TIMEOUT | dubbo::status::SERVER_TIMEOUT => {
                ErrorKind::DeadlineExceeded
            }
            dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Unavailable,
        };
        return Err(InvokeError::new(
            kind,
            format!(
                "upstream answered dubbo status {} ({}): {message}",
                answer.status,
                dubbo::status::name(answer.status)
            ),
        ));
    }
    let result = dubbo::RawResult::decode(answer, limits).map_err(|e| bad(e.to_string()))?;
    let mut headers = HeaderMap::new();
    for (k, v) in &result.attachments {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(v),
        ) {
            headers.append(name, value);
        }
    }
    match result.outcome {
        dubbo::RawOutcome::Exception(e) => Err(InvokeError::new(
            ErrorKind::Unavailable,
            format!("upstream threw {}", dubbo::describe_exception(&e)),
        )),
        dubbo::RawOutcome::Value(data) => Ok(RpcResponse {
            status: http::StatusCode::OK,
            content_type: String::new(),
            data,
            headers,
        }),
    }
}

#[cfg(test)]
mod tests {
    use outrigger_codec::hessian::Object;
    use tokio::time::{Duration, Instant};

    use super::*;

    fn req(types: &str, data: Bytes) -> RpcRequest {
        let mut r = RpcRequest::new(
            "org.apache.dubbo.samples.api.GreetingsService",
            "sayHello",
            Instant::now() + Duration::from_millis(800),
        );
        r.data = data;
        r.headers.insert("x-tenant", HeaderValue::from_static("t1"));
        r.headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        r.dubbo = outrigger_invoke::DubboCall {
            parameter_types: types.to_owned(),
            version: "1.0.0".to_owned(),
            group: "blue".to_owned(),
            generic: false,
        };
        r
    }

    fn hessian(values: &[Value]) -> Bytes {
        let mut w = Writer::new();
        values.iter().for_each(|v| w.write(v));
        w.finish()
    }

    #[tokio::test(start_paused = true)]
    async fn the_body_carries_target_arguments_and_attachments() {
        let data = hessian(&[Value::string("world")]);
        let body = request_body(req("java.lang.String", data), &Limits::default()).expect("body");
        let frame = dubbo::Frame::request(1, body);
        let inv = dubbo::RpcInvocation::decode(&frame, &Limits::default()).expect("decodes");
        assert_eq!(inv.dubbo_version, "2.0.2");
        assert_eq!(
            inv.service_path,
            "org.apache.dubbo.samples.api.GreetingsService"
        );
        assert_eq!(inv.service_version, "1.0.0");
        assert_eq!(inv.method, "sayHello");
        assert_eq!(inv.parameter_types_desc, "Ljava/lang/String;");
        assert_eq!(inv.args, vec![Value::string("world")]);
        let att = |k: &str| inv.attachment(k).and_then(Value::as_str).map(str::to_owned);
        assert_eq!(att("group").as_deref(), Some("blue"));
        assert_eq!(att("version").as_deref(), Some("1.0.0"));
        assert_eq!(att("timeout").as_deref(), Some("800"));
        assert_eq!(att("x-tenant").as_deref(), Some("t1"));
        assert_eq!(
            att("traceparent").as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "the trace context is an attachment"
        );
        assert_eq!(
            att(PARAMETER_TYPES_METADATA),
            None,
            "control metadata stays home"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn arguments_must_match_the_parameter_types() {
        let two = hessian(&[Value::Int(1), Value::Int(2)]);
        let e = request_body(req("int", two.clone()), &Limits::default()).expect_err("too many");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e =
            request_body(req("int,int,int", two.clone()), &Limits::default()).expect_err("too few");
        assert!(e.message().contains("holds 2"), "{}", e.message());
        request_body(req("II", two), &Limits::default()).expect("exact");
        let e = request_body(req("int", Bytes::from_static(b"\xff")), &Limits::default())
            .expect_err("garbage");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn answers_become_data_or_errors() {
        let limits = Limits::default();
        let request = dubbo::Frame::request(3, Bytes::new());
        let value = dubbo::RpcResult {
            outcome: dubbo::Outcome::Value(Value::string("hello world")),
            attachments: Some(vec![("x-served-by".to_owned(), Value::string("p1"))]),
        };
        let resp = from_frame(
            &request.response(dubbo::status::OK, value.encode()),
            &limits,
        )
        .expect("value");
        assert_eq!(resp.data, hessian(&[Value::string("hello world")]));
        assert_eq!(resp.headers["x-served-by"], "p1");
        let null = dubbo::RpcResult {
            outcome: dubbo::Outcome::Null,
            attachments: None,
        };
        let resp =
            from_frame(&request.response(dubbo::status::OK, null.encode()), &limits).expect("null");
        assert_eq!(resp.data, &b"N"[..]);
        let thrown = dubbo::RpcResult {
            outcome: dubbo::Outcome::Exception(Value::Object(Object::new(
                "java.lang.IllegalStateException",
                [("detailMessage", Value::string("boom"))],
            ))),
            attachments: None,
        };
        let e = from_frame(
            &request.response(dubbo::status::OK, thrown.encode()),
            &limits,
        )
        .expect_err("exception");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(
            e.message(),
            "upstream threw java.lang.IllegalStateException: boom"
        );

        let e = from_frame(
            &request.error_response(dubbo::status::SERVICE_ERROR, "no method x"),
            &limits,
        )
        .expect_err("status 70");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(
            e.message(),
            "upstream answered dubbo status 70 (service error): no method x"
        );
        let e = from_frame(
            &request.error_response(dubbo::status::CLIENT_TIMEOUT, "slow"),
            &limits,
        )
        .expect_err("status 30");
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        let e = from_frame(
            &request.error_response(
                dubbo::status::SERVICE_NOT_FOUND,
                "[outrigger:no_route] no route in t",
            ),
            &limits,
        )
        .expect_err("proxy's own");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "no route in t");
    }
}
