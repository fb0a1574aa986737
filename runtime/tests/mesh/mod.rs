//! The two-sidecar mesh on loopback that the mutual TLS and authorization tests share: a test
//! CA, each sidecar's identity files (written as the kubelet writes them), sidecar B with an
//! `inbound` listener in front of an app, and sidecar A whose channel and `egress` listener
//! route to B over mutual TLS.

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use outrigger_identity::TestCa;
use outrigger_runtime::Options;

use crate::{
    peer::metric,
    support::{Running, admin_get, bound, layotto_req, start_with},
};

pub const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
pub const USERS: &str = "spiffe://cluster.local/ns/shop/sa/users";

/// A sidecar's identity files in a directory of their own.
pub struct IdentityFiles {
    pub dir: tempfile::TempDir,
}

impl IdentityFiles {
    pub fn new(bundle: &str, roots: &str) -> Self {
        let files = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write(bundle, roots);
        files
    }

    /// Writes both files as the kubelet would: a new file renamed over the old one.
    pub fn write(&self, bundle: &str, roots: &str) {
        for (name, text) in [
            ("credentialbundle.pem", bundle),
            ("trust-bundle.pem", roots),
        ] {
            let tmp = self.dir.path().join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
        }
    }

    pub fn yaml(&self) -> String {
        let p = |n: &str| self.dir.path().join(n).display().to_string();
        format!(
            "identity: {{credentialBundlePath: \"{}\", trustBundlePath: \"{}\"}}\n",
            p("credentialbundle.pem"),
            p("trust-bundle.pem")
        )
    }
}

pub fn fast_watch() -> Options {
    Options {
        watch_interval: Duration::from_millis(50),
        ..Options::default()
    }
}

/// Sidecar B: an `auto` listener `inbound` with `tls.mode` that forwards to the app (a cluster
/// of `protocol`), with `authorization` (a YAML block, indented for the listener's keys) when
/// given.
pub fn callee_with(
    identity: &IdentityFiles,
    mode: &str,
    protocol: &str,
    app: &str,
    log: &Path,
    authorization: &str,
) -> String {
    let authorization = if authorization.is_empty() {
        String::new()
    } else {
        let block: String = authorization
            .trim_matches('\n')
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect();
        format!("    authorization:\n{block}")
    };
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc: {{channels: [{{listener: inbound}}]}}
accessLog: {{path: "{log}"}}
{identity}listeners:
  - name: inbound
    protocol: auto
    address: "127.0.0.1:0"
    routeTable: app
    tls: {{mode: {mode}}}
{authorization}routeTables:
  - {{name: app, routes: [{{cluster: app}}]}}
clusters:
  - {{name: app, protocol: {protocol}, hosts: [{{address: "{app}"}}]}}
"#,
        log = log.display(),
        identity = identity.yaml(),
    )
}

/// Sidecar B without a policy.
pub fn callee(
    identity: &IdentityFiles,
    mode: &str,
    protocol: &str,
    app: &str,
    log: &Path,
) -> String {
    callee_with(identity, mode, protocol, app, log, "")
}

/// Sidecar A: its channel and an `egress` socket route to B over mutual TLS, accepting only
/// `accept`. For `http2`, the channel and listener speak HTTP/1.1 and the route takes gRPC
/// calls proxied for `dapr-app-id` (the pass-through) to B as HTTP/2.
pub fn caller(
    identity: &IdentityFiles,
    protocol: &str,
    callee: SocketAddr,
    accept: &str,
) -> String {
    let wire = if protocol == "http2" {
        "http"
    } else {
        protocol
    };
    format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc:
  channels: [{{protocol: {wire}, size: 8, listener: egress}}]
{identity}listeners:
  - {{name: egress, protocol: {wire}, address: "127.0.0.1:0", routeTable: out}}
routeTables:
  - {{name: out, routes: [{{cluster: users, retry: {{attempts: 2, on: [connect-failure]}}}}]}}
clusters:
  - name: users
    protocol: {protocol}
    hosts: [{{address: "{callee}"}}]
    tls: {{mode: mesh, identities: ["{accept}"]}}
"#,
        identity = identity.yaml(),
    )
}

/// A CA, sidecar B in front of `app`, and sidecar A calling B.
pub struct Mesh {
    pub ca: TestCa,
    pub a_files: IdentityFiles,
    pub b_files: IdentityFiles,
    pub a: Running,
    pub b: Running,
    pub log: tempfile::NamedTempFile,
}

pub async fn mesh(mode: &str, protocol: &str, app: &str) -> Mesh {
    mesh_with(mode, protocol, app, WEB, "").await
}

