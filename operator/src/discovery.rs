//! Headless Services for meshed apps: for every app with injected pods serving an inbound
//! listener (label `outrigger.dev/app`, stamped by the injector), a Service `<app>-outrigger`
//! without a cluster IP selecting them on the inbound port. Its EndpointSlices list every ready
//! pod, so a caller's `discovery` cluster reaches the app pod by pod (per-pod load balancing and
//! outlier detection) and no user Service is edited. A Service goes when its app's last pod
//! does. `desired_services` is pure; `run_discovery` (the leader's) lists, applies and deletes.
//! Not for how sidecars resolve the Service (the sidecar's `discovery` cluster).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
    core::PartialObjectMeta,
    runtime::{WatchStreamExt, watcher},
};
use outrigger_config::DISCOVERY_SERVICE_SUFFIX;
use serde_json::json;

use crate::names::{CONTROLLER_NAME, FIELD_MANAGER, LABEL_APP, SIDECAR_INBOUND_PORT_NAME};

/// Label on the Services this module keeps: the app they are for.
pub const LABEL_DISCOVERY_APP: &str = "outrigger.dev/discovery-app";
/// How long changes are gathered before one sync.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// A full sync at least this often, whatever the watch says.
const RESYNC: Duration = Duration::from_secs(60);

/// The Service of `app` in `namespace` selecting its pods on `port`.
pub fn service(namespace: &str, app: &str, port: u16) -> Service {
    // A fixed document of known-good fields: it always deserialises.
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("{app}{DISCOVERY_SERVICE_SUFFIX}"),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": CONTROLLER_NAME,
                LABEL_DISCOVERY_APP: app,
            },
        },
        "spec": {
            "clusterIP": "None",
            "selector": { LABEL_APP: app },
            "ports": [{
                "name": SIDECAR_INBOUND_PORT_NAME,
                "port": port,
                "targetPort": port,
                "protocol": "TCP",
            }],
        },
    }))
    .unwrap_or_default()
}

/// The Services the apps of `pods` need: one per (namespace, `outrigger.dev/app`).
pub fn desired_services<'a>(
    pods: impl IntoIterator<Item = (&'a str, &'a str)>,
    port: u16,
) -> BTreeMap<(String, String), Service> {
    pods.into_iter()
        .map(|(ns, app)| (ns.to_owned(), app.to_owned()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(ns, app)| {
            let svc = service(&ns, &app, port);
            ((ns, app), svc)
        })
        .collect()
}

/// Keeps the Services in step with the labelled pods until `shutdown`: a sync after every burst
/// of pod changes and every minute.
pub async fn run_discovery(
    client: Client,
    port: u16,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let pods: Api<PartialObjectMeta<Pod>> = Api::all(client.clone());
    let watch = tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher(pods, watcher::Config::default().labels(LABEL_APP)).default_backoff()
        );
        while events.next().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    tracing::info!(port, "discovery Services starting");
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = rx.recv() => {}
            () = tokio::time::sleep(RESYNC) => {}
            () = &mut shutdown => break,
        }
        tokio::time::sleep(DEBOUNCE).await;
        while rx.try_recv().is_ok() {}
        if let Err(e) = sync(&client, port).await {
            tracing::warn!(error = %e, "cannot sync the discovery Services; retrying");
        }
    }
    watch.abort();
}

async fn sync(client: &Client, port: u16) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let labelled = pods
        .list_metadata(&ListParams::default().labels(LABEL_APP))
        .await?;
    let apps = labelled.items.iter().filter_map(|p| {
        Some((
            p.metadata.namespace.as_deref()?,
            p.labels().get(LABEL_APP)?.as_str(),
        ))
    });
    let desired = desired_services(apps, port);
    for ((ns, app), svc) in &desired {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        api.patch(
            &svc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(svc),
        )
        .await?;
        tracing::debug!(namespace = %ns, %app, "discovery Service applied");
    }
    let services: Api<Service> = Api::all(client.clone());
    let kept = services
        .list_metadata(&ListParams::default().labels(LABEL_DISCOVERY_APP))
        .await?;
    for svc in kept.items {
        let (Some(ns), Some(app)) = (
            svc.metadata.namespace.clone(),
            svc.labels().get(LABEL_DISCOVERY_APP).cloned(),
        ) else {
            continue;
        };
        if desired.contains_key(&(ns.clone(), app.clone())) {
            continue;
        }
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        match api.delete(&svc.name_any(), &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, %app, "discovery Service deleted: no pod left")
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn one_headless_service_per_app_and_namespace() {
        let pods = [
            ("shop", "users"),
            ("shop", "users"),
            ("shop", "web"),
            ("blog", "users"),
        ];
        let desired = desired_services(pods, 34906);
        assert_eq!(
            desired.keys().cloned().collect::<Vec<_>>(),
            vec![
                ("blog".to_owned(), "users".to_owned()),
                ("shop".to_owned(), "users".to_owned()),
                ("shop".to_owned(), "web".to_owned()),
            ]
        );
        let svc = serde_json::to_value(&desired[&("shop".to_owned(), "users".to_owned())]).unwrap();
        assert_eq!(svc["metadata"]["name"], "users-outrigger");
        assert_eq!(svc["metadata"]["namespace"], "shop");
        assert_eq!(
            svc["metadata"]["labels"]["outrigger.dev/discovery-app"],
            "users"
        );
        assert_eq!(svc["spec"]["clusterIP"], "None");
        assert_eq!(
            svc["spec"]["selector"],
            json!({ "outrigger.dev/app": "users" })
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{ "name": "inbound", "port": 34906, "targetPort": 34906, "protocol": "TCP" }])
        );
        assert!(desired_services([], 34906).is_empty());
    }
}
