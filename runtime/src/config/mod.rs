//! The live config of a running sidecar: the immutable snapshot every call starts from, and the
//! reloader that builds a new snapshot from a changed file, validates it, and swaps it in
//! atomically — or rejects it with every problem listed while the old one keeps serving. Not
//! for the document's types or validation rules (the `outrigger-config` crate).

mod watch;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use outrigger_config::{
    IdentityConfig, InboundConfig, InboundTlsMode, ListenerConfig, ListenerTls, ListenerTlsMode,
    OperatorEndpoint, Protocol, RouteTableConfig, RuntimeConfigSpec, config_hash, validate,
};
use parking_lot::Mutex;

use outrigger_core::{ConfigLabels, Metrics, ReloadLabels};
use outrigger_invoke::{Invoker, Invokers};
use outrigger_pool::LocalListeners;
use outrigger_proxy::{ProxyCore, ProxySnapshot};

pub(crate) use self::watch::watch_file;

/// One loaded config version and everything built from it.
pub struct Snapshot {
    /// 1 for the first config, +1 per applied reload.
    pub version: u64,
    /// `outrigger_config::config_hash` of the document as the file holds it, before the
    /// command-line overrides: the hash the operator reports in `status.configHash` and stamps on
    /// pods, whatever flags the injector gave this sidecar.
    pub hash: String,
    /// The document the sidecar serves (the file's, with the overrides applied).
    pub spec: Arc<RuntimeConfigSpec>,
    /// The invoke stack built from it.
    pub invoker: Arc<Invoker>,
    /// When it went live.
    pub loaded_at: SystemTime,
}

/// A config that was rejected.
#[derive(Clone, Debug)]
pub struct Rejection {
    /// When.
    pub at: SystemTime,
    /// Every problem, as `path: message`.
    pub errors: Vec<String>,
}

/// What the command line adds to the file: addresses that win over the file's, and what only
/// the pod knows (set by the injector): the app behind the inbound listener and where the
/// kubelet puts the identity files. The config hash is the file's, before these.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces `grpc.address`.
    pub grpc_address: Option<String>,
    /// Replaces `admin.address`.
    pub admin_address: Option<String>,
    /// Replaces `httpApi.address`.
    pub http_api_address: Option<String>,
    /// Adds the listener `inbound` forwarding to this app.
    pub inbound: Option<InboundApp>,
    /// The identity when the file sets none.
    pub identity: Option<IdentityConfig>,
    /// The discovery endpoint when the file sets none.
    pub discovery_service: Option<OperatorEndpoint>,
}

/// The app behind the injected inbound listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundApp {
    /// Where the listener accepts (`0.0.0.0:34906` in pods).
    pub address: String,
    /// The app's port on loopback.
    pub port: u16,
    /// What the app speaks: `http`, `http2` (e.g. gRPC), `bolt`, `dubbo`, or `auto` (any of them,
    /// told per connection).
    pub protocol: Protocol,
}

/// The name of the injected inbound listener (and its route table).
pub const INBOUND_LISTENER: &str = "inbound";

