//! The wire contract between a channel and a proxy listener reached over a socket: the markers on
//! the proxy's own error answers, the header that carries the caller's remaining time (and
//! gRPC's own, `grpc-timeout`), and the HTTP headers that describe one connection and are never
//! forwarded. In-process hand-offs (HTTP, Bolt, Dubbo) carry a typed [`crate::ProxyError`]
//! instead of markers.

use std::time::Duration;

use http::{HeaderMap, HeaderName, header};

use crate::Cause;

/// Marks an answer the proxy core generated itself; the value is the [`Cause`]'s name. On
/// HTTP answers a header, on Bolt answers a header-map entry.
pub const ERROR_HEADER: &str = "x-outrigger-error";
/// On the proxy's own Bolt answers (beside [`ERROR_HEADER`]): what went wrong, in words.
pub const ERROR_MESSAGE_HEADER: &str = "x-outrigger-message";
/// Milliseconds the sender will still wait; the proxy never works on a request longer.
pub const TIMEOUT_HEADER: &str = "x-outrigger-timeout-ms";

/// The error message of the proxy's own Dubbo answer (Dubbo error answers carry only a
/// string): `[outrigger:<cause>] <message>`.
pub fn error_marker(cause: Cause, message: &str) -> String {
    format!("[outrigger:{}] {message}", cause.as_str())
}

/// The cause and message of an error message [`error_marker`] wrote, if it wrote it.
pub fn parse_error_marker(message: &str) -> Option<(Cause, &str)> {
    let rest = message.strip_prefix("[outrigger:")?;
    let (cause, rest) = rest.split_once(']')?;
    Some((Cause::parse(cause)?, rest.trim_start()))
}

/// Parses the `grpc-timeout` header value: at most 8 digits and a unit, as the gRPC spec and
/// tonic have it. Anything else is ignored, as tonic ignores it.
pub fn grpc_timeout(v: &str) -> Option<Duration> {
    if !v.is_ascii() {
        return None;
    }
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Headers that describe one connection, not the message, and are never forwarded.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is a hop-by-hop header (`Connection` itself included).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names present finds the hop-by-hop ones (most requests carry none,
    // a gRPC call only `te`): cheaper than hashing every hop-by-hop name for a removal.
    let mut found: [Option<HeaderName>; 4] = Default::default();
    let mut more = false;
    for name in headers.keys().filter(|n| is_hop_by_hop(n)) {
        match found.iter_mut().find(|f| f.is_none()) {
            Some(slot) => *slot = Some(name.clone()),
            None => more = true,
        }
    }
    if found[0].is_none() {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        strip_connection_named(headers);
    }
    if more {
        for n in &HOP_BY_HOP {
            headers.remove(n);
        }
        headers.remove("keep-alive");
        headers.remove("proxy-connection");
        return;
    }
    for name in found.iter().flatten() {
        headers.remove(name);
    }
}

/// Removes the headers the `Connection` header names (rare, so it may allocate).
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in &named {
        headers.remove(n);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn dubbo_markers_round_trip() {
        let m = error_marker(Cause::NoRoute, "why");
        assert_eq!(m, "[outrigger:no_route] why");
        assert_eq!(parse_error_marker(&m), Some((Cause::NoRoute, "why")));
        assert_eq!(parse_error_marker("no method x"), None);
        assert_eq!(parse_error_marker("[outrigger:nonsense] x"), None);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
        // More hop-by-hop names than the quick path holds: all go still.
        let mut h = HeaderMap::new();
        for name in [
            "te",
            "upgrade",
            "trailer",
            "keep-alive",
            "proxy-connection",
            "x-kept",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"]);
        // Each one alone is found by the quick check too.
        for name in [
            "keep-alive",
            "proxy-connection",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            let mut h = HeaderMap::new();
            h.insert("x-kept", HeaderValue::from_static("1"));
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }
}
