//! The invoker: what one `InvokeService` call becomes inside the sidecar. It defines the request
//! and response every filter and channel sees, the error they report, and builds the filter
//! chain around the channel as one tower service from the config. Not for gRPC (see `api`) or
//! for any wire protocol (see `channel`).

mod error;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::time::Instant;
use tower::{ServiceExt, util::BoxCloneSyncService};

pub use self::error::{ErrorKind, InvokeError};
use crate::filter;

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
    /// Forwarded gRPC metadata, already stripped of gRPC- and hop-by-hop headers.
    pub headers: HeaderMap,
    /// The call must be answered by then.
    pub deadline: Instant,
}

impl RpcRequest {
    /// Time left until the deadline (zero when passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// What the channel brought back.
#[derive(Clone, Debug, Default)]
pub struct RpcResponse {
    /// Content type of `data`.
    pub content_type: String,
    /// The payload.
    pub data: Bytes,
    /// Response headers, returned to the app as gRPC response metadata.
    pub headers: HeaderMap,
}

/// The filter chain and channel as one service.
pub(crate) type InvokeService = BoxCloneSyncService<RpcRequest, RpcResponse, InvokeError>;

/// Builds the invoke stack: before-invoke filters (in config order) around after-invoke
/// filters around the channel. Every filter is a tower layer.
#[derive(Clone)]
pub struct Invoker {
    stack: InvokeService,
}

impl Invoker {
    /// Wraps `channel` in the configured filters.
    pub fn new(
        channel: InvokeService,
        before: &[outrigger_config::FilterKind],
        after: &[outrigger_config::FilterKind],
    ) -> Self {
        // Layers listed first run first on the request, and last on the response.
        let mut stack = channel;
        for f in after.iter().rev() {
            stack = filter::layer(f, filter::Phase::After, stack);
        }
        for f in before.iter().rev() {
            stack = filter::layer(f, filter::Phase::Before, stack);
        }
        Self { stack }
    }

    /// Runs one call through the filters and the channel, bounded by its deadline.
    pub async fn invoke(&self, req: RpcRequest) -> Result<RpcResponse, InvokeError> {
        let deadline = req.deadline;
        let timeout = req.remaining();
        match tokio::time::timeout_at(deadline, self.stack.clone().oneshot(req)).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::new(
                ErrorKind::DeadlineExceeded,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }
}
