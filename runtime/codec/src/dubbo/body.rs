//! Hessian2 bodies of Dubbo requests and responses, laid out as Dubbo's
//! `DecodeableRpcInvocation` and `DecodeableRpcResult` read them.
//!
//! Request: dubbo version, service path, service version, method name, parameter-type
//! descriptor (JVM form, `Ljava/lang/String;I`), one value per parameter, attachments map.
//! Response (status OK): a flag int — 0 exception, 1 value, 2 null, and 3/4/5 the same
//! followed by an attachments map — then the value or exception. A response with any other
//! status carries the error message as a Hessian string instead.

use std::time::Duration;

use bytes::Bytes;

use super::{Frame, SERIALIZATION_HESSIAN2, status};
use crate::Limits;
use crate::hessian::{self, Reader, Value, Writer};

/// The Dubbo protocol version a Java 2.7+/3.x consumer sends; peers that see it answer with
/// response attachments (flags 3–5).
pub const DEFAULT_DUBBO_VERSION: &str = "2.0.2";
/// The method name of a generic invocation.
pub const GENERIC_INVOKE: &str = "$invoke";
/// The request attachment carrying the consumer's timeout in milliseconds (a decimal string
/// from Java consumers; some clients send an int).
pub const TIMEOUT_ATTACHMENT: &str = "timeout";

/// Response body flag: the method threw; the serialized `Throwable` follows.
pub const RESPONSE_WITH_EXCEPTION: i32 = 0;
/// Response body flag: the method returned; the value follows.
pub const RESPONSE_VALUE: i32 = 1;
/// Response body flag: the method returned null; nothing follows.
pub const RESPONSE_NULL_VALUE: i32 = 2;
/// [`RESPONSE_WITH_EXCEPTION`], then an attachments map.
pub const RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS: i32 = 3;
/// [`RESPONSE_VALUE`], then an attachments map.
pub const RESPONSE_VALUE_WITH_ATTACHMENTS: i32 = 4;
/// [`RESPONSE_NULL_VALUE`], then an attachments map.
pub const RESPONSE_NULL_VALUE_WITH_ATTACHMENTS: i32 = 5;

/// Why a Dubbo body could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The Hessian bytes are malformed.
    #[error("malformed dubbo body")]
    Hessian(#[from] hessian::Error),
    /// The frame uses a serialization other than Hessian2.
    #[error("unsupported dubbo serialization id {0} (only hessian2, id 2, is supported)")]
    Serialization(u8),
    /// The parameter-type descriptor is not a JVM descriptor list.
    #[error("bad dubbo parameter-type descriptor {desc:?} at character {at}")]
    BadDescriptor {
        /// The descriptor.
        desc: String,
        /// Where parsing failed.
        at: usize,
    },
    /// The attachments are not a map with string keys.
    #[error("dubbo attachments are not a map with string keys")]
    BadAttachments,
    /// A response flag outside 0–5.
    #[error("unknown dubbo response flag {0}")]
    BadResponseFlag(i32),
    /// A result was asked of a response whose status is not OK (its body is an error
    /// message; see [`Reply::decode`]).
    #[error("dubbo response status {0} is not OK, so its body holds no result")]
    NotOk(u8),
}

/// The routing fields at the start of a request body, read without touching the arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The Dubbo protocol version the consumer speaks (e.g. `2.0.2`).
    pub dubbo_version: String,
    /// The service interface path, e.g. `org.apache.dubbo.samples.api.GreetingsService`.
    pub service_path: String,
    /// The service version, e.g. `1.0.0` (empty when unset).
    pub service_version: String,
    /// The method name (`$invoke` for a generic call).
    pub method: String,
}

impl Target {
    /// Reads the routing fields of a request frame's body.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<Self, BodyError> {
        check_serialization(frame)?;
        let mut r = Reader::with_limits(frame.body.clone(), limits);
        read_target(&mut r)
    }
}

