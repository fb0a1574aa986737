//! The one place invoke errors become gRPC statuses (and metric labels), per DESIGN.md's error
//! mapping, and the HTTP API's Dapr-shaped errors. Messages always name the target id, the
//! method and the cause.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use tonic::{Code, Status};

use outrigger_invoke::{ErrorKind, InvokeError};

/// The gRPC code of an invoke error kind.
pub(crate) fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Filter(code) => code,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status returned for a failed call of `method` on `id`.
pub(crate) fn to_status(id: &str, method: &str, err: &InvokeError) -> Status {
    Status::new(
        code(err.kind()),
        format!("invoke {method:?} on {id:?} failed: {err}"),
    )
}

/// An error the HTTP API answers itself, in Dapr's shape: `{"errorCode": ..., "message": ...}`.
#[derive(Debug)]
pub(crate) struct DaprError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl DaprError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn response(&self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({"errorCode": self.code, "message": self.message});
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = self.status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

/// The HTTP status of an invoke error on the HTTP API: the proxy core's own statuses for the
/// same causes (400, 404, 504, 503), 500 for a bug, and a filter's gRPC code translated.
pub(crate) fn http_status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::ResourceExhausted | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::Filter(code) => match code {
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
    }
}

/// The HTTP API's answer for a failed call of `method` on `id`: `ERR_DIRECT_INVOKE`, as Dapr.
pub(crate) fn to_dapr(id: &str, method: &str, err: &InvokeError) -> DaprError {
    DaprError::new(
        http_status(err.kind()),
        "ERR_DIRECT_INVOKE",
        format!("invoke {method:?} on {id:?} failed: {err}"),
    )
}

/// Lowercase name of a gRPC code, for metric labels.
pub(crate) fn code_label(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_api_statuses() {
        for (kind, want) in [
            (ErrorKind::InvalidArgument, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::DeadlineExceeded, 504),
            (ErrorKind::ResourceExhausted, 503),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Internal, 500),
            (ErrorKind::Filter(Code::PermissionDenied), 403),
            (ErrorKind::Filter(Code::Unauthenticated), 401),
            (ErrorKind::Filter(Code::Aborted), 500),
        ] {
            assert_eq!(http_status(kind).as_u16(), want, "{kind:?}");
        }
    }

    #[test]
    fn mapping_table() {
        let cases = [
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::DeadlineExceeded, Code::DeadlineExceeded),
            (ErrorKind::ResourceExhausted, Code::ResourceExhausted),
            (ErrorKind::Unavailable, Code::Unavailable),
            (
                ErrorKind::Filter(Code::PermissionDenied),
                Code::PermissionDenied,
            ),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, want) in cases {
            let s = to_status("svc", "Get", &InvokeError::new(kind, "cause"));
            assert_eq!(s.code(), want);
            assert_eq!(s.message(), "invoke \"Get\" on \"svc\" failed: cause");
        }
    }
}
