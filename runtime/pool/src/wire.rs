//! What a multiplexed connection needs to know about its protocol, for Bolt and Dubbo: how a
//! frame is framed and what it is (request, one-way request, response, heartbeat or its
//! acknowledgement), where its request id is, and how heartbeats are built and answered. Shared
//! by the pools (channels, upstreams) and the proxy core's listeners. Not for a frame's meaning
//! beyond that (routing, status mapping), which the channel and proxy modules own.

use bytes::{Bytes, BytesMut};
use outrigger_codec::{DecodeError, EncodeError, Limits, bolt, dubbo};

/// What a frame is, as a connection sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A request; `one_way` ones get no answer.
    Request { one_way: bool },
    /// The answer to a request.
    Response,
    /// A heartbeat that expects an acknowledgement.
    Heartbeat,
    /// The acknowledgement of a heartbeat.
    HeartbeatAck,
    /// Anything else (a Dubbo event other than a heartbeat): ignored.
    Other,
}

/// A multiplexed wire protocol.
pub trait Wire: Send + Sync + 'static {
    /// `bolt` or `dubbo`, for logs, errors and metric labels.
    const NAME: &'static str;
    /// The largest request id the protocol carries.
    const MAX_ID: u64;
    /// A decoded frame.
    type Frame: Clone + Send + Sync + std::fmt::Debug + 'static;

    /// Splits one whole frame off the front of `buf` (see the codec's `decode`).
    fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Self::Frame>, DecodeError>;
    /// The frame's bytes.
    fn encode(frame: &Self::Frame) -> Result<Bytes, EncodeError>;
    /// What the frame is.
    fn kind(frame: &Self::Frame) -> FrameKind;
    /// The frame's request id.
    fn id(frame: &Self::Frame) -> u64;
    /// Sets the frame's request id (at most [`Self::MAX_ID`]).
    fn set_id(frame: &mut Self::Frame, id: u64);
    /// The response status code, for metrics (0 for non-responses).
    fn status(frame: &Self::Frame) -> u32;
    /// A heartbeat with this id.
    fn heartbeat(id: u64) -> Self::Frame;
    /// The acknowledgement of a heartbeat.
    fn heartbeat_ack(heartbeat: &Self::Frame) -> Self::Frame;
}

/// SOFA Bolt (v1 and v2).
#[derive(Debug)]
pub struct Bolt;

impl Wire for Bolt {
    const NAME: &'static str = "bolt";
    const MAX_ID: u64 = u32::MAX as u64;
    type Frame = bolt::Frame;

    fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<bolt::Frame>, DecodeError> {
        bolt::decode(buf, limits)
    }

    fn encode(frame: &bolt::Frame) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(frame.encoded_len());
        bolt::encode(frame, &mut out)?;
        Ok(out.freeze())
    }

    fn kind(frame: &bolt::Frame) -> FrameKind {
        match frame.kind {
            bolt::Kind::Request { .. } => FrameKind::Request { one_way: false },
            bolt::Kind::OneWay { .. } => FrameKind::Request { one_way: true },
            bolt::Kind::Response { .. } => FrameKind::Response,
            bolt::Kind::Heartbeat { .. } => FrameKind::Heartbeat,
            bolt::Kind::HeartbeatAck { .. } => FrameKind::HeartbeatAck,
        }
    }

    fn id(frame: &bolt::Frame) -> u64 {
        u64::from(frame.request_id)
    }

    fn set_id(frame: &mut bolt::Frame, id: u64) {
        frame.request_id = u32::try_from(id).unwrap_or(u32::MAX);
    }

    fn status(frame: &bolt::Frame) -> u32 {
        match frame.kind {
            bolt::Kind::Response { status } | bolt::Kind::HeartbeatAck { status } => {
                u32::from(status)
            }
            _ => 0,
        }
    }

    fn heartbeat(id: u64) -> bolt::Frame {
        bolt::Frame::heartbeat(u32::try_from(id).unwrap_or(u32::MAX))
    }

    fn heartbeat_ack(heartbeat: &bolt::Frame) -> bolt::Frame {
        heartbeat.heartbeat_ack()
    }
}

