//! The sidecar's Prometheus metrics: one struct of metric families, registered once into a
//! registry built by the caller (`main` or a test) and handed to every part at construction.
//! Not a global: two sidecars in one process (as in tests) keep separate numbers.

use std::sync::{
    Arc,
    atomic::{AtomicI64, AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// A label value that is cheap to clone and to build on the request path: a static string or a
/// shared one (cloning is a reference-count bump, never an allocation). Compares, hashes and
/// encodes as its text, so both forms of the same text are the same label value.
#[derive(Clone, Debug)]
pub enum LabelStr {
    /// A string known at compile time.
    Static(&'static str),
    /// A name built once (at config load, pool creation) and shared.
    Shared(Arc<str>),
}

impl LabelStr {
    /// The text.
    pub fn as_str(&self) -> &str {
        match self {
            LabelStr::Static(s) => s,
            LabelStr::Shared(s) => s,
        }
    }
}

impl PartialEq for LabelStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for LabelStr {}

impl std::hash::Hash for LabelStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<&'static str> for LabelStr {
    fn from(s: &'static str) -> Self {
        LabelStr::Static(s)
    }
}

impl From<&Arc<str>> for LabelStr {
    fn from(s: &Arc<str>) -> Self {
        LabelStr::Shared(s.clone())
    }
}

impl EncodeLabelValue for LabelStr {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// A status label value: a protocol status code, or why there was none (`oneway`, `timeout`,
/// …). Encodes as the code in decimal or the word, without building a string.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StatusLabel {
    /// A protocol status code.
    Code(u32),
    /// A word standing for the outcome.
    Word(&'static str),
}

impl EncodeLabelValue for StatusLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            StatusLabel::Code(c) => EncodeLabelValue::encode(c, encoder),
            StatusLabel::Word(w) => EncodeLabelValue::encode(w, encoder),
        }
    }
}

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    /// `/package.Service/Method` of a served rpc, or `other`.
    pub path: &'static str,
    /// gRPC status code name, e.g. `ok`, `unavailable`.
    pub code: &'static str,
}

/// Labels naming a gRPC path.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `/package.Service/Method` of a served rpc, or `other`.
    pub path: &'static str,
}

/// Labels naming one thing (a pool, a cluster, a listener).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NameLabels {
    /// What is measured, e.g. `channel/http` or `upstream/users`.
    pub name: String,
}

/// Labels of an error count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// The error's kind, as classified at the edge.
    pub kind: String,
}

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProxyLabels {
    /// The listener that received it.
    pub listener: LabelStr,
    /// The cluster it went to (empty when no route matched).
    pub cluster: LabelStr,
    /// The HTTP status returned downstream.
    pub status: u16,
}

/// Labels of a connection a server closed on a limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// `grpc`, `admin` or `listener/<name>`.
    pub server: LabelStr,
    /// What fired: `max_connections`, `header_timeout`, `first_frame_timeout`, `idle_timeout`,
    /// `sniff_timeout`.
    pub limit: &'static str,
}

/// Labels of a retry made by the proxy core.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    /// The cluster retried.
    pub cluster: LabelStr,
    /// The condition the failed try met: `connect_failure`, `reset`, or the HTTP status.
    pub reason: StatusLabel,
}

/// Labels of one Bolt or Dubbo thing: a multiplexed pool or a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    /// `bolt` or `dubbo`.
    pub protocol: String,
    /// A pool (`channel/bolt`, `upstream/<cluster>/<addr>`) or `listener/<name>`.
    pub name: String,
}

/// Labels of a call on a multiplexed (Bolt, Dubbo) pool.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MuxCallLabels {
    /// `bolt` or `dubbo`.
    pub protocol: &'static str,
    /// The pool, e.g. `channel/bolt` or `upstream/<cluster>/<addr>`.
    pub name: LabelStr,
    /// The response's protocol status code (`0` Bolt success, `20` Dubbo OK, …), or why there
    /// was none: `oneway`, `timeout`, `closed`, `overflow`, `connect_failure`.
    pub status: StatusLabel,
}

/// Labels of a heartbeat event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// `bolt` or `dubbo`.
    pub protocol: String,
    /// A pool or `listener/<name>`.
    pub name: String,
    /// `sent`, `acked`, `missed` (one interval without an answer) or `answered` (a peer's
    /// heartbeat acknowledged locally).
    pub event: String,
}

/// Labels of a Bolt or Dubbo request through the proxy core.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XprotocolLabels {
    /// `bolt` or `dubbo`.
    pub protocol: &'static str,
    /// The listener that received it.
    pub listener: LabelStr,
    /// The cluster it went to (empty when none was chosen).
    pub cluster: LabelStr,
    /// The protocol status code returned downstream (`oneway` when none is).
    pub status: StatusLabel,
}

