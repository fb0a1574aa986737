//! Big bodies through the sidecar do not become big memory: the proxy core streams HTTP bodies
//! both ways, and an `InvokeService` answer larger than `grpc.maxMessageBytes` is refused as soon
//! as that is known, without reading the rest. The test bounds memory (the process's peak
//! resident set, from /proc), never time. It is alone in its test binary, so the peak is its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::StreamBody;
use hyper::{body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::Code;

const MIB: usize = 1024 * 1024;
/// Each big answer.
const BIG: usize = 60 * MIB;
const CHUNK: usize = 64 * 1024;

/// An upstream answering every request with `BIG` bytes, produced chunk by chunk as the reader
/// takes them (it holds no more than a chunk itself); with a content-length when `sized`.
async fn big_upstream(sized: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_: Request<hyper::body::Incoming>| async move {
                    let chunk = Bytes::from(vec![b'x'; CHUNK]);
                    let chunks = futures_util::stream::iter(
                        (0..BIG / CHUNK)
                            .map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
                    );
                    let mut resp = Response::new(StreamBody::new(chunks));
                    if sized {
                        resp.headers_mut().insert(
                            header::CONTENT_LENGTH,
                            BIG.to_string().parse().expect("len"),
                        );
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A `/proc/self/status` value in KiB.
fn status_kib(key: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a value")
}

/// Sends one GET through the proxy listener and reads the answer with a small buffer; the body
/// bytes received.
async fn download(proxy: SocketAddr) -> usize {
    let mut c = TcpStream::connect(proxy).await.expect("connect");
    c.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nid: svc\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0;
    loop {
        let n = c.read(&mut buf).await.expect("read");
        if n == 0 {
            return total;
        }
        total += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_bodies_stream_through_and_oversized_answers_are_refused_early() {
    // Four 60 MiB answers at once through a proxy listener: buffered whole they would take
    // 240 MiB; streamed, a few chunks per connection.
    let up = big_upstream(false).await;
    let yaml = config(&[up], "", "").replace(
        "  - {name: egress, protocol: http, routeTable: main}",
        "  - {name: egress, protocol: http, routeTable: main, address: \"127.0.0.1:0\"}",
    );
    let mut rt = start(&yaml).await;
    let proxy = rt.sidecar.proxy().bound_addresses()[0].1;
    let before = status_kib("VmRSS:");
    let downloads: Vec<_> = (0..4).map(|_| tokio::spawn(download(proxy))).collect();
    for d in downloads {
        let got = d.await.expect("join");
        // Chunked framing adds a few bytes per chunk around the body.
        assert!(got >= BIG, "{got} bytes");
    }
    let grew_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    eprintln!("peak resident memory grew by {grew_mib} MiB for 4 x 60 MiB streamed");
    assert!(
        grew_mib < 100,
        "peak resident memory grew by {grew_mib} MiB while 240 MiB went through"
    );

    // InvokeService answers beyond grpc.maxMessageBytes (4 MiB): refused from the
    // content-length, or once 4 MiB have come, never read whole.
    for sized in [true, false] {
        let up = big_upstream(sized).await;
        let mut rt2 = start(&config(&[up], "", "")).await;
        let err = rt2
            .layotto
            .invoke_service(layotto_req("svc", "big", "", 0, ""))
            .await
            .expect_err("too big");
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(
            err.message()
                .contains("is larger than grpc.maxMessageBytes (4194304 bytes)"),
            "{}",
            err.message()
        );
        if sized {
            assert!(
                err.message().contains("the answer of 62914560 bytes"),
                "{}",
                err.message()
            );
        }
        rt2.sidecar.shutdown().await;
    }
    let grew_mib = status_kib("VmHWM:").saturating_sub(before) / 1024;
    assert!(
        grew_mib < 100,
        "peak resident memory grew by {grew_mib} MiB"
    );

    rt.layotto
        .invoke_service(layotto_req("svc", "small", "", 0, ""))
        .await
        .expect_err("the big upstream still answers too much")
        .code();
    rt.sidecar.shutdown().await;
}
