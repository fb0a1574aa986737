//! The offline tools' file handling: `render` (RuntimeConfig YAML → the ConfigMap the controller
//! would write, or just `runtime.yaml`) and `inject` (manifests → the same manifests with the
//! sidecar in every Pod template: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job,
//! CronJob, and `List` items; other documents pass through unchanged). Pure: text in, text out.
//! Not for reading files or printing (`app`).

use outrigger_config::ValidationErrors;
use serde_json::{Value, json};

use crate::{
    crd::RuntimeConfig,
    desired::desired,
    inject::{Injection, Request, Selection, SidecarSettings, inject},
    names::{CONFIG_FILE_KEY, KIND},
};

/// Why input could not be rendered or injected.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not YAML.
    #[error("cannot parse the YAML: {0}")]
    Yaml(String),
    /// A document is not a RuntimeConfig.
    #[error("document {index} is a {kind}, not a {KIND}")]
    NotRuntimeConfig {
        /// Position in the file, from 1.
        index: usize,
        /// Its kind.
        kind: String,
    },
    /// A RuntimeConfig is not of the sidecar's config shape.
    #[error("{KIND} {name}: {message}")]
    Shape {
        /// Its name.
        name: String,
        /// What serde said.
        message: String,
    },
    /// A RuntimeConfig the sidecar would reject.
    #[error("{KIND} {name} is invalid: {errors}")]
    Invalid {
        /// Its name.
        name: String,
        /// Every problem.
        errors: ValidationErrors,
    },
    /// `--file-only` with other than one RuntimeConfig.
    #[error("--file-only needs exactly one {KIND}, found {0}")]
    FileOnlyCount(usize),
    /// A patch did not apply (a malformed template).
    #[error("{what}: cannot apply the sidecar patch: {message}")]
    Patch {
        /// Which document.
        what: String,
        /// Why.
        message: String,
    },
    /// Output could not be written as YAML.
    #[error("cannot write YAML: {0}")]
    Output(String),
}

