//! Hessian2 bodies of Dubbo requests and responses, laid out as Dubbo's
//! `DecodeableRpcInvocation` and `DecodeableRpcResult` read them.
//!
//! Request: dubbo version, service path, service version, method name, parameter-type
//! descriptor (JVM form, `Ljava/lang/String;I`), one value per parameter, attachments map.
//! Response (status OK): a flag int — 0 exception, 1 value, 2 null, and 3/4/5 the same
//! followed by an attachments map — then the value or exception. A response with any other
//! status carries the error message as a Hessian string instead.

use bytes::Bytes;

use super::{Frame, SERIALIZATION_HESSIAN2, status};
use crate::Limits;
use crate::hessian::{self, Reader, Value, Writer};

/// The Dubbo protocol version a Java 2.7+/3.x consumer sends; peers that see it answer with
/// response attachments (flags 3–5).
pub const DEFAULT_DUBBO_VERSION: &str = "2.0.2";
/// The method name of a generic invocation.
pub const GENERIC_INVOKE: &str = "$invoke";

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
    /// The body flag this result is written with.
    pub fn flag(&self) -> i32 {
        let base = match self.outcome {
            Outcome::Exception(_) => 0,
            Outcome::Value(_) => 1,
            Outcome::Null => 2,
        };
        if self.attachments.is_some() {
            base + 3
        } else {
            base
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
            0 | 3 => Outcome::Exception(r.read_value()?),
            1 | 4 => Outcome::Value(r.read_value()?),
            2 | 5 => Outcome::Null,
            flag => return Err(BodyError::BadResponseFlag(flag)),
        };
        let attachments = if flag >= 3 {
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
    use super::*;

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
