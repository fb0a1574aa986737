//! The invoke stack of one config version: before-invoke filters (in config order) around
//! after-invoke filters around the channel, as one tower service bounded by the call's
//! deadline; and the handle an API edge uses to find the live stack.

use std::{sync::Arc, time::Duration};

use outrigger_config::FilterKind;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::{
    error::{ErrorKind, InvokeError},
    filter,
    request::{InvokeService, RpcRequest, RpcResponse},
};

/// One config version's invoke stack and its default call timeout.
#[derive(Clone)]
pub struct Invoker {
    stack: InvokeService,
    default_timeout: Duration,
}

impl Invoker {
    /// Wraps `channel` in the configured filters; calls that set no timeout get
    /// `default_timeout`.
    pub fn new(
        channel: InvokeService,
        before: &[FilterKind],
        after: &[FilterKind],
        default_timeout: Duration,
    ) -> Self {
        // Layers listed first run first on the request, and last on the response.
        let mut stack = channel;
        for f in after.iter().rev() {
            stack = filter::layer(f, stack);
        }
        for f in before.iter().rev() {
            stack = filter::layer(f, stack);
        }
        Self {
            stack,
            default_timeout,
        }
    }

    /// The timeout of a call that sets none (`rpc.timeoutMs`).
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
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

/// Where an API edge finds the invoker of the live config; a call keeps the one it got.
pub trait Invokers: Send + Sync + 'static {
    /// The live invoker.
    fn current(&self) -> Arc<Invoker>;
}

/// When a call that arrived at `arrival` with `timeout` must be answered (far in the future,
/// not a panic, for absurd timeouts).
pub fn deadline_after(arrival: Instant, timeout: Duration) -> Instant {
    arrival
        .checked_add(timeout)
        .unwrap_or_else(|| arrival + Duration::from_secs(86_400 * 365))
}
