//! Property tests: encode→decode is the identity for every protocol, and no input — random
//! bytes, truncated or corrupted frames — makes a decoder panic or return more than it got.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use outrigger_codec::bolt::{self, HeaderMap, Kind, Version};
use outrigger_codec::dubbo::{self, Reply, RpcInvocation};
use outrigger_codec::hessian::{List, Map, Object, Reader, Value, Writer};
use outrigger_codec::{Limits, sniff};
use proptest::prelude::*;

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn bolt_frame() -> impl Strategy<Value = bolt::Frame> {
    let version = prop_oneof![
        Just(Version::V1),
        (any::<u8>(), any::<u8>()).prop_map(|(ver1, switch)| Version::V2 { ver1, switch }),
        Just(Version::V2 { ver1: 2, switch: 1 }),
    ];
    let kind = prop_oneof![
        any::<i32>().prop_map(|timeout_ms| Kind::Request { timeout_ms }),
        any::<i32>().prop_map(|timeout_ms| Kind::OneWay { timeout_ms }),
        any::<i32>().prop_map(|timeout_ms| Kind::Heartbeat { timeout_ms }),
        any::<u16>().prop_map(|status| Kind::Response { status }),
        any::<u16>().prop_map(|status| Kind::HeartbeatAck { status }),
    ];
    let headers = prop::collection::vec((bytes_up_to(16), prop::option::of(bytes_up_to(16))), 0..6)
        .prop_map(|entries| {
            let mut map = HeaderMap::new();
            for (k, v) in entries {
                map.push(k, v);
            }
            map
        });
    (
        version,
        kind,
        any::<u8>(),
        any::<u32>(),
        any::<u8>(),
        bytes_up_to(64),
        headers,
        bytes_up_to(256),
    )
        .prop_map(
            |(version, kind, cmd_version, request_id, codec, class, headers, content)| {
                bolt::Frame {
                    version,
                    kind,
                    cmd_version,
                    request_id,
                    codec,
                    class,
                    headers,
                    content,
                }
            },
        )
}

fn dubbo_frame() -> impl Strategy<Value = dubbo::Frame> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u8..32,
        any::<u8>(),
        any::<u64>(),
        bytes_up_to(256),
    )
        .prop_map(
            |(is_request, two_way, event, serialization, status, request_id, body)| dubbo::Frame {
                is_request,
                two_way,
                event,
                serialization,
                status,
                request_id,
                body,
            },
        )
}

/// Doubles that survive Hessian unchanged: no NaN (NaN != NaN) and no -0.0 (Java's
/// `Hessian2Output` writes it as the 0.0 byte too).
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("comparable", |d| !d.is_nan()),
        (-100_000i32..100_000).prop_map(|m| 0.001 * f64::from(m)),
        any::<i16>().prop_map(f64::from),
    ]
    .prop_map(|d| if d == 0.0 { 0.0 } else { d })
}

