//! The standalone webhook (`outrigger-operator webhook`) as a user runs it: the real binary with
//! a throwaway CA and serving certificate, called over real HTTPS with `AdmissionReview` v1 JSON
//! by a client that trusts only that CA. Patched pods are checked with `kubernetes-validate`
//! against the Kubernetes 1.35 schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use k8s_openapi::{ByteString, api::core::v1::Pod};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

struct Webhook {
    child: Child,
    port: u16,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a serving certificate for localhost / 127.0.0.1 signed by it.
fn throwaway_pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Starts the webhook on an ephemeral port and learns the port from its own startup log line,
/// so no other process can take the port between choosing and binding it.
fn start(extra: &[&str]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let (ca_pem, cert_pem, key_pem) = throwaway_pki();
    std::fs::write(dir.path().join("tls.crt"), cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), key_pem).unwrap();
    let mut child = Command::new(support::operator_bin())
        .args(["--log-format", "json", "webhook", "--cert-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    // Keeps draining stderr after the address is found, so the webhook never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if event["message"] == "webhook serving (standalone)" {
                let _ = tx.send(event["address"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the webhook did not log its listening address");
    let port = address
        .parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{address:?}: {e}"))
        .port();
    Webhook {
        child,
        port,
        ca_pem,
        _dir: dir,
    }
}

fn tls_client(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn call(
    port: u16,
    ca_pem: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tls_client(ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, bytes))
}

async fn review(hook: &Webhook, path: &str, body: &Value) -> Value {
    let (status, bytes) = call(
        hook.port,
        &hook.ca_pem,
        "POST",
        path,
        serde_json::to_vec(body).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&bytes).unwrap()
}

fn admission_review(
    uid: &str,
    kind: (&str, &str, &str, &str),
    namespace: &str,
    object: Value,
) -> Value {
    let (group, version, kind, resource) = kind;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": group, "version": version, "kind": kind },
            "resource": { "group": group, "version": version, "resource": resource },
            "requestKind": { "group": group, "version": version, "kind": kind },
            "requestResource": { "group": group, "version": version, "resource": resource },
            "name": object["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"] },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    })
}

const POD: (&str, &str, &str, &str) = ("", "v1", "Pod", "pods");
const RTC: (&str, &str, &str, &str) = (
    "outrigger.dev",
    "v1alpha1",
    "RuntimeConfig",
    "runtimeconfigs",
);

fn app_pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "checkout", "namespace": "shop", "labels": { "app": "checkout" }, "annotations": annotations },
        "spec": {
            "containers": [{
                "name": "checkout",
                "image": "ghcr.io/example/checkout:1.4.2",
                "ports": [{ "containerPort": 8080, "name": "http" }],
            }],
        },
    })
}

