//! SOFA Bolt framing, v1 (protocol byte `0x01`) and v2 (`0x02`), big-endian.
//!
//! v1 request header, 22 bytes: proto, type (1 request, 2 one-way, 0 response), cmdcode(2)
//! (0 heartbeat, 1 request, 2 response), ver2, requestId(4), codec (1 Hessian2, 11 protobuf),
//! timeout(4, ms, -1 none), classLen(2), headerLen(2), contentLen(4); then class, header map,
//! content. The v1 response header is 20 bytes, with respStatus(2) where the timeout was. v2
//! adds a `ver1` byte after proto and a `switch` byte after codec (24/22 bytes); when
//! `ver1 == 2` and switch bit 0 is set, a CRC32 of the whole frame follows the content, as
//! SOFABolt's `RpcCommandDecoderV2` reads it.
//!
//! This module frames and unframes; it does not look inside `content` (a Hessian or protobuf
//! `SofaRequest`/`SofaResponse`). It is not a connection: heartbeat timers and id allocation
//! belong to the channel and the proxy.

mod header_map;
pub mod sofa;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::too_large;
use crate::{DecodeError, EncodeError, Limits, crc32::crc32};

pub use header_map::HeaderMap;

/// Protocol byte of Bolt v1.
pub const PROTOCOL_V1: u8 = 0x01;
/// Protocol byte of Bolt v2.
pub const PROTOCOL_V2: u8 = 0x02;
/// Bolt v1 request (and heartbeat) header length.
pub const REQUEST_HEADER_LEN_V1: usize = 22;
/// Bolt v1 response (and heartbeat ack) header length.
pub const RESPONSE_HEADER_LEN_V1: usize = 20;
/// Bolt v2 request header length.
pub const REQUEST_HEADER_LEN_V2: usize = 24;
/// Bolt v2 response header length.
pub const RESPONSE_HEADER_LEN_V2: usize = 22;
/// `codec` byte for Hessian 2.
pub const CODEC_HESSIAN2: u8 = 1;
/// `codec` byte for protobuf.
pub const CODEC_PROTOBUF: u8 = 11;
/// The command version (`ver2`) every known implementation writes.
pub const CMD_VERSION: u8 = 1;

const TYPE_RESPONSE: u8 = 0;
const TYPE_REQUEST: u8 = 1;
const TYPE_ONEWAY: u8 = 2;
const CMD_HEARTBEAT: u16 = 0;
const CMD_REQUEST: u16 = 1;
const CMD_RESPONSE: u16 = 2;

/// Response status codes, as SOFABolt's `ResponseStatus` numbers them.
pub mod status {
    /// The call succeeded.
    pub const SUCCESS: u16 = 0x0000;
    /// An error was caught.
    pub const ERROR: u16 = 0x0001;
    /// The server's handler threw.
    pub const SERVER_EXCEPTION: u16 = 0x0002;
    /// Unknown failure.
    pub const UNKNOWN: u16 = 0x0003;
    /// The server's thread pool is busy (the proxy's answer to overflow).
    pub const SERVER_THREADPOOL_BUSY: u16 = 0x0004;
    /// Communication error.
    pub const ERROR_COMM: u16 = 0x0005;
    /// No processor for the request (the proxy's answer to no route / no healthy host).
    pub const NO_PROCESSOR: u16 = 0x0006;
    /// Timed out (the proxy's answer to an upstream timeout).
    pub const TIMEOUT: u16 = 0x0007;
    /// The client could not send.
    pub const CLIENT_SEND_ERROR: u16 = 0x0008;
    /// Encoding or decoding failed.
    pub const CODEC_EXCEPTION: u16 = 0x0009;
    /// The connection closed.
    pub const CONNECTION_CLOSED: u16 = 0x0010;
    /// The server failed to serialize the response.
    pub const SERVER_SERIAL_EXCEPTION: u16 = 0x0011;
    /// The server failed to deserialize the request.
    pub const SERVER_DESERIAL_EXCEPTION: u16 = 0x0012;

