//! The Helm chart (`charts/outrigger`), the container images, `examples/` and the docs, checked
//! against the code they describe: the operator's real command line (`outrigger_operator::Cli`),
//! its names and webhook paths, its admission function, the RuntimeConfig validation and the CRD.
//! Rendering and linting use the real `helm`; rendered objects are validated with the real
//! `kubernetes-validate` (both installed by `scripts/install-tools.sh`).
//!
//! `OUTRIGGER_REGEN_DOCS=1 cargo test -p outrigger-tests --test chart` rewrites the generated field
//! reference in `docs/configure.md` from the CRD.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use clap::{CommandFactory, Parser};
use outrigger_operator::{
    ANNOTATION_CONFIG, ANNOTATION_CONFIG_HASH, ANNOTATION_CPU_LIMIT, ANNOTATION_CPU_REQUEST,
    ANNOTATION_INJECT, ANNOTATION_INJECT_POLICY, ANNOTATION_INJECTION, ANNOTATION_LOG_LEVEL,
    ANNOTATION_MEMORY_LIMIT, ANNOTATION_MEMORY_REQUEST, ANNOTATION_NATIVE_SIDECAR, CertMode, Cli,
    ClusterView, Command as OperatorCommand, DEFAULT_MESH_CA_SECRET, DEFAULT_MUTATING_WEBHOOK_NAME,
    DEFAULT_SECRET_NAME, DEFAULT_SERVICE_NAME, DEFAULT_SIDECAR_IMAGE, DEFAULT_SIGNER_NAME,
    DEFAULT_VALIDATING_WEBHOOK_NAME, GROUP, LOG_LEVELS, MUTATE_PODS_NAMESPACE_OPTED_IN_PATH,
    MUTATE_PODS_PATH, MeshCaMode, MutateVerdict, NAMESPACE_INJECT_ENABLED, NAMESPACE_LABEL_INJECT,
    NEVER_INJECT_NAMESPACE, PLURAL, RunArgs, RuntimeConfig, SIDECAR_ADMIN_PORT, SIDECAR_GRPC_PORT,
    SIDECAR_RUN_AS_USER, SidecarSettings, SignerSettings, Skip, VALIDATE_RUNTIMECONFIGS_PATH,
    VERSION,
};
use outrigger_tests::{require_tool, workspace_root};
use serde_json::{Value, json};

const CHART: &str = "charts/outrigger";
const ALL_OPTIONS: &str = "charts/outrigger/ci/all-options-values.yaml";
const RELEASE: &str = "outrigger";
const NAMESPACE: &str = "outrigger-system";
const CRD_FILE: &str = "outrigger.dev_runtimeconfigs.yaml";
const CONFIGURE_MD: &str = "docs/configure.md";

// ---------------------------------------------------------------------------------------------
// Rendering

/// A set of values the chart is rendered with.
#[derive(Clone, Copy, Debug)]
enum Scenario {
    /// `values.yaml` as shipped.
    Default,
    /// `ci/all-options-values.yaml`: every option changed (cert-manager with an existing issuer,
    /// three replicas, custom names and ports).
    AllOptions,
    /// Defaults with cert-manager and the chart's own self-signed Issuer.
    CertManagerSelfSigned,
    /// Defaults with two replicas (leader election must turn on by itself).
    TwoReplicas,
    /// Defaults without the per-pod annotation registration.
    NamespaceOptInOnly,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario::Default,
    Scenario::AllOptions,
    Scenario::CertManagerSelfSigned,
    Scenario::TwoReplicas,
    Scenario::NamespaceOptInOnly,
];

impl Scenario {
    fn args(self) -> Vec<&'static str> {
        match self {
            Scenario::Default => vec![],
            Scenario::AllOptions => vec!["-f", ALL_OPTIONS],
            Scenario::CertManagerSelfSigned => vec!["--set", "webhook.certMode=cert-manager"],
            Scenario::TwoReplicas => vec!["--set", "operator.replicas=2"],
            Scenario::NamespaceOptInOnly => {
                vec!["--set", "webhook.annotationOptIn.enabled=false"]
            }
        }
    }

    /// The effective values: `values.yaml` merged with what the scenario sets.
    fn values(self) -> Value {
        let mut values = read_yaml(&root().join(CHART).join("values.yaml"));
        let overlay = match self {
            Scenario::Default => json!({}),
            Scenario::AllOptions => read_yaml(&root().join(ALL_OPTIONS)),
            Scenario::CertManagerSelfSigned => json!({"webhook": {"certMode": "cert-manager"}}),
            Scenario::TwoReplicas => json!({"operator": {"replicas": 2}}),
            Scenario::NamespaceOptInOnly => {
                json!({"webhook": {"annotationOptIn": {"enabled": false}}})
            }
        };
        merge(&mut values, &overlay);
        values
    }
}

fn root() -> PathBuf {
    workspace_root()
}

fn merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn helm() -> Option<PathBuf> {
    require_tool("helm")
}

/// Runs helm in the workspace root; `Ok(stdout)` or `Err(stderr)`.
fn run_helm(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(args)
        .current_dir(root())
        // Never reach a cluster: everything here is offline.
        .env("KUBECONFIG", root().join("target/no-such-kubeconfig"))
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn template(helm: &Path, extra: &[&str]) -> Result<String, String> {
    let mut args = vec!["template", RELEASE, CHART, "--namespace", NAMESPACE];
    args.extend_from_slice(extra);
    run_helm(helm, &args)
}

/// The chart rendered for one scenario, as objects.
struct Rendered {
    scenario: Scenario,
    values: Value,
    docs: Vec<Value>,
}

impl Rendered {
    fn of(helm: &Path, scenario: Scenario) -> Self {
        let text = template(helm, &scenario.args())
            .unwrap_or_else(|e| panic!("helm template ({scenario:?}) failed:\n{e}"));
        Rendered {
            scenario,
            values: scenario.values(),
            docs: parse_stream(&text),
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.docs.iter().filter(|d| d["kind"] == kind).collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let found = self.all(kind);
        assert_eq!(found.len(), 1, "{:?}: expected one {kind}", self.scenario);
        found[0]
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn operator_container(&self) -> &Value {
        let containers = self.deployment()["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert_eq!(containers.len(), 1, "the operator pod runs one container");
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        self.operator_container()["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect()
    }

    /// The rendered args parsed by the operator's own parser, exactly as the container would
    /// (the namespace comes from POD_NAMESPACE in the pod; it is given here).
    fn run_args(&self) -> RunArgs {
        let args = self.args();
        let mut argv = vec!["outrigger-operator".to_owned()];
        argv.extend(args.iter().cloned());
        if !args.iter().any(|a| a.starts_with("--namespace")) {
            argv.extend(["--namespace".to_owned(), NAMESPACE.to_owned()]);
        }
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| {
            panic!(
                "{:?}: the operator rejects the chart's args {args:?}:\n{e}",
                self.scenario
            )
        });
        match cli.command {
            OperatorCommand::Run(run) => run,
            other => panic!("{:?}: the chart runs {other:?}, not `run`", self.scenario),
        }
    }

    fn container_port(&self, name: &str) -> u16 {
        let ports = self.operator_container()["ports"]
            .as_array()
            .expect("ports");
        let port = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no container port named {name}"));
        u16::try_from(port["containerPort"].as_u64().expect("number")).expect("port")
    }

    fn leader_election_expected(&self) -> bool {
        match self.values["operator"]["leaderElection"]["enabled"].as_bool() {
            Some(forced) => forced,
            None => self.values["operator"]["replicas"].as_u64() > Some(1),
        }
    }

    fn cert_manager(&self) -> bool {
        self.values["webhook"]["certMode"] == "cert-manager"
    }
}

fn parse_stream(text: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("helm output is not YAML: {e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kubernetes_validate(docs: &[&Value], version: &str, what: &str) {
    let Some(tool) = require_tool("kubernetes-validate") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("manifests.yaml");
    let text: String = docs
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).expect("json")))
        .collect();
    std::fs::write(&path, text).expect("write");
    let out = Command::new(tool)
        .args(["--strict", "--kubernetes-version", version])
        .arg(&path)
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: kubernetes-validate {version} rejected the manifests:\n{report}"
    );
    // Every object was checked against a schema (an unknown kind only warns).
    assert!(
        !report.contains("Couldn't find schema"),
        "{what}: {version}: {report}"
    );
    assert_eq!(
        report.matches("passed for resource").count(),
        docs.len(),
        "{what}: {version}: every object must pass:\n{report}"
    );
}

// ---------------------------------------------------------------------------------------------
// Lint and schema validation

#[test]
fn helm_lint_strict_passes_on_the_defaults_and_on_every_option() {
    let Some(helm) = helm() else { return };
    for extra in [vec![], vec!["-f", ALL_OPTIONS]] {
        let mut args = vec!["lint", "--strict", CHART];
        args.extend_from_slice(&extra);
        let out = run_helm(&helm, &args).unwrap_or_else(|e| panic!("helm lint {extra:?}:\n{e}"));
        assert!(out.contains("0 chart(s) failed"), "{out}");
    }
}

/// Objects whose schema is not Kubernetes' own: cert-manager's `Certificate` and `Issuer` come
/// from cert-manager's CRDs, which kubernetes-validate does not ship. They are checked field by
/// field in `cert_manager_certificate_feeds_the_operator_and_the_ca_injector`.
fn has_kubernetes_schema(doc: &Value) -> bool {
    !doc["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .starts_with("cert-manager.io/")
}

#[test]
fn rendered_manifests_pass_kubernetes_validate() {
    let Some(helm) = helm() else { return };
    let chart = read_yaml(&root().join(CHART).join("Chart.yaml"));
    // The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest we know.
    let min = chart["kubeVersion"]
        .as_str()
        .expect("kubeVersion")
        .trim_start_matches(">=")
        .trim_end_matches("-0")
        .to_owned();
    for scenario in SCENARIOS {
        let mut args = scenario.args();
        args.push("--include-crds");
        let text = template(&helm, &args).unwrap_or_else(|e| panic!("{scenario:?}:\n{e}"));
        let docs = parse_stream(&text);
        assert!(
            docs.iter().any(|d| d["kind"] == "CustomResourceDefinition"),
            "{scenario:?}: the CRD is rendered with --include-crds"
        );
        let checked: Vec<&Value> = docs.iter().filter(|d| has_kubernetes_schema(d)).collect();
        let skipped = docs.len() - checked.len();
        let cert_manager = scenario.values()["webhook"]["certMode"] == "cert-manager";
        assert_eq!(
            skipped > 0,
            cert_manager,
            "{scenario:?}: only cert-manager objects are left out"
        );
        for version in [min.as_str(), "1.35.0"] {
            kubernetes_validate(&checked, version, &format!("{scenario:?}"));
        }
    }
}

#[test]
fn mistyped_values_are_rejected_by_the_schema_naming_the_key() {
    let Some(helm) = helm() else { return };
    let cases = [
        ("operator:\n  replicas: \"two\"\n", "/operator/replicas"),
        ("replicas: 2\n", "'replicas'"),
        (
            "webhook:\n  failurePolicy: Sometimes\n",
            "/webhook/failurePolicy",
        ),
        ("webhook:\n  certMode: manual\n", "/webhook/certMode"),
        ("sidecar:\n  logLevel: loud\n", "/sidecar/logLevel"),
        (
            "sidecar:\n  resources:\n    limits:\n      memory: lots\n",
            "/sidecar/resources/limits/memory",
        ),
        (
            "webhook:\n  timeoutSeconds: 60\n",
            "/webhook/timeoutSeconds",
        ),
        ("operator:\n  imageTag: v1\n", "'imageTag'"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (values, key)) in cases.into_iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).expect("write");
        let err = template(&helm, &["-f", file.to_str().expect("utf-8")])
            .err()
            .unwrap_or_else(|| panic!("helm template accepted {values:?}"));
        assert!(
            err.contains("schema") && err.contains(key),
            "{values:?}: the error must come from values.schema.json and name {key}:\n{err}"
        );
    }
    // The sidecar's log levels are the operator's.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).expect("schema"),
    )
    .expect("json");
    let levels = &schema["properties"]["sidecar"]["properties"]["logLevel"]["enum"];
    assert_eq!(levels, &json!(LOG_LEVELS), "sidecar.logLevel enum");
}

