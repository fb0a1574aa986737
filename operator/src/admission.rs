//! The two admission webhooks as pure functions from an `AdmissionReview` v1 request body to the
//! `AdmissionReview` response: `/mutate-pods` (sidecar injection) and `/validate-runtimeconfigs`
//! (the sidecar's own validation, so `kubectl apply` fails with the same error list). Every answer
//! is an `AdmissionReview`: a business failure is a deny with a reason, never an HTTP error. Not
//! for serving HTTPS (`webhook`) or deciding injection (`inject`).

use futures_util::future::BoxFuture;
use k8s_openapi::{ByteString, api::core::v1::Pod};
use kube::core::{
    DynamicObject, Status,
    admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
    response::{StatusCause, StatusDetails},
};
use outrigger_config::{ValidationErrors, validate};
use serde_json::Value;

use crate::{
    crd::RuntimeConfig,
    inject::{self, Injection, Selection, SidecarSettings, Skip},
    names::{ANNOTATION_INJECT_POLICY, INJECT_POLICY_REQUIRED},
    skips::SkipNotice,
};

/// What the mutating webhook can know beyond the pod: answers are `None` when unknown (the
/// standalone webhook has no API server).
pub trait ClusterView: Send + Sync {
    /// Whether the namespace carries `outrigger.dev/inject=enabled`.
    fn namespace_opted_in(&self, namespace: &str) -> Option<bool>;
    /// Whether the RuntimeConfig `namespace/name` exists.
    fn runtime_config_exists(&self, namespace: &str, name: &str) -> Option<bool>;
    /// Whether the namespace carries `outrigger.dev/inject-policy: required` (label or
    /// annotation).
    fn namespace_requires_injection(&self, _namespace: &str) -> Option<bool> {
        None
    }
    /// The hash of the config the ConfigMap of RuntimeConfig `namespace/name` holds.
    fn config_hash(&self, _namespace: &str, _name: &str) -> Option<String> {
        None
    }
    /// The namespace's UID (Events about a namespace name it).
    fn namespace_uid(&self, _namespace: &str) -> Option<String> {
        None
    }
}

/// The view of the standalone webhook and offline tools: nothing is known.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCluster;

impl ClusterView for NoCluster {
    fn namespace_opted_in(&self, _: &str) -> Option<bool> {
        None
    }
    fn runtime_config_exists(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// A RuntimeConfig as read from the API server at admission time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveConfig {
    /// The RuntimeConfig exists.
    pub exists: bool,
    /// The hash its ConfigMap holds, if the controller has written it yet.
    pub hash: Option<String>,
}

/// Reads a RuntimeConfig from the API server, for when the cache says it does not exist (it may
/// have been created a moment ago).
pub trait ConfigLookup: Send + Sync {
    /// Looks `namespace/name` up.
    fn lookup<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<LiveConfig, kube::Error>>;
}

/// What one mutating admission decided, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MutateVerdict {
    /// A patch was returned.
    Injected,
    /// Not injected, and why. Skips that [`Skip::warns`] were marked on the pod.
    Skipped(Skip),
    /// Not injected and `outrigger.dev/inject-policy: required`: the pod was denied.
    Denied(Skip),
    /// Not a pod creation: left alone.
    Ignored(String),
    /// The review could not be read or the object was not a pod.
    Invalid(String),
}

/// One `/mutate-pods` admission: the review to answer, the verdict, and whom to tell about a
/// skip (none for dry runs: the webhook's only side effect is that Event).
#[derive(Clone, Debug)]
pub struct PodAdmission {
    /// The `AdmissionReview` response.
    pub review: Value,
    /// What was decided.
    pub verdict: MutateVerdict,
    /// The Event to record for a skip the user should hear about.
    pub notice: Option<SkipNotice>,
    /// The pod, as `namespace/name` (or `namespace/generateName*`), for logs.
    pub pod: Option<String>,
    /// Injected without an `outrigger.dev/config-hash` stamp: the RuntimeConfig
    /// (`namespace`, `name`) whose ConfigMap hash the cache does not know yet.
    pub unstamped: Option<(String, String)>,
}

