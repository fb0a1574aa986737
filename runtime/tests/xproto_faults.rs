//! Bolt and Dubbo in the proxy core against scripted peers (raw frames from `outrigger-codec`
//! on real sockets), faults first: an upstream that closes mid-frame, answers an unknown id or
//! never answers; bytes that are not the protocol on a listener. Then the proxy's own
//! behaviour: heartbeats answered and never forwarded, request ids rewritten per upstream
//! connection and restored, its errors in each protocol's status codes, and one `auto`
//! listener serving HTTP, Bolt and Dubbo from one route table.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use outrigger_codec::{Limits, bolt, dubbo, hessian::Value};
use parking_lot::Mutex;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tonic::{Code, Request};

const SERVICE: &str = "com.example.Echo:1.0";

/// What the scripted Bolt upstream does with the n-th request (0-based).
#[derive(Clone, Copy, Debug)]
enum Act {
    /// Answer SUCCESS with the request's content prefixed by `re:`.
    Echo,
    /// Write the first bytes of an answer, then close the connection.
    CloseMidFrame,
    /// Answer under another request id.
    WrongId,
    /// Never answer.
    Silent,
}

/// A Bolt upstream on 127.0.0.1:0 that follows a script and records every frame it reads.
struct FakeBolt {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<bolt::Frame>>>,
    task: JoinHandle<()>,
}

impl Drop for FakeBolt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeBolt {
    async fn start(script: impl Fn(usize) -> Act + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<bolt::Frame>>> = Arc::default();
        let script = Arc::new(script);
        let count = Arc::new(AtomicUsize::new(0));
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let (seen, script, count) = (seen.clone(), script.clone(), count.clone());
                    tokio::spawn(async move {
                        let mut buf = BytesMut::new();
                        loop {
                            let frame = loop {
                                match bolt::decode(&mut buf, &Limits::default()) {
                                    Ok(Some(f)) => break f,
                                    Ok(None) => {}
                                    Err(_) => return,
                                }
                                if conn.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                                    return;
                                }
                            };
                            seen.lock().push(frame.clone());
                            if let bolt::Kind::Heartbeat { .. } = frame.kind {
                                write(&mut conn, &frame.heartbeat_ack()).await;
                                continue;
                            }
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let mut answer = frame.response(bolt::status::SUCCESS);
                            let mut content = b"re:".to_vec();
                            content.extend_from_slice(&frame.content);
                            answer.content = Bytes::from(content);
                            match script(n) {
                                Act::Echo => write(&mut conn, &answer).await,
                                Act::CloseMidFrame => {
                                    let mut bytes = BytesMut::new();
                                    bolt::encode(&answer, &mut bytes).unwrap();
                                    let _ = conn.write_all(&bytes[..12]).await;
                                    return;
                                }
                                Act::WrongId => {
                                    answer.request_id = answer.request_id.wrapping_add(1000);
                                    write(&mut conn, &answer).await;
                                }
                                Act::Silent => {}
                            }
                        }
                    });
                }
            })
        };
        Self { addr, seen, task }
    }

    fn requests(&self) -> Vec<bolt::Frame> {
        self.seen
            .lock()
            .iter()
            .filter(|f| matches!(f.kind, bolt::Kind::Request { .. }))
            .cloned()
            .collect()
    }

    fn heartbeats(&self) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|f| matches!(f.kind, bolt::Kind::Heartbeat { .. }))
            .count()
    }
}

async fn write(conn: &mut TcpStream, frame: &bolt::Frame) {
    let mut bytes = BytesMut::new();
    bolt::encode(frame, &mut bytes).unwrap();
    let _ = conn.write_all(&bytes).await;
}

/// A sidecar with a bolt channel and bolt, dubbo and auto listeners on real sockets; Bolt
/// requests for the echo service go to `bolt_upstream`, Dubbo ones to a silent upstream.
fn config(bolt_upstream: SocketAddr, dubbo_upstream: SocketAddr) -> String {
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc:
  timeoutMs: 3000
  channels: [{{protocol: bolt, size: 2, listener: bolt_in}}]
listeners:
  - {{name: bolt_in, protocol: bolt, address: "127.0.0.1:0", routeTable: rpc}}
  - {{name: dubbo_in, protocol: dubbo, address: "127.0.0.1:0", routeTable: rpc}}
  - {{name: auto_in, protocol: auto, address: "127.0.0.1:0", routeTable: rpc}}
routeTables:
  - name: rpc
    routes:
      - match: {{headers: [{{name: service, exact: "{SERVICE}"}}]}}
        cluster: bolt_up
        timeoutMs: 400
      - match: {{headers: [{{name: service, exact: "org.example.Silent"}}]}}
        cluster: dubbo_up
        timeoutMs: 300
clusters:
  - {{name: bolt_up, protocol: bolt, hosts: [{{address: "{bolt_upstream}"}}]}}
  - {{name: dubbo_up, protocol: dubbo, hosts: [{{address: "{dubbo_upstream}"}}]}}
"#
    )
}

