//! Bolt end to end with real SOFA peers (npm `sofa-rpc-node`): its client in front of the
//! proxy core and its server behind it, and InvokeService through the bolt channel to that
//! server — routing on the service and method that now reach the wire, one-way calls,
//! deadlines, heartbeats on both sides, and the proxy's own errors.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod peer;
mod support;

use std::time::Duration;

use peer::{Peers, metric};
use support::*;
use tonic::{Code, Request};

const SERVICE: &str = "com.outrigger.test.EchoService:1.0";

/// A sidecar whose bolt channel and two listeners (`bolt` and `auto`, both on real sockets)
/// route the echo service's `hello`, `plus`, `fail` and `sleep` to the sofa-rpc-node server.
fn config(server: &str, heartbeat_ms: u64) -> String {
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc:
  timeoutMs: 3000
  channels:
    - {{protocol: bolt, size: 4, listener: egress, heartbeat: {{intervalMs: {heartbeat_ms}, misses: 3}}}}
listeners:
  - {{name: egress, protocol: bolt, address: "127.0.0.1:0", routeTable: rpc}}
  - {{name: sniffing, protocol: auto, address: "127.0.0.1:0", routeTable: rpc}}
routeTables:
  - name: rpc
    routes:
      - match: {{headers: [{{name: service, exact: "{SERVICE}"}}], method: nosuch}}
        cluster: nowhere
      - match: {{headers: [{{name: service, prefix: "com.outrigger."}}]}}
        cluster: sofa
        timeoutMs: 2000
clusters:
  - {{name: sofa, protocol: bolt, hosts: [{{address: "{server}"}}], heartbeat: {{intervalMs: {heartbeat_ms}, misses: 3}}}}
  - {{name: nowhere, protocol: bolt, hosts: [{{address: "{dead}"}}], connectTimeoutMs: 200}}
"#,
        dead = "127.0.0.1:1",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sofa_rpc_node_client_through_the_proxy_to_the_sofa_rpc_node_server() {
    let Some(peers) = Peers::require("bolt client → proxy → bolt server") else {
        return;
    };
    let server = peers.server("bolt_server.js", &[]);
    let rt = start(&config(&server.addr(), 15_000)).await;
    let egress = bound(&rt, "egress").to_string();
    let sniffing = bound(&rt, "sniffing").to_string();
    // Independent client processes, run at once.
    let calls: [(&str, [&str; 4]); 5] = [
        (&egress, ["--method", "hello", "--args", r#"["world"]"#]),
        (&egress, ["--method", "plus", "--args", "[40, 2]"]),
        (&egress, ["--method", "fail", "--args", r#"["boom"]"#]),
        (&sniffing, ["--method", "hello", "--args", r#"["world"]"#]),
        (
            &sniffing,
            ["--method", "echo", "--args", r#"[{"a":[1,2,"x"]}]"#],
        ),
    ];
    let results = futures_util::future::join_all(
        calls
            .iter()
            .map(|(addr, args)| peers.bolt_client(addr, args)),
    )
    .await;
    let [hello, plus, fail, sniffed, echoed] = <[_; 5]>::try_from(results).unwrap();
    assert_eq!(
        hello.expect("hello on the bolt listener"),
        r#""hello world""#
    );
    assert_eq!(plus.expect("plus"), "42");
    let failed = fail.expect_err("the server's exception reaches the client");
    assert!(failed.contains("boom"), "{failed}");
    assert_eq!(
        sniffed.expect("hello on the auto listener"),
        r#""hello world""#
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&echoed.expect("echo")).unwrap(),
        serde_json::json!({"a": [1, 2, "x"]})
    );
    let m = rt.metrics.encode();
    let requests = |listener: &str, status: &str| {
        metric(
            &m,
            &format!(
                "outrigger_xprotocol_requests_total{{protocol=\"bolt\",listener=\"{listener}\",cluster=\"sofa\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("egress", "0"), 2.0, "{m}");
    assert_eq!(
        requests("egress", "2"),
        1.0,
        "a server exception, status 2: {m}"
    );
    assert_eq!(requests("sniffing", "0"), 2.0, "{m}");
    rt.sidecar.shutdown().await;
}

fn invoke(
    data: Vec<u8>,
    method: &str,
) -> Request<outrigger_proto::spec::proto::runtime::v1::InvokeServiceRequest> {
    let mut req = layotto_req(SERVICE, method, "", 0, "");
    req.message.as_mut().unwrap().data = Some(prost_types::Any {
        type_url: String::new(),
        value: data,
    });
    Request::new(req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_service_through_the_bolt_channel_to_the_sofa_rpc_node_server() {
    let Some(peers) = Peers::require("InvokeService → bolt channel → bolt server") else {
        return;
    };
    let server = peers.server("bolt_server.js", &[]);
    let mut rt = start(&config(&server.addr(), 15_000)).await;

    // The application serialises the SofaRequest; the sidecar carries it and the answer.
    let content = peers.sofa_request(SERVICE, "hello", r#"["world"]"#).await;
    let resp = rt
        .layotto
        .invoke_service(invoke(content, "hello"))
        .await
        .expect("hello through the bolt channel")
        .into_inner();
    let answer = peers.sofa_response(&resp.data.unwrap().value).await;
    assert_eq!(answer["appResponse"], "hello world", "{answer}");
    assert_eq!(answer["error"], serde_json::Value::Null);

    let content = peers.sofa_request(SERVICE, "plus", "[40, 2]").await;
    let resp = rt
        .dapr
        .invoke_service(
            outrigger_proto::dapr::proto::runtime::v1::InvokeServiceRequest {
                id: SERVICE.to_owned(),
                message: Some(outrigger_proto::dapr::proto::common::v1::InvokeRequest {
                    method: "plus".to_owned(),
                    data: Some(prost_types::Any {
                        type_url: String::new(),
                        value: content,
                    }),
                    content_type: String::new(),
                    http_extension: None,
                }),
            },
        )
        .await
        .expect("plus through the dapr API")
        .into_inner();
    let answer = peers.sofa_response(&resp.data.unwrap().value).await;
    assert_eq!(answer["appResponse"], 42);

    // The method reaches the wire: a route on `method: nosuch` sends it to a cluster nobody
    // listens on, so the proxy answers ERROR_COMM itself.
    let content = peers.sofa_request(SERVICE, "nosuch", "[]").await;
    let err = rt
        .layotto
        .invoke_service(invoke(content, "nosuch"))
        .await
        .expect_err("routed on the method to a dead cluster");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("cluster nowhere"),
        "{}",
        err.message()
    );

    // No route at all: the proxy answers NO_PROCESSOR, the app sees NOT_FOUND.
    let mut req = invoke(vec![], "hello");
    req.get_mut().id = "org.other.Service:1.0".to_owned();
    let err = rt.layotto.invoke_service(req).await.expect_err("no route");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(
            "no route in table rpc matches bolt service=org.other.Service:1.0 method=hello"
        ),
        "{}",
        err.message()
    );

    // A deadline shorter than the method: DEADLINE_EXCEEDED, and nothing left pending.
    let content = peers.sofa_request(SERVICE, "sleep", "[1500]").await;
    let mut req = invoke(content.clone(), "sleep");
    req.metadata_mut()
        .insert("rpc_request_timeout", "300".parse().unwrap());
    let err = rt.layotto.invoke_service(req).await.expect_err("too slow");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let m = rt.metrics.encode();
    assert!(
        metric(
            &m,
            "outrigger_mux_pending{protocol=\"bolt\",name=\"channel/bolt\"}"
        ) == 0.0,
        "{m}"
    );

    // One-way: the call does not wait for the answer, so a method slower than the call's
    // deadline still succeeds (a two-way call would be DEADLINE_EXCEEDED, as above).
    let mut req = invoke(content, "sleep");
    req.metadata_mut()
        .insert("rpc_request_type", "oneway".parse().unwrap());
    req.metadata_mut()
        .insert("rpc_request_timeout", "300".parse().unwrap());
    let resp = rt
        .layotto
        .invoke_service(req)
        .await
        .expect("one-way returns at once")
        .into_inner();
    assert!(resp.data.map(|d| d.value.is_empty()).unwrap_or(true));
    rt.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_bolt_connections_exchange_heartbeats() {
    let Some(peers) = Peers::require("bolt heartbeats") else {
        return;
    };
    let server = peers.server("bolt_server.js", &[]);
    let mut rt = start(&config(&server.addr(), 150)).await;
    let content = peers.sofa_request(SERVICE, "hello", r#"["hb"]"#).await;
    rt.layotto
        .invoke_service(invoke(content, "hello"))
        .await
        .expect("a call opens the upstream connection");
    let event = |side: &str, event: &str| {
        format!("outrigger_heartbeats_total{{protocol=\"bolt\",name=\"{side}\",event=\"{event}\"}}")
    };
    let upstream = event(&format!("upstream/sofa/{}", server.addr()), "acked");
    let metrics = rt.metrics.clone();
    let ok = peer::eventually(Duration::from_secs(5), || {
        metric(&metrics.encode(), &upstream) >= 2.0
    })
    .await;
    let m = rt.metrics.encode();
    assert!(
        ok,
        "the upstream connection's heartbeats are answered by sofa-rpc-node:\n{}",
        m.lines()
            .filter(|l| l.contains("heartbeat"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The channel hands its calls to the named listener in process: no connection, so nothing
    // to keep alive.
    assert_eq!(metric(&m, &event("channel/bolt", "sent")), 0.0);
    // Heartbeats are answered locally, never forwarded as requests.
    assert_eq!(
        metric(
            &m,
            "outrigger_xprotocol_requests_total{protocol=\"bolt\",listener=\"egress\",cluster=\"sofa\",status=\"0\"}"
        ),
        1.0
    );
    rt.sidecar.shutdown().await;
}
