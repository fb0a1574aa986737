//! The identity files and the mutual TLS built from them, with real certificates and real
//! rustls handshakes over in-memory streams: what is accepted, what is refused and how the
//! refusal is named, and reloads.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{path::Path, sync::Arc};

use outrigger_config::IdentityConfig;
use outrigger_core::Metrics;
use outrigger_identity::{
    Identity, IdentityError, PeerPolicy, TestCa, handshake_failure, mesh_server_name,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/users";
const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/web";

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(bundle: &str, roots: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self { dir };
        files.write(bundle, roots);
        files
    }
    fn write(&self, bundle: &str, roots: &str) {
        std::fs::write(self.path("credentialbundle.pem"), bundle).unwrap();
        std::fs::write(self.path("trust-bundle.pem"), roots).unwrap();
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }
    fn config(&self) -> IdentityConfig {
        IdentityConfig {
            trust_domain: "cluster.local".into(),
            credential_bundle_path: Some(self.path("credentialbundle.pem")),
            csr: None,
            trust_bundle_path: self.path("trust-bundle.pem"),
        }
    }
}

async fn identity(bundle: &str, roots: &str) -> (Files, Arc<Identity>) {
    let files = Files::new(bundle, roots);
    let id = Identity::load(&files.config(), Metrics::new())
        .await
        .expect("identity loads");
    (files, id)
}

#[tokio::test]
async fn a_credential_bundle_loads_with_its_spiffe_id_and_expiry() {
    let ca = TestCa::new("root-a");
    let metrics = Metrics::new();
    let files = Files::new(&ca.bundle(&[SERVER]), &ca.cert_pem);
    let id = Identity::load(&files.config(), metrics.clone())
        .await
        .unwrap();
    let current = id.current();
    assert_eq!(current.credentials.id.as_str(), SERVER);
    assert_eq!(current.version, 1);
    assert_eq!(current.trust.info.len(), 1);
    assert!(current.trust.info[0].subject.contains("root-a"));
    let expiry = current
        .credentials
        .leaf
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        metrics.encode().contains(&format!(
            "outrigger_identity_cert_expiry_timestamp_seconds {expiry}"
        )),
        "{}",
        metrics.encode()
    );
}