#[test]
fn leader_election_off_with_several_replicas_is_refused() {
    let Some(helm) = helm() else { return };
    let err = template(
        &helm,
        &[
            "--set",
            "operator.replicas=3",
            "--set",
            "operator.leaderElection.enabled=false",
        ],
    )
    .expect_err("several controllers at once must not render");
    assert!(err.contains("operator.leaderElection.enabled"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The operator Deployment against the operator's command line

/// Every long flag the `run` subcommand accepts, including the global ones.
fn run_flags() -> BTreeSet<String> {
    let mut cli = Cli::command();
    cli.build();
    let run = cli.find_subcommand("run").expect("a run subcommand");
    run.get_arguments()
        .chain(cli.get_arguments())
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect()
}

/// Environment variables the operator reads: the `env` of `run`'s flags, and `POD_NAME`, which
/// `run` reads directly as its Lease identity and Event instance (operator/src/app.rs).
fn operator_env_vars() -> BTreeSet<String> {
    let mut cli = Cli::command();
    cli.build();
    let run = cli.find_subcommand("run").expect("run");
    let mut vars: BTreeSet<String> = run
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    vars.insert("POD_NAME".to_owned());
    vars
}

#[test]
fn operator_args_and_env_are_real_flags_that_match_the_chart() {
    let Some(helm) = helm() else { return };
    let flags = run_flags();
    let env_vars = operator_env_vars();
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        let args = r.args();
        assert_eq!(
            args.first().map(String::as_str),
            Some("run"),
            "{scenario:?}"
        );
        for arg in &args[1..] {
            let flag = arg
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{scenario:?}: {arg} is not a --flag=value"));
            let name = flag.split('=').next().unwrap_or_default();
            assert!(
                flags.contains(name),
                "{scenario:?}: --{name} is not a flag of `outrigger-operator run` (known: {flags:?})"
            );
        }
        let run = r.run_args();

        // Env: POD_NAME and POD_NAMESPACE from the downward API, nothing the operator ignores,
        // then exactly the user's `operator.extraEnv` (a proxy, the API server's address).
        let env = r.operator_container()["env"].as_array().expect("env");
        let extra = scenario.values()["operator"]["extraEnv"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (env, passed) = env.split_at(env.len() - extra.len());
        assert_eq!(passed, extra.as_slice(), "{scenario:?}: operator.extraEnv");
        let mut seen = BTreeMap::new();
        for var in env {
            let name = var["name"].as_str().expect("name").to_owned();
            assert!(
                env_vars.contains(&name),
                "{scenario:?}: env {name} is not read by the operator ({env_vars:?})"
            );
            seen.insert(name, var["valueFrom"]["fieldRef"]["fieldPath"].clone());
        }
        assert_eq!(seen.get("POD_NAME"), Some(&json!("metadata.name")));
        assert_eq!(
            seen.get("POD_NAMESPACE"),
            Some(&json!("metadata.namespace"))
        );
        let mut cli = Cli::command();
        cli.build();
        let namespace_env = cli
            .find_subcommand("run")
            .and_then(|run| run.get_arguments().find(|a| a.get_id() == "namespace"))
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned());
        assert_eq!(namespace_env.as_deref(), Some("POD_NAMESPACE"));

        // Names the operator patches and certifies are the objects the chart creates.
        assert_eq!(run.service_name, r.one("Service")["metadata"]["name"]);
        assert_eq!(
            run.mutating_webhook_name,
            r.one("MutatingWebhookConfiguration")["metadata"]["name"]
        );
        assert_eq!(
            run.validating_webhook_name,
            r.one("ValidatingWebhookConfiguration")["metadata"]["name"]
        );

        // Ports: the webhook and metrics servers listen where the pod says.
        assert_eq!(run.webhook_address.port(), r.container_port("webhook"));
        assert_eq!(run.metrics_address.port(), r.container_port("metrics"));
        assert!(
            run.webhook_address.ip().is_unspecified(),
            "reachable from the Service"
        );
        assert!(
            run.metrics_address.ip().is_unspecified(),
            "reachable by the kubelet"
        );

        // Leader election exactly when more than one replica runs (or when forced).
        let replicas = r.deployment()["spec"]["replicas"]
            .as_u64()
            .expect("replicas");
        assert_eq!(
            run.leader_election,
            r.leader_election_expected(),
            "{scenario:?}"
        );
        if replicas > 1 {
            assert!(
                run.leader_election,
                "{scenario:?}: {replicas} replicas need a leader"
            );
        }

        // The certificate directory is a mounted volume: writable for the self-managed
        // certificate, cert-manager's Secret otherwise.
        let mount = r.operator_container()["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["mountPath"] == run.cert_dir.to_str().expect("utf-8"))
            .unwrap_or_else(|| panic!("{scenario:?}: --cert-dir is not a mounted volume"))
            .clone();
        let volume = r.deployment()["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume")
            .clone();
        if r.cert_manager() {
            assert_eq!(run.cert_mode, CertMode::External);
            assert_eq!(volume["secret"]["secretName"], run.secret_name.as_str());
            assert_eq!(mount["readOnly"], true);
        } else {
            assert_eq!(run.cert_mode, CertMode::SelfManaged);
            assert!(volume["emptyDir"].is_object(), "{scenario:?}: {volume}");
            assert_ne!(
                mount["readOnly"], true,
                "the operator writes its certificate"
            );
        }

        // Sidecar defaults are the values, passed through.
        let sc = &r.values["sidecar"];
        let expected_image = image_ref(&sc["image"], &chart_app_version());
        let opt = |v: &Value| {
            let s = v.as_str().expect("string");
            (!s.is_empty()).then(|| s.to_owned())
        };
        assert_eq!(
            run.sidecar.settings(),
            SidecarSettings {
                image: expected_image,
                image_pull_policy: opt(&sc["image"]["pullPolicy"]),
                native_sidecar: sc["nativeSidecar"].as_bool().expect("bool"),
                log_level: sc["logLevel"].as_str().expect("str").to_owned(),
                inbound_port: u16::try_from(sc["inboundPort"].as_u64().expect("port"))
                    .expect("port"),
                cpu_request: opt(&sc["resources"]["requests"]["cpu"]),
                cpu_limit: opt(&sc["resources"]["limits"]["cpu"]),
                memory_request: opt(&sc["resources"]["requests"]["memory"]),
                memory_limit: opt(&sc["resources"]["limits"]["memory"]),
                threads: u32::try_from(sc["threads"].as_u64().expect("threads")).expect("threads"),
                identity: None,
            },
            "{scenario:?}"
        );
        // Identity values are passed through; the mesh CA Secret defaults to <prefix>-mesh-ca.
        let id = &r.values["identity"];
        assert_eq!(
            run.identity.trust_domain,
            id["trustDomain"].as_str().unwrap()
        );
        assert_eq!(
            u64::from(run.identity.identity_cert_lifetime_seconds),
            id["certLifetimeSeconds"].as_u64().unwrap()
        );
        assert_eq!(
            run.identity.mesh_ca_mode,
            match id["ca"]["mode"].as_str().unwrap() {
                "external" => MeshCaMode::External,
                _ => MeshCaMode::SelfManaged,
            },
            "{scenario:?}"
        );
        let expected_secret = match id["ca"]["secretName"].as_str().unwrap() {
            "" => format!("{}-mesh-ca", run.lease_name.trim_end_matches("-operator")),
            name => name.to_owned(),
        };
        assert_eq!(run.identity.mesh_ca_secret, expected_secret, "{scenario:?}");
        let op_image = image_ref(&r.values["operator"]["image"], &chart_app_version());
        assert_eq!(r.operator_container()["image"], op_image.as_str());
    }
}

#[test]
fn chart_defaults_are_the_operator_defaults() {
    let Some(helm) = helm() else { return };
    let run = Rendered::of(&helm, Scenario::Default).run_args();
    // With the documented release name, every name is the operator's built-in default, and the
    // sidecar settings (image tag = appVersion = the crate version) are exactly its defaults.
    assert_eq!(run.service_name, DEFAULT_SERVICE_NAME);
    assert_eq!(run.secret_name, DEFAULT_SECRET_NAME);
    assert_eq!(run.mutating_webhook_name, DEFAULT_MUTATING_WEBHOOK_NAME);
    assert_eq!(run.validating_webhook_name, DEFAULT_VALIDATING_WEBHOOK_NAME);
    assert_eq!(run.sidecar.settings(), SidecarSettings::default());
    assert_eq!(run.identity.mesh_ca_secret, DEFAULT_MESH_CA_SECRET);
    assert_eq!(run.identity.mesh_ca_mode, MeshCaMode::SelfManaged);
    assert_eq!(run.identity.signer_settings(), SignerSettings::default());
    assert_eq!(
        run.sidecar.settings().image,
        DEFAULT_SIDECAR_IMAGE,
        "Chart.yaml appVersion must be the workspace version"
    );
}

fn chart_app_version() -> String {
    read_yaml(&root().join(CHART).join("Chart.yaml"))["appVersion"]
        .as_str()
        .expect("appVersion")
        .to_owned()
}

fn image_ref(image: &Value, app_version: &str) -> String {
    let s = |k: &str| image[k].as_str().unwrap_or_default().to_owned();
    let repo = match s("registry").as_str() {
        "" => s("repository"),
        registry => format!("{registry}/{}", s("repository")),
    };
    match (s("digest").as_str(), s("tag").as_str()) {
        ("", "") => format!("{repo}:{app_version}"),
        ("", tag) => format!("{repo}:{tag}"),
        (digest, _) => format!("{repo}@{digest}"),
    }
}

#[test]
fn operator_pod_is_hardened_and_probed_on_the_metrics_port() {
    let Some(helm) = helm() else { return };
    let dockerfile_user = final_stage(dockerfile("operator/Dockerfile")).user;
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        let pod = &r.deployment()["spec"]["template"]["spec"];
        let c = r.operator_container();
        let sc = &c["securityContext"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{scenario:?}");
        assert_eq!(sc["runAsNonRoot"], true, "{scenario:?}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{scenario:?}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{scenario:?}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{scenario:?}");
        assert!(sc["capabilities"]["add"].is_null(), "{scenario:?}");
        assert_eq!(sc["privileged"], Value::Null, "{scenario:?}");
        let uid = sc["runAsUser"].as_u64().expect("runAsUser");
        assert_ne!(uid, 0);
        assert_eq!(
            format!("{uid}:{uid}"),
            dockerfile_user,
            "the image's USER is the uid the pod runs as"
        );

        let run = r.run_args();
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"], path, "{scenario:?} {probe}");
            let port = match &get["port"] {
                Value::String(name) => r.container_port(name),
                other => u16::try_from(other.as_u64().expect("port")).expect("u16"),
            };
            assert_eq!(
                port,
                run.metrics_address.port(),
                "{scenario:?}: {probe} must hit --metrics-address"
            );
        }
        assert!(c["resources"]["requests"].is_object(), "{scenario:?}");
    }
}

#[test]
fn pod_disruption_budget_and_spread_cover_the_operator_pods() {
    let Some(helm) = helm() else { return };
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        let selector = &r.deployment()["spec"]["selector"]["matchLabels"];
        let pod_labels = &r.deployment()["spec"]["template"]["metadata"]["labels"];
        assert!(
            labels_match(selector, pod_labels),
            "{scenario:?}: selector {selector} must match the pod labels {pod_labels}"
        );
        let pdb = r.one("PodDisruptionBudget");
        assert_eq!(
            &pdb["spec"]["selector"]["matchLabels"], selector,
            "{scenario:?}"
        );
        let budget = &r.values["operator"]["podDisruptionBudget"];
        if budget["minAvailable"].is_null() {
            assert_eq!(pdb["spec"]["maxUnavailable"], budget["maxUnavailable"]);
            assert!(pdb["spec"]["minAvailable"].is_null());
        } else {
            assert_eq!(pdb["spec"]["minAvailable"], budget["minAvailable"]);
            assert!(pdb["spec"]["maxUnavailable"].is_null());
        }
        let spread = r.deployment()["spec"]["template"]["spec"]["topologySpreadConstraints"]
            .as_array()
            .expect("topology spread");
        assert!(!spread.is_empty());
        for c in spread {
            assert!(
                labels_match(&c["labelSelector"]["matchLabels"], pod_labels),
                "{scenario:?}: a spread constraint must select the operator pods: {c}"
            );
        }
        let svc = r.one("Service");
        assert!(
            labels_match(&svc["spec"]["selector"], pod_labels),
            "{scenario:?}: the webhook Service must select the operator pods"
        );
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let Some(selector) = selector.as_object() else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

// ---------------------------------------------------------------------------------------------
// RBAC

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    scope: &'static str,
    group: String,
    resource: String,
    verb: String,
    name: Option<String>,
}

fn grants(r: &Rendered) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for (kind, scope) in [("ClusterRole", "cluster"), ("Role", "namespace")] {
        for role in r.all(kind) {
            if scope == "namespace" {
                assert_eq!(role["metadata"]["namespace"], NAMESPACE);
            }
            for rule in role["rules"].as_array().expect("rules") {
                let list = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|v| v.as_str().expect("str").to_owned())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let names = list("resourceNames");
                let names: Vec<Option<String>> = if names.is_empty() {
                    vec![None]
                } else {
                    names.into_iter().map(Some).collect()
                };
                for group in list("apiGroups") {
                    for resource in list("resources") {
                        for verb in list("verbs") {
                            for name in &names {
                                out.insert(Grant {
                                    scope,
                                    group: group.clone(),
                                    resource: resource.clone(),
                                    verb: verb.clone(),
                                    name: name.clone(),
                                });
                            }
                        }
                    }
                }
                assert!(
                    rule["nonResourceURLs"].is_null(),
                    "{:?}: no non-resource URLs",
                    r.scenario
                );
            }
        }
    }
    out
}