/// Dubbo 2.
#[derive(Debug)]
pub struct Dubbo;

impl Wire for Dubbo {
    const NAME: &'static str = "dubbo";
    // Dubbo ids are Java longs; stay positive.
    const MAX_ID: u64 = i64::MAX as u64;
    type Frame = dubbo::Frame;

    fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<dubbo::Frame>, DecodeError> {
        dubbo::decode(buf, limits)
    }

    fn encode(frame: &dubbo::Frame) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::with_capacity(frame.encoded_len());
        dubbo::encode(frame, &mut out)?;
        Ok(out.freeze())
    }

    fn kind(frame: &dubbo::Frame) -> FrameKind {
        match (frame.is_request, frame.event) {
            (true, true) if frame.is_heartbeat() && frame.two_way => FrameKind::Heartbeat,
            (true, true) => FrameKind::Other,
            (true, false) => FrameKind::Request {
                one_way: !frame.two_way,
            },
            (false, true) if frame.is_heartbeat() => FrameKind::HeartbeatAck,
            (false, _) => FrameKind::Response,
        }
    }

    fn id(frame: &dubbo::Frame) -> u64 {
        frame.request_id
    }

    fn set_id(frame: &mut dubbo::Frame, id: u64) {
        frame.request_id = id;
    }

    fn status(frame: &dubbo::Frame) -> u32 {
        if frame.is_request {
            0
        } else {
            u32::from(frame.status)
        }
    }

    fn heartbeat(id: u64) -> dubbo::Frame {
        dubbo::Frame::heartbeat(id)
    }

    fn heartbeat_ack(heartbeat: &dubbo::Frame) -> dubbo::Frame {
        heartbeat.heartbeat_reply()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_frames() {
        let req = bolt::Frame::request(1, 100, "C", bolt::HeaderMap::new(), "x");
        assert_eq!(Bolt::kind(&req), FrameKind::Request { one_way: false });
        let hb = Bolt::heartbeat(7);
        assert_eq!(Bolt::kind(&hb), FrameKind::Heartbeat);
        assert_eq!(Bolt::id(&hb), 7);
        assert_eq!(
            Bolt::kind(&Bolt::heartbeat_ack(&hb)),
            FrameKind::HeartbeatAck
        );
        let resp = req.response(bolt::status::TIMEOUT);
        assert_eq!(Bolt::kind(&resp), FrameKind::Response);
        assert_eq!(Bolt::status(&resp), 7);

        let call = dubbo::Frame::request(5, Bytes::from_static(b"N"));
        assert_eq!(Dubbo::kind(&call), FrameKind::Request { one_way: false });
        let mut one_way = call.clone();
        one_way.two_way = false;
        assert_eq!(Dubbo::kind(&one_way), FrameKind::Request { one_way: true });
        let hb = Dubbo::heartbeat(9);
        assert_eq!(Dubbo::kind(&hb), FrameKind::Heartbeat);
        let ack = Dubbo::heartbeat_ack(&hb);
        assert_eq!(Dubbo::kind(&ack), FrameKind::HeartbeatAck);
        assert_eq!(Dubbo::status(&ack), 20);
        assert_eq!(
            Dubbo::kind(&call.error_response(dubbo::status::SERVICE_NOT_FOUND, "x")),
            FrameKind::Response
        );
        let mut readonly = dubbo::Frame::heartbeat(3);
        readonly.body = Bytes::from_static(b"\x08R");
        assert_eq!(Dubbo::kind(&readonly), FrameKind::Other);
    }

    #[test]
    fn ids_round_trip_through_bytes() {
        let mut f = Dubbo::heartbeat(1);
        Dubbo::set_id(&mut f, 1 << 40);
        let mut buf = BytesMut::from(&Dubbo::encode(&f).expect("encode")[..]);
        let back = Dubbo::decode(&mut buf, &Limits::default())
            .expect("decode")
            .expect("whole");
        assert_eq!(Dubbo::id(&back), 1 << 40);
        let mut b = Bolt::heartbeat(1);
        Bolt::set_id(&mut b, u64::from(u32::MAX));
        assert_eq!(Bolt::id(&b), u64::from(u32::MAX));
    }
}
