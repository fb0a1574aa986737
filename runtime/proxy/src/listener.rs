//! Listeners: serving any accepted byte stream (an in-process duplex or a TCP connection) in
//! the listener's protocol — HTTP/1.1, HTTP/2, Bolt or Dubbo, or for `auto` whichever the first
//! bytes announce — and the accept loops of listeners bound to real sockets. Each connection gets a
//! tracing span and closes gracefully on shutdown. Not for what happens to a request (see
//! `forward` and `xproto`).

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes, BytesMut};
use hyper::service::service_fn;
use outrigger_codec::{Sniffed, sniff};
use outrigger_config::{DEFAULT_MAX_CONCURRENT_STREAMS, ListenerConfig, ListenerTlsMode, Protocol};
use outrigger_core::{accept_loop, serve_http1, serve_http2};
use outrigger_pool::{Bolt, Dubbo, Io};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpListener,
    runtime::Handle,
    task::JoinHandle,
};
use tracing::Instrument;

use crate::{
    http,
    limits::{SocketLimits, until},
    mesh::{self, Accepted},
    passthrough,
    snapshot::Shared,
    xproto,
};

/// Serves the requests arriving on `io` for the named listener, in the listener's protocol,
/// until the peer closes or the sidecar shuts down (then in-flight requests finish first).
/// `peer` is the caller's SPIFFE id on a mutual TLS connection.
pub(crate) async fn serve<I: Io>(
    io: I,
    listener: Arc<str>,
    shared: Arc<Shared>,
    limits: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    let protocol = shared.live.load().listener_protocol(&listener);
    match protocol {
        Protocol::Http => serve_http(io, listener, shared, limits, peer).await,
        Protocol::Http2 => serve_h2(io, listener, shared, limits, peer).await,
        Protocol::Bolt => {
            xproto::serve::<Bolt, I>(io, BytesMut::new(), listener, shared, limits, peer).await;
        }
        Protocol::Dubbo => {
            xproto::serve::<Dubbo, I>(io, BytesMut::new(), listener, shared, limits, peer).await;
        }
        Protocol::Auto => serve_auto(io, listener, shared, limits, peer).await,
    }
}

/// Reads until the first bytes tell the protocol, then serves the connection in it. A socket
/// client gets the header read timeout to send them.
async fn serve_auto<I: Io>(
    mut io: I,
    listener: Arc<str>,
    shared: Arc<Shared>,
    limits: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = limits
        .as_ref()
        .and_then(|l| tokio::time::Instant::now().checked_add(l.server.header_read_timeout));
    let sniffed = loop {
        if let Some(s) = sniff(&buf) {
            break s;
        }
        tokio::select! {
            read = io.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = shared.shutdown.signalled() => return,
            () = until(deadline) => {
                if let Some(l) = &limits {
                    l.server.fired("sniff_timeout");
                }
                tracing::debug!(listener = %listener, "no protocol told within the header read timeout; closing");
                return;
            }
        }
    };
    tracing::trace!(listener = %listener, protocol = ?sniffed, "sniffed");
    match sniffed {
        // HTTP reads the sniffed bytes again: they are the request line or the preface.
        Sniffed::Http => {
            let io = Prefixed::new(buf.freeze(), io);
            serve_http(io, listener, shared, limits, peer).await;
        }
        Sniffed::Http2 => {
            let io = Prefixed::new(buf.freeze(), io);
            serve_h2(io, listener, shared, limits, peer).await;
        }
        Sniffed::Bolt => xproto::serve::<Bolt, I>(io, buf, listener, shared, limits, peer).await,
        Sniffed::Dubbo => {
            xproto::serve::<Dubbo, I>(io, buf, listener, shared, limits, peer).await;
        }
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Serves HTTP/1.1 requests arriving on `io` for the named listener until the peer closes or
/// the sidecar shuts down (then in-flight requests finish first).
async fn serve_http<I: Io>(
    io: I,
    listener: Arc<str>,
    shared: Arc<Shared>,
    limits: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    let span = tracing::debug_span!("proxy_conn", listener = %listener);
    let shutdown = shared.shutdown.clone();
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        let listener = listener.clone();
        if let Some(id) = &peer {
            req.extensions_mut().insert(http::PeerIdentity(id.clone()));
        }
        async move { Ok::<_, Infallible>(http::handle(&shared, &listener, req).await) }
    });
    serve_http1(io, svc, limits.as_ref().map(|l| &l.server), shutdown)
        .instrument(span)
        .await;
}

/// Serves HTTP/2 streams arriving on `io` for the named listener, each forwarded as it is to an
/// `http2` cluster (see `passthrough`), until the peer closes or the sidecar shuts down (then
/// streams in flight finish first).
async fn serve_h2<I: Io>(
    io: I,
    listener: Arc<str>,
    shared: Arc<Shared>,
    limits: Option<Arc<SocketLimits>>,
    peer: Option<Arc<str>>,
) {
    let span = tracing::debug_span!("proxy_conn", listener = %listener, protocol = "http2");
    let shutdown = shared.shutdown.clone();
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (shared, listener, peer) = (shared.clone(), listener.clone(), peer.clone());
        async move {
            Ok::<_, Infallible>(
                passthrough::serve_stream(&shared, &listener, peer.as_ref(), req).await,
            )
        }
    });
    serve_http2(
        io,
        svc,
        limits.as_ref().map(|l| &l.server),
        DEFAULT_MAX_CONCURRENT_STREAMS,
        shutdown,
    )
    .instrument(span)
    .await;
}

