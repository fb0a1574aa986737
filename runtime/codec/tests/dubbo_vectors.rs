//! Dubbo frames from reference implementations, decoded and re-encoded.
//!
//! Sources, each named again on its vector:
//! - PyPI `dubbo-ssl-python==0.9.6` (`dubbo_ssl.codec.encoder.Request(...).encode()` with the
//!   invoke id pinned, and its heartbeat constants `CLI_HEARTBEAT_REQ_HEAD`/`RES_HEAD`/`TAIL`);
//! - npm `dubbo2.js@2.3.9` (Apache dubbo-js, `es7/encode.js` `DubboEncoder(ctx).encode()`,
//!   Hessian by its pinned `hessian.js@2.5.0`, arguments typed with `js-to-java@2.4.0`);
//! - response bodies from npm `hessian.js@2.11.0` (`new EncoderV2()`, `.write()` of the flag,
//!   value and attachments in `DecodeableRpcResult` order) behind a 16-byte header, each one
//!   checked to decode with `dubbo2.js@2.3.9`'s `es7/decode.js` `decode()` to the result noted.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::hex;
use outrigger_codec::Limits;
use outrigger_codec::dubbo::{
    self, Frame, Outcome, Reply, RpcInvocation, RpcResult, Target, status,
};
use outrigger_codec::hessian::{List, Object, Value};

const GREETINGS: &str = "org.apache.dubbo.samples.api.GreetingsService";

fn decode_exact(wire: &[u8]) -> Frame {
    let mut buf = BytesMut::from(wire);
    let frame = dubbo::decode(&mut buf, &Limits::default())
        .expect("valid frame")
        .expect("whole frame");
    assert!(buf.is_empty());
    let mut out = BytesMut::new();
    dubbo::encode(&frame, &mut out).expect("encode");
    assert_eq!(
        &out[..],
        wire,
        "our encoding of the decoded frame matches the reference"
    );
    for cut in 0..wire.len() {
        let mut part = BytesMut::from(&wire[..cut]);
        assert_eq!(
            dubbo::decode(&mut part, &Limits::default()),
            Ok(None),
            "prefix {cut}"
        );
    }
    frame
}

fn s(v: &str) -> Value {
    Value::string(v)
}

/// dubbo-ssl-python 0.9.6: `Request({'dubbo_version': '2.4.10', 'version': '1.0.0',
/// 'method': 'sayHello', 'path': GREETINGS, 'arguments': ['world'], 'group': '',
/// 'context': None})`, invoke id 7, `.encode()`.
const PY_REQUEST: &str = "
    dabbc2000000000000000007000000e206322e342e3130302d6f72672e6170616368652e647562626f2e73616d706c65
    732e6170692e4772656574696e67735365727669636505312e302e300873617948656c6c6f124c6a6176612f6c616e67
    2f537472696e673b05776f726c64480470617468302d6f72672e6170616368652e647562626f2e73616d706c65732e61
    70692e4772656574696e67735365727669636509696e74657266616365302d6f72672e6170616368652e647562626f2e
    73616d706c65732e6170692e4772656574696e6773536572766963650776657273696f6e05312e302e300567726f7570
    005a
";

#[test]
fn python_client_request() {
    let wire = hex(PY_REQUEST);
    let frame = decode_exact(&wire);
    assert!(frame.is_request && frame.two_way && !frame.event);
    assert_eq!(frame.flag(), 0xc2);
    assert_eq!(frame.request_id, 7);
    let inv = RpcInvocation::decode(&frame, &Limits::default()).expect("body");
    let want = RpcInvocation {
        dubbo_version: "2.4.10".into(),
        service_path: GREETINGS.into(),
        service_version: "1.0.0".into(),
        method: "sayHello".into(),
        parameter_types_desc: "Ljava/lang/String;".into(),
        args: vec![s("world")],
        attachments: vec![
            ("path".into(), s(GREETINGS)),
            ("interface".into(), s(GREETINGS)),
            ("version".into(), s("1.0.0")),
            ("group".into(), s("")),
        ],
    };
    assert_eq!(inv, want);
    assert_eq!(
        Target::decode(&frame, &Limits::default()).expect("target"),
        Target {
            dubbo_version: "2.4.10".into(),
            service_path: GREETINGS.into(),
            service_version: "1.0.0".into(),
            method: "sayHello".into(),
        }
    );
    assert!(!dubbo::supports_response_attachments(&inv.dubbo_version));
    // Built from the fields, our frame is byte-identical.
    let mut out = BytesMut::new();
    dubbo::encode(&Frame::request(7, want.encode()), &mut out).expect("encode");
    assert_eq!(&out[..], &wire[..]);
}

