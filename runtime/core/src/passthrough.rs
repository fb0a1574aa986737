//! Streaming pass-through: the interface through which an edge hands a whole HTTP/2 request —
//! a native gRPC call meant for another app (Dapr's `dapr-app-id` metadata) — to the proxy
//! core, with its body and trailers streamed both ways, and the body type both sides share.
//! The proxy core implements it and the composition root hands it to the edge, so the edge
//! never sees the proxy. Not for routing or connection pools, nor for whole-body calls (those go
//! through the invoke path).

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;

use crate::ProxyError;

/// The error of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed HTTP body (data frames, then trailers), type-erased.
pub type StreamBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of bytes already in memory, as a [`StreamBody`].
pub fn full_body(bytes: Bytes) -> StreamBody {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The future of one forwarded request.
pub type PassthroughFuture =
    Pin<Box<dyn Future<Output = Result<Response<StreamBody>, ProxyError>> + Send + 'static>>;

/// Where an edge sends requests that are proxied as they are.
pub trait Passthrough: Send + Sync + 'static {
    /// Routes `req`, a request for the app `app_id`, and forwards it as it is: the routes see
    /// `app_id` as the header `id` and the request's path (`/package.Service/Method`) as the
    /// path. The upstream must answer with its response headers within `timeout`; its body and
    /// trailers then stream back as they come. Fails with the proxy's own error (no route, no
    /// host, connect failure, timeout) naming the cause.
    fn forward(
        &self,
        app_id: &str,
        req: Request<StreamBody>,
        timeout: Option<Duration>,
    ) -> PassthroughFuture;
}
