//! The harness's own servers, each run in a process of its own (the bench binary re-executed
//! with a hidden subcommand) so that their CPU is never counted as the system under test's:
//! the HTTP/1.1 upstream answering every request with a fixed 1 KiB body, and the gRPC floor, a
//! minimal tonic server answering `InvokeService` with the same 1 KiB. Both run on one thread
//! (like the peers' single worker), bind port 0 and write the bound address to a file. Not for
//! starting them (see `scenario`) or for load (see `load`).

use std::{
    convert::Infallible,
    io,
    path::{Path, PathBuf},
};

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use outrigger_proto::spec::proto::runtime::v1::{
    InvokeResponse, InvokeServiceRequest,
    runtime_server::{Runtime, RuntimeServer},
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// Size of every response body.
pub const BODY_LEN: usize = 1024;
/// The response body.
static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];
/// Content type of every response.
pub(crate) const CONTENT_TYPE: &str = "application/octet-stream";

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Binds `127.0.0.1:0` and reports the address through `addr_file` (written whole, then
/// renamed into place, so a reader never sees half of it).
async fn bind(addr_file: &Path) -> io::Result<TcpListener> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let tmp = PathBuf::from(format!("{}.tmp", addr_file.display()));
    std::fs::write(&tmp, addr.to_string())?;
    std::fs::rename(&tmp, addr_file)?;
    Ok(listener)
}

/// Serves the 1 KiB HTTP/1.1 upstream until killed.
pub fn run_upstream(addr_file: &Path) -> io::Result<()> {
    runtime()?.block_on(async {
        let listener = bind(addr_file).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req: http::Request<Incoming>| async {
                    let mut resp = Response::new(Full::new(Bytes::from_static(&BODY)));
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
                    Ok::<_, Infallible>(resp)
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// The gRPC floor: `InvokeService` answered directly with the 1 KiB body.
struct Echo;

#[tonic::async_trait]
impl Runtime for Echo {
    async fn invoke_service(
        &self,
        _request: tonic::Request<InvokeServiceRequest>,
    ) -> Result<tonic::Response<InvokeResponse>, tonic::Status> {
        Ok(tonic::Response::new(InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: BODY.to_vec(),
            }),
            content_type: CONTENT_TYPE.to_owned(),
        }))
    }
}

/// Serves the gRPC floor until killed.
pub fn run_echo(addr_file: &Path) -> io::Result<()> {
    runtime()?.block_on(async {
        let listener = bind(addr_file).await?;
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(RuntimeServer::new(Echo))
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
            .await
            .map_err(io::Error::other)
    })
}
