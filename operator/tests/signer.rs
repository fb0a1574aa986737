//! The Pod Certificates signer against a mock API server: each scenario asserts every call
//! `sign_request` makes (method, path, body) and answers it, then checks that no other call was
//! made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{sync::Arc, time::Duration};

use http::{Method, Request, Response};
use k8s_openapi::api::certificates::v1beta1::PodCertificateRequest;
use kube::{Client, client::Body, runtime::controller::Action};
use outrigger_operator::{
    MeshCa, MeshCaHandle, Metrics, SignerContext, SignerError, SignerSettings, pem_certificates,
    sign_request, signer_error_policy,
};
use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

type ApiHandle = Handle<Request<Body>, Response<Body>>;

const POD_PATH: &str = "/api/v1/namespaces/apps/pods/web-0";
const SA_PATH: &str = "/api/v1/namespaces/apps/serviceaccounts/web";
const STATUS_PATH: &str =
    "/apis/certificates.k8s.io/v1beta1/namespaces/apps/podcertificaterequests/req-1/status";

fn setup(ca: Option<MeshCa>) -> (Arc<SignerContext>, ApiHandle, Arc<Metrics>) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let metrics = Arc::new(Metrics::new());
    let handle_ca = match ca {
        Some(ca) => MeshCaHandle::fixed(ca),
        None => MeshCaHandle::new().1,
    };
    (
        Arc::new(SignerContext::new(
            client,
            handle_ca,
            SignerSettings::default(),
            metrics.clone(),
        )),
        handle,
        metrics,
    )
}

/// A request as the kubelet makes it for pod `web-0` running as `web`, for `key`.
fn request(key: &KeyPair) -> PodCertificateRequest {
    let csr = CertificateParams::default().serialize_request(key).unwrap();
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": { "name": "req-1", "namespace": "apps", "resourceVersion": "9" },
        "spec": {
            "signerName": "outrigger.dev/identity", "podName": "web-0", "podUID": "pod-uid",
            "serviceAccountName": "web", "serviceAccountUID": "sa-uid",
            "nodeName": "node1", "nodeUID": "node-uid", "maxExpirationSeconds": 86400,
            "stubPKCS10Request": base64(csr.der()),
        },
    }))
    .unwrap()
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn pod(service_account: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web-0", "namespace": "apps", "uid": "pod-uid" },
        "spec": { "serviceAccountName": service_account, "nodeName": "node1",
            "containers": [{ "name": "app", "image": "app" }] } })
}

fn service_account() -> Value {
    json!({ "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": { "name": "web", "namespace": "apps", "uid": "sa-uid" } })
}

async fn expect(
    handle: &mut ApiHandle,
    method: Method,
    path: &str,
) -> (Value, mock::SendResponse<Response<Body>>) {
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

fn reply(send: mock::SendResponse<Response<Body>>, status: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

fn status_error(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code })
}

async fn expect_reads(handle: &mut ApiHandle, pod_sa: &str) {
    let (_, send) = expect(handle, Method::GET, POD_PATH).await;
    reply(send, 200, &pod(pod_sa));
    let (_, send) = expect(handle, Method::GET, SA_PATH).await;
    reply(send, 200, &service_account());
}

async fn expect_no_more_calls(handle: &mut ApiHandle) {
    assert!(
        handle.next_request().await.is_none(),
        "unexpected extra API call"
    );
}

