//! Opening a raw byte stream to where a [`Dial`] points (a named in-process listener, a TCP
//! address or a unix socket), for pools that run their own protocol on it instead of hyper's
//! HTTP/1.1. Not for what is spoken on the stream.

use std::future::Future;

use super::http1::{ConnectError, Dial, Io};

/// Opens byte streams for a pool. [`Dial`] is the real one; tests open in-memory pipes.
pub(crate) trait Open: Send + Sync + 'static {
    /// Opens one stream.
    fn open(&self) -> impl Future<Output = Result<Box<dyn Io>, ConnectError>> + Send;
    /// Where streams go, for logs and errors.
    fn target(&self) -> String;
}

impl Open for Dial {
    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        let target = || self.to_string();
        Ok(match self {
            Dial::InProcess { listeners, name } => {
                Box::new(listeners.connect(name).map_err(|source| ConnectError::Io {
                    target: target(),
                    source,
                })?)
            }
            Dial::Tcp {
                addr,
                connect_timeout,
            } => {
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
                Box::new(stream)
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
}
