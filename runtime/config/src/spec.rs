//! The `runtime.yaml` document as Rust types: what the sidecar reads and what the operator's
//! `RuntimeConfig.spec` holds, verbatim. Not for validation (see `validate`) or for the runtime's
//! compiled forms (regexes, pools, balancers), which the sidecar builds from these once per load.

use std::{borrow::Cow, collections::BTreeMap, fmt, str::FromStr, time::Duration};

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Default gRPC API address (Layotto's port).
pub const DEFAULT_GRPC_ADDRESS: &str = "127.0.0.1:34904";
/// Default admin HTTP address.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:34999";
/// Default address of Dapr's HTTP API (Dapr's own port).
pub const DEFAULT_HTTP_API_ADDRESS: &str = "127.0.0.1:3500";
/// Environment variable that sets the API token of both APIs when the config sets none (Dapr's).
pub const API_TOKEN_ENV: &str = "DAPR_API_TOKEN";
/// Default per-request timeout when neither the caller nor the route says otherwise.
pub const DEFAULT_TIMEOUT_MS: u64 = 3000;

/// The whole `runtime.yaml` document, and the `spec` of a `RuntimeConfig` custom resource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeConfigSpec {
    /// The gRPC API applications call.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// Dapr's HTTP API: health endpoints and service invocation (`/v1.0/invoke/...`).
    #[serde(default)]
    pub http_api: HttpApiConfig,
    /// The admin HTTP endpoint: health, readiness, metrics and the config dump.
    #[serde(default)]
    pub admin: AdminConfig,
    /// How `InvokeService` calls are filtered and which channel carries them.
    #[serde(default)]
    pub rpc: RpcConfig,
    /// Proxy-core listeners, reached by channels by name or on a real socket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerConfig>,
    /// Ordered route lists that listeners use to pick a cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route_tables: Vec<RouteTableConfig>,
    /// Upstream host groups with their load-balancing and connection settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<ClusterConfig>,
    /// One line per call (gRPC `InvokeService`, the HTTP API, proxy listeners). Off when
    /// absent. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
    /// W3C trace context and span export: when present, the sidecar continues each caller's
    /// `traceparent` with its own span (or starts a trace) and forwards a `traceparent` to HTTP
    /// upstreams (naming the try's client span), and as a Bolt header or Dubbo attachment;
    /// with `otlp`, it also exports its spans. Off when absent. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// The sidecar's workload identity: its X.509 certificate (a SPIFFE id) and the roots it
    /// trusts, used by listeners and clusters with mutual TLS. None when absent. The files are
    /// watched: a renewed certificate or a changed trust bundle is used without a restart. Read
    /// at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityConfig>,
    /// Where clusters with `discovery` learn their hosts: the operator's endpoint pushes each
    /// app's ready pods as its EndpointSlices change (needs `identity`, whose trust bundle
    /// verifies the endpoint). When absent, such clusters resolve the app's headless Service in
    /// DNS every `dnsRefreshMs`. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_service: Option<OperatorEndpoint>,
    /// The inbound listener of injected pods (`outrigger.dev/app-port`): the listener `inbound`
    /// on port 34906 that other sidecars call, forwarding to the app on loopback. Its mutual
    /// TLS mode is `permissive` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
}

/// Settings of the injected inbound listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundConfig {
    /// Mutual TLS on the inbound listener. `permissive` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<InboundTls>,
    /// Who may call the app through the inbound listener; every call is allowed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// Mutual TLS on the injected inbound listener.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTls {
    /// `strict` (mutual TLS only), `permissive` (mutual TLS and plaintext, the default) or
    /// `disabled` (plaintext only).
    pub mode: InboundTlsMode,
}

/// How the injected inbound listener treats TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InboundTlsMode {
    /// Mutual TLS only.
    Strict,
    /// Mutual TLS and plaintext on the same port.
    #[default]
    Permissive,
    /// Plaintext only.
    Disabled,
}

impl InboundConfig {
    /// The mode: `permissive` unless set.
    pub fn tls_mode(&self) -> InboundTlsMode {
        self.tls.as_ref().map(|t| t.mode).unwrap_or_default()
    }
}

/// Who may call a listener: rules on the caller's workload identity (its SPIFFE id, from mutual
/// TLS) and on what it calls (a route's match fields), checked for every call the listener
/// accepts. Any matching `deny` rule denies; else any matching `allow` rule allows; else
/// `default` decides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    /// `enforce` (denied calls are refused) or `audit` (denied calls are logged and counted as
    /// `audit_deny`, and served). Default `enforce`.
    #[serde(default)]
    pub mode: AuthorizationMode,
    /// What a call no rule matches gets: `allow` or `deny`.
    pub default: AuthorizationAction,
    /// The rules; their order does not matter (deny rules first, then allow rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<AuthorizationRule>,
}

/// Whether a policy refuses what it denies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationMode {
    /// Denied calls are refused.
    #[default]
    Enforce,
    /// Nothing is refused: what would be denied is logged and counted (a dry run).
    Audit,
}

/// What a rule (or the default) does to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthorizationAction {
    /// The call is served.
    Allow,
    /// The call is refused with the protocol's own permission error.
    Deny,
}

impl AuthorizationAction {
    /// The action as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorizationAction::Allow => "allow",
            AuthorizationAction::Deny => "deny",
        }
    }
}