#[tokio::test]
async fn unusable_files_are_refused_naming_the_cause() {
    let ca = TestCa::new("root-a");
    let leaf_of =
        |bundle: String| bundle[bundle.find("-----BEGIN CERTIFICATE").unwrap()..].to_owned();
    let key_of =
        |bundle: String| bundle[..bundle.find("-----BEGIN CERTIFICATE").unwrap()].to_owned();
    let cases = [
        (
            "a key of another certificate",
            format!(
                "{}{}",
                key_of(ca.bundle(&[SERVER])),
                leaf_of(ca.bundle(&[SERVER]))
            ),
            ca.cert_pem.clone(),
            "the private key is not the leaf certificate's",
        ),
        (
            "no spiffe id",
            ca.bundle(&["https://users.shop"]),
            ca.cert_pem.clone(),
            "no spiffe:// URI SAN",
        ),
        (
            "two spiffe ids",
            ca.bundle(&[SERVER, CLIENT]),
            ca.cert_pem.clone(),
            "2 spiffe:// URI SANs",
        ),
        (
            "another trust domain",
            ca.bundle(&["spiffe://example.org/ns/shop/sa/users"]),
            ca.cert_pem.clone(),
            "is not in the trust domain cluster.local",
        ),
        (
            "no key",
            leaf_of(ca.bundle(&[SERVER])),
            ca.cert_pem.clone(),
            "no usable PEM private key",
        ),
        (
            "no certificate",
            key_of(ca.bundle(&[SERVER])),
            ca.cert_pem.clone(),
            "no certificate after the private key",
        ),
        (
            "an empty trust bundle",
            ca.bundle(&[SERVER]),
            String::new(),
            "trust-bundle.pem: no PEM certificate",
        ),
    ];
    for (case, bundle, roots, want) in cases {
        let files = Files::new(&bundle, &roots);
        let err = Identity::load(&files.config(), Metrics::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{case}: {err}");
    }
    let missing = IdentityConfig {
        trust_domain: "cluster.local".into(),
        credential_bundle_path: Some("/nonexistent/credentialbundle.pem".into()),
        csr: None,
        trust_bundle_path: "/nonexistent/roots.pem".into(),
    };
    let err = Identity::load(&missing, Metrics::new()).await.unwrap_err();
    assert!(matches!(err, IdentityError::Bundle(_)));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/credentialbundle.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn a_changed_file_is_swapped_in_and_a_bad_one_keeps_the_last_good() {
    let ca = TestCa::new("root-a");
    let (files, id) = identity(&ca.bundle(&[SERVER]), &ca.cert_pem).await;
    let first = id.current().credentials.leaf.serial.clone();
    assert!(!id.reload().await.unwrap(), "nothing changed");

    files.write(&ca.bundle(&[SERVER]), &ca.cert_pem);
    assert!(id.reload().await.unwrap());
    let second = id.current();
    assert_eq!(second.version, 2);
    assert_ne!(second.credentials.leaf.serial, first);

    files.write("-----BEGIN PRIVATE KEY-----\ntruncated", &ca.cert_pem);
    assert!(id.reload().await.is_err());
    assert_eq!(id.current().version, 2, "the last good identity stays");
}

/// One mutual TLS handshake between a listener side and a cluster side over an in-memory
/// stream, then one request each way. Returns each side's error, if any.
async fn handshake(
    server: &Arc<Identity>,
    client: &Arc<Identity>,
    policy: PeerPolicy,
) -> (Result<String, std::io::Error>, Result<(), std::io::Error>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = server.acceptor();
    let trust_domain = server.trust_domain().to_owned();
    let served = tokio::spawn(async move {
        let mut tls = acceptor.accept(b).await?;
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let id = outrigger_identity::SpiffeId::of_cert(&peer, &trust_domain).unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await?;
        tls.write_all(b"pong").await?;
        tls.flush().await?;
        Ok::<_, std::io::Error>(id.to_string())
    });
    let tls = client.client(policy);
    let connector = tls.connector().unwrap();
    let addr = "10.0.0.7:34906".parse().unwrap();
    let called = async {
        let mut stream = connector.connect(mesh_server_name(addr), a).await?;
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"pong");
        Ok::<_, std::io::Error>(())
    }
    .await;
    (served.await.unwrap(), called)
}

#[tokio::test]
async fn mutual_tls_verifies_both_sides_and_names_each_refusal() {
    let ca = TestCa::new("root-a");
    let (_s, server) = identity(&ca.bundle(&[SERVER]), &ca.cert_pem).await;
    let (_c, client) = identity(&ca.bundle(&[CLIENT]), &ca.cert_pem).await;

    // Both sides good: the server learns the client's id.
    let (served, called) =
        handshake(&server, &client, PeerPolicy::OneOf(vec![SERVER.into()])).await;
    assert_eq!(served.unwrap(), CLIENT);
    called.unwrap();
    let (served, called) = handshake(&server, &client, PeerPolicy::TrustDomain).await;
    assert_eq!(served.unwrap(), CLIENT);
    called.unwrap();

    // Any identity of the server's namespace (a discovered app's default), or not.
    let (_, called) = handshake(&server, &client, PeerPolicy::Namespace("shop".into())).await;
    called.unwrap();
    let (_, called) = handshake(&server, &client, PeerPolicy::Namespace("payments".into())).await;
    let err = called.unwrap_err();
    assert_eq!(handshake_failure(&err), "bad_identity", "{err}");
    assert!(
        err.to_string()
            .contains("an identity of namespace payments"),
        "{err}"
    );

    // The server is not who the cluster expects.
    let (_, called) = handshake(
        &server,
        &client,
        PeerPolicy::OneOf(vec!["spiffe://cluster.local/ns/shop/sa/payments".into()]),
    )
    .await;
    let err = called.unwrap_err();
    assert_eq!(handshake_failure(&err), "bad_identity", "{err}");
    assert!(err.to_string().contains(SERVER), "{err}");

    // A server of another CA.
    let rogue_ca = TestCa::new("rogue");
    let (_r, rogue) = identity(&rogue_ca.bundle(&[SERVER]), &ca.cert_pem).await;
    let (_, called) = handshake(&rogue, &client, PeerPolicy::TrustDomain).await;
    assert_eq!(handshake_failure(&called.unwrap_err()), "unknown_ca");

    // A client of another CA: the server refuses it.
    let (_r2, rogue_client) = identity(&rogue_ca.bundle(&[CLIENT]), &ca.cert_pem).await;
    let (served, _) = handshake(&server, &rogue_client, PeerPolicy::TrustDomain).await;
    assert_eq!(handshake_failure(&served.unwrap_err()), "unknown_ca");

    // An expired server certificate.
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.bundle_valid(
        &[SERVER],
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    );
    let files = Files::new(&expired, &ca.cert_pem);
    let stale = Identity::load(&files.config(), Metrics::new())
        .await
        .unwrap();
    let (_, called) = handshake(&stale, &client, PeerPolicy::TrustDomain).await;
    assert_eq!(handshake_failure(&called.unwrap_err()), "expired");
}

#[tokio::test]
async fn a_root_rotation_keeps_both_generations_talking() {
    // Add the new root to both trust bundles, move the server to a certificate of the new
    // root, then drop the old root: every step handshakes.
    let old = TestCa::new("root-old");
    let new = TestCa::new("root-new");
    let (server_files, server) = identity(&old.bundle(&[SERVER]), &old.cert_pem).await;
    let (client_files, client) = identity(&old.bundle(&[CLIENT]), &old.cert_pem).await;
    let both = format!("{}{}", old.cert_pem, new.cert_pem);
    let steps = [
        (
            old.bundle(&[SERVER]),
            both.clone(),
            old.bundle(&[CLIENT]),
            both.clone(),
        ),
        (
            new.bundle(&[SERVER]),
            both.clone(),
            old.bundle(&[CLIENT]),
            both.clone(),
        ),
        (
            new.bundle(&[SERVER]),
            both.clone(),
            new.bundle(&[CLIENT]),
            both.clone(),
        ),
        (
            new.bundle(&[SERVER]),
            new.cert_pem.clone(),
            new.bundle(&[CLIENT]),
            new.cert_pem.clone(),
        ),
    ];
    for (i, (server_bundle, server_roots, client_bundle, client_roots)) in steps.iter().enumerate()
    {
        server_files.write(server_bundle, server_roots);
        client_files.write(client_bundle, client_roots);
        assert!(server.reload().await.unwrap());
        assert!(client.reload().await.unwrap());
        let (served, called) = handshake(&server, &client, PeerPolicy::TrustDomain).await;
        assert_eq!(served.unwrap(), CLIENT, "step {i}");
        called.unwrap();
    }
    assert!(Path::new(&server_files.path("trust-bundle.pem")).exists());
}
