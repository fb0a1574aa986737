//! Dubbo end to end with real peers: the PyPI `dubbo-ssl-python` consumer in front of the
//! proxy core and a provider built on npm `hessian.js` behind it; InvokeService through the
//! dubbo channel (Hessian2 arguments from the app) and through the `dubbo_generic` filter
//! (JSON in, JSON out) — routing on service and method, the proxy's own status codes, and
//! heartbeats on both sides.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod peer;
mod support;

use std::time::Duration;

use bytes::Bytes;
use outrigger_codec::hessian::{Reader, Value, Writer};
use peer::{Peers, metric};
use support::*;
use tonic::{Code, Request};

const SERVICE: &str = "org.apache.dubbo.samples.api.GreetingsService";

/// A sidecar with a dubbo channel and two listeners (`dubbo` and `auto`, on real sockets)
/// routing the samples' services to the provider, and the method `nosuch` to a dead cluster.
fn config(provider: &str, before: &str, heartbeat_ms: u64) -> String {
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc:
  timeoutMs: 3000
  beforeInvoke: [{before}]
  channels:
    - {{protocol: dubbo, size: 4, listener: egress, heartbeat: {{intervalMs: {heartbeat_ms}, misses: 3}}}}
listeners:
  - {{name: egress, protocol: dubbo, address: "127.0.0.1:0", routeTable: rpc}}
  - {{name: sniffing, protocol: auto, address: "127.0.0.1:0", routeTable: rpc}}
routeTables:
  - name: rpc
    routes:
      - match: {{headers: [{{name: service, exact: "{SERVICE}"}}], method: nosuch}}
        cluster: nowhere
      - match: {{headers: [{{name: service, prefix: "org.apache.dubbo.samples."}}]}}
        cluster: provider
        timeoutMs: 2000
clusters:
  - {{name: provider, protocol: dubbo, hosts: [{{address: "{provider}"}}], heartbeat: {{intervalMs: {heartbeat_ms}, misses: 3}}}}
  - {{name: nowhere, protocol: dubbo, hosts: [{{address: "127.0.0.1:1"}}], connectTimeoutMs: 200}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dubbo_client_through_the_proxy_to_a_hessian_js_provider() {
    let Some(peers) = Peers::require("dubbo client → proxy → dubbo provider") else {
        return;
    };
    let provider = peers.server("dubbo_server.js", &[]);
    let rt = start(&config(&provider.addr(), "", 15_000)).await;
    let egress = bound(&rt, "egress").to_string();
    let sniffing = bound(&rt, "sniffing").to_string();
    // Independent client processes, run at once.
    let calls: [(&str, &[&str]); 8] = [
        (&egress, &["--method", "sayHello", "--args", r#"["world"]"#]),
        (&egress, &["--method", "plus", "--args", "[1, 2]"]),
        (&egress, &["--method", "echo", "--args", "[[1, 2]]"]),
        (&egress, &["--method", "fail", "--args", r#"["boom"]"#]),
        (&egress, &["--method", "nope", "--args", "[1]"]),
        (
            &egress,
            &["--service", "org.other.Service", "--method", "sayHello"],
        ),
        (&egress, &["--method", "nosuch", "--args", "[1]"]),
        (
            &sniffing,
            &["--method", "sayHello", "--args", r#"["world"]"#],
        ),
    ];
    let results = futures_util::future::join_all(
        calls
            .iter()
            .map(|(addr, args)| peers.dubbo_client(addr, args)),
    )
    .await;
    let [hello, plus, echo, fail, unknown, no_route, dead, sniffed] =
        <[_; 8]>::try_from(results).unwrap();
    assert_eq!(
        hello.expect("sayHello on the dubbo listener"),
        r#""hello world""#
    );
    assert_eq!(plus.expect("plus"), "3");
    assert_eq!(echo.expect("echo"), "[1, 2]");
    let thrown = fail.expect_err("the provider's exception reaches the client");
    assert!(thrown.contains("boom"), "{thrown}");
    let unknown = unknown.expect_err("status 70 from the provider");
    assert!(unknown.contains("no method nope"), "{unknown}");
    // The proxy's own answers, in Dubbo status codes with the cause in the message.
    let no_route = no_route.expect_err("no route");
    assert!(no_route.contains("[outrigger:no_route]"), "{no_route}");
    let dead = dead.expect_err("routed on the method to a dead cluster");
    assert!(dead.contains("[outrigger:connect_failure]"), "{dead}");
    assert_eq!(
        sniffed.expect("sayHello on the auto listener"),
        r#""hello world""#
    );
    let m = rt.metrics.encode();
    // On `egress`: sayHello, plus, echo and fail (an exception is a status-20 answer) → 20;
    // the unknown method (the provider's 70) and the dead cluster (the proxy's 70) → 70;
    // no route → 60.
    for (status, want) in [("20", 4.0), ("60", 1.0), ("70", 2.0)] {
        let line = format!(
            "outrigger_xprotocol_requests_total{{protocol=\"dubbo\",listener=\"egress\",cluster=\"\",status=\"{status}\"}}"
        );
        let routed = format!(
            "outrigger_xprotocol_requests_total{{protocol=\"dubbo\",listener=\"egress\",cluster=\"provider\",status=\"{status}\"}}"
        );
        let dead = format!(
            "outrigger_xprotocol_requests_total{{protocol=\"dubbo\",listener=\"egress\",cluster=\"nowhere\",status=\"{status}\"}}"
        );
        let got = metric(&m, &line) + metric(&m, &routed) + metric(&m, &dead);
        assert_eq!(got, want, "status {status}:\n{m}");
    }
    rt.sidecar.shutdown().await;
}

fn hessian(values: &[Value]) -> Vec<u8> {
    let mut w = Writer::new();
    values.iter().for_each(|v| w.write(v));
    w.finish().to_vec()
}

fn read_one(data: Vec<u8>) -> Value {
    let mut r = Reader::new(Bytes::from(data));
    let v = r.read_value().expect("one hessian2 value");
    assert!(r.is_empty());
    v
}

fn call(
    method: &str,
    data: Vec<u8>,
    metadata: &[(&'static str, &str)],
) -> Request<outrigger_proto::spec::proto::runtime::v1::InvokeServiceRequest> {
    let mut msg = layotto_req(SERVICE, method, "", 0, "");
    msg.message.as_mut().unwrap().data = Some(prost_types::Any {
        type_url: String::new(),
        value: data,
    });
    let mut req = Request::new(msg);
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_service_through_the_dubbo_channel() {
    let Some(peers) = Peers::require("InvokeService → dubbo channel → dubbo provider") else {
        return;
    };
    let provider = peers.server("dubbo_server.js", &[]);
    let mut rt = start(&config(&provider.addr(), "", 15_000)).await;
    let types = "dubbo_parameter_types";
    let resp = rt
        .layotto
        .invoke_service(call(
            "sayHello",
            hessian(&[Value::string("world")]),
            &[
                (types, "java.lang.String"),
                ("dubbo_service_version", "1.0.0"),
            ],
        ))
        .await
        .expect("sayHello")
        .into_inner();
    assert_eq!(
        read_one(resp.data.unwrap().value),
        Value::string("hello world")
    );
    let resp = rt
        .layotto
        .invoke_service(call(
            "plus",
            hessian(&[Value::Int(40), Value::Int(2)]),
            &[(types, "II")],
        ))
        .await
        .expect("plus")
        .into_inner();
    assert_eq!(read_one(resp.data.unwrap().value).as_i64(), Some(42));

    let err = rt
        .layotto
        .invoke_service(call(
            "fail",
            hessian(&[Value::string("boom")]),
            &[(types, "java.lang.String")],
        ))
        .await
        .expect_err("exception");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("upstream threw java.lang.IllegalStateException: boom"),
        "{}",
        err.message()
    );
    let err = rt
        .layotto
        .invoke_service(call("nope", vec![], &[]))
        .await
        .expect_err("unknown method");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message()
            .contains("upstream answered dubbo status 70 (service error): no method nope"),
        "{}",
        err.message()
    );
    let mut other = call("sayHello", vec![], &[]);
    other.get_mut().id = "org.other.Service".to_owned();
    let err = rt
        .layotto
        .invoke_service(other)
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = rt
        .layotto
        .invoke_service(call(
            "sayHello",
            hessian(&[Value::Int(1), Value::Int(2)]),
            &[(types, "java.lang.String")],
        ))
        .await
        .expect_err("arguments do not match their types");
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .layotto
        .invoke_service(call(
            "sleep",
            hessian(&[Value::Int(1500)]),
            &[(types, "int"), ("rpc_request_timeout", "300")],
        ))
        .await
        .expect_err("deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    let m = rt.metrics.encode();
    assert_eq!(
        metric(
            &m,
            "outrigger_mux_pending{protocol=\"dubbo\",name=\"channel/dubbo\"}"
        ),
        0.0,
        "{m}"
    );
    rt.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invoke_service_with_json_through_dubbo_generic() {
    let Some(peers) = Peers::require("InvokeService → dubbo_generic → dubbo provider") else {
        return;
    };
    let provider = peers.server("dubbo_server.js", &[]);
    let mut rt = start(&config(&provider.addr(), "{name: dubbo_generic}", 15_000)).await;
    let json = |method: &str, body: &str| {
        let mut req = layotto_req(SERVICE, method, body, 3, "");
        req.message.as_mut().unwrap().content_type = "application/json".into();
        req
    };
    let r = rt
        .layotto
        .invoke_service(json(
            "sayHello",
            r#"{"parameterTypes":["java.lang.String"],"args":["world"]}"#,
        ))
        .await
        .expect("sayHello")
        .into_inner();
    assert_eq!(r.content_type, "application/json");
    assert_eq!(text(r.data), r#""hello world""#);
    let r = rt
        .layotto
        .invoke_service(json(
            "ignored",
            r#"{"jsonrpc":"2.0","method":"plus","params":[1,2],"id":7}"#,
        ))
        .await
        .expect("json-rpc plus")
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&text(r.data)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": 3})
    );
    let r = rt
        .layotto
        .invoke_service(json("echo", r#"[{"a":[1,2],"b":"c"}]"#))
        .await
        .expect("echo")
        .into_inner();
    let v: serde_json::Value = serde_json::from_str(&text(r.data)).unwrap();
    assert_eq!(v, serde_json::json!({"a": [1, 2], "b": "c"}));
    let err = rt
        .layotto
        .invoke_service(json("fail", r#"["boom"]"#))
        .await
        .expect_err("exception");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("IllegalStateException: boom"),
        "{}",
        err.message()
    );
    // Routes see the generic call's real method: `nosuch` goes to the dead cluster.
    let err = rt
        .layotto
        .invoke_service(json("nosuch", "[]"))
        .await
        .expect_err("routed to the dead cluster");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("cluster nowhere"),
        "{}",
        err.message()
    );
    let err = rt
        .layotto
        .invoke_service(json("sayHello", "not json"))
        .await
        .expect_err("bad body");
    assert_eq!(err.code(), Code::InvalidArgument);
    rt.sidecar.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_dubbo_connections_exchange_heartbeats() {
    let Some(peers) = Peers::require("dubbo heartbeats") else {
        return;
    };
    let provider = peers.server("dubbo_server.js", &[]);
    let mut rt = start(&config(&provider.addr(), "", 150)).await;
    rt.layotto
        .invoke_service(call(
            "sayHello",
            hessian(&[Value::string("hb")]),
            &[("dubbo_parameter_types", "java.lang.String")],
        ))
        .await
        .expect("a call opens the upstream connection");
    let event = |side: &str, event: &str| {
        format!(
            "outrigger_heartbeats_total{{protocol=\"dubbo\",name=\"{side}\",event=\"{event}\"}}"
        )
    };
    let upstream = event(&format!("upstream/provider/{}", provider.addr()), "acked");
    let metrics = rt.metrics.clone();
    let ok = peer::eventually(Duration::from_secs(5), || {
        metric(&metrics.encode(), &upstream) >= 2.0
    })
    .await;
    let m = rt.metrics.encode();
    assert!(
        ok,
        "the upstream connection's heartbeats are answered by the provider:\n{}",
        m.lines()
            .filter(|l| l.contains("heartbeat"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The channel hands its calls to the named listener in process: no connection, so nothing
    // to keep alive.
    assert_eq!(metric(&m, &event("channel/dubbo", "sent")), 0.0);
    rt.sidecar.shutdown().await;
}
