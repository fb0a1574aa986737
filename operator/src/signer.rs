//! The Pod Certificates signer (KEP-4317): the operator signs `certificates.k8s.io/v1beta1`
//! `PodCertificateRequest`s for its signer name (`outrigger.dev/identity`) with the mesh CA. The
//! kubelet creates a request for each `podCertificate` projected volume; the signer checks that
//! the pod exists with that UID, on that node, under that ServiceAccount (name and UID), and
//! either issues the SPIFFE certificate `spiffe://<trust domain>/ns/<ns>/sa/<sa>` (refresh at
//! half its lifetime) or denies the request with a reason naming the mismatch. The decision and
//! the status are pure functions; the controller glue only reads the pod and ServiceAccount and
//! writes the status subresource. Not for the CA itself (`mesh_ca`) or for clusters without the
//! API (the CSR path).

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::StreamExt;
use k8s_openapi::{
    api::{
        certificates::v1beta1::{PodCertificateRequest, PodCertificateRequestStatus},
        core::v1::{Pod, ServiceAccount},
    },
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{Controller, controller::Action, watcher},
};
use parking_lot::Mutex;
use tracing::Instrument;

use crate::{
    mesh_ca::{
        IssuedLeaf, KeyError, MeshCaError, MeshCaHandle, check_public_key, csr_public_key,
        spiffe_id,
    },
    metrics::Metrics,
    names::{
        DEFAULT_IDENTITY_CERT_LIFETIME_SECS, DEFAULT_SIGNER_NAME, DEFAULT_TRUST_DOMAIN,
        MIN_IDENTITY_CERT_LIFETIME_SECS,
    },
};

/// Condition type of an issued request.
pub const PCR_ISSUED: &str = "Issued";
/// Condition type of a denied request.
pub const PCR_DENIED: &str = "Denied";
/// Condition type of a request the signer failed to issue.
pub const PCR_FAILED: &str = "Failed";
/// The `maxExpirationSeconds` the API server assumes when a request names none.
const DEFAULT_MAX_EXPIRATION_SECS: i64 = 86_400;
/// `beginRefreshAt` must lie at least this far inside the validity (API server validation).
const REFRESH_MARGIN_SECS: i64 = 600;

/// What the signer is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerSettings {
    /// The signer name requests must carry (`outrigger.dev/identity`; tests use their own).
    pub signer_name: String,
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// The lifetime of a certificate, cut to the request's `maxExpirationSeconds`.
    pub lifetime: Duration,
}

impl Default for SignerSettings {
    fn default() -> Self {
        Self {
            signer_name: DEFAULT_SIGNER_NAME.to_owned(),
            trust_domain: DEFAULT_TRUST_DOMAIN.to_owned(),
            lifetime: Duration::from_secs(u64::from(DEFAULT_IDENTITY_CERT_LIFETIME_SECS)),
        }
    }
}

/// What to do with one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PcrDecision {
    /// Not for this signer, or already issued, denied or failed.
    Ignore,
    /// Issue a certificate for `spiffe_id` to `public_key` (SubjectPublicKeyInfo DER).
    Issue {
        /// The certificate's only SAN.
        spiffe_id: String,
        /// The key to certify.
        public_key: Vec<u8>,
        /// How long the certificate is valid.
        lifetime: Duration,
    },
    /// Deny: `reason` is a condition reason, `message` names the mismatch.
    Deny {
        /// CamelCase condition reason.
        reason: &'static str,
        /// Human-readable detail.
        message: String,
    },
}

/// Whether the request already carries `Issued`, `Denied` or `Failed`.
pub fn is_terminal(pcr: &PodCertificateRequest) -> bool {
    pcr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                [PCR_ISSUED, PCR_DENIED, PCR_FAILED].contains(&c.type_.as_str())
                    && c.status == "True"
            })
        })
}

