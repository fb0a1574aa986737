//! Bolt frames produced by the reference implementation, decoded and re-encoded.
//!
//! Source: npm `sofa-bolt-node@2.0.1` (with `sofa-hessian-node@2.2.1`, its Hessian 3.1.3
//! content encoder), run under Node 20 through `require('sofa-bolt-node/lib/protocol')`:
//! `requestEncode(id, req, opts)`, `responseEncode(id, res, opts)`, `heartbeatEncode(id, hb,
//! opts)`, `heartbeatAckEncode(id, opts)` and `require('sofa-bolt-node/lib/simple_map_serializer')
//! .encode(map)`, with `opts = { protocolType: 'bolt' | 'bolt2', codecType: 'hessian2',
//! boltVersion, crcEnable }` and
//! `req = { serverSignature: 'com.alipay.test.TestService:1.0', methodName: 'plus', args: [1, 2],
//! timeout: 3000, targetAppName: 'pb' }`. Each vector names its call.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::hex;
use outrigger_codec::Limits;
use outrigger_codec::bolt::{self, Frame, HeaderMap, Kind, Version, status};

const SOFA_REQUEST: &[u8] = b"com.alipay.sofa.rpc.core.request.SofaRequest";
const SOFA_RESPONSE: &[u8] = b"com.alipay.sofa.rpc.core.response.SofaResponse";
const SERVICE: &[u8] = b"com.alipay.test.TestService:1.0";

/// Decodes `wire` as exactly one frame, checks that re-encoding gives the same bytes, and
/// returns the frame.
fn decode_exact(wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = bolt::decode(&mut buf, &Limits::default())
        .expect("valid frame")
        .expect("whole frame");
    assert!(buf.is_empty(), "decode consumed exactly one frame");
    assert_eq!(frame.encoded_len(), wire.len());
    let mut out = BytesMut::new();
    bolt::encode(&frame, &mut out).expect("encode");
    assert_eq!(
        &out[..],
        wire,
        "our encoding of the decoded frame matches the reference"
    );
    // Every strict prefix is "need more bytes", never an error.
    for cut in 0..wire.len() {
        let mut part = BytesMut::from(&wire[..cut]);
        assert_eq!(
            bolt::decode(&mut part, &Limits::default()),
            Ok(None),
            "prefix {cut}"
        );
    }
    frame
}

fn service_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("service", "com.alipay.test.TestService:1.0");
    headers
}

/// `requestEncode(1, req, { protocolType: 'bolt', boltVersion: 1, crcEnable: false })`
const V1_REQUEST: &str = "
        0101000101000000010100000bb8002c002e000000c8636f6d2e616c697061792e736f66612e7270632e636f72652e72
        6571756573742e536f66615265717565737400000007736572766963650000001f636f6d2e616c697061792e74657374
        2e54657374536572766963653a312e304fbc636f6d2e616c697061792e736f66612e7270632e636f72652e7265717565
        73742e536f666152657175657374950a6d6574686f644e616d650d6d6574686f64417267536967731774617267657453
        657276696365556e697175654e616d650d7461726765744170704e616d650c7265717565737450726f70736f9004706c
        7573567400115b6a6176612e6c616e672e537472696e676e0203696e7403696e747a1f636f6d2e616c697061792e7465
        73742e54657374536572766963653a312e300270624e9192
";

#[test]
fn v1_request() {
    let wire = hex(V1_REQUEST);
    let frame = decode_exact(&wire);
    assert_eq!(frame.version, Version::V1);
    assert_eq!(frame.kind, Kind::Request { timeout_ms: 3000 });
    assert_eq!(frame.request_id, 1);
    assert_eq!(frame.codec, bolt::CODEC_HESSIAN2);
    assert_eq!(frame.class.as_ref(), SOFA_REQUEST);
    assert_eq!(
        frame.headers.get(b"service").map(|v| v.as_ref()),
        Some(SERVICE)
    );
    assert_eq!(frame.headers.len(), 1);
    assert_eq!(frame.content.len(), 200);
    // Built from fields, our encoder produces the same bytes.
    let built = Frame::request(
        1,
        3000,
        SOFA_REQUEST,
        service_headers(),
        frame.content.clone(),
    );
    let mut out = BytesMut::new();
    bolt::encode(&built, &mut out).expect("encode");
    assert_eq!(&out[..], &wire[..]);
    assert_eq!(bolt::request_id(&wire), Some(1));
}

