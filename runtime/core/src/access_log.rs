//! Access logs: one line per call at every edge (gRPC `InvokeService`, Dapr's HTTP API, proxy
//! listeners), as JSON or text, written to stdout or an append-only file. A request only
//! hands its [`AccessRecord`] to a bounded queue and never waits: when the queue is full the
//! line is dropped and counted in `outrigger_access_log_dropped_total`. One task drains the
//! queue, formats and writes. Not for deciding what a call's fields are (each edge fills its
//! record) or for application logs (`tracing`).

use std::{
    fmt::Write as _,
    io,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::{Metrics, trace::TraceId};

/// Lines waiting for the writer; more are dropped (and counted).
pub const ACCESS_LOG_QUEUE: usize = 4096;

/// How a line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Space-separated fields in a fixed order, `-` for an absent one.
    Text,
}

/// Where lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogSink {
    /// The process's standard output.
    Stdout,
    /// A file, created when missing and appended to.
    File(PathBuf),
}

/// What one call leaves in the access log. Each edge fills the fields it knows.
#[derive(Clone, Debug)]
pub struct AccessRecord {
    /// When the call arrived.
    pub start: SystemTime,
    /// The call's trace, when trace context is handled.
    pub trace_id: Option<TraceId>,
    /// The edge that took the call: `grpc`, `http-api`, `proxy-http`, `bolt` or `dubbo`.
    pub protocol: &'static str,
    /// The target (app) id, or a proxy request's service.
    pub target: String,
    /// The method or path.
    pub method: String,
    /// The route that matched: `<route table>/<index>`.
    pub route: Option<Arc<str>>,
    /// The cluster the call went to.
    pub cluster: Option<Arc<str>>,
    /// The upstream host of the last try.
    pub upstream_host: Option<SocketAddr>,
    /// Tries made upstream (0 when none was made).
    pub attempts: u32,
    /// The gRPC status code answered (gRPC edge).
    pub grpc_status: Option<i32>,
    /// The HTTP, Bolt or Dubbo status answered.
    pub status: Option<u32>,
    /// Request payload bytes received.
    pub bytes_in: u64,
    /// Response payload bytes sent.
    pub bytes_out: u64,
    /// From arrival to the answer.
    pub duration: Duration,
    /// The caller's SPIFFE id, when it came over mutual TLS.
    pub peer_identity: Option<Arc<str>>,
    /// The listener's authorization decision (`allow`, `deny`, `audit_deny`), when it has a
    /// policy.
    pub authz_decision: Option<&'static str>,
    /// The rule that decided, or `default`.
    pub authz_rule: Option<Arc<str>>,
}

impl AccessRecord {
    /// A record of a call to `target`/`method` that arrived at `start` on `protocol`.
    pub fn new(protocol: &'static str, start: SystemTime) -> Self {
        Self {
            start,
            trace_id: None,
            protocol,
            target: String::new(),
            method: String::new(),
            route: None,
            cluster: None,
            upstream_host: None,
            peer_identity: None,
            authz_decision: None,
            authz_rule: None,
            attempts: 0,
            grpc_status: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
        }
    }
}

/// A JSON line's shape.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonLine<'a> {
    time: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    protocol: &'a str,
    target: &'a str,
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_host: Option<String>,
    attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    grpc_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u32>,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    peer_identity: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authz_decision: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    authz_rule: Option<&'a str>,
}

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days.cast_signed() + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Appends one line (with its newline) for `r` to `out`.
pub fn format_line(r: &AccessRecord, format: AccessLogFormat, out: &mut String) {
    let time = rfc3339(r.start);
    let duration_ms = r.duration.as_secs_f64() * 1000.0;
    match format {
        AccessLogFormat::Json => {
            let line = JsonLine {
                time: &time,
                trace_id: r.trace_id.map(|t| t.to_string()),
                protocol: r.protocol,
                target: &r.target,
                method: &r.method,
                route: r.route.as_deref(),
                cluster: r.cluster.as_deref(),
                upstream_host: r.upstream_host.map(|h| h.to_string()),
                attempts: r.attempts,
                grpc_status: r.grpc_status,
                status: r.status,
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                duration_ms,
                peer_identity: r.peer_identity.as_deref(),
                authz_decision: r.authz_decision,
                authz_rule: r.authz_rule.as_deref(),
            };
            // Serializing plain fields into a String cannot fail.
            if let Ok(s) = serde_json::to_string(&line) {
                out.push_str(&s);
            }
        }
        AccessLogFormat::Text => {
            fn opt(out: &mut String, v: Option<impl std::fmt::Display>) {
                match v {
                    Some(v) => {
                        let _ = write!(out, " {v}");
                    }
                    None => out.push_str(" -"),
                }
            }
            let _ = write!(
                out,
                "{time} {}",
                r.trace_id.map_or_else(|| "-".to_owned(), |t| t.to_string())
            );
            let _ = write!(out, " {} {:?} {:?}", r.protocol, r.target, r.method);
            opt(out, r.route.as_deref());
            opt(out, r.cluster.as_deref());
            opt(out, r.upstream_host);
            let _ = write!(out, " {}", r.attempts);
            opt(out, r.grpc_status);
            opt(out, r.status);
            let _ = write!(out, " {} {} {duration_ms:.3}", r.bytes_in, r.bytes_out);
            opt(out, r.peer_identity.as_deref());
            opt(out, r.authz_decision);
            opt(out, r.authz_rule.as_deref());
        }
    }
    out.push('\n');
}

enum Message {
    Line(Box<AccessRecord>),
    Flush(oneshot::Sender<()>),
}