    /// SOFABolt's name of a response status, for messages and logs (`"timeout"`,
    /// `"no processor"`, …); `"not a known status"` for a code `ResponseStatus` does not
    /// define.
    pub fn name(status: u16) -> &'static str {
        match status {
            SUCCESS => "success",
            ERROR => "error",
            SERVER_EXCEPTION => "server exception",
            UNKNOWN => "unknown",
            SERVER_THREADPOOL_BUSY => "server thread pool busy",
            ERROR_COMM => "communication error",
            NO_PROCESSOR => "no processor",
            TIMEOUT => "timeout",
            CLIENT_SEND_ERROR => "client send error",
            CODEC_EXCEPTION => "codec exception",
            CONNECTION_CLOSED => "connection closed",
            SERVER_SERIAL_EXCEPTION => "server serialization exception",
            SERVER_DESERIAL_EXCEPTION => "server deserialization exception",
            _ => "not a known status",
        }
    }
}

/// Which Bolt protocol a frame uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Protocol byte `0x01`.
    V1,
    /// Protocol byte `0x02`, with its protocol version and switch byte.
    V2 {
        /// `ver1`: 1 is v1-equivalent, 2 may carry a CRC32.
        ver1: u8,
        /// Protocol switches; bit 0 turns the CRC32 on (only with `ver1 == 2`).
        switch: u8,
    },
}

impl Version {
    /// Whether frames of this version end with a CRC32.
    pub fn has_crc(self) -> bool {
        matches!(self, Version::V2 { ver1: 2, switch } if switch & 1 == 1)
    }

    fn protocol_byte(self) -> u8 {
        match self {
            Version::V1 => PROTOCOL_V1,
            Version::V2 { .. } => PROTOCOL_V2,
        }
    }

    /// Offset shift of every field after the protocol byte (v2's `ver1`).
    fn shift(self) -> usize {
        match self {
            Version::V1 => 0,
            Version::V2 { .. } => 1,
        }
    }

    /// Offset of the timeout/status field.
    fn fixed_end(self) -> usize {
        match self {
            Version::V1 => 10,
            Version::V2 { .. } => 12,
        }
    }
}

/// What a frame is, with the field only that kind carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A two-way request (type 1, cmdcode 1).
    Request {
        /// Client-side timeout in ms; -1 for none.
        timeout_ms: i32,
    },
    /// A one-way request (type 2, cmdcode 1): no response follows.
    OneWay {
        /// Client-side timeout in ms; -1 for none.
        timeout_ms: i32,
    },
    /// A heartbeat (type 1, cmdcode 0).
    Heartbeat {
        /// Timeout in ms; SOFABolt sends -1, sofa-bolt-node 3000.
        timeout_ms: i32,
    },
    /// A response (type 0, cmdcode 2).
    Response {
        /// One of [`status`].
        status: u16,
    },
    /// A heartbeat acknowledgement (type 0, cmdcode 0).
    HeartbeatAck {
        /// One of [`status`], normally `SUCCESS`.
        status: u16,
    },
}

impl Kind {
    fn wire(self) -> (u8, u16) {
        match self {
            Kind::Request { .. } => (TYPE_REQUEST, CMD_REQUEST),
            Kind::OneWay { .. } => (TYPE_ONEWAY, CMD_REQUEST),
            Kind::Heartbeat { .. } => (TYPE_REQUEST, CMD_HEARTBEAT),
            Kind::Response { .. } => (TYPE_RESPONSE, CMD_RESPONSE),
            Kind::HeartbeatAck { .. } => (TYPE_RESPONSE, CMD_HEARTBEAT),
        }
    }

    /// Whether this frame travels from client to server.
    pub fn is_request(self) -> bool {
        !self.is_response()
    }

    /// Whether this frame answers a request.
    pub fn is_response(self) -> bool {
        matches!(self, Kind::Response { .. } | Kind::HeartbeatAck { .. })
    }
}

