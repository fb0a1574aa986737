//! The one place invoke errors become gRPC statuses (and metric labels), per DESIGN.md's error
//! mapping. Messages always name the target id, the method and the cause.

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
