//! What the edges and the proxy core need to know about observability, built once at start and
//! handed down at construction: the access log (if on) and whether trace context is handled.
//! With both off, a request does no extra work: no trace ids, no records, no formatting. Not for
//! the access log's writer (see `access_log`) or trace context parsing (see `trace`).

use crate::{access_log::AccessLog, trace::TraceContext};

/// The access log and trace context settings every edge shares.
#[derive(Clone, Debug)]
pub struct Observability {
    /// Where each call's line goes; `None` when access logs are off.
    pub access_log: Option<AccessLog>,
    /// Whether the sidecar continues callers' traces (`tracing` in the config): it makes its
    /// own span as a child of the caller's `traceparent`, or starts a trace, and forwards a
    /// `traceparent` naming its span upstream.
    pub propagate: bool,
    /// Share of the traces the sidecar starts that are marked sampled (0 to 1).
    pub sampling_ratio: f64,
}

impl Default for Observability {
    /// Access logs and trace context off.
    fn default() -> Self {
        Self {
            access_log: None,
            propagate: false,
            sampling_ratio: 1.0,
        }
    }
}

impl Observability {
    /// Whether a call needs its trace context: to propagate it, or for its access log line.
    pub fn traces(&self) -> bool {
        self.propagate || self.access_log.is_some()
    }

    /// The sidecar's span for a call whose `traceparent` (if any) `incoming` reads, when traces
    /// are handled; `incoming` is not called otherwise.
    pub fn span<'a>(&self, incoming: impl FnOnce() -> Option<&'a [u8]>) -> Option<TraceContext> {
        self.traces()
            .then(|| TraceContext::continue_from(incoming(), self.sampling_ratio))
    }
}
