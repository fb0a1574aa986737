//! The gRPC server's accepted connections: at most `max_connections` served at once (one more
//! is closed as it arrives and counted, so a connection flood cannot take the sidecar's memory
//! or file descriptors), TCP_NODELAY set on each (small unary answers must not wait for the
//! peer's delayed ACK). Not for what is spoken on them.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use outrigger_core::ServerLimits;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::OwnedSemaphorePermit,
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long accepting pauses after an error (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// An accepted connection holding one of the server's connection slots until it closes.
pub(crate) struct Conn {
    io: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// The connections of `listener`, within `limits`.
pub(crate) fn accept(
    listener: TcpListener,
    limits: ServerLimits,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    futures_util::stream::unfold((listener, limits), |(listener, limits)| async move {
        loop {
            match listener.accept().await {
                Ok((io, peer)) => {
                    let Some(slot) = limits.try_slot() else {
                        tracing::debug!(server = "grpc", %peer, "connection limit reached; closing a new connection");
                        continue;
                    };
                    let _ = io.set_nodelay(true);
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

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
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
