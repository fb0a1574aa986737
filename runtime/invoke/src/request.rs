//! What one call is inside the sidecar, after an API edge decoded it: the request every filter
//! and channel sees, with the caller's control metadata already parsed into typed fields (which
//! channel, one-way, the Dubbo call's description), and the response a channel brings back.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use outrigger_config::Protocol;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;

use crate::error::{ErrorKind, InvokeError};

/// gRPC metadata naming the channel (by protocol: `http`, `bolt`, `dubbo`) a call takes.
pub const PROTOCOL_METADATA: &str = "rpc_protocol";
/// gRPC metadata `rpc_request_type: oneway` sends a Bolt or Dubbo request that gets no answer;
/// the call returns as soon as the request is queued.
pub const REQUEST_TYPE_METADATA: &str = "rpc_request_type";
/// gRPC metadata: the parameter types of a Dubbo call, as a JVM descriptor
/// (`Ljava/lang/String;I`) or comma-separated Java names (`java.lang.String,int`). None means a
/// method without parameters.
pub const PARAMETER_TYPES_METADATA: &str = "dubbo_parameter_types";
/// gRPC metadata: the Dubbo service version, empty by default.
pub const SERVICE_VERSION_METADATA: &str = "dubbo_service_version";
/// gRPC metadata: the Dubbo service group, none by default.
pub const GROUP_METADATA: &str = "dubbo_group";

/// One call, after the API edge decoded it and before any filter ran.
#[derive(Clone, Debug)]
pub struct RpcRequest {
    /// The target service id (`InvokeServiceRequest.id`).
    pub id: String,
    /// The method (`CommonInvokeRequest.method`); for HTTP, the request path.
    pub method: String,
    /// `CommonInvokeRequest.content_type`; empty when not given.
    pub content_type: String,
    /// The payload (`Any.value`).
    pub data: Bytes,
    /// HTTP verb (from `http_extension`, `GET` when absent).
    pub verb: Method,
    /// Query string (from `http_extension.querystring`), without `?`.
    pub query: String,
    /// Forwarded metadata, already stripped of gRPC, hop-by-hop and control entries.
    pub headers: HeaderMap,
    /// The call must be answered by then.
    pub deadline: Instant,
    /// The channel the call takes (metadata `rpc_protocol`, or a filter's choice); the first
    /// configured channel when `None`.
    pub protocol: Option<Protocol>,
    /// A Bolt or Dubbo request that expects no answer (metadata `rpc_request_type: oneway`).
    pub one_way: bool,
    /// How a Dubbo channel describes the call.
    pub dubbo: DubboCall,
    /// What the HTTP channel makes of an upstream's non-2xx answer: an error (`InvokeService`)
    /// or the answer itself, status and all (Dapr's HTTP API). The proxy's own failures (no
    /// route, connect failure, timeout) are errors either way.
    pub non_success: NonSuccess,
}

/// What the HTTP channel makes of an upstream's non-2xx answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonSuccess {
    /// An `Unavailable` error quoting the status and body (`InvokeService` semantics).
    #[default]
    Error,
    /// The response, with its status in [`RpcResponse::status`] (Dapr's HTTP API: an app's 404
    /// is the caller's 404).
    Answer,
}

/// The parts of a Dubbo call that are not its arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DubboCall {
    /// Parameter types: a JVM descriptor or comma-separated Java names; empty for none.
    pub parameter_types: String,
    /// The service version.
    pub version: String,
    /// The service group; empty for none.
    pub group: String,
    /// A generic invocation (`$invoke`), sent with the attachment `generic: true`.
    pub generic: bool,
}

impl RpcRequest {
    /// A call of `method` on `id` with no payload, metadata or control settings.
    pub fn new(id: impl Into<String>, method: impl Into<String>, deadline: Instant) -> Self {
        Self {
            id: id.into(),
            method: method.into(),
            content_type: String::new(),
            data: Bytes::new(),
            verb: Method::GET,
            query: String::new(),
            headers: HeaderMap::new(),
            deadline,
            protocol: None,
            one_way: false,
            dubbo: DubboCall::default(),
            non_success: NonSuccess::Error,
        }
    }

