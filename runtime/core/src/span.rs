//! Spans the sidecar records for export: one server span per call an edge accepts and one client
//! span per try the proxy sends upstream, each with the attributes users filter on. A finished
//! span is queued for the exporter without waiting; when the queue is full the span is dropped
//! and counted, so a slow or absent collector never slows a request. Only sampled spans are
//! recorded, and nothing at all when export is off. Not for the trace context itself (see
//! `trace`) or the OTLP wire format (the exporter, in the composition root, owns that).

use std::{
    borrow::Cow,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use prometheus_client::metrics::counter::Counter;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::{
    error::Cause,
    trace::{SpanId, TraceContext},
};

/// Spans queued for the exporter at most; more are dropped and counted.
pub const SPAN_QUEUE: usize = 4096;

/// What side of a call a span describes (OTLP's span kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// A call the sidecar accepted (an API call, a proxy listener's request).
    Server,
    /// A try the sidecar sent upstream.
    Client,
}

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// An integer.
    Int(i64),
}

impl From<&'static str> for AttrValue {
    fn from(s: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(s))
    }
}

impl From<String> for AttrValue {
    fn from(s: String) -> Self {
        AttrValue::Str(Cow::Owned(s))
    }
}

impl From<i64> for AttrValue {
    fn from(n: i64) -> Self {
        AttrValue::Int(n)
    }
}

/// One finished span, as the exporter sends it.
#[derive(Clone, Debug)]
pub struct SpanData {
    /// Trace, span and flags.
    pub context: TraceContext,
    /// The parent span (the caller's, or the sidecar's server span); `None` for a root.
    pub parent: Option<SpanId>,
    /// Server or client.
    pub kind: SpanKind,
    /// The operation: `package.Service/Method` for gRPC, the HTTP method for HTTP.
    pub name: Cow<'static, str>,
    /// When the span started (wall clock).
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Attributes (OpenTelemetry semantic names where one exists, `outrigger.*` otherwise).
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// The failure's description when the span ended in an error.
    pub error: Option<String>,
}

/// A span in progress: its place in the trace and, when it will be recorded, when it started
/// (a span that is only propagated reads no clock).
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// This span's context, what is forwarded as `traceparent`.
    pub context: TraceContext,
    /// The span it is a child of, if any.
    pub parent: Option<SpanId>,
    clock: Option<(SystemTime, Instant)>,
}

impl Span {
    /// Starts timing a span at `context`, a child of `parent`.
    pub fn start(context: TraceContext, parent: Option<SpanId>) -> Self {
        Self {
            context,
            parent,
            clock: Some((SystemTime::now(), Instant::now())),
        }
    }

    /// A span that is carried but not recorded: no clock is read.
    pub fn untimed(context: TraceContext, parent: Option<SpanId>) -> Self {
        Self {
            context,
            parent,
            clock: None,
        }
    }

    /// Starts a span that began at `arrival` (a monotonic instant in the past).
    pub fn started_at(context: TraceContext, parent: Option<SpanId>, arrival: Instant) -> Self {
        let start = SystemTime::now()
            .checked_sub(arrival.elapsed())
            .unwrap_or_else(SystemTime::now);
        Self {
            context,
            parent,
            clock: Some((start, arrival)),
        }
    }

    /// This span, begun at `arrival` instead, if it is timed.
    pub fn since(self, arrival: Instant) -> Self {
        match self.clock {
            Some(_) => Self::started_at(self.context, self.parent, arrival),
            None => self,
        }
    }

    /// A child of this span, starting now (timed when this one is).
    pub fn child(&self) -> Self {
        let context = self.context.child();
        let parent = Some(self.context.span_id);
        match self.clock {
            Some(_) => Self::start(context, parent),
            None => Self::untimed(context, parent),
        }
    }

    /// Whether the trace is sampled (flag bit 0): only sampled spans are exported.
    pub fn sampled(&self) -> bool {
        self.context.flags & 1 == 1
    }

    /// The finished span: ended now, with `attributes`.
    pub fn finish(
        &self,
        kind: SpanKind,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<(&'static str, AttrValue)>,
        error: Option<String>,
    ) -> SpanData {
        // An untimed span is never recorded; were it, it would show as instantaneous.
        let (start, started) = self
            .clock
            .unwrap_or_else(|| (SystemTime::now(), Instant::now()));
        SpanData {
            context: self.context,
            parent: self.parent,
            kind,
            name: name.into(),
            start,
            end: start + started.elapsed(),
            attributes,
            error,
        }
    }
}

/// The attributes of a client span (one try upstream), shared by every protocol.
#[derive(Clone, Debug)]
pub struct TryAttributes<'a> {
    /// `http`, `bolt` or `dubbo`.
    pub protocol: &'static str,
    /// The route that chose the cluster.
    pub route: &'a str,
    /// The cluster.
    pub cluster: &'a str,
    /// The host the try went to.
    pub host: SocketAddr,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// Time spent waiting for a connection of the host's pool.
    pub pool_wait: Option<Duration>,
    /// The upstream's status (HTTP status, Bolt/Dubbo status code), when it answered.
    pub status: Option<i64>,
    /// Why the try failed, when it did.
    pub cause: Option<Cause>,
}

