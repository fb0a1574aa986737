//! The controller against a mock API server: each scenario asserts every call reconcile makes
//! (method, path, query and body) and answers it, then checks that no other call was made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use http::{Method, Request, Response};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{Client, client::Body, runtime::controller::Action};
use outrigger_config::{RuntimeConfigSpec, config_hash, parse_yaml};
use outrigger_operator::{
    Context, MeshCa, MeshCaHandle, Metrics, Outcome, RESYNC, ROLLOUT_RECHECK, ReconcileError,
    Rollout, RuntimeConfig, TRUST_BUNDLE_KEY, error_policy, next_status, reconcile, with_rollout,
};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const SPEC: &str = r#"
rpc:
  channels: [{protocol: http, size: 4, listener: egress}]
listeners: [{name: egress, routeTable: t}]
routeTables: [{name: t, routes: [{cluster: users}]}]
clusters: [{name: users, hosts: [{address: "users.apps.svc:8080"}]}]
"#;

fn spec() -> RuntimeConfigSpec {
    parse_yaml(SPEC).unwrap()
}

fn object(
    spec: RuntimeConfigSpec,
    generation: i64,
    status: Option<outrigger_operator::RuntimeConfigStatus>,
) -> RuntimeConfig {
    let mut rc = RuntimeConfig::new("web", spec);
    rc.metadata.namespace = Some("apps".into());
    rc.metadata.uid = Some("0b9d4f3a-1111-2222-3333-444455556666".into());
    rc.metadata.generation = Some(generation);
    rc.metadata.resource_version = Some("42".into());
    rc.status = status;
    rc
}

/// The mesh CA every scenario's controller publishes (one per test binary).
fn mesh_ca() -> &'static MeshCaHandle {
    static CA: std::sync::OnceLock<MeshCaHandle> = std::sync::OnceLock::new();
    CA.get_or_init(|| MeshCaHandle::fixed(MeshCa::generate(1_800_000_000).unwrap()))
}

fn trust_bundle() -> String {
    mesh_ca().trust_bundle().unwrap()
}

/// A controller context with the mesh CA loaded.
fn setup() -> (Arc<Context>, ApiHandle, Arc<Metrics>) {
    setup_with(Some(mesh_ca().clone()))
}

fn setup_with(ca: Option<MeshCaHandle>) -> (Arc<Context>, ApiHandle, Arc<Metrics>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::new());
    let mut ctx = Context::new(client, metrics.clone(), Some("operator-0".into()));
    if let Some(ca) = ca {
        ctx = ctx.with_mesh_ca(ca);
    }
    (Arc::new(ctx), handle, metrics)
}

/// Waits for the next call, checks method and path, and returns its query and JSON body.
async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (String, Value, mock::SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("an API call");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (query, body, send)
}

fn reply(send: mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    let response = Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    send.send_response(response);
}

const CM_PATH: &str = "/api/v1/namespaces/apps/configmaps/outrigger-web";
const STATUS_PATH: &str = "/apis/outrigger.dev/v1alpha1/namespaces/apps/runtimeconfigs/web/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";
const PODS_PATH: &str = "/api/v1/namespaces/apps/pods";

/// An injected pod as the API server lists it.
fn injected_pod(name: &str, config: &str, hash: Option<&str>) -> Value {
    let mut annotations = json!({ "outrigger.dev/config": config });
    if let Some(h) = hash {
        annotations["outrigger.dev/config-hash"] = json!(h);
    }
    json!({ "metadata": { "name": name, "namespace": "apps",
        "labels": { "outrigger.dev/injected": "true" }, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "app" }] },
        "status": { "phase": "Running" } })
}

/// The injected-pod list reconcile makes for the rollout counts.
async fn expect_pod_list(handle: &mut ApiHandle, pods: Vec<Value>) {
    let (query, _, send) = expect(handle, Method::GET, PODS_PATH).await;
    assert!(
        query.contains("labelSelector=outrigger.dev%2Finjected%3Dtrue"),
        "{query}"
    );
    reply(
        send,
        200,
        &json!({ "apiVersion": "v1", "kind": "PodList", "metadata": { "resourceVersion": "7" }, "items": pods }),
    );
}

