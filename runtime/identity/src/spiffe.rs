//! SPIFFE ids: reading the one `spiffe://` URI SAN of a certificate (rustls and webpki check
//! chains, not URI SANs) and deciding whether a peer's id is one a cluster accepts. Not for
//! chain validation (`tls`).

use std::{fmt, sync::Arc};

use rustls::pki_types::CertificateDer;

/// Why a certificate has no usable SPIFFE id.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    /// Not a certificate webpki can read.
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
    /// No `spiffe://` URI SAN.
    #[error("the certificate has no spiffe:// URI SAN")]
    Missing,
    /// More than one.
    #[error("the certificate has {0} spiffe:// URI SANs; a SPIFFE certificate has one")]
    Several(usize),
    /// Of another trust domain.
    #[error("{id} is not in the trust domain {trust_domain}")]
    OtherTrustDomain {
        /// The id found.
        id: String,
        /// The trust domain expected.
        trust_domain: String,
    },
}

/// A SPIFFE id, `spiffe://<trust domain>/<path>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId(Arc<str>);

impl SpiffeId {
    /// The id of a certificate: its one `spiffe://` URI SAN, which must be in `trust_domain`.
    pub fn of_cert(der: &CertificateDer<'_>, trust_domain: &str) -> Result<Self, SpiffeError> {
        let cert =
            webpki::EndEntityCert::try_from(der).map_err(|e| SpiffeError::Parse(e.to_string()))?;
        let mut ids = cert
            .valid_uri_names()
            .filter(|u| u.starts_with("spiffe://"));
        let id = ids.next().ok_or(SpiffeError::Missing)?;
        let more = ids.count();
        if more > 0 {
            return Err(SpiffeError::Several(more + 1));
        }
        let in_domain = id
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(trust_domain))
            .is_some_and(|path| path.starts_with('/'));
        if !in_domain {
            return Err(SpiffeError::OtherTrustDomain {
                id: id.to_owned(),
                trust_domain: trust_domain.to_owned(),
            });
        }
        Ok(Self(Arc::from(id)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Kubernetes namespace of an id of the form `spiffe://<td>/ns/<namespace>/...`.
    pub fn namespace(&self) -> Option<&str> {
        let path = self.0.strip_prefix("spiffe://")?.split_once('/')?.1;
        let rest = path.strip_prefix("ns/")?;
        Some(rest.split('/').next().unwrap_or(rest)).filter(|n| !n.is_empty())
    }

    /// Shared text, for logs and spans.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which peer identities a connection accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Any id of the trust domain.
    TrustDomain,
    /// Any id of this Kubernetes namespace (`spiffe://<trust domain>/ns/<namespace>/...`).
    Namespace(String),
    /// One of these ids.
    OneOf(Vec<String>),
}

impl PeerPolicy {
    /// The policy for a cluster's `tls.identities` (any id of the trust domain when empty).
    pub fn from_identities(identities: &[String]) -> Self {
        if identities.is_empty() {
            PeerPolicy::TrustDomain
        } else {
            PeerPolicy::OneOf(identities.to_vec())
        }
    }

    /// Whether `id` (already known to be of the trust domain) is accepted.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        match self {
            PeerPolicy::TrustDomain => true,
            PeerPolicy::Namespace(ns) => id.namespace() == Some(ns.as_str()),
            PeerPolicy::OneOf(ids) => ids.iter().any(|i| i == id.as_str()),
        }
    }
}

impl fmt::Display for PeerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerPolicy::TrustDomain => f.write_str("any identity of the trust domain"),
            PeerPolicy::Namespace(ns) => write!(f, "an identity of namespace {ns}"),
            PeerPolicy::OneOf(ids) => write!(f, "one of {}", ids.join(", ")),
        }
    }
}
