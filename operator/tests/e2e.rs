//! Cluster tests: what a user does and sees, on a real cluster with real pods — the chart
//! installed with `helm`, the operator serving both webhooks from its pod, injected pods whose
//! native sidecar starts first, calls from inside an app container through its sidecar to
//! another pod, a changed RuntimeConfig reaching running sidecars, rollout status, drain on pod
//! deletion, and leader failover between operator replicas.
//!
//! They are `#[ignore]`d, so a plain `cargo test` lists them as ignored (with the reason) instead
//! of passing without doing anything. `scripts/test.sh` runs them on the Kubernetes kit beside
//! the repo (`scripts/cluster-suite.sh`): it starts a cluster with a node, builds the images from
//! the binaries just built and runs
//!
//! ```sh
//! OUTRIGGER_E2E_KUBECONFIG=… OUTRIGGER_E2E_OPERATOR_IMAGE=test/outrigger-operator:e2e \
//! OUTRIGGER_E2E_SIDECAR_IMAGE=test/outrigger:e2e \
//!   cargo test -p outrigger-operator --test e2e -- --include-ignored --test-threads=1
//! ```
//!
//! The images are used as they are on the node (`pullPolicy: Never`); without the image
//! variables the chart's default images are pulled. The app and upstream pods run
//! `localhost/busybox:1` (the kit's; set `OUTRIGGER_E2E_BUSYBOX_IMAGE` elsewhere). Pods are
//! reached by pod IP: the kit has no kube-proxy and no DNS. `--ignored` without
//! `OUTRIGGER_E2E_KUBECONFIG` fails, naming it. operator/README.md shows kind and k3d.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        coordination::v1::Lease,
        core::v1::{ConfigMap, Namespace, Pod},
        events::v1::Event,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
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

fn tool_command(name: &str) -> Command {
    let bin = std::env::var_os("OUTRIGGER_TOOLS")
        .map(|t| std::path::Path::new(&t).join("bin").join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| name.into());
    let mut cmd = Command::new(bin);
    cmd.env("KUBECONFIG", kubeconfig_path())
        .current_dir(support::workspace_root());
    cmd
}

/// Runs a tool (`helm`, `kubectl`) against the test cluster: whether it succeeded, and its
/// stdout followed by its stderr.
fn try_tool(name: &str, args: &[&str]) -> (bool, String) {
    let out = tool_command(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// [`try_tool`], panicking with the output on failure.
fn tool(name: &str, args: &[&str]) -> String {
    let (ok, text) = try_tool(name, args);
    assert!(ok, "{name} {args:?} failed:\n{text}");
    text
}

/// `repository` and `tag` of an image named by variable `var` (`repo:tag`), if set.
fn local_image(var: &str) -> Option<(String, String)> {
    let image = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    let (repo, tag) = image
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{var}={image} is not REPOSITORY:TAG"));
    Some((repo.to_owned(), tag.to_owned()))
}

/// The `helm` arguments that point the chart at this cluster: the local images (used as they
/// are on the node), where pods reach the API server (the kit has no kube-proxy, so the
/// `kubernetes` Service leads nowhere), and any extra from `OUTRIGGER_E2E_HELM_ARGS`.
fn helm_args() -> Vec<String> {
    let mut args = Vec::new();
    for (var, key, policy) in [
        (
            "OUTRIGGER_E2E_OPERATOR_IMAGE",
            "operator.image",
            "operator.image.pullPolicy=Never",
        ),
        (
            "OUTRIGGER_E2E_SIDECAR_IMAGE",
            "sidecar.image",
            "sidecar.image.pullPolicy=Never",
        ),
    ] {
        if let Some((repo, tag)) = local_image(var) {
            for set in [
                format!("{key}.registry="),
                format!("{key}.repository={repo}"),
                format!("{key}.tag={tag}"),
                policy.to_owned(),
            ] {
                args.extend(["--set-string".to_owned(), set]);
            }
        }
    }
    if let (Ok(host), Ok(port)) = (
        std::env::var("OUTRIGGER_KUBE_POD_API_HOST"),
        std::env::var("OUTRIGGER_KUBE_POD_API_PORT"),
    ) {
        for (i, (name, value)) in [
            ("KUBERNETES_SERVICE_HOST", host),
            ("KUBERNETES_SERVICE_PORT", port),
        ]
        .into_iter()
        .enumerate()
        {
            args.extend([
                "--set-string".to_owned(),
                format!("operator.extraEnv[{i}].name={name}"),
                "--set-string".to_owned(),
                format!("operator.extraEnv[{i}].value={value}"),
            ]);
        }
    }
    args.extend(
        std::env::var("OUTRIGGER_E2E_HELM_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned),
    );
    args
}

fn busybox_image() -> String {
    std::env::var("OUTRIGGER_E2E_BUSYBOX_IMAGE").unwrap_or_else(|_| "localhost/busybox:1".into())
}

/// Polls `check` every second until it answers, for at most `limit`.
async fn eventually_within<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_within(what, Duration::from_secs(120), check).await
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

/// An app that stays up and, like a well-behaved app, finishes its work (here: 5 s) when told
/// to stop.
const APP_SCRIPT: &str = "trap 'sleep 5; exit 0' TERM; while true; do sleep 1; done";

fn deployment(name: &str, replicas: i32, annotations: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name }, "annotations": annotations },
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [{
                        "name": "app", "image": busybox_image(),
                        "command": ["sh", "-c", APP_SCRIPT],
                    }],
                },
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

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a running pod has an IP")
}

