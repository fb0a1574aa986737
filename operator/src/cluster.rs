//! What the mutating webhook can see of the cluster in `run` mode: namespace labels and
//! annotations (namespace opt-in, `inject-policy: required`), which RuntimeConfigs exist (to skip,
//! visibly, instead of injecting a sidecar whose ConfigMap will never appear) and the config hash
//! each rendered ConfigMap holds (stamped on injected pods), from metadata-only reflectors. Until
//! a reflector has synced it answers "unknown", and injection proceeds as the standalone webhook
//! would. A RuntimeConfig the cache does not know is read live before a pod is skipped for it.
//! Not for the controller's own watches (`reconcile`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures_util::{StreamExt, future::BoxFuture};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api, Client, ResourceExt,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    admission::{ClusterView, ConfigLookup, LiveConfig},
    crd::RuntimeConfig,
    desired::{config_map_name, desired},
    names::{
        ANNOTATION_CONFIG_HASH, ANNOTATION_INJECT_POLICY, CONTROLLER_NAME, INJECT_POLICY_REQUIRED,
        NAMESPACE_INJECT_ENABLED, NAMESPACE_LABEL_INJECT,
    },
};

/// Reflector-backed [`ClusterView`], and live reads for [`ConfigLookup`].
pub struct ClusterCache {
    client: Client,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    configs: Store<PartialObjectMeta<RuntimeConfig>>,
    config_maps: Store<PartialObjectMeta<ConfigMap>>,
    namespaces_synced: Arc<AtomicBool>,
    configs_synced: Arc<AtomicBool>,
}

impl ClusterCache {
    /// Starts the reflectors on the runtime.
    pub fn start(client: Client) -> Arc<Self> {
        let (namespaces, ns_writer) = reflector::store();
        let (configs, rc_writer) = reflector::store();
        let (config_maps, cm_writer) = reflector::store();
        // `Api<PartialObjectMeta<K>>` makes metadata-only requests.
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let rc_api: Api<PartialObjectMeta<RuntimeConfig>> = Api::all(client.clone());
        let cm_api: Api<PartialObjectMeta<ConfigMap>> = Api::all(client.clone());
        // Only the ConfigMaps the controller renders (their annotation carries the hash).
        tokio::spawn(
            reflector::reflector(
                cm_writer,
                watcher::watcher(
                    cm_api,
                    watcher::Config::default()
                        .labels(&format!("app.kubernetes.io/managed-by={CONTROLLER_NAME}")),
                ),
            )
            .default_backoff()
            .for_each(|_| async {}),
        );
        tokio::spawn(
            reflector::reflector(
                ns_writer,
                watcher::watcher(ns_api, watcher::Config::default()),
            )
            .default_backoff()
            .for_each(|_| async {}),
        );
        tokio::spawn(
            reflector::reflector(
                rc_writer,
                watcher::watcher(rc_api, watcher::Config::default()),
            )
            .default_backoff()
            .for_each(|_| async {}),
        );
        let cache = Arc::new(Self {
            client,
            namespaces,
            configs,
            config_maps,
            namespaces_synced: Arc::default(),
            configs_synced: Arc::default(),
        });
        let (store, flag) = (cache.namespaces.clone(), cache.namespaces_synced.clone());
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        let (store, flag) = (cache.configs.clone(), cache.configs_synced.clone());
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        cache
    }
}

impl ClusterView for ClusterCache {
    fn namespace_opted_in(&self, namespace: &str) -> Option<bool> {
        if !self.namespaces_synced.load(Ordering::Acquire) {
            return None;
        }
        let ns = self.namespaces.get(&ObjectRef::new(namespace))?;
        Some(
            ns.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(NAMESPACE_LABEL_INJECT))
                .is_some_and(|v| v == NAMESPACE_INJECT_ENABLED),
        )
    }

    fn runtime_config_exists(&self, namespace: &str, name: &str) -> Option<bool> {
        if !self.configs_synced.load(Ordering::Acquire) {
            return None;
        }
        Some(
            self.configs
                .get(&ObjectRef::new(name).within(namespace))
                .is_some(),
        )
    }

    fn namespace_requires_injection(&self, namespace: &str) -> Option<bool> {
        if !self.namespaces_synced.load(Ordering::Acquire) {
            return None;
        }
        let ns = self.namespaces.get(&ObjectRef::new(namespace))?;
        let required = |m: Option<&std::collections::BTreeMap<String, String>>| {
            m.and_then(|m| m.get(ANNOTATION_INJECT_POLICY))
                .is_some_and(|v| v == INJECT_POLICY_REQUIRED)
        };
        Some(required(ns.metadata.labels.as_ref()) || required(ns.metadata.annotations.as_ref()))
    }

    fn config_hash(&self, namespace: &str, name: &str) -> Option<String> {
        let cm = self
            .config_maps
            .get(&ObjectRef::new(&config_map_name(name)).within(namespace))?;
        cm.annotations().get(ANNOTATION_CONFIG_HASH).cloned()
    }

    fn namespace_uid(&self, namespace: &str) -> Option<String> {
        self.namespaces.get(&ObjectRef::new(namespace))?.uid()
    }
}

impl ConfigLookup for ClusterCache {
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<LiveConfig, kube::Error>> {
        Box::pin(lookup_live(&self.client, namespace, name))
    }
}

/// Reads RuntimeConfig `namespace/name` and its ConfigMap's hash from the API server (metadata
/// only; two GETs). When the controller has not written the ConfigMap yet (the RuntimeConfig
/// was applied together with the workload), the hash is the one it will write: the spec is read
/// and hashed exactly as reconcile does (a third GET; none when the spec is invalid).
pub async fn lookup_live(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<LiveConfig, kube::Error> {
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), namespace);
    if rcs.get_metadata_opt(name).await?.is_none() {
        return Ok(LiveConfig::default());
    }
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let written = cms
        .get_metadata_opt(&config_map_name(name))
        .await?
        .and_then(|cm| cm.annotations().get(ANNOTATION_CONFIG_HASH).cloned());
    let hash = match written {
        Some(h) => Some(h),
        None => rcs
            .get_opt(name)
            .await?
            .and_then(|rc| desired(&rc, None).ok())
            .map(|d| d.config_hash),
    };
    Ok(LiveConfig { exists: true, hash })
}
