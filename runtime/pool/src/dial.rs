//! Where a pool's connections go — a TCP address, a unix socket, or a named listener in this
//! process — and opening a raw byte stream to a socket, for pools that run their own protocol on
//! it (hyper's HTTP/1.1, Bolt, Dubbo); a named listener takes decoded requests instead (see
//! `local`). Not for what is spoken on the stream.

use std::{future::Future, io, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::local::{LocalListeners, LocalMux, LocalWire};

/// Any byte stream a pool can speak on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Where connections go.
#[derive(Clone)]
pub enum Dial {
    /// A named listener in this process: decoded requests handed over, no socket.
    InProcess {
        /// The listeners of this process.
        listeners: Arc<dyn LocalListeners>,
        /// The listener's name.
        name: String,
    },
    /// A TCP address.
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// How long a connect may take (the TCP connect and, with `secure`, the handshake).
        connect_timeout: Duration,
        /// Wraps the connection (mutual TLS) before anything is spoken on it; plaintext when
        /// `None`.
        secure: Option<Arc<dyn Secure>>,
    },
    /// A unix socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dial::InProcess { name, .. } => write!(f, "listener {name}"),
            Dial::Tcp { addr, .. } => write!(f, "{addr}"),
            Dial::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A stream being secured.
pub type Securing<'a> =
    std::pin::Pin<Box<dyn Future<Output = io::Result<Box<dyn Io>>> + Send + 'a>>;

/// Turns a fresh TCP connection into a secured stream (the proxy core's mutual TLS). A pool
/// knows nothing of TLS; it only calls this once per connection it opens.
pub trait Secure: Send + Sync + 'static {
    /// Secures `stream`, connected to `addr`.
    fn secure(&self, stream: tokio::net::TcpStream, addr: SocketAddr) -> Securing<'_>;
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be opened.
    #[error("connect to {target} failed: {source}")]
    Io {
        /// Where it went.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The connect timeout passed.
    #[error("connect to {target} timed out after {ms} ms")]
    Timeout {
        /// Where it went.
        target: String,
        /// The timeout.
        ms: u128,
    },
    /// Securing the connection (the TLS handshake) failed.
    #[error("tls handshake with {target} failed: {source}")]
    Secure {
        /// Where it went.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The HTTP/1.1 handshake failed.
    #[error("http/1.1 handshake with {target} failed: {source}")]
    Handshake {
        /// Where it went.
        target: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// Opens byte streams for a pool. [`Dial`] is the real one; tests open in-memory pipes.
pub trait Open: Send + Sync + 'static {
    /// Opens one stream.
    fn open(&self) -> impl Future<Output = Result<Box<dyn Io>, ConnectError>> + Send;
    /// Where streams go, for logs and errors.
    fn target(&self) -> String;
    /// The hand-off in protocol `W` when the target is a named listener of this process, which
    /// takes decoded frames instead of a stream; `None` for a target reached by a stream.
    fn local<W: LocalWire>(&self) -> Option<io::Result<Arc<dyn LocalMux<W>>>> {
        None
    }
}

impl Open for Dial {
    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        let target = || self.to_string();
        Ok(match self {
            Dial::InProcess { .. } => {
                // Pools hand named listeners decoded requests (`local`), never a stream.
                return Err(ConnectError::Io {
                    target: target(),
                    source: io::Error::new(
                        io::ErrorKind::Unsupported,
                        "a listener of this process takes decoded requests, not a byte stream",
                    ),
                });
            }
            Dial::Tcp {
                addr,
                connect_timeout,
                secure,
            } => {
                let started = tokio::time::Instant::now();
                let stream = match tokio::time::timeout(
                    *connect_timeout,
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                {
                    Err(_) => {
                        return Err(ConnectError::Timeout {
                            target: target(),
                            ms: connect_timeout.as_millis(),
                        });
                    }
                    Ok(r) => r.map_err(|source| ConnectError::Io {
                        target: target(),
                        source,
                    })?,
                };
                let _ = stream.set_nodelay(true);
                match secure {
                    None => Box::new(stream),
                    Some(secure) => {
                        let left = connect_timeout.saturating_sub(started.elapsed());
                        match tokio::time::timeout(left, secure.secure(stream, *addr)).await {
                            Err(_) => {
                                return Err(ConnectError::Timeout {
                                    target: target(),
                                    ms: connect_timeout.as_millis(),
                                });
                            }
                            Ok(r) => r.map_err(|source| ConnectError::Secure {
                                target: target(),
                                source,
                            })?,
                        }
                    }
                }
            }
            Dial::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(
                |source| ConnectError::Io {
                    target: target(),
                    source,
                },
            )?),
        })
    }

    fn target(&self) -> String {
        self.to_string()
    }

    fn local<W: LocalWire>(&self) -> Option<io::Result<Arc<dyn LocalMux<W>>>> {
        match self {
            Dial::InProcess { listeners, name } => Some(W::local(listeners.as_ref(), name)),
            Dial::Tcp { .. } | Dial::Unix(_) => None,
        }
    }
}
