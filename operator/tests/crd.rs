//! The committed CRD under `crds/` is exactly what the Rust types generate (regenerate with
//! `OUTRIGGER_REGEN_CRDS=1 cargo test -p outrigger-operator --test crd`), and it is a valid
//! CustomResourceDefinition for Kubernetes 1.35.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use outrigger_operator::RuntimeConfig;

const CRD_FILE: &str = "crds/outrigger.dev_runtimeconfigs.yaml";

#[test]
fn committed_crd_matches_the_rust_types() {
    let generated = RuntimeConfig::crd_yaml().unwrap();
    let path = support::workspace_root().join(CRD_FILE);
    if std::env::var("OUTRIGGER_REGEN_CRDS").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read {CRD_FILE} ({e}); regenerate with OUTRIGGER_REGEN_CRDS=1")
    });
    assert!(
        committed == generated,
        "{CRD_FILE} is out of date with the Rust types; regenerate it with \
         `OUTRIGGER_REGEN_CRDS=1 cargo test -p outrigger-operator --test crd` and commit the result"
    );
}

#[test]
fn crdgen_prints_the_committed_crd() {
    let out = Command::new(support::operator_bin())
        .arg("crdgen")
        .output()
        .unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(support::workspace_root().join(CRD_FILE)).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}

#[test]
fn crd_is_a_valid_kubernetes_object() {
    support::assert_kubernetes_valid(&support::workspace_root().join(CRD_FILE));
}

/// Formats the API server knows (`k8s.io/apiextensions-apiserver/pkg/apiserver/validation/formats.go`):
/// anything else makes it warn `unrecognized format` on every apply and is ignored.
fn format_is_recognised(type_: Option<&str>, format: &str) -> bool {
    const STRING_FORMATS: &[&str] = &[
        "bsonobjectid",
        "uri",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "cidr",
        "mac",
        "uuid",
        "uuid3",
        "uuid4",
        "uuid5",
        "isbn",
        "isbn10",
        "isbn13",
        "creditcard",
        "ssn",
        "hexcolor",
        "rgbcolor",
        "byte",
        "password",
        "date",
        "duration",
        "datetime",
        "quantity",
    ];
    match type_ {
        None | Some("string") => STRING_FORMATS.contains(&format.replace('-', "").as_str()),
        Some("integer") => matches!(format, "int32" | "int64"),
        Some("number") => matches!(format, "float" | "double"),
        Some(_) => false,
    }
}

/// Every `format` in a schema (not in its defaults or enums), with the schema's path.
fn formats(
    schema: &serde_json::Value,
    path: &str,
    out: &mut Vec<(String, Option<String>, String)>,
) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(format) = obj.get("format").and_then(|f| f.as_str()) {
        let type_ = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned);
        out.push((path.to_owned(), type_, format.to_owned()));
    }
    if let Some(props) = obj.get("properties").and_then(|p| p.as_object()) {
        for (k, v) in props {
            formats(v, &format!("{path}.{k}"), out);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = obj.get(key) {
            formats(v, &format!("{path}.{key}"), out);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, v) in obj
            .get(key)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            formats(v, &format!("{path}.{key}[{i}]"), out);
        }
    }
}

fn committed_schema() -> serde_json::Value {
    let text = std::fs::read_to_string(support::workspace_root().join(CRD_FILE)).unwrap();
    let crd: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crd_uses_only_formats_kubernetes_recognises() {
    let mut found = Vec::new();
    formats(&committed_schema(), "", &mut found);
    assert!(
        found.iter().any(|(_, _, f)| f == "int64"),
        "the walk sees the integer fields: {found:?}"
    );
    let unrecognised: Vec<_> = found
        .iter()
        .filter(|(_, type_, format)| !format_is_recognised(type_.as_deref(), format))
        .collect();
    assert!(
        unrecognised.is_empty(),
        "formats the API server does not recognise: {unrecognised:?}"
    );
    // And the check itself tells the difference.
    assert!(!format_is_recognised(Some("integer"), "uint32"));
    assert!(!format_is_recognised(Some("object"), "int64"));
    assert!(format_is_recognised(Some("string"), "date-time"));
}

#[test]
fn auto_is_offered_to_listeners_only_and_http2_to_listeners_and_clusters() {
    let schema = committed_schema();
    let spec = &schema["properties"]["spec"]["properties"];
    let protocols = |field: &serde_json::Value| -> Vec<String> {
        field["items"]["properties"]["protocol"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        protocols(&spec["listeners"]),
        ["http", "bolt", "dubbo", "http2", "auto"]
    );
    assert_eq!(
        protocols(&spec["clusters"]),
        ["http", "bolt", "dubbo", "http2"]
    );
    assert_eq!(
        protocols(&spec["rpc"]["properties"]["channels"]),
        ["http", "bolt", "dubbo"]
    );
}
