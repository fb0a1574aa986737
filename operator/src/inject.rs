//! Sidecar injection as a pure, idempotent function from a Pod to a JSONPatch: the `outrigger`
//! container (or a native sidecar: an init container with `restartPolicy: Always`, placed first so
//! it is ready before the app starts and outlives it), the config volume, ports, probes on the admin
//! port, a non-root read-only security context, resources and log level from annotations with
//! operator-wide defaults, worker threads from the CPU limit, the `outrigger.dev/injected` label,
//! and in every app container the variables Dapr's and Layotto's SDKs find the sidecar by
//! (`DAPR_HTTP_PORT`, `DAPR_GRPC_PORT`, `runtime_GRPC_PORT`), unless the container sets them.
//! Pods annotated `outrigger.dev/api-socket: "true"` also get the gRPC API on a unix socket in a
//! volume the app containers mount, and `DAPR_GRPC_ENDPOINT` naming it. A pod left unchanged
//! always says why, and the reasons a user should hear about come back as warnings. Not for
//! AdmissionReview plumbing (`admission`) or manifest files (`manifests`).

use std::{collections::BTreeMap, fmt};

use json_patch::{AddOperation, Patch, PatchOperation, jsonptr::PointerBuf};
use k8s_openapi::api::core::v1::{Container, Pod};
use outrigger_config::{DISCOVERY_SERVICE_SUFFIX, IDENTITY_TOKEN_AUDIENCE};
use serde_json::{Value, json};

use crate::{
    names::{
        ANNOTATION_API_SOCKET, ANNOTATION_APP, ANNOTATION_APP_PORT, ANNOTATION_APP_PROTOCOL,
        ANNOTATION_CONFIG, ANNOTATION_CONFIG_HASH, ANNOTATION_CPU_LIMIT, ANNOTATION_CPU_REQUEST,
        ANNOTATION_INJECT, ANNOTATION_INJECT_POLICY, ANNOTATION_INJECTION, ANNOTATION_LOG_LEVEL,
        ANNOTATION_MEMORY_LIMIT, ANNOTATION_MEMORY_REQUEST, ANNOTATION_NATIVE_SIDECAR,
        API_SOCKET_ENV, API_SOCKET_MOUNT_PATH, API_SOCKET_PATH, API_SOCKET_SIZE_LIMIT,
        API_SOCKET_VOLUME_NAME, APP_PORT_ENV, APP_PROTOCOLS, CONFIG_FILE_PATH, CONFIG_MOUNT_PATH,
        DEFAULT_CONFIG_NAME, DEFAULT_SIDECAR_IMAGE, INJECT_POLICY_REQUIRED,
        INJECTION_SKIPPED_PREFIX, LABEL_APP, LABEL_INJECTED, NEVER_INJECT_NAMESPACE,
        SIDECAR_ADMIN_LISTEN, SIDECAR_ADMIN_PORT, SIDECAR_ADMIN_PORT_NAME, SIDECAR_CONTAINER_NAME,
        SIDECAR_GRPC_PORT, SIDECAR_GRPC_PORT_NAME, SIDECAR_INBOUND_PORT, SIDECAR_INBOUND_PORT_NAME,
        SIDECAR_RUN_AS_USER, SIDECAR_THREADS_MAX_DERIVED, SIDECAR_THREADS_WITHOUT_CPU_LIMIT,
        SIDECAR_VOLUME_NAME, TRUST_BUNDLE_PATH,
    },
    quantity,
};

/// Log levels the sidecar accepts.
pub const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error"];

