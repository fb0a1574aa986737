//! Helpers shared by the cross-component tests: where the workspace is, and where the
//! third-party tools installed by `scripts/install-tools.sh` are.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A third-party tool: `$OUTRIGGER_TOOLS/bin/NAME`, `.tools/bin/NAME`, or `NAME` on `PATH`.
pub fn tool(name: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("OUTRIGGER_TOOLS") {
        candidates.push(PathBuf::from(dir).join("bin").join(name));
    }
    candidates.push(workspace_root().join(".tools/bin").join(name));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Like [`tool`], but a missing tool fails the test (it is installed by the README's test
/// command), unless `OUTRIGGER_SKIP_EXTERNAL=1` says to skip tests that need one: then `None`.
pub fn require_tool(name: &str) -> Option<PathBuf> {
    if let Some(p) = tool(name) {
        return Some(p);
    }
    if std::env::var("OUTRIGGER_SKIP_EXTERNAL").as_deref() == Ok("1") {
        eprintln!("skipping: {name} is not installed and OUTRIGGER_SKIP_EXTERNAL=1");
        return None;
    }
    panic!(
        "{name} is not installed: run scripts/test.sh (it installs the test tools into .tools/)"
    );
}
