//! The limits of connections a proxy listener accepted on its socket (connections from this
//! process come from the sidecar's own channels and have none): the connection cap and request
//! head timeout every server shares, and the Bolt/Dubbo idle timeout. Not for the limits of
//! requests (routes, clusters).

use std::sync::Arc;

use outrigger_config::ListenerConfig;
use outrigger_core::{LabelStr, ServerLimits};

use crate::snapshot::Shared;

/// The limits of connections accepted on a listener's socket (connections from this process
/// have none: they come from the sidecar's own channels).
pub(crate) struct SocketLimits {
    /// Connection cap and header read timeout, and where they are counted.
    pub(crate) server: ServerLimits,
    /// A Bolt or Dubbo connection without frames for this long (and no request in flight) is
    /// closed.
    pub(crate) idle_timeout: std::time::Duration,
}

impl SocketLimits {
    pub(crate) fn of(l: &ListenerConfig, shared: &Shared) -> Self {
        Self {
            server: ServerLimits::new(
                LabelStr::Shared(Arc::from(format!("listener/{}", l.name))),
                l.connection_limit(),
                l.header_read_timeout(),
                &shared.metrics,
            ),
            idle_timeout: l.idle_timeout(),
        }
    }
}

/// Resolves at `deadline`, or never.
pub(crate) async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