/// Handles a `/mutate-pods` review body. `namespace_opted_in` is true when the webhook
/// registration already selected the namespace by label (it called
/// [`crate::MUTATE_PODS_NAMESPACE_OPTED_IN_PATH`]).
pub fn mutate_pods(
    body: &[u8],
    settings: &SidecarSettings,
    cluster: &dyn ClusterView,
    namespace_opted_in: bool,
) -> (Value, MutateVerdict) {
    let a = admit_pod(body, settings, cluster, namespace_opted_in);
    (a.review, a.verdict)
}

/// [`admit_pod`], but a RuntimeConfig the cache does not know is looked up live before the pod
/// is skipped or denied for it: a config created a moment before the pod must not cause a skip.
/// A failed lookup leaves the cache's answer (and is logged).
pub async fn admit_pod_live(
    body: &[u8],
    settings: &SidecarSettings,
    cluster: &dyn ClusterView,
    lookup: Option<&dyn ConfigLookup>,
    namespace_opted_in: bool,
) -> PodAdmission {
    let first = admit_pod(body, settings, cluster, namespace_opted_in);
    let (namespace, name) = match (&first.verdict, &first.unstamped) {
        (
            MutateVerdict::Skipped(Skip::ConfigNotFound { namespace, name })
            | MutateVerdict::Denied(Skip::ConfigNotFound { namespace, name }),
            _,
        )
        | (MutateVerdict::Injected, Some((namespace, name))) => (namespace, name),
        _ => return first,
    };
    let Some(lookup) = lookup else {
        return first;
    };
    match lookup.lookup(namespace, name).await {
        Ok(live) if live.exists => {
            if first.verdict == MutateVerdict::Injected && live.hash.is_none() {
                return first;
            }
            tracing::info!(%namespace, %name, hash = ?live.hash, "RuntimeConfig or its ConfigMap not in the cache yet; read live");
            let view = Found {
                base: cluster,
                namespace,
                name,
                hash: live.hash,
            };
            admit_pod(body, settings, &view, namespace_opted_in)
        }
        Ok(_) => first,
        Err(e) => {
            tracing::warn!(%namespace, %name, error = %e, "cannot look the RuntimeConfig up; using the cache's answer");
            first
        }
    }
}

/// The cache's view, plus one RuntimeConfig known to exist.
struct Found<'a> {
    base: &'a dyn ClusterView,
    namespace: &'a str,
    name: &'a str,
    hash: Option<String>,
}

impl ClusterView for Found<'_> {
    fn namespace_opted_in(&self, namespace: &str) -> Option<bool> {
        self.base.namespace_opted_in(namespace)
    }
    fn runtime_config_exists(&self, namespace: &str, name: &str) -> Option<bool> {
        if (namespace, name) == (self.namespace, self.name) {
            Some(true)
        } else {
            self.base.runtime_config_exists(namespace, name)
        }
    }
    fn namespace_requires_injection(&self, namespace: &str) -> Option<bool> {
        self.base.namespace_requires_injection(namespace)
    }
    fn config_hash(&self, namespace: &str, name: &str) -> Option<String> {
        if (namespace, name) == (self.namespace, self.name) {
            self.hash.clone()
        } else {
            self.base.config_hash(namespace, name)
        }
    }
    fn namespace_uid(&self, namespace: &str) -> Option<String> {
        self.base.namespace_uid(namespace)
    }
}

