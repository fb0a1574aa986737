//! The sidecar's live identity: the credential bundle and trust bundle as last read, the server
//! config listeners take connections with, and client configs per cluster policy — swapped
//! together when either changes. The files are polled (as the config file is); a certificate
//! from the operator's identity endpoint (`csr`) is renewed at its refresh time, with jittered
//! retries while the old one keeps serving. A renewed certificate or a new trust bundle (a root
//! being rotated) is used by the next connection without a restart, connections already open
//! keep theirs, and a bad file or answer is refused with its cause while the last good identity
//! keeps serving. Not for parsing (`bundle`), the endpoint's protocol (`csr`) or TLS details
//! (`tls`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use outrigger_config::IdentityConfig;
use outrigger_core::{Metrics, Shutdown, rfc3339};
use parking_lot::Mutex;
use rustls::{
    ClientConfig, ServerConfig,
    client::{ClientSessionMemoryCache, Resumption},
    crypto::CryptoProvider,
    server::ServerSessionMemoryCache,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{
    bundle::{BundleError, Credentials, TrustBundle, parse_credentials, parse_trust_bundle},
    csr::CsrClient,
    operator::{OperatorError, backoff},
    spiffe::PeerPolicy,
    tls,
};

/// How long a sidecar starting with a `csr` identity keeps asking for its first certificate.
const FIRST_CERTIFICATE_BUDGET: Duration = Duration::from_secs(60);
/// The shortest wait before a renewal, whatever the endpoint says.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// rustls refused the combination.
    #[error("cannot build the TLS settings: {0}")]
    Tls(#[from] rustls::Error),
    /// The identity endpoint gave no certificate.
    #[error(transparent)]
    Csr(#[from] OperatorError),
}

/// Where the certificate and key come from.
enum Source {
    /// A file the kubelet (or anyone) writes.
    File(String),
    /// The operator's identity endpoint; the last bundle it issued, and when to renew it.
    Csr {
        client: CsrClient,
        label: String,
        issued: Mutex<(Vec<u8>, SystemTime)>,
    },
}

impl Source {
    /// The name errors give the credential bundle.
    fn label(&self) -> &str {
        match self {
            Source::File(path) => path,
            Source::Csr { label, .. } => label,
        }
    }

    async fn credentials(&self) -> Result<Vec<u8>, BundleError> {
        match self {
            Source::File(path) => read(path).await,
            Source::Csr { issued, .. } => Ok(issued.lock().0.clone()),
        }
    }
}

/// One loaded identity.
pub struct Loaded {
    /// 1 for the first, +1 per change.
    pub version: u64,
    /// The sidecar's certificate and key.
    pub credentials: Credentials,
    /// The roots.
    pub trust: TrustBundle,
    /// When it was read.
    pub loaded_at: SystemTime,
    server: Arc<ServerConfig>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("version", &self.version)
            .field("id", &self.credentials.id)
            .field("serial", &self.credentials.leaf.serial)
            .finish_non_exhaustive()
    }
}

/// The sidecar's identity, kept current from its files.
pub struct Identity {
    cfg: IdentityConfig,
    source: Source,
    provider: Arc<CryptoProvider>,
    metrics: Metrics,
    current: ArcSwap<Loaded>,
    /// The bytes of both files as last read, so unchanged files are not parsed again.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
    /// The last refused change, so it is logged once.
    refused: Mutex<Option<String>>,
    /// Shared by every server config, so sessions resume across a certificate change.
    server_sessions: Arc<ServerSessionMemoryCache>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("current", &self.current.load())
            .finish_non_exhaustive()
    }
}

async fn read(path: &str) -> Result<Vec<u8>, BundleError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| BundleError::Read {
            path: path.to_owned(),
            source,
        })
}