/// The ConfigMap apply, carrying the mesh trust bundle.
async fn expect_apply(handle: &mut ApiHandle, spec: &RuntimeConfigSpec) {
    expect_apply_with(handle, spec, Some(&trust_bundle())).await;
}

async fn expect_apply_with(handle: &mut ApiHandle, spec: &RuntimeConfigSpec, bundle: Option<&str>) {
    let (query, body, send) = expect(handle, Method::PATCH, CM_PATH).await;
    assert_eq!(
        body["data"].get(TRUST_BUNDLE_KEY).and_then(Value::as_str),
        bundle,
        "trust-bundle.pem"
    );
    let keys: Vec<&String> = body["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 1 + usize::from(bundle.is_some()), "{keys:?}");
    assert!(query.contains("fieldManager=outrigger-operator"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["kind"], "ConfigMap");
    assert_eq!(body["metadata"]["name"], "outrigger-web");
    assert_eq!(body["metadata"]["namespace"], "apps");
    assert_eq!(
        body["metadata"]["annotations"]["outrigger.dev/config-hash"],
        config_hash(spec)
    );
    let owner = &body["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "RuntimeConfig");
    assert_eq!(owner["name"], "web");
    assert_eq!(owner["uid"], "0b9d4f3a-1111-2222-3333-444455556666");
    assert_eq!(owner["controller"], true);
    let file = body["data"]["runtime.yaml"].as_str().unwrap();
    assert_eq!(
        &outrigger_config::load_yaml(file).unwrap(),
        spec,
        "the ConfigMap holds the spec verbatim"
    );
    reply(send, 200, &body);
}

async fn expect_status(handle: &mut ApiHandle) -> Value {
    let (_, body, send) = expect(handle, Method::PATCH, STATUS_PATH).await;
    let status = body["status"].clone();
    let rc = json!({ "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig",
        "metadata": { "name": "web", "namespace": "apps" }, "spec": {}, "status": status });
    reply(send, 200, &rc);
    status
}

async fn expect_event(handle: &mut ApiHandle) -> Value {
    let (_, body, send) = expect(handle, Method::POST, EVENTS_PATH).await;
    reply(send, 201, &body);
    body
}

async fn expect_no_more_calls(handle: &mut ApiHandle) {
    assert!(
        handle.next_request().await.is_none(),
        "unexpected extra API call"
    );
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

#[tokio::test]
async fn create_applies_the_config_map_then_status_then_event() {
    let (ctx, mut handle, metrics) = setup();
    let rc = Arc::new(object(spec(), 1, None));
    let run = tokio::spawn(reconcile(rc, ctx));

    expect_apply(&mut handle, &spec()).await;
    expect_pod_list(&mut handle, vec![]).await;
    let status = expect_status(&mut handle).await;
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["rollout"],
        json!({ "pods": 0, "updated": 0, "stale": 0 })
    );
    assert_eq!(condition(&status, "RolledOut")["status"], "True");
    assert_eq!(condition(&status, "RolledOut")["reason"], "NoPods");
    assert_eq!(status["configHash"], config_hash(&spec()));
    assert_eq!(status["errors"], json!([]));
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "ConfigMapApplied");
    assert_eq!(condition(&status, "Valid")["status"], "True");
    let since = condition(&status, "Ready")["lastTransitionTime"]
        .as_str()
        .unwrap();
    since
        .parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{since} is not RFC 3339: {e}"));
    let event = expect_event(&mut handle).await;
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["reason"], "ConfigApplied");
    assert_eq!(event["regarding"]["kind"], "RuntimeConfig");
    assert_eq!(event["regarding"]["name"], "web");
    assert_eq!(event["reportingController"], "outrigger-operator");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains(&config_hash(&spec()))
    );

    let action = run.await.unwrap().unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    expect_no_more_calls(&mut handle).await;
    assert!(
        metrics
            .encode()
            .contains("outrigger_operator_reconciles_total 1")
    );
}