/// `requestEncode(2, { ...req, oneway: true }, { protocolType: 'bolt', boltVersion: 1 })`
const V1_ONEWAY: &str = "
        0102000101000000020100000bb8002c002e000000c8636f6d2e616c697061792e736f66612e7270632e636f72652e72
        6571756573742e536f66615265717565737400000007736572766963650000001f636f6d2e616c697061792e74657374
        2e54657374536572766963653a312e304fbc636f6d2e616c697061792e736f66612e7270632e636f72652e7265717565
        73742e536f666152657175657374950a6d6574686f644e616d650d6d6574686f64417267536967731774617267657453
        657276696365556e697175654e616d650d7461726765744170704e616d650c7265717565737450726f70736f9004706c
        7573567400115b6a6176612e6c616e672e537472696e676e0203696e7403696e747a1f636f6d2e616c697061792e7465
        73742e54657374536572766963653a312e300270624e9192
";

#[test]
fn v1_oneway() {
    let frame = decode_exact(&hex(V1_ONEWAY));
    assert_eq!(frame.kind, Kind::OneWay { timeout_ms: 3000 });
    assert_eq!(frame.request_id, 2);
}

/// `responseEncode(1, { isError: false, appResponse: 3 }, { protocolType: 'bolt' })`
const V1_RESPONSE: &str = "
        010000020100000001010000002e000000000062636f6d2e616c697061792e736f66612e7270632e636f72652e726573
        706f6e73652e536f6661526573706f6e73654fbe636f6d2e616c697061792e736f66612e7270632e636f72652e726573
        706f6e73652e536f6661526573706f6e7365940769734572726f72086572726f724d73670b617070526573706f6e7365
        0d726573706f6e736550726f70736f90464e934e
";

#[test]
fn v1_response() {
    let frame = decode_exact(&hex(V1_RESPONSE));
    assert_eq!(
        frame.kind,
        Kind::Response {
            status: status::SUCCESS
        }
    );
    assert!(frame.kind.is_response());
    assert_eq!(frame.request_id, 1);
    assert_eq!(frame.class.as_ref(), SOFA_RESPONSE);
    assert!(frame.headers.is_empty());
    assert_eq!(frame.content.len(), 98);
}

/// `responseEncode(3, { isError: true, errorMsg: 'boom' }, { protocolType: 'bolt' })`: status
/// SERVER_EXCEPTION with an `RpcServerException` (its stack trace names the generating script).
const V1_RESPONSE_ERROR: &str = "
        010000020100000003010002002e0000000002fa636f6d2e616c697061792e736f66612e7270632e636f72652e726573
        706f6e73652e536f6661526573706f6e73654fc834636f6d2e616c697061792e72656d6f74696e672e7270632e657863
        657074696f6e2e527063536572766572457863657074696f6e930d64657461696c4d6573736167650a737461636b5472
        6163650563617573656f900b4572726f723a20626f6f6d5674001c5b6a6176612e6c616e672e537461636b5472616365
        456c656d656e746e0a4fab6a6176612e6c616e672e537461636b5472616365456c656d656e74940e6465636c6172696e
        67436c6173730a6d6574686f644e616d650866696c654e616d650a6c696e654e756d6265726f9112527063526573706f
        6e7365436f6d6d616e641073657269616c697a65436f6e74656e745300412f746d702f6e706d762f6e6f64655f6d6f64
        756c65732f736f66612d626f6c742d6e6f64652f6c69622f70726f746f636f6c2f7270635f7265735f636d642e6a73c8
        446f91076578706f72747306656e636f64655300382f746d702f6e706d762f6e6f64655f6d6f64756c65732f736f6661
        2d626f6c742d6e6f64652f6c69622f70726f746f636f6c2f76312e6a73c8506f91076578706f72747306656e636f6465
        53003b2f746d702f6e706d762f6e6f64655f6d6f64756c65732f736f66612d626f6c742d6e6f64652f6c69622f70726f
        746f636f6c2f696e6465782e6a73c8556f91076578706f7274730e726573706f6e7365456e636f646553003b2f746d70
        2f6e706d762f6e6f64655f6d6f64756c65732f736f66612d626f6c742d6e6f64652f6c69622f70726f746f636f6c2f69
        6e6465782e6a73b86f91064f626a6563740b3c616e6f6e796d6f75733e152f746d702f6e706d762f67656e5f626f6c74
        2e6a73996f91064d6f64756c65085f636f6d70696c65046e6f6465906f91134d6f64756c652e5f657874656e73696f6e
        732e026a73046e6f6465906f91064d6f64756c65046c6f6164046e6f6465906f91064d6f64756c65055f6c6f6164046e
        6f6465906f910846756e6374696f6e5300226578656375746555736572456e747279506f696e74205b61732072756e4d
        61696e5d046e6f6465907a4e
";

