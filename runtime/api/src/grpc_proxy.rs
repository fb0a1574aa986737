//! gRPC proxying, as Dapr does it: a call on the gRPC port that carries the metadata
//! `dapr-app-id` and is not for one of the sidecar's own services is handed as it is — any
//! service and method, unary or streaming — to the proxy core's [`Passthrough`], which routes it
//! (the app id as header `id`, the gRPC path as the path) to an `http2` cluster and streams the
//! answer back, trailers included. The proxy's own failures become gRPC statuses through the
//! one error mapping. Not for `InvokeService`, which goes through the invoker.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response};
use http_body_util::BodyExt;
use outrigger_core::{Passthrough, StreamBody};
use outrigger_invoke::InvokeError;
use tower::{Layer, Service};

use crate::status;

/// The metadata naming the app a proxied call is for (Dapr's).
pub const APP_ID_METADATA: &str = "dapr-app-id";

/// Services the sidecar serves itself, even when a call carries `dapr-app-id`.
const OWN_SERVICES: [&str; 4] = [
    "/spec.proto.runtime.v1.Runtime/",
    "/dapr.proto.runtime.v1.Dapr/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Hands calls carrying `dapr-app-id` to the proxy core; the others go on to the services.
#[derive(Clone)]
pub(crate) struct GrpcProxyLayer {
    pub(crate) passthrough: Option<Arc<dyn Passthrough>>,
}

impl<S> Layer<S> for GrpcProxyLayer {
    type Service = GrpcProxy<S>;
    fn layer(&self, inner: S) -> GrpcProxy<S> {
        GrpcProxy {
            inner,
            passthrough: self.passthrough.clone(),
        }
    }
}

/// See [`GrpcProxyLayer`].
#[derive(Clone)]
pub(crate) struct GrpcProxy<S> {
    inner: S,
    passthrough: Option<Arc<dyn Passthrough>>,
}

impl<S> Service<Request<tonic::body::Body>> for GrpcProxy<S>
where
    S: Service<Request<tonic::body::Body>, Response = Response<tonic::body::Body>>,
    S::Error: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let path = req.uri().path();
        let app_id = req
            .headers()
            .get(APP_ID_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (Some(app_id), Some(passthrough)) = (app_id, &self.passthrough) else {
            return Either::Left(self.inner.call(req));
        };
        if OWN_SERVICES.iter().any(|s| path.starts_with(s)) {
            return Either::Left(self.inner.call(req));
        }
        let passthrough = passthrough.clone();
        Either::Right(Box::pin(async move {
            let method = req.uri().path().to_owned();
            let timeout = req
                .headers()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(crate::grpc_timeout);
            let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
            Ok(match passthrough.forward(&app_id, req, timeout).await {
                Ok(resp) => resp.map(|b: StreamBody| tonic::body::Body::new(b)),
                Err(e) => {
                    let message = e.message().to_owned();
                    let e = InvokeError::from_failure(e, message);
                    tracing::debug!(%app_id, %method, error = %e, "proxied grpc call failed");
                    status::to_status(&app_id, &method, &e).into_http()
                }
            })
        }))
    }
}
