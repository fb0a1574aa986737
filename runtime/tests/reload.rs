//! Hot reload and the admin endpoint: a valid change moves traffic with zero failed calls, an
//! invalid one is rejected with every problem listed while the old config keeps serving, and
//! the file watcher follows a ConfigMap-style symlink swap.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use outrigger_runtime::Options;
use support::*;

#[tokio::test]
async fn reload_under_load_moves_traffic_with_zero_failures() {
    let a = Upstream::start(|_| Reply {
        delay: Duration::from_millis(5),
        ..Reply::ok("a")
    })
    .await;
    let b = Upstream::fixed("b").await;
    let rt = start(&config(&[a.addr], "", "")).await;
    let calls = Calls::start((0..8).map(|_| rt.layotto.clone()));
    // Load is flowing: the old upstream has served a good number of calls.
    a.received(50).await;
    let next = outrigger_config::load_yaml(&config(&[b.addr], "", "")).expect("valid");
    let version = rt.sidecar.reloader().apply(next).await.expect("applied");
    assert_eq!(version, Some(2));
    let served_by_a = a.count();
    // And keeps flowing to the new one.
    b.received(50).await;
    let (_, failures) = calls.stop().await;
    assert_eq!(failures, 0, "no call fails across the reload");
    assert!(
        served_by_a > 0 && b.count() > 0,
        "a={served_by_a} b={}",
        b.count()
    );
    assert!(
        a.count() <= served_by_a + 8,
        "after the swap only in-flight calls finish on a"
    );
    let (_, dump) = admin_get(&rt.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    assert_eq!(dump["version"], 2);
    let metrics = rt.metrics.encode();
    assert!(metrics.contains("outrigger_config_version 2"), "{metrics}");
    assert!(
        metrics.contains("outrigger_config_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );
    // Applying the same document again changes nothing.
    let same = outrigger_config::load_yaml(&config(&[b.addr], "", "")).expect("valid");
    assert_eq!(rt.sidecar.reloader().apply(same).await.expect("same"), None);
}

#[tokio::test]
async fn invalid_reload_is_rejected_with_every_problem_and_the_old_config_serves() {
    let a = Upstream::fixed("a").await;
    let mut rt = start(&config(&[a.addr], "", "")).await;
    let broken = config(&[a.addr], "", "")
        .replace("cluster: backend", "cluster: users")
        .replace("size: 16", "size: 0");
    let errors = rt
        .sidecar
        .reloader()
        .apply_text(&broken)
        .await
        .expect_err("rejected");
    assert_eq!(
        errors,
        [
            "rpc.channels[0].size: must be at least 1",
            "routeTables[0].routes[0].cluster: unknown cluster \"users\"",
        ]
    );
    let not_yaml = rt
        .sidecar
        .reloader()
        .apply_text("rpc: [unclosed")
        .await
        .expect_err("rejected");
    assert!(
        not_yaml[0].starts_with("cannot parse the config"),
        "{not_yaml:?}"
    );
    let r = rt
        .layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("old config still serves")
        .into_inner();
    assert_eq!(text(r.data), "a");
    let (_, dump) = admin_get(&rt.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    assert_eq!(dump["version"], 1);
    assert!(
        dump["lastRejected"]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("cannot parse")
    );
    let metrics = rt.metrics.encode();
    assert!(
        metrics.contains("outrigger_config_reloads_total{result=\"rejected\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn admin_endpoint_reports_health_readiness_metrics_and_config() {
    let a = Upstream::fixed("a").await;
    // `start` overrides `httpApi.address` as the injector overrides `admin.address`: the hash
    // is still the file's, the one the operator reports for the same document.
    let yaml = config(&[a.addr], "", "");
    let file_hash = outrigger_config::config_hash(&outrigger_config::load_yaml(&yaml).unwrap());
    let mut rt = start(&yaml).await;
    rt.layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("call");
    assert_eq!(admin_get(&rt.sidecar, "/healthz").await.0, 200);
    assert_eq!(admin_get(&rt.sidecar, "/readyz").await.0, 200);
    assert_eq!(admin_get(&rt.sidecar, "/nope").await.0, 404);
    let (status, metrics) = admin_get(&rt.sidecar, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "outrigger_grpc_requests_total{path=\"/spec.proto.runtime.v1.Runtime/InvokeService\",code=\"ok\"} 1",
        "outrigger_grpc_request_duration_seconds_count{path=\"/spec.proto.runtime.v1.Runtime/InvokeService\"} 1",
        "outrigger_proxy_requests_total{listener=\"egress\",cluster=\"backend\",status=\"200\"} 1",
        "outrigger_pool_connections{name=\"channel/http\"} 1",
        "outrigger_config_version 1",
        format!("outrigger_config_info{{hash=\"{file_hash}\"}} 1").as_str(),
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let (_, dump) = admin_get(&rt.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    assert_eq!(dump["hash"], file_hash.as_str());
    assert_eq!(
        dump["config"]["httpApi"]["address"], "127.0.0.1:0",
        "served with the override"
    );
    assert_eq!(dump["config"]["rpc"]["timeoutMs"], 3000);
    assert_eq!(dump["clusterHosts"]["backend"][0], a.addr.to_string());
    assert!(dump["lastRejected"].is_null());
}

/// Lays out `dir` as the kubelet does for a mounted ConfigMap: the file is a symlink through
/// `..data`, which is swapped atomically to a new timestamped directory.
fn write_configmap(dir: &Path, generation: u32, text: &str) {
    let data = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("runtime.yaml"), text).expect("write");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..gen_{generation}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    let file = dir.join("runtime.yaml");
    if !file.exists() {
        std::os::unix::fs::symlink("..data/runtime.yaml", &file).expect("symlink file");
    }
}

async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    false
}

#[tokio::test]
async fn file_watcher_follows_a_configmap_symlink_swap() {
    let a = Upstream::fixed("a").await;
    let b = Upstream::fixed("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    write_configmap(dir.path(), 1, &config(&[a.addr], "", ""));
    let options = Options {
        config_path: Some(dir.path().join("runtime.yaml")),
        watch_interval: Duration::from_millis(30),
        ..Options::default()
    };
    let text = std::fs::read_to_string(dir.path().join("runtime.yaml")).expect("read");
    let mut rt = start_with(&text, options).await;
    let live = rt.sidecar.reloader().live();

    write_configmap(dir.path(), 2, &config(&[b.addr], "", ""));
    assert!(
        eventually(|| live.current().version == 2).await,
        "reloaded: {:?}",
        live.last_rejection()
    );
    let r = rt
        .layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("call");
    assert_eq!(text_of(r.into_inner().data), "b");

    write_configmap(dir.path(), 3, "rpc: {channels: []}");
    assert!(
        eventually(|| live.last_rejection().is_some()).await,
        "rejected"
    );
    assert_eq!(live.current().version, 2);
    let r = rt
        .layotto
        .invoke_service(layotto_req("svc", "m", "", 0, ""))
        .await
        .expect("call");
    assert_eq!(
        text_of(r.into_inner().data),
        "b",
        "the last good config keeps serving"
    );
}

fn text_of(any: Option<prost_types::Any>) -> String {
    text(any)
}

/// One HTTP/1.1 request on a fresh connection to the proxy listener; whether it got a 200.
async fn get_through(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    if c.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\nid: svc\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out).await;
    out.starts_with(b"HTTP/1.1 200")
}

#[tokio::test]
async fn a_renamed_listener_keeps_its_socket_and_a_reload_under_load_fails_no_request() {
    let a = Upstream::fixed("a").await;
    let b = Upstream::fixed("b").await;
    let port = dead_address().await.port();
    let with = |listener: &str, hosts: &[std::net::SocketAddr]| {
        config(hosts, "", "").replace(
            "  - {name: egress, protocol: http, routeTable: main}",
            &format!(
                "  - {{name: egress, protocol: http, routeTable: main}}\n  - {{name: {listener}, protocol: http, routeTable: main, address: \"127.0.0.1:{port}\"}}"
            ),
        )
    };
    let rt = start(&with("edge", &[a.addr])).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    assert!(get_through(addr).await);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failures) = (stop.clone(), failures.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    if !get_through(addr).await {
                        failures.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    a.received(20).await;
    // Rename the listener on the same address and move the cluster to another host: the
    // address is never bound twice, so the reload cannot fail on it.
    let next = outrigger_config::load_yaml(&with("edge-v2", &[b.addr])).expect("valid");
    assert_eq!(
        rt.sidecar.reloader().apply(next).await.expect("applied"),
        Some(2)
    );
    b.received(20).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("join");
    }
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request fails across the reload"
    );
    let bound = rt.sidecar.proxy().bound_addresses();
    assert_eq!(bound, vec![("edge-v2".to_owned(), addr)]);
    rt.sidecar.shutdown().await;
}