#[test]
fn v1_response_error() {
    let frame = decode_exact(&hex(V1_RESPONSE_ERROR));
    assert_eq!(
        frame.kind,
        Kind::Response {
            status: status::SERVER_EXCEPTION
        }
    );
    assert_eq!(frame.request_id, 3);
    assert_eq!(frame.content.len(), 0x2fa);
}

/// `heartbeatEncode(4, {}, { protocolType: 'bolt' })` — the Node client sends timeout 3000.
const V1_HEARTBEAT: &str = "0101000001000000040100000bb80000000000000000";
/// `heartbeatEncode(5, { timeout: -1 }, { protocolType: 'bolt' })` — as SOFABolt (Java) sends it.
const V1_HEARTBEAT_NO_TIMEOUT: &str = "01010000010000000501ffffffff0000000000000000";
/// `heartbeatAckEncode(4, { protocolType: 'bolt' })`
const V1_HEARTBEAT_ACK: &str = "0100000001000000040100000000000000000000";

#[test]
fn v1_heartbeat_and_ack() {
    let hb = decode_exact(&hex(V1_HEARTBEAT));
    assert_eq!(hb.kind, Kind::Heartbeat { timeout_ms: 3000 });
    assert_eq!(hb.request_id, 4);
    assert_eq!(hex(V1_HEARTBEAT).len(), bolt::REQUEST_HEADER_LEN_V1);

    let hb = decode_exact(&hex(V1_HEARTBEAT_NO_TIMEOUT));
    assert_eq!(hb, Frame::heartbeat(5));

    let ack = decode_exact(&hex(V1_HEARTBEAT_ACK));
    assert_eq!(
        ack.kind,
        Kind::HeartbeatAck {
            status: status::SUCCESS
        }
    );
    assert_eq!(hex(V1_HEARTBEAT_ACK).len(), bolt::RESPONSE_HEADER_LEN_V1);
    // Our ack of the Node heartbeat is byte-identical to the Node ack.
    let mut out = BytesMut::new();
    bolt::encode(&decode_exact(&hex(V1_HEARTBEAT)).heartbeat_ack(), &mut out).expect("encode");
    assert_eq!(&out[..], &hex(V1_HEARTBEAT_ACK)[..]);
}

/// `simple_map_serializer.encode({ service: 'com.alipay.test.TestService:1.0', empty: '', nil: null })`
/// — empty string is length 0, null is length -1.
const HEADER_MAP_WITH_NULL: &str = "
        00000007736572766963650000001f636f6d2e616c697061792e746573742e54657374536572766963653a312e300000
        0005656d70747900000000000000036e696cffffffff
";

#[test]
fn header_map_with_null() {
    let region = hex(HEADER_MAP_WITH_NULL);
    // Wrap the map in a v1 request so it goes through the frame decoder.
    let mut headers = HeaderMap::new();
    headers.insert("service", "com.alipay.test.TestService:1.0");
    headers.insert("empty", "");
    headers.push("nil", None);
    assert_eq!(headers.encoded_len(), region.len());
    let frame = Frame::request(9, -1, SOFA_REQUEST, headers.clone(), Bytes::new());
    let mut wire = BytesMut::new();
    bolt::encode(&frame, &mut wire).expect("encode");
    let start = bolt::REQUEST_HEADER_LEN_V1 + SOFA_REQUEST.len();
    assert_eq!(&wire[start..start + region.len()], &region[..]);
    let back = decode_exact(&wire);
    assert_eq!(back.headers, headers);
    assert_eq!(back.headers.get(b"empty").map(|v| v.len()), Some(0));
    assert_eq!(back.headers.get(b"nil"), None);
    assert_eq!(
        back.headers.iter().nth(2),
        Some((&Bytes::from_static(b"nil"), None))
    );
}

/// `requestEncode(6, req, { protocolType: 'bolt2', boltVersion: 1, crcEnable: false })`
const V2_REQUEST: &str = "
        02010100010100000006010000000bb8002c002e000000c8636f6d2e616c697061792e736f66612e7270632e636f7265
        2e726571756573742e536f66615265717565737400000007736572766963650000001f636f6d2e616c697061792e7465
        73742e54657374536572766963653a312e304fbc636f6d2e616c697061792e736f66612e7270632e636f72652e726571
        756573742e536f666152657175657374950a6d6574686f644e616d650d6d6574686f6441726753696773177461726765
        7453657276696365556e697175654e616d650d7461726765744170704e616d650c7265717565737450726f70736f9004
        706c7573567400115b6a6176612e6c616e672e537472696e676e0203696e7403696e747a1f636f6d2e616c697061792e
        746573742e54657374536572766963653a312e300270624e9192
";

