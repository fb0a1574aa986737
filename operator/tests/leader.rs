//! Leader election against a mock API server: every Lease call is asserted (method, path, body)
//! and answered. A leader releases the Lease when it shuts down, a standby takes a released Lease
//! at its next retry, and a silent holder's Lease expires by the standby's own clock whatever
//! the holder wrote into `renewTime`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use http::{Method, Request, Response};
use kube::{Client, client::Body};
use outrigger_operator::{LeaseConfig, run_election};
use serde_json::{Value, json};
use tokio::{sync::watch, time::Instant};
use tower_test::mock::{self, Handle, SendResponse};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/outrigger-operator";

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "outrigger-operator".into(),
        namespace: "ops".into(),
        identity: identity.into(),
        duration: Duration::from_secs(15),
        retry_period: Duration::from_secs(2),
    }
}

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

fn not_found() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": "leases.coordination.k8s.io \"outrigger-operator\" not found" })
}

fn lease(holder: Option<&str>, renewed: &str, rv: &str) -> Value {
    json!({ "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "outrigger-operator", "namespace": "ops", "resourceVersion": rv },
        "spec": { "holderIdentity": holder, "renewTime": renewed, "acquireTime": renewed,
                  "leaseDurationSeconds": 15, "leaseTransitions": 3 } })
}

#[tokio::test]
async fn a_leader_releases_the_lease_on_shutdown() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, mut leading) = watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let election = tokio::spawn(run_election(client, config("me"), tx, async move {
        let _ = stop_rx.await;
    }));

    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(send, 404, &not_found());
    let (body, send) = expect(&mut handle, Method::POST, LEASES).await;
    assert_eq!(body["spec"]["holderIdentity"], "me");
    let mut created = body.clone();
    created["metadata"]["resourceVersion"] = json!("5");
    reply(send, 201, &created);
    leading.wait_for(|l| *l).await.unwrap();

    stop_tx.send(()).unwrap();
    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(send, 200, &created);
    let (body, send) = expect(&mut handle, Method::PUT, LEASE).await;
    assert!(
        body["spec"]
            .get("holderIdentity")
            .is_none_or(Value::is_null),
        "released: no holder: {body}"
    );
    assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(
        body["metadata"]["resourceVersion"], "5",
        "optimistic concurrency"
    );
    reply(send, 200, &body);
    election.await.unwrap();
    assert!(!*leading.borrow(), "no longer leading");
    assert!(
        handle.next_request().await.is_none(),
        "no call after release"
    );
}

#[tokio::test]
async fn shutdown_leaves_someone_elses_lease_alone() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, _leading) = watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let election = tokio::spawn(run_election(client, config("me"), tx, async move {
        let _ = stop_rx.await;
    }));
    let held = lease(Some("other"), "2026-01-01T00:00:00.000000Z", "9");
    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(send, 200, &held);
    stop_tx.send(()).unwrap();
    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(send, 200, &held);
    election.await.unwrap();
    assert!(handle.next_request().await.is_none(), "no write");
}

#[tokio::test(start_paused = true)]
async fn a_standby_takes_a_released_lease_at_its_next_retry() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(run_election(
        client,
        config("standby"),
        tx,
        std::future::pending(),
    ));
    let start = Instant::now();
    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(
        send,
        200,
        &lease(Some("leader"), "2026-01-01T00:00:00.000000Z", "10"),
    );
    // The leader shuts down and releases.
    let (_, send) = expect(&mut handle, Method::GET, LEASE).await;
    reply(send, 200, &lease(None, "2026-01-01T00:00:03.000000Z", "11"));
    let (body, send) = expect(&mut handle, Method::PUT, LEASE).await;
    assert_eq!(body["spec"]["holderIdentity"], "standby");
    assert_eq!(body["spec"]["leaseTransitions"], 4);
    assert_eq!(body["metadata"]["resourceVersion"], "11");
    reply(send, 200, &body);
    leading.wait_for(|l| *l).await.unwrap();
    assert!(
        start.elapsed() <= Duration::from_secs(2),
        "took over after {:?}, one retry period at most",
        start.elapsed()
    );
    election.abort();
}

#[tokio::test(start_paused = true)]
async fn a_silent_holder_expires_by_the_standbys_clock() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (tx, mut leading) = watch::channel(false);
    let election = tokio::spawn(run_election(
        client,
        config("standby"),
        tx,
        std::future::pending(),
    ));
    let start = Instant::now();
    // The holder's clock runs decades ahead: by its renewTime the lease is live until 2100. It has
    // stopped renewing, so the record never changes; after 15 s of our time it is ours.
    let silent = lease(Some("leader"), "2100-01-01T00:00:00.000000Z", "20");
    loop {
        let (request, send) = handle.next_request().await.expect("an API call");
        match *request.method() {
            Method::GET => reply(send, 200, &silent),
            Method::PUT => {
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(body["spec"]["holderIdentity"], "standby");
                reply(send, 200, &body);
                break;
            }
            ref other => panic!("unexpected {other}"),
        }
    }
    leading.wait_for(|l| *l).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited > Duration::from_secs(15) && waited <= Duration::from_secs(18),
        "took over after {waited:?}"
    );
    election.abort();
}
