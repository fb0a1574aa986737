#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::*;

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn plain_pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "app", "namespace": "apps", "labels": { "app": "web" }, "annotations": annotations },
        "spec": { "containers": [{ "name": "app", "image": "nginx:1.27" }] },
    })
}

fn webhook(namespace_opted_in: bool) -> Request<'static> {
    Request {
        namespace: Some("apps"),
        selection: Selection::OptIn { namespace_opted_in },
        config_exists: None,
        config_hash: None,
    }
}

/// Applies the injection to the pod JSON, as the API server would.
fn injected(v: &Value, request: &Request<'_>, settings: &SidecarSettings) -> (Value, Vec<String>) {
    match inject(&pod(v.clone()), request, settings) {
        Injection::Patched { patch, warnings } => {
            let mut doc = v.clone();
            json_patch::patch(&mut doc, &patch).unwrap();
            (doc, warnings)
        }
        Injection::Unchanged(skip) => panic!("expected a patch, got skip: {skip}"),
    }
}

fn sidecar(doc: &Value, native: bool) -> Container {
    let list = if native {
        "initContainers"
    } else {
        "containers"
    };
    serde_json::from_value(doc["spec"][list][0].clone()).unwrap()
}

#[test]
fn skipped_pods_say_why() {
    let already_labelled = json!({
        "metadata": { "name": "a", "labels": { "outrigger.dev/injected": "true" }, "annotations": { "outrigger.dev/inject": "true" } },
        "spec": { "containers": [{ "name": "app" }] },
    });
    let already_native = json!({
        "metadata": { "name": "a", "annotations": { "outrigger.dev/inject": "true" } },
        "spec": { "initContainers": [{ "name": "outrigger", "restartPolicy": "Always" }], "containers": [{ "name": "app" }] },
    });
    let volume_clash = json!({
        "metadata": { "name": "a", "annotations": { "outrigger.dev/inject": "true" } },
        "spec": { "containers": [{ "name": "app" }], "volumes": [{ "name": "outrigger-config", "emptyDir": {} }] },
    });
    let opted_in = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let named_config =
        plain_pod(json!({ "outrigger.dev/inject": "true", "outrigger.dev/config": "edge" }));
    let kube_system = Request {
        namespace: Some("kube-system"),
        ..webhook(true)
    };
    let missing_config = Request {
        config_exists: Some(false),
        ..webhook(false)
    };
    let offline = Request {
        namespace: None,
        selection: Selection::AllUnlessOptedOut,
        config_exists: None,
        config_hash: None,
    };

    let cases = [
        (
            "no annotation, namespace not opted in",
            plain_pod(json!({})),
            webhook(false),
            Skip::NotSelected,
            false,
        ),
        (
            "opted out beats namespace label",
            plain_pod(json!({ "outrigger.dev/inject": "false" })),
            webhook(true),
            Skip::OptedOut,
            false,
        ),
        (
            "opted out offline",
            plain_pod(json!({ "outrigger.dev/inject": "false" })),
            offline,
            Skip::OptedOut,
            false,
        ),
        (
            "already labelled",
            already_labelled,
            webhook(true),
            Skip::AlreadyInjected,
            false,
        ),
        (
            "already has a native sidecar",
            already_native,
            webhook(true),
            Skip::AlreadyInjected,
            false,
        ),
        (
            "kube-system never",
            opted_in.clone(),
            kube_system,
            Skip::SystemNamespace,
            true,
        ),
        (
            "unknown annotation value",
            plain_pod(json!({ "outrigger.dev/inject": "yes" })),
            webhook(false),
            Skip::BadInjectAnnotation("yes".into()),
            true,
        ),
        (
            "RuntimeConfig missing",
            named_config,
            missing_config,
            Skip::ConfigNotFound {
                namespace: "apps".into(),
                name: "edge".into(),
            },
            true,
        ),
        (
            "volume name taken",
            volume_clash,
            webhook(false),
            Skip::VolumeConflict("outrigger-config".into()),
            true,
        ),
    ];
    for (case, v, request, expected, warns) in cases {
        let got = inject(&pod(v.clone()), &request, &SidecarSettings::default());
        assert_eq!(got, Injection::Unchanged(expected.clone()), "{case}");
        assert_eq!(expected.warns(), warns, "{case}");
        assert!(!expected.to_string().is_empty(), "{case}");
        // A skip the user should hear about marks the pod; an expected one leaves it alone.
        match skip_patch(&pod(v.clone()), &expected) {
            Some(patch) => {
                assert!(warns, "{case}");
                let mut doc = v.clone();
                json_patch::patch(&mut doc, &patch).unwrap();
                assert_eq!(
                    doc["metadata"]["annotations"]["outrigger.dev/injection"],
                    format!("skipped: {expected}"),
                    "{case}"
                );
                // Everything else is as it was.
                doc["metadata"]["annotations"]
                    .as_object_mut()
                    .unwrap()
                    .remove("outrigger.dev/injection");
                let mut before = v.clone();
                if before["metadata"].get("annotations").is_none() {
                    before["metadata"]["annotations"] = json!({});
                }
                assert_eq!(doc, before, "{case}");
            }
            None => assert!(!warns, "{case}"),
        }
    }
    assert_eq!(
        Skip::ConfigNotFound {
            namespace: "apps".into(),
            name: "edge".into()
        }
        .to_string(),
        "RuntimeConfig apps/edge (annotation outrigger.dev/config) does not exist; sidecar not injected"
    );
}