/// A decoded request body.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcInvocation {
    /// The Dubbo protocol version the consumer speaks.
    pub dubbo_version: String,
    /// The service interface path.
    pub service_path: String,
    /// The service version (empty when unset).
    pub service_version: String,
    /// The method name.
    pub method: String,
    /// JVM descriptors of the parameter types, concatenated (`Ljava/lang/String;I`).
    pub parameter_types_desc: String,
    /// One value per parameter. Back-references ([`Value::Ref`]) count across all of them and
    /// the attachments; see [`hessian::resolve_refs`].
    pub args: Vec<Value>,
    /// Attachments (`path`, `interface`, `version`, `group`, `timeout`, …), in wire order.
    pub attachments: Vec<(String, Value)>,
}

impl RpcInvocation {
    /// Parses a request frame's body.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<Self, BodyError> {
        check_serialization(frame)?;
        let mut r = Reader::with_limits(frame.body.clone(), limits);
        let target = read_target(&mut r)?;
        let parameter_types_desc = r.read_string()?;
        let count = parameter_types(&parameter_types_desc)?.len();
        let mut args = Vec::with_capacity(count.min(frame.body.len()));
        for _ in 0..count {
            args.push(r.read_value()?);
        }
        // Some encoders omit an empty attachments map.
        let attachments = if r.is_empty() {
            Vec::new()
        } else {
            string_map(r.read_value()?)?
        };
        Ok(Self {
            dubbo_version: target.dubbo_version,
            service_path: target.service_path,
            service_version: target.service_version,
            method: target.method,
            parameter_types_desc,
            args,
            attachments,
        })
    }

    /// Encodes the body of a request frame ([`Frame::request`]).
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.write_str(&self.dubbo_version);
        w.write_str(&self.service_path);
        w.write_str(&self.service_version);
        w.write_str(&self.method);
        w.write_str(&self.parameter_types_desc);
        for arg in &self.args {
            w.write(arg);
        }
        w.write(&Value::string_map(
            self.attachments.iter().map(|(k, v)| (k.clone(), v.clone())),
        ));
        w.finish()
    }

    /// A generic call, `$invoke(String method, String[] parameterTypes, Object[] args)`, of
    /// `method` on `service_path` — how any caller reaches a Dubbo service without its Java
    /// interface. `parameter_types` are Java class names (`java.lang.String`, `int`, …).
    /// Attachments carry `path`, `interface`, `version` and `generic=true`, as Dubbo's
    /// `GenericService` consumer sends them.
    pub fn generic(
        service_path: &str,
        service_version: &str,
        method: &str,
        parameter_types: &[String],
        args: Vec<Value>,
    ) -> Self {
        let types = parameter_types
            .iter()
            .map(|t| Value::String(t.clone()))
            .collect();
        Self {
            dubbo_version: DEFAULT_DUBBO_VERSION.to_owned(),
            service_path: service_path.to_owned(),
            service_version: service_version.to_owned(),
            method: GENERIC_INVOKE.to_owned(),
            parameter_types_desc: "Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;"
                .to_owned(),
            args: vec![
                Value::string(method),
                Value::typed_list("[string", types),
                Value::typed_list("[object", args),
            ],
            attachments: vec![
                ("path".to_owned(), Value::string(service_path)),
                ("interface".to_owned(), Value::string(service_path)),
                ("version".to_owned(), Value::string(service_version)),
                ("generic".to_owned(), Value::string("true")),
            ],
        }
    }

    /// The attachment named `key`.
    pub fn attachment(&self, key: &str) -> Option<&Value> {
        self.attachments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// What a call produced.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The method returned a value (flag 1 or 4).
    Value(Value),
    /// The method returned null (flag 2 or 5).
    Null,
    /// The method threw; the value is the serialized `Throwable` (flag 0 or 3).
    Exception(Value),
}

/// A decoded OK response body.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcResult {
    /// Value, null or exception.
    pub outcome: Outcome,
    /// Response attachments (flags 3–5), or `None` for a peer that sends none (flags 0–2).
    /// Send them only to consumers that [`supports_response_attachments`].
    pub attachments: Option<Vec<(String, Value)>>,
}

