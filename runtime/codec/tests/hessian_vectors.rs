//! Hessian 2 values written by the reference JavaScript implementation, read back and
//! re-written byte for byte.
//!
//! Source: npm `hessian.js@2.11.0`, `const e = new hessian.EncoderV2(); e.write(v) …; e.get()`
//! for the values each vector lists (typed values as `{ $class, $ }`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::hex;
use outrigger_codec::hessian::{Error, List, Map, Object, Reader, Value, Writer};

fn read_all(bytes: &[u8]) -> Vec<Value> {
    let mut r = Reader::new(Bytes::copy_from_slice(bytes));
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(r.read_value().expect("valid hessian"));
    }
    out
}

fn write_all(values: &[Value]) -> Bytes {
    let mut w = Writer::new();
    values.iter().for_each(|v| w.write(v));
    w.finish()
}

/// Reads `wire`, compares with `want`, and re-writes it to the same bytes.
fn check(wire: &[u8], want: &[Value]) {
    assert_eq!(read_all(wire), want);
    assert_eq!(&write_all(want)[..], wire);
}

fn s(v: &str) -> Value {
    Value::string(v)
}

/// `null, true, false, 0, -16, 47, 48, -2048, 2047, 2048, -262144, 262143, 262144, -2147483648,
/// 2147483647` — every int width boundary.
const INTS: &str = "4e54469080bfc830c000cfffd40800d00000d7ffff49000400004980000000497fffffff";

#[test]
fn null_bools_ints() {
    let mut want = vec![Value::Null, Value::Bool(true), Value::Bool(false)];
    want.extend(
        [
            0,
            -16,
            47,
            48,
            -2048,
            2047,
            2048,
            -262_144,
            262_143,
            262_144,
            i32::MIN,
            i32::MAX,
        ]
        .map(Value::Int),
    );
    check(&hex(INTS), &want);
}

/// `{ $class: 'long', $: v }` for `0, -8, 15, -2048, 2047, -262144, 262143, 2147483647,
/// Number.MAX_SAFE_INTEGER, '-9223372036854775808'`.
const LONGS: &str = "e0d8eff000ffff3800003fffff597fffffff4c001fffffffffffff4c8000000000000000";

#[test]
fn longs() {
    let want = [
        0,
        -8,
        15,
        -2048,
        2047,
        -262_144,
        262_143,
        2_147_483_647,
        (1 << 53) - 1,
        i64::MIN,
    ]
    .map(Value::Long);
    check(&hex(LONGS), &want);
}

/// `{ $class: 'double', $: v }` for `0, 1, 2, -128, 127, -32768, 32767, 32768, 1.5, 0.001,
/// -2.25, 3.14159, 1e300, -0.5` — the byte, short, "mill" (thousandths as int) and full forms.
const DOUBLES: &str = "5b5c5d025d805d7f5e80005e7fff5f01f400005f000005dc5f000000015ffffff73644400921f9f01b866e447e37e43c8800759c5ffffffe0c";

#[test]
#[allow(clippy::approx_constant)] // 3.14159 is the vector's literal, not an approximation of π
fn doubles() {
    let want = [
        0.0, 1.0, 2.0, -128.0, 127.0, -32768.0, 32767.0, 32768.0, 1.5, 0.001, -2.25, 3.14159,
        1e300, -0.5,
    ]
    .map(Value::Double);
    check(&hex(DOUBLES), &want);
}

/// `'', 'a', 'x'.repeat(31), 'y'.repeat(32), 'z'.repeat(1023), 'w'.repeat(1024), '中文', '😀'`
/// — the compact, medium and `S` forms; the emoji as two 3-byte surrogates (length 2), as Java
/// writes it. The long runs are rebuilt here instead of pasted.
fn strings_wire() -> Vec<u8> {
    let mut w = hex("0001611f");
    w.extend(b"x".repeat(31));
    w.extend(hex("3020"));
    w.extend(b"y".repeat(32));
    w.extend(hex("33ff"));
    w.extend(b"z".repeat(1023));
    w.extend(hex("530400"));
    w.extend(b"w".repeat(1024));
    w.extend(hex("02e4b8ade6968702eda0bdedb880"));
    w
}

