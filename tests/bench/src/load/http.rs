//! The HTTP/1.1 load client: one keep-alive connection per worker (hyper's client connection,
//! no pool in front), reconnecting when the server closes it. Each call is `GET /bench` and must
//! come back `200` with the full 1 KiB body.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::CallError;
use crate::servers::BODY_LEN;

/// One keep-alive connection to an HTTP/1.1 server.
pub(crate) struct HttpConn {
    addr: SocketAddr,
    host: HeaderValue,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl HttpConn {
    /// Connects to `addr`.
    pub(crate) async fn connect(addr: SocketAddr) -> Result<Self, CallError> {
        let host = HeaderValue::from_str(&addr.to_string())
            .map_err(|e| CallError::Other(format!("host header: {e}")))?;
        let sender = Some(open(addr).await?);
        Ok(Self { addr, host, sender })
    }

    /// One request and its whole response.
    pub(crate) async fn call(&mut self) -> Result<(), CallError> {
        let sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => open(self.addr).await?,
        };
        let mut sender = sender;
        sender.ready().await.map_err(CallError::Http)?;
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = http::Uri::from_static("/bench");
        req.headers_mut().insert(header::HOST, self.host.clone());
        let resp = sender.send_request(req).await.map_err(CallError::Http)?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(CallError::Http)?.to_bytes();
        let closing = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing {
            self.sender = Some(sender);
        }
        if !parts.status.is_success() {
            return Err(CallError::Status(parts.status.as_u16(), quote(&body)));
        }
        if body.len() != BODY_LEN {
            return Err(CallError::BodyLength(body.len()));
        }
        Ok(())
    }
}

async fn open(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, CallError> {
    let stream = TcpStream::connect(addr).await.map_err(CallError::Connect)?;
    stream.set_nodelay(true).map_err(CallError::Connect)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(CallError::Http)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn quote(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}