/// Decides one `/mutate-pods` review from what `cluster` knows (pure).
pub fn admit_pod(
    body: &[u8],
    settings: &SidecarSettings,
    cluster: &dyn ClusterView,
    namespace_opted_in: bool,
) -> PodAdmission {
    let done = |review, verdict| PodAdmission {
        review,
        verdict,
        notice: None,
        pod: None,
        unstamped: None,
    };
    let request = match parse(body) {
        Ok(r) => r,
        Err(e) => {
            return done(
                review(AdmissionResponse::invalid(&e)),
                MutateVerdict::Invalid(e),
            );
        }
    };
    let response = AdmissionResponse::from(&request);
    if request.operation != Operation::Create {
        let why = format!("{:?} is not injected", request.operation);
        return done(review(response), MutateVerdict::Ignored(why));
    }
    let pod: Pod = match request
        .object
        .as_ref()
        .map(|o| serde_json::to_value(o).and_then(serde_json::from_value))
    {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            let why = format!("the object is not a Pod: {e}");
            return done(review(response.deny(&why)), MutateVerdict::Invalid(why));
        }
        None => {
            let why = "the request has no object".to_owned();
            return done(review(response.deny(&why)), MutateVerdict::Invalid(why));
        }
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned());
    let subject = Some(format!(
        "{namespace}/{}",
        match (&pod.metadata.name, &pod.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => String::new(),
        }
    ));
    let done = |review, verdict| PodAdmission {
        review,
        verdict,
        notice: None,
        pod: subject.clone(),
        unstamped: None,
    };
    let opted_in = namespace_opted_in || cluster.namespace_opted_in(&namespace) == Some(true);
    let config = inject::config_name(&pod);
    let config_exists = cluster.runtime_config_exists(&namespace, config);
    let config_hash = cluster.config_hash(&namespace, config);
    let req = inject::Request {
        namespace: Some(&namespace),
        selection: Selection::OptIn {
            namespace_opted_in: opted_in,
        },
        config_exists,
        config_hash: config_hash.as_deref(),
    };
    let skip = match inject::inject(&pod, &req, settings) {
        Injection::Patched { patch, warnings } => {
            let mut response = match response.with_patch(patch) {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("cannot serialise the patch: {e}");
                    let denied = AdmissionResponse::from(&request).deny(&why);
                    return done(review(denied), MutateVerdict::Invalid(why));
                }
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            let mut admitted = done(review(response), MutateVerdict::Injected);
            if config_hash.is_none() {
                admitted.unstamped = Some((namespace.clone(), config.to_owned()));
            }
            return admitted;
        }
        Injection::Unchanged(skip) => skip,
    };
    if !skip.warns() {
        return done(review(response), MutateVerdict::Skipped(skip));
    }
    let required = inject::policy_required(&pod)
        || cluster.namespace_requires_injection(&namespace) == Some(true);
    if required {
        let why = format!(
            "outrigger: {skip}; {ANNOTATION_INJECT_POLICY}: {INJECT_POLICY_REQUIRED} denies pods without the sidecar"
        );
        return done(review(response.deny(why)), MutateVerdict::Denied(skip));
    }
    let mut response = match inject::skip_patch(&pod, &skip).map(|p| response.clone().with_patch(p))
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot serialise the skip annotation");
            response
        }
        None => response,
    };
    response.warnings = Some(vec![format!("outrigger: {skip}")]);
    let notice = (!request.dry_run)
        .then(|| SkipNotice::new(&pod, &namespace, cluster.namespace_uid(&namespace), &skip));
    PodAdmission {
        review: review(response),
        verdict: MutateVerdict::Skipped(skip),
        notice,
        pod: subject,
        unstamped: None,
    }
}