/// Decides a request from the pod and ServiceAccount it names (`None`: not found). Pure.
pub fn decide_pcr(
    pcr: &PodCertificateRequest,
    pod: Option<&Pod>,
    service_account: Option<&ServiceAccount>,
    settings: &SignerSettings,
) -> PcrDecision {
    let spec = &pcr.spec;
    if spec.signer_name != settings.signer_name || is_terminal(pcr) {
        return PcrDecision::Ignore;
    }
    let namespace = pcr.metadata.namespace.as_deref().unwrap_or_default();
    let deny = |reason, message: String| PcrDecision::Deny { reason, message };
    let Some(pod) = pod else {
        return deny(
            "PodNotFound",
            format!("pod {namespace}/{} does not exist", spec.pod_name),
        );
    };
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if pod_uid != spec.pod_uid {
        return deny(
            "PodUIDMismatch",
            format!(
                "pod {namespace}/{} has UID {pod_uid:?}, the request names {:?}",
                spec.pod_name, spec.pod_uid
            ),
        );
    }
    if pod.metadata.namespace.as_deref() != Some(namespace) {
        return deny(
            "PodNamespaceMismatch",
            format!(
                "pod {} is in namespace {:?}, the request in {namespace:?}",
                spec.pod_name,
                pod.metadata.namespace.as_deref().unwrap_or_default()
            ),
        );
    }
    let pod_spec = pod.spec.as_ref();
    let pod_sa = pod_spec
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    if pod_sa != spec.service_account_name {
        return deny(
            "ServiceAccountMismatch",
            format!(
                "pod {namespace}/{} runs as ServiceAccount {pod_sa:?}, the request names {:?}",
                spec.pod_name, spec.service_account_name
            ),
        );
    }
    let pod_node = pod_spec
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();
    if pod_node != spec.node_name {
        return deny(
            "NodeMismatch",
            format!(
                "pod {namespace}/{} is bound to node {pod_node:?}, the request names {:?}",
                spec.pod_name, spec.node_name
            ),
        );
    }
    let Some(sa) = service_account else {
        return deny(
            "ServiceAccountNotFound",
            format!(
                "ServiceAccount {namespace}/{} does not exist",
                spec.service_account_name
            ),
        );
    };
    let sa_uid = sa.metadata.uid.as_deref().unwrap_or_default();
    if sa_uid != spec.service_account_uid {
        return deny(
            "ServiceAccountUIDMismatch",
            format!(
                "ServiceAccount {namespace}/{} has UID {sa_uid:?}, the request names {:?}",
                spec.service_account_name, spec.service_account_uid
            ),
        );
    }
    if let Some(keys) = spec
        .unverified_user_annotations
        .as_ref()
        .filter(|a| !a.is_empty())
    {
        let keys: Vec<&str> = keys.keys().map(String::as_str).collect();
        return deny(
            "UnrecognizedAnnotation",
            format!(
                "{} accepts no unverifiedUserAnnotations; got {}",
                settings.signer_name,
                keys.join(", ")
            ),
        );
    }
    let public_key = match request_public_key(pcr) {
        Ok(k) => k,
        Err(e @ KeyError::Unsupported(_)) => return deny("UnsupportedKeyType", e.to_string()),
        Err(e @ KeyError::Malformed(_)) => return deny("InvalidPublicKey", e.to_string()),
    };
    let max = spec
        .max_expiration_seconds
        .map_or(DEFAULT_MAX_EXPIRATION_SECS, i64::from);
    let wanted = i64::try_from(settings.lifetime.as_secs()).unwrap_or(i64::MAX);
    let lifetime = wanted
        .min(max)
        .max(i64::from(MIN_IDENTITY_CERT_LIFETIME_SECS));
    PcrDecision::Issue {
        spiffe_id: spiffe_id(&settings.trust_domain, namespace, pod_sa),
        public_key,
        lifetime: Duration::from_secs(lifetime.unsigned_abs()),
    }
}

/// The requested key: from `stubPKCS10Request`, or the deprecated `pkixPublicKey`. Must be
/// ECDSA P-256.
fn request_public_key(pcr: &PodCertificateRequest) -> Result<Vec<u8>, KeyError> {
    let spec = &pcr.spec;
    let key = if !spec.stub_pkc_s10_request.0.is_empty() {
        csr_public_key(&spec.stub_pkc_s10_request.0)?
    } else if let Some(k) = spec.pkix_public_key.as_ref().filter(|k| !k.0.is_empty()) {
        k.0.clone()
    } else {
        return Err(KeyError::Malformed(
            "the request carries neither stubPKCS10Request nor pkixPublicKey".to_owned(),
        ));
    };
    check_public_key(&key)?;
    Ok(key)
}

