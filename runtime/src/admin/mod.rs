//! The admin HTTP endpoint: `/healthz` (the process answers), `/readyz` (config loaded and
//! listeners bound, and not shutting down), `/metrics` (Prometheus text) and `/config_dump`
//! (the live config with API tokens redacted, its version and hash, the last rejected config's
//! errors, bound listeners and resolved cluster hosts). Not for anything on the request path.

use std::{
    convert::Infallible,
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
use outrigger_core::{Metrics, Shutdown, accept_loop, serve_http1};
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
    let clusters: serde_json::Map<String, serde_json::Value> = s
        .spec
        .clusters
        .iter()
        .map(|c| {
            let addrs = state
                .proxy
                .cluster_addresses(&c.name)
                .unwrap_or_default()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>();
            (c.name.clone(), serde_json::json!(addrs))
        })
        .collect();
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
        "config": redacted(&s.spec),
        "lastRejected": state.live.last_rejection().map(|r| serde_json::json!({
            "at": secs(r.at),
            "errors": r.errors,
        })),
        "boundListeners": listeners,
        "clusterHosts": clusters,
    })
}

/// The config as the dump shows it: API tokens replaced by `<redacted>`.
fn redacted(spec: &outrigger_config::RuntimeConfigSpec) -> outrigger_config::RuntimeConfigSpec {
    let mut spec = spec.clone();
    for token in [&mut spec.grpc.api_token, &mut spec.http_api.api_token] {
        if token.is_some() {
            *token = Some("<redacted>".to_owned());
        }
    }
    spec
}

async fn handle(state: AdminState, req: Request<Incoming>) -> Response<Full<Bytes>> {
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

/// Serves the admin endpoint on `listener` until `shutdown`.
pub(crate) async fn serve(listener: TcpListener, state: AdminState, shutdown: Shutdown) {
    let conn_shutdown = shutdown.clone();
    accept_loop(listener, "admin", shutdown, move |stream, _| {
        let state = state.clone();
        let svc = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        serve_http1(stream, svc, conn_shutdown.clone())
    })
    .await;
}
