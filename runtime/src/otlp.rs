//! The OTLP trace exporter (`tracing.otlp`): a background task that takes finished spans from
//! the bounded queue the edges and the proxy core record into, gathers them into batches (up to
//! [`MAX_BATCH`] spans, or whatever came within [`BATCH_DELAY`] of the first), and sends each
//! batch to the collector over OTLP/gRPC (`TraceService/Export`) or OTLP/HTTP (a protobuf
//! `POST`), each export bounded by the configured timeout. A failed export is logged and its
//! spans counted as failed; nothing is retried and no call ever waits for the collector. The
//! wire types are the OpenTelemetry project's own (`opentelemetry-proto`). Not for making spans
//! (see `outrigger_core::Span`).

use std::{
    borrow::Cow,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, trace_service_client::TraceServiceClient},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    resource::v1::Resource,
    trace::v1::{self as proto, ResourceSpans, ScopeSpans, span::SpanKind as ProtoKind, status},
};
use outrigger_config::{OtlpConfig, OtlpProtocol};
use outrigger_core::{AttrValue, KindLabels, Metrics, SpanData, SpanKind, SpanMessage, SpanSink};
use prost::Message;
use tokio::{net::TcpStream, sync::mpsc, task::JoinHandle, time::Instant};
use tonic::transport::{Channel, Endpoint};

/// Spans sent in one export at most.
pub(crate) const MAX_BATCH: usize = 512;
/// How long a batch waits for more spans after its first one.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(1000);
/// The most of a collector's OTLP/HTTP answer that is read (an `ExportTraceServiceResponse`
/// is a few bytes; a partial-success message a few hundred).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Time to connect to the collector.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
#[error("tracing.otlp.endpoint {endpoint:?} cannot be used: {reason}")]
pub struct OtlpError {
    endpoint: String,
    reason: String,
}

/// Starts the exporter of `cfg` on the current runtime: the sink spans are recorded into, and
/// the task, which ends once every sink is dropped and what they queued is sent.
pub(crate) fn start(
    cfg: &OtlpConfig,
    metrics: &Metrics,
) -> Result<(SpanSink, JoinHandle<()>), OtlpError> {
    let error = |reason: String| OtlpError {
        endpoint: cfg.endpoint.clone(),
        reason,
    };
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let transport = match cfg.protocol {
        OtlpProtocol::Grpc => {
            let channel = Endpoint::from_shared(cfg.endpoint.clone())
                .map_err(|e| error(e.to_string()))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(timeout)
                .connect_lazy();
            Transport::Grpc(TraceServiceClient::new(channel))
        }
        OtlpProtocol::HttpProtobuf => {
            let uri: http::Uri = cfg.endpoint.parse().map_err(|e| error(format!("{e}")))?;
            let authority = uri
                .authority()
                .ok_or_else(|| error("no host:port".to_owned()))?
                .clone();
            let path = match uri.path() {
                "" | "/" => "/v1/traces".to_owned(),
                p => p.to_owned(),
            };
            Transport::Http(HttpTransport {
                authority,
                path,
                conn: None,
            })
        }
    };
    let (sink, rx) = SpanSink::channel(metrics.spans_dropped.clone());
    let exporter = Exporter {
        transport,
        timeout,
        resource: resource(),
        metrics: metrics.clone(),
    };
    Ok((sink, tokio::spawn(run(rx, exporter))))
}

