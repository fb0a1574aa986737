//! Two sidecars on loopback with mutual TLS between them: app → sidecar A → mTLS → sidecar B's
//! inbound listener → upstream app, for HTTP (InvokeService), Bolt (sofa-rpc-node client and
//! server) and Dubbo (a Python Dubbo client and a hessian.js provider). Real certificates, real
//! rustls handshakes: a caller of another CA or a callee with the wrong SPIFFE id is refused
//! and counted; `strict` refuses plaintext and `permissive` serves it; a certificate written
//! over the credential bundle is used without a restart; a root rotated under load loses no
//! call.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod mesh;
mod peer;
mod support;

use std::{net::SocketAddr, time::Duration};

use mesh::*;
use outrigger_identity::TestCa;
use peer::{Peers, metric};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn invoke_service_crosses_two_sidecars_over_mutual_tls() {
    let app = Upstream::fixed("from-users").await;
    let mut m = mesh("strict", "http", &app.addr.to_string()).await;

    let r =
        m.a.layotto
            .invoke_service(layotto_req("users", "/profile", "", 0, ""))
            .await
            .expect("call through both sidecars");
    assert_eq!(text(r.into_inner().data), "from-users");
    // The callee's app sees the caller's request unchanged.
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/profile");
    assert_eq!(seen[0].headers["id"], "users");

    assert_eq!(handshakes(&m.a, "outbound", "ok"), 1.0);
    assert_eq!(handshakes(&m.b, "inbound", "ok"), 1.0);
    // The callee knows who called: its access log line and /config_dump.
    m.b.sidecar.flush_access_log().await;
    let line = std::fs::read_to_string(m.log.path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(line["peerIdentity"], WEB, "{line}");
    let (_, dump) = admin_get(&m.b.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["identity"]["spiffeId"], USERS);
    assert_eq!(dump["identity"]["roots"].as_array().unwrap().len(), 1);
    assert!(!dump.to_string().contains("PRIVATE KEY"));
    let expiry = metric(
        &m.b.metrics.encode(),
        "outrigger_identity_cert_expiry_timestamp_seconds",
    );
    assert!(expiry > 0.0);
    let _ = (&m.ca, &m.a_files, &m.b_files);
}

#[tokio::test]
async fn a_callee_with_another_identity_or_a_caller_of_another_ca_is_refused() {
    let app = Upstream::fixed("secret").await;
    let ca = TestCa::new("outrigger-test-root");
    let log = tempfile::NamedTempFile::new().unwrap();
    let b_files = IdentityFiles::new(&ca.bundle(&[USERS]), &ca.cert_pem);
    let b = start_with(
        &callee(
            &b_files,
            "strict",
            "http",
            &app.addr.to_string(),
            log.path(),
        ),
        fast_watch(),
    )
    .await;
    let inbound = bound(&b, "inbound");

    // A caller that expects someone else on that address.
    let a_files = IdentityFiles::new(&ca.bundle(&[WEB]), &ca.cert_pem);
    let mut a = start_with(
        &caller(
            &a_files,
            "http",
            inbound,
            "spiffe://cluster.local/ns/shop/sa/payments",
        ),
        fast_watch(),
    )
    .await;
    let err = a
        .layotto
        .invoke_service(layotto_req("users", "/profile", "", 0, ""))
        .await
        .expect_err("the callee is not who the route expects");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("tls handshake") && err.message().contains(USERS),
        "{}",
        err.message()
    );
    assert!(handshakes(&a, "outbound", "bad_identity") >= 1.0);

    // A caller whose certificate comes from another CA (it trusts ours, we do not trust its).
    let rogue = TestCa::new("rogue-root");
    let r_files = IdentityFiles::new(&rogue.bundle(&[WEB]), &ca.cert_pem);
    let mut r = start_with(&caller(&r_files, "http", inbound, USERS), fast_watch()).await;
    let err = r
        .layotto
        .invoke_service(layotto_req("users", "/profile", "", 0, ""))
        .await
        .expect_err("the callee refuses a client of another CA");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(
        handshakes(&b, "inbound", "unknown_ca") >= 1.0,
        "{}",
        b.metrics.encode()
    );
    assert_eq!(app.count(), 0, "nothing reached the app");
}

