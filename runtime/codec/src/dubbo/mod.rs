//! Dubbo 2 framing: a 16-byte header — magic `0xdabb`, flag (0x80 request, 0x40 two-way,
//! 0x20 event, low 5 bits serialization id, 2 = Hessian2), status, request id (8), body
//! length (4) — then the body. Heartbeats are events whose body is a Hessian null: `0xE2` out,
//! `0x22` with status 20 back.
//!
//! Framing ([`decode`], [`encode`], [`set_request_id`]) never looks inside the body; the
//! `body` module parses Hessian2 request and response bodies ([`RpcInvocation`],
//! [`RpcResult`], [`RawResult`], [`Reply`], [`request_timeout`]) for the callers that need
//! them — routing on service and method, the generic-invoke filter, a channel handing a
//! result on. Java type descriptors and exception texts are in [`descriptor`] and
//! [`describe_exception`]. Connections, timers and id allocation are not here.

mod body;
mod java;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::too_large;
use crate::{DecodeError, EncodeError, Limits};

pub use body::{
    BodyError, DEFAULT_DUBBO_VERSION, GENERIC_INVOKE, Outcome, RESPONSE_NULL_VALUE,
    RESPONSE_NULL_VALUE_WITH_ATTACHMENTS, RESPONSE_VALUE, RESPONSE_VALUE_WITH_ATTACHMENTS,
    RESPONSE_WITH_EXCEPTION, RESPONSE_WITH_EXCEPTION_WITH_ATTACHMENTS, RawOutcome, RawResult,
    Reply, RpcInvocation, RpcResult, TIMEOUT_ATTACHMENT, Target, parameter_types, request_timeout,
    supports_response_attachments,
};
pub use java::{describe_exception, descriptor, java_descriptor};

/// Dubbo's magic number, the first two bytes of every frame.
pub const MAGIC: u16 = 0xdabb;
/// Header length.
pub const HEADER_LEN: usize = 16;
/// Flag bit: the frame is a request.
pub const FLAG_REQUEST: u8 = 0x80;
/// Flag bit: the request expects a response.
pub const FLAG_TWO_WAY: u8 = 0x40;
/// Flag bit: the frame is an event (a heartbeat when its body is null).
pub const FLAG_EVENT: u8 = 0x20;
/// Mask of the serialization id in the flag byte.
pub const SERIALIZATION_MASK: u8 = 0x1f;
/// Serialization id of Hessian2.
pub const SERIALIZATION_HESSIAN2: u8 = 2;
/// The body of a heartbeat and its reply: a Hessian null.
pub const HEARTBEAT_BODY: &[u8] = b"N";

/// Response status codes, as `org.apache.dubbo.remoting.exchange.Response` numbers them.
pub mod status {
    /// The call succeeded.
    pub const OK: u8 = 20;
    /// The client timed out (the proxy's answer to an upstream timeout).
    pub const CLIENT_TIMEOUT: u8 = 30;
    /// The server timed out.
    pub const SERVER_TIMEOUT: u8 = 31;
    /// The request was bad (the proxy's answer to overflow).
    pub const BAD_REQUEST: u8 = 40;
    /// The response was bad.
    pub const BAD_RESPONSE: u8 = 50;
    /// No such service (the proxy's answer to no route).
    pub const SERVICE_NOT_FOUND: u8 = 60;
    /// The service failed.
    pub const SERVICE_ERROR: u8 = 70;
    /// The server failed.
    pub const SERVER_ERROR: u8 = 80;
    /// The client failed.
    pub const CLIENT_ERROR: u8 = 90;
    /// The server's thread pool is exhausted.
    pub const SERVER_THREADPOOL_EXHAUSTED_ERROR: u8 = 100;

    /// Dubbo's name of a response status, for messages and logs (`"client timeout"`,
    /// `"service not found"`, …); `"not a known status"` for a code `Response` does not
    /// define.
    pub fn name(status: u8) -> &'static str {
        match status {
            OK => "ok",
            CLIENT_TIMEOUT => "client timeout",
            SERVER_TIMEOUT => "server timeout",
            BAD_REQUEST => "bad request",
            BAD_RESPONSE => "bad response",
            SERVICE_NOT_FOUND => "service not found",
            SERVICE_ERROR => "service error",
            SERVER_ERROR => "server error",
            CLIENT_ERROR => "client error",
            SERVER_THREADPOOL_EXHAUSTED_ERROR => "server thread pool exhausted",
            _ => "not a known status",
        }
    }
}