/// Operator-wide sidecar defaults (flags), overridable per pod by annotations.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarSettings {
    /// Sidecar image.
    pub image: String,
    /// `imagePullPolicy` of the sidecar container; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Inject as a native sidecar (init container with `restartPolicy: Always`).
    pub native_sidecar: bool,
    /// Default log level.
    pub log_level: String,
    /// Port of the inbound listener (pods annotated `outrigger.dev/app-port`).
    pub inbound_port: u16,
    /// Default CPU request; `None` sets none.
    pub cpu_request: Option<String>,
    /// Default CPU limit; `None` sets none.
    pub cpu_limit: Option<String>,
    /// Default memory request; `None` sets none.
    pub memory_request: Option<String>,
    /// Default memory limit; `None` sets none.
    pub memory_limit: Option<String>,
    /// The sidecar's worker threads (`--threads`); 0 derives them from its CPU limit (see
    /// [`sidecar_threads`]).
    pub threads: u32,
    /// Workload identity, when the operator issues it: each injected pod gets a volume for the
    /// sidecar (a `podCertificate`, or a ServiceAccount token for the identity endpoint) and the
    /// flags naming it.
    pub identity: Option<PodIdentity>,
}

/// How injected sidecars get their identity, and where they learn the pods of meshed apps;
/// either way the mesh trust bundle comes with the config volume and a projected ServiceAccount
/// token (audience `identity.outrigger.dev`) lets the sidecar call the operator's endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// `host:port` of the operator's endpoint (identity and discovery).
    pub endpoint: String,
    /// The DNS name its certificate carries.
    pub server_name: String,
    /// Where the certificate comes from.
    pub issuance: Issuance,
}

/// Where an injected sidecar's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Issuance {
    /// A `podCertificate` projected volume the kubelet fills (and refreshes) from the operator's
    /// signer; the kubelet keeps the pod from starting until it exists.
    PodCertificate {
        /// The signer the volume asks (`outrigger.dev/identity`).
        signer_name: String,
        /// The certificate lifetime the volume asks for, in seconds.
        max_expiration_seconds: u32,
    },
    /// The operator's identity endpoint, called with the token; the sidecar makes its key and
    /// renews the certificate itself.
    Csr,
}

/// The volume holding an injected sidecar's token for the operator's endpoint (and, with Pod
/// Certificates, its credential bundle).
pub const IDENTITY_VOLUME_NAME: &str = "outrigger-identity";
/// Where it is mounted in the sidecar.
pub const IDENTITY_MOUNT_PATH: &str = "/var/run/outrigger/identity";
/// The credential bundle file in it (a PEM key, then the chain).
pub const CREDENTIAL_BUNDLE_FILE: &str = "credentialbundle.pem";
/// The ServiceAccount token file in it.
pub const IDENTITY_TOKEN_FILE: &str = "token";
/// How long the identity endpoint's tokens live; the kubelet rotates them at 80 %.
pub const IDENTITY_TOKEN_EXPIRATION_SECS: i64 = 3600;

impl Default for SidecarSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_SIDECAR_IMAGE.to_owned(),
            image_pull_policy: None,
            native_sidecar: true,
            log_level: "info".to_owned(),
            inbound_port: SIDECAR_INBOUND_PORT,
            cpu_request: Some("50m".to_owned()),
            cpu_limit: None,
            memory_request: Some("32Mi".to_owned()),
            memory_limit: Some("128Mi".to_owned()),
            threads: 0,
            identity: None,
        }
    }
}

/// Which pods are candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// The webhook: pods annotated `outrigger.dev/inject: "true"`, or every pod when the namespace
    /// is labelled `outrigger.dev/inject=enabled`.
    OptIn {
        /// The pod's namespace carries the opt-in label.
        namespace_opted_in: bool,
    },
    /// Offline `inject`: every pod that is not opted out.
    AllUnlessOptedOut,
}

/// Everything about a pod's admission that is not the pod itself.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The pod's namespace (from the admission request; the pod may not carry it yet).
    pub namespace: Option<&'a str>,
    /// Which pods are candidates.
    pub selection: Selection,
    /// Whether the named RuntimeConfig exists, when the caller can see that.
    pub config_exists: Option<bool>,
    /// The hash of the config the pod's ConfigMap holds now, when the caller can see it; stamped
    /// on the pod as `outrigger.dev/config-hash` (rollout status compares it).
    pub config_hash: Option<&'a str>,
}

