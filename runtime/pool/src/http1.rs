//! HTTP/1.1 over a pooled connection: how a connection is dialled (TCP, unix socket, or a named
//! in-process listener) and one request/response exchange with a bounded, fully read body.
//! Shared by the HTTP channel and the proxy core's upstreams, which differ only in how they
//! classify errors. A connection to a named in-process listener hands the decoded request to the
//! proxy core directly instead of writing HTTP/1.1 through an in-memory pipe: it still takes a
//! pool slot like any connection, and the proxy core treats the request exactly as one its
//! listener decoded.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use outrigger_core::{BoxError, Cause, Failure, ProxyError, StreamBody};
use tokio::time::Instant;

use crate::{
    bounded::{Connector, Pool, PoolError, Pooled},
    dial::{ConnectError, Dial, Open},
    local::LocalHttp,
};

/// Opens HTTP/1.1 client connections.
pub struct Http1Connector {
    /// Where connections go.
    pub dial: Dial,
}

/// One pooled HTTP connection.
pub enum Http1Conn {
    /// HTTP/1.1 on a socket.
    Wire(SendRequest<StreamBody>),
    /// A named listener in this process, reached without a socket.
    InProcess(Arc<dyn LocalHttp>),
}

impl Connector for Http1Connector {
    type Conn = Http1Conn;
    type Error = ConnectError;

    async fn connect(&self) -> Result<Self::Conn, ConnectError> {
        if let Dial::InProcess { listeners, name } = &self.dial {
            return listeners
                .http(name)
                .map(Http1Conn::InProcess)
                .map_err(|source| ConnectError::Io {
                    target: self.dial.to_string(),
                    source,
                });
        }
        let io = self.dial.open().await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ConnectError::Handshake {
                target: self.dial.to_string(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http/1.1 client connection ended");
            }
        });
        Ok(Http1Conn::Wire(sender))
    }

    fn is_open(conn: &Self::Conn) -> bool {
        match conn {
            Http1Conn::Wire(sender) => !sender.is_closed(),
            Http1Conn::InProcess(listener) => listener.is_open(),
        }
    }
}

/// A pool of HTTP/1.1 connections.
pub type Http1Pool = Pool<Http1Connector>;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No connection: the pool stayed full, or connecting failed.
    #[error(transparent)]
    Pool(#[from] PoolError<ConnectError>),
    /// The connection failed after the request was handed to it.
    #[error("connection to {target} failed: {source}")]
    Reset {
        target: String,
        #[source]
        source: hyper::Error,
    },
    /// The deadline passed before the response was complete.
    #[error("no complete response from {target} before the deadline")]
    Timeout { target: String },
    /// The in-process listener answered with the proxy's own failure (no route, no healthy
    /// host, an upstream failure); its message is the proxy's.
    #[error(transparent)]
    Local(ProxyError),
}

impl Failure for ExchangeError {
    fn cause(&self) -> Cause {
        match self {
            ExchangeError::Pool(e) => e.cause(),
            ExchangeError::Reset { .. } => Cause::Reset,
            ExchangeError::Timeout { .. } => Cause::Timeout,
            ExchangeError::Local(e) => e.cause(),
        }
    }
}

/// Sends `req` on a pooled connection by `deadline` and returns the response as soon as its
/// head arrived; the body streams from the connection as the caller reads it, and the
/// connection goes back to the pool only once the body is read to its end (so `size` still
/// bounds the connections in use). Reading the body past `deadline` fails. A request that a
/// reused connection refused before sending anything (the peer had closed it while idle) is sent
/// once more on a fresh connection.
pub async fn exchange(
    pool: &Http1Pool,
    target: &Dial,
    req: Request<StreamBody>,
    deadline: Instant,
) -> Result<Response<StreamBody>, ExchangeError> {
    exchange_waited(pool, target, req, deadline, None).await
}