impl TryAttributes<'_> {
    /// As span attributes.
    pub fn into_attributes(self) -> Vec<(&'static str, AttrValue)> {
        let mut attrs = Vec::with_capacity(9);
        attrs.push(("outrigger.protocol", self.protocol.into()));
        attrs.push(("outrigger.route", self.route.to_owned().into()));
        attrs.push(("outrigger.cluster", self.cluster.to_owned().into()));
        attrs.push(("server.address", self.host.ip().to_string().into()));
        attrs.push(("server.port", i64::from(self.host.port()).into()));
        attrs.push(("outrigger.attempt", i64::from(self.attempt).into()));
        if let Some(wait) = self.pool_wait {
            attrs.push((
                "outrigger.pool_wait_us",
                i64::try_from(wait.as_micros()).unwrap_or(i64::MAX).into(),
            ));
        }
        if let Some(status) = self.status {
            let key = if self.protocol == "http" {
                "http.response.status_code"
            } else {
                "outrigger.status"
            };
            attrs.push((key, status.into()));
        }
        if let Some(cause) = self.cause {
            attrs.push(("error.type", cause.as_str().into()));
        }
        attrs
    }
}

/// What the exporter receives.
#[derive(Debug)]
pub enum SpanMessage {
    /// A finished span.
    Span(Box<SpanData>),
    /// Answer once every span queued before is exported (or given up on).
    Flush(oneshot::Sender<()>),
}

/// Where finished spans go: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SpanSink {
    tx: mpsc::Sender<SpanMessage>,
    dropped: Counter,
}

impl std::fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanSink")
    }
}

impl SpanSink {
    /// A sink and the receiving end the exporter reads, holding up to [`SPAN_QUEUE`] spans;
    /// spans that do not fit are counted in `dropped`.
    pub fn channel(dropped: Counter) -> (Self, mpsc::Receiver<SpanMessage>) {
        let (tx, rx) = mpsc::channel(SPAN_QUEUE);
        (Self { tx, dropped }, rx)
    }

    /// Queues `span`; drops (and counts) it when the queue is full or the exporter stopped.
    pub fn record(&self, span: SpanData) {
        if self.tx.try_send(SpanMessage::Span(Box::new(span))).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every span queued before this call is exported or given up on.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(SpanMessage::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_span_continues_the_trace() {
        let server = Span::start(TraceContext::new_root(1.0), None);
        let client = server.child();
        assert_eq!(client.context.trace_id, server.context.trace_id);
        assert_eq!(client.parent, Some(server.context.span_id));
        assert!(client.sampled());
        let data = client.finish(SpanKind::Client, "GET", Vec::new(), None);
        assert!(data.end >= data.start);
        let carried = Span::untimed(TraceContext::new_root(1.0), None);
        assert!(
            carried.child().clock.is_none(),
            "children of carried spans read no clock"
        );
        assert!(server.child().clock.is_some());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let (sink, mut rx) = SpanSink::channel(dropped.clone());
        let span = Span::start(TraceContext::new_root(1.0), None);
        for _ in 0..SPAN_QUEUE + 3 {
            sink.record(span.finish(SpanKind::Server, "x", Vec::new(), None));
        }
        assert_eq!(dropped.get(), 3);
        assert!(matches!(rx.recv().await, Some(SpanMessage::Span(_))));
        drop(rx);
        sink.record(span.finish(SpanKind::Server, "x", Vec::new(), None));
        assert_eq!(dropped.get(), 4, "an exporter that stopped drops too");
    }

    #[test]
    fn try_attributes_name_the_host_and_the_failure() {
        let attrs = TryAttributes {
            protocol: "http",
            route: "r",
            cluster: "c",
            host: "10.0.0.1:8080".parse().unwrap(),
            attempt: 2,
            pool_wait: Some(Duration::from_micros(7)),
            status: Some(503),
            cause: Some(Cause::Reset),
        }
        .into_attributes();
        let get = |k: &str| attrs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        assert_eq!(get("server.address"), Some("10.0.0.1".to_owned().into()));
        assert_eq!(get("server.port"), Some(8080.into()));
        assert_eq!(get("outrigger.attempt"), Some(2.into()));
        assert_eq!(get("outrigger.pool_wait_us"), Some(7.into()));
        assert_eq!(get("http.response.status_code"), Some(503.into()));
        assert_eq!(get("error.type"), Some("reset".into()));
    }
}