impl RpcResult {
    /// The body flag this result is written with (one of the `RESPONSE_*` constants).
    pub fn flag(&self) -> i32 {
        match (&self.outcome, self.attachments.is_some()) {
            (Outcome::Exception(_), false) => RESPONSE_WITH_EXCEPTION,
            (Outcome::Value(_), false) => RESPONSE_VALUE,
            (Outcome::Null, false) => RESPONSE_NULL_VALUE,
            (Outcome::Exception(_), true) => RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS,
            (Outcome::Value(_), true) => RESPONSE_VALUE_WITH_ATTACHMENTS,
            (Outcome::Null, true) => RESPONSE_NULL_VALUE_WITH_ATTACHMENTS,
        }
    }

    /// Encodes the body of an OK response frame.
    pub fn encode(&self) -> Bytes {
        let mut w = Writer::new();
        w.write_int(self.flag());
        match &self.outcome {
            Outcome::Value(v) | Outcome::Exception(v) => w.write(v),
            Outcome::Null => {}
        }
        if let Some(attachments) = &self.attachments {
            w.write(&Value::string_map(
                attachments.iter().map(|(k, v)| (k.clone(), v.clone())),
            ));
        }
        w.finish()
    }

    fn decode_body(body: Bytes, limits: &Limits) -> Result<Self, BodyError> {
        let mut r = Reader::with_limits(body, limits);
        let flag = r.read_int()?;
        let outcome = match flag {
            RESPONSE_WITH_EXCEPTION | RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS => {
                Outcome::Exception(r.read_value()?)
            }
            RESPONSE_VALUE | RESPONSE_VALUE_WITH_ATTACHMENTS => Outcome::Value(r.read_value()?),
            RESPONSE_NULL_VALUE | RESPONSE_NULL_VALUE_WITH_ATTACHMENTS => Outcome::Null,
            flag => return Err(BodyError::BadResponseFlag(flag)),
        };
        let attachments = if flag >= RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS {
            Some(string_map(r.read_value()?)?)
        } else {
            None
        };
        Ok(Self {
            outcome,
            attachments,
        })
    }
}

/// What a call produced, with a returned value left as the bytes the provider wrote.
#[derive(Clone, Debug, PartialEq)]
pub enum RawOutcome {
    /// The method returned (flags 1, 2, 4, 5): the value's Hessian2 bytes, class definitions
    /// included, as a slice of the body — a complete Hessian2 stream of one value, to hand on
    /// without re-encoding. A null result (flags 2 and 5) is `N`.
    Value(Bytes),
    /// The method threw (flags 0 and 3): the serialized `Throwable`, decoded (see
    /// [`describe_exception`](super::describe_exception)).
    Exception(Value),
}

/// An OK response body read the way a pass-through caller needs it: the value as raw bytes,
/// the attachments as text. [`RpcResult`] decodes the same body into values instead.
#[derive(Clone, Debug, PartialEq)]
pub struct RawResult {
    /// The body flag, one of the `RESPONSE_*` constants.
    pub flag: i32,
    /// Value bytes or exception.
    pub outcome: RawOutcome,
    /// The response attachments whose key and value are both strings, in wire order (flags
    /// 3–5). Other entries, and attachments that are not a map, are left out; flags 0–2
    /// carry none.
    pub attachments: Vec<(String, String)>,
}

impl RawResult {
    /// Reads an OK response frame's body. Bytes after the attachments are ignored, as Dubbo
    /// ignores them. Errors: a serialization other than Hessian2, a status other than OK
    /// ([`BodyError::NotOk`]), an unknown flag, or malformed Hessian where the flag, the
    /// value or exception, or the attachments should be.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<Self, BodyError> {
        check_serialization(frame)?;
        if frame.status != status::OK {
            return Err(BodyError::NotOk(frame.status));
        }
        let mut r = Reader::with_limits(frame.body.clone(), limits);
        let flag = r.read_int()?;
        let outcome = match flag {
            RESPONSE_WITH_EXCEPTION | RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS => {
                RawOutcome::Exception(r.read_value()?)
            }
            RESPONSE_VALUE | RESPONSE_VALUE_WITH_ATTACHMENTS => {
                // Start after the flag, so class definitions the value needs are in the slice.
                let start = r.position();
                r.skip_value()?;
                RawOutcome::Value(frame.body.slice(start..r.position()))
            }
            RESPONSE_NULL_VALUE | RESPONSE_NULL_VALUE_WITH_ATTACHMENTS => {
                RawOutcome::Value(Bytes::from_static(b"N"))
            }
            flag => return Err(BodyError::BadResponseFlag(flag)),
        };
        let mut attachments = Vec::new();
        if flag >= RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS
            && let Value::Map(m) = r.read_value()?
        {
            attachments = m
                .entries
                .into_iter()
                .filter_map(|(k, v)| match (k, v) {
                    (Value::String(k), Value::String(v)) => Some((k, v)),
                    _ => None,
                })
                .collect();
        }
        Ok(Self {
            flag,
            outcome,
            attachments,
        })
    }
}

