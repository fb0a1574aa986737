//! Resilience with real upstreams on loopback, for every protocol: outlier detection learning
//! to avoid a host that answers errors and one that refuses connections (HTTP through the
//! gRPC API; Bolt and Dubbo through their listeners, with scripted peers answering the
//! protocols' busy statuses), circuit breakers capping what reaches a slow upstream and
//! shedding the rest at once, a retry budget bounding the load on a failing cluster, and local
//! rate limits. Assertions are on counts and answers, never on timing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use outrigger_codec::{Limits, bolt, dubbo, hessian::Value};
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};
use tonic::Code;

/// The failures counted in the learning phase of the three-host scenarios.
const LEARNING_CALLS: usize = 30;
const MAX_LEARNING_FAILURES: usize = 12;

/// A sidecar config with one HTTP channel (`size` connections) to a named listener routing
/// ids starting with `svc` to cluster `backend` of `hosts`, with `cluster_extra` and
/// `route_extra` lines added to the cluster and the route.
fn http_config(hosts: &[SocketAddr], size: u32, route_extra: &str, cluster_extra: &str) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| format!("{{address: \"{h}\"}}"))
        .collect();
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
rpc:
  timeoutMs: 3000
  channels: [{{protocol: http, size: {size}, listener: egress}}]
listeners:
  - {{name: egress, protocol: http, routeTable: main}}
routeTables:
  - name: main
    routes:
      - match: {{headers: [{{name: id, prefix: svc}}]}}
        cluster: backend
{route_extra}
clusters:
  - name: backend
    hosts: [{hosts}]
    connectTimeoutMs: 200
{cluster_extra}
"#,
        hosts = hosts.join(", ")
    )
}

const EJECT_AFTER_THREE: &str = "    outlierDetection: {consecutiveFailures: 3, baseEjectionMs: 60000, maxEjectionMs: 300000, maxEjectionPercent: 67}";