/// Why a pod was left unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Not opted in, by annotation or namespace.
    NotSelected,
    /// Annotated `outrigger.dev/inject: "false"`.
    OptedOut,
    /// Already has the sidecar (label or container named `outrigger`).
    AlreadyInjected,
    /// `kube-system` is never injected.
    SystemNamespace,
    /// The annotation value is neither `"true"` nor `"false"`.
    BadInjectAnnotation(String),
    /// The RuntimeConfig the pod names does not exist.
    ConfigNotFound {
        /// Namespace searched.
        namespace: String,
        /// RuntimeConfig name.
        name: String,
    },
    /// The pod already has a volume of a name the injector adds (`outrigger-config`, and
    /// `outrigger-identity` or `outrigger-api-socket` when it adds those); the name.
    VolumeConflict(String),
}

impl Skip {
    /// Whether the user should be told, rather than it being expected: the pod asked for the
    /// sidecar and did not get it. Such a skip is an admission warning, the pod annotation
    /// `outrigger.dev/injection: skipped: <reason>` and an Event; under
    /// `outrigger.dev/inject-policy: required` it is a denial.
    pub fn warns(&self) -> bool {
        !matches!(
            self,
            Skip::NotSelected | Skip::OptedOut | Skip::AlreadyInjected
        )
    }

    /// A short, fixed label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Skip::NotSelected => "not_selected",
            Skip::OptedOut => "opted_out",
            Skip::AlreadyInjected => "already_injected",
            Skip::SystemNamespace => "system_namespace",
            Skip::BadInjectAnnotation(_) => "bad_inject_annotation",
            Skip::ConfigNotFound { .. } => "config_not_found",
            Skip::VolumeConflict(_) => "volume_conflict",
        }
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Skip::NotSelected => write!(
                f,
                "not opted in (annotation {ANNOTATION_INJECT}: \"true\" or namespace label {ANNOTATION_INJECT}=enabled)"
            ),
            Skip::OptedOut => write!(f, "opted out by annotation {ANNOTATION_INJECT}: \"false\""),
            Skip::AlreadyInjected => write!(f, "already has the {SIDECAR_CONTAINER_NAME} sidecar"),
            Skip::SystemNamespace => {
                write!(f, "pods in {NEVER_INJECT_NAMESPACE} are never injected")
            }
            Skip::BadInjectAnnotation(v) => write!(
                f,
                "annotation {ANNOTATION_INJECT}: \"{v}\" is neither \"true\" nor \"false\"; sidecar not injected"
            ),
            Skip::ConfigNotFound { namespace, name } => write!(
                f,
                "RuntimeConfig {namespace}/{name} (annotation {ANNOTATION_CONFIG}) does not exist; sidecar not injected"
            ),
            Skip::VolumeConflict(name) => write!(
                f,
                "the pod already has a volume named {name}; sidecar not injected"
            ),
        }
    }
}

/// The result of injecting into one pod.
#[derive(Clone, Debug, PartialEq)]
pub enum Injection {
    /// The patch to apply, and warnings about annotations that were ignored.
    Patched {
        /// RFC 6902 operations against the pod.
        patch: Patch,
        /// Problems with the pod's annotations (defaults were used instead).
        warnings: Vec<String>,
    },
    /// Nothing to do, and why.
    Unchanged(Skip),
}

/// The RuntimeConfig a pod uses.
pub fn config_name(pod: &Pod) -> &str {
    annotation(pod, ANNOTATION_CONFIG)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_CONFIG_NAME)
}

/// Whether a pod already has the sidecar.
pub fn is_injected(pod: &Pod) -> bool {
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_INJECTED))
        .is_some_and(|v| v == "true");
    let has_container = pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == SIDECAR_CONTAINER_NAME)
    });
    labelled || has_container
}

