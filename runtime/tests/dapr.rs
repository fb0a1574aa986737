//! Dapr compatibility, proven with the official SDKs used as a Dapr user uses them: the Dapr
//! Python SDK (PyPI `dapr`) over HTTP and over gRPC, the Dapr JavaScript SDK (npm `@dapr/dapr`)
//! over HTTP, and grpcio clients proxied by `dapr-app-id` to a grpcio server (unary, streaming,
//! errors) — each against a real upstream that records what it saw. Plus Dapr's HTTP API with a
//! plain HTTP client (health, invoke paths, status pass-through, errors, limits) and the API
//! token rules on both APIs. The peers come from scripts/install-tools.sh; a test whose peers
//! are missing fails naming them, unless `OUTRIGGER_SKIP_EXTERNAL=1` (then it says SKIPPED).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod peer;
mod support;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use outrigger_runtime::{Metrics, Options, Sidecar};
use serde_json::Value;
use support::*;
use tonic::{Code, metadata::MetadataValue};

/// How long one peer process may run.
const PEER_TIMEOUT: Duration = Duration::from_secs(60);

/// The installed Dapr SDKs and grpcio.
struct DaprPeers {
    tools: PathBuf,
    node: PathBuf,
    /// The venv with PyPI `dapr`.
    dapr_python: PathBuf,
    /// The venv with grpcio.
    python: PathBuf,
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn script(name: &str) -> String {
    peer::root()
        .join("tests/peers")
        .join(name)
        .display()
        .to_string()
}

impl DaprPeers {
    fn require(test: &str) -> Option<Self> {
        let tools = peer::tools();
        let dapr_python = tools.join("dapr-venv/bin/python");
        let python = tools.join("venv/bin/python");
        let dapr_js = tools.join("node/node_modules/@dapr/dapr/package.json");
        let node = which("node");
        let missing: Vec<String> = [
            (dapr_python.exists(), dapr_python.display().to_string()),
            (python.exists(), python.display().to_string()),
            (dapr_js.exists(), dapr_js.display().to_string()),
            (node.is_some(), "node on PATH".to_owned()),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect();
        if missing.is_empty() {
            return Some(Self {
                tools,
                node: node.unwrap(),
                dapr_python,
                python,
            });
        }
        if std::env::var("OUTRIGGER_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED {test}: OUTRIGGER_SKIP_EXTERNAL=1 and the Dapr SDK peers are missing ({})",
                missing.join(", ")
            );
            return None;
        }
        panic!(
            "{test} needs the Dapr SDKs and grpcio, which are missing: {}.\n\
             Install them with `eval \"$(./scripts/install-tools.sh)\"` (or point OUTRIGGER_TOOLS \
             at an install), or set OUTRIGGER_SKIP_EXTERNAL=1 to skip peer tests.",
            missing.join(", ")
        );
    }

    /// The Python SDK, invoking `method` on `app_id` through the sidecar `s`.
    async fn python_sdk(
        &self,
        s: &Sidecar,
        protocol: &str,
        token: Option<&str>,
        args: &[&str],
    ) -> Value {
        let mut cmd = Command::new(&self.dapr_python);
        cmd.arg(script("dapr_client.py"))
            .args(args)
            .env(
                "DAPR_HTTP_PORT",
                s.http_api_address().unwrap().port().to_string(),
            )
            .env("DAPR_GRPC_PORT", grpc_port(s).to_string())
            .env("DAPR_RUNTIME_HOST", "127.0.0.1")
            .env("DAPR_API_METHOD_INVOCATION_PROTOCOL", protocol)
            .env("DAPR_HEALTH_TIMEOUT", "10")
            .env_remove("DAPR_HTTP_ENDPOINT")
            .env_remove("DAPR_GRPC_ENDPOINT")
            .env_remove("DAPR_API_TOKEN");
        if let Some(t) = token {
            cmd.env("DAPR_API_TOKEN", t);
        }
        json(run(cmd).await)
    }

    /// The JavaScript SDK over HTTP.
    async fn js_sdk(&self, s: &Sidecar, args: &[&str]) -> Value {
        let mut cmd = Command::new(&self.node);
        cmd.arg(script("dapr_client.js"))
            .args(["--port", &s.http_api_address().unwrap().port().to_string()])
            .args(args)
            .env("OUTRIGGER_TOOLS", &self.tools)
            .env_remove("NODE_EXTRA_CA_CERTS")
            .env_remove("DAPR_HTTP_ENDPOINT")
            .env_remove("DAPR_API_TOKEN");
        json(run(cmd).await)
    }