impl Identity {
    /// Reads the trust bundle and the credential bundle, or with `csr` asks the identity endpoint
    /// for the first certificate (retrying for up to a minute). Fails with the cause when either
    /// is missing or unusable.
    pub async fn load(cfg: &IdentityConfig, metrics: Metrics) -> Result<Arc<Self>, IdentityError> {
        let provider = tls::provider();
        let server_sessions = ServerSessionMemoryCache::new(4096);
        let (source, credentials, trust) = match (&cfg.csr, &cfg.credential_bundle_path) {
            (Some(csr), _) => {
                // The trust bundle first: it verifies the endpoint.
                let trust = read(&cfg.trust_bundle_path).await?;
                let client = CsrClient::new(csr, &cfg.trust_domain, provider.clone())?;
                let roots = parse_trust_bundle(&cfg.trust_bundle_path, &trust)?.roots;
                let issued = first_certificate(&client, roots).await?;
                let credentials = issued.bundle_pem.clone();
                let source = Source::Csr {
                    label: format!("the certificate from {}", client.endpoint()),
                    client,
                    issued: Mutex::new((issued.bundle_pem, issued.refresh_after)),
                };
                (source, credentials, trust)
            }
            (None, Some(path)) => {
                let credentials = read(path).await?;
                let trust = read(&cfg.trust_bundle_path).await?;
                (Source::File(path.clone()), credentials, trust)
            }
            (None, None) => {
                return Err(BundleError::Read {
                    path: "identity".to_owned(),
                    source: std::io::Error::other("neither credentialBundlePath nor csr is set"),
                }
                .into());
            }
        };
        let loaded = build(
            cfg,
            source.label(),
            &provider,
            &credentials,
            &trust,
            1,
            server_sessions.clone(),
        )?;
        record(&metrics, &loaded);
        tracing::info!(
            id = %loaded.credentials.id,
            serial = %loaded.credentials.leaf.serial,
            expires = %rfc3339(loaded.credentials.leaf.not_after),
            roots = loaded.trust.info.len(),
            "identity loaded"
        );
        Ok(Arc::new(Self {
            cfg: cfg.clone(),
            source,
            provider,
            metrics,
            current: ArcSwap::from_pointee(loaded),
            seen: Mutex::new((credentials, trust)),
            refused: Mutex::new(None),
            server_sessions,
        }))
    }

    /// The identity new connections use.
    pub fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.cfg.trust_domain
    }

    /// Where the certificate comes from: `("file", path, None)`, or `("csr", endpoint, when the
    /// next renewal is due)`.
    pub fn source(&self) -> (&'static str, &str, Option<SystemTime>) {
        match &self.source {
            Source::File(path) => ("file", path, None),
            Source::Csr { client, issued, .. } => ("csr", client.endpoint(), Some(issued.lock().1)),
        }
    }

    /// The settings it was loaded from.
    pub fn config(&self) -> &IdentityConfig {
        &self.cfg
    }

    /// Accepts one server-side (listener) handshake with the current identity.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load().server.clone())
    }

    /// The client side for connections whose peer `policy` must accept.
    pub fn client(self: &Arc<Self>, policy: PeerPolicy) -> ClientTls {
        ClientTls {
            identity: self.clone(),
            policy,
            resumption: Resumption::store(Arc::new(ClientSessionMemoryCache::new(256))),
            built: Mutex::new(None),
        }
    }

    /// Reads both bundles again; a change that parses is swapped in. Returns whether it changed.
    /// A refused change leaves the current identity and is logged once.
    pub async fn reload(&self) -> Result<bool, IdentityError> {
        let credentials = self.source.credentials().await?;
        let trust = read(&self.cfg.trust_bundle_path).await?;
        {
            let seen = self.seen.lock();
            if seen.0 == credentials && seen.1 == trust {
                return Ok(false);
            }
        }
        let version = self.current.load().version + 1;
        let loaded = build(
            &self.cfg,
            self.source.label(),
            &self.provider,
            &credentials,
            &trust,
            version,
            self.server_sessions.clone(),
        )?;
        record(&self.metrics, &loaded);
        tracing::info!(
            version,
            id = %loaded.credentials.id,
            serial = %loaded.credentials.leaf.serial,
            expires = %rfc3339(loaded.credentials.leaf.not_after),
            roots = loaded.trust.info.len(),
            "identity reloaded"
        );
        self.current.store(Arc::new(loaded));
        *self.seen.lock() = (credentials, trust);
        *self.refused.lock() = None;
        Ok(true)
    }

    /// Polls the files every `interval` until `shutdown`; with `csr`, also renews the
    /// certificate when due.
    pub fn watch(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
        if matches!(self.source, Source::Csr { .. }) {
            tokio::spawn(self.clone().renew(shutdown.clone()));
        }
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = shutdown.signalled() => return,
                }
                if let Err(e) = self.reload().await {
                    let message = e.to_string();
                    let mut refused = self.refused.lock();
                    if refused.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, serial = %self.current().credentials.leaf.serial, "identity files refused; the current identity keeps serving");
                        *refused = Some(message);
                    }
                }
            }
        });
    }
}

