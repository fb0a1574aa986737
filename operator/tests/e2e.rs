//! Cluster tests: run only when `OUTRIGGER_E2E_KUBECONFIG` points at a kubeconfig for a cluster
//! where the CRD and the operator are installed (see operator/README.md for kind). Without it each
//! test prints why and returns.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use outrigger_operator::RuntimeConfig;
use serde_json::json;

async fn client() -> Option<Client> {
    let Ok(path) = std::env::var("OUTRIGGER_E2E_KUBECONFIG") else {
        eprintln!("skipped: set OUTRIGGER_E2E_KUBECONFIG to run the cluster tests");
        return None;
    };
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Some(Client::try_from(config).unwrap())
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct TestNamespace {
    api: Api<Namespace>,
    name: String,
}

impl TestNamespace {
    async fn create(client: &Client, labels: serde_json::Value) -> Self {
        let name = format!(
            "outrigger-e2e-{}",
            std::process::id()
                ^ (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos())
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } }))
            .unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
        Self { api, name }
    }
    async fn delete(self) {
        let _ = self.api.delete(&self.name, &DeleteParams::default()).await;
    }
}

fn runtime_config(name: &str, upstream: &str) -> RuntimeConfig {
    serde_json::from_value(json!({
        "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig",
        "metadata": { "name": name },
        "spec": {
            "rpc": { "channels": [{ "listener": "egress" }] },
            "listeners": [{ "name": "egress", "routeTable": "t" }],
            "routeTables": [{ "name": "t", "routes": [{ "cluster": "up" }] }],
            "clusters": [{ "name": "up", "hosts": [{ "address": upstream }] }],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn runtime_config_becomes_a_config_map_with_status() {
    let Some(client) = client().await else { return };
    let ns = TestNamespace::create(&client, json!({})).await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);

    let created = rcs
        .create(
            &PostParams::default(),
            &runtime_config("default", "upstream:8080"),
        )
        .await
        .unwrap();
    let cm = eventually("the ConfigMap", || async {
        cms.get_opt("outrigger-default").await.unwrap()
    })
    .await;
    let file = &cm.data.as_ref().unwrap()["runtime.yaml"];
    assert_eq!(outrigger_config::load_yaml(file).unwrap(), created.spec);
    assert_eq!(
        cm.metadata.owner_references.as_ref().unwrap()[0].uid,
        created.metadata.uid.clone().unwrap()
    );
    let status = eventually("Ready=True", || async {
        let rc = rcs.get("default").await.unwrap();
        rc.status.filter(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;
    assert_eq!(
        status.config_hash.as_deref(),
        Some(outrigger_config::config_hash(&created.spec).as_str())
    );

    // The validating webhook refuses what the sidecar would refuse, with the error list.
    let mut bad = rcs.get("default").await.unwrap();
    bad.spec.route_tables[0].routes[0].cluster = "missing".into();
    let err = rcs
        .replace("default", &PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unknown cluster \"missing\""),
        "{err}"
    );

    // Deleting the RuntimeConfig garbage-collects the ConfigMap.
    rcs.delete("default", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("ConfigMap garbage collection", || async {
        cms.get_opt("outrigger-default")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn opted_in_pods_get_the_sidecar() {
    let Some(client) = client().await else { return };
    let ns = TestNamespace::create(&client, json!({ "outrigger.dev/inject": "enabled" })).await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    rcs.create(
        &PostParams::default(),
        &runtime_config("default", "upstream:8080"),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = serde_json::from_value(json!({
        "metadata": { "name": "app" },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] },
    }))
    .unwrap();
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(
        created.metadata.labels.as_ref().unwrap()["outrigger.dev/injected"],
        "true"
    );
    let spec = created.spec.unwrap();
    let sidecar = spec
        .init_containers
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == "outrigger")
        .unwrap();
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert!(spec.volumes.unwrap().iter().any(|v| {
        v.config_map
            .as_ref()
            .is_some_and(|c| c.name == "outrigger-default")
    }));

    let opted_out = serde_json::from_value(json!({
        "metadata": { "name": "plain", "annotations": { "outrigger.dev/inject": "false" } },
        "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] },
    }))
    .unwrap();
    let plain = pods
        .create(&PostParams::default(), &opted_out)
        .await
        .unwrap();
    assert!(plain.spec.unwrap().init_containers.is_none());
    ns.delete().await;
}