/// Renders every RuntimeConfig in `input`: the ConfigMaps as a YAML stream, or with `file_only`
/// the one `runtime.yaml`. Every problem of every document is reported before failing.
pub fn render(input: &str, file_only: bool) -> Result<String, Vec<ManifestError>> {
    let docs = documents(input).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut rendered = Vec::new();
    for (i, doc) in docs.into_iter().enumerate() {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("<no kind>");
        if kind != KIND {
            errors.push(ManifestError::NotRuntimeConfig {
                index: i + 1,
                kind: kind.to_owned(),
            });
            continue;
        }
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_owned();
        let rc: RuntimeConfig = match serde_json::from_value(doc) {
            Ok(rc) => rc,
            Err(e) => {
                errors.push(ManifestError::Shape {
                    name,
                    message: e.to_string(),
                });
                continue;
            }
        };
        match desired(&rc, None) {
            Ok(d) => rendered.push(d.config_map),
            Err(errors_) => errors.push(ManifestError::Invalid {
                name,
                errors: errors_,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if file_only {
        return match rendered.as_slice() {
            [cm] => Ok(cm
                .data
                .as_ref()
                .and_then(|d| d.get(CONFIG_FILE_KEY))
                .cloned()
                .unwrap_or_default()),
            other => Err(vec![ManifestError::FileOnlyCount(other.len())]),
        };
    }
    let values: Result<Vec<Value>, _> = rendered.iter().map(serde_json::to_value).collect();
    let values = values.map_err(|e| vec![ManifestError::Output(e.to_string())])?;
    yaml_stream(&values).map_err(|e| vec![e])
}

/// What `inject` did to one workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectReport {
    /// `Kind namespace/name`.
    pub workload: String,
    /// `injected`, or why not.
    pub outcome: String,
    /// Annotation problems (defaults were used).
    pub warnings: Vec<String>,
}

/// Injects the sidecar into every Pod template in `input` and returns the YAML stream and a
/// report per workload.
pub fn inject_manifests(
    input: &str,
    settings: &SidecarSettings,
) -> Result<(String, Vec<InjectReport>), ManifestError> {
    let mut docs = documents(input)?;
    let mut reports = Vec::new();
    for doc in &mut docs {
        inject_document(doc, settings, &mut reports)?;
    }
    Ok((yaml_stream(&docs)?, reports))
}

fn inject_document(
    doc: &mut Value,
    settings: &SidecarSettings,
    reports: &mut Vec<InjectReport>,
) -> Result<(), ManifestError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind == "List" {
        if let Some(items) = doc.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_document(item, settings, reports)?;
            }
        }
        return Ok(());
    }
    let template_path = match kind.as_str() {
        "Pod" => "",
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => "/spec/template",
        "CronJob" => "/spec/jobTemplate/spec/template",
        _ => return Ok(()),
    };
    let namespace = doc
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let workload = format!(
        "{kind} {}{}",
        namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default(),
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
    );
    let Some(template) = doc.pointer_mut(template_path).filter(|t| t.is_object()) else {
        reports.push(InjectReport {
            workload,
            outcome: "no pod template".into(),
            warnings: Vec::new(),
        });
        return Ok(());
    };
    // The template as a Pod: its metadata and spec are exactly a Pod's.
    let mut pod_value = json!({
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    if pod_value["spec"].is_null() {
        pod_value.as_object_mut().map(|o| o.remove("spec"));
    }
    let pod = serde_json::from_value(pod_value.clone()).map_err(|e| ManifestError::Patch {
        what: workload.clone(),
        message: e.to_string(),
    })?;
    let request = Request {
        namespace: namespace.as_deref(),
        selection: Selection::AllUnlessOptedOut,
        config_exists: None,
        config_hash: None,
    };
    match inject(&pod, &request, settings) {
        Injection::Patched { patch, warnings } => {
            json_patch::patch(&mut pod_value, &patch).map_err(|e| ManifestError::Patch {
                what: workload.clone(),
                message: e.to_string(),
            })?;
            if let Some(obj) = template.as_object_mut() {
                obj.insert("metadata".into(), pod_value["metadata"].take());
                obj.insert("spec".into(), pod_value["spec"].take());
            }
            reports.push(InjectReport {
                workload,
                outcome: "injected".into(),
                warnings,
            });
        }
        Injection::Unchanged(skip) => {
            reports.push(InjectReport {
                workload,
                outcome: format!("not injected: {skip}"),
                warnings: Vec::new(),
            });
        }
    }
    Ok(())
}

fn documents(input: &str) -> Result<Vec<Value>, ManifestError> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn yaml_stream(docs: &[Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(
            &serde_saphyr::to_string(doc).map_err(|e| ManifestError::Output(e.to_string()))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const RC: &str = r#"
apiVersion: outrigger.dev/v1alpha1
kind: RuntimeConfig
metadata: {name: web, namespace: apps}
spec:
  rpc:
    channels: [{listener: egress}]
  listeners: [{name: egress, routeTable: t}]
  routeTables: [{name: t, routes: [{cluster: c}]}]
  clusters: [{name: c, hosts: [{address: "127.0.0.1:8080"}]}]
"#;

    #[test]
    fn render_outputs() {
        let cm = render(RC, false).unwrap();
        let v: Value = serde_saphyr::from_str(&cm).unwrap();
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v["metadata"]["name"], "outrigger-web");
        assert_eq!(v["metadata"]["namespace"], "apps");
        assert!(v["metadata"].get("ownerReferences").is_none());
        let file = render(RC, true).unwrap();
        assert_eq!(v["data"]["runtime.yaml"].as_str().unwrap(), file);
        outrigger_config::load_yaml(&file).unwrap();
    }

    #[test]
    fn render_failures_list_everything() {
        let bad = RC
            .replace("cluster: c}", "cluster: nope}")
            .replace("127.0.0.1:8080", "nowhere");
        let two = format!(
            "{bad}\n---\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{}",
            RC.replace("rpc:", "rpcc:")
        );
        let errors: Vec<String> = render(&two, false)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(
            errors[0].starts_with("RuntimeConfig web is invalid: 2 problem(s)"),
            "{}",
            errors[0]
        );
        assert!(errors[0].contains("routeTables[0].routes[0].cluster: unknown cluster \"nope\""));
        assert!(
            errors[0]
                .contains("clusters[0].hosts[0].address: \"nowhere\" is not a host:port address")
        );
        assert_eq!(errors[1], "document 2 is a ConfigMap, not a RuntimeConfig");
        assert!(errors[2].contains("unknown field `rpcc`"), "{}", errors[2]);
        let both = format!("{RC}\n---\n{}", RC.replace("name: web", "name: other"));
        assert!(matches!(
            render(&both, true).unwrap_err()[0],
            ManifestError::FileOnlyCount(2)
        ));
        assert!(render(&both, false).unwrap().contains("outrigger-other"));
    }

    #[test]
    fn inject_every_kind_of_template() {
        let template = "template: {metadata: {labels: {app: x}}, spec: {containers: [{name: app, image: app}]}}";
        let input = format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: p, namespace: apps}}
spec: {{containers: [{{name: app, image: app}}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
spec: {{selector: {{matchLabels: {{app: x}}}}, {template}}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: s}}
spec: {{serviceName: s, selector: {{matchLabels: {{app: x}}}}, {template}}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: ds}}
spec: {{selector: {{matchLabels: {{app: x}}}}, {template}}}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {{name: rs}}
spec: {{selector: {{matchLabels: {{app: x}}}}, {template}}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: j}}
spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: app, image: app}}]}}}}}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: cj}}
spec: {{schedule: "* * * * *", jobTemplate: {{spec: {{{template}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: out, annotations: {{outrigger.dev/inject: "false"}}}}
spec: {{containers: [{{name: app, image: app}}]}}
"#
        );
        let (out, reports) = inject_manifests(&input, &SidecarSettings::default()).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
        assert_eq!(docs.len(), 9);
        let paths = [
            "",
            "/spec/template",
            "/spec/template",
            "/spec/template",
            "/spec/template",
            "/spec/template",
            "/spec/jobTemplate/spec/template",
        ];
        for (doc, path) in docs.iter().zip(paths) {
            let t = doc.pointer(path).unwrap();
            assert_eq!(
                t["metadata"]["labels"]["outrigger.dev/injected"], "true",
                "{}",
                doc["kind"]
            );
            assert_eq!(
                t["spec"]["initContainers"][0]["name"], "outrigger",
                "{}",
                doc["kind"]
            );
            assert_eq!(t["spec"]["containers"][0]["name"], "app", "{}", doc["kind"]);
        }
        assert_eq!(
            docs[7],
            serde_saphyr::from_multiple::<Value>(&input).unwrap()[7],
            "Service unchanged"
        );
        assert!(docs[8]["spec"].get("initContainers").is_none());
        let outcomes: Vec<_> = reports
            .iter()
            .map(|r| format!("{}: {}", r.workload, r.outcome))
            .collect();
        assert_eq!(outcomes[0], "Pod apps/p: injected");
        assert_eq!(outcomes[6], "CronJob cj: injected");
        assert!(
            outcomes[7].starts_with("Pod out: not injected: opted out"),
            "{outcomes:?}"
        );

        // Idempotent: injecting the output again changes nothing.
        let (again, reports) = inject_manifests(&out, &SidecarSettings::default()).unwrap();
        assert_eq!(again, out);
        assert!(reports.iter().all(|r| r.outcome != "injected"));
    }
}