/// The timeout a consumer gave a request, from its [`TIMEOUT_ATTACHMENT`]: a decimal string
/// or a Hessian int/long of milliseconds, when positive.
///
/// Only what leads to the attachments is decoded: the header strings, then the arguments
/// are stepped over without being built ([`Reader::skip_value`]), then the attachments map.
/// `None` for anything else: not a two-way or one-way request (responses, events), not
/// Hessian2, malformed or truncated Hessian, no attachments, no `timeout`, or a value that is
/// not a positive whole number of milliseconds.
pub fn request_timeout(frame: &Frame, limits: &Limits) -> Option<Duration> {
    if !frame.is_request || frame.event || check_serialization(frame).is_err() {
        return None;
    }
    let mut r = Reader::with_limits(frame.body.clone(), limits);
    // dubbo version, service path, service version, method.
    for _ in 0..4 {
        r.read_string_or_null().ok()?;
    }
    let desc = r.read_string().ok()?;
    let count = parameter_types(&desc).ok()?.len();
    for _ in 0..count {
        r.skip_value().ok()?;
    }
    let Value::Map(attachments) = r.read_value().ok()? else {
        return None;
    };
    let ms = match attachments.get_str(TIMEOUT_ATTACHMENT)? {
        Value::String(s) => s.parse::<i64>().ok()?,
        v => v.as_i64()?,
    };
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis)
}

/// A decoded response.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Status OK: the call's result.
    Result(RpcResult),
    /// Any other status, with the message the peer sent.
    Error {
        /// One of [`status`].
        status: u8,
        /// The peer's error message.
        message: String,
    },
}

impl Reply {
    /// Parses a response frame's body according to its status.
    pub fn decode(frame: &Frame, limits: &Limits) -> Result<Self, BodyError> {
        check_serialization(frame)?;
        if frame.status == status::OK {
            RpcResult::decode_body(frame.body.clone(), limits).map(Reply::Result)
        } else {
            let mut r = Reader::with_limits(frame.body.clone(), limits);
            let message = if r.is_empty() {
                String::new()
            } else {
                r.read_string()?
            };
            Ok(Reply::Error {
                status: frame.status,
                message,
            })
        }
    }
}

/// Splits a concatenated JVM parameter descriptor (`Ljava/lang/String;[I`) into one
/// descriptor per parameter.
pub fn parameter_types(desc: &str) -> Result<Vec<&str>, BodyError> {
    let bytes = desc.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let bad = |at| BodyError::BadDescriptor {
        desc: desc.to_owned(),
        at,
    };
    while i < bytes.len() {
        let start = i;
        while bytes.get(i) == Some(&b'[') {
            i += 1;
        }
        match bytes.get(i) {
            Some(b'V' | b'Z' | b'B' | b'C' | b'D' | b'F' | b'I' | b'J' | b'S') => i += 1,
            Some(b'L') => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b';')
                    .ok_or_else(|| bad(i))?;
                i += end + 1;
            }
            _ => return Err(bad(i)),
        }
        out.push(&desc[start..i]);
    }
    Ok(out)
}

/// Whether a consumer announcing Dubbo protocol version `version` understands response
/// attachments (flags 3–5). As Apache Dubbo 3's `Version.isSupportResponseAttachment`:
/// protocol versions 2.0.2 to 2.0.99 do; framework versions sent by old consumers
/// (`2.4.10`, `2.6.2`) and empty ones do not.
pub fn supports_response_attachments(version: &str) -> bool {
    let v = int_version(version);
    (2_000_200..=2_009_900).contains(&v)
}