    /// Time left until the deadline (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Takes the control metadata out of `headers` into the typed fields: `rpc_protocol`,
    /// `rpc_request_type` and the `dubbo_*` entries. They are never forwarded.
    pub fn take_control_metadata(&mut self) -> Result<(), InvokeError> {
        // Most calls carry none: one pass over the names present, not five lookups.
        let control = |k: &http::HeaderName| {
            let k = k.as_str();
            k.starts_with("rpc_") || k.starts_with("dubbo_")
        };
        if !self.headers.keys().any(control) {
            return Ok(());
        }
        let invalid = |m: String| InvokeError::new(ErrorKind::InvalidArgument, m);
        if let Some(v) = self.headers.remove(PROTOCOL_METADATA) {
            let wanted = text(&v).to_ascii_lowercase();
            self.protocol = Some(
                [Protocol::Http, Protocol::Bolt, Protocol::Dubbo]
                    .into_iter()
                    .find(|p| p.as_str() == wanted)
                    .ok_or_else(|| {
                        invalid(format!(
                            "metadata {PROTOCOL_METADATA} {wanted:?} names no channel protocol (http, bolt or dubbo)"
                        ))
                    })?,
            );
        }
        if let Some(v) = self.headers.remove(REQUEST_TYPE_METADATA) {
            self.one_way = match text(&v) {
                "oneway" => true,
                "" | "sync" => false,
                other => {
                    return Err(invalid(format!(
                        "metadata {REQUEST_TYPE_METADATA} must be \"oneway\" or \"sync\", not {other:?}"
                    )));
                }
            };
        }
        for (key, field) in [
            (PARAMETER_TYPES_METADATA, &mut self.dubbo.parameter_types),
            (SERVICE_VERSION_METADATA, &mut self.dubbo.version),
            (GROUP_METADATA, &mut self.dubbo.group),
        ] {
            if let Some(v) = self.headers.remove(key) {
                *field = v
                    .to_str()
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| invalid(format!("metadata {key} is not ASCII text")))?;
            }
        }
        Ok(())
    }
}

fn text(v: &HeaderValue) -> &str {
    v.to_str().unwrap_or_default().trim()
}

/// What the channel brought back.
#[derive(Clone, Debug, Default)]
pub struct RpcResponse {
    /// The upstream's HTTP status: 200 for Bolt and Dubbo answers; anything but a 2xx only when
    /// the request asked for [`NonSuccess::Answer`].
    pub status: StatusCode,
    /// Content type of `data`.
    pub content_type: String,
    /// The payload.
    pub data: Bytes,
    /// Response headers, returned to the app as gRPC response metadata.
    pub headers: HeaderMap,
}

/// A filter chain and channel (or any part of one) as one service.
pub type InvokeService = BoxCloneSyncService<RpcRequest, RpcResponse, InvokeError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> RpcRequest {
        let mut r = RpcRequest::new("svc", "m", Instant::now());
        for (k, v) in pairs {
            r.headers.insert(*k, HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn control_metadata_becomes_typed_fields() {
        let mut r = with(&[
            (PROTOCOL_METADATA, " Bolt "),
            (REQUEST_TYPE_METADATA, "oneway"),
            (PARAMETER_TYPES_METADATA, "java.lang.String"),
            (SERVICE_VERSION_METADATA, "1.0.0"),
            (GROUP_METADATA, "blue"),
            ("x-tenant", "t1"),
        ]);
        r.take_control_metadata().expect("valid");
        assert_eq!(r.protocol, Some(Protocol::Bolt));
        assert!(r.one_way);
        assert_eq!(r.dubbo.parameter_types, "java.lang.String");
        assert_eq!(r.dubbo.version, "1.0.0");
        assert_eq!(r.dubbo.group, "blue");
        assert_eq!(r.headers.len(), 1, "only x-tenant is forwarded");

        let mut plain = with(&[]);
        plain.take_control_metadata().expect("none");
        assert_eq!(plain.protocol, None);
        assert!(!plain.one_way);
    }

    #[test]
    fn bad_control_metadata_is_an_invalid_argument() {
        for (pairs, msg) in [
            (
                [(REQUEST_TYPE_METADATA, "later")],
                "metadata rpc_request_type must be \"oneway\" or \"sync\", not \"later\"",
            ),
            (
                [(PROTOCOL_METADATA, "grpc")],
                "metadata rpc_protocol \"grpc\" names no channel protocol (http, bolt or dubbo)",
            ),
            (
                [(PROTOCOL_METADATA, "auto")],
                "metadata rpc_protocol \"auto\" names no channel protocol (http, bolt or dubbo)",
            ),
        ] {
            let e = with(&pairs).take_control_metadata().expect_err(msg);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert_eq!(e.message(), msg);
        }
    }
}
