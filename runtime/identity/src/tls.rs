//! The mutual TLS configs built from one loaded identity: the server side (listeners) asks every
//! client for a certificate chaining to the trust bundle; the client side (clusters) presents
//! the sidecar's certificate and accepts a server only when its chain leads to the trust
//! bundle **and** its one SPIFFE id is one the cluster accepts — rustls checks DNS names, not
//! URI SANs, so that second check is ours. TLS 1.3 only, one crypto provider (ring) for the
//! whole binary, session resumption on. Also how a failed handshake is named in metrics. Not
//! for reading files (`bundle`) or watching them (`store`).

use std::{fmt, io, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
    client::{
        ResolvesClientCert, Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{
        CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
    },
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

use crate::spiffe::{PeerPolicy, SpiffeError, SpiffeId};

/// The crypto provider of every TLS connection the sidecar makes or takes (ring, as kube,
/// rcgen and tokio-rustls in this tree already use).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Always presents the same certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// The server side: a client certificate chaining to `roots` is required.
pub(crate) fn server_config(
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
    roots: &Arc<RootCertStore>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
) -> Result<Arc<ServerConfig>, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| Error::General(format!("cannot verify clients with the trust bundle: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(Fixed(certified.clone())));
    config.session_storage = sessions;
    Ok(Arc::new(config))
}

/// The client side: presents `certified`, accepts a server whose chain leads to `roots` and whose
/// SPIFFE id `policy` accepts.
pub(crate) fn client_config(
    provider: &Arc<CryptoProvider>,
    certified: &Arc<CertifiedKey>,
    roots: &Arc<RootCertStore>,
    trust_domain: &str,
    policy: PeerPolicy,
    resumption: Resumption,
) -> Result<Arc<ClientConfig>, Error> {
    let verifier = SpiffeVerifier {
        roots: roots.clone(),
        trust_domain: trust_domain.to_owned(),
        policy,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(Fixed(certified.clone())));
    config.resumption = resumption;
    Ok(Arc::new(config))
}

/// A peer whose chain is good but whose SPIFFE id is not one the connection accepts.
#[derive(Debug)]
pub struct BadIdentity(pub String);

impl fmt::Display for BadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadIdentity {}

fn bad_identity(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        BadIdentity(message),
    ))))
}

/// Chain validation against the trust bundle, then the SPIFFE id against the policy.
#[derive(Debug)]
struct SpiffeVerifier {
    roots: Arc<RootCertStore>,
    trust_domain: String,
    policy: PeerPolicy,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = SpiffeId::of_cert(end_entity, &self.trust_domain).map_err(|e| match e {
            SpiffeError::Parse(_) => Error::InvalidCertificate(CertificateError::BadEncoding),
            other => bad_identity(format!("the server's certificate: {other}")),
        })?;
        if !self.policy.accepts(&id) {
            return Err(bad_identity(format!(
                "the server is {id}, not {}",
                self.policy
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        None
    }
}

/// The server name a client connection sends: SNI plays no part in the mesh (identities are
/// verified by SPIFFE id), and an IP address sends none.
pub fn mesh_server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
    ServerName::IpAddress(addr.ip().into())
}

/// The metric label of a failed handshake: `unknown_ca` (the chain leads to no root of the
/// trust bundle), `expired`, `bad_identity` (the SPIFFE id is missing, of another trust domain
/// or not accepted), `no_certificate` (the client sent none), `peer_refused` (the peer sent an
/// alert: it refused our certificate), `timeout`, or `error`.
pub fn handshake_failure(err: &io::Error) -> &'static str {
    if err.kind() == io::ErrorKind::TimedOut {
        return "timeout";
    }
    let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "error";
    };
    match tls {
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_ca",
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => "expired",
            CertificateError::Other(o) if o.0.downcast_ref::<BadIdentity>().is_some() => {
                "bad_identity"
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "bad_identity"
            }
            _ => "error",
        },
        Error::NoCertificatesPresented => "no_certificate",
        Error::AlertReceived(_) => "peer_refused",
        _ => "error",
    }
}
