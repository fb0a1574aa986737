//! The identity endpoint end to end on loopback, with a fake API server behind the kube client
//! (TokenReview and pod reads answered from a table): the sidecar's own identity code
//! (`outrigger-identity`, `identity.csr`) makes its key, sends the request over TLS verified
//! against the mesh trust bundle, loads the certificate, and renews it at its refresh time.
//! Refusals come back named: a token the review refuses, one bound to no pod, a pod of another
//! ServiceAccount, a request for another identity, a wrong server name. The real TokenReview is
//! exercised by the cluster suite (`e2e.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::Engine as _;
use http::{Request, Response};
use kube::{Client, client::Body};
use outrigger_config::{IdentityConfig, OperatorEndpoint};
use outrigger_identity::{CsrClient, Discovery, Identity, OperatorError, provider};
use outrigger_operator::{
    DiscoveryService, IdentityService, MeshCa, MeshCaHandle, Metrics, PodIndex, ServingCert,
    SignerSettings, serve_endpoint,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const SERVICE: &str = "outrigger-webhook";
const NAMESPACE: &str = "outrigger-system";
const SERVER_NAME: &str = "outrigger-webhook.outrigger-system.svc";

/// A ServiceAccount token as the API server writes it: only the `sub` claim matters to the
/// sidecar; the fake review recognises the whole string.
fn token(namespace: &str, sa: &str, tag: &str) -> String {
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{tag}",
        enc(&json!({"alg": "RS256"})),
        enc(&json!({"sub": format!("system:serviceaccount:{namespace}:{sa}")}))
    )
}

