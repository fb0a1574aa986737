//! The webhook's API calls against a mock API server: the `InjectionSkipped` Event publisher
//! (one Event per owner and reason, in the owner's namespace; a Namespace's in `default`) and the
//! live RuntimeConfig lookup made when the cache says a config does not exist.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Client,
    client::Body,
    runtime::events::{Recorder, Reporter},
};
use outrigger_operator::{LiveConfig, Skip, SkipNotice, lookup_live, publish_skips};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (Value, SendResponse<Response<Body>>) {
    let (request, send) = handle.next_request().await.expect("an API call");
    assert_eq!(request.method(), method, "method of {}", request.uri());
    assert_eq!(request.uri().path(), path);
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (body, send)
}

fn reply(send: SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn pod_of(rs: &str) -> Pod {
    serde_json::from_value(json!({ "metadata": { "generateName": format!("{rs}-"), "ownerReferences": [
        { "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true }] } }))
    .unwrap()
}

fn missing(name: &str) -> Skip {
    Skip::ConfigNotFound {
        namespace: "shop".into(),
        name: name.into(),
    }
}

#[tokio::test]
async fn one_event_per_owner_and_reason() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "outrigger-operator".into(),
            instance: Some("operator-0".into()),
        },
    );
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let publisher = tokio::spawn(publish_skips(recorder, rx));
    let web = SkipNotice::new(&pod_of("web-6d4"), "shop", None, &missing("no-such-config"));
    // Three pods of the same ReplicaSet, then one of another, then a bare pod.
    for _ in 0..3 {
        tx.send(web.clone()).await.unwrap();
    }
    let api = SkipNotice::new(&pod_of("api-7f1"), "shop", None, &missing("no-such-config"));
    tx.send(api).await.unwrap();
    let bare: Pod = serde_json::from_value(json!({ "metadata": { "name": "probe" } })).unwrap();
    let bare = SkipNotice::new(
        &bare,
        "shop",
        Some("ns-uid".into()),
        &Skip::VolumeConflict("outrigger-config".into()),
    );
    tx.send(bare).await.unwrap();
    drop(tx);

    let (event, send) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "InjectionSkipped");
    assert_eq!(event["action"], "Inject");
    assert_eq!(event["regarding"]["kind"], "ReplicaSet");
    assert_eq!(event["regarding"]["name"], "web-6d4");
    assert_eq!(event["regarding"]["uid"], "uid-web-6d4");
    assert_eq!(event["reportingController"], "outrigger-operator");
    assert_eq!(
        event["note"],
        "pod web-6d4-* was created without the outrigger sidecar: RuntimeConfig shop/no-such-config (annotation outrigger.dev/config) does not exist; sidecar not injected"
    );
    reply(send, 201, &event);
    let (event, send) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(
        event["regarding"]["name"], "api-7f1",
        "the repeats were dropped"
    );
    reply(send, 201, &event);
    // A Namespace is cluster-scoped: its Event lives in `default`.
    let (event, send) = expect(
        &mut handle,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
    )
    .await;
    assert_eq!(event["regarding"]["kind"], "Namespace");
    assert_eq!(event["regarding"]["name"], "shop");
    assert_eq!(event["regarding"]["uid"], "ns-uid");
    reply(send, 201, &event);

    publisher.await.unwrap();
    assert!(handle.next_request().await.is_none(), "no other call");
}

#[tokio::test]
async fn live_lookup_reads_the_runtime_config_and_its_hash() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");

    let found = tokio::spawn({
        let client = client.clone();
        async move { lookup_live(&client, "shop", "fresh").await }
    });
    let (_, send) = expect(
        &mut handle,
        Method::GET,
        "/apis/outrigger.dev/v1alpha1/namespaces/shop/runtimeconfigs/fresh",
    )
    .await;
    reply(
        send,
        200,
        &json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                 "metadata": { "name": "fresh", "namespace": "shop" } }),
    );
    let (_, send) = expect(
        &mut handle,
        Method::GET,
        "/api/v1/namespaces/shop/configmaps/outrigger-fresh",
    )
    .await;
    reply(
        send,
        200,
        &json!({ "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                 "metadata": { "name": "outrigger-fresh", "namespace": "shop",
                               "annotations": { "outrigger.dev/config-hash": "h-fresh" } } }),
    );
    assert_eq!(
        found.await.unwrap().unwrap(),
        LiveConfig {
            exists: true,
            hash: Some("h-fresh".into())
        }
    );

    let missing = tokio::spawn({
        let client = client.clone();
        async move { lookup_live(&client, "shop", "nope").await }
    });
    let (_, send) = expect(
        &mut handle,
        Method::GET,
        "/apis/outrigger.dev/v1alpha1/namespaces/shop/runtimeconfigs/nope",
    )
    .await;
    reply(
        send,
        404,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                 "message": "runtimeconfigs.outrigger.dev \"nope\" not found" }),
    );
    assert_eq!(missing.await.unwrap().unwrap(), LiveConfig::default());
    drop(client);
    assert!(
        handle.next_request().await.is_none(),
        "no ConfigMap read for a missing config"
    );
}
