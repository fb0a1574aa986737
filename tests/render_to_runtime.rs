//! The product's promise end to end: the operator renders a `RuntimeConfig` into the file the
//! sidecar reads, the real sidecar serves it, and `InvokeService` reaches a real upstream.
//! Invalid input is rejected by both with the same list of problems.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use outrigger_proto::spec::proto::runtime::v1::runtime_client::RuntimeClient;
use outrigger_runtime::{DEMO_ID, Metrics, Options, SampleUpstream, Sidecar, demo_request};

fn runtime_config(upstream: &str, cluster_ref: &str) -> String {
    format!(
        r#"apiVersion: outrigger.dev/v1alpha1
kind: RuntimeConfig
metadata:
  name: demo
  namespace: shop
spec:
  grpc: {{address: "127.0.0.1:0"}}
  admin: {{address: "127.0.0.1:0"}}
  httpApi: {{address: "127.0.0.1:0"}}
  rpc:
    beforeInvoke: [{{name: dubbo_json_rpc}}]
    channels: [{{protocol: http, size: 4, listener: egress}}]
  listeners: [{{name: egress, protocol: http, routeTable: egress}}]
  routeTables:
    - name: egress
      routes:
        - match: {{headers: [{{name: id, exact: "{DEMO_ID}"}}]}}
          cluster: {cluster_ref}
  clusters:
    - name: user-provider
      hosts: [{{address: "{upstream}"}}]
"#
    )
}

#[tokio::test]
async fn rendered_runtime_config_drives_the_sidecar_to_a_real_upstream() {
    let upstream = SampleUpstream::start("127.0.0.1:0")
        .await
        .expect("upstream");
    let rc = runtime_config(&upstream.address().to_string(), "user-provider");

    let file = outrigger_operator::render(&rc, true).expect("renders");
    let config_map = outrigger_operator::render(&rc, false).expect("renders");
    let cm: serde_json::Value = serde_saphyr::from_str(&config_map).expect("yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "outrigger-demo");
    assert_eq!(
        cm["data"]["runtime.yaml"],
        file.as_str(),
        "the ConfigMap carries the file verbatim"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("runtime.yaml");
    std::fs::write(&path, &file).expect("write");
    let spec = outrigger_config::load_yaml(&std::fs::read_to_string(&path).expect("read"))
        .expect("the sidecar accepts what the operator rendered");
    let options = Options {
        config_path: Some(path),
        ..Options::default()
    };
    let sidecar = Sidecar::start(spec, options, Metrics::new())
        .await
        .expect("sidecar");
    let mut client = RuntimeClient::connect(format!("http://{}", sidecar.grpc_address()))
        .await
        .expect("connect");
    let answer = client
        .invoke_service(demo_request())
        .await
        .expect("InvokeService reaches the upstream")
        .into_inner();
    let body: serde_json::Value =
        serde_json::from_slice(&answer.data.expect("data").value).expect("json answer");
    assert_eq!(body["result"]["id"], "A003");
    assert_eq!(answer.content_type, "application/json");
    sidecar.shutdown().await;
}

#[test]
fn operator_and_sidecar_reject_an_invalid_spec_with_the_same_problems() {
    let rc = runtime_config("127.0.0.1:1", "users");
    let operator_errors = outrigger_operator::render(&rc, true).expect_err("invalid");
    let rendered: Vec<String> = operator_errors.iter().map(ToString::to_string).collect();
    let spec_yaml = rc.split_once("spec:\n").expect("spec").1;
    let unindented: String = spec_yaml
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let sidecar_errors = match outrigger_config::load_yaml(&unindented) {
        Err(outrigger_config::LoadError::Invalid(e)) => e.lines(),
        other => panic!("the sidecar must reject it too: {other:?}"),
    };
    assert_eq!(
        sidecar_errors,
        ["routeTables[0].routes[0].cluster: unknown cluster \"users\""]
    );
    for line in &sidecar_errors {
        assert!(
            rendered.iter().any(|r| r.contains(line.as_str())),
            "operator output {rendered:?} lacks {line}"
        );
    }
}