/// Labels of an outlier ejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EjectionLabels {
    /// The cluster the host belongs to.
    pub cluster: LabelStr,
    /// The failure that tipped the host over: `connect_failure`, `reset`, `timeout`,
    /// `http_5xx`, `grpc_status`, `bolt_status` or `dubbo_status`.
    pub reason: &'static str,
}

/// Labels of a circuit breaker rejection.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BreakerLabels {
    /// The cluster.
    pub cluster: LabelStr,
    /// The cap that was reached: `max_requests`, `max_pending_requests` or `max_retries`.
    pub limit: &'static str,
}

/// Labels of a rate-limited request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    /// `listener` or `route`.
    pub scope: &'static str,
    /// The listener's name, or `<route table>/<route index>`.
    pub name: LabelStr,
}

/// Labels of an authorization decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `allow`, `deny`, or `audit_deny` (denied by a policy in `audit` mode, and served).
    pub decision: &'static str,
    /// The rule that decided, or `default`.
    pub rule: LabelStr,
}

/// Labels of a config reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub result: String,
}

/// Labels naming the live config.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// The config's hash.
    pub hash: String,
}

/// Labels of a TLS handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsLabels {
    /// `inbound` (a listener accepted it) or `outbound` (a cluster connected).
    pub direction: &'static str,
    /// `ok`, or why it failed: `unknown_ca`, `bad_identity`, `expired`, `no_certificate`,
    /// `timeout`, `error`.
    pub result: &'static str,
}

/// Labels of a plaintext connection on a TLS listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaintextLabels {
    /// The listener.
    pub listener: String,
    /// `accepted` (permissive) or `refused` (strict).
    pub action: &'static str,
}

/// Every metric family the sidecar records.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<parking_lot::Mutex<Registry>>,
    /// Pools alive per pool name: a name's series go when its last pool does.
    pool_names: Arc<parking_lot::Mutex<std::collections::HashMap<String, usize>>>,
    /// gRPC calls by path and status code.
    pub grpc_requests: Family<GrpcLabels, Counter>,
    /// gRPC call latency by path.
    pub grpc_duration: Family<PathLabels, Histogram>,
    /// Invoke errors by kind.
    pub invoke_errors: Family<KindLabels, Counter>,
    /// Callers that had to wait for a pooled connection, by pool.
    pub pool_waits: Family<NameLabels, Counter>,
    /// Time spent waiting for a pooled connection, by pool.
    pub pool_wait_seconds: Family<NameLabels, Histogram>,
    /// Open connections, by pool.
    pub pool_connections: Family<NameLabels, Gauge>,
    /// Requests through the proxy core.
    pub proxy_requests: Family<ProxyLabels, Counter>,
    /// Connections a server closed on one of its limits, by server and limit.
    pub server_limits: Family<ServerLabels, Counter>,
    /// Retries made by the proxy core, by cluster and reason.
    pub proxy_retries: Family<RetryLabels, Counter>,
    /// The live config's version (1 for the first, +1 per applied reload).
    pub config_version: Gauge,
    /// Always 1, labelled with the live config's hash.
    pub config_info: Family<ConfigLabels, Gauge<i64, AtomicI64>>,
    /// Reload attempts by result.
    pub config_reloads: Family<ReloadLabels, Counter<u64, AtomicU64>>,
    /// Calls on multiplexed (Bolt, Dubbo) pools by protocol, pool and outcome.
    pub mux_calls: Family<MuxCallLabels, Counter>,
    /// Calls waiting for their answer, by protocol and pool.
    pub mux_pending: Family<ProtocolLabels, Gauge>,
    /// Answers whose request id matched no pending call, by protocol and pool.
    pub mux_unknown_responses: Family<ProtocolLabels, Counter>,
    /// Heartbeats by protocol, pool or listener, and event.
    pub heartbeats: Family<HeartbeatLabels, Counter>,
    /// Bolt and Dubbo requests through the proxy core, by returned status.
    pub xprotocol_requests: Family<XprotocolLabels, Counter>,
    /// Connections closed because they sent bytes that are not the protocol, by listener.
    pub xprotocol_decode_errors: Family<ProtocolLabels, Counter>,
    /// Hosts ejected by outlier detection, by cluster and the failure that ejected them.
    pub outlier_ejections: Family<EjectionLabels, Counter>,
    /// Hosts currently ejected, by cluster.
    pub outlier_ejected_hosts: Family<NameLabels, Gauge>,
    /// Requests and retries turned away by a circuit breaker, by cluster and cap.
    pub circuit_breaker_rejections: Family<BreakerLabels, Counter>,
    /// Retries not made because the route's retry budget was spent, by cluster.
    pub retry_budget_exhausted: Family<NameLabels, Counter>,
    /// Requests rejected by a local rate limit, by listener or route.
    pub rate_limited: Family<RateLimitLabels, Counter>,
    /// Access log lines dropped because the writer's queue was full.
    pub access_log_dropped: Counter,
    /// Spans dropped because the exporter's queue was full.
    pub spans_dropped: Counter,
    /// Spans the OTLP exporter sent, by outcome (`exported`, `failed`).
    pub spans_exported: Family<KindLabels, Counter>,
    /// Mutual TLS handshakes by direction and result.
    pub tls_handshakes: Family<TlsLabels, Counter>,
    /// Authorization decisions of listeners' policies, by decision and rule.
    pub authz_decisions: Family<AuthzLabels, Counter>,
    /// Plaintext connections a TLS listener took (`permissive`) or refused (`strict`), by
    /// listener and kind (`accepted`, `refused`).
    pub tls_plaintext: Family<PlaintextLabels, Counter>,
    /// When the sidecar's certificate expires, in seconds since the epoch (0 without one).
    pub identity_cert_expiry: Gauge,
}

