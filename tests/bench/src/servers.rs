//! The harness's own servers, each run in a process of its own (the bench binary re-executed
//! with a hidden subcommand) so that their CPU is never counted as the system under test's:
//! the HTTP/1.1 upstream answering every request with a fixed 1 KiB body, the Bolt upstream
//! answering every Bolt request with a fixed 1 KiB content (and heartbeats with their ack), and
//! the gRPC floor, a minimal tonic server answering `InvokeService` with the same 1 KiB. All
//! run on one thread (like the peers' single worker), bind port 0 and write the bound address
//! to a file. Not for starting them (see `scenario`) or for load (see `load`).

use std::{
    convert::Infallible,
    io,
    path::{Path, PathBuf},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use outrigger_codec::{Limits, bolt};
use outrigger_proto::spec::proto::runtime::v1::{
    InvokeResponse, InvokeServiceRequest,
    runtime_server::{Runtime, RuntimeServer},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tonic::transport::server::TcpIncoming;

/// Size of every response body.
pub const BODY_LEN: usize = 1024;
/// The response body.
static BODY: [u8; BODY_LEN] = [b'x'; BODY_LEN];
/// Content type of every response.
pub(crate) const CONTENT_TYPE: &str = "application/octet-stream";
/// Class of every Bolt response, the one SOFARPC writes (the content itself is opaque).
const BOLT_RESPONSE_CLASS: &[u8] = b"com.alipay.sofa.rpc.core.response.SofaResponse";
/// Read buffer of a Bolt connection: room for a dozen 1 KiB requests; it grows when needed.
const BOLT_READ_BUFFER: usize = 16 * 1024;

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

/// Serves the 1 KiB Bolt v1 upstream until killed.
pub fn run_bolt_upstream(addr_file: &Path) -> io::Result<()> {
    runtime()?.block_on(async {
        let listener = bind(addr_file).await?;
        serve_bolt(listener).await
    })
}

/// Accepts Bolt connections on `listener` and serves each on a task of its own.
pub(crate) async fn serve_bolt(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(bolt_connection(stream));
    }
}

/// One Bolt connection: every whole frame read is answered in order, the answers to one read
/// written together; bytes that are not Bolt close the connection.
async fn bolt_connection(mut stream: TcpStream) {
    let limits = Limits::default();
    let mut rbuf = BytesMut::with_capacity(BOLT_READ_BUFFER);
    let mut wbuf = BytesMut::with_capacity(BOLT_READ_BUFFER);
    loop {
        if rbuf.capacity() - rbuf.len() < BOLT_READ_BUFFER / 4 {
            rbuf.reserve(BOLT_READ_BUFFER);
        }
        match stream.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            match bolt::decode(&mut rbuf, &limits) {
                Ok(Some(frame)) => {
                    if let Some(answer) = bolt_answer(&frame)
                        && bolt::encode(&answer, &mut wbuf).is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).await.is_err() {
                return;
            }
            wbuf.clear();
        }
    }
}

/// The answer to one Bolt frame: SUCCESS with the 1 KiB content for a request, the ack for a
/// heartbeat, nothing for a one-way request or a stray answer.
fn bolt_answer(frame: &bolt::Frame) -> Option<bolt::Frame> {
    match frame.kind {
        bolt::Kind::Request { .. } => {
            let mut answer = frame.response(bolt::status::SUCCESS);
            answer.class = Bytes::from_static(BOLT_RESPONSE_CLASS);
            answer.content = Bytes::from_static(&BODY);
            Some(answer)
        }
        bolt::Kind::Heartbeat { .. } => Some(frame.heartbeat_ack()),
        bolt::Kind::OneWay { .. }
        | bolt::Kind::Response { .. }
        | bolt::Kind::HeartbeatAck { .. } => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_frame(conn: &mut TcpStream, buf: &mut BytesMut) -> bolt::Frame {
        loop {
            if let Some(f) = bolt::decode(buf, &Limits::default()).unwrap() {
                return f;
            }
            assert!(conn.read_buf(buf).await.unwrap() > 0, "the upstream closed");
        }
    }

    #[tokio::test]
    async fn the_bolt_upstream_answers_requests_and_heartbeats_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_bolt(listener));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let mut headers = bolt::HeaderMap::new();
        headers.insert("service", "bench");
        let request = bolt::Frame::request(7, 3000, "C", headers, vec![b'r'; 1024]);
        let mut one_way = bolt::Frame::request(8, 3000, "C", bolt::HeaderMap::new(), "x");
        one_way.kind = bolt::Kind::OneWay { timeout_ms: 3000 };
        // A one-way request gets no answer: the next answer is the heartbeat's.
        let mut out = BytesMut::new();
        for f in [&request, &one_way, &bolt::Frame::heartbeat(9), &request] {
            bolt::encode(f, &mut out).unwrap();
        }
        conn.write_all(&out).await.unwrap();

        let mut buf = BytesMut::new();
        let first = read_frame(&mut conn, &mut buf).await;
        assert_eq!(
            first.kind,
            bolt::Kind::Response {
                status: bolt::status::SUCCESS
            }
        );
        assert_eq!(first.request_id, 7);
        assert_eq!(first.content.len(), BODY_LEN);
        let ack = read_frame(&mut conn, &mut buf).await;
        assert_eq!(
            ack.kind,
            bolt::Kind::HeartbeatAck {
                status: bolt::status::SUCCESS
            }
        );
        assert_eq!(ack.request_id, 9);
        let again = read_frame(&mut conn, &mut buf).await;
        assert_eq!(again.request_id, 7);
        assert_eq!(again.content.len(), BODY_LEN);

        // Bytes that are not Bolt close the connection.
        conn.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(conn.read_buf(&mut buf).await.unwrap(), 0);
        server.abort();
    }
}
