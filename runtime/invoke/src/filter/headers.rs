//! `headers`: sets and removes request headers on the way in and response headers on the way
//! out, from config. Names and values are parsed once, when the config is loaded.

use std::task::{Context, Poll};

use futures_util::{FutureExt, future::BoxFuture};
use http::{HeaderMap, HeaderName, HeaderValue};
use outrigger_config::{HeaderEdits, HeadersFilterConfig};
use tower::{Layer, Service};

use crate::{
    error::InvokeError,
    request::{RpcRequest, RpcResponse},
};

/// Parsed header edits.
#[derive(Clone, Debug, Default)]
struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    /// Parses validated edits (invalid names or values, which validation rejects, are skipped).
    fn parse(e: &HeaderEdits) -> Self {
        Self {
            set: e
                .set
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
            remove: e
                .remove
                .iter()
                .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for n in &self.remove {
            headers.remove(n);
        }
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
    }
}

/// Layer of the `headers` filter.
#[derive(Clone, Debug)]
pub(crate) struct HeadersLayer {
    request: Edits,
    response: Edits,
}

impl HeadersLayer {
    /// Request edits apply on the way in and response edits on the way out, whichever list the
    /// filter is in (the list only decides its position in the chain).
    pub(crate) fn new(cfg: &HeadersFilterConfig) -> Self {
        Self {
            request: Edits::parse(&cfg.request),
            response: Edits::parse(&cfg.response),
        }
    }
}

impl<S> Layer<S> for HeadersLayer {
    type Service = Headers<S>;
    fn layer(&self, inner: S) -> Headers<S> {
        Headers {
            inner,
            edits: self.clone(),
        }
    }
}

/// The `headers` filter around `S`.
#[derive(Clone, Debug)]
pub(crate) struct Headers<S> {
    inner: S,
    edits: HeadersLayer,
}

impl<S> Service<RpcRequest> for Headers<S>
where
    S: Service<RpcRequest, Response = RpcResponse, Error = InvokeError>,
    S::Future: Send + 'static,
{
    type Response = RpcResponse;
    type Error = InvokeError;
    type Future = BoxFuture<'static, Result<RpcResponse, InvokeError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), InvokeError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: RpcRequest) -> Self::Future {
        self.edits.request.apply(&mut req.headers);
        let fut = self.inner.call(req);
        if self.edits.response.is_empty() {
            return fut.boxed();
        }
        let response = self.edits.response.clone();
        fut.map(move |r| {
            r.map(|mut resp| {
                response.apply(&mut resp.headers);
                resp
            })
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn edits_request_and_response_headers() {
        let cfg = HeadersFilterConfig {
            request: HeaderEdits {
                set: BTreeMap::from([("X-Tenant".to_owned(), "blue".to_owned())]),
                remove: vec!["authorization".to_owned()],
            },
            response: HeaderEdits {
                set: BTreeMap::from([("x-served-by".to_owned(), "outrigger".to_owned())]),
                remove: vec!["server".to_owned()],
            },
        };
        let inner = tower::service_fn(|req: RpcRequest| async move {
            assert_eq!(req.headers["x-tenant"], "blue");
            assert!(!req.headers.contains_key("authorization"));
            let mut headers = HeaderMap::new();
            headers.insert("server", HeaderValue::from_static("upstream"));
            Ok::<_, InvokeError>(RpcResponse {
                headers,
                ..Default::default()
            })
        });
        let svc = HeadersLayer::new(&cfg).layer(inner);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("secret"));
        let mut req = RpcRequest::new("svc", "m", tokio::time::Instant::now());
        req.headers = headers;
        let resp = svc.oneshot(req).await.expect("ok");
        assert_eq!(resp.headers["x-served-by"], "outrigger");
        assert!(!resp.headers.contains_key("server"));
    }
}
