//! Getting the sidecar's certificate from the operator's identity endpoint, where Kubernetes Pod
//! Certificates are not available: a new ECDSA P-256 key made in memory, a certificate signing
//! request whose only SAN is the SPIFFE id the ServiceAccount token names, and one gRPC
//! `Certify` call over TLS (the operator verified against the trust bundle, the token re-read
//! from its file on every request, since the kubelet rotates it). The key never leaves the
//! process. Not for when to renew (`store`) or for what the operator checks (the operator).

use std::{
    io,
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use hyper_util::rt::TokioIo;
use outrigger_config::CsrConfig;
use outrigger_proto::outrigger::identity::v1::{
    CertifyRequest, CertifyResponse, identity_client::IdentityClient,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::Endpoint;

/// How long connecting to the endpoint (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one `Certify` call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// The most a token file may hold.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// Why a certificate could not be had from the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    /// The token file.
    #[error("cannot read the ServiceAccount token {path}: {message}")]
    Token {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The key or the request could not be made.
    #[error("cannot make the key or the certificate signing request: {0}")]
    Request(#[from] rcgen::Error),
    /// The endpoint's settings.
    #[error("identity endpoint {endpoint}: {message}")]
    Endpoint {
        /// `host:port`.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The endpoint could not be reached, or the call failed on the way.
    #[error("identity endpoint {endpoint} unreachable: {message}")]
    Unreachable {
        /// `host:port`.
        endpoint: String,
        /// The cause.
        message: String,
    },
    /// The endpoint answered with a refusal.
    #[error("identity endpoint {endpoint} refused the request ({code}): {message}")]
    Refused {
        /// `host:port`.
        endpoint: String,
        /// The gRPC status code's name.
        code: String,
        /// The endpoint's explanation.
        message: String,
    },
}

/// A certificate the endpoint issued.
pub struct Issued {
    /// The new key (PKCS#8 PEM) followed by the chain, leaf first: the credential bundle format.
    pub bundle_pem: Vec<u8>,
    /// When to ask for the next one.
    pub refresh_after: SystemTime,
    /// When the leaf expires.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("refresh_after", &self.refresh_after)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The client of the operator's identity endpoint.
#[derive(Debug)]
pub struct CsrClient {
    cfg: CsrConfig,
    trust_domain: String,
    server_name: ServerName<'static>,
    provider: Arc<CryptoProvider>,
}

impl CsrClient {
    /// A client for `cfg`; fails when the server name is not a DNS name or IP address.
    pub fn new(
        cfg: &CsrConfig,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, CsrError> {
        let name = cfg.server_name.clone().unwrap_or_else(|| {
            cfg.endpoint
                .rsplit_once(':')
                .map_or(cfg.endpoint.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let server_name = ServerName::try_from(name.clone()).map_err(|e| CsrError::Endpoint {
            endpoint: cfg.endpoint.clone(),
            message: format!("server name {name:?}: {e}"),
        })?;
        Ok(Self {
            cfg: cfg.clone(),
            trust_domain: trust_domain.to_owned(),
            server_name,
            provider,
        })
    }

    /// `host:port` of the endpoint.
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// Makes a new key and asks the endpoint to certify it, verifying the endpoint against
    /// `roots`.
    pub async fn certify(&self, roots: Arc<RootCertStore>) -> Result<Issued, CsrError> {
        let token = self.read_token().await?;
        let id =
            spiffe_id_of_token(&token, &self.trust_domain).map_err(|message| CsrError::Token {
                path: self.cfg.token_path.clone(),
                message,
            })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
        let csr = params.serialize_request(&key)?;
        let answer = self.send(roots, &token, csr.der()).await?;
        let time = |unix: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs());
        let mut bundle_pem = key.serialize_pem().into_bytes();
        bundle_pem.extend_from_slice(answer.certificate_chain_pem.as_bytes());
        Ok(Issued {
            bundle_pem,
            refresh_after: time(answer.refresh_after),
            not_after: time(answer.not_after),
        })
    }

    /// One `Certify` call with `token` for the PKCS#10 request `csr` (DER), within
    /// [`CALL_TIMEOUT`]; [`Self::certify`] is this with a new key and the token's own id.
    pub async fn send(
        &self,
        roots: Arc<RootCertStore>,
        token: &str,
        csr: &[u8],
    ) -> Result<CertifyResponse, CsrError> {
        tokio::time::timeout(CALL_TIMEOUT, self.call(roots, token, csr))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {CALL_TIMEOUT:?}")))?
    }

    async fn call(
        &self,
        roots: Arc<RootCertStore>,
        token: &str,
        csr: &[u8],
    ) -> Result<CertifyResponse, CsrError> {
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| self.unreachable(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tls = TlsConnector::from(Arc::new(config));
        let (address, name) = (self.cfg.endpoint.clone(), self.server_name.clone());
        let connector = tower::service_fn(move |_: http::Uri| {
            let (tls, address, name) = (tls.clone(), address.clone(), name.clone());
            async move {
                let tcp = TcpStream::connect(address.as_str()).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(name, tcp).await?;
                Ok::<_, io::Error>(TokioIo::new(stream))
            }
        });
        let channel = Endpoint::from_shared(format!("http://{}", self.cfg.endpoint))
            .map_err(|e| CsrError::Endpoint {
                endpoint: self.cfg.endpoint.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector)
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))?;
        let mut request = tonic::Request::new(CertifyRequest { csr: csr.to_vec() });
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| CsrError::Token {
                path: self.cfg.token_path.clone(),
                message: "the token is not valid header text".to_owned(),
            })?;
        request.metadata_mut().insert("authorization", bearer);
        match IdentityClient::new(channel).certify(request).await {
            Ok(answer) => Ok(answer.into_inner()),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Err(self.unreachable(status.message().to_owned()))
            }
            Err(status) => Err(CsrError::Refused {
                endpoint: self.cfg.endpoint.clone(),
                code: format!("{:?}", status.code()),
                message: status.message().to_owned(),
            }),
        }
    }

    /// The token, read again now: the kubelet rotates the file.
    async fn read_token(&self) -> Result<String, CsrError> {
        let path = &self.cfg.token_path;
        let err = |message: String| CsrError::Token {
            path: path.clone(),
            message,
        };
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_TOKEN_BYTES {
            return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| err(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(err("the file is empty".to_owned()));
        }
        Ok(token.to_owned())
    }

    fn unreachable(&self, message: String) -> CsrError {
        CsrError::Unreachable {
            endpoint: self.cfg.endpoint.clone(),
            message,
        }
    }
}

/// The error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The SPIFFE id a ServiceAccount token names, from its `sub` claim
/// (`system:serviceaccount:<namespace>:<name>`). The token is not verified here: the operator
/// runs a TokenReview and signs only the identity the token proves.
pub fn spiffe_id_of_token(token: &str, trust_domain: &str) -> Result<String, String> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("not a JSON Web Token (no payload)")?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the token's payload is not base64url: {e}"))?;
    let claims: serde_json::Value = serde_json::from_slice(&json)
        .map_err(|e| format!("the token's payload is not JSON: {e}"))?;
    let sub = claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .ok_or("the token has no `sub` claim")?;
    let (namespace, name) = sub
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| format!("the token is not a ServiceAccount's (sub {sub:?})"))?;
    Ok(format!("spiffe://{trust_domain}/ns/{namespace}/sa/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.c2ln", enc(r#"{"alg":"RS256"}"#), enc(claims))
    }

    #[test]
    fn the_id_comes_from_the_tokens_subject() {
        let t = token(r#"{"sub":"system:serviceaccount:shop:web","aud":["x"]}"#);
        assert_eq!(
            spiffe_id_of_token(&t, "cluster.local").unwrap(),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
    }

    #[test]
    fn tokens_that_name_no_service_account_are_refused() {
        for (t, want) in [
            ("abc".to_owned(), "no payload"),
            ("a.!!.c".to_owned(), "base64url"),
            (token(r#"{"aud":"x"}"#), "no `sub`"),
            (token(r#"{"sub":"alice"}"#), "not a ServiceAccount's"),
            (
                token(r#"{"sub":"system:serviceaccount:shop"}"#),
                "not a ServiceAccount's",
            ),
        ] {
            let e = spiffe_id_of_token(&t, "cluster.local").unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
