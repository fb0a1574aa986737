//! Cluster test of workload identity through Kubernetes Pod Certificates: a real kubelet asks for
//! a `podCertificate` projected volume, the operator's signer — run in-process from the library,
//! under a signer name of its own (`outrigger.dev/identity-test-<pid>`) and with an in-memory mesh
//! CA, so it does not matter which operator build the cluster runs — issues the SPIFFE
//! certificate, and the pod reads it from its volume; a request naming another ServiceAccount is
//! denied with a reason naming the mismatch. The signer and the mesh CA Secret code run as a
//! ServiceAccount holding only the chart's grants for them (impersonated), so the RBAC is checked
//! by the real authorizer; the CA is the self-managed one, written to a real Secret.
//!
//! `#[ignore]`d like `e2e.rs`; `scripts/cluster-suite.sh` runs it (`e2e*` test targets) with
//!
//! ```sh
//! OUTRIGGER_E2E_KUBECONFIG=… cargo test -p outrigger-operator --test e2e_identity -- --include-ignored
//! ```
//!
//! It needs an API server serving `certificates.k8s.io/v1beta1` `podcertificaterequests` (the
//! `PodCertificateRequest` feature gate on the API server and the kubelet) and a node that has
//! `localhost/busybox:1` (the kit's; `OUTRIGGER_E2E_BUSYBOX_IMAGE` elsewhere). Everything lives
//! in the namespace `outrigger-id-<pid>`, deleted at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    ByteString,
    api::{
        certificates::v1beta1::{PodCertificateRequest, PodCertificateRequestSpec},
        core::v1::{Namespace, Node, Pod, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Config,
    api::{DeleteParams, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use outrigger_operator::{
    MeshCaHandle, MeshCaManager, MeshCaMode, Metrics, PCR_DENIED, PCR_ISSUED, SignerSettings,
    pem_certificates, run_signer, serves_pod_certificates,
};
use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use serde_json::json;
use x509_parser::{extensions::GeneralName, parse_x509_certificate, pem::Pem};

const NEEDS_CLUSTER: &str = "set OUTRIGGER_E2E_KUBECONFIG to a kubeconfig and run with --ignored";
/// How long a pod may take to start (the kubelet waits for the certificate before it starts it).
const POD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the signer may take to answer a request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

fn kubeconfig_path() -> String {
    std::env::var("OUTRIGGER_E2E_KUBECONFIG").unwrap_or_else(|_| {
        panic!("OUTRIGGER_E2E_KUBECONFIG is not set: {NEEDS_CLUSTER} (see operator/README.md)")
    })
}

async fn config() -> Config {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read OUTRIGGER_E2E_KUBECONFIG={path}: {e}"));
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn client() -> Client {
    Client::try_from(config().await).unwrap()
}

/// A client acting as the ServiceAccount `namespace/name` (the kubeconfig's user impersonates it).
async fn client_as(namespace: &str, name: &str) -> Client {
    let mut config = config().await;
    config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
    Client::try_from(config).unwrap()
}

/// What the chart grants the operator for the signer (charts/outrigger/templates/rbac.yaml),
/// with the test's signer name, and for a self-managed mesh CA Secret named `secret`.
fn signer_rbac(ns: &str, signer_name: &str, secret: &str) -> Vec<serde_json::Value> {
    let name = format!("{ns}-signer");
    let subjects = json!([{ "kind": "ServiceAccount", "name": "signer", "namespace": ns }]);
    vec![
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": name },
            "rules": [
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] },
                { "apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests"], "verbs": ["list", "watch"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["update"] },
                { "apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": [signer_name], "verbs": ["sign"] },
            ] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
            "subjects": subjects }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": { "name": "signer", "namespace": ns },
            "rules": [
                { "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] },
                { "apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "update"] },
            ] }),
        json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": { "name": "signer", "namespace": ns },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "signer" },
            "subjects": subjects }),
    ]
}

/// `kubectl` against the test cluster (from `$OUTRIGGER_TOOLS/bin` or PATH): success and output.
fn kubectl(args: &[&str]) -> (bool, String) {
    let bin = std::env::var_os("OUTRIGGER_TOOLS")
        .map(|t| std::path::Path::new(&t).join("bin/kubectl"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "kubectl".into());
    let out = Command::new(bin)
        .env("KUBECONFIG", kubeconfig_path())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Deletes the test namespace and its cluster-scoped RBAC when the test ends, passed or not.
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let rbac = format!("{}-signer", self.0);
        for args in [
            vec!["delete", "namespace", &self.0, "--wait=false"],
            vec![
                "delete",
                "clusterrole,clusterrolebinding",
                &rbac,
                "--ignore-not-found",
            ],
        ] {
            let (ok, out) = kubectl(&args);
            if !ok {
                eprintln!("cannot clean up ({args:?}): {out}");
            }
        }
    }
}

/// Polls `check` every second until it returns `Some`, or panics after `timeout` with `what`
/// and the output of `diagnose`.
async fn wait_for<T, F, Fut>(
    timeout: Duration,
    what: &str,
    diagnose: impl Fn() -> String,
    check: F,
) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}\n{}",
            diagnose()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn condition<'a>(
    pcr: &'a PodCertificateRequest,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pcr.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

