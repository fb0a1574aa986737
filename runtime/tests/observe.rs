//! Access logs, W3C trace context and span export through a whole sidecar: a call through the
//! gRPC API, a call through Dapr's HTTP API and a request on a proxy listener's socket each
//! leave a line with the call's fields (JSON or text, in a file), upstreams see a `traceparent`
//! continuing the caller's trace with the sidecar's own span, spans reach a real OTLP collector
//! (gRPC and HTTP) as one tree, and with everything off nothing of the sort happens: no line,
//! no span, the caller's `traceparent` passed on untouched.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::trace::v1::{Span as OtlpSpan, span::SpanKind};
use serde_json::Value;
use support::{
    collector::{Collector, attr, hex},
    *,
};
use tonic::metadata::MetadataValue;

const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// `config` plus observability settings and a proxy listener on a real socket.
fn observed(upstream: &Upstream, extra: &str) -> String {
    let base = config(&[upstream.addr], "", "");
    let base = base.replace(
        "  - {name: egress, protocol: http, routeTable: main}",
        "  - {name: egress, protocol: http, routeTable: main}\n  - {name: edge, protocol: http, address: \"127.0.0.1:0\", routeTable: main}",
    );
    format!("{base}{extra}")
}

/// One HTTP/1.1 request to `addr`.
async fn http_call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.expect("body");
    status
}

/// An `InvokeService` call of `hello` on `svc-a` carrying `traceparent`.
fn traced(
    data: &str,
    verb: i32,
    traceparent: &'static str,
) -> tonic::Request<outrigger_proto::spec::proto::runtime::v1::InvokeServiceRequest> {
    let mut req = tonic::Request::new(layotto_req("svc-a", "hello", data, verb, ""));
    req.metadata_mut()
        .insert("traceparent", MetadataValue::from_static(traceparent));
    req
}