/// What the operator calls, by source: `reconcile.rs` (controller, SSA, status, Events via kube's
/// Recorder, the injected-pod metadata watch and list for rollout counts), `cluster.rs`
/// (namespace, RuntimeConfig and ConfigMap metadata reflectors, live RuntimeConfig/ConfigMap
/// reads), `skips.rs` (skip Events), `certs.rs` (self-managed Secret and caBundle patches),
/// `leader.rs` (the Lease, released on shutdown), `mesh_ca.rs` (the mesh CA Secret), `signer.rs`
/// (PodCertificateRequests, their status as the signer, the pods and ServiceAccounts they name),
/// `discovery.rs` (the headless Service of each meshed app), `identity_endpoint.rs` (a
/// TokenReview per request, the pod its token is bound to), `discovery_endpoint.rs` (the
/// EndpointSlices of meshed apps).
fn needed_grants(run: &RunArgs) -> BTreeSet<Grant> {
    let g = |scope, group: &str, resource: &str, verb: &str, name: Option<&str>| Grant {
        scope,
        group: group.to_owned(),
        resource: resource.to_owned(),
        verb: verb.to_owned(),
        name: name.map(str::to_owned),
    };
    let mut out = BTreeSet::new();
    for verb in ["get", "list", "watch"] {
        out.insert(g("cluster", GROUP, PLURAL, verb, None));
    }
    out.insert(g(
        "cluster",
        GROUP,
        &format!("{PLURAL}/status"),
        "patch",
        None,
    ));
    for verb in ["get", "list", "watch", "create", "patch"] {
        out.insert(g("cluster", "", "configmaps", verb, None));
    }
    for verb in ["create", "patch"] {
        out.insert(g("cluster", "events.k8s.io", "events", verb, None));
    }
    for verb in ["list", "watch"] {
        out.insert(g("cluster", "", "namespaces", verb, None));
        out.insert(g("cluster", "", "pods", verb, None));
        out.insert(g(
            "cluster",
            "certificates.k8s.io",
            "podcertificaterequests",
            verb,
            None,
        ));
    }
    out.insert(g("cluster", "", "pods", "get", None));
    out.insert(g("cluster", "", "serviceaccounts", "get", None));
    out.insert(g(
        "cluster",
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        None,
    ));
    for verb in ["list", "watch"] {
        out.insert(g(
            "cluster",
            "discovery.k8s.io",
            "endpointslices",
            verb,
            None,
        ));
    }
    // `discovery.rs`: the headless Services of meshed apps (listed, server-side applied, deleted).
    for verb in ["list", "create", "patch", "delete"] {
        out.insert(g("cluster", "", "services", verb, None));
    }
    out.insert(g(
        "cluster",
        "certificates.k8s.io",
        "podcertificaterequests/status",
        "update",
        None,
    ));
    out.insert(g(
        "cluster",
        "certificates.k8s.io",
        "signers",
        "sign",
        Some(DEFAULT_SIGNER_NAME),
    ));
    let mesh = &run.identity.mesh_ca_secret;
    out.insert(g("namespace", "", "secrets", "get", Some(mesh)));
    if run.identity.mesh_ca_mode == MeshCaMode::SelfManaged {
        out.insert(g("namespace", "", "secrets", "create", None));
        out.insert(g("namespace", "", "secrets", "update", Some(mesh)));
    }
    if run.cert_mode == CertMode::SelfManaged {
        for (resource, name) in [
            ("mutatingwebhookconfigurations", &run.mutating_webhook_name),
            (
                "validatingwebhookconfigurations",
                &run.validating_webhook_name,
            ),
        ] {
            for verb in ["get", "patch"] {
                out.insert(g(
                    "cluster",
                    "admissionregistration.k8s.io",
                    resource,
                    verb,
                    Some(name),
                ));
            }
        }
        out.insert(g("namespace", "", "secrets", "create", None));
        for verb in ["get", "update"] {
            out.insert(g("namespace", "", "secrets", verb, Some(&run.secret_name)));
        }
    }
    if run.leader_election {
        out.insert(g(
            "namespace",
            "coordination.k8s.io",
            "leases",
            "create",
            None,
        ));
        for verb in ["get", "update"] {
            out.insert(g(
                "namespace",
                "coordination.k8s.io",
                "leases",
                verb,
                Some(&run.lease_name),
            ));
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_what_the_operator_calls_without_wildcards() {
    let Some(helm) = helm() else { return };
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        for kind in ["ClusterRole", "Role"] {
            for role in r.all(kind) {
                let text = serde_json::to_string(&role["rules"]).expect("json");
                assert!(
                    !text.contains('*'),
                    "{scenario:?}: wildcard in {kind}: {text}"
                );
            }
        }
        let run = r.run_args();
        let have = grants(&r);
        let need = needed_grants(&run);
        let missing: Vec<_> = need.difference(&have).collect();
        let extra: Vec<_> = have.difference(&need).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{scenario:?}: RBAC differs from the operator's calls\n missing: {missing:#?}\n extra: {extra:#?}"
        );

        // Bound to the ServiceAccount the Deployment runs as.
        let sa = r.deployment()["spec"]["template"]["spec"]["serviceAccountName"].clone();
        for (binding, role_kind) in [
            ("ClusterRoleBinding", "ClusterRole"),
            ("RoleBinding", "Role"),
        ] {
            for b in r.all(binding) {
                assert_eq!(b["roleRef"]["kind"], role_kind);
                assert!(
                    r.all(role_kind)
                        .iter()
                        .any(|role| role["metadata"]["name"] == b["roleRef"]["name"])
                );
                assert_eq!(
                    b["subjects"],
                    json!([{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]),
                    "{scenario:?}"
                );
            }
        }
        assert_eq!(r.all("ClusterRoleBinding").len(), 1);
        assert_eq!(r.all("RoleBinding").len(), r.all("Role").len());
        if r.values["operator"]["serviceAccount"]["create"] == true {
            assert_eq!(r.one("ServiceAccount")["metadata"]["name"], sa);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook registrations

/// The API server's rule for `clientConfig.service.path` (k8s.io/apiserver
/// pkg/util/webhook/validation.go, `ValidateWebhookService`): every segment a DNS-1123
/// subdomain. kubernetes-validate only checks that it is a string.
fn api_server_accepts_service_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|segment| {
        !segment.is_empty()
            && segment.len() <= 253
            && segment.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    })
}

#[test]
fn the_api_server_path_rule_is_the_real_one() {
    assert!(api_server_accepts_service_path(MUTATE_PODS_PATH));
    assert!(api_server_accepts_service_path(
        VALIDATE_RUNTIMECONFIGS_PATH
    ));
    assert!(api_server_accepts_service_path(
        MUTATE_PODS_NAMESPACE_OPTED_IN_PATH
    ));
    // A query string cannot be registered.
    assert!(!api_server_accepts_service_path(
        "/mutate-pods?namespace-inject=enabled"
    ));
    assert!(!api_server_accepts_service_path("mutate-pods"));
    assert!(!api_server_accepts_service_path("/Mutate"));
    assert!(!api_server_accepts_service_path("/a//b"));
}

fn webhooks(config: &Value) -> Vec<&Value> {
    config["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .collect()
}

#[test]
fn webhooks_call_the_chart_service_on_the_operator_paths_and_port() {
    let Some(helm) = helm() else { return };
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        let run = r.run_args();
        let svc = r.one("Service");
        let wh = &r.values["webhook"];
        let mutating = r.one("MutatingWebhookConfiguration");
        let validating = r.one("ValidatingWebhookConfiguration");

        for (config, path) in [
            (mutating, MUTATE_PODS_PATH),
            (validating, VALIDATE_RUNTIMECONFIGS_PATH),
        ] {
            for w in webhooks(config) {
                let name = w["name"].as_str().expect("name");
                let target = &w["clientConfig"]["service"];
                assert_eq!(
                    target["name"], svc["metadata"]["name"],
                    "{scenario:?} {name}"
                );
                assert_eq!(target["namespace"], NAMESPACE, "{scenario:?} {name}");
                let wpath = target["path"].as_str().expect("path");
                // The namespace entry calls the namespace-opted-in path; every other entry the
                // plain one. Both are served by the operator.
                let want = if name.starts_with("namespace.") {
                    MUTATE_PODS_NAMESPACE_OPTED_IN_PATH
                } else {
                    path
                };
                assert_eq!(
                    wpath, want,
                    "{scenario:?} {name}: the operator serves {want}"
                );
                assert!(
                    api_server_accepts_service_path(wpath),
                    "{scenario:?} {name}: the API server rejects service path {wpath}"
                );
                // Service port -> container port -> --webhook-address.
                let port = target["port"].as_u64().expect("port");
                let svc_port = svc["spec"]["ports"]
                    .as_array()
                    .expect("ports")
                    .iter()
                    .find(|p| p["port"].as_u64() == Some(port))
                    .unwrap_or_else(|| panic!("{scenario:?} {name}: Service has no port {port}"));
                assert_eq!(port, 443);
                let target_port = match &svc_port["targetPort"] {
                    Value::String(n) => r.container_port(n),
                    other => u16::try_from(other.as_u64().expect("port")).expect("u16"),
                };
                assert_eq!(
                    target_port,
                    run.webhook_address.port(),
                    "{scenario:?} {name}"
                );
                assert!(w["clientConfig"]["url"].is_null());
                // Self-managed: the operator patches it; cert-manager: its CA injector does.
                assert!(
                    w["clientConfig"]["caBundle"].is_null(),
                    "{scenario:?} {name}"
                );
                // The injector records an Event about a skipped pod, except on a dry run.
                let side_effects = if config["kind"] == "MutatingWebhookConfiguration" {
                    "NoneOnDryRun"
                } else {
                    "None"
                };
                assert_eq!(w["sideEffects"], side_effects, "{scenario:?} {name}");
                assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
                assert_eq!(
                    w["timeoutSeconds"], wh["timeoutSeconds"],
                    "{scenario:?} {name}"
                );
            }
        }

        // Pods: created pods only, in namespaces other than kube-system and the chart's own.
        let mut excluded = vec![NEVER_INJECT_NAMESPACE.to_owned(), NAMESPACE.to_owned()];
        excluded.extend(
            wh["excludeNamespaces"]
                .as_array()
                .expect("list")
                .iter()
                .map(|v| v.as_str().expect("str").to_owned()),
        );
        let injectors = webhooks(mutating);
        let expected_entries = if wh["annotationOptIn"]["enabled"] == true {
            2
        } else {
            1
        };
        assert_eq!(injectors.len(), expected_entries, "{scenario:?}");
        for w in &injectors {
            assert_eq!(
                w["rules"],
                json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                        "resources": ["pods"], "scope": "Namespaced"}]),
                "{scenario:?}"
            );
            assert_eq!(
                w["reinvocationPolicy"], wh["reinvocationPolicy"],
                "{scenario:?}"
            );
            for ns in &excluded {
                let labels =
                    namespace_labels(ns, &[(NAMESPACE_LABEL_INJECT, NAMESPACE_INJECT_ENABLED)]);
                assert!(
                    !selector_matches(&w["namespaceSelector"], &labels),
                    "{scenario:?}: {} must skip namespace {ns}",
                    w["name"]
                );
            }
        }
        let by_label = injectors
            .iter()
            .find(|w| {
                let labels = namespace_labels(
                    "shop",
                    &[(NAMESPACE_LABEL_INJECT, NAMESPACE_INJECT_ENABLED)],
                );
                selector_matches(&w["namespaceSelector"], &labels)
            })
            .expect("a registration for labelled namespaces");
        assert_eq!(
            by_label["failurePolicy"], wh["failurePolicy"],
            "{scenario:?}"
        );
        if let Some(by_annotation) = injectors.iter().find(|w| w["name"] != by_label["name"]) {
            assert_eq!(
                by_annotation["failurePolicy"], wh["annotationOptIn"]["failurePolicy"],
                "{scenario:?}"
            );
        }

        // RuntimeConfigs: created and updated ones, not their status.
        let validators = webhooks(validating);
        assert_eq!(validators.len(), 1);
        assert_eq!(
            validators[0]["rules"],
            json!([{"apiGroups": [GROUP], "apiVersions": [VERSION], "operations": ["CREATE", "UPDATE"],
                    "resources": [PLURAL], "scope": "Namespaced"}])
        );
        assert_eq!(validators[0]["failurePolicy"], wh["failurePolicy"]);

        // cert-manager: the CA injector is pointed at the Certificate the operator's files
        // come from.
        for config in [mutating, validating] {
            let inject_from = &config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
            if r.cert_manager() {
                let cert = r.one("Certificate");
                assert_eq!(
                    inject_from.as_str(),
                    Some(
                        format!(
                            "{NAMESPACE}/{}",
                            cert["metadata"]["name"].as_str().expect("name")
                        )
                        .as_str()
                    )
                );
            } else {
                assert!(inject_from.is_null(), "{scenario:?}");
            }
        }
    }
}