#[test]
fn strings() {
    // The tail of the recorded vector, for the record: '中文' then '😀'.
    let want = [
        s(""),
        s("a"),
        s(&"x".repeat(31)),
        s(&"y".repeat(32)),
        s(&"z".repeat(1023)),
        s(&"w".repeat(1024)),
        s("中文"),
        s("😀"),
    ];
    check(&strings_wire(), &want);
}

/// `'q'.repeat(70000)`: hessian.js writes 70009 bytes — `R 0x8000`, 32768 chars, `R 0x8000`,
/// 32768 chars, `S 0x1170`, 4464 chars (chunk headers recorded at offsets 0, 32771, 65542).
#[test]
fn chunked_string() {
    let mut wire = hex("528000");
    wire.extend(b"q".repeat(32768));
    wire.extend(hex("528000"));
    wire.extend(b"q".repeat(32768));
    wire.extend(hex("531170"));
    wire.extend(b"q".repeat(4464));
    assert_eq!(wire.len(), 70009);
    check(&wire, &[s(&"q".repeat(70000))]);
}

/// `Buffer.from([]), Buffer.from([1, 2, 3]), Buffer.alloc(16, 0xab), Buffer.alloc(1100, 0xcd)`.
#[test]
fn binary() {
    let mut wire = hex("20 23010203 3410");
    wire.extend([0xab; 16]);
    wire.extend(hex("42044c"));
    wire.extend([0xcd; 1100]);
    let want = [
        Value::Binary(Bytes::new()),
        Value::Binary(Bytes::from_static(&[1, 2, 3])),
        Value::Binary(Bytes::from(vec![0xab; 16])),
        Value::Binary(Bytes::from(vec![0xcd; 1100])),
    ];
    check(&wire, &want);
    // Chunked binary ('A' chunks, then a final piece) reads as one value.
    let mut chunked = hex("410003");
    chunked.extend([1, 2, 3]);
    chunked.extend(hex("22 0405"));
    assert_eq!(
        read_all(&chunked),
        [Value::Binary(Bytes::from_static(&[1, 2, 3, 4, 5]))]
    );
}

/// `new Date(1700000000000), new Date(1699999980000)` — milliseconds, then whole minutes (`K`).
const DATES: &str = "4a0000018bcfe568004b01b05515";

#[test]
fn dates() {
    check(
        &hex(DATES),
        &[
            Value::Date(1_700_000_000_000),
            Value::Date(1_699_999_980_000),
        ],
    );
}

/// `{ $class: '[java.lang.String', $: ['a', 'b'] }, { $class: 'java.util.ArrayList', $: [1..9] },
/// { $class: '[int', $: [1..8] }` — short typed, long untyped (`X`) and long typed (`V`) lists.
const LISTS: &str = "72115b6a6176612e6c616e672e537472696e6701610162589991929394959697989956045b696e74989192939495969798";

#[test]
fn lists() {
    let want = [
        Value::typed_list("[java.lang.String", vec![s("a"), s("b")]),
        Value::List(List {
            type_name: None,
            items: (1..=9).map(Value::Int).collect(),
        }),
        Value::typed_list("[int", (1..=8).map(Value::Int).collect()),
    ];
    check(&hex(LISTS), &want);
}

/// `{ a: 1, b: 'x' }, new Map([[1, 'one'], [2, 'two']]), { $class: 'java.util.TreeMap', $: { z: 1 } }`
/// — hessian.js writes the last as an *object* of class `java.util.TreeMap`.
const MAPS: &str =
    "48016191016201785a4891036f6e65920374776f5a43116a6176612e7574696c2e547265654d617091017a6091";
