//! Getting the sidecar's certificate from the operator's identity endpoint, where Kubernetes Pod
//! Certificates are not available: a new ECDSA P-256 key made in memory, a certificate signing
//! request whose only SAN is the SPIFFE id the ServiceAccount token names, and one gRPC
//! `Certify` call (`operator`). The key never leaves the process. Not for when to renew
//! (`store`) or for what the operator checks (the operator).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use outrigger_config::OperatorEndpoint;
use outrigger_proto::outrigger::identity::v1::{
    CertifyRequest, CertifyResponse, identity_client::IdentityClient,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::{RootCertStore, crypto::CryptoProvider};

use crate::operator::{OperatorChannel, OperatorError};

/// How long one `Certify` call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

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
    channel: OperatorChannel,
    trust_domain: String,
}

impl CsrClient {
    /// A client for `cfg`; fails when the server name is not a DNS name or IP address.
    pub fn new(
        cfg: &OperatorEndpoint,
        trust_domain: &str,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, OperatorError> {
        Ok(Self {
            channel: OperatorChannel::new(cfg, provider)?,
            trust_domain: trust_domain.to_owned(),
        })
    }

    /// `host:port` of the endpoint.
    pub fn endpoint(&self) -> &str {
        self.channel.endpoint()
    }

    /// Makes a new key and asks the endpoint to certify it, verifying the endpoint against
    /// `roots`.
    pub async fn certify(&self, roots: Arc<RootCertStore>) -> Result<Issued, OperatorError> {
        let token = self.channel.read_token().await?;
        let id = spiffe_id_of_token(&token, &self.trust_domain).map_err(|message| {
            OperatorError::Token {
                path: self.channel.token_path().to_owned(),
                message,
            }
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
    ) -> Result<CertifyResponse, OperatorError> {
        let call = async {
            let channel = self.channel.connect(roots).await?;
            let request = self
                .channel
                .authorized(CertifyRequest { csr: csr.to_vec() }, token)?;
            IdentityClient::new(channel)
                .certify(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| self.channel.failed(&status))
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .map_err(|_| {
                self.channel
                    .unreachable(format!("no answer within {CALL_TIMEOUT:?}"))
            })?
    }
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