    /// A grpcio client call to `addr`.
    async fn grpc_client(&self, addr: &str, args: &[&str]) -> Value {
        let mut cmd = Command::new(&self.python);
        cmd.arg(script("grpc_client.py")).arg(addr).args(args);
        json(run(cmd).await)
    }

    /// The grpcio server on an ephemeral port.
    fn grpc_server(&self) -> peer::Server {
        peer::grpc_server(&self.python)
    }
}

/// Runs a peer to completion (killed after [`PEER_TIMEOUT`]); its stdout, or a panic with its
/// stderr. Its output is read while it runs, so a chatty peer cannot fill a pipe and stall.
async fn run(cmd: Command) -> String {
    let what = format!("{cmd:?}");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let out = tokio::time::timeout(PEER_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{what} ran longer than {PEER_TIMEOUT:?}"))
        .expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}): {stderr}\n{stdout}",
        out.status
    );
    stdout
}

fn json(out: String) -> Value {
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn grpc_port(s: &Sidecar) -> u16 {
    s.grpc_address()
        .parse::<SocketAddr>()
        .expect("tcp grpc address")
        .port()
}

/// A sidecar routing app id `orders` to `http` (HTTP/1.1) and to `grpc` (h2c), with extra
/// top-level YAML (tokens).
fn config(http: SocketAddr, grpc: Option<u16>, http_api_extra: &str, grpc_extra: &str) -> String {
    let (grpc_route, grpc_cluster) = grpc.map_or((String::new(), String::new()), |port| {
        (
            "      - match: {headers: [{name: id, exact: orders}]}\n        cluster: orders-grpc\n"
                .to_owned(),
            format!(
                "  - {{name: orders-grpc, protocol: http2, hosts: [{{address: \"127.0.0.1:{port}\"}}], connectTimeoutMs: 500}}\n"
            ),
        )
    });
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"{grpc_extra}}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"{http_api_extra}}}
rpc:
  timeoutMs: 3000
  channels: [{{protocol: http, size: 16, listener: egress}}]
listeners:
  - {{name: egress, protocol: http, routeTable: main}}
routeTables:
  - name: main
    routes:
      - match: {{headers: [{{name: id, exact: orders}}]}}
        cluster: orders-http
{grpc_route}clusters:
  - {{name: orders-http, hosts: [{{address: "{http}"}}], connectTimeoutMs: 500}}
{grpc_cluster}"#
    )
}

