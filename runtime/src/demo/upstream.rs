//! The demo's sample upstream: a dubbo-go-style JSON-RPC 2.0 `UserProvider` served over
//! HTTP/1.1 at `POST /org.apache.dubbo.samples.UserProvider`, with `GetUser(id)` over a small
//! fixed table. Also a handy real upstream for tests.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

const USERS: [(&str, &str, u32); 4] = [
    ("A000", "Ada Kestrel", 31),
    ("A001", "Bo Lindqvist", 18),
    ("A002", "Chen Mei", 20),
    ("A003", "Dara Okafor", 30),
];

/// A running sample upstream; stops when dropped.
pub struct SampleUpstream {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for SampleUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SampleUpstream {
    /// Listens on `address` (`127.0.0.1:0` for any free port).
    pub async fn start(address: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc =
                        service_fn(|req| async move { Ok::<_, Infallible>(handle(req).await) });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { address, task })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

async fn handle(req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/org.apache.dubbo.samples.UserProvider" {
        return reply(
            StatusCode::NOT_FOUND,
            &rpc_error(&Value::Null, -32601, "no such service"),
        );
    }
    if req.method() != http::Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &rpc_error(&Value::Null, -32600, "JSON-RPC needs POST"),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &rpc_error(&Value::Null, -32700, "unreadable body"),
            );
        }
    };
    let Ok(call) = serde_json::from_slice::<Value>(&body) else {
        return reply(
            StatusCode::OK,
            &rpc_error(&Value::Null, -32700, "parse error"),
        );
    };
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    if call.get("method").and_then(Value::as_str) != Some("GetUser") {
        return reply(StatusCode::OK, &rpc_error(&id, -32601, "method not found"));
    }
    let wanted = call
        .get("params")
        .and_then(|p| p.get(0))
        .and_then(Value::as_str)
        .unwrap_or_default();
    match USERS.iter().find(|(uid, _, _)| *uid == wanted) {
        Some((uid, name, age)) => reply(
            StatusCode::OK,
            &json!({"jsonrpc": "2.0", "id": id, "result": {"id": uid, "name": name, "age": age}}),
        ),
        None => reply(
            StatusCode::OK,
            &rpc_error(&id, -32000, &format!("user {wanted} not found")),
        ),
    }
}
