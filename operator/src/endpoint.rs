//! The operator's gRPC endpoint for sidecars, on one TLS port served by every replica: the
//! identity service (`identity_endpoint`) and the discovery service (`discovery_endpoint`). Its
//! serving certificate is issued by the mesh CA for the operator's Service names, so sidecars
//! verify it against the trust bundle they already hold; it is renewed at half its life and when
//! the CA changes. Connections are bounded (handshakes in flight, their time, calls at once, the
//! size of a request) and pinged when idle so a dead sidecar's streams end. Not for what the
//! services answer.

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use outrigger_proto::outrigger::{
    discovery::v1::discovery_server::DiscoveryServer, identity::v1::identity_server::IdentityServer,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
    },
    server::TlsStream,
};
use tonic::transport::server::Connected;

use crate::{
    discovery_endpoint::DiscoveryService,
    identity_endpoint::{IdentityService, now},
    mesh_ca::{MeshCa, MeshCaHandle},
};

/// The biggest request accepted: a P-256 CSR is well under 1 KiB.
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted.
const MAX_HANDSHAKES: usize = 128;
/// Calls served at once (each costs a TokenReview and a pod read).
const MAX_CONCURRENT_CALLS: usize = 64;
/// How often an idle connection is pinged (and how long the answer may take).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// How long one call may take to answer (a stream's first answer), TokenReview and pod read
/// included.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The endpoint's own certificate lives this long and is renewed at half of it.
const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How often the serving certificate is checked for renewal (and for a changed CA).
const SERVING_CERT_CHECK: Duration = Duration::from_secs(60);

/// The endpoint's serving certificate, issued by the mesh CA to the operator's Service names
/// and renewed at half its life or when the CA changes.
#[derive(Debug)]
pub struct ServingCert {
    dns_names: Vec<String>,
    current: arc_swap::ArcSwapOption<CertifiedKey>,
}

impl ServingCert {
    /// A certificate for `<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc` and
    /// `<service>.<namespace>.svc.cluster.local`; none until [`Self::renew`] first succeeds.
    pub fn new(service: &str, namespace: &str) -> Arc<Self> {
        let dns_names = vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ];
        Arc::new(Self {
            dns_names,
            current: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// Issues a new certificate from `ca`.
    pub fn renew(&self, ca: &MeshCa) -> Result<(), String> {
        use rcgen::PublicKeyData as _;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let leaf = ca
            .sign_server(
                &key.subject_public_key_info(),
                &self.dns_names,
                SERVING_CERT_LIFETIME,
                now(),
            )
            .map_err(|e| e.to_string())?;
        let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes())
            .map_err(|e| e.to_string())?;
        let signing = ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
        self.current
            .store(Some(Arc::new(CertifiedKey::new(chain, signing))));
        Ok(())
    }

    /// Keeps the certificate current: renewed when the CA changes and at half its lifetime.
    pub async fn run(self: Arc<Self>, mut ca: MeshCaHandle) {
        let mut issued_by: Option<(Arc<MeshCa>, tokio::time::Instant)> = None;
        loop {
            if let Some(current) = ca.current() {
                let due = issued_by.as_ref().is_none_or(|(by, at)| {
                    !Arc::ptr_eq(by, &current) || at.elapsed() >= SERVING_CERT_LIFETIME / 2
                });
                if due {
                    match self.renew(&current) {
                        Ok(()) => {
                            tracing::info!(names = ?self.dns_names, "identity endpoint certificate issued by the mesh CA");
                            issued_by = Some((current, tokio::time::Instant::now()));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot issue the identity endpoint's certificate")
                        }
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(SERVING_CERT_CHECK) => {}
                _ = ca.bundle_changed() => {}
            }
        }
    }

    /// A rustls server configuration (TLS 1.3, HTTP/2) serving this certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, String> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&tokio_rustls::rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}

/// One accepted TLS connection, for tonic.
struct Conn(TlsStream<TcpStream>);

impl Connected for Conn {
    type ConnectInfo = Option<SocketAddr>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.peer_addr().ok()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Serves the identity and discovery endpoints on `listener` until `shutdown` resolves: each
/// connection's TLS handshake runs in its own task (at most [`MAX_HANDSHAKES`] at once, each
/// within [`HANDSHAKE_TIMEOUT`]), calls are limited in number, size and time, and idle
/// connections are pinged so a dead sidecar's streams end.
pub async fn serve_endpoint(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    service: IdentityService,
    discovery: DiscoveryService,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Conn>>(MAX_HANDSHAKES);
    let acceptor = TlsAcceptor::from(tls);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let accept = tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "identity endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Conn(tls))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "identity endpoint: TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "identity endpoint: TLS handshake timed out"),
                }
            });
        }
    });
    let server = IdentityServer::new(service)
        .max_decoding_message_size(MAX_REQUEST_BYTES)
        .max_encoding_message_size(64 * 1024);
    let discovery = DiscoveryServer::new(discovery).max_decoding_message_size(MAX_REQUEST_BYTES);
    let served = tonic::transport::Server::builder()
        .timeout(CALL_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_CONCURRENT_CALLS,
        ))
        .add_service(server)
        .add_service(discovery)
        .serve_with_incoming_shutdown(tokio_stream::wrappers::ReceiverStream::new(rx), shutdown)
        .await;
    accept.abort();
    if let Err(e) = served {
        tracing::error!(error = %e, "identity endpoint stopped");
    }
}
