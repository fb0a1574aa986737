//! Real protocol peers written by others (tests/peers/, installed by scripts/install-tools.sh):
//! finding them, starting servers on ephemeral ports and running clients. A test that needs
//! them fails with a clear message when they are missing, unless `OUTRIGGER_SKIP_EXTERNAL=1`
//! says to skip it (and then it says so on stderr).

#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Where the peers' packages are: `$OUTRIGGER_TOOLS`, else `.tools` at the workspace root.
pub fn tools() -> PathBuf {
    std::env::var_os("OUTRIGGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools"))
}

/// The installed peers, or `None` when the test should be skipped.
pub struct Peers {
    tools: PathBuf,
    node: PathBuf,
    python: PathBuf,
}

impl Peers {
    /// The peers a test needs; panics with instructions when they are missing, unless
    /// `OUTRIGGER_SKIP_EXTERNAL=1`.
    pub fn require(test: &str) -> Option<Self> {
        let tools = tools();
        let node_modules = tools.join("node/node_modules");
        let python = tools.join("venv/bin/python");
        let node = which("node");
        let missing: Vec<String> = [
            (
                node_modules.join("sofa-rpc-node").exists(),
                format!("{}", node_modules.join("sofa-rpc-node").display()),
            ),
            (
                node_modules.join("hessian.js").exists(),
                format!("{}", node_modules.join("hessian.js").display()),
            ),
            (python.exists(), format!("{}", python.display())),
            (node.is_some(), "node on PATH".to_owned()),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| what)
        .collect();
        if missing.is_empty() {
            return Some(Self {
                tools,
                node: node.expect("checked"),
                python,
            });
        }
        if std::env::var("OUTRIGGER_SKIP_EXTERNAL").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED {test}: OUTRIGGER_SKIP_EXTERNAL=1 and the protocol peers are missing ({})",
                missing.join(", ")
            );
            return None;
        }
        panic!(
            "{test} needs the real protocol peers, which are missing: {}.\n\
             Install them with `eval \"$(./scripts/install-tools.sh)\"` (or point OUTRIGGER_TOOLS \
             at an install), or set OUTRIGGER_SKIP_EXTERNAL=1 to skip peer tests.",
            missing.join(", ")
        );
    }

    fn script(name: &str) -> String {
        root().join("tests/peers").join(name).display().to_string()
    }

    fn node_cmd(&self, script: &str) -> Command {
        let mut c = Command::new(&self.node);
        c.arg(Self::script(script))
            .env("OUTRIGGER_TOOLS", &self.tools)
            // The peers speak plain TCP; parsing an extra CA bundle (set in some CI images)
            // costs node most of its start-up time.
            .env_remove("NODE_EXTRA_CA_CERTS")
            .stdin(Stdio::null());
        c
    }

    /// Starts `tests/peers/<script>` (a server printing its port) on an ephemeral port.
    pub fn server(&self, script: &str, args: &[&str]) -> Server {
        let mut child = self
            .node_cmd(script)
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            // Servers log handled errors (a method that throws on purpose) on stderr.
            .stderr(if std::env::var_os("PEER_VERBOSE").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the port");
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{script} printed {line:?} instead of its port"));
        Server { child, port }
    }

    /// Runs the sofa-rpc-node client against `addr`; Ok(stdout) or Err(stderr).
    pub async fn bolt_client(&self, addr: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.node_cmd("bolt_client.js");
        cmd.arg(addr).args(args);
        run(cmd).await
    }

    /// Runs the dubbo-ssl-python client against `addr`; Ok(stdout) or Err(stderr).
    pub async fn dubbo_client(&self, addr: &str, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(Self::script("dubbo_client.py"))
            .arg(addr)
            .args(args)
            .stdin(Stdio::null());
        run(cmd).await
    }

    /// The grpcio server (`tests/peers/grpc_server.py`) on an ephemeral port.
    pub fn grpc_server(&self) -> Server {
        grpc_server(&self.python)
    }

    /// A grpcio client call to `addr` (`tests/peers/grpc_client.py`): its JSON report.
    pub async fn grpc_client(&self, addr: &str, args: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new(&self.python);
        cmd.arg(Self::script("grpc_client.py"))
            .arg(addr)
            .args(args)
            .stdin(Stdio::null());
        let out = run(cmd).await.expect("grpc_client.py runs");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("grpc_client.py printed {out:?}: {e}"))
    }

    /// A grpcio call of `method` with `data` for the app `app_id` (metadata `dapr-app-id`),
    /// server-streaming when `stream`: the client's JSON report.
    pub async fn grpc_app_call(
        &self,
        addr: &str,
        app_id: &str,
        method: &str,
        data: &str,
        stream: bool,
    ) -> serde_json::Value {
        let mut args = vec![method, "--app-id", app_id, "--data", data];
        if stream {
            args.push("--stream");
        }
        self.grpc_client(addr, &args).await
    }

    /// A SofaRequest serialised by sofa-bolt-node, as an application would send it.
    pub async fn sofa_request(&self, service: &str, method: &str, args: &str) -> Vec<u8> {
        let mut cmd = self.node_cmd("bolt_content.js");
        cmd.args([
            "request",
            "--service",
            service,
            "--method",
            method,
            "--args",
            args,
        ]);
        let hex = run(cmd).await.expect("bolt_content.js request");
        unhex(hex.trim())
    }

    /// A SofaResponse read by sofa-bolt-node: `{"appResponse": …, "error": …}`.
    pub async fn sofa_response(&self, content: &[u8]) -> serde_json::Value {
        let mut cmd = self.node_cmd("bolt_content.js");
        cmd.args(["response", &hex(content)]);
        let out = run(cmd).await.expect("bolt_content.js response");
        serde_json::from_str(out.trim()).expect("json")
    }
}

async fn run(mut cmd: Command) -> Result<String, String> {
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the peer runs");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The grpcio server (`tests/peers/grpc_server.py`) run by `python` (a venv with grpcio) on an
/// ephemeral port.
pub fn grpc_server(python: &Path) -> Server {
    let mut child = Command::new(python)
        .arg(Peers::script("grpc_server.py"))
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start grpc_server.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("read the port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("grpc_server.py printed {line:?} instead of its port"));
    Server { child, port }
}

/// A peer server, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `cond` holds, checking every 20 ms, at most `max`.
pub async fn eventually(max: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// The value of the first metric line starting with `prefix` (0 when absent).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