fn latency_histogram() -> Histogram {
    // 50µs .. ~26s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

impl Metrics {
    /// Creates the families and registers them in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outrigger");
        let m = Self {
            registry: Arc::default(),
            pool_names: Arc::default(),
            grpc_requests: Family::default(),
            grpc_duration: Family::new_with_constructor(latency_histogram),
            invoke_errors: Family::default(),
            pool_waits: Family::default(),
            pool_wait_seconds: Family::new_with_constructor(latency_histogram),
            pool_connections: Family::default(),
            proxy_requests: Family::default(),
            server_limits: Family::default(),
            proxy_retries: Family::default(),
            config_version: Gauge::default(),
            config_info: Family::default(),
            config_reloads: Family::default(),
            mux_calls: Family::default(),
            mux_pending: Family::default(),
            mux_unknown_responses: Family::default(),
            heartbeats: Family::default(),
            xprotocol_requests: Family::default(),
            xprotocol_decode_errors: Family::default(),
            outlier_ejections: Family::default(),
            outlier_ejected_hosts: Family::default(),
            circuit_breaker_rejections: Family::default(),
            retry_budget_exhausted: Family::default(),
            rate_limited: Family::default(),
            access_log_dropped: Counter::default(),
            spans_dropped: Counter::default(),
            spans_exported: Family::default(),
            tls_handshakes: Family::default(),
            authz_decisions: Family::default(),
            tls_plaintext: Family::default(),
            identity_cert_expiry: Gauge::default(),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls by path and status code",
            m.grpc_requests.clone(),
        );
        registry.register(
            "grpc_request_duration_seconds",
            "gRPC call latency",
            m.grpc_duration.clone(),
        );
        registry.register(
            "invoke_errors",
            "InvokeService errors by kind",
            m.invoke_errors.clone(),
        );
        registry.register(
            "pool_waits",
            "callers that waited for a pooled connection",
            m.pool_waits.clone(),
        );
        registry.register(
            "pool_wait_seconds",
            "time spent waiting for a pooled connection",
            m.pool_wait_seconds.clone(),
        );
        registry.register(
            "pool_connections",
            "open connections per pool",
            m.pool_connections.clone(),
        );
        registry.register(
            "proxy_requests",
            "requests through the proxy core",
            m.proxy_requests.clone(),
        );
        registry.register(
            "server_limits",
            "connections closed on a server limit (max connections, header/first-frame/idle/sniff timeouts)",
            m.server_limits.clone(),
        );
        registry.register(
            "proxy_retries",
            "retries made by the proxy core",
            m.proxy_retries.clone(),
        );
        registry.register(
            "config_version",
            "version of the live config",
            m.config_version.clone(),
        );
        registry.register(
            "config_info",
            "the live config's hash",
            m.config_info.clone(),
        );
        registry.register(
            "config_reloads",
            "config reload attempts by result",
            m.config_reloads.clone(),
        );
        registry.register(
            "mux_calls",
            "calls on bolt and dubbo pools by outcome (protocol status or failure)",
            m.mux_calls.clone(),
        );
        registry.register(
            "mux_pending",
            "bolt and dubbo calls waiting for their answer",
            m.mux_pending.clone(),
        );
        registry.register(
            "mux_unknown_responses",
            "bolt and dubbo answers whose request id matched no pending call",
            m.mux_unknown_responses.clone(),
        );
        registry.register(
            "heartbeats",
            "bolt and dubbo heartbeats sent, acked, missed and answered",
            m.heartbeats.clone(),
        );
        registry.register(
            "xprotocol_requests",
            "bolt and dubbo requests through the proxy core by returned status",
            m.xprotocol_requests.clone(),
        );
        registry.register(
            "xprotocol_decode_errors",
            "connections closed for sending bytes that are not the listener's protocol",
            m.xprotocol_decode_errors.clone(),
        );
        registry.register(
            "outlier_ejections",
            "hosts ejected by outlier detection, by cluster and the failure that ejected them",
            m.outlier_ejections.clone(),
        );
        registry.register(
            "outlier_ejected_hosts",
            "hosts currently ejected by outlier detection",
            m.outlier_ejected_hosts.clone(),
        );
        registry.register(
            "circuit_breaker_rejections",
            "requests and retries turned away by a cluster's circuit breaker, by cap",
            m.circuit_breaker_rejections.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "retries not made because the route's retry budget was spent",
            m.retry_budget_exhausted.clone(),
        );
        registry.register(
            "rate_limited",
            "requests rejected by a local rate limit of a listener or route",
            m.rate_limited.clone(),
        );
        registry.register(
            "access_log_dropped",
            "access log lines dropped because the writer's queue was full",
            m.access_log_dropped.clone(),
        );
        registry.register(
            "trace_spans_dropped",
            "spans dropped because the OTLP exporter's queue was full",
            m.spans_dropped.clone(),
        );
        registry.register(
            "tls_handshakes",
            "mutual TLS handshakes by direction (inbound, outbound) and result",
            m.tls_handshakes.clone(),
        );
        registry.register(
            "authz_decisions",
            "authorization decisions of listeners' policies by decision (allow, deny, audit_deny) and rule",
            m.authz_decisions.clone(),
        );
        registry.register(
            "tls_plaintext_connections",
            "plaintext connections on a TLS listener, accepted (permissive) or refused (strict)",
            m.tls_plaintext.clone(),
        );
        registry.register(
            "identity_cert_expiry_timestamp_seconds",
            "when the sidecar's identity certificate expires (Unix time; 0 without one)",
            m.identity_cert_expiry.clone(),
        );
        registry.register(
            "trace_spans_exported",
            "spans the OTLP exporter sent, by kind: exported (accepted by the collector) or failed",
            m.spans_exported.clone(),
        );
        *m.registry.lock() = registry;
        m
    }

    /// Marks a pool named `name` (speaking `protocol` when multiplexed) as alive until the
    /// returned guard drops; when the last pool of a name goes (a host gone from DNS, a
    /// cluster or channel gone from the config), its series go too, so pod IPs churning do not
    /// grow the metrics without bound.
    pub fn pool_series(&self, name: &str, protocol: Option<&'static str>) -> PoolSeries {
        *self.pool_names.lock().entry(name.to_owned()).or_default() += 1;
        PoolSeries {
            metrics: self.clone(),
            name: name.to_owned(),
            protocol,
        }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry.lock());
        out
    }
}