#[test]
fn cert_manager_certificate_feeds_the_operator_and_the_ca_injector() {
    let Some(helm) = helm() else { return };
    for scenario in [Scenario::AllOptions, Scenario::CertManagerSelfSigned] {
        let r = Rendered::of(&helm, scenario);
        let run = r.run_args();
        let cert = r.one("Certificate");
        assert_eq!(cert["apiVersion"], "cert-manager.io/v1");
        assert_eq!(cert["metadata"]["namespace"], NAMESPACE);
        assert_eq!(cert["spec"]["secretName"], run.secret_name.as_str());
        let svc = &run.service_name;
        assert_eq!(
            cert["spec"]["dnsNames"],
            json!([
                format!("{svc}.{NAMESPACE}.svc"),
                format!("{svc}.{NAMESPACE}.svc.cluster.local")
            ]),
            "the names the API server dials"
        );
        assert_eq!(cert["spec"]["privateKey"]["encoding"], "PKCS8");
        let issuer_ref = &cert["spec"]["issuerRef"];
        let configured = &r.values["webhook"]["certManager"]["issuerRef"];
        if configured["name"] == "" {
            let issuer = r.one("Issuer");
            assert_eq!(issuer["spec"], json!({"selfSigned": {}}));
            assert_eq!(issuer_ref["name"], issuer["metadata"]["name"]);
            assert_eq!(issuer_ref["kind"], "Issuer");
        } else {
            assert!(
                r.all("Issuer").is_empty(),
                "an existing issuer is used as-is"
            );
            assert_eq!(issuer_ref, configured);
        }
    }
    // Self-managed mode renders no cert-manager object.
    let r = Rendered::of(&helm, Scenario::Default);
    assert!(r.docs.iter().all(has_kubernetes_schema));
}