/// Dubbo's `Version.getIntVersion`: two decimal digits per dot-separated part, each part's
/// leading digits only; three-part versions gain a trailing `00`.
fn int_version(version: &str) -> i64 {
    let parts: Vec<&str> = version.split('.').collect();
    let n = parts.len();
    let mut v: i64 = 0;
    for (i, part) in parts.iter().enumerate() {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(d) = digits.parse::<i64>() {
            let scale = 100i64.checked_pow((n - i - 1) as u32).unwrap_or(0);
            v = v.saturating_add(d.saturating_mul(scale));
        }
    }
    if n == 3 { v.saturating_mul(100) } else { v }
}

fn check_serialization(frame: &Frame) -> Result<(), BodyError> {
    if frame.serialization == SERIALIZATION_HESSIAN2 {
        Ok(())
    } else {
        Err(BodyError::Serialization(frame.serialization))
    }
}

fn read_target(r: &mut Reader) -> Result<Target, BodyError> {
    Ok(Target {
        dubbo_version: r.read_string()?,
        service_path: r.read_string()?,
        service_version: r.read_string()?,
        method: r.read_string()?,
    })
}

fn string_map(v: Value) -> Result<Vec<(String, Value)>, BodyError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Map(m) => m
            .entries
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(k) => Ok((k, v)),
                _ => Err(BodyError::BadAttachments),
            })
            .collect(),
        _ => Err(BodyError::BadAttachments),
    }
}

#[cfg(test)]
mod tests {
    use crate::hessian::{Map, Object};

    use super::*;

    fn hessian(values: &[Value]) -> Bytes {
        let mut w = Writer::new();
        values.iter().for_each(|v| w.write(v));
        w.finish()
    }

    fn ok_response(body: Bytes) -> Frame {
        Frame::request(3, Bytes::new()).response(status::OK, body)
    }

    fn exception() -> Value {
        Value::Object(Object::new(
            "java.lang.IllegalStateException",
            [("detailMessage", Value::string("boom"))],
        ))
    }

    #[test]
    fn raw_results() {
        let served_by = || {
            Some(vec![
                ("x-served-by".to_owned(), Value::string("p1")),
                ("n".to_owned(), Value::Int(1)),
                ("k".to_owned(), Value::string("v")),
            ])
        };
        let text = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        // An object value brings its class definition along in the slice.
        let point = Value::Object(Object::new(
            "com.example.Point",
            [("x", Value::Int(1)), ("y", Value::Int(2))],
        ));
        let cases = [
            (
                Outcome::Value(Value::string("hello world")),
                None,
                RESPONSE_VALUE,
                RawOutcome::Value(hessian(&[Value::string("hello world")])),
                vec![],
            ),
            (
                Outcome::Value(point.clone()),
                served_by(),
                RESPONSE_VALUE_WITH_ATTACHMENTS,
                RawOutcome::Value(hessian(std::slice::from_ref(&point))),
                text(&[("x-served-by", "p1"), ("k", "v")]),
            ),
            (
                Outcome::Value(Value::Null),
                None,
                RESPONSE_VALUE,
                RawOutcome::Value(Bytes::from_static(b"N")),
                vec![],
            ),
            (
                Outcome::Null,
                None,
                RESPONSE_NULL_VALUE,
                RawOutcome::Value(Bytes::from_static(b"N")),
                vec![],
            ),
            (
                Outcome::Null,
                served_by(),
                RESPONSE_NULL_VALUE_WITH_ATTACHMENTS,
                RawOutcome::Value(Bytes::from_static(b"N")),
                text(&[("x-served-by", "p1"), ("k", "v")]),
            ),
            (
                Outcome::Exception(exception()),
                None,
                RESPONSE_WITH_EXCEPTION,
                RawOutcome::Exception(exception()),
                vec![],
            ),
            (
                Outcome::Exception(exception()),
                served_by(),
                RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS,
                RawOutcome::Exception(exception()),
                text(&[("x-served-by", "p1"), ("k", "v")]),
            ),
        ];
        let limits = Limits::default();
        for (outcome, attachments, flag, want, want_attachments) in cases {
            let result = RpcResult {
                outcome,
                attachments,
            };
            assert_eq!(result.flag(), flag);
            let frame = ok_response(result.encode());
            let raw = RawResult::decode(&frame, &limits).expect("decodes");
            assert_eq!(raw.flag, flag, "{result:?}");
            assert_eq!(raw.outcome, want, "{result:?}");
            assert_eq!(raw.attachments, want_attachments, "{result:?}");
            // A returned value is a slice of the body, not a copy, and reads back alone.
            if let (RawOutcome::Value(bytes), Outcome::Value(v)) = (&raw.outcome, &result.outcome) {
                let body = frame.body.as_ptr_range();
                assert!(body.contains(&bytes.as_ptr()), "{result:?}");
                let mut r = Reader::new(bytes.clone());
                assert_eq!(&r.read_value().expect("one value"), v);
                assert!(r.is_empty());
            }
        }
    }