/// One authorization rule: who (`from`) calling what (`to`) gets `action`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Unique within the policy; denials and the `rule` metric label name it.
    pub name: String,
    /// `allow` or `deny`.
    pub action: AuthorizationAction,
    /// The callers the rule is about; at least one condition is required.
    #[serde(default)]
    pub from: CallerMatch,
    /// The calls the rule is about: a route's match fields (`path`, `pathPrefix`, `pathRegex`,
    /// `method`, `headers`; a gRPC method is the path `/<package>.<Service>/<Method>`, a Bolt or
    /// Dubbo method is `method` and its service the header `service`). Every call when empty.
    #[serde(default, skip_serializing_if = "RouteMatch::is_empty")]
    pub to: RouteMatch,
}

/// Which callers a rule is about, by the SPIFFE id `spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>`
/// they presented over mutual TLS. The given lists must all match (each by any of its entries);
/// `unauthenticated: true` also takes callers without an identity (plaintext on a
/// `permissive` listener, or in process), which match nothing else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CallerMatch {
    /// SPIFFE ids; one ending in `*` matches every id starting with what precedes it
    /// (`spiffe://cluster.local/ns/shop/*`, or `*` for any identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// Namespaces: the `ns/<namespace>` segment of the caller's id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Apps, matched against the service account of the caller's id (`sa/<name>`): the id
    /// carries no app name, so give each app a ServiceAccount named after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// Callers without an identity match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

impl CallerMatch {
    /// Whether the rule names no caller at all.
    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
            && self.namespaces.is_empty()
            && self.apps.is_empty()
            && !self.unauthenticated
    }
}

/// Where the sidecar's identity comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdentityConfig {
    /// The SPIFFE trust domain: identities are `spiffe://<trustDomain>/ns/<namespace>/sa/<sa>`.
    /// Default `cluster.local`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// A PEM file holding the private key followed by the certificate chain, leaf first (the
    /// kubelet's `podCertificate` credential bundle format). Exactly one of this and `csr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_bundle_path: Option<String>,
    /// Get the certificate from the operator's identity endpoint instead of a file: the key is
    /// made in memory, and the certificate renewed at half its lifetime. Exactly one of this and
    /// `credentialBundlePath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr: Option<OperatorEndpoint>,
    /// A PEM file of the root certificates peers' chains must lead to (all current roots, so a
    /// root can be rotated).
    pub trust_bundle_path: String,
}

/// The operator's gRPC endpoint (identity and discovery), and the token the sidecar proves
/// itself with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorEndpoint {
    /// `host:port` of the operator's endpoint (gRPC over TLS), e.g.
    /// `outrigger-webhook.outrigger-system.svc:9444`.
    pub endpoint: String,
    /// The name the endpoint's certificate must carry (verified against the trust bundle).
    /// Default: the host of `endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// A projected ServiceAccount token with audience `identity.outrigger.dev`, bound to the pod;
    /// re-read on every request (the kubelet rotates it).
    pub token_path: String,
}

/// The audience of the ServiceAccount tokens the identity endpoint accepts.
pub const IDENTITY_TOKEN_AUDIENCE: &str = "identity.outrigger.dev";

/// The default SPIFFE trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

fn default_trust_domain() -> String {
    DEFAULT_TRUST_DOMAIN.to_owned()
}

/// Mutual TLS on a listener's socket, with the sidecar's identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// `strict`: only mutual TLS is accepted; `permissive`: mutual TLS and plaintext on the
    /// same port, told apart by the first bytes (plaintext connections are counted).
    pub mode: ListenerTlsMode,
}

/// How a listener treats plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ListenerTlsMode {
    /// Mutual TLS only; a plaintext connection is closed and counted.
    Strict,
    /// Mutual TLS or plaintext.
    Permissive,
}

/// A meshed app whose sidecars a cluster reaches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Discovery {
    /// The app's name (its pods' `outrigger.dev/app`, else `app.kubernetes.io/name`, else `app`).
    pub app: String,
    /// Its namespace.
    pub namespace: String,
    /// The sidecars' inbound port. Default 34906.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// The default inbound port of injected sidecars.
pub const DEFAULT_INBOUND_PORT: u16 = 34906;
/// The suffix of the headless Service the operator keeps for a meshed app.
pub const DISCOVERY_SERVICE_SUFFIX: &str = "-outrigger";

impl Discovery {
    /// The headless Service's name, `<app>-outrigger`.
    pub fn service(&self) -> String {
        format!("{}{DISCOVERY_SERVICE_SUFFIX}", self.app)
    }

    /// The name the cluster's hosts are resolved from (the resolver's search list completes it
    /// with the cluster domain), with the port.
    pub fn host(&self) -> String {
        format!(
            "{}.{}.svc:{}",
            self.service(),
            self.namespace,
            self.port.unwrap_or(DEFAULT_INBOUND_PORT)
        )
    }
}

/// Mutual TLS to a cluster's hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterTls {
    /// `mesh`: connect with mutual TLS, presenting the sidecar's identity and verifying the
    /// host's; `disabled`: plaintext.
    pub mode: ClusterTlsMode,
    /// The SPIFFE ids a host may present (`spiffe://<trustDomain>/...`); any identity of the
    /// trust domain when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

/// Whether a cluster speaks mutual TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterTlsMode {
    /// Mutual TLS with the sidecar's identity; the host's SPIFFE id is verified.
    Mesh,
    /// Plaintext.
    Disabled,
}

/// Access log settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `json` (one object per line, the default) or `text` (space-separated fields).
    #[serde(default)]
    pub format: AccessLogFormat,
    /// `stdout` (the default) or the absolute path of a file, created when missing and
    /// appended to.
    #[serde(default = "default_access_log_path")]
    pub path: String,
}

