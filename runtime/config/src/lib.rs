//! The `runtime.yaml` document, defined once: the sidecar reads it, the operator wraps it as the
//! `spec` of the `RuntimeConfig` custom resource and writes it verbatim, and the CRD's schema is
//! generated from it. One `validate` function serves all three, so what `kubectl apply` accepts
//! the sidecar accepts. Not for anything that runs: no sockets, no compiled matchers.

mod spec;
mod validate;

pub use crate::{
    spec::{
        ACCESS_LOG_STDOUT, API_TOKEN_ENV, AccessLogConfig, AccessLogFormat, AdminConfig,
        Authorization, AuthorizationAction, AuthorizationMode, AuthorizationRule, CallerMatch,
        ChannelConfig, ChannelExt, CircuitBreaker, ClusterConfig, ClusterTls, ClusterTlsMode,
        DEFAULT_ADMIN_ADDRESS, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_MAX_MS,
        DEFAULT_GRPC_ADDRESS, DEFAULT_HEADER_READ_TIMEOUT_MS, DEFAULT_HTTP_API_ADDRESS,
        DEFAULT_INBOUND_PORT, DEFAULT_LISTENER_IDLE_TIMEOUT_MS, DEFAULT_MAX_CONCURRENT_STREAMS,
        DEFAULT_MAX_CONNECTIONS, DEFAULT_REPLAY_BUFFER_BYTES, DEFAULT_TIMEOUT_MS,
        DEFAULT_TRUST_DOMAIN, DISCOVERY_SERVICE_SUFFIX, Discovery, FilterConfig, FilterKind,
        GrpcConfig, HeaderEdits, HeaderMatch, HeadersFilterConfig, HeartbeatConfig, HostConfig,
        HttpApiConfig, IDEMPOTENT_METHODS, IDENTITY_TOKEN_AUDIENCE, IdentityConfig, InboundConfig,
        InboundTls, InboundTlsMode, LbPolicy, ListenerConfig, ListenerTls, ListenerTlsMode,
        OperatorEndpoint, OtlpConfig, OtlpProtocol, OutlierDetection, Protocol, RateLimit,
        RetryBackoff, RetryBudget, RetryOn, RetryPolicy, RouteConfig, RouteMatch, RouteTableConfig,
        RpcConfig, RuntimeConfigSpec, TracingConfig, ValueMatch,
    },
    validate::{ChannelTarget, ValidationError, ValidationErrors, validate},
};

use sha2::{Digest, Sha256};

/// Why a document could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not YAML, or not of the document's shape (unknown key, wrong type).
    #[error("cannot parse the config: {0}")]
    Parse(String),
    /// Well-formed but inconsistent; every problem is listed.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Parses a YAML (or JSON) document without validating it.
pub fn parse_yaml(text: &str) -> Result<RuntimeConfigSpec, LoadError> {
    serde_saphyr::from_str(text).map_err(|e| LoadError::Parse(e.to_string()))
}

/// Parses and validates a document: the one way the sidecar accepts a config.
pub fn load_yaml(text: &str) -> Result<RuntimeConfigSpec, LoadError> {
    let spec = parse_yaml(text)?;
    validate(&spec)?;
    Ok(spec)
}

/// Renders a document as YAML.
pub fn to_yaml(spec: &RuntimeConfigSpec) -> String {
    // Serialising plain structs, strings, numbers, maps and JSON values cannot fail.
    serde_saphyr::to_string(spec).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}

/// A short, stable hash of the document's meaning (not its formatting): 16 hex digits of the
/// SHA-256 of its canonical JSON form. The operator reports it and the sidecar exposes it, so
/// anyone can see which config a pod is running.
pub fn config_hash(spec: &RuntimeConfigSpec) -> String {
    let canonical = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