    #[test]
    fn raw_result_attachment_shapes_and_trailing_bytes() {
        let limits = Limits::default();
        let flag = |f: i32| Value::Int(f);
        let odd_keys = Value::Map(Map {
            type_name: Some("java.util.HashMap".into()),
            entries: vec![
                (Value::Int(1), Value::string("int key")),
                (Value::string("a"), Value::string("b")),
                (Value::string("null"), Value::Null),
            ],
        });
        // A body, then the attachments read from it.
        type Case<'a> = (&'a [Value], Vec<(String, String)>);
        let cases: &[Case<'_>] = &[
            // Attachments that are not a map are no attachments.
            (&[flag(5), Value::Null], vec![]),
            (&[flag(5), Value::string("x")], vec![]),
            (
                &[flag(5), odd_keys.clone()],
                vec![("a".to_owned(), "b".to_owned())],
            ),
            // Bytes after the end are ignored, as are attachments under flags 0–2.
            (&[flag(2), odd_keys.clone()], vec![]),
            (
                &[flag(5), odd_keys, Value::string("trailing")],
                vec![("a".to_owned(), "b".to_owned())],
            ),
        ];
        for (body, want) in cases {
            let raw = RawResult::decode(&ok_response(hessian(body)), &limits).expect("decodes");
            assert_eq!(&raw.attachments, want, "{body:?}");
        }
    }

    #[test]
    fn raw_result_rejects_malformed() {
        let limits = Limits::default();
        let flag = |f: i32| Value::Int(f);
        let mut deep = vec![0x90 + 1]; // flag 1
        deep.extend(std::iter::repeat_n(b'W', 200));
        let cases: Vec<(Frame, &str)> = vec![
            (ok_response(Bytes::new()), "empty body"),
            (ok_response(hessian(&[flag(6)])), "flag 6"),
            (ok_response(hessian(&[flag(-1)])), "flag -1"),
            (ok_response(hessian(&[Value::string("1")])), "string flag"),
            (ok_response(hessian(&[Value::Long(1)])), "long flag"),
            (ok_response(hessian(&[flag(1)])), "no value"),
            (ok_response(hessian(&[flag(0)])), "no exception"),
            (
                ok_response(hessian(&[flag(4), Value::Int(1)])),
                "no attachments",
            ),
            (
                ok_response(hessian(&[flag(3), exception()])),
                "exception without attachments",
            ),
            (
                ok_response(Bytes::from_static(b"\x91S\x00\x05ab")),
                "truncated",
            ),
            (
                ok_response(Bytes::from_static(b"\x91\x60")),
                "undefined class",
            ),
            (ok_response(Bytes::from(deep)), "too deep"),
            (
                Frame::request(3, Bytes::new()).error_response(status::SERVICE_ERROR, "no method"),
                "error status",
            ),
            (
                Frame {
                    serialization: 3,
                    ..ok_response(hessian(&[flag(2)]))
                },
                "not hessian2",
            ),
        ];
        for (frame, why) in cases {
            assert!(RawResult::decode(&frame, &limits).is_err(), "{why}");
        }
        let error = Frame::request(3, Bytes::new()).error_response(status::CLIENT_TIMEOUT, "x");
        assert_eq!(
            RawResult::decode(&error, &limits),
            Err(BodyError::NotOk(status::CLIENT_TIMEOUT))
        );
        assert_eq!(
            RawResult::decode(&ok_response(hessian(&[flag(9)])), &limits),
            Err(BodyError::BadResponseFlag(9))
        );
    }

    fn invocation(args: Vec<Value>, desc: &str, attachments: Vec<(&str, Value)>) -> RpcInvocation {
        RpcInvocation {
            dubbo_version: DEFAULT_DUBBO_VERSION.into(),
            service_path: "org.apache.dubbo.samples.api.GreetingsService".into(),
            service_version: "1.0.0".into(),
            method: "sayHello".into(),
            parameter_types_desc: desc.into(),
            args,
            attachments: attachments
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }
    }

    fn with_timeout(timeout: Value) -> Frame {
        let inv = invocation(
            vec![Value::string("world")],
            "Ljava/lang/String;",
            vec![("path", Value::string("p")), ("timeout", timeout)],
        );
        Frame::request(1, inv.encode())
    }

    #[test]
    fn request_timeouts() {
        let ms = |n| Some(Duration::from_millis(n));
        let cases = [
            (Value::string("800"), ms(800)),
            (Value::string("+5"), ms(5)),
            (Value::Int(300), ms(300)),
            (Value::Long(5_000_000_000), ms(5_000_000_000)),
            (Value::string("0"), None),
            (Value::string("-1"), None),
            (Value::Int(0), None),
            (Value::Int(-5), None),
            (Value::Long(i64::MIN), None),
            (Value::string(""), None),
            (Value::string(" 800"), None),
            (Value::string("800ms"), None),
            (Value::string("1.5"), None),
            (Value::string("99999999999999999999"), None),
            (Value::Double(800.0), None),
            (Value::Bool(true), None),
            (Value::Null, None),
            (Value::Ref(0), None),
        ];
        let limits = Limits::default();
        for (timeout, want) in cases {
            assert_eq!(
                request_timeout(&with_timeout(timeout.clone()), &limits),
                want,
                "{timeout:?}"
            );
        }
    }

    #[test]
    fn request_timeout_steps_over_any_arguments() {
        let limits = Limits::default();
        let generic = RpcInvocation::generic(
            "com.example.Svc",
            "1.0",
            "find",
            &["com.example.Query".to_owned(), "int".to_owned()],
            vec![
                Value::Object(Object::new(
                    "com.example.Query",
                    [
                        ("name", Value::string("q")),
                        ("tags", Value::typed_list("[string", vec![])),
                    ],
                )),
                Value::Int(7),
            ],
        );
        let mut generic_with = generic.clone();
        generic_with
            .attachments
            .push(("timeout".to_owned(), Value::string("1500")));
        let mut one_way = Frame::request(2, generic_with.encode());
        one_way.two_way = false;
        let bytes_arg = invocation(
            vec![
                Value::Binary(Bytes::from(vec![7u8; 70_000])),
                Value::string("é😀"),
            ],
            "[BLjava/lang/String;",
            vec![("timeout", Value::string("42"))],
        );
        let cases = [
            (Frame::request(1, generic_with.encode()), Some(1500)),
            (one_way, Some(1500)),
            (Frame::request(1, generic.encode()), None),
            (Frame::request(1, bytes_arg.encode()), Some(42)),
            // The first `timeout` counts; names are case-sensitive.
            (
                Frame::request(
                    1,
                    invocation(
                        vec![],
                        "",
                        vec![
                            ("Timeout", Value::string("1")),
                            ("timeout", Value::string("2")),
                            ("timeout", Value::string("3")),
                        ],
                    )
                    .encode(),
                ),
                Some(2),
            ),
        ];
        for (frame, want) in cases {
            assert_eq!(
                request_timeout(&frame, &limits),
                want.map(Duration::from_millis)
            );
        }
    }

    #[test]
    fn request_timeout_is_none_for_anything_malformed() {
        let limits = Limits::default();
        let good = with_timeout(Value::string("800"));
        assert_eq!(
            request_timeout(&good, &limits),
            Some(Duration::from_millis(800))
        );
        // Every strict prefix of the body lacks a complete attachments map.
        for cut in 0..good.body.len() {
            let frame = Frame::request(1, good.body.slice(..cut));
            assert_eq!(request_timeout(&frame, &limits), None, "cut at {cut}");
        }
        let mut head = Writer::new();
        for s in ["2.0.2", "svc", "1.0", "m", "Ljava/lang/String;I"] {
            head.write_str(s);
        }
        head.write_str("only one argument");
        head.write(&Value::string_map([("timeout", Value::string("5"))]));
        let too_few_args = head.finish();
        let mut no_map = Writer::new();
        for s in ["2.0.2", "svc", "1.0", "m", ""] {
            no_map.write_str(s);
        }
        let no_map = no_map.finish();
        let mut list_not_map = Writer::new();
        for s in ["2.0.2", "svc", "1.0", "m", ""] {
            list_not_map.write_str(s);
        }
        list_not_map.write(&Value::typed_list(
            "[string",
            vec![Value::string("timeout")],
        ));
        let list_not_map = list_not_map.finish();
        let cases = [
            (good.response(status::OK, good.body.clone()), "a response"),
            (
                Frame {
                    event: true,
                    ..good.clone()
                },
                "an event",
            ),
            (Frame::heartbeat(1), "a heartbeat"),
            (
                Frame {
                    serialization: 6,
                    ..good.clone()
                },
                "not hessian2",
            ),
            (Frame::request(1, Bytes::new()), "empty body"),
            (
                Frame::request(1, Bytes::from_static(b"\xff\xff")),
                "garbage",
            ),
            (Frame::request(1, hessian(&[Value::Int(1)])), "int header"),
            (
                Frame::request(1, too_few_args),
                "fewer arguments than types",
            ),
            (Frame::request(1, no_map), "no attachments"),
            (Frame::request(1, list_not_map), "attachments not a map"),
            (
                Frame::request(
                    1,
                    invocation(vec![], "Q", vec![("timeout", Value::string("5"))]).encode(),
                ),
                "bad descriptor",
            ),
        ];
        for (frame, why) in cases {
            assert_eq!(request_timeout(&frame, &limits), None, "{why}");
        }
        // Nesting past the limit in an argument is malformed too.
        let shallow = Limits {
            max_hessian_depth: 2,
            ..Limits::default()
        };
        let nested = invocation(
            vec![Value::typed_list(
                "[object",
                vec![Value::typed_list(
                    "[object",
                    vec![Value::typed_list("[object", vec![])],
                )],
            )],
            "[Ljava/lang/Object;",
            vec![("timeout", Value::string("5"))],
        );
        let frame = Frame::request(1, nested.encode());
        assert_eq!(request_timeout(&frame, &shallow), None);
        assert_eq!(
            request_timeout(&frame, &limits),
            Some(Duration::from_millis(5))
        );
    }

    #[test]
    fn descriptors() {
        assert_eq!(
            parameter_types("Ljava/lang/String;[Ljava/lang/String;[Ljava/lang/Object;")
                .expect("valid"),
            vec![
                "Ljava/lang/String;",
                "[Ljava/lang/String;",
                "[Ljava/lang/Object;"
            ]
        );
        assert_eq!(
            parameter_types("IJZ[[D").expect("valid"),
            vec!["I", "J", "Z", "[[D"]
        );
        assert_eq!(parameter_types("").expect("valid"), Vec::<&str>::new());
        assert!(parameter_types("Ljava/lang/String").is_err());
        assert!(parameter_types("Q").is_err());
        assert!(parameter_types("[").is_err());
    }

    #[test]
    fn response_attachment_versions() {
        for (v, want) in [
            ("2.0.2", true),
            ("2.0.99", true),
            ("2.0.1", false),
            ("2.4.10", false),
            ("2.6.2", false),
            ("2.7.8", false),
            ("", false),
            ("garbage", false),
        ] {
            assert_eq!(supports_response_attachments(v), want, "{v}");
        }
    }
}
