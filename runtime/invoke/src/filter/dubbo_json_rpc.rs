//! `dubbo_json_rpc`: rewrites a call into dubbo-go's JSON-RPC-over-HTTP form, as Layotto's filter
//! of the same name does: headers `x-services` (the target id) and `x-method` (the method),
//! `content-type` and `accept` set to `application/json`, and the method replaced by the id, so
//! the request path becomes `/<service interface>`.

use std::task::{Context, Poll};

use http::HeaderValue;
use tower::{Layer, Service};

use crate::{
    error::{ErrorKind, InvokeError},
    request::RpcRequest,
};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// Layer of the `dubbo_json_rpc` filter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DubboJsonRpcLayer;

impl<S> Layer<S> for DubboJsonRpcLayer {
    type Service = DubboJsonRpc<S>;
    fn layer(&self, inner: S) -> DubboJsonRpc<S> {
        DubboJsonRpc { inner }
    }
}

/// The `dubbo_json_rpc` filter around `S`.
#[derive(Clone, Debug)]
pub(crate) struct DubboJsonRpc<S> {
    inner: S,
}

impl<S> Service<RpcRequest> for DubboJsonRpc<S>
where
    S: Service<RpcRequest, Error = InvokeError>,
{
    type Response = S::Response;
    type Error = InvokeError;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::Ready<Result<S::Response, InvokeError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RpcRequest) -> Self::Future {
        match rewrite(&mut req) {
            Ok(()) => futures_util::future::Either::Left(self.inner.call(req)),
            Err(e) => futures_util::future::Either::Right(futures_util::future::ready(Err(e))),
        }
    }
}

fn rewrite(req: &mut RpcRequest) -> Result<(), InvokeError> {
    let invalid = |what: &str, v: &str| {
        InvokeError::new(
            ErrorKind::Filter(tonic::Code::InvalidArgument),
            format!("dubbo_json_rpc: {what} {v:?} is not a valid header value"),
        )
    };
    let services = HeaderValue::from_str(&req.id).map_err(|_| invalid("id", &req.id))?;
    let method = HeaderValue::from_str(&req.method).map_err(|_| invalid("method", &req.method))?;
    req.headers.insert("x-services", services);
    req.headers.insert("x-method", method);
    req.headers.insert(http::header::CONTENT_TYPE, JSON);
    req.headers.insert(http::header::ACCEPT, JSON);
    req.content_type.clear();
    req.method.clone_from(&req.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_like_layotto() {
        let mut req = RpcRequest::new(
            "org.apache.dubbo.samples.UserProvider",
            "GetUser",
            tokio::time::Instant::now(),
        );
        req.content_type = "text/plain".into();
        req.data = bytes::Bytes::from_static(b"{}");
        req.verb = http::Method::POST;
        rewrite(&mut req).expect("valid");
        assert_eq!(req.method, "org.apache.dubbo.samples.UserProvider");
        assert_eq!(
            req.headers["x-services"],
            "org.apache.dubbo.samples.UserProvider"
        );
        assert_eq!(req.headers["x-method"], "GetUser");
        assert_eq!(req.headers["content-type"], "application/json");
        assert_eq!(req.headers["accept"], "application/json");
        assert!(
            req.content_type.is_empty(),
            "the header wins over the message's content type"
        );
    }
}