/// A Dubbo upstream that accepts connections and never answers anything.
async fn silent_dubbo() -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            held.push(c);
        }
    });
    (addr, task)
}

fn invoke(
    method: &str,
    content: &str,
    timeout_ms: Option<u64>,
) -> Request<outrigger_proto::spec::proto::runtime::v1::InvokeServiceRequest> {
    let mut req = Request::new(layotto_req(SERVICE, method, content, 0, ""));
    if let Some(ms) = timeout_ms {
        req.metadata_mut()
            .insert("rpc_request_timeout", ms.to_string().parse().unwrap());
    }
    req
}

fn pending_total(m: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with("outrigger_mux_pending{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn counter(m: &str, prefix: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_bolt_upstream_sees_the_sidecars_span_and_the_hop_is_logged() {
    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let up = FakeBolt::start(|_| Act::Echo).await;
    let (dubbo, _d) = silent_dubbo().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let collector = support::collector::Collector::grpc().await;
    let yaml = format!(
        "{}accessLog: {{path: {}}}\ntracing: {{otlp: {{endpoint: \"http://{}\"}}}}\n",
        config(up.addr, dubbo),
        path.display(),
        collector.addr
    );
    let mut rt = start(&yaml).await;
    let mut req = invoke("get", "one", None);
    req.metadata_mut()
        .insert("traceparent", CALLER.parse().unwrap());
    let ok = rt.layotto.invoke_service(req).await.expect("echo");
    assert_eq!(text(ok.into_inner().data), "re:one");
    let sent = up.requests();
    let tp = sent[0]
        .headers
        .get_str("traceparent")
        .expect("a Bolt header carries the trace context")
        .to_owned();
    let fields: Vec<&str> = tp.split('-').collect();
    assert_eq!(fields[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{tp}");
    assert_ne!(
        fields[2], "00f067aa0ba902b7",
        "the sidecar's span is the parent: {tp}"
    );
    rt.sidecar.flush_spans().await;
    let spans = collector.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let (server, client) = if spans[0].kind == 2 {
        (&spans[0], &spans[1])
    } else {
        (&spans[1], &spans[0])
    };
    use support::collector::{attr, hex};
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(
        hex(&server.span_id),
        fields[2],
        "the frame names the sidecar's server span"
    );
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(attr(client, "outrigger.protocol").as_deref(), Some("bolt"));
    assert_eq!(
        attr(client, "outrigger.cluster").as_deref(),
        Some("bolt_up")
    );
    assert_eq!(attr(client, "outrigger.status").as_deref(), Some("0"));

    rt.sidecar.flush_access_log().await;
    let log = std::fs::read_to_string(&path).unwrap();
    let hop: serde_json::Value = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["protocol"] == "bolt")
        .unwrap_or_else(|| panic!("no bolt line in {log}"));
    assert_eq!(hop["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hop["target"], SERVICE);
    assert_eq!(hop["method"], "get");
    assert_eq!(hop["route"], "rpc/0");
    assert_eq!(hop["cluster"], "bolt_up");
    assert_eq!(hop["upstreamHost"], up.addr.to_string());
    assert_eq!(hop["attempts"], 1);
    assert_eq!(hop["status"], 0, "Bolt SUCCESS");
    assert_eq!(hop["bytesIn"], 3);
    assert_eq!(hop["bytesOut"], 6);
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn an_upstream_closing_mid_frame_fails_the_call_and_is_replaced() {
    let up = FakeBolt::start(|n| {
        if n == 0 {
            Act::CloseMidFrame
        } else {
            Act::Echo
        }
    })
    .await;
    let (dubbo, _d) = silent_dubbo().await;
    let mut rt = start(&config(up.addr, dubbo)).await;
    let err = rt
        .layotto
        .invoke_service(invoke("get", "one", None))
        .await
        .expect_err("the upstream hung up");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("mid-frame"), "{}", err.message());
    let ok = rt
        .layotto
        .invoke_service(invoke("get", "two", None))
        .await
        .expect("a new upstream connection")
        .into_inner();
    assert_eq!(text(ok.data), "re:two");
    assert_eq!(pending_total(&rt.metrics.encode()), 0.0);
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn an_answer_under_an_unknown_id_leaves_the_call_to_its_deadline() {
    let up = FakeBolt::start(|n| if n == 0 { Act::WrongId } else { Act::Echo }).await;
    let (dubbo, _d) = silent_dubbo().await;
    let mut rt = start(&config(up.addr, dubbo)).await;
    let err = rt
        .layotto
        .invoke_service(invoke("get", "one", None))
        .await
        .expect_err("no answer under the right id");
    // The route timeout (400 ms) passes first: the proxy answers TIMEOUT (7) itself.
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("route timeout of 400 ms"),
        "{}",
        err.message()
    );
    let m = rt.metrics.encode();
    assert_eq!(
        counter(
            &m,
            "outrigger_mux_unknown_responses_total{protocol=\"bolt\",name=\"upstream/bolt_up/"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(pending_total(&m), 0.0, "{m}");
    // The connection survived the stray answer.
    let ok = rt
        .layotto
        .invoke_service(invoke("get", "two", None))
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(text(ok.data), "re:two");
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_never_answers_hits_the_deadline_and_is_forgotten() {
    let up = FakeBolt::start(|_| Act::Silent).await;
    let (dubbo, _d) = silent_dubbo().await;
    let mut rt = start(&config(up.addr, dubbo)).await;
    let err = rt
        .layotto
        .invoke_service(invoke("get", "x", Some(150)))
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    // The channel forgot the call at its deadline; the proxy forgets its upstream call at the
    // caller's remaining time (the Bolt timeout field), well before the route's.
    let metrics = rt.metrics.clone();
    assert!(
        eventually(Duration::from_secs(2), || pending_total(&metrics.encode())
            == 0.0)
        .await,
        "{}",
        rt.metrics.encode()
    );
    assert_eq!(up.requests().len(), 1);
    rt.sidecar.shutdown().await;
}

async fn eventually(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// A raw client connection.
struct Raw {
    conn: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            conn: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send_bolt(&mut self, f: &bolt::Frame) {
        write(&mut self.conn, f).await;
    }

    async fn send_dubbo(&mut self, f: &dubbo::Frame) {
        let mut b = BytesMut::new();
        dubbo::encode(f, &mut b).unwrap();
        self.conn.write_all(&b).await.unwrap();
    }

    async fn bolt(&mut self) -> bolt::Frame {
        loop {
            if let Some(f) = bolt::decode(&mut self.buf, &Limits::default()).unwrap() {
                return f;
            }
            let n = tokio::time::timeout(Duration::from_secs(3), self.conn.read_buf(&mut self.buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "closed before the answer");
        }
    }

    async fn dubbo(&mut self) -> dubbo::Frame {
        loop {
            if let Some(f) = dubbo::decode(&mut self.buf, &Limits::default()).unwrap() {
                return f;
            }
            let n = tokio::time::timeout(Duration::from_secs(3), self.conn.read_buf(&mut self.buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(n > 0, "closed before the answer");
        }
    }

    /// Whether the proxy closes the connection (reads EOF) within a second.
    async fn closed(&mut self) -> bool {
        let mut scratch = [0u8; 256];
        loop {
            match tokio::time::timeout(Duration::from_secs(1), self.conn.read(&mut scratch)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

fn bolt_request(id: u32, service: &str, content: &'static str) -> bolt::Frame {
    let mut h = bolt::HeaderMap::new();
    h.insert("service", service.to_owned());
    h.insert("sofa_head_method_name", "get");
    bolt::Frame::request(
        id,
        2000,
        "com.alipay.sofa.rpc.core.request.SofaRequest",
        h,
        content,
    )
}

fn dubbo_request(id: u64, service: &str) -> dubbo::Frame {
    let inv = dubbo::RpcInvocation {
        dubbo_version: "2.0.2".into(),
        service_path: service.into(),
        service_version: String::new(),
        method: "get".into(),
        parameter_types_desc: "Ljava/lang/String;".into(),
        args: vec![Value::string("x")],
        attachments: vec![],
    };
    dubbo::Frame::request(id, inv.encode())
}

#[tokio::test]
async fn garbage_on_a_listener_closes_that_connection_only() {
    let up = FakeBolt::start(|_| Act::Echo).await;
    let (dubbo, _d) = silent_dubbo().await;
    let mut rt = start(&config(up.addr, dubbo)).await;
    let mut oversized = BytesMut::new();
    // A Bolt v1 request header announcing 1 GiB of content.
    oversized.extend_from_slice(&[1, 1, 0, 1, 1, 0, 0, 0, 9, 1, 0, 0, 0x0b, 0xb8, 0, 0, 0, 0]);
    oversized.extend_from_slice(&(1i32 << 30).to_be_bytes());
    let cases: [(&str, &[u8]); 5] = [
        ("bolt_in", b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"),
        ("bolt_in", &oversized),
        ("dubbo_in", b"\xda\xbbgarbage that is not a length......"),
        ("dubbo_in", b"\x01\x02\x03\x04"),
        ("auto_in", b"\x01\x09\x00\x01 not a bolt type"),
    ];
    for (listener, garbage) in cases {
        let addr = bound(&rt, listener);
        // A well-behaved connection, opened first and kept open throughout.
        let mut good = Raw::connect(bound(&rt, "bolt_in")).await;
        let mut bad = Raw::connect(addr).await;
        bad.conn.write_all(garbage).await.unwrap();
        assert!(
            bad.closed().await,
            "{listener}: {garbage:02x?} closes the connection"
        );
        good.send_bolt(&bolt_request(5, SERVICE, "still here"))
            .await;
        let answer = good.bolt().await;
        assert_eq!(answer.content, &b"re:still here"[..], "{listener}");
    }
    let m = rt.metrics.encode();
    assert_eq!(
        counter(&m, "outrigger_xprotocol_decode_errors_total{"),
        5.0,
        "{m}"
    );
    // The process is fine: the gRPC API still answers through the bolt channel.
    let ok = rt
        .layotto
        .invoke_service(invoke("get", "api", None))
        .await
        .expect("still serving")
        .into_inner();
    assert_eq!(text(ok.data), "re:api");
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_rewritten_per_upstream_connection_and_restored() {
    let up = FakeBolt::start(|_| Act::Echo).await;
    let (dubbo, _d) = silent_dubbo().await;
    let rt = start(&config(up.addr, dubbo)).await;
    // Two clients using the same ids at once, one through the auto listener.
    let mut a = Raw::connect(bound(&rt, "bolt_in")).await;
    let mut b = Raw::connect(bound(&rt, "auto_in")).await;
    a.send_bolt(&bolt_request(41, SERVICE, "a41")).await;
    a.send_bolt(&bolt_request(42, SERVICE, "a42")).await;
    b.send_bolt(&bolt_request(41, SERVICE, "b41")).await;
    let mut got_a = [a.bolt().await, a.bolt().await];
    got_a.sort_by_key(|f| f.request_id);
    assert_eq!(
        got_a
            .iter()
            .map(|f| (f.request_id, f.content.clone()))
            .collect::<Vec<_>>(),
        vec![
            (41, Bytes::from_static(b"re:a41")),
            (42, Bytes::from_static(b"re:a42"))
        ]
    );
    let got_b = b.bolt().await;
    assert_eq!(
        (got_b.request_id, got_b.content),
        (41, Bytes::from_static(b"re:b41"))
    );
    let upstream_ids: Vec<u32> = up.requests().iter().map(|f| f.request_id).collect();
    assert_eq!(upstream_ids.len(), 3);
    let mut distinct = upstream_ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "the pool gave each its own id: {upstream_ids:?}"
    );
    // The target and method reached the upstream untouched.
    assert!(
        up.requests()
            .iter()
            .all(|f| f.headers.get_str("service") == Some(SERVICE))
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn heartbeats_are_answered_by_the_listener_and_never_forwarded() {
    let up = FakeBolt::start(|_| Act::Echo).await;
    let (dubbo, _d) = silent_dubbo().await;
    let rt = start(&config(up.addr, dubbo)).await;
    let mut b = Raw::connect(bound(&rt, "bolt_in")).await;
    b.send_bolt(&bolt::Frame::heartbeat(9)).await;
    let ack = b.bolt().await;
    assert_eq!(ack.kind, bolt::Kind::HeartbeatAck { status: 0 });
    assert_eq!(ack.request_id, 9);
    let mut d = Raw::connect(bound(&rt, "auto_in")).await;
    d.send_dubbo(&dubbo::Frame::heartbeat(1 << 33)).await;
    let reply = d.dubbo().await;
    assert!(reply.is_heartbeat() && !reply.is_request, "{reply:?}");
    assert_eq!((reply.status, reply.request_id), (20, 1 << 33));
    // A request afterwards opens the upstream connection; no heartbeat ever reached it.
    b.send_bolt(&bolt_request(1, SERVICE, "x")).await;
    b.bolt().await;
    assert_eq!(up.heartbeats(), 0);
    assert_eq!(up.requests().len(), 1);
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn the_proxy_answers_its_own_errors_in_each_protocols_status_codes() {
    let up = FakeBolt::start(|_| Act::Silent).await;
    let (dubbo, _d) = silent_dubbo().await;
    let rt = start(&config(up.addr, dubbo)).await;
    let mut b = Raw::connect(bound(&rt, "bolt_in")).await;
    b.send_bolt(&bolt_request(3, "com.example.Unknown:1.0", "x"))
        .await;
    let no_route = b.bolt().await;
    assert_eq!(no_route.kind, bolt::Kind::Response { status: 6 });
    assert_eq!(no_route.request_id, 3);
    assert_eq!(
        no_route.headers.get_str("x-outrigger-error"),
        Some("no_route")
    );
    let mut timed = bolt_request(4, SERVICE, "x");
    timed.kind = bolt::Kind::Request { timeout_ms: 100 };
    b.send_bolt(&timed).await;
    let timeout = b.bolt().await;
    assert_eq!(timeout.kind, bolt::Kind::Response { status: 7 });
    assert_eq!(timeout.request_id, 4);

    let mut d = Raw::connect(bound(&rt, "dubbo_in")).await;
    d.send_dubbo(&dubbo_request(11, "org.example.Unknown"))
        .await;
    let no_route = d.dubbo().await;
    assert_eq!((no_route.status, no_route.request_id), (60, 11));
    let dubbo::Reply::Error { message, .. } =
        dubbo::Reply::decode(&no_route, &Limits::default()).unwrap()
    else {
        panic!("an error reply");
    };
    assert!(
        message.starts_with(
            "[outrigger:no_route] no route in table rpc matches dubbo service=org.example.Unknown"
        ),
        "{message}"
    );
    d.send_dubbo(&dubbo_request(12, "org.example.Silent")).await;
    let timeout = d.dubbo().await;
    assert_eq!((timeout.status, timeout.request_id), (30, 12));
    // A Dubbo body that is not Hessian2 (serialization id 6): a bad request, 40.
    let mut odd = dubbo_request(13, "org.example.Silent");
    odd.serialization = 6;
    d.send_dubbo(&odd).await;
    let bad = d.dubbo().await;
    assert_eq!((bad.status, bad.request_id), (40, 13));
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn an_auto_listener_serves_http_bolt_and_dubbo_from_one_table() {
    let up = FakeBolt::start(|_| Act::Echo).await;
    let web = Upstream::fixed("from http").await;
    let (dubbo, _d) = silent_dubbo().await;
    // The catch-all HTTP route comes first; Bolt and Dubbo requests skip it because its
    // cluster speaks HTTP.
    let yaml = config(up.addr, dubbo).replace(
        "    routes:\n",
        "    routes:\n      - {match: {}, cluster: web}\n",
    ) + &format!(
        "  - {{name: web, protocol: http, hosts: [{{address: \"{}\"}}]}}\n",
        web.addr
    );
    let rt = start(&yaml).await;
    let auto = bound(&rt, "auto_in");

    let stream = TcpStream::connect(auto).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            http::Request::builder()
                .uri("/anything")
                .header("host", "auto")
                .header("id", SERVICE)
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "from http");
    assert_eq!(web.count(), 1);

    let mut b = Raw::connect(auto).await;
    b.send_bolt(&bolt_request(8, SERVICE, "via auto")).await;
    let answer = b.bolt().await;
    assert_eq!(answer.kind, bolt::Kind::Response { status: 0 });
    assert_eq!(answer.content, &b"re:via auto"[..]);

    let mut d = Raw::connect(auto).await;
    d.send_dubbo(&dubbo_request(5, "org.example.Silent")).await;
    let timeout = d.dubbo().await;
    assert_eq!(
        (timeout.status, timeout.request_id),
        (30, 5),
        "routed to the dubbo cluster, which never answers"
    );
    assert_eq!(web.count(), 1, "neither reached the http cluster");
    rt.sidecar.shutdown().await;
}