impl InboundApp {
    /// The listener, route table and clusters it adds. The mode comes from the file's
    /// `inbound.tls.mode` and the policy from `inbound.authorization`; without an identity a `permissive` listener stays plaintext (a
    /// `strict` one is then refused when it is bound, naming the missing identity).
    fn add_to(&self, spec: &mut RuntimeConfigSpec) {
        let mode = spec
            .inbound
            .as_ref()
            .map(InboundConfig::tls_mode)
            .unwrap_or_default();
        let tls = match mode {
            InboundTlsMode::Strict => Some(ListenerTlsMode::Strict),
            InboundTlsMode::Permissive if spec.identity.is_some() => {
                Some(ListenerTlsMode::Permissive)
            }
            InboundTlsMode::Permissive => {
                tracing::warn!("the inbound listener is plaintext: the sidecar has no identity");
                None
            }
            InboundTlsMode::Disabled => None,
        };
        // `auto` tells each connection's protocol by its first bytes: a cluster for each, the
        // HTTP/2 one for gRPC.
        let auto = [
            Protocol::Http,
            Protocol::Bolt,
            Protocol::Dubbo,
            Protocol::Http2,
        ];
        let protocols: &[Protocol] = match self.protocol {
            Protocol::Auto => &auto,
            ref one => std::slice::from_ref(one),
        };
        let mut routes = Vec::new();
        for p in protocols {
            let name = format!("inbound-app-{p}");
            spec.clusters.push(document(serde_json::json!({
                "name": name,
                "protocol": p.as_str(),
                "hosts": [{"address": format!("127.0.0.1:{}", self.port)}],
            })));
            // A route only takes requests of its cluster's protocol.
            routes.push(document(serde_json::json!({ "cluster": name })));
        }
        spec.route_tables.push(RouteTableConfig {
            name: INBOUND_LISTENER.to_owned(),
            routes,
        });
        spec.listeners.push(ListenerConfig {
            name: INBOUND_LISTENER.to_owned(),
            protocol: self.protocol,
            address: Some(self.address.clone()),
            route_table: INBOUND_LISTENER.to_owned(),
            max_connections: None,
            header_read_timeout_ms: None,
            idle_timeout_ms: None,
            rate_limit: None,
            tls: tls.map(|mode| ListenerTls { mode }),
            authorization: spec.inbound.as_ref().and_then(|i| i.authorization.clone()),
        });
    }
}

/// A part of the document from its document form, the one place its defaults live.
fn document<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| unreachable!("a fixed document part parses: {e}"))
}

impl Overrides {
    /// Applies the overrides to a document.
    pub fn apply(&self, spec: &mut RuntimeConfigSpec) {
        if let Some(a) = &self.grpc_address {
            spec.grpc.address.clone_from(a);
        }
        if let Some(a) = &self.admin_address {
            spec.admin.address.clone_from(a);
        }
        if let Some(a) = &self.http_api_address {
            spec.http_api.address = Some(a.clone());
        }
        if spec.identity.is_none() {
            spec.identity.clone_from(&self.identity);
        }
        if spec.discovery_service.is_none() {
            spec.discovery_service.clone_from(&self.discovery_service);
        }
        if let Some(app) = &self.inbound {
            app.add_to(spec);
        }
    }
}

/// The live snapshot and the last rejection.
pub struct Live {
    current: ArcSwap<Snapshot>,
    rejected: Mutex<Option<Rejection>>,
}

impl Live {
    /// The snapshot new calls use. A call keeps the one it started with.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The last config that was rejected, if any since the live one was applied.
    pub fn last_rejection(&self) -> Option<Rejection> {
        self.rejected.lock().clone()
    }
}

impl Invokers for Live {
    fn current(&self) -> Arc<Invoker> {
        self.current.load().invoker.clone()
    }
}

/// Builds and applies config versions.
pub struct Reloader {
    live: Arc<Live>,
    proxy: Arc<ProxyCore>,
    metrics: Metrics,
    overrides: Overrides,
    apply_lock: tokio::sync::Mutex<()>,
}

/// Builds everything a version needs and makes the proxy side live. Returns the invoker.
async fn build(
    spec: &RuntimeConfigSpec,
    proxy: &ProxyCore,
    metrics: &Metrics,
) -> Result<Arc<Invoker>, Vec<String>> {
    validate(spec).map_err(|e| e.lines())?;
    let routing = Arc::new(
        ProxySnapshot::build(
            spec,
            metrics,
            &proxy.routing(),
            proxy.identity(),
            proxy.discovery(),
        )
        .await?,
    );
    let channel_cfg = spec
        .rpc
        .channels
        .first()
        .ok_or_else(|| vec!["rpc.channels: at least one channel is required".to_owned()])?;
    // The channels route on the snapshot built with them, however a later reload swaps.
    let local: Arc<dyn LocalListeners> = Arc::new(proxy.in_process_pinned(routing.clone()));
    let channel = outrigger_channel::build(channel_cfg, spec, &local, metrics)
        .await
        .map_err(|e| vec![e])?;
    let kinds = |list: &[outrigger_config::FilterConfig]| {
        list.iter()
            .map(|f| f.kind())
            .collect::<Result<Vec<_>, String>>()
    };
    let before = kinds(&spec.rpc.before_invoke).map_err(|e| vec![e])?;
    let after = kinds(&spec.rpc.after_invoke).map_err(|e| vec![e])?;
    let invoker = Invoker::new(channel, &before, &after, spec.rpc.timeout());
    proxy.apply(routing, spec).await?;
    Ok(Arc::new(invoker))
}