/// Decides whether to inject and, if so, builds the patch.
pub fn inject(pod: &Pod, request: &Request<'_>, settings: &SidecarSettings) -> Injection {
    if let Err(skip) = select(pod, request) {
        return Injection::Unchanged(skip);
    }
    let spec = pod.spec.as_ref();
    let mut warnings = Vec::new();
    let api_socket = api_socket(pod, &mut warnings);
    let ours = [
        Some(SIDECAR_VOLUME_NAME),
        settings.identity.as_ref().map(|_| IDENTITY_VOLUME_NAME),
        api_socket.then_some(API_SOCKET_VOLUME_NAME),
    ];
    if let Some(taken) = spec
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| ours.contains(&Some(v.name.as_str()))))
    {
        return Injection::Unchanged(Skip::VolumeConflict(taken.name.clone()));
    }

    let native = match annotation(pod, ANNOTATION_NATIVE_SIDECAR) {
        None => settings.native_sidecar,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            warnings.push(format!(
                "annotation {ANNOTATION_NATIVE_SIDECAR}: \"{other}\" is neither \"true\" nor \"false\"; using {}",
                settings.native_sidecar
            ));
            settings.native_sidecar
        }
    };
    let inbound = inbound_args(pod, settings.inbound_port, &mut warnings);
    // A pod serving on the inbound listener is found by other sidecars through its app's
    // headless Service, which selects this label.
    let app = inbound.as_ref().and_then(|_| app_name(pod, &mut warnings));
    let container = sidecar_container(pod, settings, native, inbound, api_socket, &mut warnings);
    let volume = json!({
        "name": SIDECAR_VOLUME_NAME,
        "configMap": { "name": crate::desired::config_map_name(config_name(pod)) },
    });

    let mut ops = Vec::new();
    if let Some(hash) = request.config_hash {
        ops.push(annotation_op(pod, ANNOTATION_CONFIG_HASH, hash));
    }
    let labels_exist = pod.metadata.labels.is_some();
    let mut labels = vec![(LABEL_INJECTED, "true".to_owned())];
    if let Some(app) = app {
        labels.push((LABEL_APP, app));
    }
    if labels_exist {
        for (key, value) in labels {
            ops.push(add(&["metadata", "labels", key], json!(value)));
        }
    } else {
        let map: serde_json::Map<String, Value> = labels
            .into_iter()
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
        ops.push(add(&["metadata", "labels"], Value::Object(map)));
    }
    if spec.is_none() {
        // A pod without a spec is rejected by the API server anyway; give it the minimum.
        ops.push(add(&["spec"], json!({ "containers": [] })));
    }
    let mut volumes = vec![volume];
    if let Some(identity) = &settings.identity {
        // A token only the operator's endpoint accepts, bound to this pod, rotated by the
        // kubelet; projected even where the pod mounts no API token.
        let mut sources = vec![json!({ "serviceAccountToken": {
            "audience": IDENTITY_TOKEN_AUDIENCE,
            "expirationSeconds": IDENTITY_TOKEN_EXPIRATION_SECS,
            "path": IDENTITY_TOKEN_FILE,
        } })];
        // The kubelet makes the key, has the operator sign it, keeps the pod from starting
        // until the certificate exists, and refreshes it.
        if let Issuance::PodCertificate {
            signer_name,
            max_expiration_seconds,
        } = &identity.issuance
        {
            sources.insert(
                0,
                json!({ "podCertificate": {
                    "signerName": signer_name,
                    "keyType": "ECDSAP256",
                    "maxExpirationSeconds": max_expiration_seconds,
                    "credentialBundlePath": CREDENTIAL_BUNDLE_FILE,
                } }),
            );
        }
        volumes.push(json!({
            "name": IDENTITY_VOLUME_NAME,
            "projected": { "sources": sources },
        }));
    }
    if api_socket {
        // In memory: nothing of it reaches the node's disk, and it goes with the pod.
        volumes.push(json!({
            "name": API_SOCKET_VOLUME_NAME,
            "emptyDir": { "medium": "Memory", "sizeLimit": API_SOCKET_SIZE_LIMIT },
        }));
    }
    let has_volumes = spec.is_some_and(|s| s.volumes.is_some());
    if has_volumes {
        for v in volumes {
            ops.push(add(&["spec", "volumes", "-"], v));
        }
    } else {
        ops.push(add(&["spec", "volumes"], Value::Array(volumes)));
    }
    // App containers, before the sidecar may shift their indices: the sidecar's ports in each
    // regular one; with the API socket, the socket's volume and variable in every one (init
    // containers after a native sidecar can call it too).
    let lists = [
        (
            "containers",
            spec.map_or(&[][..], |s| s.containers.as_slice()),
            true,
        ),
        (
            "initContainers",
            spec.and_then(|s| s.init_containers.as_deref())
                .unwrap_or_default(),
            false,
        ),
    ];
    for (list, containers, ports) in lists {
        for (i, c) in containers.iter().enumerate() {
            let mut vars: Vec<(&str, String)> = Vec::new();
            if ports {
                vars.extend(
                    APP_PORT_ENV
                        .iter()
                        .map(|(name, port)| (*name, port.to_string())),
                );
            }
            if api_socket {
                if mounts_path(c, API_SOCKET_MOUNT_PATH) {
                    warnings.push(format!(
                        "container {} already mounts {API_SOCKET_MOUNT_PATH}: it does not see the sidecar's API socket",
                        c.name
                    ));
                } else {
                    ops.extend(append(
                        &["spec", list, &i.to_string(), "volumeMounts"],
                        c.volume_mounts.is_some(),
                        // Read-only: the app connects to the socket (which a read-only mount
                        // allows) but cannot replace it.
                        vec![json!({
                            "name": API_SOCKET_VOLUME_NAME,
                            "mountPath": API_SOCKET_MOUNT_PATH,
                            "readOnly": true,
                        })],
                    ));
                    vars.extend(API_SOCKET_ENV.iter().map(|(n, v)| (*n, (*v).to_owned())));
                }
            }
            let set: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
            let missing: Vec<Value> = vars
                .into_iter()
                .filter(|(name, _)| !set.contains(name))
                .map(|(name, value)| json!({ "name": name, "value": value }))
                .collect();
            if !missing.is_empty() {
                ops.extend(append(
                    &["spec", list, &i.to_string(), "env"],
                    c.env.is_some(),
                    missing,
                ));
            }
        }
    }
    let has_init = spec.is_some_and(|s| s.init_containers.is_some());
    ops.push(match (native, has_init) {
        (true, true) => add(&["spec", "initContainers", "0"], container),
        (true, false) => add(&["spec", "initContainers"], json!([container])),
        (false, _) => add(&["spec", "containers", "0"], container),
    });
    Injection::Patched {
        patch: Patch(ops),
        warnings,
    }
}