// A namespace as the API server sees it: it always carries kubernetes.io/metadata.name.
fn namespace_labels(name: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())]);
    for (k, v) in extra {
        labels.insert((*k).to_owned(), (*v).to_owned());
    }
    labels
}

/// A Kubernetes label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist);
/// an absent selector matches everything.
fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if selector.is_null() {
        return true;
    }
    let match_labels = selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        })
        .unwrap_or(true);
    let expressions = selector["matchExpressions"]
        .as_array()
        .map(|list| {
            list.iter().all(|e| {
                let key = e["key"].as_str().expect("key");
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let value = labels.get(key).map(String::as_str);
                match e["operator"].as_str().expect("operator") {
                    "In" => value.is_some_and(|v| values.contains(&v)),
                    "NotIn" => value.is_none_or(|v| !values.contains(&v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    other => panic!("unknown selector operator {other}"),
                }
            })
        })
        .unwrap_or(true);
    match_labels && expressions
}

/// The operator's view of namespace labels, as its reflector would have it.
struct Namespaces(BTreeMap<String, BTreeMap<String, String>>);

impl ClusterView for Namespaces {
    fn namespace_opted_in(&self, namespace: &str) -> Option<bool> {
        let labels = self.0.get(namespace)?;
        Some(
            labels.get(NAMESPACE_LABEL_INJECT).map(String::as_str)
                == Some(NAMESPACE_INJECT_ENABLED),
        )
    }
    fn runtime_config_exists(&self, _: &str, _: &str) -> Option<bool> {
        Some(true)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Admission {
    /// No registration selects the pod: the API server does not call the operator.
    NotSent,
    /// The operator injected the sidecar.
    Injected,
    /// The operator saw the pod and left it alone.
    Skipped,
}

/// What happens to `pod` created in `namespace` (with `ns_labels`): the API server picks the
/// registrations whose selectors match, and calls the operator's real admission function on the
/// registered path, as the webhook server does (the namespace-opted-in path is its namespace
/// opt-in signal).
fn admit(r: &Rendered, namespace: &str, ns_labels: &[(&str, &str)], pod: &Value) -> Admission {
    let labels = namespace_labels(namespace, ns_labels);
    let pod_labels: BTreeMap<String, String> =
        serde_json::from_value(pod["metadata"]["labels"].clone()).unwrap_or_default();
    let mutating = r.one("MutatingWebhookConfiguration");
    let matched: Vec<&Value> = webhooks(mutating)
        .into_iter()
        .filter(|w| {
            selector_matches(&w["namespaceSelector"], &labels)
                && selector_matches(&w["objectSelector"], &pod_labels)
        })
        .collect();
    assert!(
        matched.len() <= 1,
        "{:?}: a pod in {namespace} {ns_labels:?} would be sent {} times",
        r.scenario,
        matched.len()
    );
    let Some(w) = matched.first() else {
        return Admission::NotSent;
    };
    let path = w["clientConfig"]["service"]["path"].as_str().expect("path");
    let query_opt_in = path == MUTATE_PODS_NAMESPACE_OPTED_IN_PATH;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "6f0b1a8e-4d1c-4a59-9d3b-3b0f1c2d4e5f",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "name": "",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
        }
    });
    let cluster = Namespaces(BTreeMap::from([(namespace.to_owned(), labels)]));
    let (_, verdict) = outrigger_operator::mutate_pods(
        &serde_json::to_vec(&review).expect("json"),
        &SidecarSettings::default(),
        &cluster,
        query_opt_in,
    );
    match verdict {
        MutateVerdict::Injected => Admission::Injected,
        MutateVerdict::Skipped(_) => Admission::Skipped,
        MutateVerdict::Denied(why) => panic!("denied: {why}"),
        MutateVerdict::Ignored(why) => panic!("a CREATE was ignored: {why}"),
        MutateVerdict::Invalid(why) => panic!("invalid admission request: {why}"),
    }
}