/// An upstream that answers 404 under `/missing`, and 201 with a header otherwise.
async fn orders_upstream() -> Upstream {
    Upstream::start(|seen| {
        if seen.path.starts_with("/missing") {
            let mut r = Reply::ok("no such order");
            r.status = StatusCode::NOT_FOUND;
            r.headers = vec![("content-type", "text/plain".to_owned())];
            return r;
        }
        let mut r = Reply::ok(r#"{"created":true}"#);
        r.status = StatusCode::CREATED;
        r.headers.push(("x-upstream", "orders".to_owned()));
        r
    })
    .await
}

/// One HTTP/1.1 request to the sidecar's HTTP API.
async fn http_call(
    s: &Sidecar,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let stream = tokio::net::TcpStream::connect(s.http_api_address().expect("http api on"))
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("answer in time")
        .expect("answer");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn start_sidecar(yaml: &str, options: Options) -> Sidecar {
    let spec = outrigger_config::load_yaml(yaml).expect("valid test config");
    Sidecar::start(spec, options, Metrics::new())
        .await
        .expect("sidecar starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_invokes_and_passes_the_apps_answer_through() {
    let up = orders_upstream().await;
    let s = start_sidecar(&config(up.addr, None, "", ""), Options::default()).await;

    let (status, _, body) = http_call(&s, "GET", "/v1.0/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    let (status, _, _) = http_call(&s, "GET", "/v1.0/healthz/outbound", &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Every verb, a method path with slashes, the query string, headers and the body.
    for verb in ["POST", "PUT", "PATCH", "DELETE", "GET", "OPTIONS"] {
        let (status, headers, body) = http_call(
            &s,
            verb,
            "/v1.0/invoke/orders/method/api/v1/items?size=2&tag=a%20b",
            &[
                ("content-type", "application/json"),
                ("x-tenant", "t1"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "dropped"),
            ],
            r#"{"sku":"A1"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{verb}: {body}");
        assert_eq!(body, r#"{"created":true}"#);
        assert_eq!(headers["x-upstream"], "orders");
        assert_eq!(headers["content-type"], "application/json");
        let seen = up.requests().pop().unwrap();
        assert_eq!(seen.method.as_str(), verb);
        assert_eq!(seen.path, "/api/v1/items");
        assert_eq!(seen.query.as_deref(), Some("size=2&tag=a%20b"));
        assert_eq!(seen.headers["x-tenant"], "t1");
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(seen.body, Bytes::from_static(br#"{"sku":"A1"}"#));
        assert!(!seen.headers.contains_key("x-hop"), "hop-by-hop removed");
    }

    // The app's 404 is the caller's 404, body and all.
    let (status, _, body) =
        http_call(&s, "GET", "/v1.0/invoke/orders/method/missing/7", &[], "").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "no such order")
    );

    // The dapr-app-id header form.
    let (status, _, _) = http_call(
        &s,
        "POST",
        "/api/v2/items?x=1",
        &[("dapr-app-id", "orders")],
        "b",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let seen = up.requests().pop().unwrap();
    assert_eq!(
        (seen.path.as_str(), seen.query.as_deref()),
        ("/api/v2/items", Some("x=1"))
    );
    assert!(!seen.headers.contains_key("dapr-app-id"));

    // The sidecar's own failures: Dapr's JSON shape.
    let (status, headers, body) =
        http_call(&s, "GET", "/v1.0/invoke/payments/method/x", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers["content-type"], "application/json");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["errorCode"], "ERR_DIRECT_INVOKE");
    let msg = err["message"].as_str().unwrap();
    assert!(
        msg.contains("\"payments\"") && msg.contains("no route"),
        "{msg}"
    );

    let (status, _, body) = http_call(&s, "GET", "/v1.0/state/store/k", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("ERR_NOT_SUPPORTED"), "{body}");

    // Bodies are bounded by grpc.maxMessageBytes (4 MiB by default).
    let big = "x".repeat(4 * 1024 * 1024 + 1);
    let (status, _, body) = http_call(&s, "POST", "/v1.0/invoke/orders/method/a", &[], &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // An upstream that is gone: 503 naming the cause.
    s.reloader()
        .apply_text(&config(dead_address().await, None, "", ""))
        .await
        .expect("reload");
    let (status, _, body) = http_call(&s, "GET", "/v1.0/invoke/orders/method/a", &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("ERR_DIRECT_INVOKE"), "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_stays_up_after_a_rejected_config_and_the_api_can_be_turned_off() {
    let up = orders_upstream().await;
    let yaml = config(up.addr, None, "", "");
    let s = start_sidecar(&yaml, Options::default()).await;
    let rejected = s
        .reloader()
        .apply_text(&yaml.replace("cluster: orders-http", "cluster: nowhere"))
        .await;
    assert!(rejected.is_err(), "the broken config is rejected");
    for path in ["/v1.0/healthz", "/v1.0/healthz/outbound"] {
        let (status, _, _) = http_call(&s, "GET", path, &[], "").await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "{path}: the old config keeps serving"
        );
    }
    let (status, _, _) = http_call(&s, "GET", "/v1.0/invoke/orders/method/a", &[], "").await;
    assert_eq!(status, StatusCode::CREATED);
    s.shutdown().await;

    let off = yaml.replace(
        "httpApi: {address: \"127.0.0.1:0\"}",
        "httpApi: {address: null}",
    );
    let s = start_sidecar(&off, Options::default()).await;
    assert_eq!(s.http_api_address(), None);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_are_required_and_never_forwarded() {
    let up = orders_upstream().await;
    let yaml = config(up.addr, None, ", apiToken: h77p", ", apiToken: grpc7");
    let mut rt = start(&yaml).await;
    let s = &rt.sidecar;

    let (_, dump) = admin_get(s, "/config_dump").await;
    assert!(
        !dump.contains("h77p") && !dump.contains("grpc7") && dump.contains("<redacted>"),
        "{dump}"
    );

    let (status, _, body) = http_call(s, "GET", "/v1.0/invoke/orders/method/a", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("ERR_API_UNAUTHORIZED"), "{body}");
    let (status, _, _) = http_call(
        s,
        "GET",
        "/v1.0/invoke/orders/method/a",
        &[("dapr-api-token", "grpc7")],
        "",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "each API has its own token"
    );
    let (status, _, _) = http_call(s, "GET", "/v1.0/healthz", &[], "").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "health needs no token");
    let (status, _, _) = http_call(
        s,
        "GET",
        "/v1.0/invoke/orders/method/a",
        &[("dapr-api-token", "h77p")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        !up.requests()
            .pop()
            .unwrap()
            .headers
            .contains_key("dapr-api-token")
    );

    let err = rt
        .dapr
        .invoke_service(dapr_req("orders", "a", "{}"))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(dapr_req("orders", "a", "{}"));
    req.metadata_mut()
        .insert("dapr-api-token", MetadataValue::from_static("grpc7"));
    rt.dapr.invoke_service(req).await.expect("with the token");
    assert!(
        !up.requests()
            .pop()
            .unwrap()
            .headers
            .contains_key("dapr-api-token")
    );

    // Without a token configured, a dapr-api-token sent anyway is still not forwarded.
    let plain = start(&config(up.addr, None, "", "")).await;
    let mut plain_dapr = plain.dapr.clone();
    let mut req = tonic::Request::new(dapr_req("orders", "a", "{}"));
    req.metadata_mut()
        .insert("dapr-api-token", MetadataValue::from_static("leak"));
    plain_dapr.invoke_service(req).await.expect("no check");
    assert!(
        !up.requests()
            .pop()
            .unwrap()
            .headers
            .contains_key("dapr-api-token")
    );

    // DAPR_API_TOKEN (handed over by main as Options::api_token) applies when the config sets none.
    let env = start_with(
        &config(up.addr, None, "", ""),
        Options {
            api_token: Some("from-env".to_owned()),
            ..Options::default()
        },
    )
    .await;
    let (status, _, _) =
        http_call(&env.sidecar, "GET", "/v1.0/invoke/orders/method/a", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = http_call(
        &env.sidecar,
        "GET",
        "/v1.0/invoke/orders/method/a",
        &[("dapr-api-token", "from-env")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_python_sdk_invokes_over_http_and_grpc() {
    let Some(peers) = DaprPeers::require("dapr_python_sdk_invokes_over_http_and_grpc") else {
        return;
    };
    let up = orders_upstream().await;
    let s = start_sidecar(
        &config(
            up.addr,
            None,
            ", apiToken: py-t0ken",
            ", apiToken: py-t0ken",
        ),
        Options::default(),
    )
    .await;
    let args = [
        "orders",
        "api/v1/items",
        "--verb",
        "POST",
        "--data",
        r#"{"sku":"A1"}"#,
        "--content-type",
        "application/json",
        "--header",
        "x-tenant=t1",
        "--query",
        "size=2",
    ];
    for protocol in ["http", "grpc"] {
        let out = peers
            .python_sdk(&s, protocol, Some("py-t0ken"), &args)
            .await;
        assert_eq!(out["data"], r#"{"created":true}"#, "{protocol}: {out}");
        if protocol == "http" {
            assert_eq!(out["status"], 201, "{out}");
            assert_eq!(out["headers"]["x-upstream"][0], "orders", "{out}");
        }
        let seen = up.requests().pop().unwrap();
        assert_eq!(seen.method.as_str(), "POST", "{protocol}");
        assert_eq!(seen.path, "/api/v1/items", "{protocol}");
        assert_eq!(seen.query.as_deref(), Some("size=2"), "{protocol}");
        assert_eq!(seen.headers["x-tenant"], "t1", "{protocol}");
        assert_eq!(
            seen.headers["content-type"], "application/json",
            "{protocol}"
        );
        assert_eq!(
            seen.body,
            Bytes::from_static(br#"{"sku":"A1"}"#),
            "{protocol}"
        );
        assert!(!seen.headers.contains_key("dapr-api-token"), "{protocol}");
    }
    // The app's 404: over HTTP the SDK sees the app's own status.
    let out = peers
        .python_sdk(&s, "http", Some("py-t0ken"), &["orders", "missing/1"])
        .await;
    assert_eq!(out["status"], 404, "{out}");
    // A wrong token is refused on both protocols.
    for protocol in ["http", "grpc"] {
        let out = peers
            .python_sdk(&s, protocol, Some("wrong"), &["orders", "api/v1/items"])
            .await;
        assert!(out["error"].is_string(), "{protocol}: {out}");
        if protocol == "http" {
            assert_eq!(out["status"], 401, "{out}");
        } else {
            assert_eq!(out["errorCode"], "StatusCode.UNAUTHENTICATED", "{out}");
        }
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_javascript_sdk_invokes_over_http() {
    let Some(peers) = DaprPeers::require("dapr_javascript_sdk_invokes_over_http") else {
        return;
    };
    let up = orders_upstream().await;
    let s = start_sidecar(
        &config(up.addr, None, ", apiToken: js-t0ken", ""),
        Options::default(),
    )
    .await;
    let out = peers
        .js_sdk(
            &s,
            &[
                "orders",
                "api/v1/items?size=2",
                "--verb",
                "PUT",
                "--data",
                r#"{"sku":"B2"}"#,
                "--header",
                "x-tenant=t2",
                "--token",
                "js-t0ken",
            ],
        )
        .await;
    assert_eq!(out["data"]["created"], true, "{out}");
    let seen = up.requests().pop().unwrap();
    assert_eq!(seen.method.as_str(), "PUT");
    assert_eq!(seen.path, "/api/v1/items");
    assert_eq!(seen.query.as_deref(), Some("size=2"));
    assert_eq!(seen.headers["x-tenant"], "t2");
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.body).unwrap(),
        serde_json::json!({"sku": "B2"})
    );
    assert!(!seen.headers.contains_key("dapr-api-token"));

    let out = peers
        .js_sdk(&s, &["orders", "missing/2", "--token", "js-t0ken"])
        .await;
    let err = out["error"].as_str().expect("an error");
    assert!(
        err.contains("\"status\":404") && err.contains("no such order"),
        "{err}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_are_proxied_by_dapr_app_id() {
    let Some(peers) = DaprPeers::require("grpcio_calls_are_proxied_by_dapr_app_id") else {
        return;
    };
    let server = peers.grpc_server();
    let up = orders_upstream().await;
    let s = start_sidecar(
        &config(up.addr, Some(server.port), "", ", apiToken: g-t0ken"),
        Options::default(),
    )
    .await;
    let addr = s.grpc_address().to_owned();
    let token = ["--token", "g-t0ken"];

    let out = peers
        .grpc_client(
            &addr,
            &[
                "/outrigger.test.Echo/Unary",
                "--app-id",
                "orders",
                "--data",
                "hi",
                "--header",
                "x-tenant=t3",
                token[0],
                token[1],
            ],
        )
        .await;
    assert_eq!(out["code"], "OK", "{out}");
    let answer: Value = serde_json::from_str(out["messages"][0].as_str().unwrap()).unwrap();
    assert_eq!(answer["body"], "hi");
    assert_eq!(answer["metadata"]["x-tenant"], "t3");
    assert!(
        answer["metadata"].get("dapr-api-token").is_none(),
        "{answer}"
    );
    assert_eq!(out["initial"]["x-served-by"], "grpcio-peer");
    assert_eq!(out["trailing"]["x-trailer"], "done");

    let out = peers
        .grpc_client(
            &addr,
            &[
                "/outrigger.test.Echo/Stream",
                "--stream",
                "--app-id",
                "orders",
                "--data",
                "5",
                token[0],
                token[1],
            ],
        )
        .await;
    assert_eq!(out["code"], "OK", "{out}");
    assert_eq!(
        out["messages"],
        serde_json::json!(["item-0", "item-1", "item-2", "item-3", "item-4"])
    );
    assert_eq!(out["trailing"]["x-trailer"], "done");

    // The upstream's status comes back as it is.
    let out = peers
        .grpc_client(
            &addr,
            &[
                "/outrigger.test.Echo/Fail",
                "--app-id",
                "orders",
                token[0],
                token[1],
            ],
        )
        .await;
    assert_eq!(
        (&out["code"], &out["details"]),
        (&Value::from("NOT_FOUND"), &Value::from("no such thing"))
    );

    // No route for the app: the sidecar's own NOT_FOUND, naming it.
    let out = peers
        .grpc_client(
            &addr,
            &[
                "/outrigger.test.Echo/Unary",
                "--app-id",
                "payments",
                token[0],
                token[1],
            ],
        )
        .await;
    assert_eq!(out["code"], "NOT_FOUND", "{out}");
    assert!(
        out["details"].as_str().unwrap().contains("payments"),
        "{out}"
    );

    // Without the token: refused before anything is forwarded.
    let out = peers
        .grpc_client(&addr, &["/outrigger.test.Echo/Unary", "--app-id", "orders"])
        .await;
    assert_eq!(out["code"], "UNAUTHENTICATED", "{out}");

    // Upstream gone: UNAVAILABLE naming the cluster.
    drop(server);
    let out = peers
        .grpc_client(
            &addr,
            &[
                "/outrigger.test.Echo/Unary",
                "--app-id",
                "orders",
                token[0],
                token[1],
            ],
        )
        .await;
    assert_eq!(out["code"], "UNAVAILABLE", "{out}");
    assert!(
        out["details"].as_str().unwrap().contains("orders-grpc"),
        "{out}"
    );
    s.shutdown().await;
}