fn traceparent(seen: &Seen) -> Option<String> {
    seen.headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_trace_context_at_every_edge() {
    let upstream = Upstream::fixed("hello!").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let yaml = observed(
        &upstream,
        &format!(
            "accessLog: {{format: json, path: {}}}\ntracing: {{}}\n",
            path.display()
        ),
    );
    let mut s = start(&yaml).await;

    // gRPC, continuing the caller's trace.
    let req = traced("ping", 3, CALLER);
    let resp = s.layotto.invoke_service(req).await.expect("ok");
    assert_eq!(text(resp.into_inner().data), "hello!");
    // Dapr's HTTP API, no trace context: the sidecar starts a trace.
    let api = s.sidecar.http_api_address().expect("http api on");
    assert_eq!(
        http_call(api, "/v1.0/invoke/svc-b/method/items", &[], "abc").await,
        200
    );
    // A proxy listener's own socket, with a malformed traceparent: replaced by a new trace.
    let edge = s
        .sidecar
        .proxy()
        .bound_addresses()
        .into_iter()
        .find_map(|(name, addr)| (name == "edge").then_some(addr))
        .expect("edge is bound");
    assert_eq!(
        http_call(
            edge,
            "/direct",
            &[("id", "svc-c"), ("traceparent", "00-zz")],
            ""
        )
        .await,
        200
    );
    upstream.received(3).await;

    let seen = upstream.requests();
    let forwarded: Vec<String> = seen
        .iter()
        .map(|r| traceparent(r).expect("traceparent"))
        .collect();
    let parts = |tp: &str| -> (String, String) {
        let f: Vec<&str> = tp.split('-').collect();
        assert_eq!(f.len(), 4, "{tp}");
        assert_eq!((f[0], f[3]), ("00", "01"), "{tp}");
        (f[1].to_owned(), f[2].to_owned())
    };
    let (trace, parent) = parts(&forwarded[0]);
    assert_eq!(trace, CALLER_TRACE, "the upstream sees the caller's trace");
    assert_ne!(parent, CALLER_SPAN, "and the sidecar's span as the parent");
    let (trace_b, _) = parts(&forwarded[1]);
    let (trace_c, _) = parts(&forwarded[2]);
    assert_ne!(trace_b, CALLER_TRACE);
    assert_ne!(
        trace_c, trace_b,
        "every call without context starts its own trace"
    );

    s.sidecar.flush_access_log().await;
    let log = std::fs::read_to_string(&path).expect("the access log exists");
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let by = |protocol: &str, target: &str| -> &Value {
        lines
            .iter()
            .find(|l| l["protocol"] == protocol && l["target"] == target)
            .unwrap_or_else(|| panic!("no {protocol} line for {target} in {log}"))
    };
    let grpc = by("grpc", "svc-a");
    assert_eq!(grpc["traceId"], CALLER_TRACE);
    assert_eq!(grpc["method"], "hello");
    assert_eq!(grpc["grpcStatus"], 0);
    assert_eq!(grpc["status"], 200);
    assert_eq!(grpc["bytesIn"], 4);
    assert_eq!(grpc["bytesOut"], 6);
    assert!(grpc["time"].as_str().unwrap().ends_with('Z'));
    assert!(grpc["durationMs"].as_f64().unwrap() >= 0.0);
    // The same call's hop through the in-process proxy listener: route, cluster, host, tries.
    let hop = by("proxy-http", "svc-a");
    assert_eq!(hop["traceId"], CALLER_TRACE);
    assert_eq!(hop["method"], "/hello");
    assert_eq!(hop["route"], "main/0");
    assert_eq!(hop["cluster"], "backend");
    assert_eq!(hop["upstreamHost"], upstream.addr.to_string());
    assert_eq!(hop["attempts"], 1);
    assert_eq!(hop["status"], 200);
    assert_eq!(hop["bytesIn"], 4);
    assert_eq!(hop["bytesOut"], 6);

    let http_api = by("http-api", "svc-b");
    assert_eq!(http_api["traceId"], trace_b.as_str());
    assert_eq!(http_api["method"], "items");
    assert_eq!(http_api["status"], 200);
    assert_eq!(http_api["bytesIn"], 3);
    assert_eq!(http_api["bytesOut"], 6);
    assert!(http_api.get("grpcStatus").is_none());

    let direct = by("proxy-http", "svc-c");
    assert_eq!(direct["traceId"], trace_c.as_str());
    assert_eq!(direct["method"], "/direct");
    assert_eq!(direct["route"], "main/0");
    assert_eq!(direct["attempts"], 1);
    assert_eq!(lines.len(), 5, "grpc + hop, http-api + hop, direct: {log}");

    // A call that fails: the gRPC code and no upstream.
    let err = s
        .layotto
        .invoke_service(layotto_req("other", "x", "", 0, ""))
        .await
        .expect_err("no route");
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.sidecar.flush_access_log().await;
    let log = std::fs::read_to_string(&path).unwrap();
    let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    assert_eq!(last["protocol"], "grpc");
    assert_eq!(last["grpcStatus"], tonic::Code::NotFound as i32);
    let hop: Value = serde_json::from_str(log.lines().rev().nth(1).unwrap()).unwrap();
    assert_eq!(hop["protocol"], "proxy-http");
    assert_eq!(hop["status"], 404);
    assert_eq!(hop["attempts"], 0);
    assert!(hop.get("cluster").is_none());
    s.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_without_tracing_still_name_the_trace() {
    let upstream = Upstream::fixed("ok").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let yaml = observed(
        &upstream,
        &format!("accessLog: {{format: text, path: {}}}\n", path.display()),
    );
    let mut s = start(&yaml).await;
    let req = traced("", 0, CALLER);
    s.layotto.invoke_service(req).await.expect("ok");
    s.sidecar.flush_access_log().await;
    let log = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    let hop: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(
        &hop[1..],
        &[
            CALLER_TRACE,
            "proxy-http",
            "\"svc-a\"",
            "\"/hello\"",
            "main/0",
            "backend",
            &upstream.addr.to_string(),
            "1",
            "-",
            "200",
            "0",
            "2",
            hop[13],
            "-",
            "-",
            "-",
        ],
        "{log}"
    );
    let grpc: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        &grpc[1..5],
        &[CALLER_TRACE, "grpc", "\"svc-a\"", "\"hello\""]
    );
    assert_eq!(&grpc[5..12], &["-", "-", "-", "0", "0", "200", "0"]);
    s.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_off_the_callers_context_passes_untouched() {
    let upstream = Upstream::fixed("ok").await;
    let mut s = start(&observed(&upstream, "")).await;
    let req = traced("", 0, CALLER);
    s.layotto.invoke_service(req).await.expect("ok");
    s.layotto
        .invoke_service(layotto_req("svc-a", "hello", "", 0, ""))
        .await
        .expect("ok");
    upstream.received(2).await;
    let seen = upstream.requests();
    assert_eq!(traceparent(&seen[0]).as_deref(), Some(CALLER));
    assert_eq!(traceparent(&seen[1]), None, "no trace is started");
    assert!(
        !s.metrics.encode().contains("access_log_dropped_total 1"),
        "nothing queued"
    );
    s.sidecar.shutdown().await;
}

/// The upstream's `traceparent` fields: trace id, parent id, flags.
fn fields(tp: &str) -> (String, String, String) {
    let f: Vec<&str> = tp.split('-').collect();
    assert_eq!(f.len(), 4, "{tp}");
    (f[1].to_owned(), f[2].to_owned(), f[3].to_owned())
}

fn kind_of(span: &OtlpSpan) -> SpanKind {
    SpanKind::try_from(span.kind).expect("a known kind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_traced_calls_reach_an_otlp_collector_over_grpc() {
    let upstream = Upstream::fixed("hello!").await;
    let collector = Collector::grpc().await;
    let yaml = observed(
        &upstream,
        &format!(
            "tracing: {{otlp: {{endpoint: \"http://{}\"}}}}\n",
            collector.addr
        ),
    );
    let mut s = start(&yaml).await;

    // InvokeService, continuing the caller's trace.
    let req = traced("ping", 3, CALLER);
    let resp = s.layotto.invoke_service(req).await.expect("ok");
    assert_eq!(text(resp.into_inner().data), "hello!");
    s.sidecar.flush_spans().await;
    let spans = collector.spans();
    assert_eq!(
        spans.len(),
        2,
        "a server span and one client span: {spans:#?}"
    );
    let server = spans
        .iter()
        .find(|s| kind_of(s) == SpanKind::Server)
        .expect("server span");
    let client = spans
        .iter()
        .find(|s| kind_of(s) == SpanKind::Client)
        .expect("client span");
    assert_eq!(server.name, "spec.proto.runtime.v1.Runtime/InvokeService");
    assert_eq!(hex(&server.trace_id), CALLER_TRACE);
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "the sidecar's span is a child of the caller's"
    );
    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(
        client.parent_span_id, server.span_id,
        "the try is a child of the sidecar's span"
    );
    let (trace, parent, flags) = fields(&traceparent(&upstream.requests()[0]).expect("sent"));
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(
        parent,
        hex(&client.span_id),
        "the upstream's parent is the try"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        attr(server, "outrigger.target_id").as_deref(),
        Some("svc-a")
    );
    assert_eq!(attr(server, "outrigger.method").as_deref(), Some("hello"));
    assert_eq!(attr(server, "rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr(client, "outrigger.route").as_deref(), Some("main/0"));
    assert_eq!(
        attr(client, "outrigger.cluster").as_deref(),
        Some("backend")
    );
    assert_eq!(attr(client, "outrigger.protocol").as_deref(), Some("http"));
    assert_eq!(attr(client, "outrigger.attempt").as_deref(), Some("1"));
    assert_eq!(
        attr(client, "server.port"),
        Some(upstream.addr.port().to_string())
    );
    assert_eq!(
        attr(client, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attr(client, "outrigger.pool_wait_us").is_some());
    assert!(client.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(client.end_time_unix_nano <= server.end_time_unix_nano);
    assert_eq!(collector.services()[0], "outrigger");

    // A proxy listener's own socket, no context: the proxy's server span starts a trace.
    let edge = s
        .sidecar
        .proxy()
        .bound_addresses()
        .into_iter()
        .find_map(|(name, addr)| (name == "edge").then_some(addr))
        .expect("edge is bound");
    assert_eq!(
        http_call(edge, "/direct", &[("id", "svc-c")], "").await,
        200
    );
    s.sidecar.flush_spans().await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let server = &spans[2..]
        .iter()
        .find(|s| kind_of(s) == SpanKind::Server)
        .expect("the proxy's server span");
    assert_eq!(server.name, "POST");
    assert!(server.parent_span_id.is_empty(), "a new trace");
    assert_eq!(attr(server, "outrigger.listener").as_deref(), Some("edge"));
    assert_eq!(
        attr(server, "outrigger.cluster").as_deref(),
        Some("backend")
    );
    let client = spans[2..]
        .iter()
        .find(|s| kind_of(s) == SpanKind::Client)
        .expect("its try");
    assert_eq!(client.parent_span_id, server.span_id);
    let m = s.metrics.encode();
    assert!(
        m.contains("outrigger_trace_spans_exported_total{kind=\"exported\"} 4"),
        "{m}"
    );
    s.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_and_unsampled_calls_export_nothing() {
    const UNSAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let upstream = Upstream::fixed("ok").await;
    let collector = Collector::http().await;
    let yaml = observed(
        &upstream,
        &format!(
            "tracing: {{samplingRatio: 0, otlp: {{endpoint: \"http://{}\", protocol: http/protobuf}}}}\n",
            collector.addr
        ),
    );
    let mut s = start(&yaml).await;
    // The caller chose not to sample; the sidecar keeps that decision.
    let req = traced("", 0, UNSAMPLED);
    s.layotto.invoke_service(req).await.expect("ok");
    // No context and a sampling ratio of 0: a trace that is not sampled.
    s.layotto
        .invoke_service(layotto_req("svc-a", "hello", "", 0, ""))
        .await
        .expect("ok");
    s.sidecar.flush_spans().await;
    assert!(
        collector.spans().is_empty(),
        "nothing sampled, nothing exported"
    );
    let seen = upstream.requests();
    let (trace, _, flags) = fields(&traceparent(&seen[0]).unwrap());
    assert_eq!((trace.as_str(), flags.as_str()), (CALLER_TRACE, "00"));
    let (_, _, flags) = fields(&traceparent(&seen[1]).unwrap());
    assert_eq!(flags, "00", "propagated even when not sampled");

    let req = traced("", 0, CALLER);
    s.layotto.invoke_service(req).await.expect("ok");
    s.sidecar.flush_spans().await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "over OTLP/HTTP: {spans:#?}");
    assert!(spans.iter().all(|s| hex(&s.trace_id) == CALLER_TRACE));
    s.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_never_fails_a_call() {
    let upstream = Upstream::fixed("ok").await;
    let dead = dead_address().await;
    let yaml = observed(
        &upstream,
        &format!("tracing: {{otlp: {{endpoint: \"http://{dead}\", timeoutMs: 2000}}}}\n"),
    );
    let mut s = start(&yaml).await;
    for _ in 0..3 {
        let req = traced("", 0, CALLER);
        s.layotto
            .invoke_service(req)
            .await
            .expect("the call succeeds");
    }
    s.sidecar.flush_spans().await;
    let m = s.metrics.encode();
    assert!(
        m.contains("outrigger_trace_spans_exported_total{kind=\"failed\"} 6"),
        "{m}"
    );
    s.sidecar.shutdown().await;
}