fn pod(annotation: Option<&str>) -> Value {
    let mut annotations = serde_json::Map::new();
    if let Some(v) = annotation {
        annotations.insert(ANNOTATION_INJECT.to_owned(), json!(v));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "web-", "labels": {"app": "web"}, "annotations": annotations},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
    })
}

/// Namespace labels as `(key, value)` pairs.
type Labels = [(&'static str, &'static str)];

#[test]
fn both_opt_in_paths_inject_and_false_opts_out() {
    let Some(helm) = helm() else { return };
    let enabled = [(NAMESPACE_LABEL_INJECT, NAMESPACE_INJECT_ENABLED)];
    let disabled = [(NAMESPACE_LABEL_INJECT, "disabled")];
    use Admission::{Injected, NotSent, Skipped};
    for scenario in SCENARIOS {
        let r = Rendered::of(&helm, scenario);
        let per_pod = r.values["webhook"]["annotationOptIn"]["enabled"] == true;
        let cases: Vec<(&str, &Labels, Option<&str>, Admission)> = vec![
            // Namespace opt-in: every pod, unless it opts out.
            ("shop", &enabled, None, Injected),
            ("shop", &enabled, Some("true"), Injected),
            ("shop", &enabled, Some("false"), Skipped),
            // Pod opt-in by annotation in an unlabelled namespace.
            (
                "shop",
                &[],
                Some("true"),
                if per_pod { Injected } else { NotSent },
            ),
            (
                "shop",
                &[],
                Some("false"),
                if per_pod { Skipped } else { NotSent },
            ),
            ("shop", &[], None, if per_pod { Skipped } else { NotSent }),
            // A namespace labelled `disabled` never reaches the webhook.
            ("legacy", &disabled, Some("true"), NotSent),
            // Never kube-system, never the operator's own namespace.
            (NEVER_INJECT_NAMESPACE, &enabled, Some("true"), NotSent),
            (NAMESPACE, &enabled, Some("true"), NotSent),
        ];
        for (ns, labels, annotation, expected) in cases {
            assert_eq!(
                admit(&r, ns, labels, &pod(annotation)),
                expected,
                "{scenario:?}: pod with annotation {annotation:?} in {ns} {labels:?}"
            );
        }
        for ns in r.values["webhook"]["excludeNamespaces"]
            .as_array()
            .expect("list")
        {
            let ns = ns.as_str().expect("str");
            assert_eq!(admit(&r, ns, &enabled, &pod(Some("true"))), NotSent, "{ns}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CRD, NOTES, values

#[test]
fn chart_crds_are_the_generated_crds_byte_for_byte() {
    let generated_dir = root().join("crds");
    let chart_dir = root().join(CHART).join("crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&generated_dir), names(&chart_dir));
    assert!(names(&chart_dir).contains(CRD_FILE));
    for name in names(&generated_dir) {
        let a = std::fs::read(generated_dir.join(&name)).expect("read");
        let b = std::fs::read(chart_dir.join(&name)).expect("read");
        assert!(
            a == b,
            "{CHART}/crds/{name} differs from crds/{name}: copy it (`cp crds/{name} {CHART}/crds/`)"
        );
    }
}

#[test]
fn notes_tell_the_next_two_commands() {
    let Some(helm) = helm() else { return };
    let out = run_helm(
        &helm,
        &[
            "install",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
        ],
    )
    .expect("helm install --dry-run=client");
    let notes = out.split("NOTES:").nth(1).expect("NOTES.txt is rendered");
    let apply = notes
        .lines()
        .find(|l| l.trim_start().starts_with("kubectl apply"))
        .expect("a kubectl apply command");
    let file = apply
        .split_whitespace()
        .skip_while(|w| *w != "-f")
        .nth(1)
        .expect("kubectl apply -f FILE");
    let rc = read_yaml(&root().join(file));
    assert_eq!(rc["kind"], "RuntimeConfig", "{file}");
    let label = format!(
        "kubectl label namespace <app-namespace> {NAMESPACE_LABEL_INJECT}={NAMESPACE_INJECT_ENABLED}"
    );
    assert!(notes.contains(&label), "{notes}");
    let apply_at = notes.find("kubectl apply").expect("apply");
    let label_at = notes.find(&label).expect("label");
    assert!(
        apply_at < label_at,
        "the RuntimeConfig first, then the label"
    );
}

/// The schema's property paths (`operator.image.tag`), and which of them are leaves.
fn schema_paths(schema: &Value, prefix: &str, out: &mut BTreeMap<String, bool>) {
    if let Some(props) = schema["properties"].as_object() {
        for (k, v) in props {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let leaf = v["properties"].as_object().is_none();
            out.insert(path.clone(), leaf);
            schema_paths(v, &path, out);
        }
    }
}

#[test]
fn every_value_is_commented_in_values_yaml_and_set_in_all_options() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).expect("schema"),
    )
    .expect("json");
    let mut paths = BTreeMap::new();
    schema_paths(&schema, "", &mut paths);
    // Helm's own key for subchart values; not ours to document.
    paths.remove("global");

    // values.yaml: every key of the schema is there, with a comment right above it.
    let text = std::fs::read_to_string(root().join(CHART).join("values.yaml")).expect("values");
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut commented = BTreeSet::new();
    let mut present = BTreeSet::new();
    let mut previous = "";
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let is_key = !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && trimmed.split_once(':').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-/".contains(c))
            });
        if is_key {
            let key = trimmed.split_once(':').map(|(k, _)| k).unwrap_or_default();
            while stack.last().is_some_and(|(i, _)| *i >= indent) {
                stack.pop();
            }
            let path = stack
                .iter()
                .map(|(_, k)| k.as_str())
                .chain(std::iter::once(key))
                .collect::<Vec<_>>()
                .join(".");
            if paths.contains_key(&path) {
                present.insert(path.clone());
                if previous.trim_start().starts_with('#') {
                    commented.insert(path.clone());
                }
            }
            stack.push((indent, key.to_owned()));
        }
        previous = line;
    }
    let uncommented: Vec<_> = paths.keys().filter(|p| !commented.contains(*p)).collect();
    assert!(
        uncommented.is_empty(),
        "values.yaml keys without a comment: {uncommented:?}"
    );
    let absent: Vec<_> = paths.keys().filter(|p| !present.contains(*p)).collect();
    assert!(
        absent.is_empty(),
        "schema keys missing from values.yaml: {absent:?}"
    );

    // ci/all-options-values.yaml sets every leaf, and changes it unless it is a switch that
    // is already on.
    let defaults = read_yaml(&root().join(CHART).join("values.yaml"));
    let all = read_yaml(&root().join(ALL_OPTIONS));
    let get = |v: &Value, path: &str| path.split('.').try_fold(v, |v, k| v.get(k)).cloned();
    let kept_on = [
        "webhook.annotationOptIn.enabled",
        "operator.podDisruptionBudget.enabled",
        "operator.serviceAccount.create",
    ];
    for (path, leaf) in &paths {
        if !leaf {
            continue;
        }
        let set = get(&all, path);
        assert!(set.is_some(), "{ALL_OPTIONS} does not set {path}");
        if !kept_on.contains(&path.as_str()) {
            assert_ne!(
                set,
                get(&defaults, path),
                "{ALL_OPTIONS} leaves {path} at its default"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Images

struct Stage {
    from: String,
    user: String,
    entrypoint: String,
    copies: Vec<String>,
    runs: Vec<String>,
}

fn dockerfile(path: &str) -> Vec<Stage> {
    let text = std::fs::read_to_string(root().join(path)).expect("Dockerfile");
    // Join continuation lines.
    let joined = text.replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (instr, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim().to_owned();
        match instr.to_ascii_uppercase().as_str() {
            "FROM" => stages.push(Stage {
                from: rest,
                user: String::new(),
                entrypoint: String::new(),
                copies: Vec::new(),
                runs: Vec::new(),
            }),
            "USER" => stages.last_mut().expect("stage").user = rest,
            "ENTRYPOINT" => stages.last_mut().expect("stage").entrypoint = rest,
            "COPY" => stages.last_mut().expect("stage").copies.push(rest),
            "RUN" => stages.last_mut().expect("stage").runs.push(rest),
            _ => {}
        }
    }
    stages
}

fn final_stage(mut stages: Vec<Stage>) -> Stage {
    stages.pop().expect("a stage")
}

/// `(package, [bin targets])` of every workspace member, from `cargo metadata`.
fn workspace_bins() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("json");
    meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            let bins = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|k| k.contains(&json!("bin")))
                })
                .map(|t| t["name"].as_str().expect("name").to_owned())
                .collect();
            (p["name"].as_str().expect("name").to_owned(), bins)
        })
        .collect()
}

