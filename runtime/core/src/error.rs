//! The one classification of request failures. A failure is classified once, where it happens
//! (a pool knows a refused connect from a reset, the proxy knows it found no route), as a
//! [`Cause`]; each edge maps a cause to its own vocabulary — a gRPC status, an HTTP status, a
//! Bolt or Dubbo status, a metric label — and nothing in between looks at messages or headers to
//! find out again what happened.

use std::fmt;

/// Why a request got no answer from its upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The request itself is unusable (malformed, undecodable, does not fit the protocol).
    BadRequest,
    /// No route (or no listener) takes the request.
    NoRoute,
    /// The chosen cluster has no host to send it to.
    NoHealthyHost,
    /// A bounded resource (pool slots, pending calls) stayed full until the deadline.
    Overflow,
    /// The upstream connection could not be established.
    ConnectFailure,
    /// The connection failed after the request was handed to it.
    Reset,
    /// The deadline passed.
    Timeout,
    /// A circuit breaker of the chosen cluster was at its cap (requests, connection waiters),
    /// so the request was turned away at once instead of queued.
    CircuitOpen,
    /// A local rate limit (of the listener or the route) had no token left for the request.
    RateLimited,
    /// The listener's authorization policy denied the caller this call.
    Denied,
}

impl Cause {
    /// Every cause, for tables and tests.
    pub const ALL: [Cause; 10] = [
        Cause::BadRequest,
        Cause::NoRoute,
        Cause::NoHealthyHost,
        Cause::Overflow,
        Cause::ConnectFailure,
        Cause::Reset,
        Cause::Timeout,
        Cause::CircuitOpen,
        Cause::RateLimited,
        Cause::Denied,
    ];

    /// The cause's name: its wire marker and metric label (`no_route`, `connect_failure`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::BadRequest => "bad_request",
            Cause::NoRoute => "no_route",
            Cause::NoHealthyHost => "no_healthy_host",
            Cause::Overflow => "overflow",
            Cause::ConnectFailure => "connect_failure",
            Cause::Reset => "reset",
            Cause::Timeout => "timeout",
            Cause::CircuitOpen => "circuit_open",
            Cause::RateLimited => "rate_limited",
            Cause::Denied => "permission_denied",
        }
    }

    /// The cause a name stands for.
    pub fn parse(s: &str) -> Option<Self> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows its [`Cause`]: the pools' errors implement it, so the proxy's retry
/// decision and every edge read the classification instead of re-deriving it.
pub trait Failure: std::error::Error + Send + Sync + 'static {
    /// What kind of failure this is.
    fn cause(&self) -> Cause;
}

/// A request the proxy core answered itself: its cause and a lowercase message naming the
/// listener, route table, cluster or host involved. An in-process caller gets this value; a
/// caller on a wire gets it as the protocol's error answer with a marker (see `wire`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProxyError {
    cause: Cause,
    message: String,
}

impl ProxyError {
    /// A failure of this cause.
    pub fn new(cause: Cause, message: impl Into<String>) -> Self {
        Self {
            cause,
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Failure for ProxyError {
    fn cause(&self) -> Cause {
        self.cause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Some(c));
        }
        assert_eq!(Cause::parse("nonsense"), None);
    }
}