/// `n` Ready pods of `app` (no terminating ones).
async fn ready_pods(pods: &Api<Pod>, app: &str, n: usize) -> Vec<Pod> {
    eventually_within(
        &format!("{n} Ready pod(s) of {app}"),
        Duration::from_secs(180),
        || async {
            let list: Vec<Pod> = pods_of(pods, app)
                .await
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (list.len() == n && list.iter().all(is_ready)).then_some(list)
        },
    )
    .await
}

/// One HTTP/1.0 request made from inside `container` of a pod with busybox `nc` (the kit's
/// busybox `wget` crashes): the status code and the body. `hold` keeps the request side open
/// that long, so the answer can arrive.
fn http_from_pod(
    namespace: &str,
    pod: &str,
    container: &str,
    target: &str,
    path: &str,
    hold: u32,
) -> (u16, String) {
    let (host, port) = target.rsplit_once(':').unwrap();
    let script = format!(
        "(printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep {hold}) | nc {host} {port}"
    );
    let (_, out) = try_tool(
        "kubectl",
        &[
            "exec", "-n", namespace, pod, "-c", container, "--", "sh", "-c", &script,
        ],
    );
    parse_http(&out)
}

fn parse_http(out: &str) -> (u16, String) {
    let status = out
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_else(|| out.to_owned());
    (status, body)
}

/// The hash of the config the sidecar of `pod` runs, read from inside the pod (`/config_dump`
/// answers loopback peers only).
fn hash_in_pod(namespace: &str, pod: &str) -> Option<String> {
    let (status, body) = http_from_pod(namespace, pod, "app", "127.0.0.1:34999", "/config_dump", 1);
    if status != 200 {
        return None;
    }
    let dump: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    dump["hash"].as_str().map(str::to_owned)
}

async fn status_hash(rcs: &Api<RuntimeConfig>, name: &str) -> Option<String> {
    rcs.get(name).await.ok()?.status?.config_hash
}

/// Waits for `status.rollout` to be `(pods, updated, stale)` with `RolledOut` as given.
async fn rollout_is(
    rcs: &Api<RuntimeConfig>,
    name: &str,
    want: (i32, i32, i32),
    rolled_out: &str,
    limit: Duration,
) {
    eventually_within(
        &format!("status.rollout {want:?} and RolledOut={rolled_out}"),
        limit,
        || async {
            let s = rcs.get(name).await.ok()?.status?;
            let r = s.rollout?;
            let cond = s
                .conditions
                .iter()
                .any(|c| c.type_ == "RolledOut" && c.status == rolled_out);
            ((r.pods, r.updated, r.stale) == want && cond).then_some(())
        },
    )
    .await;
}

/// Step 1 of the README: install the chart (CRD included), then upgrade the CRD the way the
/// README says (Helm never upgrades CRDs) and the release with `--reuse-values`. Once per run:
/// every test shares the release.
fn installed() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(install_and_upgrade);
}

/// `helm upgrade` of the release with its values kept, plus `extra`, waiting for it.
fn upgrade_release(extra: &[&str]) {
    let mut args = vec![
        "upgrade",
        "outrigger",
        "charts/outrigger",
        "-n",
        RELEASE_NAMESPACE,
        "--reuse-values",
        "--wait",
        "--timeout",
        "5m",
    ];
    args.extend_from_slice(extra);
    tool("helm", &args);
}

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
    let mut extra = helm_args();
    extra.extend([
        "--set-string".to_owned(),
        format!("identity.endpoint={}", operator_endpoint_relay()),
    ]);
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
    upgrade_release(&[]);
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

/// A client, the release installed, and a fresh namespace labelled for injection.
async fn injected_namespace() -> (Client, TestNamespace) {
    let client = client().await;
    installed();
    let ns = TestNamespace::create(&client, json!({ "outrigger.dev/inject": "enabled" })).await;
    (client, ns)
}

async fn operator_pods(client: &Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    pods.list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn readme_flow() {
    let client = client().await;
    installed();

    // The operator runs and is Ready in its pod: it serves both webhooks from there (every
    // admission below goes through it).
    let operators = operator_pods(&client).await;
    assert!(!operators.is_empty());
    assert!(operators.iter().all(is_ready), "operator pods not Ready");

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
            &runtime_config("default", "127.0.0.1:8080"),
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
    // Running and Ready with the native sidecar started before the app, counted in
    // status.rollout.
    deployments
        .create(&PostParams::default(), &deployment("web", 2, json!({})))
        .await
        .unwrap();
    let running = ready_pods(&pods, "web", 2).await;
    for pod in &running {
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
        let status = pod.status.as_ref().unwrap();
        let sidecar = status
            .init_container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == "outrigger")
            .expect("the sidecar's status");
        assert!(sidecar.ready, "the sidecar is ready: {sidecar:?}");
        let app = status
            .container_statuses
            .iter()
            .flatten()
            .find(|c| c.name == "app")
            .expect("the app's status");
        let started = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
            c.state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone())
                .expect("running")
                .0
        };
        assert!(
            started(sidecar) <= started(app),
            "the sidecar started before the app"
        );
        assert_eq!(sidecar.restart_count, 0, "the sidecar never restarted");
    }
    rollout_is(&rcs, "default", (2, 2, 0), "True", Duration::from_secs(60)).await;

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
        "spec": { "containers": [{ "name": "app", "image": busybox_image(), "command": ["sleep", "1"] }] },
    }))
    .unwrap();
    let plain = pods
        .create(&PostParams::default(), &opted_out)
        .await
        .unwrap();
    assert!(plain.spec.unwrap().init_containers.is_none());
    ns.delete().await;
}