/// How an access log line is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Space-separated fields in a fixed order, `-` for an absent one.
    Text,
}

/// The `path` of an access log that writes to standard output.
pub const ACCESS_LOG_STDOUT: &str = "stdout";

fn default_access_log_path() -> String {
    ACCESS_LOG_STDOUT.to_owned()
}

/// Trace context settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingConfig {
    /// Share of the traces the sidecar starts itself (calls that came without a valid
    /// `traceparent`) marked sampled, from 0 to 1. Default 1. A caller's own sampling
    /// decision is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
    /// Where sampled spans are exported (OTLP). No export when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpConfig>,
}

/// An OTLP trace exporter: spans are batched, queued (bounded; spans that do not fit are
/// dropped and counted) and sent in the background, never holding up a call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector: `http://host:port` (OTLP/gRPC, usually port 4317; OTLP/HTTP, usually
    /// 4318, where `/v1/traces` is added when the URL has no path).
    pub endpoint: String,
    /// `grpc` (the default) or `http/protobuf`.
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// How long one export may take before it is given up (its spans dropped and counted), in
    /// milliseconds. Default 10000.
    #[serde(default = "default_otlp_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
}

/// The OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (`TraceService/Export`).
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with a protobuf body (`POST /v1/traces`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

fn default_otlp_timeout_ms() -> u64 {
    10_000
}

/// The gRPC API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcConfig {
    /// `host:port`, or `unix:///path/to.sock`. Default `127.0.0.1:34904`.
    #[serde(default = "default_grpc_address")]
    pub address: String,
    /// Largest request or response message accepted, in bytes. Default 4 MiB.
    #[serde(default = "default_max_message_bytes")]
    #[schemars(range(min = 1024))]
    pub max_message_bytes: u32,
    /// Requests served at once across all connections; more wait. Default 1024.
    #[serde(default = "default_max_concurrent_requests")]
    #[schemars(range(min = 1))]
    pub max_concurrent_requests: u32,
    /// Connections accepted at once; more are closed as they arrive. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// HTTP/2 streams (calls) one connection may have open at once. Default 256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_concurrent_streams: Option<u32>,
    /// When set, every call must carry this value in the metadata `dapr-api-token`, else it is
    /// refused with `UNAUTHENTICATED`; the token is never forwarded. Default: the environment
    /// variable `DAPR_API_TOKEN` of the sidecar, else no token check. Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
}

/// Dapr's HTTP API server (`/v1.0/healthz`, `/v1.0/healthz/outbound`,
/// `/v1.0/invoke/{app-id}/method/{path}` and the `dapr-app-id` header form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpApiConfig {
    /// `host:port`. Default `127.0.0.1:3500` (Dapr's port); `null` turns the HTTP API off.
    #[serde(default = "default_http_api_address")]
    pub address: Option<String>,
    /// When set, every request but the health endpoints must carry this value in the header
    /// `dapr-api-token`, else it is refused with 401; the token is never forwarded. Default:
    /// the environment variable `DAPR_API_TOKEN` of the sidecar, else no token check. Read at
    /// start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_token: Option<String>,
}

impl GrpcConfig {
    /// `maxConnections` or its default.
    pub fn connection_limit(&self) -> usize {
        usize::try_from(self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
            .unwrap_or(usize::MAX)
    }

    /// `maxConcurrentStreams` or its default.
    pub fn stream_limit(&self) -> u32 {
        self.max_concurrent_streams
            .unwrap_or(DEFAULT_MAX_CONCURRENT_STREAMS)
    }
}

/// Default of `grpc.maxConnections` and `listeners[].maxConnections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1024;
/// Default of `grpc.maxConcurrentStreams`.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default of `listeners[].headerReadTimeoutMs`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Default of `listeners[].idleTimeoutMs`.
pub const DEFAULT_LISTENER_IDLE_TIMEOUT_MS: u64 = 300_000;

/// The admin HTTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminConfig {
    /// `host:port`. Default `127.0.0.1:34999`.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

/// The RPC (`InvokeService`) path: timeout, filters and channels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RpcConfig {
    /// Default request timeout in milliseconds; gRPC metadata `rpc_request_timeout` overrides it.
    #[serde(default = "default_timeout_ms")]
    #[schemars(range(min = 1))]
    pub timeout_ms: u64,
    /// Filters run on the request before it enters the channel, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before_invoke: Vec<FilterConfig>,
    /// Filters run on the response after it leaves the channel, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after_invoke: Vec<FilterConfig>,
    /// Channels to the proxy core, at most one per protocol; the first is the default and a
    /// call picks another with gRPC metadata `rpc_protocol` (e.g. `bolt`).
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// One invoke filter, by name, with its own settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfig {
    /// A built-in filter: `dubbo_generic`, `dubbo_json_rpc` or `headers`.
    pub name: String,
    /// The filter's settings; their shape depends on `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub config: Option<serde_json::Value>,
}

/// Settings of the `headers` filter: set or remove request and response headers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeadersFilterConfig {
    /// Changes to the request (before it enters the channel).
    #[serde(default)]
    pub request: HeaderEdits,
    /// Changes to the response (before it is returned to the application).
    #[serde(default)]
    pub response: HeaderEdits,
}

/// Header names to set (overwriting) and to remove.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderEdits {
    /// Headers set to these values, replacing any existing value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Headers removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A built-in invoke filter with its parsed settings.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterKind {
    /// Rewrites the request into dubbo-go's JSON-RPC-over-HTTP form.
    DubboJsonRpc,
    /// Turns a JSON call into a Dubbo generic invocation (`$invoke`, Hessian2) on the `dubbo`
    /// channel, and the Dubbo result back into JSON.
    DubboGeneric,
    /// Sets and removes headers.
    Headers(HeadersFilterConfig),
}

