//! Authorization by workload identity at the callee's sidecar, on the two-sidecar mesh with real
//! certificates: rules by identity, namespace, app (service account), HTTP path, gRPC method
//! (grpcio), Bolt method (sofa-rpc-node) and Dubbo method (a Python Dubbo client); `audit`
//! denies nothing but counts; `default: deny`; a plaintext caller on a `permissive` listener;
//! a policy reloaded under load without a failed call among allowed callers. Denials are the
//! protocol's own refusals, naming the rule and the caller.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod mesh;
mod peer;
mod support;

use std::{net::SocketAddr, time::Duration};

use mesh::*;
use peer::{Peers, metric};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OPS: &str = "spiffe://cluster.local/ns/ops/sa/admin";
const BILLING: &str = "spiffe://cluster.local/ns/billing/sa/billing";

/// One HTTP/1.1 request on its own connection: the status and the body.
async fn http_call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!("{method} {path} HTTP/1.1\r\nhost: users\r\nid: users\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // A chunked body: the chunk sizes around the text are of no interest here.
    (status, body.to_owned())
}

fn decisions(rt: &Running, decision: &str, rule: &str) -> f64 {
    metric(
        &rt.metrics.encode(),
        &format!("outrigger_authz_decisions_total{{decision=\"{decision}\",rule=\"{rule}\"}}"),
    )
}

