//! The config each injected sidecar actually runs: its live hash, read from the sidecar's admin
//! port (`GET /metrics` on the pod IP, the line `outrigger_config_info{hash="…"} 1`: the port and
//! path the kubelet's probes and Prometheus already reach). A sidecar reloads a changed ConfigMap
//! by itself, so this, not the hash a pod was admitted with, says whether it is up to date.
//! Reads are bounded (a timeout per pod, a body cap, a few pods at a time, a budget per count)
//! and a pod that cannot be read is simply absent from the answer: the caller falls back to its
//! admission stamp.
//! Not for deciding what counts as stale (`status::rollout`).

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use futures_util::{StreamExt, stream};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;

use crate::{
    inject::config_name,
    names::{SIDECAR_ADMIN_PORT, SIDECAR_ADMIN_PORT_NAME, SIDECAR_CONTAINER_NAME},
};

/// How long one pod may take to answer (connect, request and body together).
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one count may spend reading sidecars in all: pods not read by then are counted by
/// their admission stamp, so unreachable pods never hold a reconcile up for long.
pub const SCRAPE_BUDGET: Duration = Duration::from_secs(5);
/// The most of a `/metrics` answer read; the info line comes early, long before this.
const MAX_BODY: usize = 1 << 20;
/// Pods read at once.
const CONCURRENCY: usize = 16;
/// The metric whose `hash` label names the live config.
const CONFIG_INFO: &str = "outrigger_config_info{";

/// The live config hash in a sidecar's `/metrics` text, if it has one.
pub fn parse_config_hash(metrics: &str) -> Option<&str> {
    metrics.lines().find_map(|line| {
        let labels = line.strip_prefix(CONFIG_INFO)?;
        let (labels, value) = labels.split_once('}')?;
        if value.trim() != "1" {
            return None;
        }
        labels.split(',').find_map(|kv| {
            let v = kv.trim().strip_prefix("hash=\"")?.strip_suffix('"')?;
            (!v.is_empty()).then_some(v)
        })
    })
}

/// Where a running pod's sidecar serves its admin port: the pod IP and the `admin` port of the
/// `outrigger` container (native sidecar or regular), when the pod runs and has an IP.
pub fn admin_address(pod: &Pod) -> Option<SocketAddr> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse().ok()?;
    let spec = pod.spec.as_ref()?;
    let sidecar = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == SIDECAR_CONTAINER_NAME)?;
    let port = sidecar
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(SIDECAR_ADMIN_PORT_NAME))
        .map_or(SIDECAR_ADMIN_PORT, |p| p.container_port);
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// Why one pod's live hash could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No answer in time.
    #[error("no answer from {0} within {SCRAPE_TIMEOUT:?}")]
    Timeout(SocketAddr),
    /// Connecting, or the HTTP exchange, failed.
    #[error("cannot read /metrics from {addr}: {message}")]
    Http {
        /// The admin address.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The answer had no `outrigger_config_info` line.
    #[error("{0} answered /metrics without outrigger_config_info")]
    NoHash(SocketAddr),
}

/// The live hash of one sidecar.
pub async fn scrape(addr: SocketAddr) -> Result<String, ScrapeError> {
    tokio::time::timeout(SCRAPE_TIMEOUT, fetch(addr))
        .await
        .map_err(|_| ScrapeError::Timeout(addr))?
}

async fn fetch(addr: SocketAddr) -> Result<String, ScrapeError> {
    let http = |message: String| ScrapeError::Http { addr, message };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| http(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get("/metrics")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.to_string()))?;
    if !response.status().is_success() {
        conn.abort();
        return Err(http(format!("status {}", response.status())));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| http(e.to_string()))?
        .to_bytes();
    conn.abort();
    let text = String::from_utf8_lossy(&body);
    parse_config_hash(&text)
        .map(str::to_owned)
        .ok_or(ScrapeError::NoHash(addr))
}

/// The live hash of every running sidecar among `pods` that uses RuntimeConfig `name`, by pod
/// name, as far as [`SCRAPE_BUDGET`] allows. Pods that cannot be read are left out (and logged
/// at debug).
pub async fn live_hashes(pods: &[Pod], name: &str) -> HashMap<String, String> {
    let targets: Vec<(String, SocketAddr)> = pods
        .iter()
        .filter(|p| config_name(p) == name)
        .filter_map(|p| Some((p.metadata.name.clone()?, admin_address(p)?)))
        .collect();
    stream::iter(targets)
        .map(|(pod, addr)| async move {
            match scrape(addr).await {
                Ok(hash) => Some((pod, hash)),
                Err(e) => {
                    tracing::debug!(%pod, error = %e, "cannot read the sidecar's live config; counting its admission stamp");
                    None
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(std::future::ready)
        .take_until(tokio::time::sleep(SCRAPE_BUDGET))
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn finds_the_hash_of_the_info_line() {
        let text = "# HELP outrigger_config_info The live config.\n\
                    # TYPE outrigger_config_info gauge\n\
                    outrigger_config_info{hash=\"3fb2da9952bcf373\"} 1\n\
                    outrigger_config_version 2\n";
        assert_eq!(parse_config_hash(text), Some("3fb2da9952bcf373"));
        for text in [
            "",
            "outrigger_config_version 1\n",
            "outrigger_config_info{hash=\"\"} 1\n",
            "outrigger_config_info{hash=\"abc\"} 0\n",
            "outrigger_config_info{hash=\"abc\" 1\n",
            "xoutrigger_config_info{hash=\"abc\"} 1\n",
        ] {
            assert_eq!(parse_config_hash(text), None, "{text:?}");
        }
        assert_eq!(
            parse_config_hash("outrigger_config_info{a=\"b\",hash=\"abc\"} 1"),
            Some("abc")
        );
    }

    fn pod(phase: &str, ip: Option<&str>, port: Option<i32>) -> Pod {
        let ports = port.map(|p| serde_json::json!([{ "name": "admin", "containerPort": p }]));
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p" },
            "spec": {
                "initContainers": [{ "name": "outrigger", "ports": ports }],
                "containers": [{ "name": "app" }],
            },
            "status": { "phase": phase, "podIP": ip },
        }))
        .unwrap()
    }

    #[test]
    fn admin_address_of_running_pods_only() {
        assert_eq!(
            admin_address(&pod("Running", Some("10.1.2.3"), Some(35000))),
            Some("10.1.2.3:35000".parse().unwrap())
        );
        assert_eq!(
            admin_address(&pod("Running", Some("fd00::5"), None)),
            Some("[fd00::5]:34999".parse().unwrap())
        );
        assert_eq!(admin_address(&pod("Pending", Some("10.1.2.3"), None)), None);
        assert_eq!(admin_address(&pod("Running", None, None)), None);
        assert_eq!(admin_address(&pod("Running", Some("junk"), None)), None);
    }

    #[tokio::test]
    async fn reads_the_hash_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            let body = "outrigger_config_version 3\noutrigger_config_info{hash=\"ab12\"} 1\n";
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
            s.write_all(head.as_bytes()).await.unwrap();
            s.write_all(body.as_bytes()).await.unwrap();
        });
        assert_eq!(scrape(addr).await.unwrap(), "ab12");
    }

    #[tokio::test]
    async fn an_unreachable_sidecar_is_left_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = scrape(addr).await.unwrap_err();
        assert!(matches!(err, ScrapeError::Http { .. }), "{err}");
    }
}
