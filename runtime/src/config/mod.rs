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
use outrigger_config::{RuntimeConfigSpec, config_hash, validate};
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

/// Addresses given on the command line, which win over the file's.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces `grpc.address`.
    pub grpc_address: Option<String>,
    /// Replaces `admin.address`.
    pub admin_address: Option<String>,
    /// Replaces `httpApi.address`.
    pub http_api_address: Option<String>,
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
    let routing = Arc::new(ProxySnapshot::build(spec, metrics, &proxy.routing()).await?);
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