/// [`exchange`], also telling in `waited` (when asked) how long the request waited for a
/// connection of the pool (a trace shows it).
pub async fn exchange_waited(
    pool: &Http1Pool,
    target: &Dial,
    mut req: Request<StreamBody>,
    deadline: Instant,
    mut waited: Option<&mut Duration>,
) -> Result<Response<StreamBody>, ExchangeError> {
    loop {
        let asked = waited.is_some().then(Instant::now);
        let mut conn = pool.get(deadline).await?;
        if let (Some(w), Some(asked)) = (waited.as_deref_mut(), asked) {
            *w += asked.elapsed();
        }
        let reused = conn.reused();
        let sender = match &mut *conn {
            Http1Conn::Wire(sender) => sender,
            Http1Conn::InProcess(listener) => {
                let answer = tokio::time::timeout_at(deadline, listener.dispatch(req)).await;
                return match answer {
                    Ok(resp) => {
                        // Nothing is held for the body: the listener streams it from its own
                        // upstream connection.
                        conn.reuse();
                        resp.map_err(ExchangeError::Local)
                    }
                    Err(_) => Err(ExchangeError::Timeout {
                        target: target.to_string(),
                    }),
                };
            }
        };
        let ready = tokio::time::timeout_at(deadline, sender.ready()).await;
        match ready {
            Err(_) => {
                return Err(ExchangeError::Timeout {
                    target: target.to_string(),
                });
            }
            Ok(Err(_)) if reused => continue,
            Ok(Err(source)) => {
                return Err(ExchangeError::Reset {
                    target: target.to_string(),
                    source,
                });
            }
            Ok(Ok(())) => {}
        }
        let sent = tokio::time::timeout_at(deadline, sender.try_send_request(req)).await;
        let resp = match sent {
            Err(_) => {
                return Err(ExchangeError::Timeout {
                    target: target.to_string(),
                });
            }
            Ok(Err(mut e)) => match e.take_message() {
                Some(unsent) if reused => {
                    req = unsent;
                    continue;
                }
                _ => {
                    return Err(ExchangeError::Reset {
                        target: target.to_string(),
                        source: e.into_error(),
                    });
                }
            },
            Ok(Ok(resp)) => resp,
        };
        let (parts, body) = resp.into_parts();
        let body = PooledBody {
            body,
            conn: Some(conn),
            deadline,
            timer: None,
            // Named only in an error: formatted then, not on every exchange.
            target: target.clone(),
        };
        return Ok(Response::from_parts(parts, body.boxed_unsync()));
    }
}

/// A response body streamed from a pooled connection, which it holds until the body ends (then
/// the connection is reused) or fails or is dropped (then the connection is closed: it may
/// have unread bytes on it).
struct PooledBody {
    body: Incoming,
    conn: Option<Pooled<Http1Connector>>,
    deadline: Instant,
    /// The deadline's timer, made only once the body is found waiting: a body that has
    /// arrived with its head (most do) costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    target: Dial,
}

/// Why a streamed response body failed (the error inside a body's `BoxError`).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed mid-body.
    #[error("reading the response body from {target} failed: {source}")]
    Read {
        /// Where the body came from.
        target: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The deadline passed before the body ended (an upstream stalled mid-body).
    #[error("the response body from {target} did not end before the deadline")]
    Timeout {
        /// Where the body came from.
        target: String,
    },
}