/// One Bolt frame. `class`, `headers` and `content` are slices of the received frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// v1 or v2.
    pub version: Version,
    /// Request, one-way, response, heartbeat or heartbeat ack.
    pub kind: Kind,
    /// `ver2`, the command version; [`CMD_VERSION`] in practice.
    pub cmd_version: u8,
    /// Correlates a response with its request on one connection.
    pub request_id: u32,
    /// Serialization of `content`: [`CODEC_HESSIAN2`] or [`CODEC_PROTOBUF`].
    pub codec: u8,
    /// Java class of `content`, e.g. `com.alipay.sofa.rpc.core.request.SofaRequest`.
    pub class: Bytes,
    /// The header map (`service`, `sofa_head_method_name`, …).
    pub headers: HeaderMap,
    /// The serialized request or response object.
    pub content: Bytes,
}

impl Frame {
    /// A v1 Hessian2 two-way request.
    pub fn request(
        request_id: u32,
        timeout_ms: i32,
        class: impl Into<Bytes>,
        headers: HeaderMap,
        content: impl Into<Bytes>,
    ) -> Self {
        Self {
            version: Version::V1,
            kind: Kind::Request { timeout_ms },
            cmd_version: CMD_VERSION,
            request_id,
            codec: CODEC_HESSIAN2,
            class: class.into(),
            headers,
            content: content.into(),
        }
    }

    /// A v1 heartbeat, as SOFABolt sends it: timeout -1, nothing after the header.
    pub fn heartbeat(request_id: u32) -> Self {
        Self {
            version: Version::V1,
            kind: Kind::Heartbeat { timeout_ms: -1 },
            cmd_version: CMD_VERSION,
            request_id,
            codec: CODEC_HESSIAN2,
            class: Bytes::new(),
            headers: HeaderMap::new(),
            content: Bytes::new(),
        }
    }

    /// The acknowledgement of this heartbeat: same version, id and codec, status SUCCESS.
    pub fn heartbeat_ack(&self) -> Self {
        self.answer(Kind::HeartbeatAck {
            status: status::SUCCESS,
        })
    }

    /// An empty response to this request with `status` (e.g. [`status::NO_PROCESSOR`] for a
    /// proxy that has no route): same version, id and codec; class, headers and content are
    /// left empty for the caller to fill.
    pub fn response(&self, status: u16) -> Self {
        self.answer(Kind::Response { status })
    }

    fn answer(&self, kind: Kind) -> Self {
        Self {
            version: self.version,
            kind,
            cmd_version: self.cmd_version,
            request_id: self.request_id,
            codec: self.codec,
            class: Bytes::new(),
            headers: HeaderMap::new(),
            content: Bytes::new(),
        }
    }

    /// The timeout the caller gave a two-way or one-way request: its `timeout_ms` when
    /// positive. `None` for no timeout (-1, or any value ≤ 0), heartbeats and responses.
    pub fn timeout(&self) -> Option<Duration> {
        match self.kind {
            Kind::Request { timeout_ms } | Kind::OneWay { timeout_ms } => u64::try_from(timeout_ms)
                .ok()
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis),
            _ => None,
        }
    }

    /// Bytes this frame takes on the wire.
    pub fn encoded_len(&self) -> usize {
        header_len(self.version, self.kind.is_response())
            + self.class.len()
            + self.headers.encoded_len()
            + self.content.len()
            + if self.version.has_crc() { 4 } else { 0 }
    }
}