impl Reloader {
    /// Loads the first config. Fails with every problem when it is invalid or a listener
    /// cannot bind.
    pub async fn start(
        mut spec: RuntimeConfigSpec,
        overrides: Overrides,
        proxy: Arc<ProxyCore>,
        metrics: Metrics,
    ) -> Result<Self, Vec<String>> {
        let hash = config_hash(&spec);
        overrides.apply(&mut spec);
        let invoker = build(&spec, &proxy, &metrics).await?;
        let snapshot = Snapshot {
            version: 1,
            hash,
            spec: Arc::new(spec),
            invoker,
            loaded_at: SystemTime::now(),
        };
        record_live(&metrics, &snapshot);
        tracing::info!(version = 1, hash = %snapshot.hash, "config loaded");
        Ok(Self {
            live: Arc::new(Live {
                current: ArcSwap::from_pointee(snapshot),
                rejected: Mutex::new(None),
            }),
            proxy,
            metrics,
            overrides,
            apply_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The live config.
    pub fn live(&self) -> Arc<Live> {
        self.live.clone()
    }

    /// Applies a new document. Returns the new version, `None` when nothing changed, or every
    /// problem (the live config stays).
    pub async fn apply(&self, mut spec: RuntimeConfigSpec) -> Result<Option<u64>, Vec<String>> {
        let _one_at_a_time = self.apply_lock.lock().await;
        let hash = config_hash(&spec);
        self.overrides.apply(&mut spec);
        let old = self.live.current();
        if hash == old.hash {
            return Ok(None);
        }
        let result = build(&spec, &self.proxy, &self.metrics).await;
        let invoker = match result {
            Ok(i) => i,
            Err(errors) => {
                self.reject(errors.clone());
                return Err(errors);
            }
        };
        if spec.grpc != old.spec.grpc || spec.admin != old.spec.admin {
            tracing::warn!(
                "grpc and admin settings take effect on restart; the running servers keep theirs"
            );
        }
        if spec.identity != old.spec.identity {
            tracing::warn!(
                "identity settings take effect on restart; the identity files keep being watched"
            );
        }
        if spec.discovery_service != old.spec.discovery_service {
            tracing::warn!("discoveryService takes effect on restart");
        }
        let version = old.version + 1;
        let snapshot = Snapshot {
            version,
            hash,
            spec: Arc::new(spec),
            invoker,
            loaded_at: SystemTime::now(),
        };
        record_live(&self.metrics, &snapshot);
        self.metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                result: "applied".to_owned(),
            })
            .inc();
        tracing::info!(version, hash = %snapshot.hash, "config reloaded");
        self.live.current.store(Arc::new(snapshot));
        *self.live.rejected.lock() = None;
        Ok(Some(version))
    }

    /// Parses, validates and applies a document's text.
    pub async fn apply_text(&self, text: &str) -> Result<Option<u64>, Vec<String>> {
        match outrigger_config::parse_yaml(text) {
            Ok(spec) => self.apply(spec).await,
            Err(e) => {
                let errors = vec![e.to_string()];
                self.reject(errors.clone());
                Err(errors)
            }
        }
    }

    fn reject(&self, errors: Vec<String>) {
        self.metrics
            .config_reloads
            .get_or_create(&ReloadLabels {
                result: "rejected".to_owned(),
            })
            .inc();
        tracing::error!(
            version = self.live.current().version,
            problems = errors.len(),
            "new config rejected; the live config keeps serving:\n  - {}",
            errors.join("\n  - ")
        );
        *self.live.rejected.lock() = Some(Rejection {
            at: SystemTime::now(),
            errors,
        });
    }
}

fn record_live(metrics: &Metrics, s: &Snapshot) {
    metrics
        .config_version
        .set(i64::try_from(s.version).unwrap_or(i64::MAX));
    metrics.config_info.clear();
    metrics
        .config_info
        .get_or_create(&ConfigLabels {
            hash: s.hash.clone(),
        })
        .set(1);
}

/// How often the config file is checked for changes by default.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);