/// `new EncoderV2({ mapTypes: { 'java.util.TreeMap': true } }).write({ $class: 'java.util.TreeMap',
/// $: { z: 1 } })` — a typed map (`M`).
const TYPED_MAP: &str = "4d116a6176612e7574696c2e547265654d6170017a915a";

#[test]
fn maps() {
    let want = [
        Value::string_map([("a", Value::Int(1)), ("b", s("x"))]),
        Value::Map(Map {
            type_name: None,
            entries: vec![(Value::Int(1), s("one")), (Value::Int(2), s("two"))],
        }),
        Value::Object(Object::new("java.util.TreeMap", [("z", Value::Int(1))])),
    ];
    check(&hex(MAPS), &want);
    let typed = Value::Map(Map {
        type_name: Some("java.util.TreeMap".into()),
        entries: vec![(s("z"), Value::Int(1))],
    });
    check(&hex(TYPED_MAP), &[typed]);
}

/// `{ $class: 'com.test.User', $: { name: 'a', age: 3 } }, { $class: 'com.test.User', $: { name:
/// 'b', age: 4 } }` — one class definition, two instances.
const OBJECTS: &str = "430d636f6d2e746573742e5573657292046e616d65036167656001619360016294";

#[test]
fn objects() {
    let user = |name, age| {
        Value::Object(Object::new(
            "com.test.User",
            [("name", s(name)), ("age", Value::Int(age))],
        ))
    };
    check(&hex(OBJECTS), &[user("a", 3), user("b", 4)]);
}

/// `const shared = [1]; write({ $class: 'java.util.ArrayList', $: [shared, shared] })` — the
/// second element is a back-reference (`Q 1`) to the first.
const LIST_REF: &str = "7a79915191";

#[test]
fn back_references() {
    let inner = Value::List(List {
        type_name: None,
        items: vec![Value::Int(1)],
    });
    let outer = Value::List(List {
        type_name: None,
        items: vec![inner.clone(), Value::Ref(1)],
    });
    check(&hex(LIST_REF), std::slice::from_ref(&outer));
    let resolved = outrigger_codec::hessian::resolve_refs(&[outer], 100).expect("resolve");
    assert_eq!(
        resolved,
        [Value::List(List {
            type_name: None,
            items: vec![inner.clone(), inner]
        })]
    );
}

#[test]
fn malformed_input_errors() {
    type Case = (&'static [u8], fn(&Error) -> bool);
    let cases: &[Case] = &[
        (b"", |e| matches!(e, Error::UnexpectedEof { .. })),
        (b"\x05abc", |e| matches!(e, Error::UnexpectedEof { .. })),
        (b"\x60", |e| {
            matches!(e, Error::UnknownClass { index: 0, .. })
        }),
        (b"\x71\x90", |e| {
            matches!(e, Error::UnknownType { index: 0, .. })
        }),
        (b"\x58\x8f", |e| {
            matches!(e, Error::NegativeLength { len: -1, .. })
        }),
        (b"\x01\xff", |e| matches!(e, Error::InvalidUtf8 { .. })),
        (b"\x40", |e| {
            matches!(e, Error::UnexpectedTag { tag: 0x40, .. })
        }),
        (b"H\x90", |e| matches!(e, Error::UnexpectedEof { .. })),
    ];
    for (input, ok) in cases {
        let err = Reader::new(Bytes::copy_from_slice(input))
            .read_value()
            .expect_err("malformed");
        assert!(ok(&err), "{input:02x?} gave {err:?}");
    }
    // Nesting past the limit is refused, not a stack overflow.
    let deep = vec![0x79u8; 100_000];
    assert!(matches!(
        Reader::new(Bytes::from(deep)).read_value(),
        Err(Error::TooDeep { max: 128 })
    ));
    // So is a long run of class definitions before an instance.
    let mut defs = Vec::new();
    for _ in 0..100_000 {
        defs.extend(hex("4301 6190"));
    }
    defs.push(0x60);
    assert_eq!(
        read_all(&defs),
        [Value::Object(Object::new("a", Vec::<(&str, Value)>::new()))]
    );
}