/// dubbo-ssl-python 0.9.6: as above with `'arguments': [1, 300, -70000, 2**40, True, 1.5, 'é',
/// [1, 2], Object('com.test.User', {'name': 'a', 'age': 3})]` — every compact Hessian form the
/// client writes, a typed `[int` list and a class definition.
const PY_REQUEST_MIXED: &str = "
    dabbc20000000000000000070000013106322e342e3130302d6f72672e6170616368652e647562626f2e73616d706c65
    732e6170692e4772656574696e67735365727669636505312e302e300873617948656c6c6f30294949494a5a444c6a61
    76612f6c616e672f537472696e673b5b494c636f6d2f746573742f557365723b91c92cd2ee904c000001000000000054
    5f000005dc01c3a972045b696e749192430d636f6d2e746573742e5573657292046e616d650361676560016193480470
    617468302d6f72672e6170616368652e647562626f2e73616d706c65732e6170692e4772656574696e67735365727669
    636509696e74657266616365302d6f72672e6170616368652e647562626f2e73616d706c65732e6170692e4772656574
    696e6773536572766963650776657273696f6e05312e302e300567726f7570005a
";

#[test]
fn python_client_request_mixed_args() {
    let wire = hex(PY_REQUEST_MIXED);
    let frame = decode_exact(&wire);
    let inv = RpcInvocation::decode(&frame, &Limits::default()).expect("body");
    assert_eq!(
        inv.parameter_types_desc,
        "IIIJZDLjava/lang/String;[ILcom/test/User;"
    );
    assert_eq!(
        inv.args,
        vec![
            Value::Int(1),
            Value::Int(300),
            Value::Int(-70000),
            Value::Long(1 << 40),
            Value::Bool(true),
            Value::Double(1.5),
            s("é"),
            Value::typed_list("[int", vec![Value::Int(1), Value::Int(2)]),
            Value::Object(Object::new(
                "com.test.User",
                [("name", s("a")), ("age", Value::Int(3))]
            )),
        ]
    );
    let mut out = BytesMut::new();
    dubbo::encode(&Frame::request(7, inv.encode()), &mut out).expect("encode");
    assert_eq!(&out[..], &wire[..]);
}

/// dubbo2.js 2.3.9: `new DubboEncoder({ requestId: 42, dubboVersion: '2.0.2', dubboInterface:
/// GREETINGS, path: GREETINGS, version: '1.0.0', methodName: 'sayHello', methodArgs:
/// [java.String('world'), java.int(5)], group: '', timeout: 3000, application: { name:
/// 'node-consumer' }, attachments: {} }).encode()` — attachments carry an int (`timeout`).
const DUBBO_JS_REQUEST: &str = "
    dabbc200000000000000002a0000010105322e302e32302d6f72672e6170616368652e647562626f2e73616d706c6573
    2e6170692e4772656574696e67735365727669636505312e302e300873617948656c6c6f134c6a6176612f6c616e672f
    537472696e673b4905776f726c6495480b6170706c69636174696f6e0d6e6f64652d636f6e73756d657209696e746572
    66616365302d6f72672e6170616368652e647562626f2e73616d706c65732e6170692e4772656574696e677353657276
    6963650470617468302d6f72672e6170616368652e647562626f2e73616d706c65732e6170692e4772656574696e6773
    536572766963650774696d656f7574d40bb80776657273696f6e05312e302e305a
";

#[test]
fn dubbo_js_request() {
    let wire = hex(DUBBO_JS_REQUEST);
    let frame = decode_exact(&wire);
    assert_eq!(frame.request_id, 42);
    let inv = RpcInvocation::decode(&frame, &Limits::default()).expect("body");
    assert_eq!(inv.dubbo_version, dubbo::DEFAULT_DUBBO_VERSION);
    assert!(dubbo::supports_response_attachments(&inv.dubbo_version));
    assert_eq!(inv.parameter_types_desc, "Ljava/lang/String;I");
    assert_eq!(inv.args, vec![s("world"), Value::Int(5)]);
    assert_eq!(inv.attachment("timeout"), Some(&Value::Int(3000)));
    assert_eq!(inv.attachment("application"), Some(&s("node-consumer")));
    let keys: Vec<&str> = inv.attachments.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["application", "interface", "path", "timeout", "version"]
    );
    let mut out = BytesMut::new();
    dubbo::encode(&Frame::request(42, inv.encode()), &mut out).expect("encode");
    assert_eq!(&out[..], &wire[..]);
}

/// dubbo-ssl-python 0.9.6: `CLI_HEARTBEAT_REQ_HEAD + pack('!q', 9) + CLI_HEARTBEAT_TAIL`.
const PY_HEARTBEAT: &str = "dabbe2000000000000000009000000014e";
/// dubbo-ssl-python 0.9.6: `CLI_HEARTBEAT_RES_HEAD + pack('!q', 9) + CLI_HEARTBEAT_TAIL`.
const PY_HEARTBEAT_REPLY: &str = "dabb22140000000000000009000000014e";