/// Applies the returned JSONPatch (base64, as the API server receives it) to the pod.
fn apply_patch(pod: &Value, response: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: ByteString = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

fn write_and_validate(dir: &Path, name: &str, value: &Value) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    support::assert_kubernetes_valid(&path);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutate_pods_over_https_produces_valid_pods() {
    let hook = start(&[
        "--sidecar-image",
        "registry.example/outrigger:test",
        "--sidecar-cpu-limit",
        "500m",
    ]);
    let out = tempfile::tempdir().unwrap();

    // (case, annotations, sidecar in initContainers)
    let cases = [
        (
            "native sidecar (default)",
            json!({ "outrigger.dev/inject": "true", "outrigger.dev/config": "checkout" }),
            true,
        ),
        (
            "regular container",
            json!({ "outrigger.dev/inject": "true", "outrigger.dev/native-sidecar": "false", "outrigger.dev/memory-limit": "256Mi", "outrigger.dev/log-level": "debug" }),
            false,
        ),
        (
            "API socket",
            json!({ "outrigger.dev/inject": "true", "outrigger.dev/api-socket": "true" }),
            true,
        ),
    ];
    for (i, (case, annotations, native)) in cases.into_iter().enumerate() {
        let pod = app_pod(annotations);
        let uid = format!("a1b2c3d4-0000-0000-0000-00000000000{i}");
        let answer = review(
            &hook,
            "/mutate-pods",
            &admission_review(&uid, POD, "shop", pod.clone()),
        )
        .await;
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{case}");
        assert_eq!(answer["kind"], "AdmissionReview", "{case}");
        let response = &answer["response"];
        assert_eq!(response["uid"], uid, "{case}");
        assert_eq!(response["allowed"], true, "{case}");
        let patched = apply_patch(&pod, response);
        write_and_validate(out.path(), &format!("pod-{i}.json"), &patched);

        let typed: Pod = serde_json::from_value(patched.clone()).unwrap();
        let spec = typed.spec.unwrap();
        let sidecar = if native {
            &spec.init_containers.as_ref().unwrap()[0]
        } else {
            &spec.containers[0]
        };
        assert_eq!(sidecar.name, "outrigger", "{case}");
        assert_eq!(
            sidecar.image.as_deref(),
            Some("registry.example/outrigger:test"),
            "{case}"
        );
        assert_eq!(
            sidecar.restart_policy.as_deref(),
            native.then_some("Always"),
            "{case}"
        );
        let resources = serde_json::to_value(sidecar.resources.as_ref().unwrap()).unwrap();
        assert_eq!(
            resources["limits"]["cpu"], "500m",
            "{case}: flag default applies"
        );
        if !native {
            assert_eq!(
                resources["limits"]["memory"], "256Mi",
                "{case}: annotation wins"
            );
            assert_eq!(sidecar.args.as_ref().unwrap()[5], "debug", "{case}");
        }
        // --sidecar-cpu-limit 500m: one worker thread.
        assert!(
            sidecar
                .args
                .as_ref()
                .unwrap()
                .contains(&"--threads=1".to_owned()),
            "{case}"
        );
        let socket = patched["metadata"]["annotations"]["outrigger.dev/api-socket"] == "true";
        let socket_arg = "--grpc-socket=/var/run/outrigger/api/grpc.sock".to_owned();
        assert_eq!(
            sidecar.args.as_ref().unwrap().contains(&socket_arg),
            socket,
            "{case}"
        );
        if socket {
            let app = &spec.containers[0];
            assert!(
                app.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "outrigger-api-socket"
                        && m.mount_path == "/var/run/outrigger/api"),
                "{case}"
            );
            assert!(
                app.env
                    .iter()
                    .flatten()
                    .any(|e| e.name == "DAPR_GRPC_ENDPOINT"
                        && e.value.as_deref() == Some("unix:///var/run/outrigger/api/grpc.sock")),
                "{case}"
            );
        }
        let config_map = &patched["spec"]["volumes"][0]["configMap"]["name"];
        let config = patched["metadata"]["annotations"]["outrigger.dev/config"]
            .as_str()
            .unwrap_or("default");
        assert_eq!(config_map, &format!("outrigger-{config}"), "{case}");
        assert_eq!(
            patched["metadata"]["labels"]["outrigger.dev/injected"], "true",
            "{case}"
        );
        assert_eq!(patched["metadata"]["labels"]["app"], "checkout", "{case}");

        // The API server calls again after other mutations (reinvocation): nothing more to do.
        let again = review(
            &hook,
            "/mutate-pods",
            &admission_review(&uid, POD, "shop", patched),
        )
        .await;
        assert_eq!(again["response"]["allowed"], true);
        assert!(
            again["response"].get("patch").is_none(),
            "{case}: re-injection must be a no-op"
        );
    }

    // Not opted in: allowed, untouched, no warning.
    let plain = review(
        &hook,
        "/mutate-pods",
        &admission_review("u-plain", POD, "shop", app_pod(json!({}))),
    )
    .await;
    assert_eq!(plain["response"]["allowed"], true);
    assert!(plain["response"].get("patch").is_none());
    assert!(plain["response"].get("warnings").is_none());

    // The namespace label reaches the webhook through the registration's path.
    let by_ns = review(
        &hook,
        "/mutate-pods/namespace-opted-in",
        &admission_review("u-ns", POD, "shop", app_pod(json!({}))),
    )
    .await;
    assert!(by_ns["response"]["patch"].is_string());

    // kube-system: allowed without the sidecar, and the user is told why: a warning, and the
    // pod says so in its annotation.
    let pod_json = app_pod(json!({ "outrigger.dev/inject": "true" }));
    let system = review(
        &hook,
        "/mutate-pods",
        &admission_review(
            "u-sys",
            POD,
            "kube-system",
            app_pod(json!({ "outrigger.dev/inject": "true" })),
        ),
    )
    .await;
    assert_eq!(
        system["response"]["warnings"][0],
        "outrigger: pods in kube-system are never injected"
    );
    let mut marked = pod_json;
    let patch: json_patch::Patch = serde_json::from_slice(
        &serde_json::from_value::<ByteString>(system["response"]["patch"].clone())
            .unwrap()
            .0,
    )
    .unwrap();
    json_patch::patch(&mut marked, &patch).unwrap();
    assert_eq!(
        marked["metadata"]["annotations"]["outrigger.dev/injection"],
        "skipped: pods in kube-system are never injected"
    );
    assert_eq!(patch.0.len(), 1, "only the annotation: {patch:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_runtimeconfigs_over_https_rejects_what_the_sidecar_would() {
    let hook = start(&[]);
    let valid = json!({
        "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig",
        "metadata": { "name": "checkout", "namespace": "shop" },
        "spec": {
            "rpc": { "timeoutMs": 3000, "beforeInvoke": [{ "name": "dubbo_json_rpc" }], "channels": [{ "protocol": "http", "size": 16, "listener": "egress" }] },
            "listeners": [{ "name": "egress", "protocol": "http", "routeTable": "egress" }],
            "routeTables": [{ "name": "egress", "routes": [{ "match": { "headers": [{ "name": "id", "exact": "payments" }] }, "cluster": "payments" }] }],
            "clusters": [{ "name": "payments", "hosts": [{ "address": "payments.shop.svc:8080" }] }],
        },
    });
    let ok = review(
        &hook,
        "/validate-runtimeconfigs",
        &admission_review("v-ok", RTC, "shop", valid.clone()),
    )
    .await;
    assert_eq!(ok["response"]["allowed"], true, "{ok}");

    let mut invalid = valid;
    invalid["spec"]["routeTables"][0]["routes"][0]["cluster"] = json!("billing");
    invalid["spec"]["rpc"]["beforeInvoke"][0]["name"] = json!("gzip");
    invalid["spec"]["listeners"][0]["address"] = json!("localhost:99999");
    let denied = review(
        &hook,
        "/validate-runtimeconfigs",
        &admission_review("v-bad", RTC, "shop", invalid.clone()),
    )
    .await;
    let response = &denied["response"];
    assert_eq!(response["uid"], "v-bad");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 422);
    let message = response["status"]["message"].as_str().unwrap();
    // The same list the sidecar prints when it refuses the file.
    let spec: outrigger_config::RuntimeConfigSpec =
        serde_json::from_value(invalid["spec"].clone()).unwrap();
    let sidecar_errors = outrigger_config::validate(&spec).unwrap_err().lines();
    assert_eq!(sidecar_errors.len(), 3, "{sidecar_errors:?}");
    for line in &sidecar_errors {
        assert!(message.contains(line.as_str()), "{line:?} not in {message}");
    }
    assert!(
        message.starts_with("RuntimeConfig shop/checkout is invalid: 3 problem(s):"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_clients_trusting_the_ca_get_an_answer() {
    let hook = start(&[]);
    let (other_ca, _, _) = throwaway_pki();
    let err = call(hook.port, &other_ca, "POST", "/mutate-pods", b"{}".to_vec())
        .await
        .unwrap_err();
    assert!(err.starts_with("TLS:"), "{err}");
    let (status, _) = call(hook.port, &hook.ca_pem, "GET", "/nothing-here", Vec::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Garbage is answered with an AdmissionReview that denies, not an HTTP error.
    let (status, body) = call(
        hook.port,
        &hook.ca_pem,
        "POST",
        "/mutate-pods",
        b"not json".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false);
}

#[test]
fn webhook_refuses_to_start_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::operator_bin())
        .args(["webhook", "--cert-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot load the serving certificate") && stderr.contains("tls.crt"),
        "{stderr}"
    );
}
