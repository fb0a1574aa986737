//! The lean path of `InvokeService`, the one call on the data path: a layer in front of tonic's
//! router that serves both APIs' `InvokeService` itself — the request's one message read and
//! decoded, the handler called, the answer encoded into one data frame and the `grpc-status`
//! trailer — instead of routing it through the router and tonic's streaming codec, which cost
//! more than the rest of the call's work in the sidecar. Everything around it is unchanged: the
//! layers in front (request id, metrics, API token, concurrency limit) run as for any call, and
//! the handler is the same one tonic calls. A call this path does not take on as it is — a
//! compressed one (`grpc-encoding` other than `identity`), or one that is not
//! `application/grpc` — goes on to tonic, which answers it as it always did. Wire behaviour
//! follows tonic's: the same statuses for an oversized, missing or undecodable message.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::{BoxFuture, Either};
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use outrigger_proto::{
    dapr::proto::runtime::v1::{self as dapr, dapr_server::Dapr},
    spec::proto::runtime::v1::{self as layotto, runtime_server::Runtime},
};
use prost::Message;
use tonic::{Status, body::Body as TonicBody};
use tower::{Layer, Service};

use crate::RuntimeApi;

/// The gRPC paths this layer serves.
pub(crate) const LAYOTTO_INVOKE: &str = "/spec.proto.runtime.v1.Runtime/InvokeService";
pub(crate) const DAPR_INVOKE: &str = "/dapr.proto.runtime.v1.Dapr/InvokeService";

/// A gRPC message's envelope: the compressed flag and the length.
const ENVELOPE: usize = 5;

/// Serves `InvokeService` of both APIs; other calls go on to the inner service.
#[derive(Clone)]
pub(crate) struct UnaryInvokeLayer {
    pub(crate) api: RuntimeApi,
    /// `grpc.maxMessageBytes`, for the request and the answer.
    pub(crate) max_message_bytes: usize,
}

impl<S> Layer<S> for UnaryInvokeLayer {
    type Service = UnaryInvoke<S>;
    fn layer(&self, inner: S) -> UnaryInvoke<S> {
        UnaryInvoke {
            inner,
            api: self.api.clone(),
            max: self.max_message_bytes,
        }
    }
}

/// See [`UnaryInvokeLayer`].
#[derive(Clone)]
pub(crate) struct UnaryInvoke<S> {
    inner: S,
    api: RuntimeApi,
    max: usize,
}

/// Which API's `InvokeService` a call is.
#[derive(Clone, Copy)]
enum Api {
    Layotto,
    Dapr,
}

impl<S> Service<Request<TonicBody>> for UnaryInvoke<S>
where
    S: Service<Request<TonicBody>, Response = Response<TonicBody>, Error = Infallible>,
{
    type Response = Response<TonicBody>;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<TonicBody>, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<TonicBody>) -> Self::Future {
        let api = match req.uri().path() {
            LAYOTTO_INVOKE => Api::Layotto,
            DAPR_INVOKE => Api::Dapr,
            _ => return Either::Left(self.inner.call(req)),
        };
        if !takes(req.headers()) {
            return Either::Left(self.inner.call(req));
        }
        let (handler, max) = (self.api.clone(), self.max);
        Either::Right(Box::pin(async move {
            Ok(match api {
                Api::Layotto => {
                    unary(
                        req,
                        max,
                        |r: tonic::Request<layotto::InvokeServiceRequest>| {
                            Runtime::invoke_service(&handler, r)
                        },
                    )
                    .await
                }
                Api::Dapr => {
                    unary(req, max, |r: tonic::Request<dapr::InvokeServiceRequest>| {
                        Dapr::invoke_service(&handler, r)
                    })
                    .await
                }
            })
        }))
    }
}

/// Whether this path takes the call: `application/grpc` (any `+proto` suffix) and not
/// compressed.
fn takes(headers: &HeaderMap) -> bool {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let identity = headers
        .get("grpc-encoding")
        .is_none_or(|v| v.as_bytes() == b"identity");
    grpc && identity
}

