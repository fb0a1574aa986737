//! The one error type of the invoke path: what kind of failure it is (which the gRPC edge maps
//! to a status), a lowercase message naming the cause, and the error it came from. A transport
//! failure's kind follows from the [`Cause`] the pool or proxy classified it with.

use std::{fmt, sync::Arc};

use outrigger_core::{Cause, Failure};

/// What went wrong, as the edge needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request itself is unusable (missing id or method, bad path).
    InvalidArgument,
    /// No route or cluster for the target.
    NotFound,
    /// The deadline passed.
    DeadlineExceeded,
    /// A bounded resource (pool, upstream connections) stayed full.
    ResourceExhausted,
    /// The target could not be reached or answered with an error.
    Unavailable,
    /// An authorization policy denied the call.
    PermissionDenied,
    /// A filter rejected the call with its own gRPC code.
    Filter(tonic::Code),
    /// A bug or panic inside the sidecar.
    Internal,
}

impl ErrorKind {
    /// Metric label of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Filter(_) => "filter",
            ErrorKind::Internal => "internal",
        }
    }
}

impl From<Cause> for ErrorKind {
    fn from(cause: Cause) -> Self {
        match cause {
            Cause::BadRequest => ErrorKind::InvalidArgument,
            Cause::NoRoute => ErrorKind::NotFound,
            Cause::Timeout => ErrorKind::DeadlineExceeded,
            Cause::Overflow | Cause::RateLimited => ErrorKind::ResourceExhausted,
            Cause::NoHealthyHost | Cause::ConnectFailure | Cause::Reset | Cause::CircuitOpen => {
                ErrorKind::Unavailable
            }
            Cause::Denied => ErrorKind::PermissionDenied,
        }
    }
}

/// An invoke failure: its kind, a lowercase message naming the cause (the API edge adds the
/// target id and method), and the error it came from, if any.
#[derive(Clone, Debug)]
pub struct InvokeError {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl InvokeError {
    /// A failure of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A transport or proxy failure: its kind from its cause, `message` as said, `source` kept.
    pub fn from_failure<E: Failure>(source: E, message: impl Into<String>) -> Self {
        Self {
            kind: Failure::cause(&source).into(),
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the target.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl PartialEq for InvokeError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl fmt::Display for InvokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvokeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use outrigger_core::ProxyError;

    use super::*;

    #[test]
    fn failures_keep_their_cause_and_source() {
        let e = InvokeError::from_failure(
            ProxyError::new(Cause::NoRoute, "no route in table t"),
            "no route in table t",
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("no route in table t")
        );
        for (cause, kind) in [
            (Cause::BadRequest, ErrorKind::InvalidArgument),
            (Cause::Timeout, ErrorKind::DeadlineExceeded),
            (Cause::Overflow, ErrorKind::ResourceExhausted),
            (Cause::NoHealthyHost, ErrorKind::Unavailable),
            (Cause::ConnectFailure, ErrorKind::Unavailable),
            (Cause::Reset, ErrorKind::Unavailable),
            (Cause::CircuitOpen, ErrorKind::Unavailable),
            (Cause::RateLimited, ErrorKind::ResourceExhausted),
            (Cause::Denied, ErrorKind::PermissionDenied),
        ] {
            assert_eq!(ErrorKind::from(cause), kind, "{cause}");
        }
    }
}