/// A mesh whose caller A has the identity `caller_id` and whose callee B's inbound listener has
/// the policy `authorization` (none when empty).
pub async fn mesh_with(
    mode: &str,
    protocol: &str,
    app: &str,
    caller_id: &str,
    authorization: &str,
) -> Mesh {
    let ca = TestCa::new("outrigger-test-root");
    let a_files = IdentityFiles::new(&ca.bundle(&[caller_id]), &ca.cert_pem);
    let b_files = IdentityFiles::new(&ca.bundle(&[USERS]), &ca.cert_pem);
    let log = tempfile::NamedTempFile::new().unwrap();
    let b = start_with(
        &callee_with(&b_files, mode, protocol, app, log.path(), authorization),
        fast_watch(),
    )
    .await;
    let a = start_with(
        &caller(&a_files, protocol, bound(&b, "inbound"), USERS),
        fast_watch(),
    )
    .await;
    Mesh {
        ca,
        a_files,
        b_files,
        a,
        b,
        log,
    }
}

impl Mesh {
    /// Another caller sidecar with the identity `id`, of the same CA, calling B.
    pub async fn caller_as(&self, protocol: &str, id: &str) -> (Running, IdentityFiles) {
        let files = IdentityFiles::new(&self.ca.bundle(&[id]), &self.ca.cert_pem);
        let rt = start_with(
            &caller(&files, protocol, bound(&self.b, "inbound"), USERS),
            fast_watch(),
        )
        .await;
        (rt, files)
    }

    /// B's access log lines so far, as JSON.
    pub async fn callee_lines(&self) -> Vec<serde_json::Value> {
        self.b.sidecar.flush_access_log().await;
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// What an injected pod's sidecar gets: a file with `inbound.tls.mode` and no listener of its
/// own, and from the command line the app's port and the identity files.
pub fn injected(
    files: Option<&IdentityFiles>,
    mode: &str,
    app_port: u16,
    protocol: outrigger_config::Protocol,
) -> (String, Options) {
    injected_with(files, mode, app_port, protocol, "")
}

/// [`injected`], with `inbound.authorization` set to `policy` (flow style) when given.
pub fn injected_with(
    files: Option<&IdentityFiles>,
    mode: &str,
    app_port: u16,
    protocol: outrigger_config::Protocol,
    policy: &str,
) -> (String, Options) {
    let authorization = if policy.is_empty() {
        String::new()
    } else {
        format!(", authorization: {policy}")
    };
    let yaml = format!(
        r#"
grpc: {{address: "127.0.0.1:0"}}
admin: {{address: "127.0.0.1:0"}}
httpApi: {{address: "127.0.0.1:0"}}
rpc: {{channels: [{{listener: egress}}]}}
inbound: {{tls: {{mode: {mode}}}{authorization}}}
listeners: [{{name: egress, routeTable: none}}]
routeTables: [{{name: none, routes: []}}]
"#
    );
    let p = |f: &IdentityFiles, n: &str| f.dir.path().join(n).display().to_string();
    let options = Options {
        overrides: outrigger_runtime::Overrides {
            inbound: Some(outrigger_runtime::InboundApp {
                address: "127.0.0.1:0".into(),
                port: app_port,
                protocol,
            }),
            identity: files.map(|f| outrigger_config::IdentityConfig {
                trust_domain: "cluster.local".into(),
                credential_bundle_path: Some(p(f, "credentialbundle.pem")),
                csr: None,
                trust_bundle_path: p(f, "trust-bundle.pem"),
            }),
            ..Default::default()
        },
        ..fast_watch()
    };
    (yaml, options)
}

pub fn handshakes(rt: &Running, direction: &str, result: &str) -> f64 {
    metric(
        &rt.metrics.encode(),
        &format!("outrigger_tls_handshakes_total{{direction=\"{direction}\",result=\"{result}\"}}"),
    )
}

pub async fn serial_of(rt: &Running) -> String {
    let (_, dump) = admin_get(&rt.sidecar, "/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    dump["identity"]["serial"].as_str().unwrap().to_owned()
}

pub async fn until(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if ok().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `InvokeService` calls to `users` through a sidecar, one after another until stopped, counted
/// by outcome: the load a rotation or a reload must not fail.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Starts calling through `rt`; a failure is printed with `during`.
    pub fn start(rt: &Running, during: &'static str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let task = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            let mut client = rt.layotto.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client
                        .invoke_service(layotto_req("users", "/load", "", 0, ""))
                        .await
                    {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("failed during {during}: {e:?}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        };
        Self {
            stop,
            ok,
            failed,
            task,
        }
    }

    /// Calls answered so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more calls than now were answered.
    pub async fn more(&self, n: usize, what: &str) {
        let calls = self.ok();
        until(what, async || self.ok() > calls + n).await;
    }

    /// Stops the calls: how many were answered and how many failed.
    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