/// The upstream: busybox `httpd` serving `/hello.txt` and a CGI `/cgi-bin/slow` that answers
/// after 3 s.
const UPSTREAM_SCRIPT: &str = "mkdir -p /tmp/www/cgi-bin && echo hello-from-upstream > /tmp/www/hello.txt && \
     printf '#!/bin/sh\\nsleep 3\\nprintf \"Content-Type: text/plain\\\\r\\\\n\\\\r\\\\nslow-answer\\\\n\"\\n' > /tmp/www/cgi-bin/slow && \
     chmod +x /tmp/www/cgi-bin/slow && exec httpd -f -p 8080 -h /tmp/www";

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn sidecars_in_real_pods() {
    let (client, ns) = injected_namespace().await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);

    // An upstream pod without the sidecar, addressed by pod IP.
    let upstream = serde_json::from_value(json!({
        "metadata": { "name": "upstream", "labels": { "app": "upstream" },
                      "annotations": { "outrigger.dev/inject": "false" } },
        "spec": { "containers": [{ "name": "httpd", "image": busybox_image(),
                                   "command": ["sh", "-c", UPSTREAM_SCRIPT] }] },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &upstream)
        .await
        .unwrap();
    let upstream = ready_pods(&pods, "upstream", 1).await.remove(0);
    let upstream_ip = pod_ip(&upstream);

    rcs.create(
        &PostParams::default(),
        &runtime_config("default", &format!("{upstream_ip}:8080")),
    )
    .await
    .unwrap();
    // The app also asks for the gRPC API on a unix socket.
    deployments
        .create(
            &PostParams::default(),
            &deployment("app", 1, json!({ "outrigger.dev/api-socket": "true" })),
        )
        .await
        .unwrap();
    let app = ready_pods(&pods, "app", 1).await.remove(0);
    let app_name = app.metadata.name.clone().unwrap();
    let app_uid = app.metadata.uid.clone().unwrap();

    // The socket is there, from inside the app container, with the variable the SDKs dial it by;
    // the sidecar was told to serve it and how many worker threads to run.
    let out = tool(
        "kubectl",
        &[
            "exec",
            "-n",
            &ns.name,
            &app_name,
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "test -S /var/run/outrigger/api/grpc.sock && echo \"$DAPR_GRPC_ENDPOINT\" \
             && ls -ln /var/run/outrigger/api/grpc.sock",
        ],
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("unix:///var/run/outrigger/api/grpc.sock"),
        "DAPR_GRPC_ENDPOINT in the app container:\n{out}"
    );
    eprintln!(
        "e2e: the API socket seen from the app container: {}",
        lines.next().unwrap_or_default()
    );
    let sidecar_args = app
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "outrigger")
        .and_then(|c| c.args.clone())
        .expect("a native sidecar with args");
    assert!(
        sidecar_args.contains(&"--grpc-socket=/var/run/outrigger/api/grpc.sock".to_owned()),
        "{sidecar_args:?}"
    );
    let threads: Vec<u32> = sidecar_args
        .iter()
        .filter_map(|a| a.strip_prefix("--threads="))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(
        threads.len() == 1 && threads[0] >= 1,
        "one --threads=N: {sidecar_args:?}"
    );

    // A call from inside the app container through the sidecar's Dapr HTTP API to the upstream.
    let (status, body) = http_from_pod(
        &ns.name,
        &app_name,
        "app",
        "127.0.0.1:3500",
        "/v1.0/invoke/upstream/method/hello.txt",
        2,
    );
    assert_eq!((status, body.trim()), (200, "hello-from-upstream"));

    // One hash everywhere: the status, the pod's stamp and what the sidecar reports (the
    // injector's --admin-address does not change it).
    let first = eventually("status.configHash", || status_hash(&rcs, "default")).await;
    assert_eq!(
        app.metadata.annotations.as_ref().unwrap()["outrigger.dev/config-hash"],
        first
    );
    assert_eq!(
        hash_in_pod(&ns.name, &app_name).as_deref(),
        Some(first.as_str())
    );
    rollout_is(&rcs, "default", (1, 1, 0), "True", Duration::from_secs(60)).await;

    // The admin port from another pod: probes and metrics yes, the config dump no.
    let app_admin = format!("{}:34999", pod_ip(&app));
    let (status, _) = http_from_pod(&ns.name, "upstream", "httpd", &app_admin, "/healthz", 1);
    assert_eq!(status, 200, "/healthz from another pod");
    let (status, _) = http_from_pod(&ns.name, "upstream", "httpd", &app_admin, "/config_dump", 1);
    assert_eq!(status, 403, "/config_dump from another pod");

    // A changed RuntimeConfig reaches the running sidecar without a restart: the hash it reports
    // turns into the new status.configHash, and the rollout counts it.
    let applied = Instant::now();
    rcs.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "rpc": { "timeoutMs": 4000 } } })),
    )
    .await
    .unwrap();
    let second = eventually("the new status.configHash", || async {
        status_hash(&rcs, "default").await.filter(|h| *h != first)
    })
    .await;
    eventually_within(
        "the sidecar serving the new config",
        Duration::from_secs(180),
        || async {
            (hash_in_pod(&ns.name, &app_name).as_deref() == Some(second.as_str())).then_some(())
        },
    )
    .await;
    let propagation = applied.elapsed();
    eprintln!(
        "e2e measurement: config propagation from the RuntimeConfig change to the sidecar serving it: {:.1} s",
        propagation.as_secs_f64()
    );
    rollout_is(&rcs, "default", (1, 1, 0), "True", Duration::from_secs(30)).await;
    let same = pods.get(&app_name).await.unwrap();
    assert_eq!(
        same.metadata.uid.as_deref(),
        Some(app_uid.as_str()),
        "no restart"
    );

    // The pod deleted while the app has a call in flight: the app finishes it (3 s upstream),
    // then the sidecar drains and exits, all within the grace period.
    let mut logs = tool_command("kubectl")
        .args(["logs", "-f", "-n", &ns.name, &app_name, "-c", "outrigger"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let in_flight = {
        let script = "(printf 'GET /v1.0/invoke/upstream/method/cgi-bin/slow HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'; sleep 5) | nc 127.0.0.1 3500";
        tool_command("kubectl")
            .args([
                "exec", "-n", &ns.name, &app_name, "-c", "app", "--", "sh", "-c", script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deleted = Instant::now();
    pods.delete(&app_name, &DeleteParams::default())
        .await
        .unwrap();
    let answer = tokio::task::spawn_blocking(move || in_flight.wait_with_output().unwrap())
        .await
        .unwrap();
    let (status, body) = parse_http(&String::from_utf8_lossy(&answer.stdout));
    assert_eq!(
        (status, body.trim()),
        (200, "slow-answer"),
        "the in-flight call was answered: {}",
        String::from_utf8_lossy(&answer.stderr)
    );
    eventually_within("the pod gone", Duration::from_secs(40), || async {
        pods.get_opt(&app_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let gone = deleted.elapsed();
    eprintln!(
        "e2e measurement: pod deleted with a call in flight, gone after {:.1} s (grace period 30 s)",
        gone.as_secs_f64()
    );
    assert!(
        gone < Duration::from_secs(30),
        "within the grace period: {gone:?}"
    );
    let logs = tokio::task::spawn_blocking(move || {
        let _ = logs.kill();
        logs.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("signal received; draining") && logs.contains("outrigger stopped"),
        "the sidecar drained and stopped:\n{logs}"
    );

    // The Deployment's replacement pod runs the current config from its start.
    let replacement = ready_pods(&pods, "app", 1).await.remove(0);
    let replacement = replacement.metadata.name.unwrap();
    assert_ne!(replacement, app_name);
    assert_eq!(
        hash_in_pod(&ns.name, &replacement).as_deref(),
        Some(second.as_str())
    );
    rollout_is(&rcs, "default", (1, 1, 0), "True", Duration::from_secs(60)).await;
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn a_runtime_config_applied_with_its_workload() {
    // `kubectl apply -f dir/`: the RuntimeConfig and the Deployment at once, so the pods are
    // admitted before the controller wrote the ConfigMap.
    let (client, ns) = injected_namespace().await;
    let dir = tempfile::tempdir().unwrap();
    let rc = runtime_config("default", "127.0.0.1:8080");
    std::fs::write(
        dir.path().join("0-runtimeconfig.json"),
        serde_json::to_vec(&rc).unwrap(),
    )
    .unwrap();
    let mut deploy = serde_json::to_value(deployment("web", 2, json!({}))).unwrap();
    deploy["apiVersion"] = "apps/v1".into();
    deploy["kind"] = "Deployment".into();
    std::fs::write(
        dir.path().join("1-deployment.json"),
        serde_json::to_vec(&deploy).unwrap(),
    )
    .unwrap();
    tool(
        "kubectl",
        &["apply", "-n", &ns.name, "-f", dir.path().to_str().unwrap()],
    );
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let hash = outrigger_config::config_hash(&rc.spec);
    for pod in pods_of(&pods, "web").await {
        let stamp = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("outrigger.dev/config-hash"))
            .cloned();
        assert_eq!(
            stamp.as_deref(),
            Some(hash.as_str()),
            "{:?}",
            pod.metadata.name
        );
    }
    ready_pods(&pods, "web", 2).await;
    rollout_is(&rcs, "default", (2, 2, 0), "True", Duration::from_secs(60)).await;
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn two_operator_replicas_hand_the_lease_over() {
    let client = client().await;
    installed();
    upgrade_release(&["--set", "operator.replicas=2"]);
    let leases: Api<Lease> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let holder_of = || async {
        leases
            .get_opt("outrigger-operator")
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty())
    };
    // Two Ready replicas of the same pod template: the upgrade may roll the pods (leader election
    // turns on with two replicas), and a pod of the old template is on its way out.
    let template = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash").cloned())
    };
    let operators = eventually("two Ready operator pods of one template", || async {
        let list = operator_pods(&client).await;
        let one_template = list.windows(2).all(|w| template(&w[0]) == template(&w[1]));
        (list.len() == 2 && one_template && list.iter().all(is_ready)).then_some(list)
    })
    .await;
    let names: Vec<String> = operators
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    let leader = eventually("a Lease holder among the replicas", || async {
        holder_of().await.filter(|h| names.contains(h))
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let deleted = Instant::now();
    pods.delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    // The standby normally wins (it retries every 2 s); the Deployment's replacement pod may,
    // if it is quicker. Either way a running replica other than the deleted one holds it.
    let successor = eventually_within(
        "another replica taking the Lease",
        Duration::from_secs(60),
        || async {
            let holder = holder_of().await.filter(|h| *h != leader)?;
            let running = operator_pods(&client).await;
            running
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(holder.as_str()))
                .then_some(holder)
        },
    )
    .await;
    eprintln!(
        "e2e measurement: Lease taken over by {successor} {:.1} s after the leader's pod was deleted",
        deleted.elapsed().as_secs_f64()
    );

    // The new leader runs the controller: a new RuntimeConfig gets its ConfigMap.
    let ns = TestNamespace::create(&client, json!({})).await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    rcs.create(
        &PostParams::default(),
        &runtime_config("after-failover", "127.0.0.1:8080"),
    )
    .await
    .unwrap();
    eventually("the ConfigMap written by the new leader", || async {
        cms.get_opt("outrigger-after-failover").await.unwrap()
    })
    .await;
    ns.delete().await;
}

/// A ServiceAccount, so that a pod's SPIFFE id names it.
async fn service_account(client: &Client, namespace: &str, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap(),
    )
    .await
    .unwrap();
}

/// The two meshed apps of the mutual TLS tests, running: `users` (ServiceAccount `users`)
/// serves its app on its sidecar's inbound listener, mutual TLS only; `web` calls it through
/// its own sidecar, which learns `users`' pods from the operator's discovery endpoint and
/// verifies their SPIFFE id.
struct MeshedApps {
    users_name: String,
    users_id: String,
    users_ip: String,
    web_name: String,
}

/// Starts [`MeshedApps`] in `ns` and checks a call from `web`'s app container goes through
/// both sidecars to `users`' app, that `users`' sidecar holds its identity (from `source`:
/// `file` for Pod Certificates, `csr` for the identity endpoint), took a mutual TLS handshake
/// and refuses plaintext.
async fn meshed_apps(client: &Client, ns: &TestNamespace, source: &str) -> MeshedApps {
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    service_account(client, &ns.name, "users").await;
    service_account(client, &ns.name, "web").await;
    let users_id = format!("spiffe://cluster.local/ns/{}/sa/users", ns.name);

    let callee: RuntimeConfig = serde_json::from_value(json!({
        "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig",
        "metadata": { "name": "callee" },
        "spec": {
            "rpc": { "channels": [{ "listener": "egress" }] },
            "inbound": { "tls": { "mode": "strict" } },
            "listeners": [{ "name": "egress", "routeTable": "none" }],
            "routeTables": [{ "name": "none", "routes": [] }],
        },
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &callee).await.unwrap();
    let mut users = serde_json::to_value(deployment(
        "users",
        1,
        json!({ "outrigger.dev/config": "callee", "outrigger.dev/app-port": "8080",
                "outrigger.dev/app-protocol": "http" }),
    ))
    .unwrap();
    let template = &mut users["spec"]["template"]["spec"];
    template["serviceAccountName"] = "users".into();
    template["containers"][0]["command"] = json!(["sh", "-c", UPSTREAM_SCRIPT]);
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(users).unwrap(),
        )
        .await
        .unwrap();
    let users_pod = ready_pods(&pods, "users", 1).await.remove(0);
    let users_name = users_pod.metadata.name.clone().unwrap();
    let users_ip = pod_ip(&users_pod);

    let caller: RuntimeConfig = serde_json::from_value(json!({
        "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig",
        "metadata": { "name": "caller" },
        "spec": {
            "rpc": { "channels": [{ "listener": "egress" }] },
            "listeners": [{ "name": "egress", "routeTable": "out" }],
            "routeTables": [{ "name": "out", "routes": [{ "cluster": "users" }] }],
            // The operator pushes users' pods (the kit has no cluster DNS to resolve them).
            "clusters": [{
                "name": "users",
                "discovery": { "app": "users", "namespace": ns.name },
                "tls": { "mode": "mesh", "identities": [users_id] },
            }],
        },
    }))
    .unwrap();
    rcs.create(&PostParams::default(), &caller).await.unwrap();
    let mut web = serde_json::to_value(deployment(
        "web",
        1,
        json!({ "outrigger.dev/config": "caller" }),
    ))
    .unwrap();
    web["spec"]["template"]["spec"]["serviceAccountName"] = "web".into();
    deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(web).unwrap(),
        )
        .await
        .unwrap();
    let web_pod = ready_pods(&pods, "web", 1).await.remove(0);
    let web_name = web_pod.metadata.name.clone().unwrap();

    // From inside the caller's app container, through both sidecars, to the callee's app.
    let (status, body) = http_from_pod(
        &ns.name,
        &web_name,
        "app",
        "127.0.0.1:3500",
        "/v1.0/invoke/users/method/hello.txt",
        2,
    );
    assert_eq!((status, body.trim()), (200, "hello-from-upstream"));

    // The callee's sidecar holds its identity and took a mutual TLS handshake; plaintext to its
    // inbound port is refused.
    let (_, dump) = http_from_pod(
        &ns.name,
        &users_name,
        "app",
        "127.0.0.1:34999",
        "/config_dump",
        1,
    );
    let dump: serde_json::Value = serde_json::from_str(dump.trim()).unwrap();
    assert_eq!(dump["identity"]["spiffeId"], users_id.as_str(), "{dump}");
    assert_eq!(dump["identity"]["source"], source, "{dump}");
    let (_, metrics) = http_from_pod(
        &ns.name,
        &users_name,
        "app",
        "127.0.0.1:34999",
        "/metrics",
        1,
    );
    assert!(
        metrics.contains("outrigger_tls_handshakes_total{direction=\"inbound\",result=\"ok\"}"),
        "{metrics}"
    );
    let (status, _) = http_from_pod(
        &ns.name,
        &web_name,
        "app",
        &format!("{users_ip}:34906"),
        "/hello.txt",
        1,
    );
    assert_eq!(status, 0, "plaintext refused by a strict inbound listener");
    MeshedApps {
        users_name,
        users_id,
        users_ip,
        web_name,
    }
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn two_injected_apps_talk_over_mutual_tls() {
    // The operator in its pod signs the sidecars' Pod Certificates and publishes the trust
    // bundle; the callee's sidecar serves its app on the inbound listener, mTLS only; the
    // caller's sidecar reaches it by pod IP, verifying its SPIFFE id.
    let (client, ns) = injected_namespace().await;
    let MeshedApps {
        users_name,
        users_id,
        users_ip,
        web_name,
    } = meshed_apps(&client, &ns, "file").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    eprintln!(
        "e2e measurement: {users_name} ({users_id}) served {web_name} over mutual TLS with a Pod Certificate from the operator"
    );

    // Pod churn reaches the caller pushed: the users pod replaced, the caller's sidecar drops
    // its address when the EndpointSlice marks it terminating and takes the new one's when it
    // is ready.
    let old_pod = users_name.clone();
    let deleted_at = k8s_openapi::jiff::Timestamp::now();
    pods.delete(&old_pod, &DeleteParams::default())
        .await
        .unwrap();
    let dropped = eventually("the caller's sidecar dropping the old pod", || async {
        discovered_after(&ns.name, &web_name, deleted_at, |pods| {
            !pods.contains(&users_ip.as_str())
        })
    })
    .await;
    let new_pod = ready_pods(&pods, "users", 1).await.remove(0);
    let new_ip = pod_ip(&new_pod);
    let added = eventually("the caller's sidecar taking the new pod", || async {
        discovered_after(&ns.name, &web_name, deleted_at, |pods| {
            pods.contains(&new_ip.as_str())
        })
    })
    .await;
    let ready_at = new_pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap();
    eprintln!(
        "e2e measurement: discovery push: old pod dropped {:.3} s after its deletion; new pod taken {:.3} s after it turned Ready (second-granular)",
        (dropped - deleted_at).get_milliseconds() as f64 / 1000.0,
        (added - ready_at).get_milliseconds() as f64 / 1000.0,
    );
    let (status, body) = http_from_pod(
        &ns.name,
        &web_name,
        "app",
        "127.0.0.1:3500",
        "/v1.0/invoke/users/method/hello.txt",
        2,
    );
    assert_eq!(
        (status, body.trim()),
        (200, "hello-from-upstream"),
        "through the new pod"
    );

    // The operator keeps the headless Service `users-outrigger`; its EndpointSlice lists the
    // pod on the inbound port. It goes with the app's last pod.
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &ns.name);
    let svc = eventually("the Service users-outrigger", || async {
        services.get_opt("users-outrigger").await.unwrap()
    })
    .await;
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(
        spec.selector.unwrap()["outrigger.dev/app"],
        "users",
        "the label the injector stamped"
    );
    assert_eq!(spec.ports.unwrap()[0].port, 34906);
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), &ns.name);
    eventually("an EndpointSlice with the users pod", || async {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=users-outrigger"))
            .await
            .unwrap();
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .any(|e| e.addresses.contains(&new_ip))
            .then_some(())
    })
    .await;
    deployments
        .delete("users", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the Service gone with the app's last pod", || async {
        let gone = services.get_opt("users-outrigger").await.unwrap().is_none();
        (gone && pods_of(&pods, "users").await.is_empty()).then_some(())
    })
    .await;
    ns.delete().await;
}

/// When the sidecar of `pod` first logged pods of a discovered app that satisfy `wanted`, after
/// `since` (the kubelet's timestamps of its log lines).
fn discovered_after(
    namespace: &str,
    pod: &str,
    since: k8s_openapi::jiff::Timestamp,
    wanted: impl Fn(&[&str]) -> bool,
) -> Option<k8s_openapi::jiff::Timestamp> {
    let logs = tool(
        "kubectl",
        &[
            "logs",
            "-n",
            namespace,
            pod,
            "-c",
            "outrigger",
            "--timestamps",
        ],
    );
    logs.lines().find_map(|line| {
        let (at, rest) = line.split_once(' ')?;
        let at: k8s_openapi::jiff::Timestamp = at.parse().ok()?;
        let pods = rest.split_once("discovered pods")?.1;
        let list = pods.split_once("pods=[")?.1.split_once(']')?.0;
        let ips: Vec<&str> = list.split(", ").filter(|s| !s.is_empty()).collect();
        (at > since && wanted(&ips)).then_some(at)
    })
}

/// Where pods reach the operator's endpoint in this cluster: a relay in this process, bound to
/// the address pods reach the host at, forwarding each connection to a ready operator pod's
/// port 9444 (the kit has neither cluster DNS nor kube-proxy, so the Service name the injector
/// gives sidecars by default leads nowhere from a pod). Bytes pass through unchanged: TLS is
/// between the sidecar and the operator. It runs on a thread of its own for the whole run,
/// since every test has its own async runtime.
fn operator_endpoint_relay() -> &'static str {
    static RELAY: OnceLock<String> = OnceLock::new();
    RELAY.get_or_init(|| {
        let host = std::env::var("OUTRIGGER_KUBE_POD_API_HOST")
            .expect("OUTRIGGER_KUBE_POD_API_HOST: where pods reach this host");
        let listener = std::net::TcpListener::bind((host.as_str(), 0)).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let client = client().await;
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let client = client.clone();
                    tokio::spawn(async move {
                        let Some(target) = identity_endpoint_of_operator(&client).await else {
                            return;
                        };
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
        });
        address
    })
}

/// `ip:9444` of a ready operator pod that is not being deleted.
async fn identity_endpoint_of_operator(client: &Client) -> Option<String> {
    operator_pods(client)
        .await
        .iter()
        .find(|p| is_ready(p))
        .map(|p| format!("{}:9444", pod_ip(p)))
}

/// Puts the release back on Pod Certificates when the test ends, passed or not.
struct BackToPodCertificates;

impl Drop for BackToPodCertificates {
    fn drop(&mut self) {
        upgrade_release(&["--set", "identity.issuance=auto"]);
    }
}

/// A token of ServiceAccount `sa` from the TokenRequest API: for `audience`, bound to `pod`
/// (name and UID) when given.
async fn token_for(
    client: &Client,
    namespace: &str,
    sa: &str,
    audience: &str,
    pod: Option<&Pod>,
) -> String {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    let mut spec = json!({ "audiences": [audience], "expirationSeconds": 600 });
    if let Some(pod) = pod {
        spec["boundObjectRef"] = json!({ "kind": "Pod", "apiVersion": "v1",
            "name": pod.metadata.name, "uid": pod.metadata.uid });
    }
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({ "spec": spec })).unwrap();
    api.create_token_request(sa, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest's status")
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn sidecars_get_their_identity_from_the_identity_endpoint() {
    // Where Pod Certificates are not used (`identity.issuance=csr`), each sidecar makes its key,
    // sends a certificate signing request with its projected ServiceAccount token to the
    // operator's identity endpoint, and the operator signs after a real TokenReview.
    let client = client().await;
    installed();
    let _restore = BackToPodCertificates;
    upgrade_release(&["--set", "identity.issuance=csr"]);
    let ns = TestNamespace::create(&client, json!({ "outrigger.dev/inject": "enabled" })).await;
    let apps = meshed_apps(&client, &ns, "csr").await;
    eprintln!(
        "e2e measurement: {} ({}) served {} over mutual TLS with a certificate from the identity endpoint",
        apps.users_name, apps.users_id, apps.web_name
    );

    // The endpoint itself, called from here with tokens from the TokenRequest API: the real
    // TokenReview decides.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let web_pod = pods.get(&apps.web_name).await.unwrap();
    let endpoint = identity_endpoint_of_operator(&client).await.unwrap();
    let mesh_ca: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), RELEASE_NAMESPACE);
    let secret = mesh_ca.get("outrigger-mesh-ca").await.unwrap();
    let bundle = secret.data.unwrap()["ca.crt"].0.clone();
    let roots = outrigger_identity::parse_trust_bundle("ca.crt", &bundle)
        .unwrap()
        .roots;
    let dir = tempfile::tempdir().unwrap();
    let call = |token: String| {
        let path = dir.path().join("token");
        std::fs::write(&path, token).unwrap();
        outrigger_identity::CsrClient::new(
            &outrigger_config::OperatorEndpoint {
                endpoint: endpoint.clone(),
                server_name: Some(format!("outrigger-webhook.{RELEASE_NAMESPACE}.svc")),
                token_path: path.display().to_string(),
            },
            "cluster.local",
            outrigger_identity::provider(),
        )
        .unwrap()
    };
    let web_id = format!("spiffe://cluster.local/ns/{}/sa/web", ns.name);
    let aud = "identity.outrigger.dev";

    // web's token, bound to its pod: a certificate for web.
    let bound = token_for(&client, &ns.name, "web", aud, Some(&web_pod)).await;
    let issued = call(bound.clone()).certify(roots.clone()).await.unwrap();
    let creds = outrigger_identity::parse_credentials(
        "issued",
        &issued.bundle_pem,
        "cluster.local",
        &outrigger_identity::provider(),
    )
    .unwrap();
    assert_eq!(creds.id.as_str(), web_id);

    // The same token asking for users' identity.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        apps.users_id.as_str().try_into().unwrap(),
    )];
    let csr = params.serialize_request(&key).unwrap();
    let refused = |r: Result<_, outrigger_identity::OperatorError>| match r {
        Err(outrigger_identity::OperatorError::Refused { code, message, .. }) => (code, message),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, got a certificate"),
    };
    let (code, message) = refused(
        call(bound.clone())
            .send(roots.clone(), &bound, csr.der())
            .await
            .map(|_| ()),
    );
    assert_eq!(code, "PermissionDenied", "{message}");
    assert!(message.contains(&apps.users_id), "{message}");

    // A token bound to no pod, and a token for the API server's audience.
    let unbound = token_for(&client, &ns.name, "web", aud, None).await;
    let (code, message) = refused(call(unbound).certify(roots.clone()).await.map(|_| ()));
    assert_eq!(code, "PermissionDenied", "{message}");
    assert!(message.contains("bound to no pod"), "{message}");
    let other_audience = token_for(
        &client,
        &ns.name,
        "web",
        "https://kubernetes.default.svc",
        Some(&web_pod),
    )
    .await;
    let (code, message) = refused(call(other_audience).certify(roots).await.map(|_| ()));
    assert_eq!(code, "Unauthenticated", "{message}");
    eprintln!("e2e measurement: identity endpoint refusals: {message}");
    ns.delete().await;
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn the_webhook_rejects_a_bad_authorization_policy_listing_every_problem() {
    let client = client().await;
    installed();
    let ns = TestNamespace::create(&client, json!({})).await;
    let rcs: Api<RuntimeConfig> = Api::namespaced(client.clone(), &ns.name);

    let with_policy = |policy: serde_json::Value| {
        let mut rc = runtime_config("policy", "127.0.0.1:9");
        rc.spec.inbound = Some(serde_json::from_value(json!({ "authorization": policy })).unwrap());
        rc
    };
    let bad = with_policy(json!({
        "default": "deny",
        "rules": [
            { "name": "shop", "action": "allow", "from": { "namespaces": ["shop"] } },
            { "name": "shop", "action": "allow", "from": { "namespaces": ["shop"] } },
            { "name": "nobody", "action": "deny", "from": {} },
            { "name": "bad", "action": "deny", "from": { "identities": ["spiffe://a/*/b"] },
              "to": { "pathPrefix": "admin", "pathRegex": "(" } },
        ],
    }));
    let err = rcs
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the webhook refuses the policy");
    let message = err.to_string();
    for problem in [
        "inbound.authorization.rules[1].name: duplicate name \"shop\"",
        "inbound.authorization.rules[1]: shadowed by rules[0] (\"shop\"), an identical earlier rule",
        "inbound.authorization.rules[2].from: names no caller",
        "inbound.authorization.rules[3].from.identities[0]: \"spiffe://a/*/b\": `*` may only end an identity",
        "inbound.authorization.rules[3].to: at most one of path, pathPrefix, pathRegex",
        "inbound.authorization.rules[3].to.pathPrefix: must start with \"/\"",
        "inbound.authorization.rules[3].to.pathRegex: invalid regex",
    ] {
        assert!(message.contains(problem), "{problem:?} not in {message}");
    }
    let kube::Error::Api(status) = &err else {
        panic!("not an API error: {err}")
    };
    let causes = &status.details.as_ref().expect("details").causes;
    assert_eq!(causes.len(), 7, "every problem is a cause: {causes:?}");
    assert!(
        causes
            .iter()
            .any(|c| c.field == "spec.inbound.authorization.rules[2].from"),
        "{causes:?}"
    );
    assert!(
        rcs.get_opt("policy").await.unwrap().is_none(),
        "nothing was stored"
    );

    // An unknown matcher never reaches the webhook: strict field validation refuses it.
    let mut unknown = serde_json::to_value(with_policy(json!({
        "default": "allow",
        "rules": [{ "name": "a", "action": "deny", "from": { "namespaces": ["x"] } }],
    })))
    .unwrap();
    unknown["spec"]["inbound"]["authorization"]["rules"][0]["to"] =
        json!({ "grpcMethod": "/a.B/C" });
    let strict = PatchParams::apply("outrigger-e2e")
        .validation(kube::core::params::ValidationDirective::Strict);
    let err = rcs
        .patch("policy", &strict, &Patch::Apply(&unknown))
        .await
        .expect_err("an unknown field is refused");
    assert!(err.to_string().contains("grpcMethod"), "{err}");

    // The good policy is stored.
    let good = with_policy(json!({
        "default": "deny",
        "rules": [{ "name": "shop", "action": "allow", "from": { "namespaces": ["shop"] },
                    "to": { "pathPrefix": "/shop.v1.Orders/" } }],
    }));
    rcs.create(&PostParams::default(), &good).await.unwrap();
    ns.delete().await;
}
