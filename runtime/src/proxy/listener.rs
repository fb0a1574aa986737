//! Listeners: serving HTTP/1.1 on any accepted byte stream (an in-process duplex or a TCP
//! connection), and the accept loops of listeners bound to real sockets. Each connection gets a
//! tracing span and closes gracefully on shutdown. Not for what happens to a request (see
//! `forward`).

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use outrigger_config::ListenerConfig;
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::Instrument;

use super::{Shared, forward};
use crate::pool::http1::Io;

/// Serves HTTP/1.1 requests arriving on `io` for the named listener until the peer closes or
/// the sidecar shuts down (then in-flight requests finish first).
pub(crate) async fn serve<I: Io>(io: I, listener: Arc<str>, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let span = tracing::debug_span!("proxy_conn", listener = %listener);
    let svc = {
        let shared = shared.clone();
        let listener = listener.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let listener = listener.clone();
            async move { Ok::<_, Infallible>(forward::handle(&shared, &listener, req).await) }
        })
    };
    async move {
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "proxy connection ended with an error");
                }
            }
            _ = crate::sidecar::until_shutdown(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
    .instrument(span)
    .await
}

/// A listener bound to a real socket, with its accept loop.
pub(crate) struct BoundListener {
    name: String,
    address: String,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl BoundListener {
    pub(crate) async fn bind(l: &ListenerConfig, shared: Arc<Shared>) -> Result<Self, String> {
        let address = l.address.clone().unwrap_or_default();
        let socket = TcpListener::bind(&address)
            .await
            .map_err(|e| format!("listeners {}: cannot bind {address}: {e}", l.name))?;
        let local = socket
            .local_addr()
            .map_err(|e| format!("listeners {}: {e}", l.name))?;
        let name: Arc<str> = Arc::from(l.name.as_str());
        tracing::info!(listener = %name, address = %local, "proxy listener bound");
        let task = tokio::spawn(accept(socket, name, shared));
        Ok(Self {
            name: l.name.clone(),
            address,
            local,
            task,
        })
    }

    /// Whether this socket serves the listener as configured.
    pub(crate) fn is(&self, l: &ListenerConfig) -> bool {
        self.name == l.name && Some(&self.address) == l.address.as_ref()
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        // Stops accepting; connections already accepted keep being served.
        self.task.abort();
    }
}

async fn accept(socket: TcpListener, name: Arc<str>, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            _ = crate::sidecar::until_shutdown(&mut shutdown) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tracing::trace!(listener = %name, %peer, "accepted");
                tokio::spawn(serve(stream, name.clone(), shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep listening.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