/// Why a TLS listener cannot be served.
pub(crate) fn no_identity(listener: &str) -> String {
    format!(
        "listeners {listener}: tls needs the sidecar's identity, which is loaded at start (set `identity` and restart)"
    )
}

/// A listener bound to a real socket, with its accept loop. The socket outlives a rename or a
/// change of limits: the accept loop is restarted on it, so a reload never has to bind an
/// address the sidecar already holds.
/// A listener's address, bound once per worker (see `outrigger_core::Workers`): each socket is
/// accepted on by its own worker, and a connection is served where it was accepted.
pub(crate) struct BoundListener {
    cfg: ListenerConfig,
    sockets: Vec<(Arc<TcpListener>, Handle)>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl BoundListener {
    pub(crate) async fn bind(l: &ListenerConfig, shared: Arc<Shared>) -> Result<Self, String> {
        if l.tls.is_some() && shared.identity.is_none() {
            return Err(no_identity(&l.name));
        }
        let address = l.address.clone().unwrap_or_default();
        let sockets = shared
            .workers
            .bind(&address)
            .await
            .map_err(|e| format!("listeners {}: cannot bind {address}: {e}", l.name))?;
        let local = sockets
            .first()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(|e| format!("listeners {}: {e}", l.name))?
            .ok_or_else(|| format!("listeners {}: no worker to accept on", l.name))?;
        tracing::info!(listener = %l.name, address = %local, workers = sockets.len(), "proxy listener bound");
        let mut bound = Self {
            cfg: l.clone(),
            sockets: sockets
                .into_iter()
                .map(Arc::new)
                .zip(shared.workers.handles().iter().cloned())
                .collect(),
            local,
            tasks: Vec::new(),
        };
        bound.start(l, &shared);
        Ok(bound)
    }

    /// Starts accepting for `l` on every socket, each on its worker, with limits they share.
    fn start(&mut self, l: &ListenerConfig, shared: &Arc<Shared>) {
        let limits = Arc::new(SocketLimits::of(l, shared));
        let name: Arc<str> = Arc::from(l.name.as_str());
        let tls = l.tls.as_ref().map(|t| t.mode);
        self.tasks = self
            .sockets
            .iter()
            .map(|(socket, worker)| {
                worker.spawn(accept(
                    socket.clone(),
                    name.clone(),
                    limits.clone(),
                    tls,
                    shared.clone(),
                ))
            })
            .collect();
    }

    fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }

    /// Whether this socket was bound for the address `l` asks for.
    pub(crate) fn holds(&self, l: &ListenerConfig) -> bool {
        self.cfg.address == l.address
    }

    /// Serves `l` on this socket from now on (a renamed listener, changed limits); connections
    /// already accepted keep being served as they were.
    pub(crate) fn adopt(&mut self, l: &ListenerConfig, shared: Arc<Shared>) {
        if self.cfg == *l {
            return;
        }
        self.stop();
        tracing::info!(listener = %l.name, was = %self.cfg.name, address = %self.local, "proxy listener socket kept for the new config");
        self.start(l, &shared);
        self.cfg = l.clone();
    }

    pub(crate) fn name(&self) -> &str {
        &self.cfg.name
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for BoundListener {
    fn drop(&mut self) {
        // Stops accepting; connections already accepted keep being served.
        self.stop();
    }
}

async fn accept(
    socket: Arc<TcpListener>,
    name: Arc<str>,
    limits: Arc<SocketLimits>,
    tls: Option<ListenerTlsMode>,
    shared: Arc<Shared>,
) {
    let shutdown = shared.shutdown.clone();
    let server = limits.server.clone();
    accept_loop(&socket, &server, shutdown, |stream, peer| {
        let (name, shared, limits) = (name.clone(), shared.clone(), limits.clone());
        async move {
            let Some(mode) = tls else {
                serve(stream, name, shared, Some(limits), None).await;
                return;
            };
            let Some(identity) = shared.identity.clone() else {
                // `apply` refuses such a config; never fall back to plaintext.
                tracing::error!(listener = %name, "{}", no_identity(&name));
                return;
            };
            let timeout = limits.server.header_read_timeout;
            let accepted = mesh::accept(
                stream,
                peer,
                &name,
                mode,
                &identity,
                &shared.metrics,
                timeout,
            )
            .await;
            match accepted {
                Some(Accepted::Tls(io, id)) => {
                    serve(io, name, shared, Some(limits), Some(id.shared())).await;
                }
                Some(Accepted::Plain(stream)) => {
                    serve(stream, name, shared, Some(limits), None).await;
                }
                None => {}
            }
        }
    })
    .await;
}
