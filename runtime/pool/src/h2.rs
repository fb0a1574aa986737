//! HTTP/2 without TLS (h2c) to one upstream host, for requests whose bodies stream both ways
//! (gRPC calls): one multiplexed connection, opened on first use and opened again once it
//! closed, and a bound on the streams open at once, each holding its permit until its response
//! body has ended or been dropped. Not for HTTP/1.1 (see `http1`) or for choosing a host.

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use outrigger_core::{Cause, Failure, StreamBody};
use tokio::{sync::Semaphore, time::Instant};

use crate::dial::{ConnectError, Dial, Open};

/// One h2c upstream host: a shared connection and a bound on concurrent streams.
pub struct H2Pool {
    dial: Dial,
    conn: tokio::sync::Mutex<Option<SendRequest<StreamBody>>>,
    streams: Arc<Semaphore>,
    max_streams: usize,
}

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection could be opened.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The HTTP/2 handshake failed (the host may not speak h2c).
    #[error("http/2 handshake with {target} failed: {source}")]
    Handshake {
        /// Where it went.
        target: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// Every stream slot stayed taken until the deadline.
    #[error("all {max} streams to {target} stayed busy until the deadline")]
    Exhausted {
        /// Where it went.
        target: String,
        /// The bound.
        max: usize,
    },
    /// The connection or stream failed before the response headers came.
    #[error("http/2 stream to {target} failed: {source}")]
    Reset {
        /// Where it went.
        target: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The response headers did not come before the deadline.
    #[error("no response headers from {target} before the deadline")]
    Timeout {
        /// Where it went.
        target: String,
    },
}

impl Failure for H2Error {
    fn cause(&self) -> Cause {
        match self {
            H2Error::Connect(ConnectError::Timeout { .. }) | H2Error::Connect(_) => {
                Cause::ConnectFailure
            }
            H2Error::Handshake { .. } => Cause::ConnectFailure,
            H2Error::Exhausted { .. } => Cause::Overflow,
            H2Error::Reset { .. } => Cause::Reset,
            H2Error::Timeout { .. } => Cause::Timeout,
        }
    }
}

impl H2Pool {
    /// A pool for the host `dial` reaches, with at most `max_streams` requests open at once.
    pub fn new(dial: Dial, max_streams: usize) -> Self {
        let max_streams = max_streams.max(1);
        Self {
            dial,
            conn: tokio::sync::Mutex::new(None),
            streams: Arc::new(Semaphore::new(max_streams)),
            max_streams,
        }
    }

    /// Sends `req` and waits for the response headers until `deadline`; the response body then
    /// streams as the upstream sends it (no deadline of its own: the caller's `grpc-timeout`
    /// travels with the request and the upstream enforces it).
    pub async fn send(
        &self,
        req: Request<StreamBody>,
        deadline: Instant,
    ) -> Result<Response<StreamBody>, H2Error> {
        let target = || self.dial.to_string();
        let permit = tokio::time::timeout_at(deadline, self.streams.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| H2Error::Exhausted {
                target: target(),
                max: self.max_streams,
            })?;
        let mut sender = tokio::time::timeout_at(deadline, self.sender())
            .await
            .map_err(|_| H2Error::Timeout { target: target() })??;
        tokio::time::timeout_at(deadline, sender.ready())
            .await
            .map_err(|_| H2Error::Timeout { target: target() })?
            .map_err(|source| H2Error::Reset {
                target: target(),
                source,
            })?;
        let resp = tokio::time::timeout_at(deadline, sender.send_request(req))
            .await
            .map_err(|_| H2Error::Timeout { target: target() })?
            .map_err(|source| H2Error::Reset {
                target: target(),
                source,
            })?;
        // The stream's slot is free again when its body has ended or was dropped.
        Ok(resp.map(move |body| {
            body.map_frame(move |frame| {
                let _held = &permit;
                frame
            })
            .map_err(Into::into)
            .boxed_unsync()
        }))
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<SendRequest<StreamBody>, H2Error> {
        let mut conn = self.conn.lock().await;
        if let Some(s) = conn.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let io = self.dial.open().await?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| H2Error::Handshake {
                target: self.dial.to_string(),
                source,
            })?;
        let target = self.dial.to_string();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%target, error = %e, "http/2 client connection ended");
            }
        });
        *conn = Some(sender.clone());
        Ok(sender)
    }
}
