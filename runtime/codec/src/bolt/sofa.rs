//! What SOFARPC puts in a Bolt request besides the content: the header names that carry the
//! target service and method, and the class of a request's content. The header map is
//! readable without deserializing the content, so routing on service and method never
//! touches the (Hessian or protobuf) `SofaRequest`.

use bytes::Bytes;

use super::HeaderMap;
use crate::hessian::{Reader, Value};

/// Header carrying the target service, `interface:version[:uniqueId]` (SOFARPC's
/// `serverSignature`), as SOFARPC's Hessian path and sofa-bolt-node write it.
pub const SERVICE: &str = "service";
/// Header SOFARPC's protobuf path uses for the target service
/// (`RemotingConstants.HEAD_TARGET_SERVICE`).
pub const TARGET_SERVICE: &str = "sofa_head_target_service";
/// Header carrying the method name (`RemotingConstants.HEAD_METHOD_NAME`).
pub const METHOD_NAME: &str = "sofa_head_method_name";
/// The class of the content SOFARPC sends in a request.
pub const DEFAULT_REQUEST_CLASS: &str = "com.alipay.sofa.rpc.core.request.SofaRequest";

/// The target service of a request: the [`SERVICE`] header, else [`TARGET_SERVICE`]. A
/// header that is missing, null or not UTF-8 counts as absent.
pub fn service(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_str(SERVICE)
        .or_else(|| headers.get_str(TARGET_SERVICE))
}

/// The method name of a request: the [`METHOD_NAME`] header, if present, non-null and UTF-8.
pub fn method(headers: &HeaderMap) -> Option<&str> {
    headers.get_str(METHOD_NAME)
}