impl FilterKind {
    /// The names `FilterConfig::name` accepts.
    pub const NAMES: &'static [&'static str] = &["dubbo_generic", "dubbo_json_rpc", "headers"];
}

impl FilterConfig {
    /// Parses the filter's name and settings into a typed filter.
    pub fn kind(&self) -> Result<FilterKind, String> {
        match self.name.as_str() {
            "dubbo_json_rpc" => match &self.config {
                None => Ok(FilterKind::DubboJsonRpc),
                Some(v) if v.as_object().is_some_and(|m| m.is_empty()) => {
                    Ok(FilterKind::DubboJsonRpc)
                }
                Some(_) => Err("filter \"dubbo_json_rpc\" takes no config".to_owned()),
            },
            "dubbo_generic" => match &self.config {
                None => Ok(FilterKind::DubboGeneric),
                Some(v) if v.as_object().is_some_and(|m| m.is_empty()) => {
                    Ok(FilterKind::DubboGeneric)
                }
                Some(_) => Err("filter \"dubbo_generic\" takes no config".to_owned()),
            },
            "headers" => {
                let value = self.config.clone().unwrap_or(serde_json::Value::Null);
                let value = if value.is_null() {
                    serde_json::Value::Object(Default::default())
                } else {
                    value
                };
                serde_json::from_value(value)
                    .map(FilterKind::Headers)
                    .map_err(|e| format!("invalid config for filter \"headers\": {e}"))
            }
            other => Err(format!(
                "unknown filter \"{other}\" (known: {})",
                FilterKind::NAMES.join(", ")
            )),
        }
    }
}

/// The wire protocol a channel, listener or cluster speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// SOFA Bolt (v1 and v2), as SOFARPC speaks it.
    Bolt,
    /// Dubbo 2 with Hessian2 bodies.
    Dubbo,
    /// HTTP/2 with prior knowledge (h2c, or inside the mesh's mutual TLS), as gRPC speaks it.
    /// Requests are streamed both ways, body and trailers; gRPC calls proxied for `dapr-app-id`
    /// metadata go to such clusters, and such a listener forwards each stream to an `http2`
    /// cluster.
    Http2,
    /// Listeners only: each connection's protocol is told from its first bytes (`0x01`/`0x02`
    /// Bolt, `0xdabb` Dubbo, the HTTP/2 preface `PRI * HTTP/2.0`, anything else HTTP/1.1).
    Auto,
}

impl Protocol {
    /// The protocols spoken on a connection, which channels and clusters take (not `auto`).
    pub const WIRE: [Protocol; 3] = [Protocol::Http, Protocol::Bolt, Protocol::Dubbo];

    /// The protocol's name as the config spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Bolt => "bolt",
            Protocol::Dubbo => "dubbo",
            Protocol::Http2 => "http2",
            Protocol::Auto => "auto",
        }
    }

    /// Whether requests are multiplexed on shared connections and correlated by request id
    /// (Bolt and Dubbo).
    pub fn is_multiplexed(self) -> bool {
        matches!(self, Protocol::Bolt | Protocol::Dubbo)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keep-alive probing of idle multiplexed (Bolt, Dubbo) connections: a heartbeat is sent when
/// nothing was received for `intervalMs`, and the connection is closed — failing its pending
/// calls — after `misses` heartbeats in a row went unanswered. Ignored for HTTP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Silence, in milliseconds, after which a heartbeat is sent; 0 turns heartbeats off.
    /// Default 15000 (SOFABolt's idle time).
    #[serde(default = "default_heartbeat_interval_ms")]
    pub interval_ms: u64,
    /// Unanswered heartbeats in a row after which the connection is closed. Default 3.
    #[serde(default = "default_heartbeat_misses")]
    #[schemars(range(min = 1))]
    pub misses: u32,
}

impl HeartbeatConfig {
    /// The interval, or `None` when heartbeats are off.
    pub fn interval(&self) -> Option<Duration> {
        (self.interval_ms > 0).then(|| Duration::from_millis(self.interval_ms))
    }

    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_heartbeat_interval_ms(),
            misses: default_heartbeat_misses(),
        }
    }
}

/// Protocol-specific settings of a channel (Layotto's `ext`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelExt {
    /// Bolt only: the request class written into every frame. Default
    /// `com.alipay.sofa.rpc.core.request.SofaRequest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

impl ChannelExt {
    fn is_empty(&self) -> bool {
        self.class.is_none()
    }
}

/// A channel: how the invoker reaches the proxy core for one protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChannelConfig {
    /// The protocol spoken to the listener: `http`, `bolt` or `dubbo`.
    #[serde(default)]
    #[schemars(schema_with = "wire_protocol")]
    pub protocol: Protocol,
    /// Connections in the pool: at most this many requests are in the channel at once (for
    /// Bolt and Dubbo, at most this many callers write at once; calls share connections).
    #[serde(default = "default_channel_size")]
    #[schemars(range(min = 1))]
    pub size: u32,
    /// A listener name (in-process, no socket), a `host:port`, or a unix socket path.
    pub listener: String,
    /// Protocol-specific settings (`class` for Bolt).
    #[serde(default, skip_serializing_if = "ChannelExt::is_empty")]
    pub ext: ChannelExt,
    /// Heartbeats on idle connections (Bolt and Dubbo channels).
    #[serde(default, skip_serializing_if = "HeartbeatConfig::is_default")]
    pub heartbeat: HeartbeatConfig,
}