/// Handles a `/validate-runtimeconfigs` review body: allowed exactly when the sidecar would load
/// the spec; a denial lists every problem. Also returns the problems, for logs.
pub fn validate_runtime_configs(body: &[u8]) -> (Value, Vec<String>) {
    let request = match parse(body) {
        Ok(r) => r,
        Err(e) => return (review(AdmissionResponse::invalid(&e)), vec![e]),
    };
    let response = AdmissionResponse::from(&request);
    if request.operation == Operation::Delete {
        return (review(response), Vec::new());
    }
    let Some(object) = request.object.as_ref() else {
        let why = "the request has no object".to_owned();
        return (review(response.deny(&why)), vec![why]);
    };
    // The request's name is empty on CREATE with `generateName`; the object may still have one.
    let name = if request.name.is_empty() {
        object.metadata.name.clone().unwrap_or_default()
    } else {
        request.name.clone()
    };
    let who = format!(
        "RuntimeConfig {}/{}",
        request.namespace.as_deref().unwrap_or("default"),
        if name.is_empty() {
            "<generated>"
        } else {
            &name
        }
    );
    let rc: RuntimeConfig = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(rc) => rc,
        Err(e) => {
            let why = format!("{who} cannot be read as the sidecar's config: {e}");
            return (review(response.deny(&why)), vec![why]);
        }
    };
    match validate(&rc.spec) {
        Ok(()) => (review(response), Vec::new()),
        Err(errors) => {
            let mut denied = response;
            denied.allowed = false;
            denied.result = denial(&who, &name, &errors);
            (review(denied), errors.lines())
        }
    }
}

/// The denial's status. `details.name` and `details.kind` are what `kubectl` prints
/// (`The RuntimeConfig "web" is invalid: ...`), so they must name the object.
fn denial(who: &str, name: &str, errors: &ValidationErrors) -> Status {
    let mut message = format!("{who} is invalid: {} problem(s):", errors.0.len());
    for line in errors.lines() {
        message.push_str("\n  - ");
        message.push_str(&line);
    }
    let causes = errors
        .0
        .iter()
        .map(|e| StatusCause {
            reason: "FieldValueInvalid".to_owned(),
            message: e.message.clone(),
            field: format!("spec.{}", e.path),
        })
        .collect();
    Status::failure(&message, "Invalid")
        .with_code(422)
        .with_details(StatusDetails {
            name: name.to_owned(),
            group: crate::names::GROUP.to_owned(),
            kind: crate::names::KIND.to_owned(),
            uid: String::new(),
            causes,
            retry_after_seconds: 0,
        })
}

fn parse(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, String> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: {e}"))?;
    review
        .try_into()
        .map_err(|_| "the AdmissionReview has no request".to_owned())
}