/// Appends `frame` to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
    let class_len = u16::try_from(frame.class.len())
        .map_err(|_| too_large("class", frame.class.len(), 65535))?;
    let header_bytes = frame.headers.encoded_len();
    let header_len =
        u16::try_from(header_bytes).map_err(|_| too_large("header map", header_bytes, 65535))?;
    let content_len = i32::try_from(frame.content.len())
        .map_err(|_| too_large("content", frame.content.len(), i32::MAX as usize))?;

    let start = dst.len();
    dst.reserve(frame.encoded_len());
    dst.put_u8(frame.version.protocol_byte());
    if let Version::V2 { ver1, .. } = frame.version {
        dst.put_u8(ver1);
    }
    let (rpc_type, cmd_code) = frame.kind.wire();
    dst.put_u8(rpc_type);
    dst.put_u16(cmd_code);
    dst.put_u8(frame.cmd_version);
    dst.put_u32(frame.request_id);
    dst.put_u8(frame.codec);
    if let Version::V2 { switch, .. } = frame.version {
        dst.put_u8(switch);
    }
    match frame.kind {
        Kind::Request { timeout_ms }
        | Kind::OneWay { timeout_ms }
        | Kind::Heartbeat { timeout_ms } => dst.put_i32(timeout_ms),
        Kind::Response { status } | Kind::HeartbeatAck { status } => dst.put_u16(status),
    }
    dst.put_u16(class_len);
    dst.put_u16(header_len);
    dst.put_i32(content_len);
    dst.put_slice(&frame.class);
    frame.headers.encode(dst);
    dst.put_slice(&frame.content);
    if frame.version.has_crc() {
        let crc = crc32(&dst[start..]);
        dst.put_u32(crc);
    }
    Ok(())
}

/// Decodes one frame from the front of `src`: `Ok(None)` until a whole frame is buffered,
/// then that frame, split off `src`. On error nothing is consumed.
pub fn decode(src: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, DecodeError> {
    let Some(layout) = layout(src)? else {
        return Ok(None);
    };
    layout.check(limits)?;
    if src.len() < layout.total {
        return Ok(None);
    }
    if layout.version.has_crc() {
        check_crc(&src[..layout.total])?;
    }
    let header_start = layout.header_len + layout.class_len;
    let content_start = header_start + layout.headers_len;
    let ranges = HeaderMap::scan(&src[header_start..content_start])?;

    let raw = src.split_to(layout.total).freeze();
    Ok(Some(Frame {
        version: layout.version,
        kind: layout.kind,
        cmd_version: layout.cmd_version,
        request_id: layout.request_id,
        codec: layout.codec,
        class: raw.slice(layout.header_len..header_start),
        headers: HeaderMap::from_scan(&raw.slice(header_start..content_start), ranges),
        content: raw.slice(content_start..content_start + layout.content_len),
    }))
}

/// The length of the frame at the front of `buf` once its fixed header is buffered (the
/// rest may still be in flight), checked against `limits`; `Ok(None)` while the header is
/// incomplete. Lets a proxy forward a frame without decoding it.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    match layout(buf)? {
        None => Ok(None),
        Some(layout) => {
            layout.check(limits)?;
            Ok(Some(layout.total))
        }
    }
}

/// The request id of the frame at the front of `buf`, if enough of it is there.
pub fn request_id(buf: &[u8]) -> Option<u32> {
    let at = id_offset(*buf.first()?)?;
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Rewrites the request id of the frame at the front of `frame` in place, without decoding
/// it — what a proxy does per upstream connection. A v2 frame with a CRC32 has its checksum
/// recomputed, so `frame` must then hold the whole frame; otherwise the fixed header is enough.
pub fn set_request_id(frame: &mut [u8], request_id: u32) -> Result<(), DecodeError> {
    let Some(layout) = layout(frame)? else {
        return Err(DecodeError::Incomplete {
            needed: min_header_len(frame),
            available: frame.len(),
        });
    };
    let needed = if layout.version.has_crc() {
        layout.total
    } else {
        layout.header_len
    };
    if frame.len() < needed {
        return Err(DecodeError::Incomplete {
            needed,
            available: frame.len(),
        });
    }
    let at = 5 + layout.version.shift();
    frame[at..at + 4].copy_from_slice(&request_id.to_be_bytes());
    if layout.version.has_crc() {
        let body_end = layout.total - 4;
        let crc = crc32(&frame[..body_end]);
        frame[body_end..layout.total].copy_from_slice(&crc.to_be_bytes());
    }
    Ok(())
}

fn id_offset(protocol: u8) -> Option<usize> {
    match protocol {
        PROTOCOL_V1 => Some(5),
        PROTOCOL_V2 => Some(6),
        _ => None,
    }
}

fn header_len(version: Version, response: bool) -> usize {
    match (version, response) {
        (Version::V1, false) => REQUEST_HEADER_LEN_V1,
        (Version::V1, true) => RESPONSE_HEADER_LEN_V1,
        (Version::V2 { .. }, false) => REQUEST_HEADER_LEN_V2,
        (Version::V2 { .. }, true) => RESPONSE_HEADER_LEN_V2,
    }
}

/// The smallest header the bytes seen so far could start.
fn min_header_len(buf: &[u8]) -> usize {
    match buf.first() {
        Some(&PROTOCOL_V2) => RESPONSE_HEADER_LEN_V2,
        _ => RESPONSE_HEADER_LEN_V1,
    }
}

/// The fixed-header fields of a frame, and where its parts are.
struct Layout {
    version: Version,
    kind: Kind,
    cmd_version: u8,
    request_id: u32,
    codec: u8,
    header_len: usize,
    class_len: usize,
    headers_len: usize,
    content_len: usize,
    total: usize,
}

impl Layout {
    fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        let over = |what, len: usize, max: usize| DecodeError::Oversized {
            what,
            len: len as u64,
            max: max as u64,
        };
        if self.class_len > limits.max_class_bytes {
            return Err(over("bolt class", self.class_len, limits.max_class_bytes));
        }
        if self.headers_len > limits.max_header_bytes {
            return Err(over(
                "bolt header map",
                self.headers_len,
                limits.max_header_bytes,
            ));
        }
        if self.total > limits.max_frame_bytes {
            return Err(over("bolt frame", self.total, limits.max_frame_bytes));
        }
        Ok(())
    }
}

