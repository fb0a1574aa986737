//! Listeners: serving any accepted byte stream (an in-process duplex or a TCP connection) in
//! the listener's protocol — HTTP/1.1, Bolt or Dubbo, or for `auto` whichever the first bytes
//! announce — and the accept loops of listeners bound to real sockets. Each connection gets a
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
use outrigger_config::{ListenerConfig, Protocol};
use outrigger_core::{accept_loop, serve_http1};
use outrigger_pool::{Bolt, Dubbo, Io};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpListener,
    task::JoinHandle,
};
use tracing::Instrument;

use crate::{http, snapshot::Shared, xproto};

/// Serves the requests arriving on `io` for the named listener, in the listener's protocol,
/// until the peer closes or the sidecar shuts down (then in-flight requests finish first).
pub(crate) async fn serve<I: Io>(io: I, listener: Arc<str>, shared: Arc<Shared>) {
    let protocol = shared.live.load().listener_protocol(&listener);
    match protocol {
        // Validation keeps http2 off listeners; such a listener would decode HTTP/1.1.
        Protocol::Http | Protocol::Http2 => serve_http(io, listener, shared).await,
        Protocol::Bolt => xproto::serve::<Bolt, I>(io, BytesMut::new(), listener, shared).await,
        Protocol::Dubbo => xproto::serve::<Dubbo, I>(io, BytesMut::new(), listener, shared).await,
        Protocol::Auto => serve_auto(io, listener, shared).await,
    }
}

/// Reads until the first bytes tell the protocol, then serves the connection in it.
async fn serve_auto<I: Io>(mut io: I, listener: Arc<str>, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(1024);
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
        }
    };
    tracing::trace!(listener = %listener, protocol = ?sniffed, "sniffed");
    match sniffed {
        Sniffed::Http => serve_http(Prefixed::new(buf.freeze(), io), listener, shared).await,
        Sniffed::Bolt => xproto::serve::<Bolt, I>(io, buf, listener, shared).await,
        Sniffed::Dubbo => xproto::serve::<Dubbo, I>(io, buf, listener, shared).await,
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
async fn serve_http<I: Io>(io: I, listener: Arc<str>, shared: Arc<Shared>) {
    let span = tracing::debug_span!("proxy_conn", listener = %listener);
    let shutdown = shared.shutdown.clone();
    let svc = service_fn(move |req| {
        let shared = shared.clone();
        let listener = listener.clone();
        async move { Ok::<_, Infallible>(http::handle(&shared, &listener, req).await) }
    });
    serve_http1(io, svc, shutdown).instrument(span).await;
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
    let shutdown = shared.shutdown.clone();
    accept_loop(socket, &name.clone(), shutdown, |stream, _| {
        serve(stream, name.clone(), shared.clone())
    })
    .await;
}
