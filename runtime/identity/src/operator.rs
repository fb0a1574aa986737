//! The connection to the operator's endpoint (gRPC over TLS), shared by the certificate signing
//! requests (`csr`) and the discovery streams (`discovery`): the endpoint verified against the
//! trust bundle for its server name, and the projected ServiceAccount token re-read from its
//! file for every call (the kubelet rotates it). Not for what is asked (those modules).

use std::{io, sync::Arc, time::Duration};

use hyper_util::rt::TokioIo;
use outrigger_config::OperatorEndpoint;
use rustls::{ClientConfig, RootCertStore, crypto::CryptoProvider, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to the endpoint (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle connection is pinged, so a dead operator is noticed.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The most a token file may hold.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// The first wait between failed calls to the endpoint; doubled up to [`RETRY_MAX`], each wait
/// jittered by ±25 %.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// The longest wait between failed calls to the endpoint.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The wait before retry `attempt` (0 first): doubling from [`RETRY_BASE`] to [`RETRY_MAX`],
/// jittered by ±25 % so sidecars started together do not ask together.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = RETRY_BASE
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(RETRY_MAX);
    base.mul_f64(0.75 + fastrand::f64() * 0.5)
}

/// Why the operator's endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
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

/// The operator's endpoint, as one sidecar reaches it.
#[derive(Debug)]
pub(crate) struct OperatorChannel {
    cfg: OperatorEndpoint,
    server_name: ServerName<'static>,
    provider: Arc<CryptoProvider>,
}

impl OperatorChannel {
    /// A channel for `cfg`; fails when the server name is not a DNS name or IP address.
    pub(crate) fn new(
        cfg: &OperatorEndpoint,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, OperatorError> {
        let name = cfg.server_name.clone().unwrap_or_else(|| {
            cfg.endpoint
                .rsplit_once(':')
                .map_or(cfg.endpoint.as_str(), |(host, _)| host)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let server_name =
            ServerName::try_from(name.clone()).map_err(|e| OperatorError::Endpoint {
                endpoint: cfg.endpoint.clone(),
                message: format!("server name {name:?}: {e}"),
            })?;
        Ok(Self {
            cfg: cfg.clone(),
            server_name,
            provider,
        })
    }

    /// `host:port` of the endpoint.
    pub(crate) fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// A connection to the endpoint, verified against `roots`.
    pub(crate) async fn connect(
        &self,
        roots: Arc<RootCertStore>,
    ) -> Result<Channel, OperatorError> {
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
        Endpoint::from_shared(format!("http://{}", self.cfg.endpoint))
            .map_err(|e| OperatorError::Endpoint {
                endpoint: self.cfg.endpoint.clone(),
                message: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(connector)
            .await
            .map_err(|e| self.unreachable(error_chain(&e)))
    }

    /// `message` with `token` as its bearer credential.
    pub(crate) fn authorized<T>(
        &self,
        message: T,
        token: &str,
    ) -> Result<tonic::Request<T>, OperatorError> {
        let mut request = tonic::Request::new(message);
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| OperatorError::Token {
                path: self.cfg.token_path.clone(),
                message: "the token is not valid header text".to_owned(),
            })?;
        request.metadata_mut().insert("authorization", bearer);
        Ok(request)
    }

    /// What a gRPC status from the endpoint means: it could not answer (`UNAVAILABLE`), or it
    /// refused.
    pub(crate) fn failed(&self, status: &tonic::Status) -> OperatorError {
        if status.code() == tonic::Code::Unavailable {
            return self.unreachable(status.message().to_owned());
        }
        OperatorError::Refused {
            endpoint: self.cfg.endpoint.clone(),
            code: format!("{:?}", status.code()),
            message: status.message().to_owned(),
        }
    }

    /// The token, read again now: the kubelet rotates the file.
    pub(crate) async fn read_token(&self) -> Result<String, OperatorError> {
        let path = &self.cfg.token_path;
        let err = |message: String| OperatorError::Token {
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

    /// The token's path.
    pub(crate) fn token_path(&self) -> &str {
        &self.cfg.token_path
    }

    pub(crate) fn unreachable(&self, message: String) -> OperatorError {
        OperatorError::Unreachable {
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