/// A proxy-core listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name; channels reach the listener in-process by this name.
    pub name: String,
    /// The protocol the listener decodes: `http` (HTTP/1.1), `http2` (HTTP/2 with prior
    /// knowledge, e.g. gRPC), `bolt`, `dubbo`, or `auto` to tell each connection's protocol
    /// from its first bytes.
    #[serde(default)]
    #[schemars(schema_with = "listener_protocol")]
    pub protocol: Protocol,
    /// Also accept connections on this `host:port` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The route table requests on this listener are matched against.
    pub route_table: String,
    /// Connections accepted on `address` at once; more are closed as they arrive. Default 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<u32>,
    /// How long a client on `address` may take to send a request head (HTTP; also how long a
    /// keep-alive connection may sit idle between requests), its first frame (Bolt, Dubbo) or
    /// the bytes that tell its protocol (`auto`). Default 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub header_read_timeout_ms: Option<u64>,
    /// A Bolt or Dubbo connection on `address` with no frame either way for this long is
    /// closed (clients' heartbeats keep healthy ones open). Default 300000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub idle_timeout_ms: Option<u64>,
    /// A local token-bucket limit on the requests this listener takes, whatever their route;
    /// requests over it are answered at once (HTTP 429, Bolt and Dubbo overflow statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Mutual TLS on `address` with the sidecar's `identity` (which must be set). Plaintext
    /// when absent. Not for in-process connections, which never leave the sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// Who may call through this listener; every call is allowed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

impl ListenerConfig {
    /// `maxConnections` or its default.
    pub fn connection_limit(&self) -> usize {
        usize::try_from(self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS))
            .unwrap_or(usize::MAX)
    }

    /// `headerReadTimeoutMs` or its default.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(
            self.header_read_timeout_ms
                .unwrap_or(DEFAULT_HEADER_READ_TIMEOUT_MS),
        )
    }

    /// `idleTimeoutMs` or its default.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(
            self.idle_timeout_ms
                .unwrap_or(DEFAULT_LISTENER_IDLE_TIMEOUT_MS),
        )
    }
}

/// An ordered list of routes; the first match wins.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableConfig {
    /// Unique name, referenced by listeners.
    pub name: String,
    /// Routes, tried in order.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// One route: a match and where matching requests go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfig {
    /// What a request must look like; empty matches every request.
    #[serde(default, rename = "match")]
    pub matcher: RouteMatch,
    /// The cluster matching requests are sent to.
    pub cluster: String,
    /// Request timeout for this route in milliseconds; default `rpc.timeoutMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout_ms: Option<u64>,
    /// Retry policy; no retries when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// A local token-bucket limit on the requests this route takes; requests over it are
    /// answered at once (HTTP 429, Bolt and Dubbo overflow statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Conditions on a request; all given conditions must hold. A route only takes requests of
/// the protocol its cluster speaks, so one table can serve an `auto` listener.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// Header conditions, all of which must hold. For Bolt and Dubbo requests these match the
    /// Bolt header map or the Dubbo attachments, plus the names `service` (Bolt `service` /
    /// `sofa_head_target_service`, Dubbo service path), `method` (the RPC method), `id` (the
    /// service again) and, for Dubbo, `version`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// The path equals this. Bolt and Dubbo requests have no path and never match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The path starts with this (never matches Bolt or Dubbo requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// The whole path matches this regular expression (never matches Bolt or Dubbo requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// The HTTP method equals this (e.g. `POST`); for Bolt and Dubbo requests, the RPC method
    /// name (e.g. `sayHello`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl RouteMatch {
    /// Whether the match has no condition (it matches every request).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// A condition on one header: exactly one of `exact`, `prefix`, `regex`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "RawHeaderMatch", into = "RawHeaderMatch")]
pub struct HeaderMatch {
    /// Header name (case-insensitive).
    pub name: String,
    /// What the value must be. The document spells it as one key beside `name` (`exact`,
    /// `prefix` or `regex`); a header match with none or several of them does not parse.
    pub value: ValueMatch,
}

/// How a header value must match.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueMatch {
    /// The value equals this (`exact`).
    Exact(String),
    /// The value starts with this (`prefix`).
    Prefix(String),
    /// The whole value matches this regular expression (`regex`); not yet checked to compile.
    Regex(String),
}

impl ValueMatch {
    /// The string compared with: the value, the prefix or the regular expression.
    pub fn as_str(&self) -> &str {
        match self {
            ValueMatch::Exact(s) | ValueMatch::Prefix(s) | ValueMatch::Regex(s) => s,
        }
    }

    /// The key the document spells this kind of match with: `exact`, `prefix` or `regex`.
    pub fn kind(&self) -> &'static str {
        match self {
            ValueMatch::Exact(_) => "exact",
            ValueMatch::Prefix(_) => "prefix",
            ValueMatch::Regex(_) => "regex",
        }
    }
}

/// A condition on one header: exactly one of `exact`, `prefix`, `regex`.
///
/// The document's form of `HeaderMatch`, and so its schema; not used beyond (de)serialising.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHeaderMatch {
    /// Header name (case-insensitive).
    name: String,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
}

impl TryFrom<RawHeaderMatch> for HeaderMatch {
    type Error = String;