/// The response review as JSON, with `patch` base64-encoded as the API documents it.
fn review(response: AdmissionResponse) -> Value {
    let patch = response.patch.clone();
    let mut value = serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
    if let (Some(bytes), Some(slot)) = (patch, value.pointer_mut("/response/patch")) {
        *slot = serde_json::to_value(ByteString(bytes)).unwrap_or(Value::Null);
    }
    value
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use serde_json::json;

    use super::*;

    fn review_of(kind: &str, operation: &str, object: Value) -> Vec<u8> {
        let (group, version, resource) = match kind {
            "Pod" => ("", "v1", "pods"),
            _ => ("outrigger.dev", "v1alpha1", "runtimeconfigs"),
        };
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": { "group": group, "version": version, "kind": kind },
                "resource": { "group": group, "version": version, "resource": resource },
                "namespace": "apps",
                "name": "web",
                "operation": operation,
                "userInfo": { "username": "admin", "groups": ["system:authenticated"] },
                "object": object,
                "oldObject": null,
                "dryRun": false,
            }
        }))
        .unwrap()
    }

    fn without_request_name(body: Vec<u8>) -> Vec<u8> {
        let mut v: Value = serde_json::from_slice(&body).unwrap();
        v["request"]["name"] = json!("");
        serde_json::to_vec(&v).unwrap()
    }

    struct Cluster {
        ns_opted_in: bool,
        configs: &'static [&'static str],
    }
    impl ClusterView for Cluster {
        fn namespace_opted_in(&self, _: &str) -> Option<bool> {
            Some(self.ns_opted_in)
        }
        fn runtime_config_exists(&self, _: &str, name: &str) -> Option<bool> {
            Some(self.configs.contains(&name))
        }
    }

    fn pod(annotations: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web", "annotations": annotations },
                "spec": { "containers": [{ "name": "app", "image": "app" }] } })
    }

    #[test]
    fn mutate_reviews() {
        let s = SidecarSettings::default();
        let with_default = Cluster {
            ns_opted_in: false,
            configs: &["default"],
        };
        let ns_on = Cluster {
            ns_opted_in: true,
            configs: &["default"],
        };
        let no_configs = Cluster {
            ns_opted_in: true,
            configs: &[],
        };
        let opted = pod(json!({ "outrigger.dev/inject": "true" }));
        // (case, body, cluster, query opt-in, patched, warning fragment)
        type Case<'a> = (
            &'a str,
            Vec<u8>,
            &'a dyn ClusterView,
            bool,
            bool,
            Option<&'a str>,
        );
        let cases: [Case<'_>; 7] = [
            (
                "annotation opt-in",
                review_of("Pod", "CREATE", opted.clone()),
                &NoCluster,
                false,
                true,
                None,
            ),
            (
                "namespace label via cluster view",
                review_of("Pod", "CREATE", pod(json!({}))),
                &ns_on,
                false,
                true,
                None,
            ),
            (
                "namespace label via query",
                review_of("Pod", "CREATE", pod(json!({}))),
                &NoCluster,
                true,
                true,
                None,
            ),
            (
                "not selected",
                review_of("Pod", "CREATE", pod(json!({}))),
                &with_default,
                false,
                false,
                None,
            ),
            (
                "missing RuntimeConfig warns and marks the pod",
                review_of("Pod", "CREATE", opted.clone()),
                &no_configs,
                false,
                true,
                Some("RuntimeConfig apps/default"),
            ),
            (
                "update is left alone",
                review_of("Pod", "UPDATE", opted.clone()),
                &NoCluster,
                false,
                false,
                None,
            ),
            (
                "bad native annotation warns but injects",
                review_of(
                    "Pod",
                    "CREATE",
                    pod(
                        json!({ "outrigger.dev/inject": "true", "outrigger.dev/native-sidecar": "yes" }),
                    ),
                ),
                &NoCluster,
                false,
                true,
                Some("native-sidecar"),
            ),
        ];
        for (case, body, cluster, query, patched, warning) in cases {
            let (out, _) = mutate_pods(&body, &s, cluster, query);
            assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{case}");
            assert_eq!(out["kind"], "AdmissionReview", "{case}");
            let r = &out["response"];
            assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002", "{case}");
            assert_eq!(r["allowed"], true, "{case}");
            assert_eq!(r["patch"].is_string(), patched, "{case}: {r}");
            assert_eq!(
                r["patchType"].as_str(),
                patched.then_some("JSONPatch"),
                "{case}"
            );
            match warning {
                Some(w) => assert!(
                    r["warnings"][0].as_str().unwrap().contains(w),
                    "{case}: {r}"
                ),
                None => assert!(r.get("warnings").is_none(), "{case}: {r}"),
            }
        }
    }

    fn patched(out: &Value, pod: &Value) -> Value {
        let bytes: ByteString = serde_json::from_value(out["response"]["patch"].clone()).unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes.0).unwrap();
        let mut doc = pod.clone();
        json_patch::patch(&mut doc, &patch).unwrap();
        doc
    }

    fn owned_pod(annotations: Value) -> Value {
        json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "generateName": "web-6d4cf56db6-",
                "annotations": annotations, "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web-6d4cf56db6", "uid": "rs-uid", "controller": true }] },
                "spec": { "containers": [{ "name": "app", "image": "app" }] } })
    }

    struct Required;
    impl ClusterView for Required {
        fn namespace_opted_in(&self, _: &str) -> Option<bool> {
            Some(true)
        }
        fn runtime_config_exists(&self, _: &str, _: &str) -> Option<bool> {
            Some(false)
        }
        fn namespace_requires_injection(&self, _: &str) -> Option<bool> {
            Some(true)
        }
    }

    #[test]
    fn skipped_opted_in_pods_are_annotated_and_reported_on_their_owner() {
        let s = SidecarSettings::default();
        let no_configs = Cluster {
            ns_opted_in: true,
            configs: &[],
        };
        let pod = owned_pod(json!({ "outrigger.dev/config": "no-such-config" }));
        let a = admit_pod(
            &review_of("Pod", "CREATE", pod.clone()),
            &s,
            &no_configs,
            false,
        );
        let skip = Skip::ConfigNotFound {
            namespace: "apps".into(),
            name: "no-such-config".into(),
        };
        assert_eq!(a.verdict, MutateVerdict::Skipped(skip.clone()));
        assert_eq!(a.review["response"]["allowed"], true);
        let doc = patched(&a.review, &pod);
        assert_eq!(
            doc["metadata"]["annotations"]["outrigger.dev/injection"],
            "skipped: RuntimeConfig apps/no-such-config (annotation outrigger.dev/config) does not exist; sidecar not injected"
        );
        assert!(doc["spec"].get("initContainers").is_none(), "no sidecar");
        let notice = a.notice.expect("a notice for the owner");
        assert_eq!(notice.regarding.kind.as_deref(), Some("ReplicaSet"));
        assert_eq!(notice.regarding.uid.as_deref(), Some("rs-uid"));
        assert_eq!(notice.skip, skip);
        assert_eq!(a.pod.as_deref(), Some("apps/web-6d4cf56db6-*"));

        // A dry run answers the same but records nothing.
        let mut dry: Value =
            serde_json::from_slice(&review_of("Pod", "CREATE", pod.clone())).unwrap();
        dry["request"]["dryRun"] = json!(true);
        let a = admit_pod(&serde_json::to_vec(&dry).unwrap(), &s, &no_configs, false);
        assert_eq!(a.verdict, MutateVerdict::Skipped(skip));
        assert!(a.notice.is_none());

        // Expected skips (not opted in, opted out) leave the pod and everyone alone.
        let opted_out = owned_pod(json!({ "outrigger.dev/inject": "false" }));
        let a = admit_pod(
            &review_of("Pod", "CREATE", opted_out),
            &s,
            &no_configs,
            false,
        );
        assert_eq!(a.verdict, MutateVerdict::Skipped(Skip::OptedOut));
        assert!(a.review["response"]["patch"].is_null());
        assert!(a.notice.is_none());
    }

    #[test]
    fn inject_policy_required_denies_instead_of_skipping() {
        let s = SidecarSettings::default();
        let no_configs = Cluster {
            ns_opted_in: true,
            configs: &[],
        };
        let required_pod = owned_pod(json!({ "outrigger.dev/inject-policy": "required" }));
        let skip = Skip::ConfigNotFound {
            namespace: "apps".into(),
            name: "default".into(),
        };
        // (case, pod, cluster)
        let cases: [(&str, Value, &dyn ClusterView); 2] = [
            ("pod annotation", required_pod.clone(), &no_configs),
            ("namespace policy", owned_pod(json!({})), &Required),
        ];
        for (case, pod, cluster) in cases {
            let a = admit_pod(&review_of("Pod", "CREATE", pod), &s, cluster, false);
            assert_eq!(a.verdict, MutateVerdict::Denied(skip.clone()), "{case}");
            let r = &a.review["response"];
            assert_eq!(r["allowed"], false, "{case}");
            let message = r["status"]["message"].as_str().unwrap();
            assert!(
                message.contains("RuntimeConfig apps/default"),
                "{case}: {message}"
            );
            assert!(
                message.contains("outrigger.dev/inject-policy: required"),
                "{case}: {message}"
            );
            assert!(
                a.notice.is_none(),
                "{case}: the denial itself tells the creator"
            );
        }
        // Required changes nothing for a pod that is injected, or opted out.
        let with_config = Cluster {
            ns_opted_in: true,
            configs: &["default"],
        };
        let a = admit_pod(
            &review_of("Pod", "CREATE", required_pod),
            &s,
            &with_config,
            false,
        );
        assert_eq!(a.verdict, MutateVerdict::Injected);
        let opted_out = owned_pod(
            json!({ "outrigger.dev/inject": "false", "outrigger.dev/inject-policy": "required" }),
        );
        let a = admit_pod(&review_of("Pod", "CREATE", opted_out), &s, &Required, false);
        assert_eq!(a.verdict, MutateVerdict::Skipped(Skip::OptedOut));
    }

    struct Live(Result<LiveConfig, u16>);
    impl ConfigLookup for Live {
        fn lookup<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<LiveConfig, kube::Error>> {
            let answer = self.0.clone().map_err(|code| {
                kube::Error::Api(
                    kube::core::Status::failure("boom", "InternalError")
                        .with_code(code)
                        .boxed(),
                )
            });
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn a_config_missing_from_the_cache_is_looked_up_before_skipping() {
        let s = SidecarSettings::default();
        let stale_cache = Cluster {
            ns_opted_in: true,
            configs: &[],
        };
        let pod = owned_pod(json!({}));
        let body = review_of("Pod", "CREATE", pod.clone());
        let found = Live(Ok(LiveConfig {
            exists: true,
            hash: Some("h-live".into()),
        }));
        let a = admit_pod_live(&body, &s, &stale_cache, Some(&found), false).await;
        assert_eq!(a.verdict, MutateVerdict::Injected);
        let doc = patched(&a.review, &pod);
        assert_eq!(
            doc["metadata"]["annotations"]["outrigger.dev/config-hash"],
            "h-live"
        );

        let missing = Live(Ok(LiveConfig::default()));
        let a = admit_pod_live(&body, &s, &stale_cache, Some(&missing), false).await;
        assert!(matches!(
            a.verdict,
            MutateVerdict::Skipped(Skip::ConfigNotFound { .. })
        ));
        let failing = Live(Err(500));
        let a = admit_pod_live(&body, &s, &stale_cache, Some(&failing), false).await;
        assert!(
            matches!(
                a.verdict,
                MutateVerdict::Skipped(Skip::ConfigNotFound { .. })
            ),
            "a failed lookup keeps the cache's answer"
        );
    }

    #[tokio::test]
    async fn a_pod_admitted_before_its_config_map_is_stamped_with_the_hash_to_come() {
        // `kubectl apply -f dir/`: the RuntimeConfig is in the cache, its ConfigMap not yet.
        let s = SidecarSettings::default();
        let cache = Cluster {
            ns_opted_in: true,
            configs: &["default"],
        };
        let pod = owned_pod(json!({}));
        let body = review_of("Pod", "CREATE", pod.clone());
        let first = admit_pod(&body, &s, &cache, false);
        assert_eq!(first.verdict, MutateVerdict::Injected);
        assert_eq!(
            first.unstamped,
            Some(("apps".to_owned(), "default".to_owned()))
        );
        let to_come = Live(Ok(LiveConfig {
            exists: true,
            hash: Some("h-to-come".into()),
        }));
        let a = admit_pod_live(&body, &s, &cache, Some(&to_come), false).await;
        assert_eq!(a.verdict, MutateVerdict::Injected);
        assert_eq!(
            patched(&a.review, &pod)["metadata"]["annotations"]["outrigger.dev/config-hash"],
            "h-to-come"
        );
        assert_eq!(a.unstamped, None);
        // An invalid spec has no hash to come: the pod is injected unstamped, as before.
        let invalid = Live(Ok(LiveConfig {
            exists: true,
            hash: None,
        }));
        let a = admit_pod_live(&body, &s, &cache, Some(&invalid), false).await;
        assert_eq!(a.verdict, MutateVerdict::Injected);
        assert!(a.unstamped.is_some());
    }

    #[test]
    fn unreadable_reviews_are_answered_not_errored() {
        let (out, verdict) =
            mutate_pods(b"{not json", &SidecarSettings::default(), &NoCluster, false);
        assert_eq!(out["response"]["allowed"], false);
        assert!(matches!(verdict, MutateVerdict::Invalid(_)));
        let (out, _) = validate_runtime_configs(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        );
        assert_eq!(out["response"]["allowed"], false);
        assert_eq!(
            out["response"]["status"]["message"],
            "the AdmissionReview has no request"
        );
    }

    #[test]
    fn validate_reviews() {
        let valid = json!({ "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig", "metadata": { "name": "web" },
            "spec": { "rpc": { "channels": [{ "listener": "127.0.0.1:12221" }] } } });
        let invalid = json!({ "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig", "metadata": { "name": "web" },
            "spec": { "rpc": { "timeoutMs": 0, "channels": [] }, "clusters": [{ "name": "c", "hosts": [] }] } });
        // CREATE with generateName: the request carries no name, the object (after the API
        // server's name generation) does.
        let generated = json!({ "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig", "metadata": { "name": "web-x7k2p", "generateName": "web-" },
            "spec": { "rpc": { "timeoutMs": 0, "channels": [{ "listener": "127.0.0.1:12221" }] } } });
        let unknown_field = json!({ "apiVersion": "outrigger.dev/v1alpha1", "kind": "RuntimeConfig", "metadata": { "name": "web" },
            "spec": { "rpcc": {} } });
        // (case, body, allowed, message fragments)
        let cases = [
            (
                "valid",
                review_of("RuntimeConfig", "CREATE", valid.clone()),
                true,
                vec![],
            ),
            (
                "valid update",
                review_of("RuntimeConfig", "UPDATE", valid),
                true,
                vec![],
            ),
            (
                "invalid lists every error",
                review_of("RuntimeConfig", "CREATE", invalid),
                false,
                vec![
                    "RuntimeConfig apps/web is invalid: 3 problem(s):",
                    "\n  - rpc.timeoutMs: must be greater than 0",
                    "\n  - rpc.channels: at least one channel is required",
                    "\n  - clusters[0].hosts: at least one host is required",
                ],
            ),
            (
                "generated name is named by the object",
                without_request_name(review_of("RuntimeConfig", "CREATE", generated)),
                false,
                vec!["RuntimeConfig apps/web-x7k2p is invalid: 1 problem(s):"],
            ),
            (
                "unknown field",
                review_of("RuntimeConfig", "CREATE", unknown_field),
                false,
                vec!["unknown field `rpcc`"],
            ),
            (
                "delete is allowed",
                review_of("RuntimeConfig", "DELETE", Value::Null),
                true,
                vec![],
            ),
        ];
        for (case, body, allowed, fragments) in cases {
            let (out, problems) = validate_runtime_configs(&body);
            let r = &out["response"];
            assert_eq!(r["allowed"], allowed, "{case}: {r}");
            assert_eq!(problems.is_empty(), allowed, "{case}");
            let message = r["status"]["message"].as_str().unwrap_or_default();
            for f in fragments {
                assert!(message.contains(f), "{case}: {f:?} not in {message:?}");
            }
            if case == "invalid lists every error" {
                assert_eq!(r["status"]["code"], 422);
                // kubectl prints `The <details.kind> "<details.name>" is invalid`.
                assert_eq!(r["status"]["details"]["kind"], "RuntimeConfig");
                assert_eq!(r["status"]["details"]["name"], "web");
                assert_eq!(r["status"]["details"]["group"], "outrigger.dev");
                assert_eq!(
                    r["status"]["details"]["causes"][0]["field"],
                    "spec.rpc.timeoutMs"
                );
            }
        }
    }
}