#[test]
fn injected_pods_field_by_field() {
    let defaults = SidecarSettings::default();
    let regular = SidecarSettings {
        native_sidecar: false,
        ..SidecarSettings::default()
    };
    let with_init = json!({
        "metadata": { "name": "a", "annotations": { "outrigger.dev/inject": "true" } },
        "spec": {
            "initContainers": [{ "name": "migrate", "image": "busybox" }],
            "containers": [{ "name": "app", "image": "app" }],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        },
    });
    let no_labels =
        json!({ "metadata": { "name": "bare" }, "spec": { "containers": [{ "name": "app" }] } });
    let ns_opt_in = plain_pod(json!({}));
    let opt_in = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let annotated_native_off = plain_pod(
        json!({ "outrigger.dev/inject": "true", "outrigger.dev/native-sidecar": "false" }),
    );
    let annotated_native_on = plain_pod(
        json!({ "outrigger.dev/inject": "true", "outrigger.dev/native-sidecar": "true" }),
    );
    let offline = Request {
        namespace: None,
        selection: Selection::AllUnlessOptedOut,
        config_exists: None,
        config_hash: None,
    };
    let config_known = Request {
        config_exists: Some(true),
        ..webhook(false)
    };

    // (case, pod, request, settings, native, index of the app container afterwards, init containers after)
    let cases = [
        (
            "annotation opt-in, native default",
            opt_in.clone(),
            webhook(false),
            &defaults,
            true,
            0,
            1,
        ),
        (
            "namespace opt-in",
            ns_opt_in,
            webhook(true),
            &defaults,
            true,
            0,
            1,
        ),
        (
            "regular container by flag",
            opt_in.clone(),
            webhook(false),
            &regular,
            false,
            1,
            0,
        ),
        (
            "regular container by annotation",
            annotated_native_off,
            webhook(false),
            &defaults,
            false,
            1,
            0,
        ),
        (
            "native by annotation over flag",
            annotated_native_on,
            webhook(false),
            &regular,
            true,
            0,
            1,
        ),
        (
            "native goes first among init containers",
            with_init,
            webhook(false),
            &defaults,
            true,
            0,
            2,
        ),
        (
            "pod without labels or volumes (offline)",
            no_labels,
            offline,
            &defaults,
            true,
            0,
            1,
        ),
        (
            "RuntimeConfig known to exist",
            opt_in,
            config_known,
            &defaults,
            true,
            0,
            1,
        ),
    ];
    for (case, v, request, settings, native, app_index, inits) in cases {
        let (doc, warnings) = injected(&v, &request, settings);
        assert!(warnings.is_empty(), "{case}: {warnings:?}");
        let after = pod(doc.clone());
        assert!(is_injected(&after), "{case}");
        assert_eq!(
            after.metadata.labels.as_ref().unwrap()["outrigger.dev/injected"],
            "true",
            "{case}"
        );
        let spec = after.spec.as_ref().unwrap();
        assert_eq!(
            spec.init_containers.as_ref().map_or(0, Vec::len),
            inits,
            "{case}"
        );
        assert_eq!(
            spec.containers[app_index].name,
            v["spec"]["containers"][0]["name"].as_str().unwrap(),
            "{case}"
        );
        if let Some(labels) = v["metadata"]["labels"].as_object() {
            for (k, val) in labels {
                assert_eq!(doc["metadata"]["labels"][k], *val, "{case}: label {k} kept");
            }
        }

        let c = sidecar(&doc, native);
        assert_eq!(c.name, "outrigger", "{case}");
        assert_eq!(c.image.as_deref(), Some(settings.image.as_str()), "{case}");
        assert_eq!(
            c.args.as_deref().unwrap(),
            [
                "--config",
                "/etc/outrigger/runtime.yaml",
                "--admin-address",
                "0.0.0.0:34999",
                "--log-level",
                "info",
                "--threads=2"
            ],
            "{case}"
        );
        assert_eq!(
            c.restart_policy.as_deref(),
            native.then_some("Always"),
            "{case}"
        );
        assert_eq!(c.startup_probe.is_some(), native, "{case}");
        let ports: Vec<_> = c
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            [("grpc".to_owned(), 34904), ("admin".to_owned(), 34999)],
            "{case}"
        );
        let ready = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        let live = c
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (ready.path.as_deref(), live.path.as_deref()),
            (Some("/readyz"), Some("/healthz")),
            "{case}"
        );
        assert_eq!(
            serde_json::to_value(&ready.port).unwrap(),
            json!("admin"),
            "{case}"
        );
        let env: Vec<_> = c
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    e.value_from
                        .as_ref()
                        .unwrap()
                        .field_ref
                        .as_ref()
                        .unwrap()
                        .field_path
                        .clone(),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("POD_NAME".into(), "metadata.name".into()),
                ("POD_NAMESPACE".into(), "metadata.namespace".into())
            ],
            "{case}"
        );
        let mount = &c.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (
                mount.name.as_str(),
                mount.mount_path.as_str(),
                mount.read_only
            ),
            ("outrigger-config", "/etc/outrigger", Some(true)),
            "{case}"
        );
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{case}");
        assert_eq!(sc.run_as_user, Some(65532), "{case}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{case}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{case}");
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{case}"
        );
        assert_eq!(
            sc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault",
            "{case}"
        );
        let res = serde_json::to_value(c.resources.as_ref().unwrap()).unwrap();
        assert_eq!(
            res,
            json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } }),
            "{case}"
        );

        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "outrigger-config")
            .unwrap();
        assert_eq!(
            volume.config_map.as_ref().unwrap().name,
            "outrigger-default",
            "{case}"
        );

        // Idempotent: the injected pod is left alone.
        assert_eq!(
            inject(&after, &request, settings),
            Injection::Unchanged(Skip::AlreadyInjected),
            "{case}"
        );
    }
}

