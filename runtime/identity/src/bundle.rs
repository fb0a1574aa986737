//! Reading the two identity files: the credential bundle (a PEM private key followed by the
//! certificate chain, leaf first: the kubelet's `podCertificate` format) and the trust bundle
//! (PEM root certificates). Each is checked as a whole — a key that matches the leaf, a leaf
//! with exactly one SPIFFE id of the trust domain, roots that parse — so a half-written or
//! wrong file is refused with its cause and the last good one stays. Not for TLS (`tls`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

use crate::spiffe::{SpiffeError, SpiffeId};

/// Why an identity file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No private key, or one that cannot be used.
    #[error("{path}: {message}")]
    Key {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No certificate, or one that cannot be parsed.
    #[error("{path}: {message}")]
    Certificate {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The leaf's SPIFFE id.
    #[error("{path}: {source}")]
    Identity {
        /// The file.
        path: String,
        /// What is wrong with it.
        #[source]
        source: SpiffeError,
    },
}

/// What a certificate says about itself, for `/config_dump`, logs and metrics (never a key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, as text (`CN=...`), empty when there is none.
    pub subject: String,
    /// The serial number in hex.
    pub serial: String,
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl CertInfo {
    fn of(der: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            u64::try_from(secs)
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        Ok(Self {
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
        })
    }
}

/// The sidecar's own certificate and key, ready for rustls.
#[derive(Debug)]
pub struct Credentials {
    /// The leaf's SPIFFE id.
    pub id: SpiffeId,
    /// The leaf.
    pub leaf: CertInfo,
    /// Chain and key, for rustls.
    pub certified: Arc<CertifiedKey>,
}

/// Parses a credential bundle: one PEM private key, then the chain, leaf first. The leaf must
/// carry exactly one SPIFFE id of `trust_domain`, and the key must be the leaf's.
pub fn parse_credentials(
    path: &str,
    pem: &[u8],
    trust_domain: &str,
    provider: &CryptoProvider,
) -> Result<Credentials, BundleError> {
    let key_err = |message: String| BundleError::Key {
        path: path.to_owned(),
        message,
    };
    let cert_err = |message: String| BundleError::Certificate {
        path: path.to_owned(),
        message,
    };
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| key_err(format!("no usable PEM private key: {e}")))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("unreadable certificate: {e}")))?;
    let leaf_der = chain
        .first()
        .ok_or_else(|| cert_err("no certificate after the private key".to_owned()))?;
    let leaf = CertInfo::of(leaf_der).map_err(cert_err)?;
    let id = SpiffeId::of_cert(leaf_der, trust_domain).map_err(|source| BundleError::Identity {
        path: path.to_owned(),
        source,
    })?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unsupported private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        key_err(format!(
            "the private key is not the leaf certificate's: {e}"
        ))
    })?;
    Ok(Credentials {
        id,
        leaf,
        certified: Arc::new(certified),
    })
}

/// The roots peers' chains must lead to.
#[derive(Debug)]
pub struct TrustBundle {
    /// For rustls.
    pub roots: Arc<RootCertStore>,
    /// Each root, for `/config_dump`.
    pub info: Vec<CertInfo>,
}

/// Parses a trust bundle: one or more PEM root certificates.
pub fn parse_trust_bundle(path: &str, pem: &[u8]) -> Result<TrustBundle, BundleError> {
    let cert_err = |message: String| BundleError::Certificate {
        path: path.to_owned(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("unreadable certificate: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate".to_owned()));
    }
    let mut roots = RootCertStore::empty();
    let mut info = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        info.push(CertInfo::of(der).map_err(|e| cert_err(format!("root {i}: {e}")))?);
        roots
            .add(der.clone())
            .map_err(|e| cert_err(format!("root {i} is not a usable trust anchor: {e}")))?;
    }
    Ok(TrustBundle {
        roots: Arc::new(roots),
        info,
    })
}
