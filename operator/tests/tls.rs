//! Self-managed webhook TLS end to end, in process: the operator's generated CA and serving
//! certificate are served by the real webhook server to a client that trusts only that CA under
//! the Service's DNS name; a renewal from the same CA is picked up by the reloading store without
//! a restart and stays trusted (so the patched caBundle keeps working).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use outrigger_operator::{
    CertStore, Metrics, NoCluster, SidecarSettings, WebhookState, dns_names, generate,
    issue_serving, serve_webhooks, write_cert_dir,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    TlsConnector,
    rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, ServerName, pem::PemObject},
    },
};

/// Connects trusting `ca_pem` for `name`; returns the status of GET /healthz and the served leaf.
async fn healthz(port: u16, ca_pem: &str, name: &str) -> (StatusCode, Vec<u8>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get("/healthz")
                .header("host", name)
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    (response.status(), leaf)
}

#[tokio::test]
async fn generated_certificates_are_served_trusted_and_renewed_without_restart() {
    let names = dns_names("outrigger-webhook", "outrigger-system");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut bundle = generate(&names, now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_cert_dir(dir.path(), &bundle).unwrap();

    let store = CertStore::new(dir.path());
    assert!(!store.is_loaded());
    assert!(store.reload().unwrap());
    assert!(!store.reload().unwrap(), "unchanged files are not reloaded");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let state = Arc::new(WebhookState {
        settings: SidecarSettings::default(),
        cluster: Arc::new(NoCluster),
        metrics: Arc::new(Metrics::new()),
        lookup: None,
        skips: None,
    });
    tokio::spawn(serve_webhooks(
        listener,
        store.server_config().unwrap(),
        state,
        std::future::pending(),
    ));

    for name in &names {
        let (status, _) = healthz(port, &bundle.ca_cert_pem, name).await;
        assert_eq!(status, StatusCode::OK, "{name}");
    }
    let (_, first_leaf) = healthz(
        port,
        &bundle.ca_cert_pem,
        "outrigger-webhook.outrigger-system.svc",
    )
    .await;

    // Renew the serving certificate from the same CA, as the operator does before expiry.
    let ca_before = bundle.ca_cert_pem.clone();
    issue_serving(&mut bundle, &names, now + 10).unwrap();
    assert_eq!(bundle.ca_cert_pem, ca_before);
    write_cert_dir(dir.path(), &bundle).unwrap();
    assert!(store.reload().unwrap());
    let (status, renewed_leaf) =
        healthz(port, &ca_before, "outrigger-webhook.outrigger-system.svc").await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(
        renewed_leaf, first_leaf,
        "the renewed certificate is served"
    );

    // A broken file does not take down the current certificate.
    std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
    assert!(store.reload().is_err());
    let (status, leaf) = healthz(port, &ca_before, "outrigger-webhook.outrigger-system.svc").await;
    assert_eq!((status, leaf), (StatusCode::OK, renewed_leaf));
}
