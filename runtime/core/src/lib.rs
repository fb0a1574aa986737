//! The bottom layer of Outrigger's data plane: what every other layer shares and none owns — the
//! one classification of request failures ([`Cause`]) and the typed failure the proxy core hands
//! an in-process caller ([`ProxyError`]), the markers that carry it over a wire, HTTP header
//! helpers, the streaming pass-through interface the proxy core offers the gRPC edge, the shutdown signal passed down to every server, the one accept loop, and the
//! metric families. Nothing here knows about pools, the proxy, channels or the gRPC API.

mod access_log;
mod error;
mod metrics;
mod observe;
mod passthrough;
mod serve;
mod shutdown;
mod span;
mod trace;
mod wire;
mod workers;

pub use self::{
    access_log::{
        ACCESS_LOG_QUEUE, AccessLog, AccessLogError, AccessLogFormat, AccessLogSink, AccessRecord,
        format_line, rfc3339,
    },
    error::{Cause, Failure, ProxyError},
    metrics::{
        AuthzLabels, BreakerLabels, ConfigLabels, EjectionLabels, GrpcLabels, HeartbeatLabels,
        KindLabels, LabelStr, Metrics, MuxCallLabels, NameLabels, PathLabels, PlaintextLabels,
        PoolSeries, ProtocolLabels, ProxyLabels, RateLimitLabels, ReloadLabels, RetryLabels,
        ServerLabels, StatusLabel, TlsLabels, XprotocolLabels,
    },
    observe::Observability,
    passthrough::{BoxError, Passthrough, PassthroughFuture, StreamBody, full_body},
    serve::{ServerLimits, accept_loop, serve_http1, serve_http2},
    shutdown::Shutdown,
    span::{AttrValue, SPAN_QUEUE, Span, SpanData, SpanKind, SpanMessage, SpanSink, TryAttributes},
    trace::{
        FOREIGN_TRACE_ID_KEYS, SpanId, TRACEPARENT, TRACESTATE, TraceContext, TraceId,
        TraceParseError,
    },
    wire::{
        ERROR_HEADER, ERROR_MESSAGE_HEADER, TIMEOUT_HEADER, error_marker, grpc_timeout,
        is_hop_by_hop, parse_error_marker, strip_hop_by_hop,
    },
    workers::{Workers, worker_index},
};