#[tokio::test]
async fn a_matching_request_is_issued_through_the_status_subresource() {
    let ca = MeshCa::generate(k8s_openapi::jiff::Timestamp::now().as_second()).unwrap();
    let bundle = ca.trust_bundle().to_owned();
    let (ctx, mut handle, metrics) = setup(Some(ca));
    let key = KeyPair::generate().unwrap();
    let run = tokio::spawn(sign_request(Arc::new(request(&key)), ctx.clone()));

    expect_reads(&mut handle, "web").await;
    let (body, send) = expect(&mut handle, Method::PUT, STATUS_PATH).await;
    assert_eq!(
        body["metadata"]["resourceVersion"], "9",
        "optimistic concurrency"
    );
    let status = &body["status"];
    let conditions = status["conditions"].as_array().unwrap();
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0]["type"], "Issued");
    assert_eq!(conditions[0]["status"], "True");
    let chain = pem_certificates("chain", status["certificateChain"].as_str().unwrap()).unwrap();
    assert_eq!(chain.len(), 2);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    let time = |k: &str| {
        status[k]
            .as_str()
            .unwrap()
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap()
            .as_second()
    };
    assert_eq!(time("notBefore"), leaf.validity().not_before.timestamp());
    assert_eq!(time("notAfter"), leaf.validity().not_after.timestamp());
    assert_eq!(time("notAfter") - time("notBefore"), 86_400);
    assert_eq!(time("beginRefreshAt"), time("notBefore") + 43_200);
    assert!(!bundle.is_empty());
    reply(send, 200, &body);

    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    assert!(
        metrics
            .encode()
            .contains("outrigger_operator_pod_certificates_total{result=\"issued\"} 1")
    );
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn a_request_naming_another_service_account_is_denied_with_only_a_condition() {
    let (ctx, mut handle, metrics) = setup(None);
    let key = KeyPair::generate().unwrap();
    let run = tokio::spawn(sign_request(Arc::new(request(&key)), ctx.clone()));

    // The pod runs as `admin`; the request says `web`. No CA is needed to deny.
    expect_reads(&mut handle, "admin").await;
    let (body, send) = expect(&mut handle, Method::PUT, STATUS_PATH).await;
    let status = body["status"].as_object().unwrap();
    assert_eq!(
        status.keys().collect::<Vec<_>>(),
        ["conditions"],
        "denying sets nothing else"
    );
    let c = &body["status"]["conditions"][0];
    assert_eq!(
        (c["type"].as_str(), c["reason"].as_str()),
        (Some("Denied"), Some("ServiceAccountMismatch"))
    );
    assert_eq!(
        c["message"],
        "pod apps/web-0 runs as ServiceAccount \"admin\", the request names \"web\""
    );
    reply(send, 200, &body);
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    assert!(
        metrics
            .encode()
            .contains("outrigger_operator_pod_certificates_total{result=\"denied\"} 1")
    );
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn a_missing_pod_is_denied_and_a_conflict_is_retried() {
    let (ctx, mut handle, _) = setup(None);
    let key = KeyPair::generate().unwrap();
    let run = tokio::spawn(sign_request(Arc::new(request(&key)), ctx.clone()));
    let (_, send) = expect(&mut handle, Method::GET, POD_PATH).await;
    reply(send, 404, &status_error(404, "NotFound"));
    let (_, send) = expect(&mut handle, Method::GET, SA_PATH).await;
    reply(send, 200, &service_account());
    let (body, send) = expect(&mut handle, Method::PUT, STATUS_PATH).await;
    assert_eq!(body["status"]["conditions"][0]["reason"], "PodNotFound");
    reply(send, 409, &status_error(409, "Conflict"));
    assert_eq!(
        run.await.unwrap().unwrap(),
        Action::requeue(Duration::from_secs(1)),
        "the watch brings the new version"
    );
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn without_a_ca_nothing_is_written_and_the_request_backs_off() {
    let (ctx, mut handle, metrics) = setup(None);
    let key = KeyPair::generate().unwrap();
    let pcr = Arc::new(request(&key));
    let run = tokio::spawn(sign_request(pcr.clone(), ctx.clone()));
    expect_reads(&mut handle, "web").await;
    let err = run.await.unwrap().unwrap_err();
    assert!(matches!(err, SignerError::CaNotReady), "{err:?}");
    let delays: Vec<_> = (0..4)
        .map(|_| signer_error_policy(pcr.clone(), &err, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [1, 2, 4, 8].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    assert!(
        metrics
            .encode()
            .contains("outrigger_operator_signer_failures_total{kind=\"ca_not_ready\"} 4"),
        "{}",
        metrics.encode()
    );
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}

#[tokio::test]
async fn requests_for_other_signers_or_already_answered_make_no_call() {
    let (ctx, mut handle, _) = setup(None);
    let key = KeyPair::generate().unwrap();
    let mut other = request(&key);
    other.spec.signer_name = "example.com/other".into();
    let mut answered = request(&key);
    answered.status = Some(outrigger_operator::denied_status("PodNotFound", "gone", 0));
    for pcr in [other, answered] {
        let action = sign_request(Arc::new(pcr), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::await_change());
    }
    drop(ctx);
    expect_no_more_calls(&mut handle).await;
}
