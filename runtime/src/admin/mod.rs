//! The admin HTTP endpoint: `/healthz` (the process answers), `/readyz` (config loaded and
//! listeners bound, and not shutting down) and `/metrics` (Prometheus text) for kubelet probes
//! and scrapers on whatever address it binds, and `/config_dump` (the live config with secrets
//! redacted, its version and hash, the last rejected config's errors, bound listeners, resolved
//! cluster hosts and the hosts outlier detection has ejected) for loopback peers only — in a
//! pod, the app's containers and `kubectl port-forward`/`exec`, never another pod. Not for
//! anything on the request path.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::UNIX_EPOCH,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use outrigger_core::{LabelStr, Metrics, ServerLimits, Shutdown, accept_loop, serve_http1};
use outrigger_proxy::ProxyCore;
use tokio::net::TcpListener;

use crate::config::Live;

/// What the admin endpoint reports on.
#[derive(Clone)]
pub(crate) struct AdminState {
    /// The live config.
    pub(crate) live: Arc<Live>,
    /// The metrics registry.
    pub(crate) metrics: Metrics,
    /// The proxy core, for bound listeners and resolved hosts.
    pub(crate) proxy: Arc<ProxyCore>,
    /// Set once everything is serving; cleared when shutdown begins.
    pub(crate) ready: Arc<AtomicBool>,
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn config_dump(state: &AdminState) -> serde_json::Value {
    let s = state.live.current();
    let secs = |t: std::time::SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Each cluster's hosts as addresses, from one of the proxy's lookups.
    let hosts = |clusters: &mut dyn Iterator<Item = &outrigger_config::ClusterConfig>,
                 lookup: &dyn Fn(&str) -> Option<Vec<std::net::SocketAddr>>| {
        clusters
            .map(|c| {
                let addrs: Vec<String> = lookup(&c.name)
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                (c.name.clone(), serde_json::json!(addrs))
            })
            .collect::<serde_json::Map<String, serde_json::Value>>()
    };
    let clusters = hosts(&mut s.spec.clusters.iter(), &|name| {
        state.proxy.cluster_addresses(name)
    });
    let ejected = hosts(
        &mut s
            .spec
            .clusters
            .iter()
            .filter(|c| c.outlier_detection.is_some()),
        &|name| state.proxy.ejected_hosts(name),
    );
    let listeners: serde_json::Map<String, serde_json::Value> = state
        .proxy
        .bound_addresses()
        .into_iter()
        .map(|(n, a)| (n, serde_json::json!(a.to_string())))
        .collect();
    serde_json::json!({
        "version": s.version,
        "hash": s.hash,
        "loadedAt": secs(s.loaded_at),
        "config": redacted(serde_json::to_value(&*s.spec).unwrap_or_default()),
        "lastRejected": state.live.last_rejection().map(|r| serde_json::json!({
            "at": secs(r.at),
            "errors": r.errors,
        })),
        "boundListeners": listeners,
        "clusterHosts": clusters,
        "ejectedHosts": ejected,
        "identity": state.proxy.identity().map(|id| identity_dump(id)),
    })
}

/// The sidecar's identity as `/config_dump` shows it: its SPIFFE id, the certificate's serial
/// and validity, and the trust bundle's roots (never a key).
fn identity_dump(identity: &outrigger_identity::Identity) -> serde_json::Value {
    let current = identity.current();
    let time = |t| outrigger_core::rfc3339(t);
    let leaf = &current.credentials.leaf;
    let (source, from, refresh) = identity.source();
    serde_json::json!({
        "spiffeId": current.credentials.id.as_str(),
        "source": source,
        "from": from,
        "renewAfter": refresh.map(time),
        "trustDomain": identity.trust_domain(),
        "serial": leaf.serial,
        "notBefore": time(leaf.not_before),
        "notAfter": time(leaf.not_after),
        "version": current.version,
        "loadedAt": time(current.loaded_at),
        "roots": current.trust.info.iter().map(|r| serde_json::json!({
            "subject": r.subject,
            "serial": r.serial,
            "notAfter": time(r.not_after),
        })).collect::<Vec<_>>(),
    })
}

/// Whether a peer may read the config dump: loopback only (an IPv4 peer of a dual-stack socket
/// arrives as `::ffff:127.0.0.1`).
fn dump_allowed(peer: std::net::IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

/// What the config dump shows instead of a secret.
const REDACTED: &str = "<redacted>";

/// The config with secrets replaced: every value a header filter sets (injected credentials
/// live there) and every string under a key that names a secret (`apiToken`, `password`, …).
fn redacted(mut config: serde_json::Value) -> serde_json::Value {
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        [
            "token",
            "secret",
            "password",
            "authorization",
            "credential",
            "apikey",
        ]
        .iter()
        .any(|s| k.contains(s))
    }
    fn walk(v: &mut serde_json::Value, in_header_set: bool) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map.iter_mut() {
                    if in_header_set || (secret_key(k) && child.is_string()) {
                        *child = serde_json::Value::String(REDACTED.to_owned());
                    } else {
                        walk(child, k == "set");
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, false)),
            _ => {}
        }
    }
    walk(&mut config, false);
    config
}