#[test]
fn annotations_override_defaults_or_warn() {
    let settings = SidecarSettings {
        cpu_limit: None,
        ..SidecarSettings::default()
    };
    // (case, extra annotations, expected resources, log level, warning fragments)
    let cases = [
        (
            "custom resources",
            json!({ "outrigger.dev/cpu-request": "100m", "outrigger.dev/cpu-limit": "1", "outrigger.dev/memory-request": "64Mi", "outrigger.dev/memory-limit": "256Mi" }),
            json!({ "requests": { "cpu": "100m", "memory": "64Mi" }, "limits": { "cpu": "1", "memory": "256Mi" } }),
            "info",
            vec![],
        ),
        (
            "bad quantities fall back to defaults",
            json!({ "outrigger.dev/cpu-request": "lots", "outrigger.dev/memory-limit": "-5Mi" }),
            json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } }),
            "info",
            vec![
                "outrigger.dev/cpu-request: \"lots\" is not a Kubernetes quantity",
                "outrigger.dev/memory-limit: \"-5Mi\" is negative; using 128Mi",
            ],
        ),
        (
            "request above limit is lowered",
            json!({ "outrigger.dev/memory-limit": "16Mi" }),
            json!({ "requests": { "cpu": "50m", "memory": "16Mi" }, "limits": { "memory": "16Mi" } }),
            "info",
            vec!["memory request 32Mi is above its limit 16Mi"],
        ),
        (
            "log level and bad native flag",
            json!({ "outrigger.dev/log-level": "debug", "outrigger.dev/native-sidecar": "maybe" }),
            json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } }),
            "debug",
            vec!["outrigger.dev/native-sidecar: \"maybe\" is neither"],
        ),
        (
            "bad log level",
            json!({ "outrigger.dev/log-level": "verbose" }),
            json!({ "requests": { "cpu": "50m", "memory": "32Mi" }, "limits": { "memory": "128Mi" } }),
            "info",
            vec![
                "outrigger.dev/log-level: \"verbose\" is not one of trace, debug, info, warn, error; using info",
            ],
        ),
    ];
    for (case, extra, resources, level, fragments) in cases {
        let mut annotations = extra.as_object().unwrap().clone();
        annotations.insert("outrigger.dev/inject".into(), json!("true"));
        let v = plain_pod(Value::Object(annotations));
        let (doc, warnings) = injected(&v, &webhook(false), &settings);
        let c = sidecar(&doc, true);
        assert_eq!(
            serde_json::to_value(c.resources.unwrap()).unwrap(),
            resources,
            "{case}"
        );
        assert_eq!(c.args.unwrap()[5], level, "{case}");
        assert_eq!(warnings.len(), fragments.len(), "{case}: {warnings:?}");
        for f in fragments {
            assert!(
                warnings.iter().any(|w| w.contains(f)),
                "{case}: no warning containing {f:?} in {warnings:?}"
            );
        }
    }
}

#[test]
fn json_pointer_paths_escape_slashes() {
    let v = plain_pod(json!({ "outrigger.dev/inject": "true", "outrigger.dev/config": "edge" }));
    let Injection::Patched { patch, .. } =
        inject(&pod(v), &webhook(false), &SidecarSettings::default())
    else {
        panic!("not injected");
    };
    let ops = serde_json::to_value(&patch).unwrap();
    let paths: Vec<_> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|op| op["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/labels/outrigger.dev~1injected",
            "/spec/volumes",
            "/spec/containers/0/env",
            "/spec/initContainers"
        ]
    );
    assert!(ops.as_array().unwrap().iter().all(|op| op["op"] == "add"));
    assert_eq!(ops[1]["value"][0]["configMap"]["name"], "outrigger-edge");
}

#[test]
fn image_pull_policy_is_set_only_when_configured() {
    let p = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let (doc, _) = injected(&p, &webhook(false), &SidecarSettings::default());
    assert_eq!(
        sidecar(&doc, true).image_pull_policy,
        None,
        "Kubernetes' default"
    );
    let always = SidecarSettings {
        image_pull_policy: Some("Always".to_owned()),
        ..SidecarSettings::default()
    };
    let (doc, _) = injected(&p, &webhook(false), &always);
    assert_eq!(
        sidecar(&doc, true).image_pull_policy.as_deref(),
        Some("Always")
    );
}