fn counter(m: &str, prefix: &str) -> f64 {
    m.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `calls` calls one after the other; returns how many failed in the first
/// `LEARNING_CALLS` and how many after.
async fn learn(mut call: impl AsyncFnMut() -> bool, calls: usize) -> (usize, usize) {
    let mut learning = 0;
    let mut after = 0;
    for i in 0..calls {
        if !call().await {
            if i < LEARNING_CALLS {
                learning += 1;
            } else {
                after += 1;
            }
        }
    }
    (learning, after)
}

#[tokio::test]
async fn http_outlier_detection_routes_around_an_erroring_and_a_dead_host() {
    let healthy = Upstream::fixed("{\"ok\":true}").await;
    let erroring = Upstream::start(|_| Reply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        ..Reply::ok("overloaded")
    })
    .await;
    let dead = dead_address().await;
    let hosts = [healthy.addr, erroring.addr, dead];
    let rt = start(&http_config(&hosts, 16, "", EJECT_AFTER_THREE)).await;
    let client = rt.layotto.clone();
    let (learning, after) = learn(
        async || {
            client
                .clone()
                .invoke_service(layotto_req("svc-users", "get", "", 0, ""))
                .await
                .is_ok()
        },
        90,
    )
    .await;
    eprintln!("http: {learning} failures in the first {LEARNING_CALLS} calls, {after} after");
    assert!(
        learning <= MAX_LEARNING_FAILURES,
        "{learning} failures while learning"
    );
    assert_eq!(after, 0, "every call after the learning phase succeeds");
    assert_eq!(erroring.count(), 3, "ejected after three 503s");
    let m = rt.metrics.encode();
    assert_eq!(
        counter(
            &m,
            r#"outrigger_outlier_ejections_total{cluster="backend",reason="http_5xx"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        counter(
            &m,
            r#"outrigger_outlier_ejections_total{cluster="backend",reason="connect_failure"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        counter(&m, r#"outrigger_outlier_ejected_hosts{name="backend"}"#),
        2.0
    );
    // The config dump names the ejected hosts.
    let (status, dump) = admin_get(&rt.sidecar, "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let mut ejected: Vec<String> = dump["ejectedHosts"]["backend"]
        .as_array()
        .expect("ejected hosts of backend")
        .iter()
        .map(|v| v.as_str().expect("address").to_owned())
        .collect();
    ejected.sort();
    let mut want = vec![erroring.addr.to_string(), dead.to_string()];
    want.sort();
    assert_eq!(ejected, want);
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn when_every_host_is_ejected_calls_fail_fast_naming_the_cluster() {
    let erroring = Upstream::start(|_| Reply {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        ..Reply::ok("broken")
    })
    .await;
    let dead = dead_address().await;
    let rt = start(&http_config(
        &[erroring.addr, dead],
        16,
        "",
        "    outlierDetection: {consecutiveFailures: 1, baseEjectionMs: 60000, maxEjectionPercent: 100}",
    ))
    .await;
    let mut client = rt.layotto.clone();
    for _ in 0..2 {
        let e = client
            .invoke_service(layotto_req("svc-users", "get", "", 0, ""))
            .await
            .expect_err("both hosts fail");
        assert_eq!(e.code(), Code::Unavailable);
    }
    let e = client
        .invoke_service(layotto_req("svc-users", "get", "", 0, ""))
        .await
        .expect_err("nothing left");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("cluster backend: all 2 hosts ejected"),
        "{}",
        e.message()
    );
    assert_eq!(erroring.count(), 1, "an ejected host gets no traffic");
    rt.sidecar.shutdown().await;
}

/// A scripted multiplexed upstream: `answer` maps each request to its answer.
struct Peer {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    async fn bolt(status: u16) -> Self {
        Self::start(move |conn, buf| {
            Box::pin(async move {
                let frame = loop {
                    match bolt::decode(buf, &Limits::default()) {
                        Ok(Some(f)) => break f,
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                    if conn.read_buf(buf).await.unwrap_or(0) == 0 {
                        return None;
                    }
                };
                let (answer, counted) = if let bolt::Kind::Heartbeat { .. } = frame.kind {
                    (frame.heartbeat_ack(), false)
                } else {
                    let mut a = frame.response(status);
                    a.content = Bytes::from_static(b"re");
                    (a, true)
                };
                let mut out = BytesMut::new();
                bolt::encode(&answer, &mut out).unwrap();
                conn.write_all(&out).await.ok()?;
                Some(counted)
            })
        })
        .await
    }

    async fn dubbo(status: u8) -> Self {
        Self::start(move |conn, buf| {
            Box::pin(async move {
                let frame = loop {
                    match dubbo::decode(buf, &Limits::default()) {
                        Ok(Some(f)) => break f,
                        Ok(None) => {}
                        Err(_) => return None,
                    }
                    if conn.read_buf(buf).await.unwrap_or(0) == 0 {
                        return None;
                    }
                };
                let (answer, counted) = if frame.is_heartbeat() {
                    (frame.heartbeat_reply(), false)
                } else if status == dubbo::status::OK {
                    let mut w = outrigger_codec::hessian::Writer::new();
                    w.write_int(4); // RESPONSE_NULL_VALUE
                    (frame.response(status, w.finish()), true)
                } else {
                    (frame.error_response(status, "busy"), true)
                };
                let mut out = BytesMut::new();
                dubbo::encode(&answer, &mut out).unwrap();
                conn.write_all(&out).await.ok()?;
                Some(counted)
            })
        })
        .await
    }

    async fn start(
        serve_one: impl for<'a> Fn(
            &'a mut TcpStream,
            &'a mut BytesMut,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Option<bool>> + Send + 'a>,
        > + Send
        + Sync
        + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let serve_one = Arc::new(serve_one);
        let task = {
            let requests = requests.clone();
            tokio::spawn(async move {
                while let Ok((mut conn, _)) = listener.accept().await {
                    let (requests, serve_one) = (requests.clone(), serve_one.clone());
                    tokio::spawn(async move {
                        let mut buf = BytesMut::new();
                        while let Some(counted) = serve_one(&mut conn, &mut buf).await {
                            if counted {
                                requests.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    });
                }
            })
        };
        Self {
            addr,
            requests,
            task,
        }
    }

    fn count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A sidecar with Bolt and Dubbo listeners on real sockets, each routing to a cluster of
/// `bolt_hosts` or `dubbo_hosts` with outlier detection.
fn rpc_config(bolt_hosts: &[SocketAddr], dubbo_hosts: &[SocketAddr]) -> String {
    let list = |hs: &[SocketAddr]| {
        hs.iter()
            .map(|h| format!("{{address: \"{h}\"}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
rpc:
  channels: [{{protocol: bolt, listener: bolt_in}}]
listeners:
  - {{name: bolt_in, protocol: bolt, address: "127.0.0.1:0", routeTable: rpc}}
  - {{name: dubbo_in, protocol: dubbo, address: "127.0.0.1:0", routeTable: rpc}}
routeTables:
  - name: rpc
    routes:
      - {{cluster: bolt_up, timeoutMs: 2000}}
      - {{cluster: dubbo_up, timeoutMs: 2000}}
clusters:
  - name: bolt_up
    protocol: bolt
    connectTimeoutMs: 200
    hosts: [{bolt}]
{EJECT_AFTER_THREE}
  - name: dubbo_up
    protocol: dubbo
    connectTimeoutMs: 200
    hosts: [{dubbo}]
{EJECT_AFTER_THREE}
"#,
        bolt = list(bolt_hosts),
        dubbo = list(dubbo_hosts),
    )
}

/// One Bolt call on a raw connection: the answer's status.
async fn bolt_call(conn: &mut TcpStream, buf: &mut BytesMut, id: u32) -> u16 {
    let mut h = bolt::HeaderMap::new();
    h.insert("service", "com.example.Echo:1.0".to_owned());
    h.insert("sofa_head_method_name", "get");
    let req = bolt::Frame::request(
        id,
        2000,
        "com.alipay.sofa.rpc.core.request.SofaRequest",
        h,
        "x",
    );
    let mut out = BytesMut::new();
    bolt::encode(&req, &mut out).unwrap();
    conn.write_all(&out).await.unwrap();
    loop {
        if let Some(f) = bolt::decode(buf, &Limits::default()).unwrap() {
            let bolt::Kind::Response { status } = f.kind else {
                panic!("not a response: {f:?}")
            };
            assert_eq!(f.request_id, id);
            return status;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_buf(buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
    }
}

/// One Dubbo call on a raw connection: the answer's status.
async fn dubbo_call(conn: &mut TcpStream, buf: &mut BytesMut, id: u64) -> u8 {
    let inv = dubbo::RpcInvocation {
        dubbo_version: "2.0.2".into(),
        service_path: "org.example.Greeter".into(),
        service_version: String::new(),
        method: "sayHello".into(),
        parameter_types_desc: "Ljava/lang/String;".into(),
        args: vec![Value::string("x")],
        attachments: vec![],
    };
    let mut out = BytesMut::new();
    dubbo::encode(&dubbo::Frame::request(id, inv.encode()), &mut out).unwrap();
    conn.write_all(&out).await.unwrap();
    loop {
        if let Some(f) = dubbo::decode(buf, &Limits::default()).unwrap() {
            assert_eq!(f.request_id, id);
            return f.status;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read_buf(buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before the answer");
    }
}

#[tokio::test]
async fn bolt_and_dubbo_outlier_detection_route_around_busy_and_dead_hosts() {
    let bolt_ok = Peer::bolt(bolt::status::SUCCESS).await;
    let bolt_busy = Peer::bolt(bolt::status::SERVER_THREADPOOL_BUSY).await;
    let dubbo_ok = Peer::dubbo(dubbo::status::OK).await;
    let dubbo_busy = Peer::dubbo(dubbo::status::SERVER_THREADPOOL_EXHAUSTED_ERROR).await;
    let dead = dead_address().await;
    let rt = start(&rpc_config(
        &[bolt_ok.addr, bolt_busy.addr, dead],
        &[dubbo_ok.addr, dubbo_busy.addr, dead],
    ))
    .await;

    let mut conn = TcpStream::connect(bound(&rt, "bolt_in")).await.unwrap();
    let mut buf = BytesMut::new();
    let mut id = 0;
    let (learning, after) = learn(
        async || {
            id += 1;
            bolt_call(&mut conn, &mut buf, id).await == bolt::status::SUCCESS
        },
        90,
    )
    .await;
    eprintln!("bolt: {learning} failures in the first {LEARNING_CALLS} calls, {after} after");
    assert!(learning <= MAX_LEARNING_FAILURES, "bolt: {learning}");
    assert_eq!(
        after, 0,
        "bolt: every call after the learning phase succeeds"
    );
    assert_eq!(bolt_busy.count(), 3);
    assert_eq!(bolt_ok.count(), 90 - learning);

    let mut conn = TcpStream::connect(bound(&rt, "dubbo_in")).await.unwrap();
    let mut buf = BytesMut::new();
    let mut id = 0;
    let (learning, after) = learn(
        async || {
            id += 1;
            dubbo_call(&mut conn, &mut buf, id).await == dubbo::status::OK
        },
        90,
    )
    .await;
    eprintln!("dubbo: {learning} failures in the first {LEARNING_CALLS} calls, {after} after");
    assert!(learning <= MAX_LEARNING_FAILURES, "dubbo: {learning}");
    assert_eq!(
        after, 0,
        "dubbo: every call after the learning phase succeeds"
    );
    assert_eq!(dubbo_busy.count(), 3);

    let m = rt.metrics.encode();
    for (cluster, reason) in [
        ("bolt_up", "bolt_status"),
        ("bolt_up", "connect_failure"),
        ("dubbo_up", "dubbo_status"),
        ("dubbo_up", "connect_failure"),
    ] {
        assert_eq!(
            counter(
                &m,
                &format!(
                    "outrigger_outlier_ejections_total{{cluster=\"{cluster}\",reason=\"{reason}\"}}"
                )
            ),
            1.0,
            "{cluster} {reason}: {m}"
        );
    }
    rt.sidecar.shutdown().await;
}

/// An HTTP upstream that holds every request until the gate opens, counting how many it holds
/// at once.
struct Gated {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Gated {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Gated {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, gate) = watch::channel(false);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let task = {
            let (in_flight, max_in_flight, seen) =
                (in_flight.clone(), max_in_flight.clone(), seen.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (in_flight, max_in_flight, seen, gate) = (
                        in_flight.clone(),
                        max_in_flight.clone(),
                        seen.clone(),
                        gate.clone(),
                    );
                    tokio::spawn(async move {
                        let svc = service_fn(move |_req| {
                            let (in_flight, max_in_flight, seen, mut gate) = (
                                in_flight.clone(),
                                max_in_flight.clone(),
                                seen.clone(),
                                gate.clone(),
                            );
                            async move {
                                seen.fetch_add(1, Ordering::SeqCst);
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                max_in_flight.fetch_max(now, Ordering::SeqCst);
                                let _ = gate.wait_for(|open| *open).await;
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                                    b"slow",
                                ))))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        };
        Self {
            addr,
            open,
            in_flight,
            max_in_flight,
            seen,
            task,
        }
    }
}

/// Whether `cond` holds within a few seconds (a guard against hanging, not a timing check).
async fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// Sends `n` calls at once; returns them as they finish.
fn burst(rt: &Running, n: usize) -> JoinSet<Result<String, tonic::Status>> {
    let mut calls = JoinSet::new();
    for i in 0..n {
        let mut client = rt.layotto.clone();
        calls.spawn(async move {
            client
                .invoke_service(layotto_req("svc-slow", &format!("m{i}"), "", 0, ""))
                .await
                .map(|r| text(r.into_inner().data))
        });
    }
    calls
}

/// Waits for `n` of `calls` to finish, all of which must be the circuit breaker's rejection.
async fn shed(calls: &mut JoinSet<Result<String, tonic::Status>>, n: usize, cap: &str) {
    for _ in 0..n {
        let done = tokio::time::timeout(Duration::from_secs(20), calls.join_next())
            .await
            .expect("a call finishes while the upstream holds the others")
            .expect("a call")
            .expect("joined");
        let e = done.expect_err("only rejections finish while the gate is closed");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(
            e.message().contains("circuit breaker of cluster backend") && e.message().contains(cap),
            "{}",
            e.message()
        );
    }
}

#[tokio::test]
async fn a_circuit_breaker_caps_what_reaches_a_slow_upstream_and_sheds_the_rest_at_once() {
    let slow = Gated::start().await;
    let rt = start(&http_config(
        &[slow.addr],
        64,
        "",
        "    circuitBreaker: {maxRequests: 4}",
    ))
    .await;
    let mut calls = burst(&rt, 20);
    // The 16 over the cap come back while the upstream still holds the 4 it was sent.
    shed(&mut calls, 16, "4 requests already in flight (maxRequests)").await;
    let held = slow.in_flight.clone();
    assert!(
        eventually(|| held.load(Ordering::SeqCst) == 4).await,
        "the upstream holds the 4 admitted calls"
    );
    slow.open.send_replace(true);
    while let Some(done) = calls.join_next().await {
        assert_eq!(
            done.expect("joined").expect("admitted calls succeed"),
            "slow"
        );
    }
    assert_eq!(slow.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(slow.seen.load(Ordering::SeqCst), 4);
    let m = rt.metrics.encode();
    assert_eq!(
        counter(
            &m,
            r#"outrigger_circuit_breaker_rejections_total{cluster="backend",limit="max_requests"}"#
        ),
        16.0,
        "{m}"
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn a_circuit_breaker_caps_the_requests_waiting_for_a_connection() {
    let slow = Gated::start().await;
    // One connection to the host: one request in the upstream, two waiting for the
    // connection, the rest turned away at once.
    let rt = start(&http_config(
        &[slow.addr],
        64,
        "",
        "    maxConnections: 1\n    circuitBreaker: {maxRequests: 100, maxPendingRequests: 2}",
    ))
    .await;
    let mut calls = burst(&rt, 10);
    shed(
        &mut calls,
        7,
        "2 requests already wait for a connection (maxPendingRequests)",
    )
    .await;
    slow.open.send_replace(true);
    while let Some(done) = calls.join_next().await {
        assert_eq!(
            done.expect("joined").expect("admitted calls succeed"),
            "slow"
        );
    }
    assert_eq!(slow.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(slow.seen.load(Ordering::SeqCst), 3);
    let m = rt.metrics.encode();
    assert_eq!(
        counter(
            &m,
            r#"outrigger_circuit_breaker_rejections_total{cluster="backend",limit="max_pending_requests"}"#
        ),
        7.0,
        "{m}"
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn a_retry_budget_bounds_the_load_on_a_failing_cluster() {
    let failing = Upstream::start(|_| Reply {
        status: StatusCode::SERVICE_UNAVAILABLE,
        ..Reply::ok("down")
    })
    .await;
    let calls = 100;
    let rt = start(&http_config(
        &[failing.addr],
        16,
        "        retry: {attempts: 3, on: [\"503\"], budget: {ratio: 0.2, minPerSecond: 0}}",
        "",
    ))
    .await;
    let mut client = rt.layotto.clone();
    for _ in 0..calls {
        let e = client
            .invoke_service(layotto_req("svc-down", "get", "", 0, ""))
            .await
            .expect_err("every call fails");
        assert_eq!(e.code(), Code::Unavailable);
    }
    let seen = failing.count();
    eprintln!("retry budget 0.2: the failing upstream saw {seen} requests for {calls} calls");
    assert!(
        seen >= calls && seen * 10 <= calls * 13,
        "at most ~1.3x the calls (without a budget: 4x), saw {seen}"
    );
    let m = rt.metrics.encode();
    assert!(
        counter(
            &m,
            r#"outrigger_retry_budget_exhausted_total{name="backend"}"#
        ) > 0.0,
        "{m}"
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn local_rate_limits_answer_429_and_resource_exhausted() {
    let up = Upstream::fixed("ok").await;
    // A route limit through the gRPC API; a burst of 3 and one token a second, so that a
    // handful of calls in a row cannot earn a fourth.
    let rt = start(&http_config(
        &[up.addr],
        16,
        "        rateLimit: {requestsPerSecond: 1, burst: 3}",
        "",
    ))
    .await;
    let mut client = rt.layotto.clone();
    let mut ok = 0;
    let mut limited = Vec::new();
    for _ in 0..6 {
        match client
            .invoke_service(layotto_req("svc-users", "get", "", 0, ""))
            .await
        {
            Ok(_) => ok += 1,
            Err(e) => limited.push(e),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(up.count(), 3, "rejected calls never reach the upstream");
    for e in &limited {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message()
                .contains("route main/0: rate limit of 1 requests per second (burst 3) reached"),
            "{}",
            e.message()
        );
    }
    rt.sidecar.shutdown().await;

    // A listener limit on a real socket: HTTP 429 with the marker, and the Bolt overflow
    // status.
    let bolt_up = Peer::bolt(bolt::status::SUCCESS).await;
    let yaml = format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
rpc:
  channels: [{{protocol: http, listener: web}}]
listeners:
  - {{name: web, protocol: http, address: "127.0.0.1:0", routeTable: main, rateLimit: {{requestsPerSecond: 1, burst: 2}}}}
  - {{name: rpc, protocol: bolt, address: "127.0.0.1:0", routeTable: main, rateLimit: {{requestsPerSecond: 1, burst: 1}}}}
routeTables:
  - name: main
    routes:
      - {{cluster: web}}
      - {{cluster: rpc}}
clusters:
  - {{name: web, hosts: [{{address: "{}"}}]}}
  - {{name: rpc, protocol: bolt, hosts: [{{address: "{}"}}]}}
"#,
        up.addr, bolt_up.addr
    );
    let rt = start(&yaml).await;
    let web = bound(&rt, "web");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(web).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("/x")
            .header("host", "web")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        statuses.push((
            resp.status().as_u16(),
            resp.headers()
                .get("x-outrigger-error")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
    }
    assert_eq!(
        statuses,
        [
            (200, None),
            (200, None),
            (429, Some("rate_limited".to_owned()))
        ]
    );
    let mut conn = TcpStream::connect(bound(&rt, "rpc")).await.unwrap();
    let mut buf = BytesMut::new();
    assert_eq!(
        bolt_call(&mut conn, &mut buf, 1).await,
        bolt::status::SUCCESS
    );
    assert_eq!(
        bolt_call(&mut conn, &mut buf, 2).await,
        bolt::status::SERVER_THREADPOOL_BUSY
    );
    let m = rt.metrics.encode();
    assert_eq!(
        counter(
            &m,
            r#"outrigger_rate_limited_total{scope="listener",name="web"}"#
        ),
        1.0,
        "{m}"
    );
    rt.sidecar.shutdown().await;
}