/// Whether the pod asks for the API socket (`outrigger.dev/api-socket: "true"`); any value but
/// `"true"` and `"false"` warns and counts as `"false"`.
fn api_socket(pod: &Pod, warnings: &mut Vec<String>) -> bool {
    match annotation(pod, ANNOTATION_API_SOCKET) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            warnings.push(format!(
                "annotation {ANNOTATION_API_SOCKET}: \"{other}\" is neither \"true\" nor \"false\"; no API socket"
            ));
            false
        }
    }
}

/// Whether a container already mounts something at `path` (the API server refuses two mounts
/// at one path).
fn mounts_path(container: &Container, path: &str) -> bool {
    container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == path)
}

/// The sidecar's worker threads: `setting` when it is above 0; else its CPU limit in cores
/// rounded up (at least 1, at most [`SIDECAR_THREADS_MAX_DERIVED`]), so it never runs more
/// threads than the CPU time it may use; else [`SIDECAR_THREADS_WITHOUT_CPU_LIMIT`]. Without a
/// limit the sidecar would otherwise start one thread per CPU of the node.
pub fn sidecar_threads(setting: u32, cpu_limit: Option<f64>) -> u32 {
    if setting > 0 {
        return setting;
    }
    match cpu_limit {
        // A limit is a whole number of millicores: the slack keeps "1000m" (not exactly 1.0 in
        // floating point) at 1.
        Some(cores) => {
            let rounded = (cores - 1e-6)
                .ceil()
                .clamp(1.0, f64::from(SIDECAR_THREADS_MAX_DERIVED));
            // In range by the clamp.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let threads = rounded as u32;
            threads
        }
        None => SIDECAR_THREADS_WITHOUT_CPU_LIMIT,
    }
}

