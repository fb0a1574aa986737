//! Helpers shared by the integration tests: the real `kubernetes-validate` tool and the
//! operator binary.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The `kubernetes-validate` binary: on PATH or in `$OUTRIGGER_TOOLS/bin`. `None` only when
/// `OUTRIGGER_SKIP_EXTERNAL=1`; otherwise a missing tool fails the test.
pub fn kubernetes_validate() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubernetes-validate"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(tools) = std::env::var_os("OUTRIGGER_TOOLS") {
        candidates.push(Path::new(&tools).join("bin/kubernetes-validate"));
    }
    if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(found);
    }
    if std::env::var("OUTRIGGER_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping kubernetes-validate checks: OUTRIGGER_SKIP_EXTERNAL=1");
        return None;
    }
    panic!(
        "kubernetes-validate not found on PATH or in $OUTRIGGER_TOOLS/bin: run scripts/test.sh \
         (it installs the test tools into .tools/), or set OUTRIGGER_SKIP_EXTERNAL=1 to skip"
    );
}

/// Validates a manifest file strictly against the Kubernetes 1.35 schemas; panics with the tool's
/// output when it does not validate.
pub fn assert_kubernetes_valid(path: &Path) {
    let Some(tool) = kubernetes_validate() else {
        return;
    };
    let out = Command::new(tool)
        .arg("--strict")
        .arg(path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate rejected {}:\n{text}",
        path.display()
    );
    assert!(text.contains("passed"), "{text}");
}

/// The operator binary built for these tests.
pub fn operator_bin() -> &'static str {
    env!("CARGO_BIN_EXE_outrigger-operator")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}
