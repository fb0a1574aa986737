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