#[test]
fn skip_annotation_is_added_to_pods_without_annotations() {
    let bare = json!({
        "metadata": { "generateName": "web-" },
        "spec": { "containers": [{ "name": "app" }] },
    });
    let patch = skip_patch(&pod(bare.clone()), &Skip::SystemNamespace).unwrap();
    let mut doc = bare;
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(
        doc["metadata"]["annotations"],
        json!({ "outrigger.dev/injection": "skipped: pods in kube-system are never injected" })
    );
}

#[test]
fn injected_pods_carry_the_config_hash_they_were_admitted_with() {
    let v = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let with_hash = Request {
        config_exists: Some(true),
        config_hash: Some("3f9a0c1d2e4b5a67"),
        ..webhook(false)
    };
    let (doc, _) = injected(&v, &with_hash, &SidecarSettings::default());
    assert_eq!(
        doc["metadata"]["annotations"]["outrigger.dev/config-hash"],
        "3f9a0c1d2e4b5a67"
    );
    assert_eq!(
        doc["metadata"]["annotations"]["outrigger.dev/inject"],
        "true"
    );
    let bare =
        json!({ "metadata": { "name": "p" }, "spec": { "containers": [{ "name": "app" }] } });
    let (doc, _) = injected(
        &bare,
        &Request {
            selection: Selection::AllUnlessOptedOut,
            ..with_hash
        },
        &SidecarSettings::default(),
    );
    assert_eq!(
        doc["metadata"]["annotations"],
        json!({ "outrigger.dev/config-hash": "3f9a0c1d2e4b5a67" })
    );
    // Unknown hash (standalone webhook, offline inject): no annotation.
    let (doc, _) = injected(&v, &webhook(false), &SidecarSettings::default());
    assert!(
        doc["metadata"]["annotations"]
            .get("outrigger.dev/config-hash")
            .is_none()
    );
}

#[test]
fn inject_policy_required_is_read_from_the_pod() {
    let cases = [
        (json!({ "outrigger.dev/inject-policy": "required" }), true),
        (json!({ "outrigger.dev/inject-policy": "optional" }), false),
        (json!({}), false),
    ];
    for (annotations, required) in cases {
        assert_eq!(
            policy_required(&pod(plain_pod(annotations.clone()))),
            required,
            "{annotations}"
        );
    }
}

#[test]
fn app_containers_learn_the_sidecar_ports_unless_they_set_them() {
    let v = json!({
        "metadata": { "name": "a", "annotations": { "outrigger.dev/inject": "true" } },
        "spec": { "containers": [
            { "name": "plain" },
            { "name": "own", "env": [{ "name": "DAPR_HTTP_PORT", "value": "3600" }, { "name": "X", "value": "1" }] },
        ] },
    });
    for native in [true, false] {
        let settings = SidecarSettings {
            native_sidecar: native,
            ..SidecarSettings::default()
        };
        let (doc, _) = injected(&v, &webhook(false), &settings);
        let app = |name: &str| -> Vec<(String, String)> {
            let c = doc["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .clone();
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            app("plain"),
            pairs(&[
                ("DAPR_HTTP_PORT", "3500"),
                ("DAPR_GRPC_PORT", "34904"),
                ("runtime_GRPC_PORT", "34904")
            ]),
            "native {native}"
        );
        assert_eq!(
            app("own"),
            pairs(&[
                ("DAPR_HTTP_PORT", "3600"),
                ("X", "1"),
                ("DAPR_GRPC_PORT", "34904"),
                ("runtime_GRPC_PORT", "34904")
            ]),
            "the pod's own value wins (native {native})"
        );
        let sidecar_env = sidecar(&doc, native).env.unwrap_or_default();
        assert!(
            sidecar_env.iter().all(|e| e.name != "DAPR_HTTP_PORT"),
            "not on the sidecar"
        );
    }
}

#[test]
fn app_port_gives_the_sidecar_an_inbound_listener() {
    // (case, annotations, expected extra args, inbound port declared, warning fragment)
    let cases = [
        (
            "port only: auto",
            json!({ "outrigger.dev/app-port": "8080" }),
            Some(vec![
                "--inbound-app-port",
                "8080",
                "--inbound-app-protocol",
                "auto",
            ]),
            None,
        ),
        (
            "dubbo",
            json!({ "outrigger.dev/app-port": "20880", "outrigger.dev/app-protocol": "dubbo" }),
            Some(vec![
                "--inbound-app-port",
                "20880",
                "--inbound-app-protocol",
                "dubbo",
            ]),
            None,
        ),
        (
            "unknown protocol falls back to auto",
            json!({ "outrigger.dev/app-port": "8080", "outrigger.dev/app-protocol": "thrift" }),
            Some(vec![
                "--inbound-app-port",
                "8080",
                "--inbound-app-protocol",
                "auto",
            ]),
            Some("\"thrift\" is not one of http, http2, bolt, dubbo, auto; using auto"),
        ),
        (
            "not a port",
            json!({ "outrigger.dev/app-port": "http" }),
            None,
            Some("outrigger.dev/app-port: \"http\" is not a port (1-65535); no inbound listener"),
        ),
        (
            "http2 (gRPC) apps get an inbound listener",
            json!({ "outrigger.dev/app-port": "50051", "outrigger.dev/app-protocol": "http2" }),
            Some(vec![
                "--inbound-app-port",
                "50051",
                "--inbound-app-protocol",
                "http2",
            ]),
            None,
        ),
        ("no annotation", json!({}), None, None),
    ];
    for (case, extra, args, warning) in cases {
        let mut annotations = extra.as_object().unwrap().clone();
        annotations.insert("outrigger.dev/inject".into(), json!("true"));
        let v = plain_pod(Value::Object(annotations));
        let (doc, warnings) = injected(&v, &webhook(false), &SidecarSettings::default());
        let c = sidecar(&doc, true);
        let all = c.args.unwrap();
        let extra_args: Vec<&str> = all[7..].iter().map(String::as_str).collect();
        assert_eq!(extra_args, args.clone().unwrap_or_default(), "{case}");
        let inbound = c
            .ports
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("inbound") && p.container_port == 34906);
        assert_eq!(inbound, args.is_some(), "{case}");
        match warning {
            Some(w) => assert!(
                warnings.iter().any(|x| x.contains(w)),
                "{case}: {warnings:?}"
            ),
            None => assert!(warnings.is_empty(), "{case}: {warnings:?}"),
        }
    }
}