#[test]
fn heartbeat_and_reply() {
    let hb = decode_exact(&hex(PY_HEARTBEAT));
    assert!(hb.is_heartbeat() && hb.is_request && hb.two_way);
    assert_eq!(hb.flag(), 0xe2);
    assert_eq!(hb, Frame::heartbeat(9));
    let reply = decode_exact(&hex(PY_HEARTBEAT_REPLY));
    assert!(reply.is_heartbeat() && !reply.is_request);
    assert_eq!(reply.flag(), 0x22);
    assert_eq!(reply.status, status::OK);
    assert_eq!(hb.heartbeat_reply(), reply);
}

fn result(wire_hex: &str) -> (Frame, RpcResult) {
    let frame = decode_exact(&hex(wire_hex));
    match Reply::decode(&frame, &Limits::default()).expect("body") {
        Reply::Result(r) => {
            // Our encoding of the result is the reference body.
            assert_eq!(r.encode(), frame.body);
            (frame, r)
        }
        other => panic!("expected a result, got {other:?}"),
    }
}

fn dubbo_attachment() -> Option<Vec<(String, Value)>> {
    Some(vec![("dubbo".into(), s("2.0.2"))])
}

/// hessian.js 2.11.0 body `[1, 'hello world']`; dubbo2.js decodes `{ res: 'hello world' }`.
const RESP_VALUE: &str = "dabb021400000000000000070000000d910b68656c6c6f20776f726c64";
/// hessian.js 2.11.0 body `[4, 'hello world', { dubbo: '2.0.2' }]`; dubbo2.js decodes
/// `{ res: 'hello world', attachments: { dubbo: '2.0.2' } }`.
const RESP_VALUE_ATTACHMENTS: &str = "
    dabb021400000000000000070000001b940b68656c6c6f20776f726c644805647562626f05322e302e325a
";
/// hessian.js 2.11.0 body `[2]`; dubbo2.js decodes `{ res: null }`.
const RESP_NULL: &str = "dabb021400000000000000070000000192";
/// hessian.js 2.11.0 body `[5, { dubbo: '2.0.2' }]`; dubbo2.js decodes `{ res: null,
/// attachments: { dubbo: '2.0.2' } }`.
const RESP_NULL_ATTACHMENTS: &str =
    "dabb021400000000000000070000000f954805647562626f05322e302e325a";
/// hessian.js 2.11.0 body `[1, [1, 'a', null, true, 2.5, { k: [] }]]`; dubbo2.js decodes the list.
const RESP_LIST: &str = "dabb0214000000000000000800000011917e9101614e545f000009c448016b785a";

#[test]
fn results() {
    let (frame, r) = result(RESP_VALUE);
    assert_eq!(frame.flag(), 0x02);
    assert_eq!(
        r,
        RpcResult {
            outcome: Outcome::Value(s("hello world")),
            attachments: None
        }
    );
    let (_, r) = result(RESP_VALUE_ATTACHMENTS);
    assert_eq!(
        r,
        RpcResult {
            outcome: Outcome::Value(s("hello world")),
            attachments: dubbo_attachment()
        }
    );
    let (_, r) = result(RESP_NULL);
    assert_eq!(
        r,
        RpcResult {
            outcome: Outcome::Null,
            attachments: None
        }
    );
    let (_, r) = result(RESP_NULL_ATTACHMENTS);
    assert_eq!(
        r,
        RpcResult {
            outcome: Outcome::Null,
            attachments: dubbo_attachment()
        }
    );
    let (frame, r) = result(RESP_LIST);
    assert_eq!(frame.request_id, 8);
    let list = Value::List(List {
        type_name: None,
        items: vec![
            Value::Int(1),
            s("a"),
            Value::Null,
            Value::Bool(true),
            Value::Double(2.5),
            Value::string_map([("k", Value::List(List::default()))]),
        ],
    });
    assert_eq!(r.outcome, Outcome::Value(list));
    // A response frame built from the request and the result is the reference frame.
    let request = Frame::request(7, Bytes::new());
    let mut out = BytesMut::new();
    let built = RpcResult {
        outcome: Outcome::Value(s("hello world")),
        attachments: dubbo_attachment(),
    };
    dubbo::encode(&request.response(status::OK, built.encode()), &mut out).expect("encode");
    assert_eq!(&out[..], &hex(RESP_VALUE_ATTACHMENTS)[..]);
}

