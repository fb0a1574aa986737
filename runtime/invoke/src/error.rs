//! The one error type of the invoke path, with the kind the gRPC edge maps to a status.

use std::fmt;

/// What went wrong, as the edge needs to know it. Mapped to a gRPC status in `api::status`.
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
            ErrorKind::Filter(_) => "filter",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An invoke failure: its kind and a lowercase message naming the cause. The API edge adds the
/// target id and method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeError {
    kind: ErrorKind,
    message: String,
}

impl InvokeError {
    /// A failure of this kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
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

impl fmt::Display for InvokeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InvokeError {}