async fn handle(
    state: AdminState,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "text/plain", "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready\n")
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
        "/config_dump" if !dump_allowed(peer.ip()) => text(
            StatusCode::FORBIDDEN,
            "text/plain",
            "/config_dump is served to loopback peers only \
             (in a pod: kubectl port-forward, or curl from a container of the pod)\n",
        ),
        "/config_dump" => {
            let body = serde_json::to_vec_pretty(&config_dump(&state)).unwrap_or_default();
            text(StatusCode::OK, "application/json", body)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /healthz, /readyz, /metrics, /config_dump\n",
        ),
    }
}

/// Connections the admin endpoint serves at once (probes and a scraper need a handful).
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// How long an admin client may take to send a request head.
const ADMIN_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves the admin endpoint on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, state: AdminState, shutdown: Shutdown) {
    let conn_shutdown = shutdown.clone();
    let limits = ServerLimits::new(
        LabelStr::Static("admin"),
        ADMIN_MAX_CONNECTIONS,
        ADMIN_HEADER_READ_TIMEOUT,
        &state.metrics,
    );
    let conn_limits = limits.clone();
    accept_loop(&listener, &limits, shutdown, move |stream, peer| {
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, peer, req).await) }
        });
        let (limits, shutdown) = (conn_limits.clone(), conn_shutdown.clone());
        async move { serve_http1(stream, svc, Some(&limits), shutdown).await }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_peers_may_read_the_dump() {
        for (peer, allowed) in [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.244.1.7", false),
            ("192.168.0.5", false),
            ("::ffff:10.0.0.1", false),
            ("fd00::1", false),
        ] {
            let ip: std::net::IpAddr = peer.parse().expect("ip");
            assert_eq!(dump_allowed(ip), allowed, "{peer}");
        }
    }

    #[test]
    fn secrets_are_redacted_from_the_dump() {
        let config = serde_json::json!({
            "rpc": {"beforeInvoke": [{"name": "headers", "config": {
                "request": {"set": {"authorization": "Bearer s3cr3t", "x-tenant": "blue"}, "remove": ["cookie"]},
            }}]},
            "httpApi": {"address": "127.0.0.1:3500", "apiToken": "t0k3n"},
            "clusters": [{"name": "users", "hosts": [{"address": "10.0.0.1:80"}]}],
        });
        let out = redacted(config).to_string();
        for secret in ["s3cr3t", "blue", "t0k3n"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        for kept in [
            "cookie",
            "127.0.0.1:3500",
            "10.0.0.1:80",
            "x-tenant",
            "authorization",
        ] {
            assert!(out.contains(kept), "{kept} in {out}");
        }
    }
}
