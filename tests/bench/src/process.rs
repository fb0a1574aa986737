//! Child processes of a run (our own servers, the sidecar, the peer proxies): spawning with
//! output captured to a log file, waiting until their ports accept connections, stopping them
//! (SIGTERM, then SIGKILL for anything left of the tree), and picking free loopback ports.
//! Everything listens on 127.0.0.1 only. Not for measuring them (see `procstat`).

use std::{
    fs::{self, File},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::time::Instant;

use crate::{BenchError, procstat};

/// How long a child may take to start accepting connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a child may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running child process; killed (with its descendants) when dropped.
pub(crate) struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Proc {
    /// Starts `cmd` with stdin closed and stdout/stderr appended to `<dir>/<name>.log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Result<Self, BenchError> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)
            .map_err(|e| BenchError::io(format!("create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| BenchError::io(format!("dup {}", log.display()), e))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| BenchError::io(format!("start {name} ({cmd:?})"), e))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            stopped: false,
        })
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process and its descendants alive now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        procstat::tree(self.pid())
    }

    /// Fails when the process has exited, quoting the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(BenchError::ChildExited {
                name: self.name.clone(),
                status: status.to_string(),
                log_tail: self.log_tail(),
            }),
            Ok(None) => Ok(()),
            Err(e) => Err(BenchError::io(format!("wait for {}", self.name), e)),
        }
    }

    /// Waits until every address accepts a TCP connection.
    pub(crate) async fn wait_ready(&mut self, addrs: &[SocketAddr]) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<SocketAddr> = addrs.to_vec();
        while !pending.is_empty() {
            self.check_running()?;
            let mut still = Vec::new();
            for a in pending {
                if tokio::net::TcpStream::connect(a).await.is_err() {
                    still.push(a);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady {
                    name: self.name.clone(),
                    addrs: pending.iter().map(ToString::to_string).collect(),
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Waits until the child writes its listening address to `file` (our own servers bind
    /// port 0 and report the port, so no port is ever guessed).
    pub(crate) async fn wait_address_file(
        &mut self,
        file: &Path,
    ) -> Result<SocketAddr, BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            if let Some(addr) = fs::read_to_string(file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                return Err(BenchError::NotReady {
                    name: self.name.clone(),
                    addrs: vec![file.display().to_string()],
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGTERM, a grace period, then SIGKILL for the process and whatever it started.
    pub(crate) async fn stop(mut self) {
        let tree = self.pids();
        signal("TERM", self.pid());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.kill(&tree);
    }

    fn kill(&mut self, tree: &[u32]) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            for &pid in tree.iter().filter(|&&p| p != self.pid()) {
                signal("KILL", pid);
            }
            self.stopped = true;
        }
    }

    /// The last lines of the child's log.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let tree = if self.stopped {
            Vec::new()
        } else {
            self.pids()
        };
        self.kill(&tree);
    }
}

/// Sends a signal with kill(1): the workspace forbids `unsafe`, so no libc call.
fn signal(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `n` distinct loopback ports free at the time of the call (for processes whose config must
/// name its ports up front: the sidecar, nginx, HAProxy).
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>, BenchError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::io("bind 127.0.0.1:0".to_owned(), e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::io("local_addr".to_owned(), e))
}

/// `127.0.0.1:port`.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Finds an executable by name on `PATH`, then in the sbin directories Debian installs
/// daemons to (often missing from a non-root `PATH`).
pub(crate) fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