/// Keeps a pool's metric series while it lives (see [`Metrics::pool_series`]).
pub struct PoolSeries {
    metrics: Metrics,
    name: String,
    protocol: Option<&'static str>,
}

impl Drop for PoolSeries {
    fn drop(&mut self) {
        let m = &self.metrics;
        {
            let mut names = m.pool_names.lock();
            let Some(alive) = names.get_mut(&self.name) else {
                return;
            };
            *alive -= 1;
            if *alive > 0 {
                return;
            }
            names.remove(&self.name);
        }
        let named = NameLabels {
            name: self.name.clone(),
        };
        m.pool_waits.remove(&named);
        m.pool_wait_seconds.remove(&named);
        m.pool_connections.remove(&named);
        if let Some(protocol) = self.protocol {
            let labels = ProtocolLabels {
                protocol: protocol.to_owned(),
                name: self.name.clone(),
            };
            m.mux_pending.remove(&labels);
            m.mux_unknown_responses.remove(&labels);
            for event in ["sent", "acked", "missed", "answered"] {
                m.heartbeats.remove(&HeartbeatLabels {
                    protocol: protocol.to_owned(),
                    name: self.name.clone(),
                    event: event.to_owned(),
                });
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pools_series_go_with_the_last_pool_of_its_name() {
        let m = Metrics::new();
        let named = NameLabels {
            name: "upstream/users/10.0.0.7:80".to_owned(),
        };
        let first = m.pool_series(&named.name, None);
        let second = m.pool_series(&named.name, None);
        m.pool_connections.get_or_create(&named).inc();
        drop(first);
        assert!(
            m.encode().contains("upstream/users/10.0.0.7:80"),
            "one pool is left"
        );
        drop(second);
        assert!(
            !m.encode().contains("upstream/users/10.0.0.7:80"),
            "{}",
            m.encode()
        );
    }
}
