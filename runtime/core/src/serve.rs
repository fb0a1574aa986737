//! Serving sockets: the one accept loop every server of the sidecar uses (proxy listeners, the
//! admin endpoint) and the one way an HTTP/1.1 connection is served until shutdown. Not for what
//! a connection's requests mean.

use std::{future::Future, net::SocketAddr, time::Duration};

use hyper::{
    body::{Body, Incoming},
    service::HttpService,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
};

use crate::Shutdown;

/// How long accepting pauses after an error (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `shutdown`, and runs `serve` on each in its own task
/// (TCP_NODELAY set: answers are small and must not wait for the peer's delayed ACK). An accept
/// error is logged and retried after a short pause; the loop never spins.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    name: &str,
    shutdown: Shutdown,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.signalled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracing::trace!(listener = name, %peer, "accepted");
                tokio::spawn(serve(stream, peer));
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves HTTP/1.1 (keep-alive) on `io` with `svc` until the peer closes or `shutdown`; then
/// the request in flight is answered and the connection closed.
pub async fn serve_http1<I, S, B>(io: I, svc: S, shutdown: Shutdown)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        }
        () = shutdown.signalled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