/// The app a pod serves, for its headless Service `<app>-outrigger`: the annotation
/// `outrigger.dev/app`, else the label `app.kubernetes.io/name`, else the label `app`. `None`,
/// with a warning, when there is none or it cannot name a Service.
fn app_name(pod: &Pod, warnings: &mut Vec<String>) -> Option<String> {
    let labels = pod.metadata.labels.as_ref();
    let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
    let Some(name) = annotation(pod, ANNOTATION_APP)
        .or_else(|| label("app.kubernetes.io/name"))
        .or_else(|| label("app"))
    else {
        warnings.push(format!(
            "no app name (annotation {ANNOTATION_APP}, label app.kubernetes.io/name or app): other sidecars cannot discover this pod"
        ));
        return None;
    };
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let fits = !name.is_empty()
        && name.len() <= 63 - DISCOVERY_SERVICE_SUFFIX.len()
        && name.chars().all(ok)
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !fits {
        warnings.push(format!(
            "app name \"{name}\" cannot name the Service {name}{DISCOVERY_SERVICE_SUFFIX} (a DNS label of at most {} characters); other sidecars cannot discover this pod",
            63 - DISCOVERY_SERVICE_SUFFIX.len()
        ));
        return None;
    }
    Some(name.to_owned())
}

/// The sidecar's arguments for the inbound listener, from `outrigger.dev/app-port` and
/// `outrigger.dev/app-protocol`; none (with a warning) when the port is not one.
fn inbound_args(pod: &Pod, listen_port: u16, warnings: &mut Vec<String>) -> Option<Vec<String>> {
    let port = annotation(pod, ANNOTATION_APP_PORT)?;
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        warnings.push(format!(
            "annotation {ANNOTATION_APP_PORT}: \"{port}\" is not a port (1-65535); no inbound listener"
        ));
        return None;
    };
    let protocol = match annotation(pod, ANNOTATION_APP_PROTOCOL) {
        None => "auto",
        Some(p) if APP_PROTOCOLS.contains(&p) => p,
        Some(other) => {
            warnings.push(format!(
                "annotation {ANNOTATION_APP_PROTOCOL}: \"{other}\" is not one of {}; using auto",
                APP_PROTOCOLS.join(", ")
            ));
            "auto"
        }
    };
    let mut args = vec![
        "--inbound-app-port".to_owned(),
        port.to_string(),
        "--inbound-app-protocol".to_owned(),
        protocol.to_owned(),
    ];
    if listen_port != SIDECAR_INBOUND_PORT {
        args.extend([
            "--inbound-address".to_owned(),
            format!("0.0.0.0:{listen_port}"),
        ]);
    }
    Some(args)
}

/// The patch that marks a skipped pod: `outrigger.dev/injection: skipped: <reason>`. Only for
/// skips that [`Skip::warns`]; expected ones leave the pod untouched.
pub fn skip_patch(pod: &Pod, skip: &Skip) -> Option<Patch> {
    skip.warns().then(|| {
        Patch(vec![annotation_op(
            pod,
            ANNOTATION_INJECTION,
            &format!("{INJECTION_SKIPPED_PREFIX}{skip}"),
        )])
    })
}

/// Whether the pod asks to be denied rather than run without the sidecar
/// (`outrigger.dev/inject-policy: required`).
pub fn policy_required(pod: &Pod) -> bool {
    annotation(pod, ANNOTATION_INJECT_POLICY) == Some(INJECT_POLICY_REQUIRED)
}

/// Sets one annotation, creating the map when the pod has none.
fn annotation_op(pod: &Pod, key: &str, value: &str) -> PatchOperation {
    if pod.metadata.annotations.is_some() {
        add(&["metadata", "annotations", key], json!(value))
    } else {
        add(&["metadata", "annotations"], json!({ key: value }))
    }
}

