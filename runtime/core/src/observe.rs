//! What the edges and the proxy core need to know about observability, built once at start and
//! handed down at construction: the access log (if on), whether trace context is handled, and
//! where exported spans go (if anywhere). With all of them off, a request does no extra work:
//! no trace ids, no records, no formatting, no clock reads. Not for the access log's writer
//! (see `access_log`), trace context parsing (see `trace`) or the span queue (see `span`).

use crate::{
    access_log::AccessLog,
    span::{Span, SpanData, SpanSink},
    trace::{SpanId, TraceContext},
};

/// The access log, trace context and span export settings every edge shares.
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
    /// Where sampled spans go (`tracing.otlp`); `None` when nothing is exported.
    pub spans: Option<SpanSink>,
}

impl Default for Observability {
    /// Access logs, trace context and export off.
    fn default() -> Self {
        Self {
            access_log: None,
            propagate: false,
            sampling_ratio: 1.0,
            spans: None,
        }
    }
}

impl Observability {
    /// Whether a call needs its trace context: to propagate it, to export it, or for its access
    /// log line.
    pub fn traces(&self) -> bool {
        self.propagate || self.access_log.is_some() || self.spans.is_some()
    }

    /// The sidecar's span for a call whose `traceparent` (if any) `incoming` reads, when traces
    /// are handled; `incoming` is not called otherwise.
    pub fn span<'a>(&self, incoming: impl FnOnce() -> Option<&'a [u8]>) -> Option<Span> {
        self.traces().then(|| {
            let (context, parent) =
                TraceContext::continue_with_parent(incoming(), self.sampling_ratio);
            self.adopt(context, parent)
        })
    }

    /// A span at `context` (one made elsewhere, or from another tracer's id), timed only when
    /// it will be recorded: spans are exported and its trace is sampled.
    pub fn adopt(&self, context: TraceContext, parent: Option<SpanId>) -> Span {
        if self.spans.is_some() && context.flags & 1 == 1 {
            Span::start(context, parent)
        } else {
            Span::untimed(context, parent)
        }
    }

    /// Where `span` goes when it ends: the sink, when spans are exported and it is sampled.
    /// Callers build a span's attributes only when this is `Some`.
    pub fn recorder(&self, span: Option<&Span>) -> Option<&SpanSink> {
        self.spans
            .as_ref()
            .filter(|_| span.is_some_and(Span::sampled))
    }

    /// Records `data` if spans are exported (the caller checked sampling with `recorder`).
    pub fn record(&self, data: SpanData) {
        if let Some(sink) = &self.spans {
            sink.record(data);
        }
    }
}