/// hessian.js 2.11.0 body `[0, ex]` where `ex` is shaped like a Java `Throwable` as
/// hessian-lite writes one — `{ $class: 'java.lang.IllegalStateException', $: { detailMessage:
/// 'boom', cause: ex, stackTrace: { $class: '[java.lang.StackTraceElement', $: [] },
/// suppressedExceptions: { $class: 'java.util.Collections$UnmodifiableRandomAccessList', $: []
/// } } }` — so `cause` is a back-reference to the exception itself (`Q 0`). dubbo2.js decodes
/// `err: IllegalStateException('boom')`.
const RESP_EXCEPTION: &str = "
    dabb02140000000000000007000000b290431f6a6176612e6c616e672e496c6c6567616c537461746545786365707469
    6f6e940d64657461696c4d6573736167650563617573650a737461636b54726163651473757070726573736564457863
    657074696f6e736004626f6f6d5190701c5b6a6176612e6c616e672e537461636b5472616365456c656d656e74703032
    6a6176612e7574696c2e436f6c6c656374696f6e7324556e6d6f6469666961626c6552616e646f6d4163636573734c69
    7374
";
/// hessian.js 2.11.0 body `[3, ex, { dubbo: '2.0.2' }]`, `ex` as above.
const RESP_EXCEPTION_ATTACHMENTS: &str = "
    dabb02140000000000000007000000c093431f6a6176612e6c616e672e496c6c6567616c537461746545786365707469
    6f6e940d64657461696c4d6573736167650563617573650a737461636b54726163651473757070726573736564457863
    657074696f6e736004626f6f6d5190701c5b6a6176612e6c616e672e537461636b5472616365456c656d656e74703032
    6a6176612e7574696c2e436f6c6c656374696f6e7324556e6d6f6469666961626c6552616e646f6d4163636573734c69
    73744805647562626f05322e302e325a
";

fn java_exception() -> Value {
    Value::Object(Object::new(
        "java.lang.IllegalStateException",
        [
            ("detailMessage", s("boom")),
            ("cause", Value::Ref(0)),
            (
                "stackTrace",
                Value::typed_list("[java.lang.StackTraceElement", vec![]),
            ),
            (
                "suppressedExceptions",
                Value::typed_list("java.util.Collections$UnmodifiableRandomAccessList", vec![]),
            ),
        ],
    ))
}

#[test]
fn exceptions() {
    let (_, r) = result(RESP_EXCEPTION);
    assert_eq!(
        r,
        RpcResult {
            outcome: Outcome::Exception(java_exception()),
            attachments: None
        }
    );
    let (_, r) = result(RESP_EXCEPTION_ATTACHMENTS);
    assert_eq!(r.outcome, Outcome::Exception(java_exception()));
    assert_eq!(r.attachments, dubbo_attachment());
    // The self-reference survives resolution as a reference.
    if let Outcome::Exception(e) = &r.outcome {
        let resolved =
            outrigger_codec::hessian::resolve_refs(std::slice::from_ref(e), 1000).expect("resolve");
        assert_eq!(&resolved[0], e);
    }
}

/// A status-70 response whose body is the Hessian string `'Fail to invoke service'`
/// (hessian.js 2.11.0 `EncoderV2().write(...)`), as `ExchangeCodec` writes error responses.
const RESP_SERVICE_ERROR: &str = "
    dabb0246000000000000000700000017164661696c20746f20696e766f6b652073657276696365
";

#[test]
fn error_status() {
    let wire = hex(RESP_SERVICE_ERROR);
    let frame = decode_exact(&wire);
    assert_eq!(frame.status, status::SERVICE_ERROR);
    assert_eq!(
        Reply::decode(&frame, &Limits::default()).expect("body"),
        Reply::Error {
            status: 70,
            message: "Fail to invoke service".into()
        }
    );
    let mut out = BytesMut::new();
    let built = Frame::request(7, Bytes::new())
        .error_response(status::SERVICE_ERROR, "Fail to invoke service");
    dubbo::encode(&built, &mut out).expect("encode");
    assert_eq!(&out[..], &wire[..]);
}

#[test]
fn generic_invoke_round_trip() {
    let inv = RpcInvocation::generic(
        GREETINGS,
        "1.0.0",
        "sayHello",
        &["java.lang.String".to_owned()],
        vec![s("world")],
    );
    assert_eq!(inv.method, dubbo::GENERIC_INVOKE);
    let frame = Frame::request(1, inv.encode());
    let back = RpcInvocation::decode(&frame, &Limits::default()).expect("decode");
    assert_eq!(back, inv);
    // String[] and Object[] travel as typed lists, as Java's Hessian writes arrays.
    assert_eq!(
        back.args[1],
        Value::typed_list("[string", vec![s("java.lang.String")])
    );
    assert_eq!(back.args[2], Value::typed_list("[object", vec![s("world")]));
    assert_eq!(back.attachment("generic"), Some(&s("true")));
}