fn select(pod: &Pod, request: &Request<'_>) -> Result<(), Skip> {
    if is_injected(pod) {
        return Err(Skip::AlreadyInjected);
    }
    let selected = match (annotation(pod, ANNOTATION_INJECT), request.selection) {
        (Some("false"), _) => return Err(Skip::OptedOut),
        (Some("true"), _) => true,
        (Some(other), Selection::OptIn { .. }) => {
            return Err(Skip::BadInjectAnnotation(other.to_owned()));
        }
        (_, Selection::OptIn { namespace_opted_in }) => namespace_opted_in,
        (_, Selection::AllUnlessOptedOut) => true,
    };
    if !selected {
        return Err(Skip::NotSelected);
    }
    let namespace = request
        .namespace
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    if namespace == NEVER_INJECT_NAMESPACE {
        return Err(Skip::SystemNamespace);
    }
    if request.config_exists == Some(false) {
        return Err(Skip::ConfigNotFound {
            namespace: namespace.to_owned(),
            name: config_name(pod).to_owned(),
        });
    }
    Ok(())
}

fn sidecar_container(
    pod: &Pod,
    settings: &SidecarSettings,
    native: bool,
    inbound: Option<Vec<String>>,
    api_socket: bool,
    warnings: &mut Vec<String>,
) -> Value {
    let log_level = match annotation(pod, ANNOTATION_LOG_LEVEL) {
        None => settings.log_level.clone(),
        Some(l) if LOG_LEVELS.contains(&l) => l.to_owned(),
        Some(other) => {
            warnings.push(format!(
                "annotation {ANNOTATION_LOG_LEVEL}: \"{other}\" is not one of {}; using {}",
                LOG_LEVELS.join(", "),
                settings.log_level
            ));
            settings.log_level.clone()
        }
    };
    let probe = |path: &str, period: i32, failures: i32| {
        json!({
            "httpGet": { "path": path, "port": SIDECAR_ADMIN_PORT_NAME },
            "periodSeconds": period,
            "failureThreshold": failures,
        })
    };
    let (resources, cpu_limit) = resources(pod, settings, warnings);
    let threads = sidecar_threads(settings.threads, cpu_limit);
    let mut container = json!({
        "name": SIDECAR_CONTAINER_NAME,
        "image": settings.image,
        "args": [
            "--config", CONFIG_FILE_PATH,
            "--admin-address", SIDECAR_ADMIN_LISTEN,
            "--log-level", log_level,
            format!("--threads={threads}"),
        ],
        "ports": [
            { "name": SIDECAR_GRPC_PORT_NAME, "containerPort": SIDECAR_GRPC_PORT, "protocol": "TCP" },
            { "name": SIDECAR_ADMIN_PORT_NAME, "containerPort": SIDECAR_ADMIN_PORT, "protocol": "TCP" },
        ],
        "env": [
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
        ],
        "volumeMounts": [
            { "name": SIDECAR_VOLUME_NAME, "mountPath": CONFIG_MOUNT_PATH, "readOnly": true },
        ],
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_RUN_AS_USER,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
    });
    if let Some(policy) = &settings.image_pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    if let Some(identity) = &settings.identity {
        if let Some(list) = container["args"].as_array_mut() {
            let token = format!("{IDENTITY_MOUNT_PATH}/{IDENTITY_TOKEN_FILE}");
            let source = match &identity.issuance {
                Issuance::PodCertificate { .. } => [
                    "--identity-credential-bundle".to_owned(),
                    format!("{IDENTITY_MOUNT_PATH}/{CREDENTIAL_BUNDLE_FILE}"),
                ]
                .to_vec(),
                Issuance::Csr => [
                    "--identity-csr-endpoint".to_owned(),
                    identity.endpoint.clone(),
                    "--identity-csr-server-name".to_owned(),
                    identity.server_name.clone(),
                    "--identity-csr-token".to_owned(),
                    token.clone(),
                ]
                .to_vec(),
            };
            list.extend(source.into_iter().map(Value::from));
            list.extend(
                [
                    "--identity-trust-bundle".to_owned(),
                    TRUST_BUNDLE_PATH.to_owned(),
                    "--identity-trust-domain".to_owned(),
                    identity.trust_domain.clone(),
                    "--discovery-endpoint".to_owned(),
                    identity.endpoint.clone(),
                    "--discovery-server-name".to_owned(),
                    identity.server_name.clone(),
                    "--discovery-token".to_owned(),
                    token,
                ]
                .map(Value::from),
            );
        }
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(json!({
                "name": IDENTITY_VOLUME_NAME, "mountPath": IDENTITY_MOUNT_PATH, "readOnly": true,
            }));
        }
    }
    if let Some(args) = inbound {
        if let Some(list) = container["args"].as_array_mut() {
            list.extend(args.into_iter().map(Value::from));
        }
        if let Some(ports) = container["ports"].as_array_mut() {
            ports.push(json!({
                "name": SIDECAR_INBOUND_PORT_NAME,
                "containerPort": settings.inbound_port,
                "protocol": "TCP",
            }));
        }
    }
    if api_socket {
        if let Some(list) = container["args"].as_array_mut() {
            list.push(json!(format!("--grpc-socket={API_SOCKET_PATH}")));
        }
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(
                json!({ "name": API_SOCKET_VOLUME_NAME, "mountPath": API_SOCKET_MOUNT_PATH }),
            );
        }
    }
    if let (true, Some(obj)) = (native, container.as_object_mut()) {
        obj.insert("restartPolicy".into(), json!("Always"));
        // The kubelet starts the next container only after this passes: the app never
        // starts before its sidecar is ready.
        obj.insert("startupProbe".into(), probe("/readyz", 1, 120));
    }
    container
}