/// One unary call: the message read and decoded, `handle` called, its answer encoded; a
/// failure anywhere is a trailers-only status.
async fn unary<Req, Resp, F, Fut>(
    req: Request<TonicBody>,
    max: usize,
    handle: F,
) -> Response<TonicBody>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let (parts, body) = req.into_parts();
    let message = match read_message(body, max).await.and_then(|bytes| {
        Req::decode(bytes)
            .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
    }) {
        Ok(m) => m,
        Err(status) => return status.into_http(),
    };
    let answer = handle(tonic::Request::from_http(Request::from_parts(
        parts, message,
    )))
    .await;
    let (metadata, message) = match answer {
        Ok(resp) => {
            let (metadata, message, _) = resp.into_parts();
            (metadata, message)
        }
        Err(status) => return status.into_http(),
    };
    let len = message.encoded_len();
    if len > max {
        return Status::out_of_range(format!(
            "Error, encoded message length too large: found {len} bytes, the limit is: {max} bytes"
        ))
        .into_http();
    }
    let mut data = BytesMut::with_capacity(ENVELOPE + len);
    data.put_u8(0);
    data.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    if let Err(e) = message.encode(&mut data) {
        return Status::internal(format!("failed to encode the answer: {e}")).into_http();
    }
    let mut headers = metadata.into_headers();
    // What tonic keeps out of an answer's metadata (looked up only when present).
    const RESERVED: [&str; 5] = [
        "te",
        "user-agent",
        "grpc-message",
        "grpc-message-type",
        "grpc-status",
    ];
    if headers.keys().any(|k| RESERVED.contains(&k.as_str())) {
        for reserved in RESERVED {
            headers.remove(reserved);
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    let mut resp = Response::new(TonicBody::new(Unary {
        data: Some(data.freeze()),
        trailers: true,
    }));
    *resp.headers_mut() = headers;
    resp
}

/// The request's one message, without its envelope: tonic's limits and errors (a message over
/// `max`, a compressed flag without an encoding, no message at all) and nothing read past one
/// message and its envelope.
async fn read_message(mut body: TonicBody, max: usize) -> Result<Bytes, Status> {
    // Most messages arrive in one frame: kept as it came, copied only when split.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    let mut expected = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::internal(format!("cannot read the request: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(before) => {
                joined.extend_from_slice(&before);
                joined.extend_from_slice(&data);
            }
        }
        let held = first.as_ref().map_or(joined.len(), Bytes::len);
        if expected.is_none() && held >= ENVELOPE {
            let head = first.as_deref().unwrap_or(&joined);
            match head[0] {
                0 => {}
                1 => {
                    return Err(Status::internal(
                        "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                    ));
                }
                f => {
                    return Err(Status::internal(format!(
                        "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
                    )));
                }
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > max {
                return Err(Status::out_of_range(format!(
                    "Error, decoded message length too large: found {len} bytes, the limit is: {max} bytes"
                )));
            }
            expected = Some(ENVELOPE + len);
        }
        if expected.is_some_and(|n| held > n) {
            return Err(Status::internal(
                "protocol error: a unary request carried more than one message",
            ));
        }
    }
    let mut whole = first.unwrap_or_else(|| joined.freeze());
    match expected {
        Some(n) if whole.len() == n => {
            whole.advance(ENVELOPE);
            Ok(whole)
        }
        Some(n) => Err(Status::internal(format!(
            "protocol error: the request ended after {} of {n} bytes of its message",
            whole.len()
        ))),
        None => Err(Status::internal("Missing request message.")),
    }
}

/// The answer's body: one data frame, then the trailers saying OK.
struct Unary {
    data: Option<Bytes>,
    trailers: bool,
}

impl Body for Unary {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if std::mem::take(&mut self.trailers) {
            let mut trailers = HeaderMap::with_capacity(1);
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && !self.trailers
    }

    fn size_hint(&self) -> SizeHint {
        // Not exact: an exact size would make hyper send a `content-length`, which gRPC
        // answers never carry (tonic's do not).
        let mut hint = SizeHint::new();
        hint.set_lower(self.data.as_ref().map_or(0, |d| d.len() as u64));
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frames: &[&[u8]]) -> TonicBody {
        let frames: Vec<Result<Frame<Bytes>, Status>> = frames
            .iter()
            .map(|f| Ok(Frame::data(Bytes::copy_from_slice(f))))
            .collect();
        TonicBody::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )))
    }

    fn envelope(payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[tokio::test]
    async fn one_message_whole_or_split() {
        let msg = envelope(b"hello");
        assert_eq!(
            read_message(body(&[&msg]), 100).await.unwrap(),
            &b"hello"[..]
        );
        assert_eq!(
            read_message(body(&[&msg[..2], &msg[2..6], &msg[6..]]), 100)
                .await
                .unwrap(),
            &b"hello"[..]
        );
        assert_eq!(
            read_message(body(&[&envelope(b"")]), 100).await.unwrap(),
            &b""[..]
        );
    }

    #[tokio::test]
    async fn malformed_requests_get_tonics_statuses() {
        let big = envelope(&[7; 101]);
        let e = read_message(body(&[&big[..5]]), 100).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
        let e = read_message(body(&[]), 100).await.unwrap_err();
        assert_eq!(e.message(), "Missing request message.");
        let mut compressed = envelope(b"x");
        compressed[0] = 1;
        let e = read_message(body(&[&compressed]), 100).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        let e = read_message(body(&[&envelope(b"hello")[..7]]), 100)
            .await
            .unwrap_err();
        assert!(e.message().contains("ended after 7 of 10 bytes"), "{e:?}");
        let two = [envelope(b"a"), envelope(b"b")].concat();
        let e = read_message(body(&[&two]), 100).await.unwrap_err();
        assert!(e.message().contains("more than one message"), "{e:?}");
    }

    #[test]
    fn only_plain_grpc_is_taken() {
        let mut h = HeaderMap::new();
        assert!(!takes(&h));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        assert!(takes(&h));
        h.insert("grpc-encoding", HeaderValue::from_static("gzip"));
        assert!(!takes(&h), "compressed calls go to tonic");
        h.insert("grpc-encoding", HeaderValue::from_static("identity"));
        assert!(takes(&h));
    }

    #[tokio::test]
    async fn the_answer_is_one_frame_and_an_ok_trailer() {
        let mut b = Unary {
            data: Some(Bytes::from_static(b"abc")),
            trailers: true,
        };
        assert_eq!(b.size_hint().lower(), 3);
        assert_eq!(b.size_hint().exact(), None, "no content-length");
        let f = b.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), &b"abc"[..]);
        let t = b.frame().await.unwrap().unwrap().into_trailers().unwrap();
        assert_eq!(t["grpc-status"], "0");
        assert!(b.is_end_stream());
        assert!(b.frame().await.is_none());
    }
}
