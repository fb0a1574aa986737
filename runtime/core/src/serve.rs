//! Serving sockets: the one accept loop every server of the sidecar uses (proxy listeners, the
//! admin endpoint) and the one way an HTTP/1.1 or HTTP/2 connection is served until shutdown.
//! Not for what a connection's requests mean.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::{
    body::{Body, Incoming},
    service::{HttpService, Service},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

use crate::{LabelStr, Metrics, ServerLabels, Shutdown};

/// The limits of one server the sidecar owns, and where it counts them firing.
#[derive(Clone)]
pub struct ServerLimits {
    /// Metric label: `grpc`, `admin`, `listener/<name>`.
    pub server: LabelStr,
    /// Connections served at once; one more is closed as it arrives.
    pub max_connections: usize,
    /// How long a client may take to send a request head (and, between requests, stay idle).
    pub header_read_timeout: Duration,
    /// The connection slots, shared by every accept loop of the server (one per worker).
    slots: Arc<Semaphore>,
    metrics: Metrics,
}

impl ServerLimits {
    /// Limits of `server`, counted in `metrics`.
    pub fn new(
        server: LabelStr,
        max_connections: usize,
        header_read_timeout: Duration,
        metrics: &Metrics,
    ) -> Self {
        Self {
            server,
            max_connections,
            header_read_timeout,
            slots: Arc::new(Semaphore::new(max_connections.max(1))),
            metrics: metrics.clone(),
        }
    }

    /// A connection slot, held while the connection is served; `None` (counted as
    /// `max_connections`) when every slot is taken.
    pub fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        let slot = self.slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.fired("max_connections");
        }
        slot
    }

    /// Counts `limit` firing (`header_timeout`, `idle_timeout`, …).
    pub fn fired(&self, limit: &'static str) {
        self.metrics
            .server_limits
            .get_or_create(&ServerLabels {
                server: self.server.clone(),
                limit,
            })
            .inc();
    }
}

/// How long accepting pauses after an error (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `shutdown`, and runs `serve` on each in its own task
/// (TCP_NODELAY set: answers are small and must not wait for the peer's delayed ACK), on the
/// runtime the loop runs on. Beyond `limits.max_connections` served at once by every loop sharing
/// `limits`, a new connection is closed as it arrives (and counted), so a flood cannot take the sidecar's memory or file descriptors. An accept error is
/// logged and retried after a short pause; the loop never spins.
pub async fn accept_loop<F, Fut>(
    listener: &TcpListener,
    limits: &ServerLimits,
    shutdown: Shutdown,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = limits.server.as_str();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.signalled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(permit) = limits.try_slot() else {
                    tracing::debug!(
                        server = name,
                        %peer,
                        limit = limits.max_connections,
                        "connection limit reached; closing a new connection"
                    );
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tracing::trace!(server = name, %peer, "accepted");
                let conn = serve(stream, peer);
                shutdown.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => {
                tracing::warn!(server = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves HTTP/1.1 (keep-alive) on `io` with `svc` until the peer closes, `shutdown` (then
/// the request in flight is answered and the connection closed), or the client takes longer
/// than `limits.header_read_timeout` to send a request head — or to start the next one on an
/// idle keep-alive connection (counted as `header_timeout`). Without limits (the sidecar's own
/// in-process connections) no timeout applies.
pub async fn serve_http1<I, S, B>(io: I, svc: S, limits: Option<&ServerLimits>, shutdown: Shutdown)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    match limits {
        Some(l) => builder.header_read_timeout(l.header_read_timeout),
        // The sidecar's own in-process connections.
        None => builder.header_read_timeout(None),
    };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                if e.is_timeout()
                    && let Some(l) = limits
                {
                    l.fired("header_timeout");
                }
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        () = shutdown.signalled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A service that tells when its first request arrived.
struct FirstRequest<S> {
    inner: S,
    seen: Arc<Notify>,
}

impl<S, B> Service<Request<Incoming>> for FirstRequest<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<B>;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: Request<Incoming>) -> S::Future {
        self.seen.notify_one();
        self.inner.call(req)
    }
}

/// Serves HTTP/2 with prior knowledge on `io` (its preface not yet read) with `svc`, each stream
/// on its own task, at most `max_streams` at once, until the peer closes or `shutdown` (then a
/// GOAWAY lets the streams in flight finish). A client on a socket must open its first stream
/// within `limits.header_read_timeout` (counted as `header_timeout`); without limits (the
/// sidecar's own in-process connections) no timeout applies.
pub async fn serve_http2<I, S, B>(
    io: I,
    svc: S,
    limits: Option<&ServerLimits>,
    max_streams: u32,
    shutdown: Shutdown,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let seen = Arc::new(Notify::new());
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(max_streams);
    let conn = builder.serve_connection(
        TokioIo::new(io),
        FirstRequest {
            inner: svc,
            seen: seen.clone(),
        },
    );
    tokio::pin!(conn);
    if let Some(l) = limits {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "http/2 connection ended with an error");
                }
                return;
            }
            () = seen.notified() => {}
            () = tokio::time::sleep(l.header_read_timeout) => {
                // Closed, not drained: a GOAWAY would wait for a client that says nothing.
                l.fired("header_timeout");
                return;
            }
            // No stream yet: nothing to finish.
            () = shutdown.signalled() => return,
        }
    }
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "http/2 connection ended with an error");
            }
        }
        () = shutdown.signalled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
