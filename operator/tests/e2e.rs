//! Cluster tests: the README's install-and-use flow against a real cluster. They are `#[ignore]`d,
//! so a plain `cargo test` lists them as ignored (with the reason) instead of passing without
//! doing anything. Run them with
//!
//! ```sh
//! OUTRIGGER_E2E_KUBECONFIG=/tmp/kind.kubeconfig cargo test -p outrigger-operator --test e2e -- --ignored --test-threads=1
//! ```
//!
//! against a cluster whose nodes can pull (or were loaded with) the operator and sidecar images;
//! operator/README.md shows it for kind and k3d. `--ignored` without the variable fails, naming it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{process::Command, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Namespace, Pod},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use outrigger_operator::RuntimeConfig;
use serde_json::json;

const NEEDS_CLUSTER: &str = "set OUTRIGGER_E2E_KUBECONFIG to a kubeconfig and run with --ignored";
const RELEASE_NAMESPACE: &str = "outrigger-system";

fn kubeconfig_path() -> String {
    std::env::var("OUTRIGGER_E2E_KUBECONFIG").unwrap_or_else(|_| {
        panic!(
            "OUTRIGGER_E2E_KUBECONFIG is not set: {NEEDS_CLUSTER} (see operator/README.md, \
             \"Running the cluster suite\")"
        )
    })
}

async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read OUTRIGGER_E2E_KUBECONFIG={path}: {e}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Runs a tool (`helm`, `kubectl`) against the test cluster; panics with its output on failure.
fn tool(name: &str, args: &[&str]) -> String {
    let bin = std::env::var_os("OUTRIGGER_TOOLS")
        .map(|t| std::path::Path::new(&t).join("bin").join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| name.into());
    let out = Command::new(&bin)
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .current_dir(support::workspace_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

/// Extra `helm` arguments from `OUTRIGGER_E2E_HELM_ARGS` (image tags and the like).
fn helm_args() -> Vec<String> {
    std::env::var("OUTRIGGER_E2E_HELM_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
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

fn deployment(name: &str, replicas: i32, annotations: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": annotations },
                "spec": { "containers": [{ "name": "app", "image": "registry.k8s.io/pause:3.10" }] },
            },
        },
    }))
    .unwrap()
}

async fn pods_of(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
}

/// Step 1 of the README: install the chart (CRD included), then upgrade the CRD the way the
/// README says (Helm never upgrades CRDs) and the release with `--reuse-values`.
fn install_and_upgrade() {
    let mut install = vec![
        "upgrade",
        "--install",
        "outrigger",
        "charts/outrigger",
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ];
    let extra = helm_args();
    install.extend(extra.iter().map(String::as_str));
    tool("helm", &install);
    tool(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "charts/outrigger/crds/",
        ],
    );
    tool(
        "helm",
        &[
            "upgrade",
            "outrigger",
            "charts/outrigger",
            "-n",
            RELEASE_NAMESPACE,
            "--reuse-values",
            "--wait",
            "--timeout",
            "5m",
        ],
    );
    tool(
        "kubectl",
        &[
            "-n",
            RELEASE_NAMESPACE,
            "rollout",
            "status",
            "deployment/outrigger-operator",
            "--timeout=180s",
        ],
    );
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn readme_flow() {
    let client = client().await;
    install_and_upgrade();

    // The upgraded CRD is served: its printer columns include the rollout.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crds.get("runtimeconfigs.outrigger.dev").await.unwrap();
    let columns: Vec<String> = crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert!(columns.iter().any(|c| c == "Rolled out"), "{columns:?}");

    let ns = TestNamespace::create(&client, json!({ "outrigger.dev/inject": "enabled" })).await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);

    // RuntimeConfig → ConfigMap, Ready=True.
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
    let hash = outrigger_config::config_hash(&created.spec);
    eventually("Ready=True", || async {
        let rc = rcs.get("default").await.unwrap();
        rc.status.filter(|s| {
            s.config_hash.as_deref() == Some(hash.as_str())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await;

    // A Deployment in the labelled namespace: every pod injected, stamped with the config hash,
    // and counted in status.rollout.
    deployments
        .create(&PostParams::default(), &deployment("web", 2, json!({})))
        .await
        .unwrap();
    let injected = eventually("two injected pods", || async {
        let list = pods_of(&pods, "web").await;
        (list.len() == 2).then_some(list)
    })
    .await;
    for pod in &injected {
        let meta = &pod.metadata;
        assert_eq!(
            meta.labels.as_ref().unwrap()["outrigger.dev/injected"],
            "true"
        );
        assert_eq!(
            meta.annotations.as_ref().unwrap()["outrigger.dev/config-hash"],
            hash
        );
        let spec = pod.spec.as_ref().unwrap();
        let sidecar = spec
            .init_containers
            .iter()
            .flatten()
            .find(|c| c.name == "outrigger")
            .expect("the native sidecar");
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    }
    eventually("status.rollout of two updated pods", || async {
        let rc = rcs.get("default").await.unwrap();
        let s = rc.status?;
        let r = s.rollout?;
        let rolled_out = s
            .conditions
            .iter()
            .any(|c| c.type_ == "RolledOut" && c.status == "True");
        (r.pods == 2 && r.updated == 2 && r.stale == 0 && rolled_out).then_some(())
    })
    .await;

    // A Deployment naming a RuntimeConfig that does not exist: its pods start without the
    // sidecar, say so in an annotation, and the ReplicaSet gets an Event.
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "orphan",
                1,
                json!({ "outrigger.dev/config": "no-such-config" }),
            ),
        )
        .await
        .unwrap();
    let orphan = eventually("the orphan pod", || async {
        pods_of(&pods, "orphan").await.into_iter().next()
    })
    .await;
    let mark = &orphan.metadata.annotations.as_ref().unwrap()["outrigger.dev/injection"];
    assert!(
        mark.starts_with("skipped: RuntimeConfig") && mark.contains("no-such-config"),
        "{mark}"
    );
    assert!(
        orphan
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .iter()
            .flatten()
            .all(|c| c.name != "outrigger")
    );
    let owner = orphan.metadata.owner_references.as_ref().unwrap()[0]
        .name
        .clone();
    eventually("an InjectionSkipped Event on the ReplicaSet", || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.into_iter().find(|e| {
            e.reason.as_deref() == Some("InjectionSkipped")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(owner.as_str())
        })
    })
    .await;

    // inject-policy: required turns that skip into a denial: no pod is created.
    deployments
        .create(
            &PostParams::default(),
            &deployment(
                "strict",
                1,
                json!({ "outrigger.dev/config": "no-such-config", "outrigger.dev/inject-policy": "required" }),
            ),
        )
        .await
        .unwrap();
    let failed = eventually("a FailedCreate Event naming the policy", || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.into_iter().find(|e| {
            e.reason.as_deref() == Some("FailedCreate")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("outrigger.dev/inject-policy: required"))
        })
    })
    .await;
    assert!(failed.note.unwrap().contains("no-such-config"));
    assert!(pods_of(&pods, "strict").await.is_empty());

    // The validating webhook refuses what the sidecar would refuse, naming the object.
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
    let kube::Error::Api(status) = &err else {
        panic!("not an API error: {err}")
    };
    let details = status.details.as_ref().expect("details");
    assert_eq!(
        (details.kind.as_str(), details.name.as_str()),
        ("RuntimeConfig", "default")
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

    // Opting out still works in a labelled namespace.
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