/// What describes this process in every export: `service.name` (`OTEL_SERVICE_NAME`, else
/// `outrigger`) and the pod, when the injector passed it in the environment.
fn resource() -> Resource {
    let mut attributes = vec![kv(
        "service.name",
        AttrValue::Str(Cow::Owned(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "outrigger".to_owned()),
        )),
    )];
    for (key, var) in [
        ("k8s.pod.name", "POD_NAME"),
        ("k8s.namespace.name", "POD_NAMESPACE"),
    ] {
        if let Ok(v) = std::env::var(var) {
            attributes.push(kv(key, AttrValue::Str(Cow::Owned(v))));
        }
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

fn kv(key: &str, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => Value::StringValue(s.into_owned()),
        AttrValue::Int(n) => Value::IntValue(n),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One span in OTLP's terms.
fn to_proto(span: SpanData) -> proto::Span {
    let kind = match span.kind {
        SpanKind::Server => ProtoKind::Server,
        SpanKind::Client => ProtoKind::Client,
    };
    let status = match span.error {
        Some(message) => proto::Status {
            message,
            code: status::StatusCode::Error as i32,
        },
        None => proto::Status::default(),
    };
    proto::Span {
        trace_id: span.context.trace_id.0.to_vec(),
        span_id: span.context.span_id.0.to_vec(),
        parent_span_id: span.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
        // The W3C trace flags, and that the parent's remoteness is known (bit 8) and whether it
        // is remote (bit 9): a server span's parent is the caller's, a client span's is ours.
        flags: u32::from(span.context.flags)
            | 0x100
            | if span.kind == SpanKind::Server && span.parent.is_some() {
                0x200
            } else {
                0
            },
        name: span.name.into_owned(),
        kind: kind as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes: span.attributes.into_iter().map(|(k, v)| kv(k, v)).collect(),
        status: Some(status),
        ..Default::default()
    }
}

enum Transport {
    Grpc(TraceServiceClient<Channel>),
    Http(HttpTransport),
}

struct HttpTransport {
    authority: http::uri::Authority,
    path: String,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl HttpTransport {
    /// Posts `body` on the kept connection (a new one when there is none or it closed).
    async fn post(&mut self, body: Bytes) -> Result<(), String> {
        let mut sender = match self.conn.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    TcpStream::connect(self.authority.as_str()),
                )
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| format!("connect: {e}"))?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }
        };
        sender.ready().await.map_err(|e| e.to_string())?;
        let req = http::Request::post(&self.path)
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        // The answer's body is read (up to a bound) so that the connection can carry the next
        // export.
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the collector's answer: {e}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
            return Err(format!("collector answered {status}: {text}"));
        }
        self.conn = Some(sender);
        Ok(())
    }
}

struct Exporter {
    transport: Transport,
    timeout: Duration,
    resource: Resource,
    metrics: Metrics,
}

impl Exporter {
    /// Sends `spans` in one request; counts them as exported or failed.
    async fn export(&mut self, spans: Vec<SpanData>) {
        let n = spans.len() as u64;
        if n == 0 {
            return;
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "outrigger".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    spans: spans.into_iter().map(to_proto).collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let sent = match &mut self.transport {
            Transport::Grpc(client) => client
                .export(request)
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {}", s.code(), s.message())),
            Transport::Http(http) => {
                let body = Bytes::from(request.encode_to_vec());
                tokio::time::timeout(self.timeout, http.post(body))
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()))
            }
        };
        let outcome = match sent {
            Ok(()) => "exported",
            Err(e) => {
                tracing::warn!(spans = n, error = %e, "exporting spans to the OTLP collector failed; they are dropped");
                "failed"
            }
        };
        self.metrics
            .spans_exported
            .get_or_create(&KindLabels {
                kind: outcome.to_owned(),
            })
            .inc_by(n);
    }
}

/// Batches and exports until every sink is dropped; answers flushes once what was queued
/// before them is exported.
async fn run(mut rx: mpsc::Receiver<SpanMessage>, mut exporter: Exporter) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut flushed = Vec::new();
    let mut open = true;
    while open {
        match rx.recv().await {
            None => break,
            Some(SpanMessage::Span(s)) => batch.push(*s),
            Some(SpanMessage::Flush(done)) => flushed.push(done),
        }
        let until = Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushed.is_empty() {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(SpanMessage::Span(s))) => batch.push(*s),
                Ok(Some(SpanMessage::Flush(done))) => flushed.push(done),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        exporter
            .export(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH)))
            .await;
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use outrigger_core::{Span, TraceContext};

    use super::*;

    #[test]
    fn spans_keep_their_ids_times_and_failure() {
        let server = Span::start(TraceContext::new_root(1.0), None);
        let client = server.child();
        let data = client.finish(
            SpanKind::Client,
            "GET",
            vec![("outrigger.attempt", AttrValue::Int(2))],
            Some("reset".to_owned()),
        );
        let p = to_proto(data);
        assert_eq!(p.trace_id, server.context.trace_id.0.to_vec());
        assert_eq!(p.parent_span_id, server.context.span_id.0.to_vec());
        assert_eq!(p.kind, ProtoKind::Client as i32);
        assert!(p.end_time_unix_nano >= p.start_time_unix_nano);
        assert!(p.start_time_unix_nano > 0);
        assert_eq!(p.flags, 0x101, "sampled; the parent is local");
        let status = p.status.expect("status");
        assert_eq!(status.code, status::StatusCode::Error as i32);
        assert_eq!(status.message, "reset");
        assert_eq!(p.attributes[0].key, "outrigger.attempt");
    }
}