    fn try_from(raw: RawHeaderMatch) -> Result<Self, String> {
        let RawHeaderMatch {
            name,
            exact,
            prefix,
            regex,
        } = raw;
        let mut given = [
            exact.map(ValueMatch::Exact),
            prefix.map(ValueMatch::Prefix),
            regex.map(ValueMatch::Regex),
        ]
        .into_iter()
        .flatten();
        match (given.next(), given.next()) {
            (Some(value), None) => Ok(HeaderMatch { name, value }),
            (None, _) => Err(format!(
                "header match \"{name}\": give exactly one of exact, prefix, regex (none given)"
            )),
            (Some(first), Some(second)) => {
                let mut kinds = vec![first.kind(), second.kind()];
                kinds.extend(given.map(|v| v.kind()));
                Err(format!(
                    "header match \"{name}\": give exactly one of exact, prefix, regex (got {})",
                    kinds.join(", ")
                ))
            }
        }
    }
}

impl From<HeaderMatch> for RawHeaderMatch {
    fn from(h: HeaderMatch) -> Self {
        let mut raw = RawHeaderMatch {
            name: h.name,
            exact: None,
            prefix: None,
            regex: None,
        };
        match h.value {
            ValueMatch::Exact(s) => raw.exact = Some(s),
            ValueMatch::Prefix(s) => raw.prefix = Some(s),
            ValueMatch::Regex(s) => raw.regex = Some(s),
        }
        raw
    }
}

/// When and how often a route retries a failed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first try (so `2` means up to three tries). At most 10.
    #[schemars(range(max = 10))]
    pub attempts: u32,
    /// Timeout of each try in milliseconds; default: whatever is left of the route timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub per_try_timeout_ms: Option<u64>,
    /// Conditions that allow a retry: `connect-failure`, `reset`, or an HTTP status like `"503"`.
    #[serde(default, rename = "on")]
    pub retry_on: Vec<RetryOn>,
    /// HTTP methods whose requests may be replayed after they were sent (a reset, a timeout or
    /// a status). Default: the idempotent ones, `GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`; list
    /// `POST` (or `PATCH`) here to opt in. A connect failure is retried for every method, since
    /// nothing was sent. Bolt and Dubbo calls are retried as configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// A request body larger than this many bytes is never replayed. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 16777216))]
    pub replay_buffer_bytes: Option<u64>,
    /// Wait before each retry: exponential from `baseMs`, capped at `maxMs`, with full jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<RetryBackoff>,
    /// Caps retries at a share of recent requests, so that a failing cluster is not sent a
    /// multiple of its usual load; a retry beyond the budget is not made. No cap when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<RetryBudget>,
}

/// Backoff between retries (the wait before retry n is a random duration up to
/// `min(maxMs, baseMs · 2^(n-1))`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBackoff {
    /// The first retry waits up to this long. Default 25.
    #[serde(default = "default_backoff_base_ms")]
    pub base_ms: u64,
    /// No retry waits longer. Default 250.
    #[serde(default = "default_backoff_max_ms")]
    pub max_ms: u64,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            base_ms: DEFAULT_BACKOFF_BASE_MS,
            max_ms: DEFAULT_BACKOFF_MAX_MS,
        }
    }
}

/// Default of `retry.backoff.baseMs`.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 25;
/// Default of `retry.backoff.maxMs`.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 250;
/// Default of `retry.replayBufferBytes`.
pub const DEFAULT_REPLAY_BUFFER_BYTES: u64 = 64 * 1024;
/// The HTTP methods retried after a request was sent, unless a route lists its own.
pub const IDEMPOTENT_METHODS: [&str; 5] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];

fn default_backoff_base_ms() -> u64 {
    DEFAULT_BACKOFF_BASE_MS
}

fn default_backoff_max_ms() -> u64 {
    DEFAULT_BACKOFF_MAX_MS
}

/// A retry budget (as Linkerd and tower's `TpsBudget` keep it): over the last 10 seconds,
/// retries may be at most `ratio` times the requests, plus `minPerSecond` retries every second
/// whatever the traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed per request, from 0 to 10 (`0.2`: one retry per five requests).
    #[schemars(range(min = 0.0, max = 10.0))]
    pub ratio: f64,
    /// Retries allowed every second even without traffic to earn them. Default 10.
    #[serde(default = "default_budget_min_per_second")]
    pub min_per_second: u32,
}

/// A local rate limit: a token bucket holding up to `burst` tokens, refilled at
/// `requestsPerSecond`; each request takes one, and one finding the bucket empty is rejected at
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Tokens added per second: the sustained rate allowed.
    #[schemars(range(min = 1))]
    pub requests_per_second: u32,
    /// Tokens the bucket holds: requests allowed at once after a quiet spell. Default
    /// `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The bucket's size.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_second)
    }
}

/// A condition that allows a retry: one entry of `retry.on`, written `connect-failure`, `reset`
/// or an HTTP status 100-599 (`"503"`; YAML's unquoted `503` is read the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The upstream connection could not be established.
    ConnectFailure,
    /// The upstream connection failed after the request was sent.
    Reset,
    /// The upstream answered with this HTTP status.
    Status(u16),
}

impl RetryOn {
    /// What parses, as an ECMA-262 (and `regex` crate) pattern for the schema: `u16` parsing
    /// allows a leading `+` and leading zeros.
    const PATTERN: &'static str = r"^(connect-failure|reset|\+?0*[1-5][0-9]{2})$";
}

impl FromStr for RetryOn {
    type Err = String;

