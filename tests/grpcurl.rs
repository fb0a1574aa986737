//! A client that is not ours: `grpcurl` (a static Go binary, installed by the README's test
//! command) discovers the sidecar's API through server reflection and calls both services.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;

use outrigger_runtime::{DEMO_ID, Demo, Metrics, Options, SampleUpstream, Sidecar};
use outrigger_tests::require_tool;

fn grpcurl(bin: &std::path::Path, addr: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin)
        .arg("-plaintext")
        .args(args.iter().take(args.len() - 1))
        .arg(addr)
        .arg(args[args.len() - 1])
        .output()
        .expect("grpcurl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Layotto's `InvokeService` of the demo's `GetUser("A001")`, as grpcurl's JSON.
fn layotto_get_user() -> String {
    let body = r#"{\"jsonrpc\":\"2.0\",\"method\":\"GetUser\",\"params\":[\"A001\"],\"id\":7}"#;
    format!(
        r#"{{"id":"{DEMO_ID}","message":{{"method":"GetUser","data":{{"@type":"type.googleapis.com/google.protobuf.StringValue","value":"{body}"}},"httpExtension":{{"verb":"POST"}}}}}}"#
    )
}

/// The sidecar of the demo config, on ephemeral ports, with `options`.
async fn demo_sidecar(options: Options) -> (SampleUpstream, Sidecar) {
    let upstream = SampleUpstream::start("127.0.0.1:0")
        .await
        .expect("upstream");
    let yaml = Demo::config(upstream.address())
        .replace("127.0.0.1:34904", "127.0.0.1:0")
        .replace("127.0.0.1:34999", "127.0.0.1:0")
        .replace("127.0.0.1:3500", "127.0.0.1:0");
    let spec = outrigger_config::load_yaml(&yaml).expect("valid");
    let sidecar = Sidecar::start(spec, options, Metrics::new())
        .await
        .expect("starts");
    (upstream, sidecar)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_invokes_both_apis() {
    let Some(bin) = require_tool("grpcurl") else {
        return;
    };
    let (_upstream, sidecar) = demo_sidecar(Options::default()).await;
    let addr = sidecar.grpc_address().to_owned();

    let (ok, services, err) = tokio::task::spawn_blocking({
        let (bin, addr) = (bin.clone(), addr.clone());
        move || grpcurl(&bin, &addr, &["list"])
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    for s in [
        "spec.proto.runtime.v1.Runtime",
        "dapr.proto.runtime.v1.Dapr",
    ] {
        assert!(services.contains(s), "{services}");
    }

    let layotto = layotto_get_user();
    let (ok, out, err) = tokio::task::spawn_blocking({
        let (bin, addr) = (bin.clone(), addr.clone());
        move || {
            grpcurl(
                &bin,
                &addr,
                &[
                    "-d",
                    &layotto,
                    "spec.proto.runtime.v1.Runtime/InvokeService",
                ],
            )
        }
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    let resp: serde_json::Value = serde_json::from_str(&out).expect("grpcurl prints JSON");
    let answer: serde_json::Value =
        serde_json::from_str(resp["data"]["value"].as_str().expect("string payload"))
            .expect("json-rpc");
    assert_eq!(answer["result"]["name"], "Bo Lindqvist");
    assert_eq!(answer["id"], 7);

    // Dapr's service with an unknown id: grpcurl reports NotFound with our message.
    let dapr = r#"{"id":"nobody","message":{"method":"GetUser"}}"#;
    let (ok, _, err) = tokio::task::spawn_blocking({
        let (bin, addr) = (bin.clone(), addr.clone());
        move || {
            grpcurl(
                &bin,
                &addr,
                &["-d", dapr, "dapr.proto.runtime.v1.Dapr/InvokeService"],
            )
        }
    })
    .await
    .expect("join");
    assert!(!ok);
    assert!(err.contains("NotFound") && err.contains("nobody"), "{err}");
    sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_invokes_over_the_unix_socket_the_annotation_sets_up() {
    let Some(bin) = require_tool("grpcurl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("grpc.sock");
    let (_upstream, sidecar) = demo_sidecar(Options {
        grpc_socket: Some(socket.clone()),
        worker_threads: 2,
        ..Options::default()
    })
    .await;
    // Any user of the pod may connect: the socket's directory keeps others out.
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket).expect("socket").permissions(),
    );
    assert_eq!(mode & 0o777, 0o666, "{mode:o}");
    // grpcurl would send the socket path as `:authority`, which HTTP/2 servers built on the
    // `h2` crate refuse as malformed; Go's gRPC clients send `localhost`, as here.
    let (ok, out, err) = tokio::task::spawn_blocking({
        let path = socket.to_string_lossy().into_owned();
        move || {
            grpcurl(
                &bin,
                &path,
                &[
                    "-unix",
                    "-authority",
                    "localhost",
                    "-d",
                    &layotto_get_user(),
                    "spec.proto.runtime.v1.Runtime/InvokeService",
                ],
            )
        }
    })
    .await
    .expect("join");
    assert!(ok, "{err}");
    assert!(out.contains("Bo Lindqvist"), "{out}");
    sidecar.shutdown().await;
}