#[test]
fn sidecars_get_a_pod_certificate_identity_when_the_operator_signs_them() {
    let settings = SidecarSettings {
        identity: Some(PodIdentity {
            trust_domain: "mesh.example".into(),
            endpoint: "outrigger-webhook.outrigger-system.svc:9444".into(),
            server_name: "outrigger-webhook.outrigger-system.svc".into(),
            issuance: Issuance::PodCertificate {
                signer_name: "outrigger.dev/identity".into(),
                max_expiration_seconds: 86_400,
            },
        }),
        ..SidecarSettings::default()
    };
    let v = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let (doc, warnings) = injected(&v, &webhook(false), &settings);
    assert!(warnings.is_empty(), "{warnings:?}");
    let volumes = doc["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[1],
        json!({ "name": "outrigger-identity", "projected": { "sources": [
            { "podCertificate": {
                "signerName": "outrigger.dev/identity", "keyType": "ECDSAP256",
                "maxExpirationSeconds": 86_400, "credentialBundlePath": "credentialbundle.pem" } },
            { "serviceAccountToken": {
                "audience": "identity.outrigger.dev", "expirationSeconds": 3600, "path": "token" } },
        ] } })
    );
    let c = sidecar(&doc, true);
    let args = c.args.unwrap();
    assert_eq!(
        args[7..],
        [
            "--identity-credential-bundle",
            "/var/run/outrigger/identity/credentialbundle.pem",
            "--identity-trust-bundle",
            "/etc/outrigger/trust-bundle.pem",
            "--identity-trust-domain",
            "mesh.example",
            "--discovery-endpoint",
            "outrigger-webhook.outrigger-system.svc:9444",
            "--discovery-server-name",
            "outrigger-webhook.outrigger-system.svc",
            "--discovery-token",
            "/var/run/outrigger/identity/token",
        ]
    );
    assert!(
        c.volume_mounts
            .unwrap()
            .iter()
            .any(|m| m.name == "outrigger-identity"
                && m.mount_path == "/var/run/outrigger/identity"
                && m.read_only == Some(true))
    );
    // Without it (the default, and the standalone webhook), nothing of the kind.
    let (plain, _) = injected(&v, &webhook(false), &SidecarSettings::default());
    assert_eq!(plain["spec"]["volumes"].as_array().unwrap().len(), 1);
    // A pod that already has a volume of that name is left alone, saying why.
    let mut taken = v.clone();
    taken["spec"]["volumes"] = json!([{ "name": "outrigger-identity", "emptyDir": {} }]);
    assert_eq!(
        inject(&pod(taken), &webhook(false), &settings),
        Injection::Unchanged(Skip::VolumeConflict("outrigger-identity".into()))
    );
}

#[test]
fn sidecars_get_a_token_for_the_identity_endpoint_where_there_are_no_pod_certificates() {
    let settings = SidecarSettings {
        identity: Some(PodIdentity {
            trust_domain: "cluster.local".into(),
            endpoint: "outrigger-webhook.outrigger-system.svc:9444".into(),
            server_name: "outrigger-webhook.outrigger-system.svc".into(),
            issuance: Issuance::Csr,
        }),
        ..SidecarSettings::default()
    };
    let v = plain_pod(json!({ "outrigger.dev/inject": "true" }));
    let (doc, warnings) = injected(&v, &webhook(false), &settings);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        doc["spec"]["volumes"][1],
        json!({ "name": "outrigger-identity", "projected": { "sources": [{ "serviceAccountToken": {
            "audience": "identity.outrigger.dev", "expirationSeconds": 3600, "path": "token" } }] } })
    );
    let c = sidecar(&doc, true);
    assert_eq!(
        c.args.unwrap()[7..],
        [
            "--identity-csr-endpoint",
            "outrigger-webhook.outrigger-system.svc:9444",
            "--identity-csr-server-name",
            "outrigger-webhook.outrigger-system.svc",
            "--identity-csr-token",
            "/var/run/outrigger/identity/token",
            "--identity-trust-bundle",
            "/etc/outrigger/trust-bundle.pem",
            "--identity-trust-domain",
            "cluster.local",
            "--discovery-endpoint",
            "outrigger-webhook.outrigger-system.svc:9444",
            "--discovery-server-name",
            "outrigger-webhook.outrigger-system.svc",
            "--discovery-token",
            "/var/run/outrigger/identity/token",
        ]
    );
    assert!(
        c.volume_mounts.unwrap().iter().any(
            |m| m.name == "outrigger-identity" && m.mount_path == "/var/run/outrigger/identity"
        )
    );
}