    /// Parses one entry of `retry.on`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "connect-failure" => Ok(RetryOn::ConnectFailure),
            "reset" => Ok(RetryOn::Reset),
            code => match code.parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(RetryOn::Status(c)),
                _ => Err(format!(
                    "unknown retry condition \"{code}\" (expected connect-failure, reset or an HTTP status 100-599)"
                )),
            },
        }
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryOn::ConnectFailure => f.write_str("connect-failure"),
            RetryOn::Reset => f.write_str("reset"),
            RetryOn::Status(code) => write!(f, "{code}"),
        }
    }
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RetryOn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("connect-failure, reset or an HTTP status 100-599")
            }

            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RetryOn, E> {
                s.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<RetryOn, E> {
                self.visit_str(&n.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<RetryOn, E> {
                self.visit_str(&n.to_string())
            }
        }
        de.deserialize_str(Visitor)
    }
}

impl JsonSchema for RetryOn {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "RetryOn".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "pattern": RetryOn::PATTERN })
    }
}

/// Load-balancing policy of a cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Each host in turn.
    #[default]
    RoundRobin,
    /// A host picked uniformly at random.
    Random,
    /// The less busy of two random hosts (power of two choices).
    LeastRequest,
    /// Smooth weighted round robin over host weights.
    Weighted,
}

/// A group of upstream hosts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name, referenced by routes.
    pub name: String,
    /// The protocol spoken to the hosts: `http`, `bolt`, `dubbo`, or `http2` (h2c, for gRPC
    /// services; requests are streamed and never retried).
    #[serde(default)]
    #[schemars(schema_with = "cluster_protocol")]
    pub protocol: Protocol,
    /// How a host is chosen for each request.
    #[serde(default)]
    pub lb: LbPolicy,
    /// The hosts; DNS names are resolved and re-resolved every `dnsRefreshMs`. Leave out with
    /// `discovery`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostConfig>,
    /// The sidecars of a meshed app, pod by pod: the cluster's hosts are the ready pods behind
    /// the headless Service `<app>-outrigger` the operator keeps (pushed by the operator with
    /// `discoveryService`, else resolved in DNS every `dnsRefreshMs`), on their inbound port,
    /// with mutual TLS unless `tls.mode` says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Time allowed to establish a connection, in milliseconds. Default 1000.
    #[serde(default = "default_connect_timeout_ms")]
    #[schemars(range(min = 1))]
    pub connect_timeout_ms: u64,
    /// Connections open at once to each host; more requests wait. Default 64.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: u32,
    /// An idle connection is closed after this many milliseconds. Default 60000.
    #[serde(default = "default_idle_timeout_ms")]
    #[schemars(range(min = 1))]
    pub idle_timeout_ms: u64,
    /// How often DNS names are re-resolved, in milliseconds. Default 5000.
    #[serde(default = "default_dns_refresh_ms")]
    #[schemars(range(min = 100))]
    pub dns_refresh_ms: u64,
    /// Heartbeats on idle upstream connections (Bolt and Dubbo clusters).
    #[serde(default, skip_serializing_if = "HeartbeatConfig::is_default")]
    pub heartbeat: HeartbeatConfig,
    /// Ejects hosts that keep failing (in any protocol) from load balancing for a while. Off
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Caps on the requests, connection waiters and retries the cluster takes at once; a
    /// request over a cap is rejected at once. No caps when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Mutual TLS to the hosts (`mode: mesh`, with the sidecar's `identity`, which must be
    /// set), TLS 1.3 only. Plaintext when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClusterTls>,
}

/// Outlier detection: a host whose requests fail `consecutiveFailures` times in a row (connect
/// failure, reset, timeout, HTTP 5xx, gRPC UNAVAILABLE or RESOURCE_EXHAUSTED, Bolt
/// SERVER_THREADPOOL_BUSY or SERVER_EXCEPTION, Dubbo SERVER_THREADPOOL_EXHAUSTED_ERROR,
/// SERVER_ERROR or SERVICE_ERROR) is ejected: load balancers skip it for `baseEjectionMs` times
/// the number of times it was ejected, at most `maxEjectionMs`. It then returns on probation: a
/// failure of its first request ejects it again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Failures in a row that eject a host. Default 5.
    #[serde(default = "default_consecutive_failures")]
    #[schemars(range(min = 1))]
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection, in milliseconds; each further ejection of the same
    /// host adds as much. Default 30000.
    #[serde(default = "default_base_ejection_ms")]
    #[schemars(range(min = 1))]
    pub base_ejection_ms: u64,
    /// Longest ejection, in milliseconds. Default 300000.
    #[serde(default = "default_max_ejection_ms")]
    #[schemars(range(min = 1))]
    pub max_ejection_ms: u64,
    /// Share of the cluster's hosts ejected at most, in percent (rounded down, but above 0 at
    /// least one host of several may be ejected); below 100 at least one host is always kept.
    /// Default 50.
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(max = 100))]
    pub max_ejection_percent: u32,
}

impl OutlierDetection {
    /// The first ejection's length.
    pub fn base_ejection(&self) -> Duration {
        Duration::from_millis(self.base_ejection_ms)
    }

    /// The longest ejection.
    pub fn max_ejection(&self) -> Duration {
        Duration::from_millis(self.max_ejection_ms)
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            base_ejection_ms: default_base_ejection_ms(),
            max_ejection_ms: default_max_ejection_ms(),
            max_ejection_percent: default_max_ejection_percent(),
        }
    }
}