/// What the fake API server knows: token → review status, and pods by name.
#[derive(Clone, Default)]
struct FakeApi {
    reviews: Arc<Mutex<Vec<(String, Value)>>>,
    pods: Arc<Mutex<Vec<Value>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

impl FakeApi {
    fn bound(&self, token: &str, namespace: &str, sa: &str, pod: &str) {
        self.reviews.lock().unwrap().push((
            token.to_owned(),
            json!({ "authenticated": true, "audiences": ["identity.outrigger.dev"],
                "user": { "username": format!("system:serviceaccount:{namespace}:{sa}"),
                    "extra": { "authentication.kubernetes.io/pod-name": [pod],
                        "authentication.kubernetes.io/pod-uid": [format!("{pod}-uid")] } } }),
        ));
    }
    fn pod(&self, namespace: &str, name: &str, sa: &str) {
        self.pods
            .lock()
            .unwrap()
            .push(json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace, "uid": format!("{name}-uid") },
            "spec": { "serviceAccountName": sa, "containers": [] },
            "status": { "phase": "Running" } }));
    }
    fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(req).await) }
        });
        Client::new(service, "default")
    }
    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        self.calls
            .lock()
            .unwrap()
            .push(format!("{} {path}", req.method()));
        let body = req.into_body().collect_bytes().await.unwrap();
        let reply = |status: u16, v: Value| {
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap()
        };
        if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
            let mut review: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                review["spec"]["audiences"],
                json!(["identity.outrigger.dev"])
            );
            let token = review["spec"]["token"].as_str().unwrap().to_owned();
            let status = self
                .reviews
                .lock()
                .unwrap()
                .iter()
                .find(|(t, _)| *t == token)
                .map_or_else(
                    || json!({ "authenticated": false, "error": "invalid bearer token" }),
                    |(_, s)| s.clone(),
                );
            review["status"] = status;
            return reply(201, review);
        }
        let pod = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .find(|p| {
                path == format!(
                    "/api/v1/namespaces/{}/pods/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .cloned();
        match pod {
            Some(p) => reply(200, p),
            None => reply(
                404,
                json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found" }),
            ),
        }
    }
}

struct Endpoint {
    address: String,
    trust_bundle: String,
    metrics: Arc<Metrics>,
    dir: tempfile::TempDir,
    /// What the discovery endpoint knows of meshed apps' pods.
    index: tokio::sync::watch::Sender<Option<Arc<PodIndex>>>,
}

impl Endpoint {
    async fn start(api: &FakeApi, lifetime: Duration) -> Self {
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let ca = MeshCa::generate(now).unwrap();
        let trust_bundle = ca.trust_bundle().to_owned();
        let ca = MeshCaHandle::fixed(ca);
        let serving = ServingCert::new(SERVICE, NAMESPACE);
        serving.renew(&ca.current().unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let metrics = Arc::new(Metrics::new());
        let settings = SignerSettings {
            lifetime,
            ..SignerSettings::default()
        };
        let (index, pods) = tokio::sync::watch::channel(None);
        tokio::spawn(serve_endpoint(
            listener,
            serving.server_config().unwrap(),
            IdentityService::new(api.client(), ca, settings, metrics.clone()),
            DiscoveryService::new(api.client(), pods, metrics.clone()),
            std::future::pending(),
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("trust-bundle.pem"), &trust_bundle).unwrap();
        Self {
            address,
            trust_bundle,
            metrics,
            dir,
            index,
        }
    }

    /// A sidecar's `identity` calling this endpoint with `token`.
    fn config(&self, token: &str, server_name: &str) -> IdentityConfig {
        let token_path = self.dir.path().join("token");
        std::fs::write(&token_path, format!("{token}\n")).unwrap();
        IdentityConfig {
            trust_domain: "cluster.local".into(),
            credential_bundle_path: None,
            csr: Some(OperatorEndpoint {
                endpoint: self.address.clone(),
                server_name: Some(server_name.into()),
                token_path: token_path.display().to_string(),
            }),
            trust_bundle_path: self
                .dir
                .path()
                .join("trust-bundle.pem")
                .display()
                .to_string(),
        }
    }

    async fn refusal(&self, token: &str) -> (String, String) {
        let cfg = self.config(token, SERVER_NAME);
        let client =
            CsrClient::new(cfg.csr.as_ref().unwrap(), "cluster.local", provider()).unwrap();
        let roots = outrigger_identity::parse_trust_bundle("bundle", self.trust_bundle.as_bytes())
            .unwrap()
            .roots;
        match client.certify(roots).await {
            Err(OperatorError::Refused { code, message, .. }) => (code, message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn metric(&self, result: &str) -> u64 {
        self.counter("identity_requests", result)
    }

    fn counter(&self, family: &str, result: &str) -> u64 {
        let line = format!("outrigger_operator_{family}_total{{result=\"{result}\"}} ");
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&line).map(|v| v.parse().unwrap()))
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_sidecar_gets_its_spiffe_certificate_for_a_bound_token() {
    let api = FakeApi::default();
    let t = token("shop", "web", "a");
    api.bound(&t, "shop", "web", "web-0");
    api.pod("shop", "web-0", "web");
    let endpoint = Endpoint::start(&api, Duration::from_secs(86_400)).await;

    let identity = Identity::load(
        &endpoint.config(&t, SERVER_NAME),
        outrigger_core::Metrics::new(),
    )
    .await
    .unwrap();
    let current = identity.current();
    assert_eq!(
        current.credentials.id.as_str(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    let (source, from, renew_after) = identity.source();
    assert_eq!((source, from), ("csr", endpoint.address.as_str()));
    let left = current
        .credentials
        .leaf
        .not_after
        .duration_since(renew_after.unwrap())
        .unwrap();
    assert!(
        (Duration::from_secs(43_000)..=Duration::from_secs(43_300)).contains(&left),
        "renewal at half of what is left: {left:?} before expiry"
    );
    assert_eq!(endpoint.metric("issued"), 1);
    let calls = api.calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        [
            "POST /apis/authentication.k8s.io/v1/tokenreviews",
            "GET /api/v1/namespaces/shop/pods/web-0"
        ]
    );
}

#[tokio::test]
async fn the_certificate_is_renewed_at_its_refresh_time_without_a_restart() {
    let api = FakeApi::default();
    let t = token("shop", "web", "a");
    api.bound(&t, "shop", "web", "web-0");
    api.pod("shop", "web-0", "web");
    // Backdated 180 s: valid for about 10 s more, renewed after about 5.
    let endpoint = Endpoint::start(&api, Duration::from_secs(190)).await;
    let identity = Identity::load(
        &endpoint.config(&t, SERVER_NAME),
        outrigger_core::Metrics::new(),
    )
    .await
    .unwrap();
    let first = identity.current().credentials.leaf.serial.clone();
    let shutdown = outrigger_core::Shutdown::new();
    identity
        .clone()
        .watch(Duration::from_millis(100), shutdown.clone());
    let renewed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = identity.current();
            if now.version > 1 {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("renewed within 30 s");
    assert_ne!(renewed.credentials.leaf.serial, first);
    assert_eq!(
        renewed.credentials.id.as_str(),
        "spiffe://cluster.local/ns/shop/sa/web"
    );
    assert!(endpoint.metric("issued") >= 2);
    shutdown.signal();
}

#[tokio::test]
async fn refusals_name_their_cause() {
    let api = FakeApi::default();
    let endpoint = Endpoint::start(&api, Duration::from_secs(86_400)).await;

    // Not a token the API server knows.
    let (code, message) = endpoint.refusal(&token("shop", "web", "forged")).await;
    assert_eq!(code, "Unauthenticated");
    assert!(message.contains("invalid bearer token"), "{message}");

    // A token of a ServiceAccount that is bound to no pod.
    let unbound = token("shop", "web", "unbound");
    api.reviews.lock().unwrap().push((
        unbound.clone(),
        json!({ "authenticated": true, "audiences": ["identity.outrigger.dev"],
            "user": { "username": "system:serviceaccount:shop:web" } }),
    ));
    let (code, message) = endpoint.refusal(&unbound).await;
    assert_eq!(code, "PermissionDenied");
    assert!(message.contains("bound to no pod"), "{message}");

    // A token bound to a pod that now runs as another ServiceAccount (the UID matches).
    let other = token("shop", "web", "other");
    api.bound(&other, "shop", "web", "admin-0");
    api.pod("shop", "admin-0", "admin");
    let (code, message) = endpoint.refusal(&other).await;
    assert_eq!(code, "PermissionDenied");
    assert!(
        message.contains("runs as ServiceAccount \"admin\""),
        "{message}"
    );

    // A token of `web` whose request asks for `admin`: the sidecar puts the id of the token's
    // `sub` in its request, so a `sub` naming admin on a token the review says is web's.
    let lying = token("shop", "admin", "lying");
    api.bound(&lying, "shop", "web", "web-0");
    api.pod("shop", "web-0", "web");
    let (code, message) = endpoint.refusal(&lying).await;
    assert_eq!(code, "PermissionDenied");
    assert!(
        message.contains("asks for spiffe://cluster.local/ns/shop/sa/admin")
            && message.contains("proves spiffe://cluster.local/ns/shop/sa/web"),
        "{message}"
    );
    assert_eq!(endpoint.metric("unauthenticated"), 1);
    assert_eq!(endpoint.metric("denied"), 3);
    assert_eq!(endpoint.metric("issued"), 0);

    // A sidecar refused at start says so at once instead of retrying for a minute.
    let started = std::time::Instant::now();
    let e = Identity::load(
        &endpoint.config(&token("shop", "web", "forged"), SERVER_NAME),
        outrigger_core::Metrics::new(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("refused"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn the_endpoint_is_verified_by_its_service_name_against_the_trust_bundle() {
    let api = FakeApi::default();
    let t = token("shop", "web", "a");
    api.bound(&t, "shop", "web", "web-0");
    api.pod("shop", "web-0", "web");
    let endpoint = Endpoint::start(&api, Duration::from_secs(86_400)).await;
    let cfg = endpoint.config(&t, "impostor.example");
    let client = CsrClient::new(cfg.csr.as_ref().unwrap(), "cluster.local", provider()).unwrap();
    let roots = outrigger_identity::parse_trust_bundle("b", endpoint.trust_bundle.as_bytes())
        .unwrap()
        .roots;
    match client.certify(roots).await {
        Err(OperatorError::Unreachable { message, .. }) => {
            assert!(message.contains("certificate"), "{message}");
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert!(
        api.calls.lock().unwrap().is_empty(),
        "nothing reached the API"
    );
}

fn index(apps: &[(&str, &str, &[&str])]) -> Option<Arc<PodIndex>> {
    Some(Arc::new(
        apps.iter()
            .map(|(ns, app, ips)| {
                (
                    ((*ns).to_owned(), (*app).to_owned()),
                    ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                )
            })
            .collect(),
    ))
}

/// Waits for the next set of pods `rx` gets.
async fn next(rx: &mut tokio::sync::watch::Receiver<outrigger_identity::Addresses>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("pushed within 10 s")
        .unwrap();
    rx.borrow_and_update()
        .as_deref()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[tokio::test]
async fn the_pods_of_a_meshed_app_are_pushed_as_they_change() {
    let api = FakeApi::default();
    let t = token("shop", "web", "a");
    api.bound(&t, "shop", "web", "web-0");
    api.pod("shop", "web-0", "web");
    let endpoint = Endpoint::start(&api, Duration::from_secs(86_400)).await;
    let cfg = endpoint.config(&t, SERVER_NAME);
    let identity = Identity::load(&cfg, outrigger_core::Metrics::new())
        .await
        .unwrap();
    let shutdown = outrigger_core::Shutdown::new();
    let discovery = Discovery::new(
        cfg.csr.as_ref().unwrap(),
        identity.clone(),
        shutdown.clone(),
    )
    .unwrap();

    let mut users = discovery.watch("shop", "users");
    let mut again = discovery.watch("shop", "users");
    // Nothing is said before the operator has listed the EndpointSlices.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        users.borrow().is_none(),
        "no pods claimed before the index exists"
    );

    endpoint
        .index
        .send_replace(index(&[("shop", "users", &["10.0.0.2"])]));
    assert_eq!(next(&mut users).await, ["10.0.0.2"]);
    assert_eq!(
        next(&mut again).await,
        ["10.0.0.2"],
        "one stream, every subscriber"
    );
    endpoint.index.send_replace(index(&[
        ("shop", "users", &["10.0.0.2", "10.0.0.3"]),
        ("shop", "orders", &["10.0.0.9"]),
    ]));
    assert_eq!(next(&mut users).await, ["10.0.0.2", "10.0.0.3"]);
    // Another app's change is not news to this one.
    endpoint.index.send_replace(index(&[
        ("shop", "users", &["10.0.0.2", "10.0.0.3"]),
        ("shop", "orders", &["10.0.0.8"]),
    ]));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), users.changed())
            .await
            .is_err()
    );
    // The app's last pod gone: an empty set, not silence.
    endpoint.index.send_replace(index(&[]));
    assert_eq!(next(&mut users).await, Vec::<String>::new());
    assert_eq!(endpoint.counter("discovery_watches", "opened"), 1);

    // A caller the TokenReview refuses gets nothing, and is counted.
    let forged = endpoint.config(&token("shop", "web", "forged"), SERVER_NAME);
    let stranger =
        Discovery::new(forged.csr.as_ref().unwrap(), identity, shutdown.clone()).unwrap();
    let refused = stranger.watch("shop", "users");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(refused.borrow().is_none());
    assert!(endpoint.counter("discovery_watches", "unauthenticated") >= 1);
    shutdown.signal();
}
