//! The Dubbo channel: an invoke call becomes a Dubbo 2 request — service path = the target id,
//! method = the call's method, the arguments = the call's data (Hessian2 values serialised by
//! the application, one per parameter type named in metadata `dubbo_parameter_types`), service
//! version and group from metadata, other metadata as attachments — multiplexed on the
//! channel's shared connections to the proxy core. An OK answer's value (Hessian2) is the
//! call's answer and its attachments the response metadata; an exception or an error status
//! is an error, classified by the proxy's own marker when the proxy generated it. The
//! `dubbo_generic` filter builds such calls from JSON.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_codec::{
    Limits, dubbo,
    hessian::{Reader, Value, Writer},
};
use outrigger_config::ChannelConfig;

use super::{CHANNEL_IDLE_TIMEOUT, Carrier, Dial, mux_error, one_way, proxy_error_kind};
use crate::{
    invoke::{ErrorKind, InvokeError, RpcRequest, RpcResponse},
    metrics::Metrics,
    pool::mux::{self, Heartbeat, MuxPool, MuxSettings},
    proxy::dubbo_error_cause,
};

/// gRPC metadata: the parameter types of the call, as a JVM descriptor
/// (`Ljava/lang/String;I`) or comma-separated Java names (`java.lang.String,int`). None means
/// a method without parameters.
pub(crate) const PARAMETER_TYPES_METADATA: &str = "dubbo_parameter_types";
/// gRPC metadata: the service version (Dubbo's `version`), empty by default.
pub(crate) const SERVICE_VERSION_METADATA: &str = "dubbo_service_version";
/// gRPC metadata: the service group (Dubbo's `group`), none by default.
pub(crate) const GROUP_METADATA: &str = "dubbo_group";

/// The Dubbo channel service.
pub(crate) struct DubboChannel {
    pool: MuxPool<mux::Dubbo>,
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
    async fn call(&self, mut req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let one_way = one_way(&mut req)?;
        let deadline = req.deadline;
        let mut frame = dubbo::Frame::request(0, request_body(req, &self.limits)?);
        frame.two_way = !one_way;
        match self.pool.call(frame, deadline).await {
            Ok(None) => Ok(RpcResponse::default()),
            Ok(Some(answer)) => from_frame(&answer, &self.limits),
            Err(e) => Err(mux_error("dubbo", &e)),
        }
    }
}

fn invalid(message: String) -> InvokeError {
    InvokeError::new(ErrorKind::InvalidArgument, message)
}

/// The Hessian2 body of the request for a call: the header strings, the application's
/// arguments as they are, and the attachments.
fn request_body(mut req: RpcRequest, limits: &Limits) -> Result<Bytes, InvokeError> {
    let text = |headers: &mut HeaderMap, key: &str| -> Result<String, InvokeError> {
        match headers.remove(key) {
            None => Ok(String::new()),
            Some(v) => v
                .to_str()
                .map(|s| s.trim().to_owned())
                .map_err(|_| invalid(format!("metadata {key} is not ASCII text"))),
        }
    };
    let types = text(&mut req.headers, PARAMETER_TYPES_METADATA)?;
    let version = text(&mut req.headers, SERVICE_VERSION_METADATA)?;
    let group = text(&mut req.headers, GROUP_METADATA)?;
    let desc = descriptor(&types).map_err(invalid)?;
    let count = dubbo::parameter_types(&desc)
        .map_err(|e| invalid(format!("metadata {PARAMETER_TYPES_METADATA}: {e}")))?
        .len();
    check_arguments(&req.data, count, limits)?;

    let mut head = Writer::new();
    head.write_str(dubbo::DEFAULT_DUBBO_VERSION);
    head.write_str(&req.id);
    head.write_str(&version);
    head.write_str(&req.method);
    head.write_str(&desc);
    let head = head.finish();

    let remaining_ms = req.remaining().as_millis().max(1);
    let mut attachments = vec![
        ("path".to_owned(), Value::string(req.id.clone())),
        ("interface".to_owned(), Value::string(req.id.clone())),
        ("version".to_owned(), Value::string(version)),
        (
            "timeout".to_owned(),
            Value::string(remaining_ms.to_string()),
        ),
    ];
    if !group.is_empty() {
        attachments.push(("group".to_owned(), Value::string(group)));
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
        r.read_value().map_err(|e| {
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

/// A JVM parameter descriptor from a descriptor or from comma-separated Java type names.
pub(crate) fn descriptor(types: &str) -> Result<String, String> {
    let types = types.trim();
    if types.is_empty() {
        return Ok(String::new());
    }
    if !types.contains(',') && !types.contains('.') && dubbo::parameter_types(types).is_ok() {
        return Ok(types.to_owned());
    }
    if types.contains(';') && dubbo::parameter_types(types).is_ok() {
        return Ok(types.to_owned());
    }
    let mut out = String::new();
    for name in types.split(',') {
        out.push_str(&java_descriptor(name.trim())?);
    }
    Ok(out)
}

/// The JVM descriptor of one Java type name (`int`, `java.lang.String`, `long[]`).
pub(crate) fn java_descriptor(name: &str) -> Result<String, String> {
    let mut base = name;
    let mut dims = 0;
    while let Some(inner) = base.strip_suffix("[]") {
        base = inner.trim_end();
        dims += 1;
    }
    let prim = match base {
        "boolean" => Some('Z'),
        "byte" => Some('B'),
        "char" => Some('C'),
        "short" => Some('S'),
        "int" => Some('I'),
        "long" => Some('J'),
        "float" => Some('F'),
        "double" => Some('D'),
        "void" => Some('V'),
        _ => None,
    };
    let valid_name = !base.is_empty()
        && base.split('.').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
        });
    let mut out = "[".repeat(dims);
    match prim {
        Some(c) => out.push(c),
        None if valid_name => {
            out.push('L');
            out.push_str(&base.replace('.', "/"));
            out.push(';');
        }
        None => return Err(format!("{name:?} is not a Java type name")),
    }
    Ok(out)
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
        if let Some((cause, rest)) = dubbo_error_cause(&message) {
            return Err(InvokeError::new(proxy_error_kind(cause), rest.to_owned()));
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
                status_name(answer.status)
            ),
        ));
    }
    let mut r = Reader::with_limits(answer.body.clone(), limits);
    let flag = r.read_int().map_err(|e| bad(e.to_string()))?;
    let (data, exception) = match flag {
        0 | 3 => (
            Bytes::new(),
            Some(r.read_value().map_err(|e| bad(e.to_string()))?),
        ),
        1 | 4 => {
            let start = r.position();
            r.read_value().map_err(|e| bad(e.to_string()))?;
            (answer.body.slice(start..r.position()), None)
        }
        2 | 5 => (Bytes::from_static(b"N"), None),
        other => return Err(bad(format!("unknown response flag {other}"))),
    };
    let mut headers = HeaderMap::new();
    if flag >= 3 {
        let attachments = r.read_value().map_err(|e| bad(e.to_string()))?;
        if let Value::Map(m) = attachments {
            for (k, v) in &m.entries {
                if let (Some(k), Some(v)) = (k.as_str(), v.as_str())
                    && let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()),
                        HeaderValue::from_str(v),
                    )
                {
                    headers.append(name, value);
                }
            }
        }
    }
    if let Some(e) = exception {
        return Err(InvokeError::new(
            ErrorKind::Unavailable,
            format!("upstream threw {}", describe_exception(&e)),
        ));
    }
    Ok(RpcResponse {
        content_type: String::new(),
        data,
        headers,
    })
}