/// Circuit breaking of a cluster (Envoy's thresholds): requests over a cap are rejected at once
/// with the cap named, never queued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Requests to the cluster's hosts in flight at once. Default 1024.
    #[serde(default = "default_breaker_max_requests")]
    #[schemars(range(min = 1))]
    pub max_requests: u32,
    /// Requests waiting at once for a connection (every connection of the chosen host busy,
    /// `maxConnections` reached), across the cluster; 0 means none waits. Default 1024.
    #[serde(default = "default_breaker_max_pending")]
    pub max_pending_requests: u32,
    /// Retries in flight at once to the cluster; a retry over the cap is not made. Default 3.
    #[serde(default = "default_breaker_max_retries")]
    pub max_retries: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_requests: default_breaker_max_requests(),
            max_pending_requests: default_breaker_max_pending(),
            max_retries: default_breaker_max_retries(),
        }
    }
}

/// One upstream host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostConfig {
    /// `host:port`; the host may be an IP address or a DNS name.
    pub address: String,
    /// Relative share of traffic under the `weighted` policy. Default 1.
    #[serde(default = "default_weight")]
    #[schemars(range(min = 1))]
    pub weight: u32,
}

impl RpcConfig {
    /// The default request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl ClusterConfig {
    /// Whether connections to the hosts use mutual TLS: `tls.mode: mesh`, or a `discovery`
    /// cluster without `tls`.
    pub fn mesh_tls(&self) -> bool {
        match &self.tls {
            Some(t) => t.mode == ClusterTlsMode::Mesh,
            None => self.discovery.is_some(),
        }
    }

    /// The host entries: `hosts`, or the discovered app's headless Service.
    pub fn host_entries(&self) -> Vec<HostConfig> {
        match &self.discovery {
            Some(d) => vec![HostConfig {
                address: d.host(),
                weight: 1,
            }],
            None => self.hosts.clone(),
        }
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// The DNS refresh interval.
    pub fn dns_refresh(&self) -> Duration {
        Duration::from_millis(self.dns_refresh_ms)
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            address: default_grpc_address(),
            max_message_bytes: default_max_message_bytes(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_connections: None,
            max_concurrent_streams: None,
            api_token: None,
        }
    }
}

impl Default for HttpApiConfig {
    fn default() -> Self {
        Self {
            address: default_http_api_address(),
            api_token: None,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout_ms(),
            before_invoke: Vec::new(),
            after_invoke: Vec::new(),
            channels: Vec::new(),
        }
    }
}

fn default_grpc_address() -> String {
    DEFAULT_GRPC_ADDRESS.to_owned()
}
fn default_http_api_address() -> Option<String> {
    Some(DEFAULT_HTTP_API_ADDRESS.to_owned())
}
fn default_admin_address() -> String {
    DEFAULT_ADMIN_ADDRESS.to_owned()
}
fn default_max_message_bytes() -> u32 {
    4 * 1024 * 1024
}
fn default_max_concurrent_requests() -> u32 {
    1024
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_channel_size() -> u32 {
    16
}
fn default_connect_timeout_ms() -> u64 {
    1000
}
fn default_max_connections() -> u32 {
    64
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_dns_refresh_ms() -> u64 {
    5000
}
fn default_weight() -> u32 {
    1
}
fn default_heartbeat_interval_ms() -> u64 {
    15_000
}
fn default_heartbeat_misses() -> u32 {
    3
}
fn default_budget_min_per_second() -> u32 {
    10
}
fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection_ms() -> u64 {
    30_000
}
fn default_max_ejection_ms() -> u64 {
    300_000
}
fn default_max_ejection_percent() -> u32 {
    50
}
fn default_breaker_max_requests() -> u32 {
    1024
}
fn default_breaker_max_pending() -> u32 {
    1024
}
fn default_breaker_max_retries() -> u32 {
    3
}

/// `Protocol` without `auto`, which only listeners take: the schema of channel and cluster
/// protocols.
fn wire_protocol(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = Protocol::WIRE.iter().map(|p| p.as_str()).collect();
    json_schema!({ "type": "string", "enum": names })
}

/// What a cluster speaks: the wire protocols and `http2`.
fn cluster_protocol(_: &mut SchemaGenerator) -> Schema {
    let mut names: Vec<&str> = Protocol::WIRE.iter().map(|p| p.as_str()).collect();
    names.push(Protocol::Http2.as_str());
    json_schema!({ "type": "string", "enum": names })
}

/// What a listener decodes: the wire protocols, `http2` and `auto`.
fn listener_protocol(_: &mut SchemaGenerator) -> Schema {
    let mut names: Vec<&str> = Protocol::WIRE.iter().map(|p| p.as_str()).collect();
    names.push(Protocol::Http2.as_str());
    names.push(Protocol::Auto.as_str());
    json_schema!({ "type": "string", "enum": names })
}

/// A free-form object: Kubernetes keeps its unknown fields instead of pruning them.
fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn retry_on_schema_pattern_accepts_exactly_what_parses() {
        let pattern = regex::Regex::new(RetryOn::PATTERN).unwrap();
        for s in [
            "connect-failure",
            "reset",
            "100",
            "503",
            "599",
            "0503",
            "+503",
            "000429",
            "99",
            "600",
            "1000",
            "-503",
            "+",
            "",
            "5O3",
            " 503",
            "503 ",
            "reset ",
            "Reset",
            "connect_failure",
            "65539",
            "0x1F7",
            "5.0e2",
        ] {
            assert_eq!(
                pattern.is_match(s),
                s.parse::<RetryOn>().is_ok(),
                "pattern and parser disagree on {s:?}"
            );
        }
    }

    #[test]
    fn retry_on_displays_as_it_parses() {
        for on in [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status(503),
        ] {
            assert_eq!(on.to_string().parse::<RetryOn>(), Ok(on));
        }
    }
}