/// Asks for the first certificate until one is issued, the endpoint refuses (retrying would
/// not change its mind), or [`FIRST_CERTIFICATE_BUDGET`] is spent.
async fn first_certificate(
    client: &CsrClient,
    roots: Arc<rustls::RootCertStore>,
) -> Result<crate::csr::Issued, OperatorError> {
    let deadline = tokio::time::Instant::now() + FIRST_CERTIFICATE_BUDGET;
    let mut attempt = 0u32;
    loop {
        match client.certify(roots.clone()).await {
            Ok(issued) => return Ok(issued),
            Err(e @ OperatorError::Refused { .. }) => return Err(e),
            Err(e) => {
                let wait = backoff(attempt);
                if tokio::time::Instant::now() + wait > deadline {
                    return Err(e);
                }
                tracing::warn!(endpoint = client.endpoint(), error = %e, retry_in = ?wait, "no certificate from the identity endpoint yet");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

impl Identity {
    /// Renews a `csr` certificate at its refresh time until `shutdown`: a failed request is
    /// retried with backoff while the current certificate keeps serving (and logged as an error
    /// once it has expired).
    async fn renew(self: Arc<Self>, shutdown: Shutdown) {
        let Source::Csr { client, issued, .. } = &self.source else {
            return;
        };
        let mut attempt = 0u32;
        loop {
            let due = issued.lock().1;
            let wait = if attempt == 0 {
                due.duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .max(MIN_RENEW_WAIT)
            } else {
                backoff(attempt - 1)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.signalled() => return,
            }
            let roots = self.current().trust.roots.clone();
            match client.certify(roots).await {
                Ok(new) => {
                    *issued.lock() = (new.bundle_pem, new.refresh_after);
                    match self.reload().await {
                        Ok(_) => attempt = 0,
                        Err(e) => {
                            tracing::error!(error = %e, "the renewed certificate was refused; the current identity keeps serving");
                            // Ask again after a growing backoff, not at the refused answer's time.
                            attempt = attempt.saturating_add(1);
                        }
                    }
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    let expires = self.current().credentials.leaf.not_after;
                    if SystemTime::now() >= expires {
                        tracing::error!(endpoint = client.endpoint(), error = %e, expired = %rfc3339(expires), "cannot renew the certificate, and it has expired: mutual TLS handshakes fail until it is renewed");
                    } else {
                        tracing::warn!(endpoint = client.endpoint(), error = %e, expires = %rfc3339(expires), "cannot renew the certificate yet; the current one keeps serving");
                    }
                }
            }
        }
    }
}

fn build(
    cfg: &IdentityConfig,
    label: &str,
    provider: &Arc<CryptoProvider>,
    credentials: &[u8],
    trust: &[u8],
    version: u64,
    sessions: Arc<ServerSessionMemoryCache>,
) -> Result<Loaded, IdentityError> {
    let credentials = parse_credentials(label, credentials, &cfg.trust_domain, provider)?;
    let trust = parse_trust_bundle(&cfg.trust_bundle_path, trust)?;
    let server = tls::server_config(provider, &credentials.certified, &trust.roots, sessions)?;
    Ok(Loaded {
        version,
        credentials,
        trust,
        loaded_at: SystemTime::now(),
        server,
    })
}

fn record(metrics: &Metrics, loaded: &Loaded) {
    let expiry = loaded
        .credentials
        .leaf
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    metrics.identity_cert_expiry.set(expiry);
}

/// The client side of one cluster's connections: a config built from the current identity and
/// rebuilt when it changes, with the cluster's own session cache.
pub struct ClientTls {
    identity: Arc<Identity>,
    policy: PeerPolicy,
    resumption: Resumption,
    built: Mutex<Option<(u64, Arc<ClientConfig>)>>,
}

impl ClientTls {
    /// Connects one client-side handshake with the current identity.
    pub fn connector(&self) -> Result<TlsConnector, IdentityError> {
        let current = self.identity.current();
        let mut built = self.built.lock();
        if let Some((version, config)) = built.as_ref()
            && *version == current.version
        {
            return Ok(TlsConnector::from(config.clone()));
        }
        let config = tls::client_config(
            &self.identity.provider,
            &current.credentials.certified,
            &current.trust.roots,
            self.identity.trust_domain(),
            self.policy.clone(),
            self.resumption.clone(),
        )?;
        *built = Some((current.version, config.clone()));
        Ok(TlsConnector::from(config))
    }

    /// Which peers it accepts.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// The identity it presents.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }
}