const HTTP_POLICY: &str = r#"
default: deny
rules:
  - {name: web-profile, action: allow, from: {identities: ["spiffe://cluster.local/ns/shop/sa/web"]}, to: {pathPrefix: /profile}}
  - {name: no-admin, action: deny, from: {identities: ["spiffe://cluster.local/*"]}, to: {pathPrefix: /admin}}
  - {name: ops, action: allow, from: {namespaces: [ops]}}
  - {name: billing-posts, action: allow, from: {apps: [billing]}, to: {method: POST}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_calls_are_decided_by_identity_namespace_app_and_path() {
    let app = Upstream::fixed("ok").await;
    let m = mesh_with("strict", "http", &app.addr.to_string(), WEB, HTTP_POLICY).await;
    let (ops, _ops_files) = m.caller_as("http", OPS).await;
    let (billing, _billing_files) = m.caller_as("http", BILLING).await;
    let (web, ops, billing) = (
        bound(&m.a, "egress"),
        bound(&ops, "egress"),
        bound(&billing, "egress"),
    );

    // By identity and path.
    assert_eq!(http_call(web, "GET", "/profile/7").await.0, 200);
    let (status, body) = http_call(web, "GET", "/orders").await;
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(body.trim()).expect(&body);
    assert_eq!(body["errorCode"], "ERR_PERMISSION_DENIED");
    assert_eq!(
        body["message"],
        format!(
            "permission denied on listener inbound: caller {WEB} is denied by the policy's default (no rule matched)"
        )
    );
    // By namespace; a deny rule wins over an allow rule.
    assert_eq!(http_call(ops, "GET", "/orders").await.0, 200);
    let (status, body) = http_call(ops, "GET", "/admin/users").await;
    assert_eq!(status, 403);
    assert!(
        body.contains(&format!("caller {OPS} is denied by rule \\\"no-admin\\\"")),
        "{body}"
    );
    // By app (the service account) and method.
    assert_eq!(http_call(billing, "POST", "/charge").await.0, 200);
    assert_eq!(http_call(billing, "GET", "/charge").await.0, 403);

    // Only allowed calls reached the app.
    assert_eq!(app.count(), 3);
    assert_eq!(decisions(&m.b, "allow", "web-profile"), 1.0);
    assert_eq!(decisions(&m.b, "allow", "ops"), 1.0);
    assert_eq!(decisions(&m.b, "allow", "billing-posts"), 1.0);
    assert_eq!(decisions(&m.b, "deny", "no-admin"), 1.0);
    assert_eq!(decisions(&m.b, "deny", "default"), 2.0);
    // The callee's access line carries the decision, the rule and who called.
    let lines = m.callee_lines().await;
    let admin = lines
        .iter()
        .find(|l| l["method"] == "/admin/users")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(admin["authzDecision"], "deny");
    assert_eq!(admin["authzRule"], "no-admin");
    assert_eq!(admin["peerIdentity"], OPS);
    assert_eq!(admin["status"], 403);
    let profile = lines.iter().find(|l| l["method"] == "/profile/7").unwrap();
    assert_eq!(profile["authzDecision"], "allow");
    assert_eq!(profile["authzRule"], "web-profile");

    // Through the caller's gRPC API, the denial names the rule and the caller too.
    let mut layotto = m.a.layotto.clone();
    let err = layotto
        .invoke_service(layotto_req("users", "/orders", "", 0, ""))
        .await
        .expect_err("denied");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("403") && err.message().contains("ERR_PERMISSION_DENIED"),
        "{err:?}"
    );
    // Through the caller's Dapr HTTP API, the callee's 403 and its Dapr error JSON come back.
    let dapr = m.a.sidecar.http_api_address().expect("the HTTP API is on");
    let (status, body) = http_call(dapr, "GET", "/v1.0/invoke/users/method/orders").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("\"errorCode\":\"ERR_PERMISSION_DENIED\"") && body.contains(WEB),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_methods_are_allowed_and_denied() {
    let Some(peers) = Peers::require("authorization of gRPC methods") else {
        return;
    };
    let server = peers.grpc_server();
    let m = mesh_with(
        "strict",
        "http2",
        &server.addr(),
        WEB,
        r#"
default: deny
rules:
  - {name: echo-unary, action: allow, from: {namespaces: [shop]}, to: {path: /outrigger.test.Echo/Unary}}
"#,
    )
    .await;
    let a = m.a.sidecar.grpc_address().to_owned();
    let out = peers
        .grpc_app_call(&a, "users", "/outrigger.test.Echo/Unary", "hi", false)
        .await;
    assert_eq!(out["code"], "OK", "{out}");
    let out = peers
        .grpc_app_call(&a, "users", "/outrigger.test.Echo/Stream", "2", true)
        .await;
    assert_eq!(out["code"], "PERMISSION_DENIED", "{out}");
    assert_eq!(
        out["details"],
        format!(
            "permission denied on listener inbound: caller {WEB} is denied by the policy's default (no rule matched)"
        )
    );
    assert_eq!(decisions(&m.b, "allow", "echo-unary"), 1.0);
    assert_eq!(decisions(&m.b, "deny", "default"), 1.0);
    let lines = m.callee_lines().await;
    let stream = lines
        .iter()
        .find(|l| l["method"] == "/outrigger.test.Echo/Stream")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(stream["authzDecision"], "deny");
    assert_eq!(stream["protocol"], "proxy-http2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_and_dubbo_methods_are_allowed_and_denied() {
    let Some(peers) = Peers::require("authorization of bolt and dubbo methods") else {
        return;
    };
    let sofa = peers.server("bolt_server.js", &[]);
    let bolt = mesh_with(
        "strict",
        "bolt",
        &sofa.addr(),
        WEB,
        r#"
default: allow
rules:
  - {name: no-echo, action: deny, from: {apps: [web]}, to: {method: echo}}
"#,
    )
    .await;
    let egress = bound(&bolt.a, "egress").to_string();
    let hello = peers
        .bolt_client(&egress, &["--method", "hello", "--args", r#"["mesh"]"#])
        .await;
    assert_eq!(hello.expect("hello is allowed"), r#""hello mesh""#);
    let echo = peers
        .bolt_client(&egress, &["--method", "echo", "--args", r#"["x"]"#])
        .await;
    assert!(echo.is_err(), "echo is denied: {echo:?}");
    assert_eq!(decisions(&bolt.b, "deny", "no-echo"), 1.0);
    assert_eq!(decisions(&bolt.b, "allow", "default"), 1.0);
    let lines = bolt.callee_lines().await;
    let denied = lines.iter().find(|l| l["method"] == "echo").unwrap();
    assert_eq!(denied["authzRule"], "no-echo");
    assert_eq!(denied["status"], 2, "bolt SERVER_EXCEPTION");

    let provider = peers.server("dubbo_server.js", &[]);
    let dubbo = mesh_with(
        "strict",
        "dubbo",
        &provider.addr(),
        WEB,
        r#"
default: deny
rules:
  - {name: greet, action: allow, from: {identities: ["spiffe://cluster.local/ns/shop/sa/web"]}, to: {method: sayHello}}
"#,
    )
    .await;
    let egress = bound(&dubbo.a, "egress").to_string();
    let said = peers
        .dubbo_client(&egress, &["--method", "sayHello", "--args", r#"["mesh"]"#])
        .await;
    assert_eq!(said.expect("sayHello is allowed"), r#""hello mesh""#);
    let echo = peers
        .dubbo_client(&egress, &["--method", "echo", "--args", r#"["x"]"#])
        .await;
    let err = echo.expect_err("echo is denied");
    assert!(
        err.contains("permission denied") && err.contains(WEB),
        "{err}"
    );
    assert_eq!(decisions(&dubbo.b, "deny", "default"), 1.0);
    assert_eq!(decisions(&dubbo.b, "allow", "greet"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_denies_nothing_but_counts() {
    let app = Upstream::fixed("ok").await;
    let m = mesh_with(
        "strict",
        "http",
        &app.addr.to_string(),
        WEB,
        r#"
mode: audit
default: deny
rules:
  - {name: no-admin, action: deny, from: {namespaces: [shop]}, to: {pathPrefix: /admin}}
"#,
    )
    .await;
    let web = bound(&m.a, "egress");
    assert_eq!(http_call(web, "GET", "/admin").await.0, 200);
    assert_eq!(http_call(web, "GET", "/orders").await.0, 200);
    assert_eq!(app.count(), 2);
    assert_eq!(decisions(&m.b, "audit_deny", "no-admin"), 1.0);
    assert_eq!(decisions(&m.b, "audit_deny", "default"), 1.0);
    let lines = m.callee_lines().await;
    assert!(
        lines.iter().all(|l| l["authzDecision"] == "audit_deny"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_caller_matches_only_unauthenticated() {
    let app = Upstream::fixed("ok").await;
    let m = mesh_with(
        "permissive",
        "http",
        &app.addr.to_string(),
        WEB,
        r#"
default: deny
rules:
  - {name: probes, action: allow, from: {unauthenticated: true}, to: {path: /healthz}}
  - {name: shop, action: allow, from: {namespaces: [shop]}}
"#,
    )
    .await;
    let inbound = bound(&m.b, "inbound");
    assert_eq!(http_call(inbound, "GET", "/healthz").await.0, 200);
    let (status, body) = http_call(inbound, "GET", "/orders").await;
    assert_eq!(status, 403);
    assert!(
        body.contains(
            "an unauthenticated caller (no mutual TLS identity) is denied by the policy's default"
        ),
        "{body}"
    );
    // The meshed caller on the same port is who it says it is.
    assert_eq!(
        http_call(bound(&m.a, "egress"), "GET", "/orders").await.0,
        200
    );
    assert_eq!(decisions(&m.b, "allow", "probes"), 1.0);
    assert_eq!(decisions(&m.b, "allow", "shop"), 1.0);
    assert_eq!(decisions(&m.b, "deny", "default"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reloaded_under_load_fails_no_allowed_call() {
    let app = Upstream::fixed("ok").await;
    let policy = |n: usize| {
        format!(
            r#"
default: deny
rules:
  - {{name: web-{n}, action: allow, from: {{identities: ["spiffe://cluster.local/ns/shop/sa/web"]}}}}
  - {{name: no-ops-{n}, action: deny, from: {{namespaces: [ops]}}}}
"#
        )
    };
    let m = mesh_with("strict", "http", &app.addr.to_string(), WEB, &policy(0)).await;
    let (ops, _ops_files) = m.caller_as("http", OPS).await;
    let ops = bound(&ops, "egress");

    let load = Load::start(&m.a, "a policy reload");
    for n in 1..=5 {
        let yaml = callee_with(
            &m.b_files,
            "strict",
            "http",
            &app.addr.to_string(),
            m.log.path(),
            &policy(n),
        );
        m.b.sidecar
            .reloader()
            .apply_text(&yaml)
            .await
            .expect("the new policy loads");
        load.more(20, "calls under the new policy").await;
        assert!(decisions(&m.b, "allow", &format!("web-{n}")) > 0.0);
        // The denied caller stays denied, by the new rule.
        assert_eq!(http_call(ops, "GET", "/x").await.0, 403);
        assert_eq!(decisions(&m.b, "deny", &format!("no-ops-{n}")), 1.0);
    }
    // An invalid policy is refused; the last good one keeps serving.
    let bad = callee_with(
        &m.b_files,
        "strict",
        "http",
        &app.addr.to_string(),
        m.log.path(),
        "default: deny\nrules: [{name: x, action: allow, from: {}}]",
    );
    let errors =
        m.b.sidecar
            .reloader()
            .apply_text(&bad)
            .await
            .expect_err("invalid");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("authorization.rules[0].from: names no caller")),
        "{errors:?}"
    );
    load.more(20, "calls after the refused reload").await;
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "no allowed call failed");
    assert!(ok > 100);
    // One connection from A all along: reloads do not drop connections.
    assert_eq!(
        handshakes(&m.b, "inbound", "ok"),
        2.0,
        "A's and the ops caller's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_inbound_listener_serves_grpc_under_inbound_authorization() {
    let Some(peers) = Peers::require("gRPC through the injected inbound listener") else {
        return;
    };
    let server = peers.grpc_server();
    let ca = outrigger_identity::TestCa::new("outrigger-test-root");
    let b_files = IdentityFiles::new(&ca.bundle(&[USERS]), &ca.cert_pem);
    // As the injector starts it for `outrigger.dev/app-protocol` unset (auto) and `http2`.
    for protocol in [
        outrigger_config::Protocol::Auto,
        outrigger_config::Protocol::Http2,
    ] {
        let (yaml, options) = injected_with(
            Some(&b_files),
            "strict",
            server.port,
            protocol,
            "{default: deny, rules: [{name: unary-from-shop, action: allow, from: {namespaces: [shop]}, to: {path: /outrigger.test.Echo/Unary}}]}",
        );
        let b = start_with(&yaml, options).await;
        let a_files = IdentityFiles::new(&ca.bundle(&[WEB]), &ca.cert_pem);
        let a = start_with(
            &caller(
                &a_files,
                "http2",
                bound(&b, outrigger_runtime::INBOUND_LISTENER),
                USERS,
            ),
            fast_watch(),
        )
        .await;
        let addr = a.sidecar.grpc_address().to_owned();
        let out = peers
            .grpc_app_call(&addr, "users", "/outrigger.test.Echo/Unary", "in", false)
            .await;
        assert_eq!(out["code"], "OK", "{protocol}: {out}");
        let out = peers
            .grpc_app_call(&addr, "users", "/outrigger.test.Echo/Stream", "1", true)
            .await;
        assert_eq!(out["code"], "PERMISSION_DENIED", "{protocol}: {out}");
        assert_eq!(decisions(&b, "allow", "unary-from-shop"), 1.0);
        assert_eq!(decisions(&b, "deny", "default"), 1.0);
    }
}