impl Failure for BodyError {
    fn cause(&self) -> Cause {
        match self {
            BodyError::Read { .. } => Cause::Reset,
            BodyError::Timeout { .. } => Cause::Timeout,
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some(conn) = this.conn.take() {
                    conn.reuse();
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(source))) => {
                this.conn = None;
                Poll::Ready(Some(Err(Box::new(BodyError::Read {
                    target: this.target.to_string(),
                    source,
                }))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                // A reader that trusts `is_end_stream` (hyper does) never polls again after
                // the last frame: give the connection back now.
                if this.body.is_end_stream()
                    && let Some(conn) = this.conn.take()
                {
                    conn.reuse();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if this.conn.is_some() && timer.as_mut().poll(cx).is_ready() {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(BodyError::Timeout {
                        target: this.target.to_string(),
                    }))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::{io, time::Duration};

    use futures_util::future::BoxFuture;
    use outrigger_core::Metrics;
    use parking_lot::Mutex;

    use super::*;
    use crate::{bounded::PoolSettings, local::LocalListeners};

    /// What the fake listener does with a request.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Echo,
        Fail(Cause),
        Hang,
    }

    struct Listener {
        behaviour: Behaviour,
        seen: Mutex<Vec<String>>,
    }

    impl LocalHttp for Listener {
        fn dispatch(
            &self,
            req: Request<StreamBody>,
        ) -> BoxFuture<'_, Result<Response<StreamBody>, ProxyError>> {
            self.seen.lock().push(req.uri().path().to_owned());
            let behaviour = self.behaviour;
            Box::pin(async move {
                match behaviour {
                    Behaviour::Echo => Ok(Response::new(req.into_body())),
                    Behaviour::Fail(c) => Err(ProxyError::new(c, "the proxy says no")),
                    Behaviour::Hang => std::future::pending().await,
                }
            })
        }

        fn is_open(&self) -> bool {
            true
        }
    }

    struct Listeners(Arc<Listener>);

    impl LocalListeners for Listeners {
        fn http(&self, name: &str) -> io::Result<Arc<dyn LocalHttp>> {
            match name {
                "egress" => Ok(self.0.clone()),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such listener")),
            }
        }

        fn bolt(&self, _: &str) -> io::Result<Arc<dyn crate::LocalMux<crate::Bolt>>> {
            Err(io::Error::other("http only"))
        }

        fn dubbo(&self, _: &str) -> io::Result<Arc<dyn crate::LocalMux<crate::Dubbo>>> {
            Err(io::Error::other("http only"))
        }
    }

    fn setup(behaviour: Behaviour, name: &str) -> (Http1Pool, Dial, Arc<Listener>) {
        let listener = Arc::new(Listener {
            behaviour,
            seen: Mutex::new(Vec::new()),
        });
        let dial = Dial::InProcess {
            listeners: Arc::new(Listeners(listener.clone())),
            name: name.to_owned(),
        };
        let pool = Http1Pool::new(
            PoolSettings {
                name: "test".to_owned(),
                size: 1,
                idle_timeout: Duration::from_secs(60),
            },
            Http1Connector { dial: dial.clone() },
            &Metrics::new(),
        );
        (pool, dial, listener)
    }

    fn req(path: &str) -> Request<StreamBody> {
        Request::builder()
            .uri(path)
            .body(outrigger_core::full_body(Bytes::from_static(b"payload")))
            .expect("request")
    }

    #[tokio::test(start_paused = true)]
    async fn an_in_process_listener_answers_without_a_socket() {
        let (pool, dial, listener) = setup(Behaviour::Echo, "egress");
        let deadline = Instant::now() + Duration::from_secs(1);
        for path in ["/a", "/b"] {
            let resp = exchange(&pool, &dial, req(path), deadline)
                .await
                .expect("answered");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, "payload");
        }
        assert_eq!(*listener.seen.lock(), ["/a", "/b"], "one slot, reused");
    }

    #[tokio::test(start_paused = true)]
    async fn the_proxys_own_failure_comes_back_typed() {
        let (pool, dial, _) = setup(Behaviour::Fail(Cause::NoRoute), "egress");
        let err = exchange(
            &pool,
            &dial,
            req("/a"),
            Instant::now() + Duration::from_secs(1),
        )
        .await
        .expect_err("no route");
        assert_eq!(err.cause(), Cause::NoRoute);
        assert!(matches!(&err, ExchangeError::Local(p) if p.message() == "the proxy says no"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_listener_is_a_connect_failure_and_a_silent_one_times_out() {
        let (pool, dial, _) = setup(Behaviour::Echo, "nowhere");
        let err = exchange(
            &pool,
            &dial,
            req("/a"),
            Instant::now() + Duration::from_secs(1),
        )
        .await
        .expect_err("no listener");
        assert_eq!(err.cause(), Cause::ConnectFailure);
        assert!(err.to_string().contains("listener nowhere"), "{err}");

        let (pool, dial, _) = setup(Behaviour::Hang, "egress");
        let start = Instant::now();
        let err = exchange(&pool, &dial, req("/a"), start + Duration::from_millis(250))
            .await
            .expect_err("deadline");
        assert_eq!(err.cause(), Cause::Timeout);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // The slot went back with the abandoned call: the next caller is not stuck behind it.
        let err = exchange(
            &pool,
            &dial,
            req("/b"),
            Instant::now() + Duration::from_millis(10),
        )
        .await
        .expect_err("still silent");
        assert_eq!(err.cause(), Cause::Timeout, "{err}");
    }

    #[tokio::test]
    async fn a_connection_goes_back_once_its_body_is_read_as_hyper_reads_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use http_body::Body as _;
        use tokio::net::TcpListener;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from_static(b"1 KiB or so"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        let dial = Dial::Tcp {
            addr,
            connect_timeout: Duration::from_secs(1),
            secure: None,
        };
        let pool = Http1Pool::new(
            PoolSettings {
                name: "test".to_owned(),
                size: 4,
                idle_timeout: Duration::from_secs(60),
            },
            Http1Connector { dial: dial.clone() },
            &Metrics::new(),
        );
        for _ in 0..5 {
            let resp = exchange(
                &pool,
                &dial,
                req("/a"),
                Instant::now() + Duration::from_secs(2),
            )
            .await
            .expect("answered");
            // Read as hyper's server does: frames until the body says it has ended, then drop.
            let mut body = resp.into_body();
            while !body.is_end_stream() {
                match body.frame().await {
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            drop(body);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
    }
}
