//! The sidecar's live identity: the credential bundle and trust bundle as last read, the server
//! config listeners take connections with, and client configs per cluster policy — swapped
//! together when a file changes. The files are polled (as the config file is): a renewed
//! certificate or a new trust bundle (a root being rotated) is used by the next connection
//! without a restart, connections already open keep theirs, and a bad file is refused with its
//! cause while the last good identity keeps serving. Not for parsing (`bundle`) or TLS
//! details (`tls`).

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
    spiffe::PeerPolicy,
    tls,
};

/// Why the identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file was refused.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// rustls refused the combination.
    #[error("cannot build the TLS settings: {0}")]
    Tls(#[from] rustls::Error),
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
    /// Reads both files. Fails with the cause when either is missing or unusable.
    pub async fn load(cfg: &IdentityConfig, metrics: Metrics) -> Result<Arc<Self>, IdentityError> {
        let provider = tls::provider();
        let server_sessions = ServerSessionMemoryCache::new(4096);
        let credentials = read(&cfg.credential_bundle_path).await?;
        let trust = read(&cfg.trust_bundle_path).await?;
        let loaded = build(
            cfg,
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

    /// Reads both files again; a change that parses is swapped in. Returns whether it changed.
    /// A refused change leaves the current identity and is logged once.
    pub async fn reload(&self) -> Result<bool, IdentityError> {
        let credentials = read(&self.cfg.credential_bundle_path).await?;
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

    /// Polls the files every `interval` until `shutdown`.
    pub fn watch(self: Arc<Self>, interval: Duration, shutdown: Shutdown) {
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

fn build(
    cfg: &IdentityConfig,
    provider: &Arc<CryptoProvider>,
    credentials: &[u8],
    trust: &[u8],
    version: u64,
    sessions: Arc<ServerSessionMemoryCache>,
) -> Result<Loaded, IdentityError> {
    let credentials = parse_credentials(
        &cfg.credential_bundle_path,
        credentials,
        &cfg.trust_domain,
        provider,
    )?;
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
