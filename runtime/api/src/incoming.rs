//! The gRPC server's accepted connections, on TCP or a unix socket: at most `max_connections`
//! served at once across every socket of the server (one more is closed as it arrives and
//! counted, so a connection flood cannot take the sidecar's memory or file descriptors),
//! TCP_NODELAY set on each TCP one (small unary answers must not wait for the peer's delayed
//! ACK). Not for what is spoken on them.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use outrigger_core::ServerLimits;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::OwnedSemaphorePermit,
};
use tonic::transport::server::Connected;

/// How long accepting pauses after an error (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An accepted connection holding one of the server's connection slots until it closes.
pub(crate) struct Conn<T> {
    io: T,
    _slot: OwnedSemaphorePermit,
}

/// A listening socket the gRPC server accepts on.
pub(crate) trait Listen: Send + 'static {
    /// An accepted connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The next connection, made ready to serve, and who it is from (for logs).
    fn next(&self) -> impl Future<Output = io::Result<(Self::Io, String)>> + Send;
}

impl Listen for TcpListener {
    type Io = TcpStream;
    async fn next(&self) -> io::Result<(TcpStream, String)> {
        let (io, peer) = self.accept().await?;
        let _ = io.set_nodelay(true);
        Ok((io, peer.to_string()))
    }
}

impl Listen for UnixListener {
    type Io = UnixStream;
    async fn next(&self) -> io::Result<(UnixStream, String)> {
        let (io, _) = self.accept().await?;
        Ok((io, "unix socket".to_owned()))
    }
}

/// The connections of `listener`, within `limits`.
pub(crate) fn accept<L: Listen>(
    listener: L,
    limits: ServerLimits,
) -> impl Stream<Item = io::Result<Conn<L::Io>>> + Send + 'static {
    futures_util::stream::unfold((listener, limits), |(listener, limits)| async move {
        loop {
            match listener.next().await {
                Ok((io, peer)) => {
                    let Some(slot) = limits.try_slot() else {
                        tracing::debug!(server = "grpc", %peer, "connection limit reached; closing a new connection");
                        continue;
                    };
                    return Some((Ok(Conn { io, _slot: slot }), (listener, limits)));
                }
                Err(e) => {
                    tracing::warn!(server = "grpc", error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

impl<T: Connected> Connected for Conn<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> T::ConnectInfo {
        self.io.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
