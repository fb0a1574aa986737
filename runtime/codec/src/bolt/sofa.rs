//! What SOFARPC puts in a Bolt request besides the content: the header names that carry the
//! target service and method, and the class of a request's content. The header map is
//! readable without deserializing the content, so routing on service and method never
//! touches the (Hessian or protobuf) `SofaRequest`.

use super::HeaderMap;

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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

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
