//! What a hostile neighbour can do to the sidecar, on real sockets: connections that send half a
//! request head and then nothing, more connections than a listener allows, Bolt clients that
//! never send a frame, absurd timeout headers. The sidecar must close what it has to, count it,
//! never panic, and keep serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{net::SocketAddr, time::Duration};

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic::Request;

/// The test config plus a listener `edge` on a socket, in `protocol`, with these limits.
fn with_socket(up: SocketAddr, protocol: &str, limits: &str) -> String {
    config(&[up], "", "").replace(
        "  - {name: egress, protocol: http, routeTable: main}",
        &format!(
            "  - {{name: egress, protocol: http, routeTable: main}}\n  - {{name: edge, protocol: {protocol}, routeTable: main, address: \"127.0.0.1:0\", {limits}}}"
        ),
    )
}

fn socket_of(rt: &Running) -> SocketAddr {
    rt.sidecar
        .proxy()
        .bound_addresses()
        .into_iter()
        .find(|(n, _)| n == "edge")
        .expect("bound")
        .1
}

/// Reads until the peer closes; the bytes read (a closed connection answers with nothing).
async fn until_closed(mut c: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .expect("the sidecar closes the connection");
    out
}

fn counted(rt: &Running, server: &str, limit: &str) -> u64 {
    let text = rt.metrics.encode();
    let prefix = format!("outrigger_server_limits_total{{server=\"{server}\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test]
async fn half_sent_request_heads_are_cut_off_and_a_flood_is_capped() {
    let up = Upstream::fixed("ok").await;
    let rt = start(&with_socket(
        up.addr,
        "http",
        "maxConnections: 20, headerReadTimeoutMs: 300",
    ))
    .await;
    let addr = socket_of(&rt);
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(addr).await.expect("connect");
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\nX-Half: ")
            .await
            .expect("write");
        held.push(c);
    }
    // The listener is full: further connections are closed as they arrive. (The kernel may
    // accept them before the sidecar does; the sidecar closes them at once.)
    let mut over = Vec::new();
    for _ in 0..10 {
        over.push(TcpStream::connect(addr).await.expect("connect"));
    }
    for c in over {
        assert!(until_closed(c).await.is_empty());
    }
    assert_eq!(counted(&rt, "listener/edge", "max_connections"), 10);
    // The half-sent heads hit the header read timeout and free their slots.
    for c in held {
        until_closed(c).await;
    }
    assert_eq!(counted(&rt, "listener/edge", "header_timeout"), 20);

    // A client that sends a whole request is served, and its idle keep-alive connection is
    // closed after the same timeout.
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nid: svc\r\n\r\n")
        .await
        .expect("write");
    let answer = String::from_utf8(until_closed(c).await).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn a_bolt_client_that_sends_nothing_is_closed() {
    let up = Upstream::fixed("ok").await;
    let rt = start(&with_socket(
        up.addr,
        "bolt",
        "headerReadTimeoutMs: 200, idleTimeoutMs: 60000",
    ))
    .await;
    let c = TcpStream::connect(socket_of(&rt)).await.expect("connect");
    assert!(until_closed(c).await.is_empty());
    assert_eq!(counted(&rt, "listener/edge", "first_frame_timeout"), 1);

    // An `auto` listener that cannot tell the protocol closes the connection the same way.
    let rt2 = start(&with_socket(up.addr, "auto", "headerReadTimeoutMs: 200")).await;
    let mut c = TcpStream::connect(socket_of(&rt2)).await.expect("connect");
    // Half of Dubbo's magic number: not yet any protocol.
    c.write_all(b"\xda").await.expect("one ambiguous byte");
    assert!(until_closed(c).await.is_empty());
    assert_eq!(counted(&rt2, "listener/edge", "sniff_timeout"), 1);
    rt.sidecar.shutdown().await;
    rt2.sidecar.shutdown().await;
}

#[tokio::test]
async fn an_http2_client_that_opens_no_stream_is_closed() {
    let up = Upstream::fixed("ok").await;
    for protocol in ["http2", "auto"] {
        let rt = start(&with_socket(up.addr, protocol, "headerReadTimeoutMs: 200")).await;
        let mut c = TcpStream::connect(socket_of(&rt)).await.expect("connect");
        // The connection preface and an empty SETTINGS frame, then no stream.
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("preface");
        until_closed(c).await;
        assert_eq!(
            counted(&rt, "listener/edge", "header_timeout"),
            1,
            "{protocol}"
        );
        rt.sidecar.shutdown().await;
    }
}

#[tokio::test]
async fn absurd_timeout_headers_neither_panic_nor_stop_the_sidecar() {
    let up = Upstream::fixed("ok").await;
    let mut rt = start(&config(&[up.addr], "", "")).await;
    for (key, value) in [
        ("grpc-timeout", "18446744073709551615S"),
        ("grpc-timeout", "99999999H"),
        ("rpc_request_timeout", "18446744073709551615"),
        ("rpc_request_timeout", "99999999999999999999999"),
    ] {
        let mut req = Request::new(layotto_req("svc", "m", "", 0, ""));
        req.metadata_mut()
            .insert(key, value.parse().expect("ascii"));
        // Either answered or refused with a clear status; never a dropped connection.
        match rt.layotto.invoke_service(req).await {
            Ok(_) => {}
            Err(s) => assert_ne!(s.code(), tonic::Code::Unknown, "{key}: {value}: {s:?}"),
        }
    }
    rt.layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("still serving");
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn the_grpc_port_caps_its_connections() {
    let up = Upstream::fixed("ok").await;
    let yaml = config(&[up.addr], "", "").replace(
        "grpc: {address: \"127.0.0.1:0\"}",
        "grpc: {address: \"127.0.0.1:0\", maxConnections: 2}",
    );
    let rt = start(&yaml).await;
    // The test's own two clients (Layotto and Dapr) hold the two connections.
    let mut layotto = rt.layotto.clone();
    layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("served");
    let c = TcpStream::connect(rt.sidecar.grpc_address())
        .await
        .expect("connect");
    assert!(until_closed(c).await.is_empty());
    assert_eq!(counted(&rt, "grpc", "max_connections"), 1);
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_for_a_proxied_request_in_flight() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_millis(400),
        ..Reply::ok("late")
    })
    .await;
    let rt = start(&with_socket(up.addr, "http", "headerReadTimeoutMs: 5000")).await;
    let mut c = TcpStream::connect(socket_of(&rt)).await.expect("connect");
    c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nid: svc\r\n\r\n")
        .await
        .expect("write");
    up.received(1).await;
    rt.sidecar.shutdown().await;
    assert_eq!(
        up.in_flight(),
        0,
        "shutdown returned while the upstream was still answering"
    );
    let answer = String::from_utf8(until_closed(c).await).expect("utf-8");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("late"), "{answer}");
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_body_fails_the_call_by_its_deadline() {
    // Promises 100 bytes, sends 10, then says nothing more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let up = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = [0u8; 1024];
                let _ = c.read(&mut head).await;
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let mut rt = start(&config(&[up], "", "")).await;
    let mut req = Request::new(layotto_req("svc", "m", "", 0, ""));
    req.metadata_mut()
        .insert("rpc_request_timeout", "300".parse().expect("ascii"));
    let err = rt
        .layotto
        .invoke_service(req)
        .await
        .expect_err("the body never ends");
    assert_eq!(
        err.code(),
        tonic::Code::DeadlineExceeded,
        "{}",
        err.message()
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test]
async fn a_streamed_body_is_never_sent_again_empty_after_a_connect_failure() {
    // Round robin sends the first try to the dead host; the route retries connect failures.
    let live = Upstream::fixed("ok").await;
    let dead = dead_address().await;
    let yaml = config(
        &[dead, live.addr],
        "",
        "        retry: {attempts: 1, on: [connect-failure], methods: [POST]}",
    )
    .replace(
        "  - {name: egress, protocol: http, routeTable: main}",
        "  - {name: egress, protocol: http, routeTable: main}\n  - {name: edge, protocol: http, routeTable: main, address: \"127.0.0.1:0\"}",
    );
    let rt = start(&yaml).await;
    let body = vec![b'b'; 200 * 1024];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(socket_of(&rt)).await.expect("connect");
        let head = format!(
            "POST /x HTTP/1.1\r\nHost: x\r\nid: svc\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        c.write_all(head.as_bytes()).await.expect("head");
        c.write_all(&body).await.expect("body");
        let answer = String::from_utf8_lossy(&until_closed(c).await).into_owned();
        statuses.push(answer.get(9..12).unwrap_or_default().to_owned());
    }
    // A 200 KiB body is beyond the replay buffer: it streams, so after the dead host took it
    // the request is not sent again; the next request goes to the live host whole.
    assert_eq!(statuses, ["503", "200"]);
    let seen = live.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), body.len(), "never an empty or cut body");
    rt.sidecar.shutdown().await;
}
