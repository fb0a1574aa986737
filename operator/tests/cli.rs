//! The offline CLIs as a user runs them: `render` and `inject` on the example files, their output
//! checked with the sidecar's own loader and with `kubernetes-validate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

fn operator(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(support::operator_bin())
        .args(args)
        .current_dir(support::workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(input) = stdin {
        pipe.write_all(input.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn render_prints_the_config_map_the_controller_writes() {
    let out = operator(
        &["render", "-f", "operator/examples/runtimeconfig.yaml"],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let cm: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "outrigger-default");
    assert_eq!(cm["metadata"]["namespace"], "shop");
    let file = cm["data"]["runtime.yaml"].as_str().unwrap();
    let spec = outrigger_config::load_yaml(file).unwrap();
    assert_eq!(
        cm["metadata"]["annotations"]["outrigger.dev/config-hash"],
        outrigger_config::config_hash(&spec)
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configmap.yaml");
    std::fs::write(&path, &yaml).unwrap();
    support::assert_kubernetes_valid(&path);

    let only = operator(
        &["render", "-f", "-", "--file-only"],
        Some(
            &std::fs::read_to_string(
                support::workspace_root().join("operator/examples/runtimeconfig.yaml"),
            )
            .unwrap(),
        ),
    );
    assert!(only.status.success(), "{}", text(&only.stderr));
    assert_eq!(
        outrigger_config::load_yaml(&text(&only.stdout)).unwrap(),
        spec,
        "--file-only prints runtime.yaml"
    );
}

#[test]
fn render_lists_every_error_and_fails() {
    let example = std::fs::read_to_string(
        support::workspace_root().join("operator/examples/runtimeconfig.yaml"),
    )
    .unwrap();
    let broken = example
        .replace("cluster: user-provider", "cluster: users")
        .replace("perTryTimeoutMs: 300", "perTryTimeoutMs: 0")
        .replace("size: 16", "size: 0");
    let out = operator(&["render", "-f", "-"], Some(&broken));
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "nothing is printed for an invalid config"
    );
    let stderr = text(&out.stderr);
    for expected in [
        "error: RuntimeConfig default is invalid: 3 problem(s) in the config:",
        "rpc.channels[0].size: must be at least 1",
        "routeTables[0].routes[0].cluster: unknown cluster \"users\"",
        "routeTables[0].routes[0].retry.perTryTimeoutMs: must be greater than 0",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
    let missing = operator(&["render", "-f", "does-not-exist.yaml"], None);
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("cannot read does-not-exist.yaml"));
}

#[test]
fn inject_adds_the_sidecar_to_every_pod_template() {
    let out = operator(
        &[
            "inject",
            "-f",
            "operator/examples/app.yaml",
            "--sidecar-image",
            "registry.example/outrigger:test",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(docs.len(), 3);
    let deployment = &docs[0]["spec"]["template"];
    assert_eq!(
        deployment["spec"]["initContainers"][0]["image"],
        "registry.example/outrigger:test"
    );
    assert_eq!(
        deployment["spec"]["initContainers"][0]["resources"]["limits"]["memory"],
        "256Mi"
    );
    assert_eq!(deployment["spec"]["containers"][0]["name"], "checkout");
    let cron = &docs[1]["spec"]["jobTemplate"]["spec"]["template"];
    assert_eq!(cron["spec"]["initContainers"][0]["name"], "outrigger");
    assert_eq!(docs[2]["kind"], "Service");
    assert!(docs[2]["spec"].get("template").is_none());

    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Deployment shop/checkout: injected"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CronJob shop/nightly-report: injected"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    for (i, doc) in docs.iter().enumerate() {
        let path = dir.path().join(format!("doc-{i}.json"));
        std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
        support::assert_kubernetes_valid(&path);
    }

    // Piping the output back in changes nothing.
    let again = operator(
        &[
            "inject",
            "-f",
            "-",
            "--sidecar-image",
            "registry.example/outrigger:test",
        ],
        Some(&yaml),
    );
    assert!(again.status.success());
    assert_eq!(text(&again.stdout), yaml);
}