/// Sends one plaintext HTTP/1.1 request; the status line, or `None` when the connection was
/// closed without an answer.
async fn plaintext_get(addr: SocketAddr) -> Option<String> {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /plain HTTP/1.1\r\nhost: users\r\nid: users\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("an answer or a close")
        .unwrap_or(0);
    (n > 0).then(|| {
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

#[tokio::test]
async fn strict_refuses_plaintext_and_permissive_serves_both() {
    let app = Upstream::fixed("ok").await;
    let strict = mesh("strict", "http", &app.addr.to_string()).await;
    assert_eq!(plaintext_get(bound(&strict.b, "inbound")).await, None);
    assert_eq!(
        metric(
            &strict.b.metrics.encode(),
            "outrigger_tls_plaintext_connections_total{listener=\"inbound\",action=\"refused\"}"
        ),
        1.0
    );

    let mut permissive = mesh("permissive", "http", &app.addr.to_string()).await;
    assert_eq!(
        plaintext_get(bound(&permissive.b, "inbound"))
            .await
            .as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let r = permissive
        .a
        .layotto
        .invoke_service(layotto_req("users", "/tls", "", 0, ""))
        .await
        .expect("mutual TLS on the same port");
    assert_eq!(text(r.into_inner().data), "ok");
    let m = permissive.b.metrics.encode();
    assert_eq!(
        metric(
            &m,
            "outrigger_tls_plaintext_connections_total{listener=\"inbound\",action=\"accepted\"}"
        ),
        1.0
    );
    assert_eq!(handshakes(&permissive.b, "inbound", "ok"), 1.0);
    // Only the TLS call carries a peer identity.
    permissive.b.sidecar.flush_access_log().await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(permissive.log.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_path = |p: &str| lines.iter().find(|l| l["method"] == p).unwrap().clone();
    assert!(by_path("/plain").get("peerIdentity").is_none());
    assert_eq!(by_path("/tls")["peerIdentity"], WEB);
}

#[tokio::test]
async fn a_new_certificate_is_used_without_a_restart() {
    let app = Upstream::fixed("ok").await;
    let mut m = mesh("strict", "http", &app.addr.to_string()).await;
    let before = serial_of(&m.b).await;
    m.b_files.write(&m.ca.bundle(&[USERS]), &m.ca.cert_pem);
    until("the renewed certificate", async || {
        serial_of(&m.b).await != before
    })
    .await;
    let r =
        m.a.layotto
            .invoke_service(layotto_req("users", "/again", "", 0, ""))
            .await
            .expect("a call with the new certificate");
    assert_eq!(text(r.into_inner().data), "ok");

    // A broken file is refused; the last good certificate keeps serving.
    let renewed = serial_of(&m.b).await;
    m.b_files
        .write("-----BEGIN PRIVATE KEY-----\n", &m.ca.cert_pem);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(serial_of(&m.b).await, renewed);
    m.a.layotto
        .invoke_service(layotto_req("users", "/still", "", 0, ""))
        .await
        .expect("still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_load_loses_no_call() {
    let app = Upstream::fixed("ok").await;
    let m = mesh("strict", "http", &app.addr.to_string()).await;
    let new = TestCa::new("outrigger-test-root-2");
    let both = format!("{}{}", m.ca.cert_pem, new.cert_pem);

    let load = Load::start(&m.a, "rotation");
    // Add the new root everywhere, switch the issuer (new certificates), drop the old root.
    let steps = [
        (
            m.ca.bundle(&[WEB]),
            both.clone(),
            m.ca.bundle(&[USERS]),
            both.clone(),
        ),
        (
            new.bundle(&[WEB]),
            both.clone(),
            new.bundle(&[USERS]),
            both.clone(),
        ),
        (
            new.bundle(&[WEB]),
            new.cert_pem.clone(),
            new.bundle(&[USERS]),
            new.cert_pem.clone(),
        ),
    ];
    for (a_bundle, a_roots, b_bundle, b_roots) in steps {
        let (a_before, b_before) = (serial_of(&m.a).await, serial_of(&m.b).await);
        let calls = load.ok();
        m.a_files.write(&a_bundle, &a_roots);
        m.b_files.write(&b_bundle, &b_roots);
        until("both sidecars reloaded", async || {
            serial_of(&m.a).await != a_before && serial_of(&m.b).await != b_before
        })
        .await;
        until("calls after the step", async || load.ok() > calls + 20).await;
    }
    let (ok, failed) = load.finish().await;
    assert_eq!(failed, 0, "no call failed");
    assert!(ok > 60);
    let (_, dump) = admin_get(&m.b.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(
        dump["identity"]["roots"][0]["subject"]
            .as_str()
            .unwrap()
            .contains("outrigger-test-root-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_and_dubbo_cross_two_sidecars_over_mutual_tls() {
    let Some(peers) = Peers::require("bolt and dubbo over mutual TLS between two sidecars") else {
        return;
    };
    let sofa = peers.server("bolt_server.js", &[]);
    let bolt = mesh("strict", "bolt", &sofa.addr()).await;
    let hello = peers
        .bolt_client(
            &bound(&bolt.a, "egress").to_string(),
            &["--method", "hello", "--args", r#"["mesh"]"#],
        )
        .await;
    assert_eq!(
        hello.expect("bolt through both sidecars"),
        r#""hello mesh""#
    );
    assert_eq!(handshakes(&bolt.b, "inbound", "ok"), 1.0);
    bolt.b.sidecar.flush_access_log().await;
    let line = std::fs::read_to_string(bolt.log.path()).unwrap();
    assert!(
        line.contains(&format!("\"peerIdentity\":\"{WEB}\"")),
        "{line}"
    );

    let provider = peers.server("dubbo_server.js", &[]);
    let dubbo = mesh("strict", "dubbo", &provider.addr()).await;
    let said = peers
        .dubbo_client(
            &bound(&dubbo.a, "egress").to_string(),
            &["--method", "sayHello", "--args", r#"["mesh"]"#],
        )
        .await;
    assert_eq!(
        said.expect("dubbo through both sidecars"),
        r#""hello mesh""#
    );
    assert_eq!(handshakes(&dubbo.a, "outbound", "ok"), 1.0);
    assert_eq!(handshakes(&dubbo.b, "inbound", "ok"), 1.0);
}

#[tokio::test]
async fn the_injected_inbound_listener_forwards_to_the_app_with_the_files_mode() {
    let app = Upstream::fixed("injected-app").await;
    let ca = TestCa::new("outrigger-test-root");
    let b_files = IdentityFiles::new(&ca.bundle(&[USERS]), &ca.cert_pem);
    let (yaml, options) = injected(
        Some(&b_files),
        "strict",
        app.addr.port(),
        outrigger_config::Protocol::Auto,
    );
    let b = start_with(&yaml, options).await;
    let inbound = bound(&b, outrigger_runtime::INBOUND_LISTENER);
    let a_files = IdentityFiles::new(&ca.bundle(&[WEB]), &ca.cert_pem);
    let mut a = start_with(&caller(&a_files, "http", inbound, USERS), fast_watch()).await;
    let r = a
        .layotto
        .invoke_service(layotto_req("users", "/inbound", "", 0, ""))
        .await
        .expect("through the injected inbound listener");
    assert_eq!(text(r.into_inner().data), "injected-app");
    assert_eq!(plaintext_get(inbound).await, None, "strict");
    // The hash is the file's: what the injector adds does not change it.
    let (_, dump) = admin_get(&b.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["hash"],
        outrigger_config::config_hash(&outrigger_config::load_yaml(&yaml).unwrap()).as_str()
    );

    // Without an identity, a permissive inbound listener is plaintext and a strict one refuses
    // to start, naming what is missing.
    let (yaml, options) = injected(
        None,
        "permissive",
        app.addr.port(),
        outrigger_config::Protocol::Http,
    );
    let plain = start_with(&yaml, options).await;
    assert_eq!(
        plaintext_get(bound(&plain, "inbound")).await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let (yaml, options) = injected(
        None,
        "strict",
        app.addr.port(),
        outrigger_config::Protocol::Http,
    );
    let spec = outrigger_config::load_yaml(&yaml).unwrap();
    let err = outrigger_runtime::Sidecar::start(spec, options, outrigger_runtime::Metrics::new())
        .await
        .err()
        .expect("strict without an identity does not start")
        .to_string();
    assert!(
        err.contains("listeners inbound: tls needs the sidecar's identity"),
        "{err}"
    );
    // Likewise a mesh cluster: valid as a document (the injector supplies the identity), refused
    // by a sidecar that has none.
    let no_identity = caller(&IdentityFiles::new("", ""), "http", inbound, USERS);
    let no_identity = no_identity
        .lines()
        .filter(|l| !l.starts_with("identity:"))
        .collect::<Vec<_>>()
        .join("\n");
    let spec = outrigger_config::load_yaml(&no_identity).expect("a valid document");
    let err =
        outrigger_runtime::Sidecar::start(spec, fast_watch(), outrigger_runtime::Metrics::new())
            .await
            .err()
            .expect("a mesh cluster without an identity does not start")
            .to_string();
    assert!(
        err.contains("cluster users: tls mode mesh needs the sidecar's identity"),
        "{err}"
    );
}

#[tokio::test]
async fn a_reload_cannot_turn_a_kept_socket_into_a_plaintext_tls_listener() {
    // A sidecar without an identity, its listener on a socket; a reload that adds `tls` to that
    // listener keeps the socket, so the bind-time check never runs: the reload itself must be
    // refused, and the listener keeps serving as configured before.
    let app = Upstream::fixed("ok").await;
    let yaml = |tls: &str| {
        format!(
            r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc: {{channels: [{{listener: edge}}]}}
listeners: [{{name: edge, address: "{addr}", routeTable: t{tls}}}]
routeTables: [{{name: t, routes: [{{cluster: app}}]}}]
clusters: [{{name: app, hosts: [{{address: "{app}"}}]}}]
"#,
            addr = "127.0.0.1:0",
            app = app.addr,
        )
    };
    let rt = start(&yaml("")).await;
    let edge = bound(&rt, "edge");
    // The same `address` text: the socket bound for it is kept.
    let with_tls = yaml(", tls: {mode: strict}");
    let errors = rt
        .sidecar
        .reloader()
        .apply_text(&with_tls)
        .await
        .expect_err("no identity to serve TLS with");
    assert!(
        errors
            .iter()
            .any(|e| e.contains("listeners edge: tls needs the sidecar's identity")),
        "{errors:?}"
    );
    assert_eq!(
        plaintext_get(edge).await.as_deref(),
        Some("HTTP/1.1 200 OK"),
        "the last good config keeps serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_crosses_two_sidecars_over_mutual_tls() {
    let Some(peers) = Peers::require("gRPC (HTTP/2) over mutual TLS between two sidecars") else {
        return;
    };
    let server = peers.grpc_server();
    let m = mesh("strict", "http2", &server.addr()).await;
    let a = m.a.sidecar.grpc_address().to_owned();

    // Unary: the body, the caller's metadata, the server's headers and trailers, unchanged.
    let out = peers
        .grpc_client(
            &a,
            &[
                "/outrigger.test.Echo/Unary",
                "--app-id",
                "users",
                "--data",
                "over the mesh",
                "--header",
                "x-tenant=t3",
            ],
        )
        .await;
    assert_eq!(out["code"], "OK", "{out}");
    let answer: serde_json::Value =
        serde_json::from_str(out["messages"][0].as_str().unwrap()).unwrap();
    assert_eq!(answer["body"], "over the mesh");
    assert_eq!(answer["metadata"]["x-tenant"], "t3");
    assert_eq!(out["initial"]["x-served-by"], "grpcio-peer");
    assert_eq!(out["trailing"]["x-trailer"], "done");

    // Server streaming, trailers after the last message.
    let out = peers
        .grpc_app_call(&a, "users", "/outrigger.test.Echo/Stream", "4", true)
        .await;
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(
        out["messages"],
        serde_json::json!(["item-0", "item-1", "item-2", "item-3"])
    );
    assert_eq!(out["trailing"]["x-trailer"], "done");

    // The app's own status comes back as it is.
    let out = peers
        .grpc_client(&a, &["/outrigger.test.Echo/Fail", "--app-id", "users"])
        .await;
    assert_eq!(out["code"], "NOT_FOUND", "{out}");

    // One mutual TLS connection carried all three; the callee knows who called.
    assert_eq!(handshakes(&m.b, "inbound", "ok"), 1.0);
    let lines = m.callee_lines().await;
    let unary = lines
        .iter()
        .find(|l| l["method"] == "/outrigger.test.Echo/Unary")
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(unary["protocol"], "proxy-http2");
    assert_eq!(unary["peerIdentity"], WEB);
    assert_eq!(unary["cluster"], "app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_http2_listener_serves_grpc() {
    let Some(peers) = Peers::require("gRPC on a plaintext http2 listener") else {
        return;
    };
    let server = peers.grpc_server();
    let rt = start(&format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc: {{channels: [{{listener: "127.0.0.1:1"}}]}}
listeners:
  - {{name: h2c, protocol: http2, address: "127.0.0.1:0", routeTable: t}}
  - {{name: sniffed, protocol: auto, address: "127.0.0.1:0", routeTable: t}}
routeTables: [{{name: t, routes: [{{match: {{pathPrefix: /outrigger.test.Echo/}}, cluster: app}}]}}]
clusters: [{{name: app, protocol: http2, hosts: [{{address: "{}"}}]}}]
"#,
        server.addr()
    ))
    .await;
    for listener in ["h2c", "sniffed"] {
        let addr = bound(&rt, listener).to_string();
        let out = peers
            .grpc_client(&addr, &["/outrigger.test.Echo/Unary", "--data", listener])
            .await;
        assert_eq!(out["code"], "OK", "{listener}: {out}");
        let answer: serde_json::Value =
            serde_json::from_str(out["messages"][0].as_str().unwrap()).unwrap();
        assert_eq!(answer["body"], listener);
        // No route: the proxy's own gRPC status, naming the table.
        let out = peers.grpc_client(&addr, &["/other.Svc/Call"]).await;
        assert_eq!(out["code"], "NOT_FOUND", "{out}");
        assert!(
            out["details"].as_str().unwrap().contains("table t"),
            "{out}"
        );
    }
}
