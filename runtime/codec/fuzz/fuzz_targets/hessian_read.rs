//! Hessian reading on arbitrary bytes: whatever reads must write and read back equal.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use outrigger_codec::hessian::{Reader, Value, Writer, resolve_refs};

fuzz_target!(|data: &[u8]| {
    let mut reader = Reader::new(Bytes::copy_from_slice(data));
    let mut values = Vec::new();
    while let Ok(v) = reader.read_value() {
        values.push(v);
    }
    let _ = resolve_refs(&values, 100_000);
    let mut writer = Writer::new();
    values.iter().for_each(|v| writer.write(v));
    let mut again = Reader::new(writer.finish());
    for v in &values {
        let back = again.read_value().expect("our own output reads");
        // NaN never equals itself; everything else must round-trip.
        if !has_nan(v) {
            assert_eq!(&back, v);
        }
    }
});

fn has_nan(v: &Value) -> bool {
    match v {
        Value::Double(d) => d.is_nan(),
        Value::List(l) => l.items.iter().any(has_nan),
        Value::Map(m) => m.entries.iter().any(|(k, v)| has_nan(k) || has_nan(v)),
        Value::Object(o) => o.fields.iter().any(|(_, f)| has_nan(f)),
        _ => false,
    }
}