/// One Dubbo frame. `body` is a slice of the received bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Flag bit 0x80: a request (else a response).
    pub is_request: bool,
    /// Flag bit 0x40: the request expects a response.
    pub two_way: bool,
    /// Flag bit 0x20: an event, such as a heartbeat.
    pub event: bool,
    /// Serialization id, the flag's low 5 bits ([`SERIALIZATION_HESSIAN2`]).
    pub serialization: u8,
    /// Response status (one of [`status`]); requests carry 0.
    pub status: u8,
    /// Correlates a response with its request on one connection.
    pub request_id: u64,
    /// The serialized body.
    pub body: Bytes,
}

impl Frame {
    /// A two-way Hessian2 request carrying `body` (see [`RpcInvocation::encode`]).
    pub fn request(request_id: u64, body: impl Into<Bytes>) -> Self {
        Self {
            is_request: true,
            two_way: true,
            event: false,
            serialization: SERIALIZATION_HESSIAN2,
            status: 0,
            request_id,
            body: body.into(),
        }
    }

    /// A heartbeat request: flag `0xE2`, body `N`.
    pub fn heartbeat(request_id: u64) -> Self {
        Self {
            is_request: true,
            two_way: true,
            event: true,
            serialization: SERIALIZATION_HESSIAN2,
            status: 0,
            request_id,
            body: Bytes::from_static(HEARTBEAT_BODY),
        }
    }

    /// Whether this is a heartbeat (request or reply): an event with a null body.
    pub fn is_heartbeat(&self) -> bool {
        self.event && (self.body.as_ref() == HEARTBEAT_BODY || self.body.is_empty())
    }

    /// The reply to this heartbeat: flag `0x22`, status 20, body `N`.
    pub fn heartbeat_reply(&self) -> Self {
        Self {
            event: true,
            ..self.response(status::OK, Bytes::from_static(HEARTBEAT_BODY))
        }
    }

    /// A response to this request: same id and serialization, `status`, `body`.
    pub fn response(&self, status: u8, body: impl Into<Bytes>) -> Self {
        Self {
            is_request: false,
            two_way: false,
            event: false,
            serialization: self.serialization,
            status,
            request_id: self.request_id,
            body: body.into(),
        }
    }

    /// An error response to this request — status other than OK, body the Hessian string
    /// `message`, as Dubbo's `ExchangeCodec` writes one.
    pub fn error_response(&self, status: u8, message: &str) -> Self {
        let mut w = crate::hessian::Writer::new();
        w.write_str(message);
        self.response(status, w.finish())
    }

    /// The flag byte.
    pub fn flag(&self) -> u8 {
        let mut flag = self.serialization & SERIALIZATION_MASK;
        if self.is_request {
            flag |= FLAG_REQUEST;
        }
        if self.two_way {
            flag |= FLAG_TWO_WAY;
        }
        if self.event {
            flag |= FLAG_EVENT;
        }
        flag
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }
}

/// Appends `frame` to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let len = i32::try_from(frame.body.len())
        .map_err(|_| too_large("dubbo body", frame.body.len(), i32::MAX as usize))?;
    dst.reserve(frame.encoded_len());
    dst.put_u16(MAGIC);
    dst.put_u8(frame.flag());
    dst.put_u8(frame.status);
    dst.put_u64(frame.request_id);
    dst.put_i32(len);
    dst.put_slice(&frame.body);
    Ok(())
}

/// Decodes one frame from the front of `src`: `Ok(None)` until a whole frame is buffered,
/// then that frame, split off `src`. On error nothing is consumed.
pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    let Some(total) = frame_len(src, limits)? else {
        return Ok(None);
    };
    if src.len() < total {
        return Ok(None);
    }
    let flag = src[2];
    let status = src[3];
    let request_id = u64::from_be_bytes([
        src[4], src[5], src[6], src[7], src[8], src[9], src[10], src[11],
    ]);
    let mut raw = src.split_to(total);
    let body = raw.split_off(HEADER_LEN).freeze();
    Ok(Some(Frame {
        is_request: flag & FLAG_REQUEST != 0,
        two_way: flag & FLAG_TWO_WAY != 0,
        event: flag & FLAG_EVENT != 0,
        serialization: flag & SERIALIZATION_MASK,
        status,
        request_id,
        body,
    }))
}