/// Reads the fixed header, validating what is there as early as possible; `None` while it
/// is incomplete.
fn layout(buf: &[u8]) -> Result<Option<Layout>, DecodeError> {
    let Some(&protocol) = buf.first() else {
        return Ok(None);
    };
    let version = match protocol {
        PROTOCOL_V1 => Version::V1,
        PROTOCOL_V2 => match buf.get(1..12) {
            Some(b) => Version::V2 {
                ver1: b[0],
                switch: b[10],
            },
            None => {
                // ver1 and switch come later; check the type byte if it is here.
                if let Some(&rpc_type) = buf.get(2) {
                    check_type(rpc_type)?;
                }
                return Ok(None);
            }
        },
        other => return Err(DecodeError::BadBoltProtocol(other)),
    };
    let s = version.shift();
    let Some(&rpc_type) = buf.get(1 + s) else {
        return Ok(None);
    };
    check_type(rpc_type)?;
    let header_len = header_len(version, rpc_type == TYPE_RESPONSE);
    let Some(h) = buf.get(..header_len) else {
        return Ok(None);
    };
    let u16_at = |at: usize| u16::from_be_bytes([h[at], h[at + 1]]);
    let u32_at = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let cmd_code = u16_at(2 + s);
    let p = version.fixed_end();
    let kind = match (rpc_type, cmd_code) {
        (TYPE_REQUEST, CMD_REQUEST) => Kind::Request {
            timeout_ms: u32_at(p) as i32,
        },
        (TYPE_ONEWAY, CMD_REQUEST) => Kind::OneWay {
            timeout_ms: u32_at(p) as i32,
        },
        (TYPE_REQUEST, CMD_HEARTBEAT) => Kind::Heartbeat {
            timeout_ms: u32_at(p) as i32,
        },
        (TYPE_RESPONSE, CMD_RESPONSE) => Kind::Response { status: u16_at(p) },
        (TYPE_RESPONSE, CMD_HEARTBEAT) => Kind::HeartbeatAck { status: u16_at(p) },
        (rpc_type, cmd_code) => {
            return Err(DecodeError::UnknownBoltCommand { rpc_type, cmd_code });
        }
    };
    let lengths = if kind.is_response() { p + 2 } else { p + 4 };
    let class_len = usize::from(u16_at(lengths));
    let headers_len = usize::from(u16_at(lengths + 2));
    let content_len = u32_at(lengths + 4) as i32;
    let content_len = usize::try_from(content_len).map_err(|_| DecodeError::NegativeLength {
        what: "bolt content",
        len: i64::from(content_len),
    })?;
    let total =
        header_len + class_len + headers_len + content_len + if version.has_crc() { 4 } else { 0 };
    Ok(Some(Layout {
        version,
        kind,
        cmd_version: h[4 + s],
        request_id: u32_at(5 + s),
        codec: h[9 + s],
        header_len,
        class_len,
        headers_len,
        content_len,
        total,
    }))
}

