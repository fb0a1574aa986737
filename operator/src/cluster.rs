//! What the mutating webhook can see of the cluster in `run` mode: namespace labels (namespace
//! opt-in) and which RuntimeConfigs exist (to warn instead of injecting a sidecar whose ConfigMap
//! will never appear), from metadata-only reflectors. Until a reflector has synced it answers
//! "unknown", and injection proceeds as the standalone webhook would. Not for the controller's
//! own watches (`reconcile`).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};

use crate::{
    admission::ClusterView,
    crd::RuntimeConfig,
    names::{NAMESPACE_INJECT_ENABLED, NAMESPACE_LABEL_INJECT},
};

/// Reflector-backed [`ClusterView`].
pub struct ClusterCache {
    namespaces: Store<PartialObjectMeta<Namespace>>,
    configs: Store<PartialObjectMeta<RuntimeConfig>>,
    namespaces_synced: Arc<AtomicBool>,
    configs_synced: Arc<AtomicBool>,
}

impl ClusterCache {
    /// Starts the reflectors on the runtime.
    pub fn start(client: Client) -> Arc<Self> {
        let (namespaces, ns_writer) = reflector::store();
        let (configs, rc_writer) = reflector::store();
        // `Api<PartialObjectMeta<K>>` makes metadata-only requests.
        let ns_api: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
        let rc_api: Api<PartialObjectMeta<RuntimeConfig>> = Api::all(client);
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
            namespaces,
            configs,
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
}
