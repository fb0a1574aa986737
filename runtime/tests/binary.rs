//! The `outrigger` binary as an operator runs it: an invalid config is refused with every
//! problem and exit code 64, and SIGTERM drains in-flight calls before a clean exit.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_outrigger");

#[test]
fn invalid_config_is_refused_with_every_problem_and_exit_code_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runtime.yaml");
    std::fs::write(
        &path,
        "rpc:\n  timeoutMs: 0\n  channels: [{listener: nowhere}]\nclusters: [{name: c, hosts: []}]\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "rpc.timeoutMs: must be greater than 0",
        "rpc.channels[0].listener: unknown listener \"nowhere\"",
        "clusters[0].hosts: at least one host is required",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in\n{stderr}");
    }

    let out = Command::new(BIN)
        .arg("--config")
        .arg(dir.path().join("missing.yaml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits_zero() {
    let up = Upstream::start(|_| Reply {
        delay: Duration::from_millis(700),
        ..Reply::ok("slow")
    })
    .await;
    let grpc = dead_address().await;
    let admin = dead_address().await;
    let yaml = config(&[up.addr], "", "")
        .replace(
            "grpc: {address: \"127.0.0.1:0\"}",
            &format!("grpc: {{address: \"{grpc}\"}}"),
        )
        .replace(
            "admin: {address: \"127.0.0.1:0\"}",
            &format!("admin: {{address: \"{admin}\"}}"),
        );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runtime.yaml");
    std::fs::write(&path, yaml).expect("write");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");

    let mut ready = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(ready, "the sidecar listens");
    let mut client =
        outrigger_proto::spec::proto::runtime::v1::runtime_client::RuntimeClient::connect(format!(
            "http://{grpc}"
        ))
        .await
        .expect("connect");
    let call = tokio::spawn(async move {
        client
            .invoke_service(layotto_req("svc", "slow", "", 0, ""))
            .await
            .map(|r| text(r.into_inner().data))
    });
    // The call is in flight once the upstream has it.
    up.received(1).await;
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let answer = call
        .await
        .expect("join")
        .expect("the in-flight call is answered");
    assert_eq!(answer, "slow");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "clean exit after draining");
    assert!(
        tokio::net::TcpStream::connect(grpc).await.is_err(),
        "no longer accepting"
    );
}
