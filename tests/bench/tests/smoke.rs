//! CI's run of the harness: the real `outrigger-bench` binary in `--smoke` mode, against the
//! real `outrigger` binary of the same build (built here first when `cargo test` did not build
//! it, e.g. `cargo test -p outrigger-bench`). Asserts only that every scenario that can run on
//! this machine ran and completed with zero errors, never timing; and, in a second, smaller
//! run, that the worker-thread sweep runs the proxies once per count.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Mutex,
};

use serde_json::Value;

/// One bench run at a time: the two tests would otherwise load the same cores together.
static ONE_RUN: Mutex<()> = Mutex::new(());

/// Runs the bench in smoke mode with `args` against the sidecar of this build; its output and
/// JSON report.
fn smoke_run(args: &[&str]) -> (Output, Value) {
    let _one = ONE_RUN.lock().unwrap_or_else(|e| e.into_inner());
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_outrigger-bench"));
    let sidecar = sidecar_binary(&bench);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("no temp dir: {e}"));
    let json = dir.path().join("smoke.json");
    let out = Command::new(&bench)
        .arg("--smoke")
        .arg("--json")
        .arg(&json)
        .arg("--sidecar-bin")
        .arg(&sidecar)
        .args(args)
        .env_remove("OUTRIGGER_BIN")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bench.display()));
    assert!(
        out.status.success(),
        "smoke run failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no JSON report at {}: {e}", json.display()));
    let report =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON report: {e}\n{text}"));
    (out, report)
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "PATH=\"$PATH:/usr/sbin:/usr/local/sbin\" command -v {tool}"
        ))
        .output()
        .is_ok_and(|o| o.status.success())
}

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
    let (out, report) = smoke_run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
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
        "invoke-unix",
        "proxy-http",
        "invoke-bolt",
        "mesh-http",
        "mesh-mtls",
        "mesh-authz",
    ] {
        assert!(ran(name), "{name} did not run all five phases:\n{stderr}");
    }
    for (name, tool) in [("nginx-http", "nginx"), ("haproxy-http", "haproxy")] {
        assert_eq!(
            ran(name),
            installed(tool),
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
    assert!(stdout.contains("### Issue 15 targets"), "{stdout}");
}

#[test]
fn smoke_mode_sweeps_worker_threads() {
    // Kept small: two phases per run, the proxy core and nginx only.
    let (out, report) = smoke_run(&[
        "--scenarios",
        "proxy-http,nginx-http",
        "--threads",
        "1,2",
        "--rates",
        "200",
        "--concurrency",
        "64",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(report["settings"]["threads"], serde_json::json!([1, 2]));
    let scenarios = report["scenarios"].as_array().unwrap();
    let ran = |name: &str, threads: u64| {
        scenarios.iter().any(|s| {
            s["name"] == name
                && s["threads"] == threads
                && s["skipped"].is_null()
                && s["phases"].as_array().unwrap().len() == 2
        })
    };
    for threads in [1, 2] {
        assert!(ran("proxy-http", threads), "{threads}:\n{stderr}");
        assert_eq!(
            ran("nginx-http", threads),
            installed("nginx"),
            "{threads}:\n{stderr}"
        );
    }
    for s in scenarios.iter().filter(|s| s["skipped"].is_null()) {
        for p in s["phases"].as_array().unwrap() {
            assert!(p["load"]["ok"].as_u64().unwrap() > 0, "{}: {p}", s["name"]);
            assert_eq!(p["load"]["errors"], 0, "{}: {p}", s["name"]);
            assert_eq!(p["load"]["dropped"], 0, "{}: {p}", s["name"]);
        }
    }
    assert!(stdout.contains("### Worker-thread sweep"), "{stdout}");
    // Both counts ran, so the 2-vs-1 target has a measured value (never judged on timing here).
    let scaling = report["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["issue"] == 15
                && t["scenario"] == "proxy-http"
                && t["target"]
                    .as_str()
                    .unwrap()
                    .starts_with("throughput with 2 worker threads")
        })
        .unwrap();
    assert!(scaling["measured"].as_f64().unwrap() > 0.0, "{scaling}");
}