/// Requests and limits: annotations over defaults; a bad annotation warns and the default is used;
/// a request above its limit is lowered to the limit (the API server would reject the pod). Also
/// the CPU limit in cores, if there is one.
fn resources(
    pod: &Pod,
    settings: &SidecarSettings,
    warnings: &mut Vec<String>,
) -> (Value, Option<f64>) {
    let mut pick = |key: &str, default: &Option<String>| -> Option<quantity::Quantity> {
        let from_default = || default.as_deref().and_then(|d| quantity::parse(d).ok());
        match annotation(pod, key) {
            None => from_default(),
            Some(text) => match quantity::parse(text) {
                Ok(q) => Some(q),
                Err(e) => {
                    let used = default.as_deref().unwrap_or("none");
                    warnings.push(format!("annotation {key}: {e}; using {used}"));
                    from_default()
                }
            },
        }
    };
    let cpu_request = pick(ANNOTATION_CPU_REQUEST, &settings.cpu_request);
    let cpu_limit = pick(ANNOTATION_CPU_LIMIT, &settings.cpu_limit);
    let memory_request = pick(ANNOTATION_MEMORY_REQUEST, &settings.memory_request);
    let memory_limit = pick(ANNOTATION_MEMORY_LIMIT, &settings.memory_limit);
    let cpu_cores = cpu_limit.as_ref().map(|q| q.value);

    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    for (resource, request, limit) in [
        ("cpu", cpu_request, cpu_limit),
        ("memory", memory_request, memory_limit),
    ] {
        let request = match (request, &limit) {
            (Some(r), Some(l)) if r.value > l.value => {
                warnings.push(format!(
                    "sidecar {resource} request {} is above its limit {}; using {} for both",
                    r.text, l.text, l.text
                ));
                Some(l.clone())
            }
            (r, _) => r,
        };
        if let Some(r) = request {
            requests.insert(resource, r.text);
        }
        if let Some(l) = limit {
            limits.insert(resource, l.text);
        }
    }
    let mut out = serde_json::Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), json!(requests));
    }
    if !limits.is_empty() {
        out.insert("limits".into(), json!(limits));
    }
    (Value::Object(out), cpu_cores)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Appends `items` to the list at `tokens`: one `add` of the whole list when the object has none
/// yet (`exists` false), else one `add` per item at the list's end (`-`).
fn append(tokens: &[&str], exists: bool, items: Vec<Value>) -> Vec<PatchOperation> {
    if !exists {
        return vec![add(tokens, Value::Array(items))];
    }
    let mut path = tokens.to_vec();
    path.push("-");
    items.into_iter().map(|item| add(&path, item)).collect()
}

/// An `add` operation; each token is escaped (`/` → `~1`, `~` → `~0`) into the JSON pointer.
fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests;
