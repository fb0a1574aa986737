//! Worker threads (`--threads`): connections accepted on several worker runtimes, each with its
//! own socket of every address, keep every promise of the single-runtime sidecar — a reload under
//! load fails no call, shutdown drains what is in flight and ends the threads — and the gRPC API
//! answers on its extra unix socket (`--grpc-socket`) as on TCP.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use outrigger_runtime::Options;
use support::*;

/// Threads of this process whose name starts with the workers' (`comm` keeps 15 bytes).
fn worker_threads_running() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("outrigger-worke"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_serve_through_a_reload_and_drain_on_shutdown() {
    let a = Upstream::start(|_| Reply {
        delay: Duration::from_millis(5),
        ..Reply::ok("a")
    })
    .await;
    let b = Upstream::start(|seen| Reply {
        // One slow call, to be in flight when shutdown begins.
        delay: if seen.path.contains("slow") {
            Duration::from_millis(400)
        } else {
            Duration::ZERO
        },
        ..Reply::ok("b")
    })
    .await;
    // A sidecar that fails to start (its admin address is taken) leaves no worker behind.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut options = Options {
        worker_threads: 2,
        ..Options::default()
    };
    options.overrides.admin_address = Some(taken.local_addr().unwrap().to_string());
    options.overrides.http_api_address = Some("127.0.0.1:0".to_owned());
    let spec = outrigger_config::load_yaml(&config(&[a.addr], "", "")).expect("valid");
    let err = outrigger_runtime::Sidecar::start(spec, options, outrigger_runtime::Metrics::new())
        .await
        .err()
        .expect("the admin address is taken");
    assert!(err.to_string().contains("admin"), "{err}");
    assert_eq!(
        worker_threads_running(),
        0,
        "the workers of a failed start ended"
    );

    let rt = start_with(
        &config(&[a.addr], "", ""),
        Options {
            worker_threads: 2,
            ..Options::default()
        },
    )
    .await;
    assert_eq!(worker_threads_running(), 2);
    let url = format!("http://{}", rt.sidecar.grpc_address());
    // A connection per caller, so the kernel spreads them across both workers' sockets.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(
            outrigger_proto::spec::proto::runtime::v1::runtime_client::RuntimeClient::connect(
                url.clone(),
            )
            .await
            .expect("connect"),
        );
    }
    let calls = Calls::start(clients);
    a.received(50).await;
    let next = outrigger_config::load_yaml(&config(&[b.addr], "", "")).expect("valid");
    assert_eq!(
        rt.sidecar.reloader().apply(next).await.expect("applied"),
        Some(2)
    );
    b.received(50).await;
    let (ok, failures) = calls.stop().await;
    assert_eq!(failures, 0, "no call fails");
    assert!(ok >= 100);

    // A call in flight when shutdown begins is answered; then the worker threads end.
    let before = b.count();
    let mut client = rt.layotto.clone();
    let slow = tokio::spawn(async move {
        client
            .invoke_service(layotto_req("svc", "slow", "", 0, ""))
            .await
    });
    b.received(before + 1).await;
    let Running { sidecar, .. } = rt;
    sidecar.shutdown().await;
    let answer = slow
        .await
        .expect("join")
        .expect("answered during the drain");
    assert_eq!(text(answer.into_inner().data), "b");
    assert_eq!(worker_threads_running(), 0, "the workers ended");
}

#[tokio::test]
async fn the_grpc_api_answers_on_its_unix_socket_beside_tcp() {
    let up = Upstream::fixed("up").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("grpc.sock");
    let rt = start_with(
        &config(&[up.addr], "", ""),
        Options {
            grpc_socket: Some(sock.clone()),
            ..Options::default()
        },
    )
    .await;
    let channel = unix_channel(&sock).await;
    let mut over_unix =
        outrigger_proto::dapr::proto::runtime::v1::dapr_client::DaprClient::new(channel);
    let r = over_unix
        .invoke_service(dapr_req("svc", "m", ""))
        .await
        .expect("a call over the unix socket")
        .into_inner();
    assert_eq!(text(r.data), "up");
    let mut over_tcp = rt.layotto.clone();
    let r = over_tcp
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("a call over TCP")
        .into_inner();
    assert_eq!(text(r.data), "up");
    rt.sidecar.shutdown().await;
    assert!(!sock.exists(), "the socket file is removed on shutdown");
}
