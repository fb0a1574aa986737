//! CI's run of the harness: the real `outrigger-bench` binary in `--smoke` mode, against the
//! real `outrigger` binary of the same build (built here first when `cargo test` did not build
//! it, e.g. `cargo test -p outrigger-bench`). Asserts only that every scenario that can run on
//! this machine ran and completed with zero errors, never timing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn sidecar_binary(bench: &Path) -> PathBuf {
    let bin = outrigger_bench::sidecar_next_to(bench);
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        outrigger_bench::build_sidecar(Path::new(&cargo), bench)
            .unwrap_or_else(|e| panic!("the outrigger binary is missing and cannot be built: {e}"));
    }
    assert!(bin.is_file(), "no outrigger binary at {}", bin.display());
    bin
}

#[test]
fn smoke_mode_runs_every_scenario_without_errors() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_outrigger-bench"));
    let sidecar = sidecar_binary(&bench);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("smoke.json");
    let out = Command::new(&bench)
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .arg("--sidecar-bin")
        .arg(&sidecar)
        .env_remove("OUTRIGGER_BIN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "smoke run failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let scenarios = report["scenarios"].as_array().unwrap();
    let ran = |name: &str| {
        scenarios.iter().any(|s| {
            s["name"] == name
                && s["skipped"].is_null()
                && s["phases"].as_array().unwrap().len() == 5
        })
    };
    for name in [
        "direct-http",
        "direct-grpc",
        "invoke-http",
        "proxy-http",
        "invoke-bolt",
    ] {
        assert!(ran(name), "{name} did not run all five phases:\n{stderr}");
    }
    for (name, tool) in [("nginx-http", "nginx"), ("haproxy-http", "haproxy")] {
        let installed = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "PATH=\"$PATH:/usr/sbin:/usr/local/sbin\" command -v {tool}"
            ))
            .output()
            .is_ok_and(|o| o.status.success());
        assert_eq!(
            ran(name),
            installed,
            "{name}: ran iff {tool} is installed:\n{stderr}"
        );
    }
    for s in scenarios.iter().filter(|s| s["skipped"].is_null()) {
        for p in s["phases"].as_array().unwrap() {
            assert!(p["load"]["ok"].as_u64().unwrap() > 0, "{}: {p}", s["name"]);
            assert_eq!(p["load"]["errors"], 0, "{}: {p}", s["name"]);
            assert_eq!(p["load"]["dropped"], 0, "{}: {p}", s["name"]);
        }
    }
    assert!(stdout.contains("### Issue 6 targets"), "{stdout}");
}