/// When the kubelet should start refreshing: half-way through the validity, kept at least
/// 10 minutes inside it as the API server requires.
pub fn begin_refresh_at(not_before: i64, not_after: i64) -> i64 {
    let half = not_before + (not_after - not_before) / 2;
    half.max(not_before + REFRESH_MARGIN_SECS)
        .min(not_after - REFRESH_MARGIN_SECS)
}

fn time(unix: i64) -> Time {
    Time(Timestamp::from_second(unix).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn condition(type_: &str, reason: &str, message: String, now: i64) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: time(now),
        observed_generation: None,
    }
}

/// The status of an issued request: chain, validity, refresh time and `Issued`.
pub fn issued_status(leaf: &IssuedLeaf, spiffe_id: &str, now: i64) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        certificate_chain: Some(leaf.chain_pem.clone()),
        not_before: Some(time(leaf.not_before)),
        not_after: Some(time(leaf.not_after)),
        begin_refresh_at: Some(time(begin_refresh_at(leaf.not_before, leaf.not_after))),
        conditions: Some(vec![condition(
            PCR_ISSUED,
            "Issued",
            format!("issued {spiffe_id}"),
            now,
        )]),
    }
}

/// The status of a denied request: only the `Denied` condition.
pub fn denied_status(reason: &str, message: &str, now: i64) -> PodCertificateRequestStatus {
    PodCertificateRequestStatus {
        conditions: Some(vec![condition(PCR_DENIED, reason, message.to_owned(), now)]),
        ..PodCertificateRequestStatus::default()
    }
}

/// Why handling a request failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The request has no namespace.
    #[error("PodCertificateRequest {0} has no namespace")]
    MissingNamespace(String),
    /// Reading the pod or ServiceAccount failed.
    #[error("cannot read {what}")]
    Read {
        /// What was read.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The mesh CA has not loaded yet.
    #[error("the mesh CA is not loaded yet")]
    CaNotReady,
    /// Signing failed.
    #[error("cannot sign for {spiffe_id}")]
    Sign {
        /// The identity.
        spiffe_id: String,
        /// The CA error.
        #[source]
        source: MeshCaError,
    },
    /// The status write failed.
    #[error("cannot write the status of PodCertificateRequest {namespace}/{name}")]
    WriteStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl SignerError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SignerError::MissingNamespace(_) => "missing_namespace",
            SignerError::Read { .. } => "read",
            SignerError::CaNotReady => "ca_not_ready",
            SignerError::Sign { .. } => "sign",
            SignerError::WriteStatus { .. } => "write_status",
        }
    }
}

/// What every signing shares.
pub struct SignerContext {
    client: Client,
    ca: MeshCaHandle,
    settings: SignerSettings,
    metrics: Arc<Metrics>,
    failures: Mutex<HashMap<String, u32>>,
}