/// The handle requests log through: cheap to clone, never blocks.
#[derive(Clone)]
pub struct AccessLog {
    tx: mpsc::Sender<Message>,
    dropped: Counter,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the access log file {path}: {source}")]
pub struct AccessLogError {
    path: String,
    #[source]
    source: io::Error,
}

impl AccessLog {
    /// Opens `sink` and starts the writer task (on the current tokio runtime). The task ends
    /// once every handle is dropped and the queue is written.
    pub fn start(
        format: AccessLogFormat,
        sink: &AccessLogSink,
        metrics: &Metrics,
    ) -> Result<(Self, JoinHandle<()>), AccessLogError> {
        let out: Box<dyn AsyncWrite + Send + Unpin> = match sink {
            AccessLogSink::Stdout => Box::new(tokio::io::stdout()),
            AccessLogSink::File(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| AccessLogError {
                        path: path.display().to_string(),
                        source,
                    })?;
                Box::new(tokio::fs::File::from_std(file))
            }
        };
        let (tx, rx) = mpsc::channel(ACCESS_LOG_QUEUE);
        let task = tokio::spawn(write_loop(rx, format, out));
        Ok((
            Self {
                tx,
                dropped: metrics.access_log_dropped.clone(),
            },
            task,
        ))
    }

    /// Queues the line of `record`; drops (and counts) it when the queue is full.
    pub fn log(&self, record: AccessRecord) {
        if self.tx.try_send(Message::Line(Box::new(record))).is_err() {
            self.dropped.inc();
        }
    }

    /// Waits until every line queued before this call is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Message::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Message>,
    format: AccessLogFormat,
    mut out: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let mut buf = String::with_capacity(16 * 1024);
    let mut flushed = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Write whatever is queued in one go.
        while let Some(m) = next {
            match m {
                Message::Line(r) => format_line(&r, format, &mut buf),
                Message::Flush(done) => flushed.push(done),
            }
            next = if buf.len() < 64 * 1024 {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if !buf.is_empty() {
            if let Err(e) = out.write_all(buf.as_bytes()).await {
                tracing::warn!(error = %e, "cannot write the access log");
            }
            buf.clear();
        }
        if let Err(e) = out.flush().await {
            tracing::warn!(error = %e, "cannot flush the access log");
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AccessRecord {
        let mut r = AccessRecord::new(
            "proxy-http",
            UNIX_EPOCH + Duration::from_millis(1_767_323_045_678),
        );
        r.trace_id = Some(TraceId([0xab; 16]));
        r.target = "orders".into();
        r.method = "/api/v1 \"x\"".into();
        r.route = Some("egress/0".into());
        r.cluster = Some("orders".into());
        r.upstream_host = Some("127.0.0.1:8080".parse().unwrap());
        r.attempts = 2;
        r.status = Some(200);
        r.bytes_in = 3;
        r.bytes_out = 5;
        r.duration = Duration::from_micros(1500);
        r
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(1_767_323_045_678)),
            "2026-01-02T03:04:05.678Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z",
            "a leap day"
        );
    }

    #[test]
    fn json_lines_carry_every_known_field() {
        let mut out = String::new();
        format_line(&record(), AccessLogFormat::Json, &mut out);
        assert!(out.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["time"], "2026-01-02T03:04:05.678Z");
        assert_eq!(v["traceId"], "ab".repeat(16));
        assert_eq!(v["protocol"], "proxy-http");
        assert_eq!(v["target"], "orders");
        assert_eq!(v["method"], "/api/v1 \"x\"");
        assert_eq!(v["route"], "egress/0");
        assert_eq!(v["cluster"], "orders");
        assert_eq!(v["upstreamHost"], "127.0.0.1:8080");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytesIn"], 3);
        assert_eq!(v["bytesOut"], 5);
        assert_eq!(v["durationMs"], 1.5);
        assert!(v.get("grpcStatus").is_none(), "absent fields are left out");
    }

    #[test]
    fn text_lines_use_dashes_for_absent_fields() {
        let mut out = String::new();
        let mut r = record();
        r.route = None;
        r.grpc_status = Some(14);
        format_line(&r, AccessLogFormat::Text, &mut out);
        assert_eq!(
            out,
            format!(
                "2026-01-02T03:04:05.678Z {} proxy-http \"orders\" \"/api/v1 \\\"x\\\"\" - orders 127.0.0.1:8080 2 14 200 3 5 1.500 - - -\n",
                "ab".repeat(16)
            )
        );
    }

    #[tokio::test]
    async fn lines_reach_the_file_and_overflow_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let metrics = Metrics::new();
        let (log, task) = AccessLog::start(
            AccessLogFormat::Json,
            &AccessLogSink::File(path.clone()),
            &metrics,
        )
        .unwrap();
        log.log(record());
        log.log(record());
        log.flush().await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
        drop(log);
        task.await.unwrap();

        // A queue nobody drains: lines past its size are dropped and counted.
        let (tx, _rx) = mpsc::channel(1);
        let stalled = AccessLog {
            tx,
            dropped: metrics.access_log_dropped.clone(),
        };
        stalled.log(record());
        stalled.log(record());
        stalled.log(record());
        assert_eq!(metrics.access_log_dropped.get(), 2);
        assert!(
            metrics
                .encode()
                .contains("outrigger_access_log_dropped_total 2")
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let metrics = Metrics::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = AccessLog::start(
            AccessLogFormat::Text,
            &AccessLogSink::File("/nonexistent-dir/access.log".into()),
            &metrics,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open the access log file /nonexistent-dir/access.log: "),
            "{err}"
        );
    }
}
