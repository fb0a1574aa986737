//! The webhook server on shutdown (SIGTERM in `run` and `webhook`): it stops accepting, finishes
//! the admission review it is in the middle of, and only then returns. Real TLS on 127.0.0.1, a
//! client that sends half a review, then the rest after shutdown began.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use outrigger_operator::{
    CertStore, Metrics, NoCluster, SidecarSettings, WebhookState, serve_webhooks,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

/// A CA and a localhost serving certificate written into `dir`; returns the CA PEM.
fn pki(dir: &std::path::Path) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    ca_cert.pem()
}

fn connector(ca_pem: &str) -> TlsConnector {
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

fn review() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0d4f5c1e-8d1b-4c52-9a57-2f1c7a3b9e10",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": { "username": "admin" },
            "object": { "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "web", "annotations": { "outrigger.dev/inject": "true" } },
                "spec": { "containers": [{ "name": "app", "image": "app" }] } },
            "dryRun": false,
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn shutdown_finishes_the_review_in_flight_then_returns() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki(dir.path());
    let store = CertStore::new(dir.path());
    store.reload().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(WebhookState {
        settings: SidecarSettings::default(),
        cluster: Arc::new(NoCluster),
        metrics: Arc::new(Metrics::new()),
        lookup: None,
        skips: None,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_webhooks(
        listener,
        store.server_config().unwrap(),
        state,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // A review whose body is half sent when shutdown begins.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(&ca)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let body = review();
    let (first, rest) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /mutate-pods HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(first).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    stop_tx.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!server.is_finished(), "returned with a review in flight");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed once shutdown begins"
    );

    tls.write_all(rest).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    // The server answers, then closes the connection (it is draining): read to the end.
    tls.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let json_start = text.find("\r\n\r\n").unwrap() + 4;
    let answer: Value = serde_json::from_str(&text[json_start..]).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(
        answer["response"]["patchType"], "JSONPatch",
        "the review was answered in full"
    );

    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the server returns once the connection is done")
        .unwrap();
}

#[tokio::test]
async fn shutdown_with_idle_connections_returns_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki(dir.path());
    let store = CertStore::new(dir.path());
    store.reload().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(WebhookState {
        settings: SidecarSettings::default(),
        cluster: Arc::new(NoCluster),
        metrics: Arc::new(Metrics::new()),
        lookup: None,
        skips: None,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_webhooks(
        listener,
        store.server_config().unwrap(),
        state,
        async move {
            let _ = stop_rx.await;
        },
    ));
    // A keep-alive connection with no request in flight.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = connector(&ca)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .expect("an idle connection does not hold shutdown up")
        .unwrap();
    let mut buf = Vec::new();
    let n = tls.read_to_end(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
}