/// The length of the frame at the front of `buf` once its header is buffered (the body may
/// still be in flight), checked against `limits`; `Ok(None)` while the header is incomplete.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    match buf {
        [] => return Ok(None),
        [0xda] => return Ok(None),
        [a, b, ..] if u16::from_be_bytes([*a, *b]) != MAGIC => {
            return Err(DecodeError::BadDubboMagic(u16::from_be_bytes([*a, *b])));
        }
        [a, ..] if *a != 0xda => return Err(DecodeError::BadDubboMagic(u16::from(*a) << 8)),
        _ => {}
    }
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([h[12], h[13], h[14], h[15]]);
    let len = usize::try_from(len).map_err(|_| DecodeError::NegativeLength {
        what: "dubbo body",
        len: i64::from(len),
    })?;
    let total = HEADER_LEN + len;
    if total > limits.max_frame_bytes {
        return Err(DecodeError::Oversized {
            what: "dubbo frame",
            len: total as u64,
            max: limits.max_frame_bytes as u64,
        });
    }
    Ok(Some(total))
}

/// The request id of the frame at the front of `buf`, if its header is there.
pub fn request_id(buf: &[u8]) -> Option<u64> {
    let b = buf.get(4..12)?;
    Some(u64::from_be_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
    ]))
}

/// Rewrites the request id of the frame at the front of `frame` in place (only the header
/// is needed) — what a proxy does per upstream connection.
pub fn set_request_id(frame: &mut [u8], request_id: u64) -> Result<(), DecodeError> {
    if frame.len() < HEADER_LEN {
        return Err(DecodeError::Incomplete {
            needed: HEADER_LEN,
            available: frame.len(),
        });
    }
    let magic = u16::from_be_bytes([frame[0], frame[1]]);
    if magic != MAGIC {
        return Err(DecodeError::BadDubboMagic(magic));
    }
    frame[4..12].copy_from_slice(&request_id.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_bytes() {
        let mut wire = BytesMut::new();
        let hb = Frame::heartbeat(9);
        encode(&hb, &mut wire).expect("encode");
        assert_eq!(&wire[..4], &[0xda, 0xbb, 0xe2, 0x00]);
        let reply = hb.heartbeat_reply();
        let mut out = BytesMut::new();
        encode(&reply, &mut out).expect("encode");
        assert_eq!(&out[..4], &[0xda, 0xbb, 0x22, 20]);
        assert!(reply.is_heartbeat());
    }

    #[test]
    fn streaming_and_limits() {
        let frame = Frame::request(1 << 40, Bytes::from_static(b"\x05hello"));
        let mut wire = BytesMut::new();
        encode(&frame, &mut wire).expect("encode");
        let mut buf = BytesMut::new();
        for (i, b) in wire.iter().enumerate() {
            buf.put_u8(*b);
            let got = decode(&mut buf, &Limits::default()).expect("decode");
            assert_eq!(got.is_some(), i + 1 == wire.len());
            if let Some(got) = got {
                assert_eq!(got, frame);
            }
        }
        let mut huge = BytesMut::from(&[0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        huge.put_i32(i32::MAX);
        assert!(matches!(
            decode(&mut huge, &Limits::default()),
            Err(DecodeError::Oversized { .. })
        ));
        let mut negative = BytesMut::from(&[0xda, 0xbb, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        negative.put_i32(-1);
        assert!(matches!(
            decode(&mut negative, &Limits::default()),
            Err(DecodeError::NegativeLength { .. })
        ));
        assert_eq!(
            decode(&mut BytesMut::from(&b"GET"[..]), &Limits::default()),
            Err(DecodeError::BadDubboMagic(0x4745))
        );
        assert_eq!(
            decode(&mut BytesMut::from(&b"G"[..]), &Limits::default()),
            Err(DecodeError::BadDubboMagic(0x4700))
        );
    }

    #[test]
    fn status_names() {
        let cases = [
            (status::OK, "ok"),
            (status::CLIENT_TIMEOUT, "client timeout"),
            (status::SERVER_TIMEOUT, "server timeout"),
            (status::BAD_REQUEST, "bad request"),
            (status::BAD_RESPONSE, "bad response"),
            (status::SERVICE_NOT_FOUND, "service not found"),
            (status::SERVICE_ERROR, "service error"),
            (status::SERVER_ERROR, "server error"),
            (status::CLIENT_ERROR, "client error"),
            (
                status::SERVER_THREADPOOL_EXHAUSTED_ERROR,
                "server thread pool exhausted",
            ),
            (0, "not a known status"),
            (21, "not a known status"),
            (u8::MAX, "not a known status"),
        ];
        for (code, want) in cases {
            assert_eq!(status::name(code), want, "status {code}");
        }
    }

    #[test]
    fn rewrites_request_id() {
        let mut wire = BytesMut::new();
        encode(&Frame::request(5, Bytes::new()), &mut wire).expect("encode");
        set_request_id(&mut wire, 99).expect("rewrite");
        assert_eq!(request_id(&wire), Some(99));
    }
}