#[tokio::test]
#[ignore = "needs a cluster: set OUTRIGGER_E2E_KUBECONFIG and run with --ignored"]
async fn pod_certificates_are_issued_to_the_pod_service_account_and_denied_for_another() {
    let client = client().await;
    assert!(
        serves_pod_certificates(&client).await.unwrap(),
        "the API server does not serve certificates.k8s.io/v1beta1 podcertificaterequests \
         (start it with --feature-gates=PodCertificateRequest=true and \
         --runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true)"
    );
    let pid = std::process::id();
    let ns = format!("outrigger-id-{pid}");
    let signer_name = format!("outrigger.dev/identity-test-{pid}");
    let image = std::env::var("OUTRIGGER_E2E_BUSYBOX_IMAGE")
        .unwrap_or_else(|_| "localhost/busybox:1".to_owned());

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap(),
        )
        .await
        .unwrap();
    let _guard = NamespaceGuard(ns.clone());
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for name in ["app", "other", "signer"] {
        sas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap(),
        )
        .await
        .unwrap();
    }

    // The operator's grants for the signer and its Secret, bound to the ServiceAccount `signer`.
    let mesh_secret = "mesh-ca";
    for object in signer_rbac(&ns, &signer_name, mesh_secret) {
        let file = std::env::temp_dir().join(format!("outrigger-id-{pid}-rbac.json"));
        std::fs::write(&file, object.to_string()).unwrap();
        let (ok, out) = kubectl(&["apply", "-f", file.to_str().unwrap()]);
        assert!(ok, "cannot apply {object}: {out}");
        let _ = std::fs::remove_file(file);
    }
    let signer_client = client_as(&ns, "signer").await;
    let forbidden =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(signer_client.clone(), &ns)
            .list(&ListParams::default())
            .await;
    assert!(
        matches!(&forbidden, Err(kube::Error::Api(s)) if s.code == 403),
        "the impersonated client holds only the granted rights: {forbidden:?}"
    );

    // A self-managed mesh CA, written to a real Secret by the operator's code running as `signer`;
    // a second replica (and a restart) loads the same CA; an external-mode reader sees it too.
    let manager = |mode| MeshCaManager {
        client: signer_client.clone(),
        namespace: ns.clone(),
        secret_name: mesh_secret.to_owned(),
        mode,
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let ca = wait_for(
        ANSWER_TIMEOUT,
        "the self-managed mesh CA Secret (RBAC may take a moment)",
        String::new,
        || async move {
            match manager(MeshCaMode::SelfManaged).ensure(now).await {
                Ok(ca) => Some(ca),
                Err(e) => {
                    eprintln!(
                        "mesh CA not ready yet: {e}: {:?}",
                        std::error::Error::source(&e)
                    );
                    None
                }
            }
        },
    )
    .await;
    let again = manager(MeshCaMode::SelfManaged)
        .ensure(now + 60)
        .await
        .unwrap();
    assert_eq!(
        again.material(),
        ca.material(),
        "a second replica keeps the CA"
    );
    let external = manager(MeshCaMode::External)
        .ensure(now + 60)
        .await
        .unwrap();
    assert_eq!(external.trust_bundle(), ca.trust_bundle());
    assert_eq!(external.material().root_key_pem, None);
    let stored = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get(mesh_secret)
        .await
        .unwrap();
    let keys: Vec<&String> = stored.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    let root_pem = ca.trust_bundle().to_owned();

    // The signer, in-process, as `signer`, with that CA.
    let metrics = Arc::new(Metrics::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signer = tokio::spawn(run_signer(
        signer_client.clone(),
        MeshCaHandle::fixed(ca),
        SignerSettings {
            signer_name: signer_name.clone(),
            ..SignerSettings::default()
        },
        metrics.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // A pod with a podCertificate volume: the kubelet makes the key, asks the signer, and starts
    // the pod only once the credential bundle is there.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "app" },
        "spec": {
            "serviceAccountName": "app",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
                "volumeMounts": [{ "name": "identity", "mountPath": "/var/run/outrigger-identity", "readOnly": true }],
            }],
            "volumes": [{ "name": "identity", "projected": { "sources": [{ "podCertificate": {
                "signerName": signer_name, "keyType": "ECDSAP256",
                "credentialBundlePath": "credentialbundle.pem",
            } }] } }],
        },
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let started = Instant::now();
    let diagnose = || {
        format!(
            "{}\n{}",
            kubectl(&["describe", "pod", "-n", &ns, "app"]).1,
            kubectl(&["get", "podcertificaterequests", "-n", &ns, "-o", "yaml"]).1
        )
    };
    let running = wait_for(POD_TIMEOUT, "pod app Running", &diagnose, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("app").await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        }
    })
    .await;
    eprintln!(
        "e2e identity: pod with a podCertificate volume Running after {:?}",
        started.elapsed()
    );

    // The credential bundle, read from inside the pod: a PEM private key, then the chain.
    let (ok, bundle) = kubectl(&[
        "exec",
        "-n",
        &ns,
        "app",
        "-c",
        "app",
        "--",
        "cat",
        "/var/run/outrigger-identity/credentialbundle.pem",
    ]);
    assert!(ok, "kubectl exec failed: {bundle}");
    let blocks: Vec<Pem> = Pem::iter_from_buffer(bundle.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the credential bundle is not PEM ({e}):\n{bundle}"));
    let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
    assert_eq!(
        labels,
        ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"],
        "a PKCS#8 private key, then the leaf and the issuing certificate"
    );
    let (_, leaf) = parse_x509_certificate(&blocks[1].contents).unwrap();
    let (_, issuer) = parse_x509_certificate(&blocks[2].contents).unwrap();
    let want_id = format!("spiffe://cluster.local/ns/{ns}/sa/app");
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::URI(&want_id)]);
    let key = KeyPair::from_pem(&bundle[..bundle.find("-----BEGIN CERTIFICATE").unwrap()]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice(),
        "the leaf certifies the key in the bundle"
    );
    let root_der = pem_certificates("root", &root_pem).unwrap().remove(0);
    let (_, root) = parse_x509_certificate(&root_der).unwrap();
    leaf.verify_signature(Some(issuer.public_key())).unwrap();
    issuer.verify_signature(Some(root.public_key())).unwrap();
    eprintln!("e2e identity: the pod holds {want_id}, chained to the test root");

    // The request the kubelet made is Issued, with refresh at half the lifetime.
    let requests: Api<PodCertificateRequest> = Api::namespaced(client.clone(), &ns);
    let issued = requests
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|r| r.spec.pod_name == "app" && r.spec.signer_name == signer_name)
        .expect("the kubelet's PodCertificateRequest");
    assert!(condition(&issued, PCR_ISSUED).is_some(), "{issued:?}");
    let status = issued.status.as_ref().unwrap();
    let (nb, na, refresh) = (
        status.not_before.as_ref().unwrap().0.as_second(),
        status.not_after.as_ref().unwrap().0.as_second(),
        status.begin_refresh_at.as_ref().unwrap().0.as_second(),
    );
    assert_eq!(na - nb, 86_400, "24 h");
    assert_eq!(refresh, nb + 43_200, "refresh at half the lifetime");
    assert_eq!(leaf.validity().not_before.timestamp(), nb);

    // A request for this pod naming another ServiceAccount (made as the kubelet would, with a
    // real key and CSR) is denied, naming both.
    let node_name = running.spec.as_ref().unwrap().node_name.clone().unwrap();
    let node = Api::<Node>::all(client.clone())
        .get(&node_name)
        .await
        .unwrap();
    let other = sas.get("other").await.unwrap();
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let forged = PodCertificateRequest {
        metadata: ObjectMeta {
            generate_name: Some("forged-".into()),
            ..ObjectMeta::default()
        },
        spec: PodCertificateRequestSpec {
            signer_name: signer_name.clone(),
            pod_name: "app".into(),
            pod_uid: running.metadata.uid.clone().unwrap(),
            service_account_name: "other".into(),
            service_account_uid: other.metadata.uid.clone().unwrap(),
            node_name: node_name.clone(),
            node_uid: node.metadata.uid.clone().unwrap(),
            max_expiration_seconds: Some(86_400),
            stub_pkc_s10_request: ByteString(csr.der().to_vec()),
            ..PodCertificateRequestSpec::default()
        },
        status: None,
    };
    let forged = requests
        .create(&PostParams::default(), &forged)
        .await
        .unwrap_or_else(|e| panic!("cannot create the PodCertificateRequest: {e}"));
    let forged_name = forged.metadata.name.clone().unwrap();
    let denied = wait_for(
        ANSWER_TIMEOUT,
        "the forged request to be answered",
        || kubectl(&["get", "podcertificaterequests", "-n", &ns, "-o", "yaml"]).1,
        || {
            let requests = requests.clone();
            let name = forged_name.clone();
            async move {
                let r = requests.get(&name).await.ok()?;
                r.status
                    .as_ref()?
                    .conditions
                    .as_ref()
                    .filter(|c| !c.is_empty())?;
                Some(r)
            }
        },
    )
    .await;
    let c =
        condition(&denied, PCR_DENIED).unwrap_or_else(|| panic!("not denied: {:?}", denied.status));
    assert_eq!(c.reason, "ServiceAccountMismatch");
    assert!(
        c.message.contains("\"app\"") && c.message.contains("\"other\""),
        "{}",
        c.message
    );
    assert!(denied.status.as_ref().unwrap().certificate_chain.is_none());
    eprintln!("e2e identity: forged request denied: {}", c.message);

    let text = metrics.encode();
    assert!(
        text.contains("outrigger_operator_pod_certificates_total{result=\"issued\"}"),
        "{text}"
    );
    assert!(
        text.contains("outrigger_operator_pod_certificates_total{result=\"denied\"} 1"),
        "{text}"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), signer)
        .await
        .expect("the signer stops on shutdown")
        .unwrap();
    pods.delete("app", &DeleteParams::default()).await.unwrap();
}