fn check_type(rpc_type: u8) -> Result<(), DecodeError> {
    match rpc_type {
        TYPE_RESPONSE | TYPE_REQUEST | TYPE_ONEWAY => Ok(()),
        rpc_type => Err(DecodeError::UnknownBoltType(rpc_type)),
    }
}

fn check_crc(frame: &[u8]) -> Result<(), DecodeError> {
    let (body, tail) = frame.split_at(frame.len() - 4);
    let carried = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
    let computed = crc32(body);
    if carried == computed {
        Ok(())
    } else {
        Err(DecodeError::CrcMismatch { carried, computed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(version: Version, kind: Kind) -> Frame {
        let mut headers = HeaderMap::new();
        headers.insert("service", "com.example.Echo:1.0");
        headers.push("nothing", None);
        Frame {
            version,
            kind,
            cmd_version: CMD_VERSION,
            request_id: 0x0102_0304,
            codec: CODEC_HESSIAN2,
            class: Bytes::from_static(b"com.alipay.sofa.rpc.core.request.SofaRequest"),
            headers,
            content: Bytes::from_static(b"\x4e"),
        }
    }

    #[test]
    fn round_trips_byte_by_byte() {
        let versions = [
            Version::V1,
            Version::V2 { ver1: 1, switch: 0 },
            Version::V2 { ver1: 2, switch: 1 },
        ];
        let kinds = [
            Kind::Request { timeout_ms: 3000 },
            Kind::OneWay { timeout_ms: -1 },
            Kind::Heartbeat { timeout_ms: -1 },
            Kind::Response {
                status: status::NO_PROCESSOR,
            },
            Kind::HeartbeatAck { status: 0 },
        ];
        for version in versions {
            for kind in kinds {
                let frame = sample(version, kind);
                let mut wire = BytesMut::new();
                encode(&frame, &mut wire).expect("encode");
                assert_eq!(wire.len(), frame.encoded_len());
                // Feed one byte at a time: None until the last byte, then exactly the frame.
                let mut buf = BytesMut::new();
                for (i, b) in wire.iter().enumerate() {
                    buf.put_u8(*b);
                    let got = decode(&mut buf, &Limits::default()).expect("decode");
                    if i + 1 < wire.len() {
                        assert_eq!(got, None, "{version:?} {kind:?} at {i}");
                    } else {
                        assert_eq!(got.as_ref(), Some(&frame));
                    }
                }
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn rewrites_request_id_and_crc() {
        let frame = sample(
            Version::V2 { ver1: 2, switch: 1 },
            Kind::Request { timeout_ms: 10 },
        );
        let mut wire = BytesMut::new();
        encode(&frame, &mut wire).expect("encode");
        assert_eq!(request_id(&wire), Some(0x0102_0304));
        set_request_id(&mut wire, 77).expect("rewrite");
        assert_eq!(request_id(&wire), Some(77));
        let back = decode(&mut wire, &Limits::default())
            .expect("crc still valid")
            .expect("whole frame");
        assert_eq!(back.request_id, 77);
        // With a CRC the whole frame is needed.
        let mut short = [0u8; 24];
        let mut full = BytesMut::new();
        encode(&frame, &mut full).expect("encode");
        short.copy_from_slice(&full[..24]);
        assert!(matches!(
            set_request_id(&mut short, 1),
            Err(DecodeError::Incomplete { .. })
        ));
    }

    #[test]
    fn refuses_oversize_before_body_arrives() {
        let mut header = BytesMut::new();
        header.put_slice(&[1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0x0b, 0xb8, 0, 0, 0, 0]);
        header.put_i32(i32::MAX);
        assert!(matches!(
            decode(&mut header, &Limits::default()),
            Err(DecodeError::Oversized {
                what: "bolt frame",
                ..
            })
        ));
        let mut negative = BytesMut::new();
        negative.put_slice(&[1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0x0b, 0xb8, 0, 0, 0, 0]);
        negative.put_i32(-5);
        assert!(matches!(
            decode(&mut negative, &Limits::default()),
            Err(DecodeError::NegativeLength { .. })
        ));
        let mut class =
            BytesMut::from(&[1u8, 1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0xff, 0xff][..]);
        class.put_slice(&[0; 6]);
        assert!(matches!(
            decode(&mut class, &Limits::default()),
            Err(DecodeError::Oversized {
                what: "bolt class",
                ..
            })
        ));
    }

    #[test]
    fn rejects_garbage_early() {
        let limits = Limits::default();
        assert_eq!(
            decode(&mut BytesMut::from(&b"GET /"[..]), &limits),
            Err(DecodeError::BadBoltProtocol(b'G'))
        );
        assert!(matches!(
            decode(&mut BytesMut::from(&[1u8, 9][..]), &limits),
            Err(DecodeError::UnknownBoltType(9))
        ));
        assert!(matches!(
            decode(&mut BytesMut::from(&[2u8, 1, 7][..]), &limits),
            Err(DecodeError::UnknownBoltType(7))
        ));
    }

    #[test]
    fn status_names() {
        let cases = [
            (status::SUCCESS, "success"),
            (status::ERROR, "error"),
            (status::SERVER_EXCEPTION, "server exception"),
            (status::UNKNOWN, "unknown"),
            (status::SERVER_THREADPOOL_BUSY, "server thread pool busy"),
            (status::ERROR_COMM, "communication error"),
            (status::NO_PROCESSOR, "no processor"),
            (status::TIMEOUT, "timeout"),
            (status::CLIENT_SEND_ERROR, "client send error"),
            (status::CODEC_EXCEPTION, "codec exception"),
            (status::CONNECTION_CLOSED, "connection closed"),
            (
                status::SERVER_SERIAL_EXCEPTION,
                "server serialization exception",
            ),
            (
                status::SERVER_DESERIAL_EXCEPTION,
                "server deserialization exception",
            ),
            // 0x000a-0x000f are unassigned: the codes jump from 0x0009 to 0x0010.
            (0x000a, "not a known status"),
            (0x0013, "not a known status"),
            (u16::MAX, "not a known status"),
        ];
        for (code, want) in cases {
            assert_eq!(status::name(code), want, "status {code:#06x}");
        }
    }

    #[test]
    fn caller_timeouts() {
        let cases = [
            (Kind::Request { timeout_ms: 700 }, Some(700)),
            (Kind::OneWay { timeout_ms: 1 }, Some(1)),
            (
                Kind::Request {
                    timeout_ms: i32::MAX,
                },
                Some(i32::MAX as u64),
            ),
            (Kind::Request { timeout_ms: 0 }, None),
            (Kind::Request { timeout_ms: -1 }, None),
            (
                Kind::OneWay {
                    timeout_ms: i32::MIN,
                },
                None,
            ),
            (Kind::Heartbeat { timeout_ms: 3000 }, None),
            (Kind::Response { status: 0 }, None),
            (Kind::HeartbeatAck { status: 0 }, None),
        ];
        for (kind, want) in cases {
            let frame = sample(Version::V1, kind);
            assert_eq!(
                frame.timeout(),
                want.map(std::time::Duration::from_millis),
                "{kind:?}"
            );
        }
        assert_eq!(Frame::heartbeat(1).timeout(), None);
    }

    #[test]
    fn bad_crc_is_an_error() {
        let frame = sample(
            Version::V2 { ver1: 2, switch: 1 },
            Kind::Response { status: 0 },
        );
        let mut wire = BytesMut::new();
        encode(&frame, &mut wire).expect("encode");
        let last = wire.len() - 1;
        wire[last] ^= 0xff;
        assert!(matches!(
            decode(&mut wire, &Limits::default()),
            Err(DecodeError::CrcMismatch { .. })
        ));
    }
}
