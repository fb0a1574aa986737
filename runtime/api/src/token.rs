//! The API token (Dapr's `dapr-api-token`): when one is configured, a call without the
//! matching token is refused — HTTP 401 on the HTTP API, `UNAUTHENTICATED` on the gRPC API —
//! and the token is taken out of every request, so it never reaches an upstream. Compared in
//! constant time. Not for any other authentication.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

/// The header (gRPC metadata) that carries the token.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";

/// A configured API token.
#[derive(Clone)]
pub struct ApiToken(Arc<[u8]>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// No `dapr-api-token` header.
    #[error("missing api token: this sidecar requires the {API_TOKEN_HEADER} header")]
    Missing,
    /// A `dapr-api-token` that does not match.
    #[error("invalid api token in the {API_TOKEN_HEADER} header")]
    Invalid,
}

impl ApiToken {
    /// The token `value`; `None` for an empty one (no check).
    pub fn new(value: &str) -> Option<Self> {
        (!value.is_empty()).then(|| Self(Arc::from(value.as_bytes())))
    }

    /// Whether `given` is the token. Runs in time that depends only on the lengths.
    fn matches(&self, given: &[u8]) -> bool {
        let want = &self.0;
        let mut diff = u8::from(want.len() != given.len());
        for (i, w) in want.iter().enumerate() {
            diff |= w ^ given.get(i).copied().unwrap_or(!w);
        }
        diff == 0
    }

    /// Checks the request's token and removes it from `headers` whatever the outcome.
    pub(crate) fn check(token: Option<&Self>, headers: &mut HeaderMap) -> Result<(), TokenError> {
        let given = headers.remove(API_TOKEN_HEADER);
        let Some(token) = token else { return Ok(()) };
        match given {
            None => Err(TokenError::Missing),
            Some(v) if token.matches(v.as_bytes()) => Ok(()),
            Some(_) => Err(TokenError::Invalid),
        }
    }
}

/// Checks `dapr-api-token` on every gRPC call (when a token is configured) and removes it
/// from every call, so neither InvokeService nor a proxied call forwards it.
#[derive(Clone)]
pub(crate) struct GrpcTokenLayer {
    pub(crate) token: Option<ApiToken>,
}

impl<S> Layer<S> for GrpcTokenLayer {
    type Service = GrpcToken<S>;
    fn layer(&self, inner: S) -> GrpcToken<S> {
        GrpcToken {
            inner,
            token: self.token.clone(),
        }
    }
}

/// See [`GrpcTokenLayer`].
#[derive(Clone)]
pub(crate) struct GrpcToken<S> {
    inner: S,
    token: Option<ApiToken>,
}

impl<S, B> Service<Request<B>> for GrpcToken<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = futures_util::future::Either<
        S::Future,
        futures_util::future::Ready<Result<Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match ApiToken::check(self.token.as_ref(), req.headers_mut()) {
            Ok(()) => futures_util::future::Either::Left(self.inner.call(req)),
            Err(e) => futures_util::future::Either::Right(futures_util::future::ready(Ok(
                tonic::Status::unauthenticated(e.to_string()).into_http(),
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn tokens_match_exactly_and_are_always_removed() {
        let t = ApiToken::new("s3cret").expect("token");
        assert!(t.matches(b"s3cret"));
        for wrong in [&b"s3cre"[..], b"s3cret!", b"S3cret", b""] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
        assert!(ApiToken::new("").is_none(), "an empty token checks nothing");

        let mut h = HeaderMap::new();
        h.insert(API_TOKEN_HEADER, HeaderValue::from_static("s3cret"));
        assert_eq!(ApiToken::check(Some(&t), &mut h), Ok(()));
        assert!(h.is_empty(), "the token is never forwarded");
        assert_eq!(ApiToken::check(Some(&t), &mut h), Err(TokenError::Missing));
        h.insert(API_TOKEN_HEADER, HeaderValue::from_static("guess"));
        assert_eq!(ApiToken::check(Some(&t), &mut h), Err(TokenError::Invalid));
        h.insert(API_TOKEN_HEADER, HeaderValue::from_static("anything"));
        assert_eq!(ApiToken::check(None, &mut h), Ok(()));
        assert!(h.is_empty(), "removed even when no token is configured");
    }
}