/// The method name inside a request's Hessian [`DEFAULT_REQUEST_CLASS`] content (its
/// `methodName` field), for clients that send no [`METHOD_NAME`] header (sofa-rpc-node). Only
/// the request object is decoded, not the arguments after it; `None` for another class or
/// codec, or content that does not decode.
pub fn content_method(frame: &super::Frame) -> Option<String> {
    if frame.codec != super::CODEC_HESSIAN2 || frame.class != DEFAULT_REQUEST_CLASS.as_bytes() {
        return None;
    }
    if let Some(method) = draft_content_method(&frame.content) {
        return Some(method);
    }
    let mut reader = Reader::new(frame.content.clone());
    match reader.read_value().ok()? {
        Value::Object(o) => o.get("methodName")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// The `methodName` of a `SofaRequest` in the Hessian 2 draft dialect hessian.js writes
/// (sofa-bolt-node): `O` <int length><class name bytes> <int count> <field name>*, then `o`
/// <int definition> <field value>*.
fn draft_content_method(content: &Bytes) -> Option<String> {
    let rest = content.strip_prefix(b"O")?;
    let mut r = Reader::new(content.slice(content.len() - rest.len()..));
    let len = usize::try_from(r.read_int().ok()?).ok()?;
    let rest = r.remaining();
    if rest.get(..len)? != DEFAULT_REQUEST_CLASS.as_bytes() {
        return None;
    }
    let mut r = Reader::new(rest.slice(len..));
    let count = r.read_int().ok()?;
    let mut index = None;
    for i in 0..count {
        if r.read_string().ok()? == "methodName" {
            index = Some(i);
        }
    }
    let rest = r.remaining();
    rest.strip_prefix(b"o")?;
    let mut r = Reader::new(rest.slice(1..));
    r.read_int().ok()?;
    for _ in 0..index? {
        r.skip_value().ok()?;
    }
    r.read_string_or_null().ok()?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `SofaRequest` for `echo("x")` as sofa-bolt-node 2.0.1 serialises it (Hessian 2 draft).
    const SOFA_NODE_ECHO: &str = "4fbc636f6d2e616c697061792e736f66612e7270632e636f72652e726571756573742e536f666152657175657374950a6d6574686f644e616d650d6d6574686f64417267536967731774617267657453657276696365556e697175654e616d650d7461726765744170704e616d650c7265717565737450726f70736f90046563686f567400115b6a6176612e6c616e672e537472696e676e01106a6176612e6c616e672e537472696e677a0e636f6d2e782e4563686f3a312e30004d7a0178";

    #[test]
    fn the_method_is_read_from_a_sofa_node_request_content() {
        let content: Vec<u8> = (0..SOFA_NODE_ECHO.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SOFA_NODE_ECHO[i..i + 2], 16).unwrap())
            .collect();
        let frame = super::super::Frame::request(
            1,
            3000,
            DEFAULT_REQUEST_CLASS,
            HeaderMap::new(),
            content.clone(),
        );
        assert_eq!(content_method(&frame).as_deref(), Some("echo"));
        let other = super::super::Frame::request(1, 3000, "com.Other", HeaderMap::new(), content);
        assert_eq!(content_method(&other), None);
        let garbage =
            super::super::Frame::request(1, 3000, DEFAULT_REQUEST_CLASS, HeaderMap::new(), "Ox");
        assert_eq!(content_method(&garbage), None);
    }

    fn headers(entries: &[(&str, Option<&[u8]>)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in entries {
            h.push(
                Bytes::copy_from_slice(k.as_bytes()),
                v.map(Bytes::copy_from_slice),
            );
        }
        h
    }

    /// Header entries, then the service and method they name.
    type Case<'a> = (
        &'a [(&'a str, Option<&'a [u8]>)],
        Option<&'a str>,
        Option<&'a str>,
    );

    #[test]
    fn service_and_method_from_headers() {
        let svc = "com.outrigger.test.EchoService:1.0";
        let cases: &[Case<'_>] = &[
            (&[], None, None),
            // The Hessian path: `service` only.
            (&[(SERVICE, Some(svc.as_bytes()))], Some(svc), None),
            // The protobuf path: `sofa_head_target_service` and the method.
            (
                &[
                    (TARGET_SERVICE, Some(b"com.other.Svc:1.0")),
                    (METHOD_NAME, Some(b"get")),
                ],
                Some("com.other.Svc:1.0"),
                Some("get"),
            ),
            // `service` wins over `sofa_head_target_service`, wherever it sits.
            (
                &[
                    (TARGET_SERVICE, Some(b"b")),
                    (SERVICE, Some(b"a")),
                    (METHOD_NAME, Some(b"m")),
                ],
                Some("a"),
                Some("m"),
            ),
            // A null or non-UTF-8 `service` falls back; a null method is no method.
            (
                &[
                    (SERVICE, None),
                    (TARGET_SERVICE, Some(b"b")),
                    (METHOD_NAME, None),
                ],
                Some("b"),
                None,
            ),
            (
                &[(SERVICE, Some(b"\xff\xfe")), (TARGET_SERVICE, Some(b"b"))],
                Some("b"),
                None,
            ),
            (
                &[(SERVICE, Some(b"\xff")), (METHOD_NAME, Some(b"\xc3"))],
                None,
                None,
            ),
            // Names are case-sensitive, as in SOFARPC.
            (
                &[
                    ("Service", Some(b"a")),
                    ("SOFA_HEAD_METHOD_NAME", Some(b"m")),
                ],
                None,
                None,
            ),
            // The empty string is a value.
            (
                &[(SERVICE, Some(b"")), (METHOD_NAME, Some(b""))],
                Some(""),
                Some(""),
            ),
        ];
        for (entries, want_service, want_method) in cases {
            let h = headers(entries);
            assert_eq!(service(&h), *want_service, "{entries:?}");
            assert_eq!(method(&h), *want_method, "{entries:?}");
        }
    }

    #[test]
    fn default_class_is_sofa_request() {
        assert_eq!(
            DEFAULT_REQUEST_CLASS,
            "com.alipay.sofa.rpc.core.request.SofaRequest"
        );
    }
}