#[test]
fn the_inbound_port_follows_the_operator_setting() {
    let settings = SidecarSettings {
        inbound_port: 35906,
        ..SidecarSettings::default()
    };
    let v = plain_pod(json!({ "outrigger.dev/inject": "true", "outrigger.dev/app-port": "8080" }));
    let (doc, _) = injected(&v, &webhook(false), &settings);
    let c = sidecar(&doc, true);
    assert_eq!(
        c.args.unwrap()[7..],
        [
            "--inbound-app-port",
            "8080",
            "--inbound-app-protocol",
            "auto",
            "--inbound-address",
            "0.0.0.0:35906"
        ]
    );
    assert!(
        c.ports
            .unwrap()
            .iter()
            .any(|p| p.name.as_deref() == Some("inbound") && p.container_port == 35906)
    );
}

#[test]
fn pods_with_an_inbound_listener_are_labelled_with_their_app() {
    let app_label = |annotations: Value, labels: Value| {
        let mut v = plain_pod(annotations);
        v["metadata"]["labels"] = labels;
        let (doc, warnings) = injected(&v, &webhook(false), &SidecarSettings::default());
        (
            doc["metadata"]["labels"]["outrigger.dev/app"]
                .as_str()
                .map(str::to_owned),
            warnings,
        )
    };
    let port = |extra: Value| {
        let mut a = json!({ "outrigger.dev/inject": "true", "outrigger.dev/app-port": "8080" });
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    // The annotation wins over the labels, which are read in order.
    assert_eq!(
        app_label(
            port(json!({ "outrigger.dev/app": "users" })),
            json!({ "app": "web" })
        )
        .0
        .as_deref(),
        Some("users")
    );
    assert_eq!(
        app_label(
            port(json!({})),
            json!({ "app.kubernetes.io/name": "shop", "app": "web" })
        )
        .0
        .as_deref(),
        Some("shop")
    );
    assert_eq!(
        app_label(port(json!({})), json!({ "app": "web" }))
            .0
            .as_deref(),
        Some("web")
    );
    // None, or one that cannot name a Service: a warning, no label.
    let (label, warnings) = app_label(port(json!({})), json!({ "tier": "x" }));
    assert_eq!(label, None);
    assert!(
        warnings[0].contains("other sidecars cannot discover this pod"),
        "{warnings:?}"
    );
    let (label, warnings) = app_label(port(json!({ "outrigger.dev/app": "Web_App" })), json!({}));
    assert_eq!(label, None);
    assert!(
        warnings[0].contains("cannot name the Service Web_App-outrigger"),
        "{warnings:?}"
    );
    // Without an inbound listener there is nothing to discover.
    let (label, warnings) = app_label(
        json!({ "outrigger.dev/inject": "true" }),
        json!({ "app": "web" }),
    );
    assert_eq!((label, warnings.len()), (None, 0));
}

/// The `(name, value)` pairs of a container's plain environment variables.
fn env_of(c: &Value) -> Vec<(String, String)> {
    c["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_owned(),
                        e["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The container named `name` in `list` (`containers` or `initContainers`).
fn container<'a>(doc: &'a Value, list: &str, name: &str) -> &'a Value {
    doc["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

/// The mounts of a container at `path`, as `(volume, readOnly)`.
fn mounts_at(c: &Value, path: &str) -> Vec<(String, bool)> {
    c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"] == path)
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["readOnly"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

const SOCKET_URL: &str = "unix:///var/run/outrigger/api/grpc.sock";

#[test]
fn the_socket_variable_names_the_socket_the_sidecar_serves() {
    assert_eq!(API_SOCKET_ENV, [("DAPR_GRPC_ENDPOINT", SOCKET_URL)]);
    assert_eq!(SOCKET_URL, format!("unix://{API_SOCKET_PATH}"));
    assert_eq!(
        API_SOCKET_PATH.rsplit_once('/').map(|(dir, _)| dir),
        Some(API_SOCKET_MOUNT_PATH)
    );
}

#[test]
fn the_api_socket_is_shared_with_every_app_container() {
    let v = json!({
        "metadata": { "name": "a", "annotations": {
            "outrigger.dev/inject": "true", "outrigger.dev/api-socket": "true" } },
        "spec": {
            "initContainers": [{ "name": "migrate", "image": "busybox" }],
            "containers": [
                { "name": "app", "image": "app" },
                { "name": "own", "image": "app",
                  "env": [{ "name": "DAPR_GRPC_ENDPOINT", "value": "http://127.0.0.1:34904" }],
                  "volumeMounts": [{ "name": "data", "mountPath": "/data" }] },
            ],
            "volumes": [{ "name": "data", "emptyDir": {} }],
        },
    });
    for native in [true, false] {
        let settings = SidecarSettings {
            native_sidecar: native,
            ..SidecarSettings::default()
        };
        let (doc, warnings) = injected(&v, &webhook(false), &settings);
        assert!(warnings.is_empty(), "native {native}: {warnings:?}");

        // One in-memory volume, small: a socket takes no space.
        let socket_volumes: Vec<_> = doc["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"] == "outrigger-api-socket")
            .collect();
        assert_eq!(
            socket_volumes,
            [&json!({ "name": "outrigger-api-socket",
                      "emptyDir": { "medium": "Memory", "sizeLimit": "1Mi" } })],
            "native {native}"
        );

        // The sidecar listens there, on a mount it can write.
        let c = sidecar(&doc, native);
        assert_eq!(
            c.args.as_ref().unwrap().last().map(String::as_str),
            Some("--grpc-socket=/var/run/outrigger/api/grpc.sock"),
            "native {native}"
        );
        let side = serde_json::to_value(&c).unwrap();
        assert_eq!(
            mounts_at(&side, "/var/run/outrigger/api"),
            [("outrigger-api-socket".to_owned(), false)],
            "native {native}"
        );
        assert!(
            env_of(&side).iter().all(|(n, _)| n != "DAPR_GRPC_ENDPOINT"),
            "native {native}: not on the sidecar"
        );

        // Every app container, init containers too, mounts it read-only and is told where it is;
        // a container's own value wins; the TCP ports stay.
        for (list, name) in [
            ("containers", "app"),
            ("containers", "own"),
            ("initContainers", "migrate"),
        ] {
            let c = container(&doc, list, name);
            assert_eq!(
                mounts_at(c, "/var/run/outrigger/api"),
                [("outrigger-api-socket".to_owned(), true)],
                "native {native}: {name}"
            );
        }
        let pairs = |l: &[(&str, &str)]| -> Vec<(String, String)> {
            l.iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect()
        };
        assert_eq!(
            env_of(container(&doc, "containers", "app")),
            pairs(&[
                ("DAPR_HTTP_PORT", "3500"),
                ("DAPR_GRPC_PORT", "34904"),
                ("runtime_GRPC_PORT", "34904"),
                ("DAPR_GRPC_ENDPOINT", SOCKET_URL),
            ]),
            "native {native}"
        );
        assert_eq!(
            env_of(container(&doc, "containers", "own")),
            pairs(&[
                ("DAPR_GRPC_ENDPOINT", "http://127.0.0.1:34904"),
                ("DAPR_HTTP_PORT", "3500"),
                ("DAPR_GRPC_PORT", "34904"),
                ("runtime_GRPC_PORT", "34904"),
            ]),
            "native {native}: the container's own value wins"
        );
        assert_eq!(
            mounts_at(container(&doc, "containers", "own"), "/data"),
            [("data".to_owned(), false)],
            "native {native}: its own mounts kept"
        );
        assert_eq!(
            env_of(container(&doc, "initContainers", "migrate")),
            pairs(&[("DAPR_GRPC_ENDPOINT", SOCKET_URL)]),
            "native {native}"
        );

        // Injected once: the next pass (the API server's reinvocation) adds nothing.
        let after = pod(doc.clone());
        assert_eq!(
            inject(&after, &webhook(false), &settings),
            Injection::Unchanged(Skip::AlreadyInjected),
            "native {native}"
        );
    }
}

#[test]
fn the_api_socket_is_opt_in_and_a_bad_value_warns() {
    for (value, warning) in [
        (None, None),
        (Some("false"), None),
        (
            Some("yes"),
            Some(
                "annotation outrigger.dev/api-socket: \"yes\" is neither \"true\" nor \"false\"; no API socket",
            ),
        ),
    ] {
        let mut annotations = json!({ "outrigger.dev/inject": "true" });
        if let Some(value) = value {
            annotations["outrigger.dev/api-socket"] = json!(value);
        }
        let (doc, warnings) = injected(
            &plain_pod(annotations),
            &webhook(false),
            &SidecarSettings::default(),
        );
        assert_eq!(
            warnings,
            warning.map(str::to_owned).into_iter().collect::<Vec<_>>(),
            "{value:?}"
        );
        assert_eq!(doc["spec"]["volumes"].as_array().unwrap().len(), 1);
        let c = sidecar(&doc, true);
        assert!(
            c.args
                .unwrap()
                .iter()
                .all(|a| !a.starts_with("--grpc-socket")),
            "{value:?}"
        );
        let app = container(&doc, "containers", "app");
        assert!(app.get("volumeMounts").is_none(), "{value:?}");
        assert!(
            env_of(app).iter().all(|(n, _)| n != "DAPR_GRPC_ENDPOINT"),
            "{value:?}"
        );
    }
}

#[test]
fn the_api_socket_leaves_a_taken_path_or_volume_name_alone() {
    // A container with something of its own at the socket's path keeps it, and is told.
    let mut v =
        plain_pod(json!({ "outrigger.dev/inject": "true", "outrigger.dev/api-socket": "true" }));
    v["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "mine", "mountPath": "/var/run/outrigger/api/" }]);
    v["spec"]["volumes"] = json!([{ "name": "mine", "emptyDir": {} }]);
    let (doc, warnings) = injected(&v, &webhook(false), &SidecarSettings::default());
    assert_eq!(
        warnings,
        [
            "container app already mounts /var/run/outrigger/api: it does not see the sidecar's API socket"
        ]
    );
    let app = container(&doc, "containers", "app");
    assert_eq!(
        app["volumeMounts"],
        json!([{ "name": "mine", "mountPath": "/var/run/outrigger/api/" }])
    );
    assert!(env_of(app).iter().all(|(n, _)| n != "DAPR_GRPC_ENDPOINT"));
    // The sidecar still serves the socket (for the containers that do see it).
    assert!(
        sidecar(&doc, true)
            .args
            .unwrap()
            .contains(&"--grpc-socket=/var/run/outrigger/api/grpc.sock".to_owned())
    );

    // A volume of the socket's name: the pod is skipped, naming it, only when it asks for the
    // socket.
    let mut taken =
        plain_pod(json!({ "outrigger.dev/inject": "true", "outrigger.dev/api-socket": "true" }));
    taken["spec"]["volumes"] = json!([{ "name": "outrigger-api-socket", "emptyDir": {} }]);
    let skip = Skip::VolumeConflict("outrigger-api-socket".into());
    assert_eq!(
        inject(
            &pod(taken.clone()),
            &webhook(false),
            &SidecarSettings::default()
        ),
        Injection::Unchanged(skip.clone())
    );
    assert_eq!(
        skip.to_string(),
        "the pod already has a volume named outrigger-api-socket; sidecar not injected"
    );
    taken["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("outrigger.dev/api-socket");
    assert!(matches!(
        inject(&pod(taken), &webhook(false), &SidecarSettings::default()),
        Injection::Patched { .. }
    ));
}

#[test]
fn sidecar_threads_follow_the_setting_else_the_cpu_limit_else_two() {
    // (case, --sidecar-threads, --sidecar-cpu-limit, pod annotations, --threads, warns)
    let cases = [
        ("no limit", 0, None, json!({}), "--threads=2", false),
        (
            "1500m rounds up",
            0,
            None,
            json!({ "outrigger.dev/cpu-limit": "1500m" }),
            "--threads=2",
            false,
        ),
        (
            "one core",
            0,
            None,
            json!({ "outrigger.dev/cpu-limit": "1" }),
            "--threads=1",
            false,
        ),
        (
            "1000m is one core",
            0,
            None,
            json!({ "outrigger.dev/cpu-limit": "1000m" }),
            "--threads=1",
            false,
        ),
        (
            "under a core: one",
            0,
            None,
            json!({ "outrigger.dev/cpu-limit": "250m" }),
            "--threads=1",
            false,
        ),
        (
            "the flag's limit",
            0,
            Some("3"),
            json!({}),
            "--threads=3",
            false,
        ),
        (
            "the annotation's limit over the flag's",
            0,
            Some("3"),
            json!({ "outrigger.dev/cpu-limit": "2" }),
            "--threads=2",
            false,
        ),
        (
            "a bad annotation: the flag's limit",
            0,
            Some("500m"),
            json!({ "outrigger.dev/cpu-limit": "lots" }),
            "--threads=1",
            true,
        ),
        (
            "a huge limit is capped",
            0,
            None,
            json!({ "outrigger.dev/cpu-limit": "1000" }),
            "--threads=64",
            false,
        ),
        (
            "the setting wins",
            6,
            None,
            json!({ "outrigger.dev/cpu-limit": "1" }),
            "--threads=6",
            false,
        ),
    ];
    for (case, threads, cpu_limit, extra, expected, warns) in cases {
        let settings = SidecarSettings {
            threads,
            cpu_limit: cpu_limit.map(str::to_owned),
            ..SidecarSettings::default()
        };
        let mut annotations = extra.as_object().unwrap().clone();
        annotations.insert("outrigger.dev/inject".into(), json!("true"));
        let (doc, warnings) = injected(
            &plain_pod(Value::Object(annotations)),
            &webhook(false),
            &settings,
        );
        assert_eq!(warnings.is_empty(), !warns, "{case}: {warnings:?}");
        let args = sidecar(&doc, true).args.unwrap();
        assert_eq!(args[6], expected, "{case}");
        assert_eq!(
            args.iter().filter(|a| a.starts_with("--threads")).count(),
            1,
            "{case}"
        );
    }
    assert_eq!(sidecar_threads(0, Some(0.0)), 1, "at least one");
    assert_eq!(sidecar_threads(0, Some(2.001)), 3);
    assert_eq!(sidecar_threads(5, None), 5);
}
