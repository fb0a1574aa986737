//! The webhook's serving certificate, read from `tls.crt` / `tls.key` in the cert directory and
//! re-read when the files change (renewed by `certs`, or rotated by cert-manager through the
//! mounted Secret), so a renewal never needs a restart. Not for creating certificates (`certs`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use tokio_rustls::rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::names::{TLS_CERT_FILE, TLS_KEY_FILE};

/// Why the serving certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM did not hold a usable certificate chain or key.
    #[error("invalid {what} in {path}: {message}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// rustls rejected the configuration.
    #[error("cannot build the TLS configuration")]
    Config(#[source] tokio_rustls::rustls::Error),
}

/// The current serving certificate, swapped atomically when the files change.
#[derive(Debug)]
pub struct CertStore {
    dir: PathBuf,
    current: ArcSwapOption<CertifiedKey>,
    last: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
}

impl CertStore {
    /// A store reading `dir/tls.crt` and `dir/tls.key`; nothing is loaded yet.
    pub fn new(dir: impl Into<PathBuf>) -> Arc<Self> {
        Arc::new(Self {
            dir: dir.into(),
            current: ArcSwapOption::empty(),
            last: Mutex::new(None),
        })
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Reads the files and swaps in the certificate if they changed. Returns whether it changed.
    /// On error the previous certificate keeps serving.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_path = self.dir.join(TLS_CERT_FILE);
        let key_path = self.dir.join(TLS_KEY_FILE);
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.clone(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(&cert_path)?, read(&key_path)?);
        let mut last = self.last.lock();
        if last.as_ref() == Some(&(cert_pem.clone(), key_pem.clone())) {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                what: "certificate",
                path: cert_path.clone(),
                message: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate",
                path: cert_path,
                message: "no CERTIFICATE block".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            path: key_path.clone(),
            message: e.to_string(),
        })?;
        let signing = ring::sign::any_supported_type(&key).map_err(|e| TlsError::Pem {
            what: "private key",
            path: key_path,
            message: e.to_string(),
        })?;
        self.current
            .store(Some(Arc::new(CertifiedKey::new(chain, signing))));
        *last = Some((cert_pem, key_pem));
        Ok(true)
    }

    /// A rustls server configuration (ring provider, HTTP/1.1) serving this store's certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Re-reads the files every `period`, forever.
    pub async fn watch(self: Arc<Self>, period: Duration) {
        loop {
            tokio::time::sleep(period).await;
            match self.reload() {
                Ok(true) => {
                    tracing::info!(dir = %self.dir.display(), "serving certificate reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reload the serving certificate; keeping the current one")
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }
}