fn value() -> impl Strategy<Value = Value> {
    let name = "[a-zA-Z.\\[$]{0,12}";
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::Int),
        any::<i64>().prop_map(Value::Long),
        double().prop_map(Value::Double),
        any::<i64>().prop_map(Value::Date),
        any::<String>().prop_map(Value::String),
        bytes_up_to(40).prop_map(Value::Binary),
        (0u32..20).prop_map(Value::Ref),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            (
                prop::option::of(name),
                prop::collection::vec(inner.clone(), 0..10)
            )
                .prop_map(|(t, items)| Value::List(List {
                    type_name: t.map(Into::into),
                    items
                })),
            (
                prop::option::of(name),
                prop::collection::vec((inner.clone(), inner.clone()), 0..5)
            )
                .prop_map(|(t, entries)| Value::Map(Map {
                    type_name: t.map(Into::into),
                    entries
                })),
            (
                prop::sample::select(vec!["a.A", "b.B", "java.lang.Exception"]),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["x", "y", "cause", "detailMessage"]),
                        inner
                    ),
                    0..4
                )
            )
                .prop_map(|(class, fields)| Value::Object(Object::new(class, fields))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn bolt_round_trip(frame in bolt_frame()) {
        let mut wire = BytesMut::new();
        bolt::encode(&frame, &mut wire).expect("encodable");
        prop_assert_eq!(wire.len(), frame.encoded_len());
        let back = bolt::decode(&mut wire, &Limits::default()).expect("valid").expect("whole");
        prop_assert_eq!(back, frame);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn dubbo_round_trip(frame in dubbo_frame()) {
        let mut wire = BytesMut::new();
        dubbo::encode(&frame, &mut wire).expect("encodable");
        let back = dubbo::decode(&mut wire, &Limits::default()).expect("valid").expect("whole");
        prop_assert_eq!(back, frame);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn hessian_round_trip(values in prop::collection::vec(value(), 1..4)) {
        let mut w = Writer::new();
        values.iter().for_each(|v| w.write(v));
        let mut r = Reader::new(w.finish());
        for v in &values {
            prop_assert_eq!(&r.read_value().expect("valid"), v);
        }
        prop_assert!(r.is_empty());
    }

    #[test]
    fn dubbo_invocation_round_trip(
        method in "[a-zA-Z$]{1,10}",
        args in prop::collection::vec(value(), 0..4),
        attachments in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
    ) {
        let inv = RpcInvocation {
            dubbo_version: "2.0.2".into(),
            service_path: "com.example.Svc".into(),
            service_version: "1.0".into(),
            method,
            parameter_types_desc: "Ljava/lang/Object;".repeat(args.len()),
            args,
            attachments,
        };
        let frame = dubbo::Frame::request(1, inv.encode());
        prop_assert_eq!(RpcInvocation::decode(&frame, &Limits::default()).expect("valid"), inv);
    }

    #[test]
    fn skip_consumes_what_read_does(
        values in prop::collection::vec(value(), 1..4),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut w = Writer::new();
        values.iter().for_each(|v| w.write(v));
        let wire = w.finish();
        skip_agrees_with_read(&wire);
        skip_agrees_with_read(&wire[..cut.index(wire.len())]);
        let mut corrupted = wire.to_vec();
        corrupted[flip.index(wire.len())] ^= xor;
        skip_agrees_with_read(&corrupted);
    }

    #[test]
    fn raw_result_is_what_a_value_reader_sees(
        outcome in prop_oneof![
            value().prop_map(dubbo::Outcome::Value),
            Just(dubbo::Outcome::Null),
            value().prop_map(dubbo::Outcome::Exception),
        ],
        attachments in prop::option::of(prop::collection::vec(("[a-z]{1,6}", value()), 0..4)),
        cut in any::<prop::sample::Index>(),
    ) {
        let body = dubbo::RpcResult { outcome, attachments }.encode();
        let limits = Limits::default();
        for body in [body.clone(), body.slice(..cut.index(body.len()))] {
            let frame = dubbo::Frame::request(1, Bytes::new()).response(dubbo::status::OK, body);
            prop_assert_eq!(dubbo::RawResult::decode(&frame, &limits).ok(), raw_result_by_reading(&frame));
        }
    }

    #[test]
    fn request_timeout_is_the_decoded_attachment(
        args in prop::collection::vec(value(), 0..4),
        attachments in prop::collection::vec(("[a-z]{1,6}", value()), 0..4),
        timeout in prop::option::of(prop_oneof![
            any::<i32>().prop_map(Value::Int),
            any::<i64>().prop_map(Value::Long),
            any::<i64>().prop_map(|n| Value::string(n.to_string())),
            value(),
        ]),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut inv = RpcInvocation {
            dubbo_version: "2.0.2".into(),
            service_path: "com.example.Svc".into(),
            service_version: "1.0".into(),
            method: "m".into(),
            parameter_types_desc: "Ljava/lang/Object;".repeat(args.len()),
            args,
            attachments,
        };
        if let Some(t) = timeout {
            inv.attachments.insert(0, ("timeout".to_owned(), t));
        }
        let body = inv.encode();
        let limits = Limits::default();
        for body in [body.clone(), body.slice(..cut.index(body.len()))] {
            let frame = dubbo::Frame::request(1, body);
            prop_assert_eq!(dubbo::request_timeout(&frame, &limits), timeout_by_decoding(&frame));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        no_panic_on(&input);
        // Also as if the protocol byte were right, so the decoders get past the first check.
        for lead in [[0x01u8, 0x01], [0x02, 0x02], [0xda, 0xbb]] {
            let mut prefixed = lead.to_vec();
            prefixed.extend_from_slice(&input);
            no_panic_on(&prefixed);
        }
    }

    #[test]
    fn truncated_and_corrupted_frames(
        frame in bolt_frame(),
        dframe in dubbo_frame(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let mut wire = BytesMut::new();
        bolt::encode(&frame, &mut wire).expect("encodable");
        let at = cut.index(wire.len());
        // A strict prefix of a valid frame is "need more", never an error or a frame.
        prop_assert_eq!(bolt::decode(&mut BytesMut::from(&wire[..at]), &Limits::default()), Ok(None));
        let mut corrupted = wire.to_vec();
        corrupted[flip.index(wire.len())] ^= xor;
        no_panic_on(&corrupted);

        let mut dwire = BytesMut::new();
        dubbo::encode(&dframe, &mut dwire).expect("encodable");
        let at = cut.index(dwire.len());
        prop_assert_eq!(dubbo::decode(&mut BytesMut::from(&dwire[..at]), &Limits::default()), Ok(None));
        let mut corrupted = dwire.to_vec();
        corrupted[flip.index(dwire.len())] ^= xor;
        no_panic_on(&corrupted);
    }
}

/// `skip_value` accepts and consumes exactly what `read_value` does, value after value.
fn skip_agrees_with_read(input: &[u8]) {
    let mut read = Reader::new(Bytes::copy_from_slice(input));
    let mut skip = Reader::new(Bytes::copy_from_slice(input));
    loop {
        let (a, b) = (read.read_value(), skip.skip_value());
        assert_eq!(a.as_ref().err(), b.as_ref().err(), "{input:02x?}");
        assert_eq!(read.position(), skip.position(), "{input:02x?}");
        if a.is_err() || read.is_empty() {
            return;
        }
    }
}

/// What the Dubbo channel computed from an OK answer before `RawResult` existed: the value
/// read with `read_value` and sliced by position, string attachments only.
fn raw_result_by_reading(frame: &dubbo::Frame) -> Option<dubbo::RawResult> {
    let mut r = Reader::new(frame.body.clone());
    let flag = r.read_int().ok()?;
    let outcome = match flag {
        0 | 3 => dubbo::RawOutcome::Exception(r.read_value().ok()?),
        1 | 4 => {
            let start = r.position();
            r.read_value().ok()?;
            dubbo::RawOutcome::Value(frame.body.slice(start..r.position()))
        }
        2 | 5 => dubbo::RawOutcome::Value(Bytes::from_static(b"N")),
        _ => return None,
    };
    let mut attachments = Vec::new();
    if flag >= 3
        && let Value::Map(m) = r.read_value().ok()?
    {
        for (k, v) in m.entries {
            if let (Value::String(k), Value::String(v)) = (k, v) {
                attachments.push((k, v));
            }
        }
    }
    Some(dubbo::RawResult {
        flag,
        outcome,
        attachments,
    })
}

/// The request timeout by decoding the whole invocation.
fn timeout_by_decoding(frame: &dubbo::Frame) -> Option<std::time::Duration> {
    let inv = RpcInvocation::decode(frame, &Limits::default()).ok()?;
    let ms = match inv.attachment("timeout")? {
        Value::String(s) => s.parse::<i64>().ok()?,
        v => v.as_i64()?,
    };
    u64::try_from(ms)
        .ok()
        .filter(|&ms| ms > 0)
        .map(std::time::Duration::from_millis)
}

/// Runs every decoder over `input`; a frame may never claim more bytes than were given.
fn no_panic_on(input: &[u8]) {
    let limits = Limits::default();
    let _ = sniff(input);
    let mut buf = BytesMut::from(input);
    while let Ok(Some(frame)) = bolt::decode(&mut buf, &limits) {
        assert!(frame.encoded_len() <= input.len());
    }
    let mut buf = BytesMut::from(input);
    while let Ok(Some(frame)) = dubbo::decode(&mut buf, &limits) {
        assert!(frame.encoded_len() <= input.len());
        let _ = RpcInvocation::decode(&frame, &limits);
        let _ = Reply::decode(&frame, &limits);
        let _ = dubbo::RawResult::decode(&frame, &limits);
        let _ = dubbo::request_timeout(&frame, &limits);
    }
    let body = dubbo::Frame::request(0, Bytes::copy_from_slice(input));
    let _ = RpcInvocation::decode(&body, &limits);
    let _ = Reply::decode(&body, &limits);
    let _ = dubbo::request_timeout(&body, &limits);
    let _ = dubbo::RawResult::decode(
        &body.response(dubbo::status::OK, body.body.clone()),
        &limits,
    );
    skip_agrees_with_read(input);
    let mut r = Reader::new(Bytes::copy_from_slice(input));
    let mut values = Vec::new();
    while let Ok(v) = r.read_value() {
        values.push(v);
    }
    let _ = outrigger_codec::hessian::resolve_refs(&values, 10_000);
    let mut scratch = input.to_vec();
    let _ = bolt::set_request_id(&mut scratch, 7);
    let _ = dubbo::set_request_id(&mut scratch, 7);
}