impl SignerContext {
    /// A context signing with `ca` under `settings`.
    pub fn new(
        client: Client,
        ca: MeshCaHandle,
        settings: SignerSettings,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            ca,
            settings,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Handles one request: ignore, deny or issue, through the status subresource.
pub async fn sign_request(
    pcr: Arc<PodCertificateRequest>,
    ctx: Arc<SignerContext>,
) -> Result<Action, SignerError> {
    let name = pcr.name_any();
    let namespace = pcr
        .namespace()
        .ok_or_else(|| SignerError::MissingNamespace(name.clone()))?;
    if pcr.spec.signer_name != ctx.settings.signer_name || is_terminal(&pcr) {
        return Ok(Action::await_change());
    }
    let span = tracing::info_span!("sign", namespace = %namespace, request = %name, pod = %pcr.spec.pod_name, service_account = %pcr.spec.service_account_name);
    let action = handle(&pcr, &ctx, &namespace, &name)
        .instrument(span)
        .await?;
    ctx.failures.lock().remove(&format!("{namespace}/{name}"));
    Ok(action)
}

async fn handle(
    pcr: &PodCertificateRequest,
    ctx: &SignerContext,
    namespace: &str,
    name: &str,
) -> Result<Action, SignerError> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pod = pods
        .get_opt(&pcr.spec.pod_name)
        .await
        .map_err(|source| SignerError::Read {
            what: format!("pod {namespace}/{}", pcr.spec.pod_name),
            source,
        })?;
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let sa = sas
        .get_opt(&pcr.spec.service_account_name)
        .await
        .map_err(|source| SignerError::Read {
            what: format!(
                "ServiceAccount {namespace}/{}",
                pcr.spec.service_account_name
            ),
            source,
        })?;
    let now = Timestamp::now().as_second();
    let (status, result) = match decide_pcr(pcr, pod.as_ref(), sa.as_ref(), &ctx.settings) {
        PcrDecision::Ignore => return Ok(Action::await_change()),
        PcrDecision::Deny { reason, message } => {
            tracing::warn!(decision = "denied", reason, %message, "pod certificate denied");
            (denied_status(reason, &message, now), "denied")
        }
        PcrDecision::Issue {
            spiffe_id,
            public_key,
            lifetime,
        } => {
            let ca = ctx.ca.current().ok_or(SignerError::CaNotReady)?;
            let leaf = ca
                .sign_leaf(&public_key, &spiffe_id, lifetime, now)
                .map_err(|source| SignerError::Sign {
                    spiffe_id: spiffe_id.clone(),
                    source,
                })?;
            tracing::info!(decision = "issued", %spiffe_id, not_after = leaf.not_after, "pod certificate issued");
            (issued_status(&leaf, &spiffe_id, now), "issued")
        }
    };
    let mut updated = pcr.clone();
    updated.status = Some(status);
    let api: Api<PodCertificateRequest> = Api::namespaced(ctx.client.clone(), namespace);
    match api
        .replace_status(name, &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {
            ctx.metrics.pod_certificate(result);
            Ok(Action::await_change())
        }
        // The request changed under us (or another signer answered): the watch brings the new
        // version.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Action::requeue(Duration::from_secs(1))),
        Err(source) => Err(SignerError::WriteStatus {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        }),
    }
}

/// Logs the failure, counts it and retries with a per-request backoff (1 s doubling to 1 min:
/// the kubelet waits for the certificate before it starts the pod).
pub fn signer_error_policy(
    pcr: Arc<PodCertificateRequest>,
    error: &SignerError,
    ctx: Arc<SignerContext>,
) -> Action {
    let key = format!("{}/{}", pcr.namespace().unwrap_or_default(), pcr.name_any());
    let failures = {
        let mut map = ctx.failures.lock();
        let n = map.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    ctx.metrics.pod_certificate_failed(error.kind());
    let delay = Duration::from_secs(1u64 << failures.saturating_sub(1).min(6));
    tracing::warn!(request = %key, error = %error, source = ?std::error::Error::source(error), failures, retry_in = ?delay, "pod certificate request not handled");
    Action::requeue(delay)
}

/// Runs the signer over every namespace until `shutdown` resolves: watches the requests for
/// `settings.signer_name` (a field selector) and answers each once.
pub async fn run_signer(
    client: Client,
    ca: MeshCaHandle,
    settings: SignerSettings,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let requests: Api<PodCertificateRequest> = Api::all(client.clone());
    let selector = format!("spec.signerName={}", settings.signer_name);
    tracing::info!(signer = %settings.signer_name, trust_domain = %settings.trust_domain, "pod certificate signer starting");
    let ctx = Arc::new(SignerContext::new(client, ca, settings, metrics));
    Controller::new(requests, watcher::Config::default().fields(&selector))
        .graceful_shutdown_on(shutdown)
        .run(sign_request, signer_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "signer event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;

    use k8s_openapi::{
        ByteString,
        api::{certificates::v1beta1::PodCertificateRequestSpec, core::v1::PodSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P384_SHA384, PublicKeyData};

    use super::*;

    fn csr(key: &KeyPair) -> ByteString {
        let req = CertificateParams::default().serialize_request(key).unwrap();
        ByteString(req.der().to_vec())
    }

    fn request(sa: &str, key: &KeyPair) -> PodCertificateRequest {
        PodCertificateRequest {
            metadata: ObjectMeta {
                name: Some("req-1".into()),
                namespace: Some("apps".into()),
                ..ObjectMeta::default()
            },
            spec: PodCertificateRequestSpec {
                signer_name: DEFAULT_SIGNER_NAME.into(),
                pod_name: "web-0".into(),
                pod_uid: "pod-uid".into(),
                service_account_name: sa.into(),
                service_account_uid: "sa-uid".into(),
                node_name: "node1".into(),
                node_uid: "node-uid".into(),
                max_expiration_seconds: Some(86_400),
                stub_pkc_s10_request: csr(key),
                ..PodCertificateRequestSpec::default()
            },
            status: None,
        }
    }

    fn pod(sa: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("apps".into()),
                uid: Some("pod-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: sa.map(str::to_owned),
                node_name: Some("node1".into()),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    fn sa(name: &str) -> ServiceAccount {
        ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                uid: Some("sa-uid".into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        }
    }

    fn reason(d: &PcrDecision) -> &str {
        match d {
            PcrDecision::Deny { reason, .. } => reason,
            PcrDecision::Issue { .. } => "issue",
            PcrDecision::Ignore => "ignore",
        }
    }

    #[test]
    fn decisions() {
        let key = KeyPair::generate().unwrap();
        let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let settings = SignerSettings::default();
        let good = request("web", &key);
        let with = |f: &dyn Fn(&mut PodCertificateRequest)| {
            let mut r = good.clone();
            f(&mut r);
            r
        };
        let mut other_uid_pod = pod(Some("web"));
        other_uid_pod.metadata.uid = Some("recreated".into());
        let mut other_node_pod = pod(Some("web"));
        other_node_pod.spec.as_mut().unwrap().node_name = Some("node2".into());
        let mut other_sa_uid = sa("web");
        other_sa_uid.metadata.uid = Some("new-sa-uid".into());
        let issued = with(&|r| {
            r.status = Some(denied_status("X", "y", 0));
        });
        type Case<'a> = (
            &'a str,
            PodCertificateRequest,
            Option<Pod>,
            Option<ServiceAccount>,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "valid",
                good.clone(),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "issue",
            ),
            (
                "default service account",
                request("default", &key),
                Some(pod(None)),
                Some(sa("default")),
                "issue",
            ),
            (
                "another signer",
                with(&|r| r.spec.signer_name = "example.com/other".into()),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "ignore",
            ),
            (
                "already answered",
                issued,
                Some(pod(Some("web"))),
                Some(sa("web")),
                "ignore",
            ),
            (
                "pod gone",
                good.clone(),
                None,
                Some(sa("web")),
                "PodNotFound",
            ),
            (
                "pod recreated",
                good.clone(),
                Some(other_uid_pod),
                Some(sa("web")),
                "PodUIDMismatch",
            ),
            (
                "wrong service account",
                request("admin", &key),
                Some(pod(Some("web"))),
                Some(sa("admin")),
                "ServiceAccountMismatch",
            ),
            (
                "other node",
                good.clone(),
                Some(other_node_pod),
                Some(sa("web")),
                "NodeMismatch",
            ),
            (
                "service account gone",
                good.clone(),
                Some(pod(Some("web"))),
                None,
                "ServiceAccountNotFound",
            ),
            (
                "service account recreated",
                good.clone(),
                Some(pod(Some("web"))),
                Some(other_sa_uid),
                "ServiceAccountUIDMismatch",
            ),
            (
                "annotations",
                with(&|r| {
                    r.spec.unverified_user_annotations =
                        Some(BTreeMap::from([("example.com/x".into(), "1".into())]))
                }),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "UnrecognizedAnnotation",
            ),
            (
                "P-384 key",
                request("web", &p384),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "UnsupportedKeyType",
            ),
            (
                "garbage request",
                with(&|r| r.spec.stub_pkc_s10_request = ByteString(b"junk".to_vec())),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "InvalidPublicKey",
            ),
            (
                "deprecated pkixPublicKey",
                with(&|r| {
                    r.spec.stub_pkc_s10_request = ByteString(Vec::new());
                    r.spec.pkix_public_key = Some(ByteString(key.subject_public_key_info()));
                }),
                Some(pod(Some("web"))),
                Some(sa("web")),
                "issue",
            ),
        ];
        for (case, req, pod, sa, expected) in cases {
            let d = decide_pcr(&req, pod.as_ref(), sa.as_ref(), &settings);
            assert_eq!(reason(&d), expected, "{case}: {d:?}");
            if let PcrDecision::Deny { message, .. } = &d {
                assert!(message.len() > 10, "{case}: {message}");
            }
        }
        let PcrDecision::Issue {
            spiffe_id,
            public_key,
            lifetime,
        } = decide_pcr(&good, Some(&pod(Some("web"))), Some(&sa("web")), &settings)
        else {
            panic!("not issued")
        };
        assert_eq!(spiffe_id, "spiffe://cluster.local/ns/apps/sa/web");
        assert_eq!(public_key, key.subject_public_key_info());
        assert_eq!(lifetime, Duration::from_secs(86_400));
        let PcrDecision::Deny { message, .. } = decide_pcr(
            &request("admin", &key),
            Some(&pod(Some("web"))),
            Some(&sa("admin")),
            &settings,
        ) else {
            panic!("not denied")
        };
        assert!(
            message.contains("\"web\"") && message.contains("\"admin\""),
            "{message}"
        );
    }

    #[test]
    fn lifetime_is_the_setting_cut_to_the_request_and_at_least_an_hour() {
        let key = KeyPair::generate().unwrap();
        let cases = [
            (86_400, Some(86_400), 86_400),
            (86_400, Some(7_200), 7_200),
            (3_600, Some(86_400), 3_600),
            (86_400, None, 86_400),
            (200_000, None, 86_400),
            (86_400, Some(100), 3_600),
        ];
        for (setting, max, expected) in cases {
            let settings = SignerSettings {
                lifetime: Duration::from_secs(setting),
                ..SignerSettings::default()
            };
            let mut r = request("web", &key);
            r.spec.max_expiration_seconds = max;
            let d = decide_pcr(&r, Some(&pod(Some("web"))), Some(&sa("web")), &settings);
            let PcrDecision::Issue { lifetime, .. } = d else {
                panic!("{d:?}")
            };
            assert_eq!(lifetime.as_secs(), expected, "{setting} {max:?}");
        }
    }

    #[test]
    fn refresh_is_half_way_and_inside_the_api_bounds() {
        let cases = [
            (0, 86_400, 43_200),
            (1_000, 4_600, 2_800),
            (0, 3_600, 1_800),
        ];
        for (nb, na, expected) in cases {
            let at = begin_refresh_at(nb, na);
            assert_eq!(at, expected, "{nb} {na}");
        }
        for lifetime in [3_600, 7_200, 86_400, 7_862_400] {
            let at = begin_refresh_at(100, 100 + lifetime);
            assert!(at >= 100 + 600 && at <= 100 + lifetime - 600, "{lifetime}");
        }
    }

    #[test]
    fn statuses_carry_exactly_one_terminal_condition() {
        let leaf = IssuedLeaf {
            chain_pem: "PEM".into(),
            not_before: 1_000,
            not_after: 1_000 + 86_400,
        };
        let s = issued_status(&leaf, "spiffe://cluster.local/ns/a/sa/b", 1_180);
        let c = s.conditions.as_ref().unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            ("Issued", "True")
        );
        assert_eq!(s.not_before.unwrap().0.as_second(), 1_000);
        assert_eq!(s.not_after.unwrap().0.as_second(), 87_400);
        assert_eq!(s.begin_refresh_at.unwrap().0.as_second(), 1_000 + 43_200);
        let d = denied_status("ServiceAccountMismatch", "pod runs as x", 5);
        let c = d.conditions.as_ref().unwrap();
        assert_eq!(
            (c[0].type_.as_str(), c[0].reason.as_str()),
            ("Denied", "ServiceAccountMismatch")
        );
        assert!(
            d.certificate_chain.is_none() && d.not_before.is_none() && d.begin_refresh_at.is_none()
        );
        let mut r = request("web", &KeyPair::generate().unwrap());
        assert!(!is_terminal(&r));
        r.status = Some(d);
        assert!(is_terminal(&r));
    }
}
