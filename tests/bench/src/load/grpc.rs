//! The gRPC load client: Layotto's `InvokeService` over a few shared HTTP/2 connections (tonic
//! channels; workers multiplex their calls as concurrent streams). Each call names target id
//! and method `bench` and must come back `OK` with the full 1 KiB body; what else it carries
//! depends on the channel it is meant for ([`Invoke`]).

use std::net::SocketAddr;

use outrigger_proto::spec::proto::runtime::v1::{
    CommonInvokeRequest, HttpExtension, InvokeServiceRequest, http_extension::Verb,
    runtime_client::RuntimeClient,
};
use tonic::transport::{Channel, Endpoint};

use super::CallError;
use crate::servers::BODY_LEN;

/// Concurrent streams per HTTP/2 connection before another connection is opened.
const STREAMS_PER_CONNECTION: usize = 16;
/// Most HTTP/2 connections one phase opens.
const MAX_CONNECTIONS: usize = 4;

/// The target id every call names (the sidecar's route matches any).
const TARGET_ID: &str = "bench";
/// The method every call names: the HTTP channel turns it into the path `/bench`, the Bolt
/// channel into the header `sofa_head_method_name`.
const METHOD: &str = "bench";
/// Size of the opaque content of a call meant for the Bolt channel.
pub(crate) const BOLT_CONTENT_LEN: usize = 1024;

/// Which kind of `InvokeService` call the workers send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Invoke {
    /// For the HTTP channel (and the gRPC floor): `http_extension {verb: GET}`, no data.
    Http,
    /// For the Bolt channel: [`BOLT_CONTENT_LEN`] opaque bytes of data (the Bolt content; an
    /// application would put a serialised `SofaRequest` there), no `http_extension`.
    Bolt,
}

impl Invoke {
    fn request(self) -> InvokeServiceRequest {
        let (data, http_extension) = match self {
            Invoke::Http => (
                None,
                Some(HttpExtension {
                    verb: Verb::Get as i32,
                    querystring: String::new(),
                }),
            ),
            Invoke::Bolt => (
                Some(prost_types::Any {
                    type_url: String::new(),
                    value: vec![b'q'; BOLT_CONTENT_LEN],
                }),
                None,
            ),
        };
        InvokeServiceRequest {
            id: TARGET_ID.to_owned(),
            message: Some(CommonInvokeRequest {
                method: METHOD.to_owned(),
                data,
                content_type: String::new(),
                http_extension,
            }),
        }
    }
}

/// One worker's handle on a shared gRPC connection.
pub(crate) struct GrpcConn {
    client: RuntimeClient<Channel>,
    request: InvokeServiceRequest,
}

/// Connections for `workers` concurrent callers sending `invoke` calls: one HTTP/2 connection
/// per [`STREAMS_PER_CONNECTION`] workers, at most [`MAX_CONNECTIONS`].
pub(crate) async fn connect(
    addr: SocketAddr,
    invoke: Invoke,
    workers: usize,
) -> Result<Vec<GrpcConn>, CallError> {
    let n = workers
        .div_ceil(STREAMS_PER_CONNECTION)
        .clamp(1, MAX_CONNECTIONS);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CallError::Other(format!("endpoint: {e}")))?
        .tcp_nodelay(true);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            endpoint
                .connect()
                .await
                .map_err(|e| CallError::Other(format!("grpc connect {addr}: {e}")))?,
        );
    }
    Ok(shared_by(&channels, invoke, workers))
}

/// `workers` handles on `channels`, spread evenly.
fn shared_by(channels: &[Channel], invoke: Invoke, workers: usize) -> Vec<GrpcConn> {
    let request = invoke.request();
    (0..workers)
        .map(|i| GrpcConn {
            client: RuntimeClient::new(channels[i % channels.len()].clone()),
            request: request.clone(),
        })
        .collect()
}

/// [`connect`] on a unix socket.
pub(crate) async fn connect_unix(
    path: &std::path::Path,
    invoke: Invoke,
    workers: usize,
) -> Result<Vec<GrpcConn>, CallError> {
    let n = workers
        .div_ceil(STREAMS_PER_CONNECTION)
        .clamp(1, MAX_CONNECTIONS);
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        let path = path.to_owned();
        // The URI is not dialled: the connector opens the socket.
        let channel = Endpoint::from_static("http://unix")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| CallError::Other(format!("grpc connect unix socket: {e}")))?;
        channels.push(channel);
    }
    Ok(shared_by(&channels, invoke, workers))
}

impl GrpcConn {
    /// One unary call.
    pub(crate) async fn call(&mut self) -> Result<(), CallError> {
        let resp = self
            .client
            .invoke_service(self.request.clone())
            .await
            .map_err(|s| CallError::Grpc(s.code() as i32, s.message().to_owned()))?;
        let len = resp.into_inner().data.map_or(0, |d| d.value.len());
        if len != BODY_LEN {
            return Err(CallError::BodyLength(len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_each_channel() {
        let http = Invoke::Http.request();
        let m = http.message.unwrap();
        assert_eq!((http.id.as_str(), m.method.as_str()), (TARGET_ID, METHOD));
        assert!(m.data.is_none());
        assert_eq!(m.http_extension.unwrap().verb, Verb::Get as i32);

        let bolt = Invoke::Bolt.request();
        let m = bolt.message.unwrap();
        assert_eq!((bolt.id.as_str(), m.method.as_str()), (TARGET_ID, METHOD));
        assert_eq!(m.data.unwrap().value.len(), BOLT_CONTENT_LEN);
        assert!(m.http_extension.is_none());
    }
}