#[test]
fn dockerfiles_build_the_workspace_binaries_into_minimal_non_root_images() {
    let bins = workspace_bins();
    for (file, package, bin, uid) in [
        (
            "runtime/Dockerfile",
            "outrigger-runtime",
            "outrigger",
            SIDECAR_RUN_AS_USER,
        ),
        (
            "operator/Dockerfile",
            "outrigger-operator",
            "outrigger-operator",
            65532,
        ),
    ] {
        assert!(
            bins.get(package)
                .is_some_and(|b| b.iter().any(|b| b == bin)),
            "{file}: package {package} has no binary {bin} ({bins:?})"
        );
        let stages = dockerfile(file);
        assert!(stages.len() >= 2, "{file}: multi-stage");
        let builder = &stages[0];
        assert!(
            builder.from.contains("rust:"),
            "{file}: builds with the Rust image"
        );
        let build = builder
            .runs
            .iter()
            .find(|r| r.contains("cargo build"))
            .unwrap_or_else(|| panic!("{file}: no cargo build"));
        for part in [
            "--release".to_owned(),
            "--locked".to_owned(),
            format!("--package {package}"),
            format!("--bin {bin}"),
            format!("target/release/{bin}"),
        ] {
            assert!(
                build.contains(&part),
                "{file}: `{part}` missing from {build}"
            );
        }
        let runtime = final_stage(stages);
        assert!(
            runtime.from.starts_with("gcr.io/distroless/") || runtime.from == "scratch",
            "{file}: minimal runtime base, not {}",
            runtime.from
        );
        assert!(
            runtime.runs.is_empty(),
            "{file}: no shell at run time, so no RUN"
        );
        assert_eq!(
            runtime.user,
            format!("{uid}:{uid}"),
            "{file}: numeric non-root user"
        );
        let entry = format!("[\"/usr/local/bin/{bin}\"]");
        assert_eq!(runtime.entrypoint, entry, "{file}: exec-form entrypoint");
        assert!(
            runtime
                .copies
                .iter()
                .any(|c| c.starts_with("--from=builder")
                    && c.ends_with(&format!("/usr/local/bin/{bin}"))),
            "{file}: the binary is copied from the builder"
        );
    }

    // The build context keeps every workspace member (cargo reads the whole workspace) and
    // leaves out build output and tool caches.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in ["**/target", ".tools", ".git"] {
        assert!(
            patterns.contains(&needed),
            ".dockerignore must exclude {needed}"
        );
    }
    let members = read_workspace_members();
    for member in members {
        let top = member.split('/').next().unwrap_or_default();
        assert!(
            !patterns.contains(&top) && !patterns.contains(&member.as_str()),
            ".dockerignore drops workspace member {member}"
        );
    }
    for kept in ["Cargo.toml", "Cargo.lock"] {
        assert!(!patterns.contains(&kept), ".dockerignore drops {kept}");
    }

    // The chart's default images are the ones these Dockerfiles are documented to build.
    let values = read_yaml(&root().join(CHART).join("values.yaml"));
    let sidecar = image_ref(&values["sidecar"]["image"], &chart_app_version());
    assert_eq!(sidecar, DEFAULT_SIDECAR_IMAGE);
    for (file, image) in [
        ("runtime/Dockerfile", sidecar),
        (
            "operator/Dockerfile",
            image_ref(&values["operator"]["image"], &chart_app_version()),
        ),
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect("read");
        assert!(
            text.contains(&format!("docker build -f {file} -t {image} .")),
            "{file} documents building {image}"
        );
    }
}

fn read_workspace_members() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("members");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Examples

fn example_docs() -> Vec<(String, Value)> {
    let dir = root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for doc in parse_stream(&text) {
            out.push((name.clone(), doc));
        }
    }
    out
}

#[test]
fn example_runtime_configs_pass_the_shared_validation() {
    let docs = example_docs();
    let mut names = BTreeSet::new();
    let mut dubbo_demo = false;
    for (file, doc) in docs.iter().filter(|(_, d)| d["kind"] == "RuntimeConfig") {
        assert_eq!(doc["apiVersion"], format!("{GROUP}/{VERSION}"), "{file}");
        let rc: RuntimeConfig = serde_json::from_value(doc.clone())
            .unwrap_or_else(|e| panic!("{file}: not a RuntimeConfig: {e}"));
        if let Err(errors) = outrigger_config::validate(&rc.spec) {
            panic!("{file}: invalid:\n{}", errors.lines().join("\n"));
        }
        // What the controller writes is what the sidecar loads.
        let text = serde_json::to_string(doc).expect("json");
        let file_text = outrigger_operator::render(&text, true)
            .unwrap_or_else(|e| panic!("{file}: render: {e:?}"));
        outrigger_config::load_yaml(&file_text).unwrap_or_else(|e| panic!("{file}: {e}"));
        names.insert(rc.metadata.name.clone().expect("name"));

        let filters: Vec<&str> = rc
            .spec
            .rpc
            .before_invoke
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        let routes_demo_id = rc
            .spec
            .route_tables
            .iter()
            .flat_map(|t| &t.routes)
            .any(|r| {
                r.matcher.headers.iter().any(|h| {
                    h.name == "id"
                        && matches!(&h.value, outrigger_config::ValueMatch::Exact(v) if v == outrigger_runtime::DEMO_ID)
                })
            });
        dubbo_demo |= filters.contains(&"dubbo_json_rpc") && routes_demo_id;
    }
    assert!(dubbo_demo, "an example runs the seed's dubbo JSON-RPC demo");
    assert!(
        names.contains("default"),
        "an example is the namespace default RuntimeConfig"
    );
    assert!(names.len() >= 2, "{names:?}");
}

#[test]
fn example_app_is_opted_in_and_injected_into_valid_manifests() {
    let docs = example_docs();
    let configs: BTreeSet<String> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "RuntimeConfig")
        .map(|(_, d)| d["metadata"]["name"].as_str().expect("name").to_owned())
        .collect();
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| d["kind"] == "Deployment")
        .map(|(_, d)| d)
        .collect();
    assert!(!workloads.is_empty(), "examples/ has an app Deployment");
    kubernetes_validate(&workloads, "1.35.0", "examples");

    let Some(helm) = helm() else { return };
    let r = Rendered::of(&helm, Scenario::Default);
    for deployment in &workloads {
        let template = &deployment["spec"]["template"];
        let annotations = &template["metadata"]["annotations"];
        assert_eq!(
            annotations[ANNOTATION_INJECT], "true",
            "opted in by annotation"
        );
        let config = annotations[ANNOTATION_CONFIG].as_str().unwrap_or("default");
        assert!(
            configs.contains(config),
            "the app names a shipped RuntimeConfig ({config})"
        );
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": template["metadata"],
            "spec": template["spec"],
        });
        // In a namespace nobody labelled, through the chart's registrations.
        assert_eq!(admit(&r, "shop", &[], &pod), Admission::Injected);
    }

    // The injected Deployment is still a valid object.
    let text: String = workloads
        .iter()
        .map(|d| format!("---\n{}\n", serde_json::to_string(d).expect("json")))
        .collect();
    let (injected, reports) =
        outrigger_operator::inject_manifests(&text, &SidecarSettings::default()).expect("inject");
    assert!(
        reports.iter().all(|r| r.outcome == "injected"),
        "{reports:?}"
    );
    assert!(reports.iter().all(|r| r.warnings.is_empty()), "{reports:?}");
    let injected = parse_stream(&injected);
    kubernetes_validate(
        &injected.iter().collect::<Vec<_>>(),
        "1.35.0",
        "injected examples",
    );
}

// ---------------------------------------------------------------------------------------------
// Docs

/// One documented field: its path (`spec.clusters[].hosts[].address`), schema, and whether its
/// parent object requires it.
struct Field {
    path: String,
    schema: Value,
    required: bool,
}

/// Every property path below `schema`, depth first in schema order.
fn crd_paths(schema: &Value, prefix: &str, out: &mut Vec<Field>) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for (k, v) in props {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        out.push(Field {
            path: path.clone(),
            schema: v.clone(),
            required: required.contains(&json!(k)),
        });
        // Lists of objects (and lists of lists) continue with `[]`.
        let (mut inner, mut inner_path) = (v, path);
        while inner.get("items").is_some() {
            inner = &inner["items"];
            inner_path.push_str("[]");
        }
        crd_paths(inner, &inner_path, out);
    }
}