#[tokio::test]
async fn update_rewrites_the_config_map_and_reports_the_new_hash() {
    let (ctx, mut handle, _) = setup();
    let old = spec();
    let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let previous = next_status(
        None,
        Some(1),
        Outcome::Applied {
            config_map: "outrigger-web",
            hash: &config_hash(&old),
        },
        &since,
    );
    let mut new_spec = spec();
    new_spec.rpc.timeout_ms = 1500;
    new_spec.clusters[0].hosts[0].address = "users-v2.apps.svc:8080".into();
    let rc = Arc::new(object(new_spec.clone(), 2, Some(previous)));
    let run = tokio::spawn(reconcile(rc, ctx));

    expect_apply(&mut handle, &new_spec).await;
    // Two pods admitted with the old config, one with the new, one of another RuntimeConfig.
    let (old_hash, new_hash) = (config_hash(&old), config_hash(&new_spec));
    expect_pod_list(
        &mut handle,
        vec![
            injected_pod("a", "web", Some(&old_hash)),
            injected_pod("b", "web", Some(&old_hash)),
            injected_pod("c", "web", Some(&new_hash)),
            injected_pod("d", "other", Some(&new_hash)),
        ],
    )
    .await;
    let status = expect_status(&mut handle).await;
    assert_eq!(
        status["rollout"],
        json!({ "pods": 3, "updated": 1, "stale": 2 })
    );
    let rolled_out = condition(&status, "RolledOut");
    assert_eq!(rolled_out["status"], "False");
    assert_eq!(rolled_out["reason"], "PodsStale");
    assert!(
        rolled_out["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "2 of 3 injected pod(s) do not run config {new_hash} yet"
            )),
        "{rolled_out}"
    );
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(status["configHash"], config_hash(&new_spec));
    assert_ne!(status["configHash"], config_hash(&old));
    // Ready stayed True, so its transition time is kept.
    assert_eq!(
        condition(&status, "Ready")["lastTransitionTime"],
        "2023-11-14T22:13:20Z"
    );
    let event = expect_event(&mut handle).await;
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains(&config_hash(&new_spec))
    );
    // Stale pods are counted again soon: their sidecars reload by themselves.
    assert_eq!(
        run.await.unwrap().unwrap(),
        Action::requeue(ROLLOUT_RECHECK)
    );
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn resync_without_change_only_applies() {
    let (ctx, mut handle, _) = setup();
    let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let hash = config_hash(&spec());
    let current = next_status(
        None,
        Some(3),
        Outcome::Applied {
            config_map: "outrigger-web",
            hash: &hash,
        },
        &since,
    );
    let rollout = Rollout {
        pods: 1,
        updated: 1,
        stale: 0,
    };
    let current = with_rollout(current, None, rollout, &since);
    let run = tokio::spawn(reconcile(Arc::new(object(spec(), 3, Some(current))), ctx));
    expect_apply(&mut handle, &spec()).await;
    expect_pod_list(&mut handle, vec![injected_pod("a", "web", Some(&hash))]).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(RESYNC));
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn invalid_spec_keeps_the_config_map_and_reports_every_error() {
    let (ctx, mut handle, _) = setup();
    let since = Time(Timestamp::from_second(1_700_000_000).unwrap());
    let good_hash = config_hash(&spec());
    let previous = next_status(
        None,
        Some(1),
        Outcome::Applied {
            config_map: "outrigger-web",
            hash: &good_hash,
        },
        &since,
    );
    let mut bad = spec();
    bad.route_tables[0].routes[0].cluster = "payments".into();
    bad.clusters[0].hosts[0].address = "no-port".into();
    bad.rpc.timeout_ms = 0;
    let run = tokio::spawn(reconcile(Arc::new(object(bad, 2, Some(previous))), ctx));

    // No PATCH of the ConfigMap: the first call counts the pods (against the live hash).
    expect_pod_list(
        &mut handle,
        vec![injected_pod("a", "web", Some(&good_hash))],
    )
    .await;
    let status = expect_status(&mut handle).await;
    assert_eq!(
        status["rollout"],
        json!({ "pods": 1, "updated": 1, "stale": 0 })
    );
    assert_eq!(status["observedGeneration"], 2);
    assert_eq!(
        status["configHash"], good_hash,
        "the live hash is still the last good config"
    );
    assert_eq!(
        status["errors"],
        json!([
            "rpc.timeoutMs: must be greater than 0",
            "routeTables[0].routes[0].cluster: unknown cluster \"payments\"",
            "clusters[0].hosts[0].address: \"no-port\" is not a host:port address",
        ])
    );
    let valid = condition(&status, "Valid");
    assert_eq!(
        (valid["status"].as_str(), valid["reason"].as_str()),
        (Some("False"), Some("InvalidSpec"))
    );
    assert!(
        valid["message"]
            .as_str()
            .unwrap()
            .starts_with("3 problem(s): rpc.timeoutMs")
    );
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert!(ready["message"].as_str().unwrap().contains(&good_hash));
    assert_ne!(
        ready["lastTransitionTime"], "2023-11-14T22:13:20Z",
        "Ready changed, so its time moved"
    );

    let event = expect_event(&mut handle).await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InvalidSpec");
    let note = event["note"].as_str().unwrap();
    assert!(note.starts_with("3 problem(s) in the config:"), "{note}");
    assert!(note.contains("unknown cluster \"payments\""), "{note}");

    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn api_failure_is_an_error_that_backs_off_and_is_counted() {
    let (ctx, mut handle, metrics) = setup();
    let rc = Arc::new(object(spec(), 1, None));
    let run = tokio::spawn(reconcile(rc.clone(), ctx.clone()));
    let (_, _, send) = expect(&mut handle, Method::PATCH, CM_PATH).await;
    reply(
        send,
        500,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd timeout", "reason": "InternalError", "code": 500 }),
    );
    let err = run.await.unwrap().unwrap_err();
    assert!(
        matches!(err, ReconcileError::ApplyConfigMap { .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "cannot apply ConfigMap apps/outrigger-web");

    let delays: Vec<_> = (0..4)
        .map(|_| error_policy(rc.clone(), &err, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [5, 10, 20, 40].map(|s| Action::requeue(std::time::Duration::from_secs(s)))
    );
    assert!(
        metrics
            .encode()
            .contains("outrigger_operator_reconcile_failures_total{kind=\"apply_configmap\"} 4"),
        "{}",
        metrics.encode()
    );
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn pod_list_failure_is_an_error_and_nothing_is_patched() {
    let (ctx, mut handle, _) = setup();
    let rc = Arc::new(object(spec(), 1, None));
    let run = tokio::spawn(reconcile(rc, ctx.clone()));
    expect_apply(&mut handle, &spec()).await;
    let (_, _, send) = expect(&mut handle, Method::GET, PODS_PATH).await;
    reply(
        send,
        403,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "pods is forbidden", "reason": "Forbidden", "code": 403 }),
    );
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(err, ReconcileError::ListPods { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot list the injected pods in namespace apps"
    );
    assert_eq!(err.kind(), "list_pods");
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn before_the_mesh_ca_loads_the_config_map_has_no_trust_bundle_and_the_same_hash() {
    let (ctx, mut handle, _) = setup_with(None);
    let rc = Arc::new(object(spec(), 1, None));
    let run = tokio::spawn(reconcile(rc, ctx));
    expect_apply_with(&mut handle, &spec(), None).await;
    expect_pod_list(&mut handle, vec![]).await;
    let status = expect_status(&mut handle).await;
    assert_eq!(
        status["configHash"],
        config_hash(&spec()),
        "the hash is runtime.yaml's, with or without the bundle"
    );
    expect_event(&mut handle).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::requeue(RESYNC));
    expect_no_more_calls(&mut handle).await;
}
