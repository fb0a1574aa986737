//! The operator's two HTTP servers: the admission webhooks over HTTPS (`/mutate-pods`,
//! `/validate-runtimeconfigs`) and the plain metrics/health endpoint (`/metrics`, `/healthz`,
//! `/readyz`). Thin: routing, body limits and TLS; every decision is in `admission`. Not for
//! certificates (`tls`, `certs`).

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use tracing::Instrument;

use crate::{
    admission::{
        ClusterView, ConfigLookup, MutateVerdict, admit_pod_live, validate_runtime_configs,
    },
    inject::SidecarSettings,
    metrics::Metrics,
    names::{MUTATE_PODS_NAMESPACE_OPTED_IN_PATH, MUTATE_PODS_PATH, VALIDATE_RUNTIMECONFIGS_PATH},
    skips::SkipReporter,
};

/// Largest AdmissionReview body accepted (the API server's own request limit is 3 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// What the webhook handlers need.
pub struct WebhookState {
    /// Operator-wide sidecar defaults.
    pub settings: SidecarSettings,
    /// What the webhook can see of the cluster.
    pub cluster: Arc<dyn ClusterView>,
    /// Where admissions are counted.
    pub metrics: Arc<Metrics>,
    /// Live RuntimeConfig reads when the cache says one is missing (`None`: standalone).
    pub lookup: Option<Arc<dyn ConfigLookup>>,
    /// Where skip Events go (`None`: standalone, no API server).
    pub skips: Option<Arc<SkipReporter>>,
}

/// How long in-flight admission reviews may take to finish once shutdown begins (the API
/// server's own webhook timeout is at most 30 s, 10 s by default).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves both webhooks over TLS on `listener` until `shutdown` resolves, then drains: the
/// listener is closed, every connection finishes the review it is answering and is closed
/// (keep-alive connections between requests close at once), and the function returns when all
/// are done or after [`DRAIN_TIMEOUT`].
pub async fn serve_webhooks(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    state: Arc<WebhookState>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        let mut drain = drain_rx.clone();
        let span = tracing::debug_span!("webhook connection", %peer);
        connections.spawn(
            async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(webhook_route(req, &state).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                tokio::pin!(conn);
                let draining = async {
                    // A closed channel also means: stop.
                    let _ = drain.wait_for(|d| *d).await;
                };
                let result = tokio::select! {
                    result = conn.as_mut() => Some(result),
                    () = draining => None,
                };
                // Draining: finish the review in flight, then close.
                let result = match result {
                    Some(r) => r,
                    None => {
                        conn.as_mut().graceful_shutdown();
                        conn.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let in_flight = connections.len();
    drain_tx.send_replace(true);
    tracing::info!(connections = in_flight, "webhook draining");
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout = ?DRAIN_TIMEOUT,
            "webhook connections still open after the drain timeout; closing them"
        );
        connections.abort_all();
    } else {
        tracing::info!("webhook drained");
    }
}

async fn webhook_route(req: Request<Incoming>, state: &WebhookState) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let namespace_opted_in = path == MUTATE_PODS_NAMESPACE_OPTED_IN_PATH;
    match (req.method(), path.as_str()) {
        (&Method::POST, MUTATE_PODS_PATH | MUTATE_PODS_NAMESPACE_OPTED_IN_PATH) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let a = admit_pod_live(
                &body,
                &state.settings,
                state.cluster.as_ref(),
                state.lookup.as_deref(),
                namespace_opted_in,
            )
            .await;
            let pod = a.pod.as_deref().unwrap_or_default();
            let result = match &a.verdict {
                MutateVerdict::Injected => {
                    tracing::info!(%pod, "sidecar injected");
                    "injected"
                }
                MutateVerdict::Skipped(skip) => {
                    state.metrics.injection_skipped(skip.label());
                    if skip.warns() {
                        // The pod asked for the sidecar: the pod is annotated, its owner gets an
                        // Event, and the log says so at info.
                        tracing::info!(%pod, reason = %skip, "opted-in pod not injected");
                    } else {
                        // Most pods are simply not opted in: that is not news.
                        tracing::debug!(%pod, reason = %skip, "pod not injected");
                    }
                    "skipped"
                }
                MutateVerdict::Denied(skip) => {
                    state.metrics.injection_skipped(skip.label());
                    tracing::info!(%pod, reason = %skip, "pod denied: inject-policy required");
                    "denied"
                }
                MutateVerdict::Ignored(why) => {
                    tracing::debug!(reason = %why, "admission ignored");
                    "ignored"
                }
                MutateVerdict::Invalid(why) => {
                    tracing::warn!(reason = %why, "invalid admission request");
                    "invalid"
                }
            };
            if let (Some(notice), Some(skips)) = (a.notice, &state.skips) {
                skips.report(notice);
            }
            state.metrics.admission("mutate-pods", result);
            json(StatusCode::OK, &a.review)
        }
        (&Method::POST, VALIDATE_RUNTIMECONFIGS_PATH) => {
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let (review, problems) = validate_runtime_configs(&body);
            let result = if problems.is_empty() {
                "allowed"
            } else {
                "denied"
            };
            if !problems.is_empty() {
                tracing::info!(problems = ?problems, "RuntimeConfig rejected");
            }
            state.metrics.admission("validate-runtimeconfigs", result);
            json(StatusCode::OK, &review)
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("cannot read the body: {e}"),
        )),
    }
}

/// Readiness of the replica, set by `run` once the webhook certificate is loaded.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Marks the replica ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    /// Whether the replica is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` over plain HTTP until `shutdown` resolves.
pub async fn serve_health(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (metrics, ready) = (metrics.clone(), ready.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let response = match (req.method(), req.uri().path()) {
                    (&Method::GET, "/metrics") => Response::builder()
                        .header(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )
                        .body(Full::new(Bytes::from(metrics.encode())))
                        .unwrap_or_default(),
                    (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
                    (&Method::GET, "/readyz") if ready.get() => text(StatusCode::OK, "ok"),
                    (&Method::GET, "/readyz") => text(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
                    _ => text(StatusCode::NOT_FOUND, "not found"),
                };
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await
            {
                tracing::debug!(error = %e, "health connection ended with an error");
            }
        });
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}