#[test]
fn v2_request() {
    let wire = hex(V2_REQUEST);
    let frame = decode_exact(&wire);
    assert_eq!(frame.version, Version::V2 { ver1: 1, switch: 0 });
    assert_eq!(frame.kind, Kind::Request { timeout_ms: 3000 });
    assert_eq!(frame.request_id, 6);
    assert_eq!(
        frame.headers.get(b"service").map(|v| v.as_ref()),
        Some(SERVICE)
    );
    // Same class, headers and content as the v1 request.
    let v1 = decode_exact(&hex(V1_REQUEST));
    assert_eq!(
        (&frame.class, &frame.headers, &frame.content),
        (&v1.class, &v1.headers, &v1.content)
    );
}

/// `requestEncode(7, req, { protocolType: 'bolt2', boltVersion: 2, crcEnable: true })`
const V2_REQUEST_CRC: &str = "
        02020100010100000007010100000bb8002c002e000000c8636f6d2e616c697061792e736f66612e7270632e636f7265
        2e726571756573742e536f66615265717565737400000007736572766963650000001f636f6d2e616c697061792e7465
        73742e54657374536572766963653a312e304fbc636f6d2e616c697061792e736f66612e7270632e636f72652e726571
        756573742e536f666152657175657374950a6d6574686f644e616d650d6d6574686f6441726753696773177461726765
        7453657276696365556e697175654e616d650d7461726765744170704e616d650c7265717565737450726f70736f9004
        706c7573567400115b6a6176612e6c616e672e537472696e676e0203696e7403696e747a1f636f6d2e616c697061792e
        746573742e54657374536572766963653a312e300270624e919241634b52
";
/// `responseEncode(7, { isError: false, appResponse: 'hi' }, { protocolType: 'bolt2', boltVersion: 2, crcEnable: true })`
const V2_RESPONSE_CRC: &str = "
        0202000002010000000701010000002e000000000064636f6d2e616c697061792e736f66612e7270632e636f72652e72
        6573706f6e73652e536f6661526573706f6e73654fbe636f6d2e616c697061792e736f66612e7270632e636f72652e72
        6573706f6e73652e536f6661526573706f6e7365940769734572726f72086572726f724d73670b617070526573706f6e
        73650d726573706f6e736550726f70736f90464e0268694e9135cd6f
";
/// `heartbeatEncode(8, {}, { protocolType: 'bolt2', boltVersion: 2, crcEnable: true })`
const V2_HEARTBEAT_CRC: &str = "02020100000100000008010100000bb80000000000000000d3ea5c58";

#[test]
fn v2_with_crc() {
    let crc = Version::V2 { ver1: 2, switch: 1 };
    let req = decode_exact(&hex(V2_REQUEST_CRC));
    assert_eq!(req.version, crc);
    assert_eq!(req.request_id, 7);
    let resp = decode_exact(&hex(V2_RESPONSE_CRC));
    assert_eq!(resp.version, crc);
    assert_eq!(
        resp.kind,
        Kind::Response {
            status: status::SUCCESS
        }
    );
    assert_eq!(resp.class.as_ref(), SOFA_RESPONSE);
    let hb = decode_exact(&hex(V2_HEARTBEAT_CRC));
    assert_eq!(hb.kind, Kind::Heartbeat { timeout_ms: 3000 });
    assert_eq!(hex(V2_HEARTBEAT_CRC).len(), bolt::REQUEST_HEADER_LEN_V2 + 4);

    // Rewriting the id keeps the checksum valid.
    let mut wire = BytesMut::from(&hex(V2_REQUEST_CRC)[..]);
    bolt::set_request_id(&mut wire, 0xdead_beef).expect("rewrite");
    let rewritten = bolt::decode(&mut wire, &Limits::default())
        .expect("crc ok")
        .expect("frame");
    assert_eq!(rewritten.request_id, 0xdead_beef);

    // A flipped content byte is caught.
    let mut bad = hex(V2_REQUEST_CRC);
    bad[40] ^= 1;
    assert!(matches!(
        bolt::decode(&mut BytesMut::from(&bad[..]), &Limits::default()),
        Err(outrigger_codec::DecodeError::CrcMismatch { .. })
    ));
}

#[test]
fn back_to_back_frames_split_exactly() {
    let mut buf = BytesMut::new();
    for v in [V1_REQUEST, V1_HEARTBEAT, V2_REQUEST_CRC, V1_RESPONSE] {
        buf.extend_from_slice(&hex(v));
    }
    let limits = Limits::default();
    let ids: Vec<u32> = std::iter::from_fn(|| bolt::decode(&mut buf, &limits).expect("valid"))
        .map(|f| f.request_id)
        .collect();
    assert_eq!(ids, vec![1, 4, 7, 1]);
    assert!(buf.is_empty());
}
