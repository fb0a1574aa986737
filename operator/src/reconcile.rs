//! The RuntimeConfig controller's I/O: for each object, render the desired ConfigMap (pure, in
//! `desired`, with the mesh trust bundle when the CA is loaded), server-side apply it with one
//! field manager, list the namespace's injected pods and
//! read the config their sidecars run (`live`) to count the rollout, patch the status (pure, in `status`), publish an Event when the config
//! changes or is rejected, and return an explicit requeue. Injected pods are watched (metadata
//! only) so the rollout counts follow pods as they come and go; a new trust bundle (a root
//! rotation) re-reconciles every object. An invalid spec never touches the
//! ConfigMap, so running pods keep their last good config.
//! `error_policy` counts failures by kind and backs off per object. Not for leader election
//! (`leader`) or anything a unit test can check without a client.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::{
    api::core::v1::{ConfigMap, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{
        Controller,
        controller::{self, Action},
        events::{Event, EventType, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use parking_lot::Mutex;
use serde_json::json;
use tracing::Instrument;

use crate::{
    crd::{RuntimeConfig, RuntimeConfigStatus},
    desired::{config_map_name, desired},
    live::live_hashes,
    mesh_ca::MeshCaHandle,
    metrics::Metrics,
    names::{
        ANNOTATION_CONFIG, CONTROLLER_NAME, DEFAULT_CONFIG_NAME, FIELD_MANAGER, LABEL_INJECTED,
    },
    status::{Outcome, next_status, rollout, with_rollout},
};

/// How long a healthy object waits before it is checked again (drift correction).
pub const RESYNC: Duration = Duration::from_secs(300);
/// How soon an object with stale pods is counted again.
pub const ROLLOUT_RECHECK: Duration = Duration::from_secs(5);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The object has no namespace (RuntimeConfig is namespaced, so the API server sent junk).
    #[error("RuntimeConfig {0} has no namespace")]
    MissingNamespace(String),
    /// Server-side apply of the ConfigMap failed.
    #[error("cannot apply ConfigMap {namespace}/{name}")]
    ApplyConfigMap {
        /// Namespace.
        namespace: String,
        /// ConfigMap name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Listing the injected pods (for the rollout counts) failed.
    #[error("cannot list the injected pods in namespace {namespace}")]
    ListPods {
        /// Namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The status patch failed.
    #[error("cannot patch the status of RuntimeConfig {namespace}/{name}")]
    PatchStatus {
        /// Namespace.
        namespace: String,
        /// RuntimeConfig name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::MissingNamespace(_) => "missing_namespace",
            ReconcileError::ApplyConfigMap { .. } => "apply_configmap",
            ReconcileError::ListPods { .. } => "list_pods",
            ReconcileError::PatchStatus { .. } => "patch_status",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<String, u32>>,
    mesh_ca: Option<MeshCaHandle>,
}

impl Context {
    /// A context publishing Events as `instance` (usually the pod name).
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER_NAME.to_owned(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::new(HashMap::new()),
            mesh_ca: None,
        }
    }

    /// Publishes the mesh CA's trust bundle in every ConfigMap (`trust-bundle.pem`) and
    /// re-reconciles every RuntimeConfig when it changes.
    pub fn with_mesh_ca(mut self, ca: MeshCaHandle) -> Self {
        self.mesh_ca = Some(ca);
        self
    }
}

/// Delay before retrying an object that failed `failures` times in a row: 5 s doubling to 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(5u64.saturating_mul(1 << exp)).min(RESYNC)
}

/// Reconciles one RuntimeConfig.
pub async fn reconcile(
    rc: Arc<RuntimeConfig>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let started = std::time::Instant::now();
    let name = rc.name_any();
    let namespace = rc
        .namespace()
        .ok_or_else(|| ReconcileError::MissingNamespace(name.clone()))?;
    let span = tracing::info_span!("reconcile", namespace = %namespace, name = %name);
    let action = apply(&rc, &ctx, &namespace, &name).instrument(span).await?;
    ctx.failures.lock().remove(&format!("{namespace}/{name}"));
    ctx.metrics.reconciled(started.elapsed().as_secs_f64());
    Ok(action)
}

async fn apply(
    rc: &RuntimeConfig,
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Action, ReconcileError> {
    let now = Time(Timestamp::now());
    let previous = rc.status.as_ref();
    let generation = rc.metadata.generation;

    let trust_bundle = ctx.mesh_ca.as_ref().and_then(MeshCaHandle::trust_bundle);
    let (status, event, action) = match desired(rc, trust_bundle.as_deref()) {
        Ok(d) => {
            let cm_name = config_map_name(name);
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            api.patch(
                &cm_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&d.config_map),
            )
            .await
            .map_err(|source| ReconcileError::ApplyConfigMap {
                namespace: namespace.to_owned(),
                name: cm_name.clone(),
                source,
            })?;
            let status = next_status(
                previous,
                generation,
                Outcome::Applied {
                    config_map: &cm_name,
                    hash: &d.config_hash,
                },
                &now,
            );
            let changed = previous.and_then(|s| s.config_hash.as_deref()) != Some(&d.config_hash);
            let event = changed.then(|| Event {
                type_: EventType::Normal,
                reason: "ConfigApplied".into(),
                note: Some(format!(
                    "ConfigMap {cm_name} now holds config {}",
                    d.config_hash
                )),
                action: "Apply".into(),
                secondary: None,
            });
            tracing::info!(config_map = %cm_name, hash = %d.config_hash, changed, "config applied");
            (status, event, Action::requeue(RESYNC))
        }
        Err(errors) => {
            let status = next_status(
                previous,
                generation,
                Outcome::Invalid { errors: &errors },
                &now,
            );
            let changed = previous.map(|s| (&s.errors, s.observed_generation))
                != Some((&status.errors, status.observed_generation));
            let event = changed.then(|| Event {
                type_: EventType::Warning,
                reason: "InvalidSpec".into(),
                note: Some(truncate(&errors.to_string(), 1000)),
                action: "Validate".into(),
                secondary: None,
            });
            tracing::warn!(errors = %errors, "spec rejected; the ConfigMap keeps the last valid config");
            // Nothing to retry: the next spec change triggers a reconcile.
            (status, event, Action::await_change())
        }
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let injected = pods
        .list(&ListParams::default().labels(&format!("{LABEL_INJECTED}=true")))
        .await
        .map_err(|source| ReconcileError::ListPods {
            namespace: namespace.to_owned(),
            source,
        })?;
    let live = live_hashes(&injected.items, name).await;
    let counts = rollout(&injected.items, name, status.config_hash.as_deref(), &live);
    let status = with_rollout(status, previous, counts, &now);
    // Sidecars pick a new config up by themselves once the kubelet updates their mounted
    // ConfigMap: look again soon, so `RolledOut` follows them without waiting for a resync.
    let action = match action {
        _ if counts.stale > 0 && status.config_hash.is_some() => Action::requeue(ROLLOUT_RECHECK),
        other => other,
    };

    if previous != Some(&status) {
        patch_status(&ctx.client, namespace, name, &status).await?;
    }
    if let Some(event) = event
        && let Err(e) = ctx.recorder.publish(&event, &rc.object_ref(&())).await
    {
        tracing::warn!(error = %e, "cannot publish event");
    }
    Ok(action)
}

async fn patch_status(
    client: &Client,
    namespace: &str,
    name: &str,
    status: &RuntimeConfigStatus,
) -> Result<(), ReconcileError> {
    let api: Api<RuntimeConfig> = Api::namespaced(client.clone(), namespace);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .map(|_| ())
    .map_err(|source| ReconcileError::PatchStatus {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    })
}

/// Logs the failure, counts it by kind and retries with a per-object backoff.
pub fn error_policy(rc: Arc<RuntimeConfig>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", rc.namespace().unwrap_or_default(), rc.name_any());
    let failures = {
        let mut map = ctx.failures.lock();
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.reconcile_failed(error.kind());
    let delay = backoff(failures);
    tracing::warn!(object = %key, error = %error, source = ?std::error::Error::source(error), failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Runs the controller over every namespace until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let configs: Api<RuntimeConfig> = Api::all(client.clone());
    let config_maps: Api<ConfigMap> = Api::all(client.clone());
    // Injected pods, metadata only: a pod coming or going re-counts its RuntimeConfig's rollout.
    let pods: Api<PartialObjectMeta<Pod>> = Api::all(client);
    // A new trust bundle is written into every ConfigMap.
    let bundle_changes = futures_util::stream::unfold(ctx.mesh_ca.clone(), |ca| async move {
        let mut ca = ca?;
        if ca.bundle_changed().await {
            tracing::info!("mesh trust bundle changed: reconciling every RuntimeConfig");
            Some(((), Some(ca)))
        } else {
            None
        }
    });
    Controller::new(configs, watcher::Config::default().any_semantic())
        .reconcile_all_on(bundle_changes)
        .owns(
            config_maps,
            watcher::Config::default()
                .labels(&format!("app.kubernetes.io/managed-by={CONTROLLER_NAME}")),
        )
        .watches(
            pods,
            watcher::Config::default().labels(&format!("{LABEL_INJECTED}=true")),
            runtime_config_of,
        )
        // A Deployment rollout touches many pods at once: count once per burst.
        .with_config(controller::Config::default().debounce(Duration::from_secs(1)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// The RuntimeConfig an injected pod uses.
fn runtime_config_of(pod: PartialObjectMeta<Pod>) -> Option<ObjectRef<RuntimeConfig>> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let name = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CONFIG))
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_CONFIG_NAME);
    Some(ObjectRef::new(name).within(namespace))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_resync_period() {
        let cases = [
            (0, 5),
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (6, 160),
            (7, 300),
            (40, 300),
        ];
        for (failures, secs) in cases {
            assert_eq!(backoff(failures), Duration::from_secs(secs), "{failures}");
        }
    }

    #[test]
    fn event_notes_fit_the_limit() {
        let cases = [
            ("short", 10, "short"),
            ("0123456789abc", 10, "0123456..."),
            ("ééééé", 6, "é..."),
        ];
        for (input, max, expected) in cases {
            assert_eq!(truncate(input, max), expected);
        }
    }
}