fn crd_schema() -> Value {
    let crd = read_yaml(&root().join("crds").join(CRD_FILE));
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "document every served version");
    versions[0]["schema"]["openAPIV3Schema"].clone()
}

fn type_of(schema: &Value) -> String {
    let t = schema["type"].as_str().unwrap_or("any");
    let base = match t {
        "array" => format!("list of {}", type_of(&schema["items"])),
        "object" if schema["x-kubernetes-preserve-unknown-fields"] == true => {
            "object (free-form)".to_owned()
        }
        other => other.to_owned(),
    };
    match schema["format"].as_str() {
        Some(f) => format!("{base} ({f})"),
        None => base,
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The field reference generated from the CRD: one table per top-level section.
fn generated_reference() -> String {
    let schema = crd_schema();
    let mut out = String::new();
    for root_key in ["spec", "status"] {
        let mut fields = Vec::new();
        crd_paths(&schema["properties"][root_key], root_key, &mut fields);
        let title = if root_key == "spec" {
            "### `spec` — what you write\n\n"
        } else {
            "### `status` — what the operator reports (read-only)\n\n"
        };
        out.push_str(title);
        out.push_str("| Field | Type | Default | Meaning |\n|---|---|---|---|\n");
        for Field {
            path,
            schema: field,
            required,
        } in &fields
        {
            let mut meaning = one_line(field["description"].as_str().unwrap_or_default());
            if *required {
                meaning.push_str(" **Required.**");
            }
            if let Some(values) = field["enum"].as_array() {
                let values: Vec<String> = values
                    .iter()
                    .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                    .collect();
                meaning.push_str(&format!(" One of {}.", values.join(", ")));
            }
            if let Some(keys) = field["x-kubernetes-list-map-keys"].as_array() {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| format!("`{}`", k.as_str().unwrap_or_default()))
                    .collect();
                meaning.push_str(&format!(" Entries are unique by {}.", keys.join(", ")));
            }
            let rules = field["x-kubernetes-validations"]
                .as_array()
                .or_else(|| field["items"]["x-kubernetes-validations"].as_array());
            for rule in rules.into_iter().flatten() {
                meaning.push_str(&format!(
                    " Checked on apply: {}.",
                    rule["message"].as_str().unwrap_or_default()
                ));
            }
            let default = match field.get("default") {
                Some(d) => format!("`{}`", serde_json::to_string(d).expect("json")),
                None => "—".to_owned(),
            };
            out.push_str(&format!(
                "| `{path}` | {} | {default} | {} |\n",
                type_of(field),
                meaning.trim()
            ));
        }
        out.push('\n');
    }
    out
}

const BEGIN: &str = "<!-- BEGIN FIELD REFERENCE: generated from crds/outrigger.dev_runtimeconfigs.yaml by tests/chart.rs; regenerate with OUTRIGGER_REGEN_DOCS=1 cargo test -p outrigger-tests --test chart -->\n";
const END: &str = "<!-- END FIELD REFERENCE -->";

#[test]
fn configure_md_documents_every_crd_field() {
    let path = root().join(CONFIGURE_MD);
    let mut doc = std::fs::read_to_string(&path).expect("docs/configure.md");
    let start = doc.find(BEGIN).map(|i| i + BEGIN.len());
    let end = doc.find(END);
    let (Some(start), Some(end)) = (start, end) else {
        panic!("{CONFIGURE_MD} lacks the generated-reference markers");
    };
    let generated = generated_reference();
    if std::env::var("OUTRIGGER_REGEN_DOCS").as_deref() == Ok("1") {
        doc.replace_range(start..end, &generated);
        std::fs::write(&path, &doc).expect("write");
    }
    let doc = std::fs::read_to_string(&path).expect("docs/configure.md");
    let mut fields = Vec::new();
    crd_paths(&crd_schema(), "", &mut fields);
    let undocumented: Vec<&str> = fields
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !doc.contains(&format!("`{p}`")))
        .collect();
    assert!(
        undocumented.is_empty(),
        "{CONFIGURE_MD} does not document {undocumented:?}; regenerate with OUTRIGGER_REGEN_DOCS=1"
    );
    assert!(
        doc[start..].starts_with(&generated),
        "{CONFIGURE_MD}'s field reference is out of date with the CRD; regenerate it with \
         `OUTRIGGER_REGEN_DOCS=1 cargo test -p outrigger-tests --test chart`"
    );
    // The pod annotations are part of configuring Outrigger too.
    for annotation in [
        ANNOTATION_INJECT,
        ANNOTATION_CONFIG,
        ANNOTATION_LOG_LEVEL,
        ANNOTATION_NATIVE_SIDECAR,
        ANNOTATION_CPU_REQUEST,
        ANNOTATION_CPU_LIMIT,
        ANNOTATION_MEMORY_REQUEST,
        ANNOTATION_MEMORY_LIMIT,
        ANNOTATION_INJECT_POLICY,
        ANNOTATION_INJECTION,
        ANNOTATION_CONFIG_HASH,
    ] {
        assert!(
            doc.contains(&format!("`{annotation}`")),
            "{CONFIGURE_MD}: {annotation}"
        );
    }
    for filter in outrigger_config::FilterKind::NAMES {
        assert!(
            doc.contains(&format!("| `{filter}` |")),
            "{CONFIGURE_MD}: the filters table lacks {filter}"
        );
    }
    for port in [SIDECAR_GRPC_PORT, SIDECAR_ADMIN_PORT] {
        assert!(
            doc.contains(&port.to_string()),
            "{CONFIGURE_MD}: port {port}"
        );
    }
}

/// Every reason the injector gives for leaving a pod alone (an exhaustive match: a new reason
/// does not compile until it is listed here and documented).
fn skip_reasons() -> Vec<Skip> {
    let all = vec![
        Skip::NotSelected,
        Skip::OptedOut,
        Skip::AlreadyInjected,
        Skip::SystemNamespace,
        Skip::BadInjectAnnotation("yes".to_owned()),
        Skip::ConfigNotFound {
            namespace: "shop".to_owned(),
            name: "default".to_owned(),
        },
        Skip::VolumeConflict("outrigger-config".to_owned()),
    ];
    for s in &all {
        match s {
            Skip::NotSelected
            | Skip::OptedOut
            | Skip::AlreadyInjected
            | Skip::SystemNamespace
            | Skip::BadInjectAnnotation(_)
            | Skip::ConfigNotFound { .. }
            | Skip::VolumeConflict(_) => {}
        }
    }
    all
}

#[test]
fn troubleshooting_explains_every_reason_a_pod_is_not_injected() {
    let doc = std::fs::read_to_string(root().join("docs/troubleshooting.md"))
        .expect("docs/troubleshooting.md");
    for skip in skip_reasons() {
        let text = skip.to_string();
        let shown = if skip.warns() {
            format!("outrigger: {text}")
        } else {
            text
        };
        assert!(
            doc.contains(&shown),
            "docs/troubleshooting.md must quote the operator's message: {shown}"
        );
        assert!(
            doc.contains(&format!("`{}`", skip.label())),
            "docs/troubleshooting.md must name the metric label {}",
            skip.label()
        );
    }
    // How a skip shows, how to fail closed, and how to read the rollout.
    for needle in [
        "outrigger.dev/injection: skipped: <reason>",
        "outrigger.dev/inject-policy: required",
        "InjectionSkipped",
        "outrigger_operator_injection_skips_total",
        "status.rollout",
        "RolledOut",
    ] {
        assert!(
            doc.contains(needle),
            "docs/troubleshooting.md must explain {needle}"
        );
    }
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for needle in [
        "outrigger.dev/injection: skipped: <reason>",
        "outrigger.dev/inject-policy",
        "InjectionSkipped",
        "status.rollout",
        "RolledOut",
    ] {
        assert!(readme.contains(needle), "README.md must explain {needle}");
    }
}

#[test]
fn docs_only_set_values_the_chart_has() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join(CHART).join("values.schema.json")).expect("schema"),
    )
    .expect("json");
    let mut paths = BTreeMap::new();
    schema_paths(&schema, "", &mut paths);
    let mut checked = 0;
    for file in [
        "docs/install.md",
        "docs/configure.md",
        "docs/troubleshooting.md",
    ] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        let words: Vec<&str> = text.split_whitespace().collect();
        for pair in words.windows(2) {
            if pair[0] != "--set" {
                continue;
            }
            let key = pair[1]
                .trim_matches(|c| c == '`' || c == '\'' || c == '"')
                .split('=')
                .next()
                .unwrap_or_default();
            assert!(
                paths.contains_key(key),
                "{file}: --set {key} is not a chart value"
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the docs show --set examples");
}