/// `class: message` of a serialized Java `Throwable`.
pub(crate) fn describe_exception(v: &Value) -> String {
    let (class, message) = match v {
        Value::Object(o) => (
            o.class.to_string(),
            o.get("detailMessage").or_else(|| o.get("message")),
        ),
        Value::Map(m) => (
            m.type_name.as_deref().unwrap_or("exception").to_owned(),
            m.get_str("detailMessage").or_else(|| m.get_str("message")),
        ),
        Value::String(s) => return s.clone(),
        _ => ("exception".to_owned(), None),
    };
    match message.and_then(Value::as_str) {
        Some(m) => format!("{class}: {m}"),
        None => class,
    }
}

/// Dubbo's name of a response status.
pub(crate) fn status_name(status: u8) -> &'static str {
    match status {
        dubbo::status::OK => "ok",
        dubbo::status::CLIENT_TIMEOUT => "client timeout",
        dubbo::status::SERVER_TIMEOUT => "server timeout",
        dubbo::status::BAD_REQUEST => "bad request",
        dubbo::status::BAD_RESPONSE => "bad response",
        dubbo::status::SERVICE_NOT_FOUND => "service not found",
        dubbo::status::SERVICE_ERROR => "service error",
        dubbo::status::SERVER_ERROR => "server error",
        dubbo::status::CLIENT_ERROR => "client error",
        dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR => "server thread pool exhausted",
        _ => "not a known status",
    }
}

#[cfg(test)]
mod tests {
    use outrigger_codec::hessian::Object;
    use tokio::time::{Duration, Instant};

    use super::*;

    fn req(types: &str, data: Bytes) -> RpcRequest {
        let mut headers = HeaderMap::new();
        headers.insert(
            PARAMETER_TYPES_METADATA,
            HeaderValue::from_str(types).expect("ascii"),
        );
        headers.insert(SERVICE_VERSION_METADATA, HeaderValue::from_static("1.0.0"));
        headers.insert(GROUP_METADATA, HeaderValue::from_static("blue"));
        headers.insert("x-tenant", HeaderValue::from_static("t1"));
        RpcRequest {
            id: "org.apache.dubbo.samples.api.GreetingsService".into(),
            method: "sayHello".into(),
            content_type: String::new(),
            data,
            verb: http::Method::GET,
            query: String::new(),
            headers,
            deadline: Instant::now() + Duration::from_millis(800),
        }
    }

    fn hessian(values: &[Value]) -> Bytes {
        let mut w = Writer::new();
        values.iter().for_each(|v| w.write(v));
        w.finish()
    }

    #[test]
    fn descriptors_from_java_names() {
        let cases = [
            ("", Ok("")),
            ("Ljava/lang/String;I", Ok("Ljava/lang/String;I")),
            ("IJ", Ok("IJ")),
            ("java.lang.String", Ok("Ljava/lang/String;")),
            ("java.lang.String, int", Ok("Ljava/lang/String;I")),
            ("long[], java.util.Map[][]", Ok("[J[[Ljava/util/Map;")),
            ("int", Ok("I")),
        ];
        for (input, want) in cases {
            assert_eq!(
                descriptor(input).as_deref(),
                want.map(str::to_owned).as_deref(),
                "{input}"
            );
        }
        assert!(descriptor("java lang").is_err());
        assert!(descriptor("a,,b").is_err());
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
