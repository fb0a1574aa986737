//! Writes Hessian 2.0 values the way Java's `Hessian2Output` (and `hessian.js`) do: the
//! shortest int/long/double/string/binary forms, class definitions and list/map type names
//! sent once per stream and referred to by index afterwards.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{List, Map, Object, Value};

/// Writes the values of one Hessian stream (one Dubbo body) in order.
///
/// Writing recurses once per nesting level: values read by [`super::Reader`] are bounded by
/// its depth limit; callers building values from untrusted input bound their depth too.
#[derive(Default)]
pub struct Writer {
    buf: BytesMut,
    classes: HashMap<(Arc<str>, Vec<Arc<str>>), u32>,
    types: HashMap<Arc<str>, u32>,
}

impl Writer {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes written so far.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }

    /// Writes one value.
    pub fn write(&mut self, value: &Value) {
        match value {
            Value::Null => self.buf.put_u8(b'N'),
            Value::Bool(b) => self.buf.put_u8(if *b { b'T' } else { b'F' }),
            Value::Int(i) => self.write_int(*i),
            Value::Long(l) => self.write_long(*l),
            Value::Double(d) => self.write_double(*d),
            Value::Date(ms) => self.write_date(*ms),
            Value::String(s) => self.write_str(s),
            Value::Binary(b) => self.write_binary(b),
            Value::List(l) => self.write_list(l),
            Value::Map(m) => self.write_map(m),
            Value::Object(o) => self.write_object(o),
            Value::Ref(n) => {
                self.buf.put_u8(b'Q');
                self.write_int(*n as i32);
            }
        }
    }

    /// Writes `N`.
    pub fn write_null(&mut self) {
        self.buf.put_u8(b'N');
    }

    /// Writes an int in its shortest form.
    pub fn write_int(&mut self, v: i32) {
        match v {
            -0x10..=0x2f => self.buf.put_u8((v + 0x90) as u8),
            -0x800..=0x7ff => {
                self.buf.put_u8((0xc8 + (v >> 8)) as u8);
                self.buf.put_u8(v as u8);
            }
            -0x40000..=0x3ffff => {
                self.buf.put_u8((0xd4 + (v >> 16)) as u8);
                self.buf.put_u8((v >> 8) as u8);
                self.buf.put_u8(v as u8);
            }
            _ => {
                self.buf.put_u8(b'I');
                self.buf.put_i32(v);
            }
        }
    }

    /// Writes a long in its shortest form.
    pub fn write_long(&mut self, v: i64) {
        match v {
            -0x08..=0x0f => self.buf.put_u8((v + 0xe0) as u8),
            -0x800..=0x7ff => {
                self.buf.put_u8((0xf8 + (v >> 8)) as u8);
                self.buf.put_u8(v as u8);
            }
            -0x40000..=0x3ffff => {
                self.buf.put_u8((0x3c + (v >> 16)) as u8);
                self.buf.put_u8((v >> 8) as u8);
                self.buf.put_u8(v as u8);
            }
            _ => match i32::try_from(v) {
                Ok(v) => {
                    self.buf.put_u8(b'Y');
                    self.buf.put_i32(v);
                }
                Err(_) => {
                    self.buf.put_u8(b'L');
                    self.buf.put_i64(v);
                }
            },
        }
    }

    /// Writes a double as `Hessian2Output.writeDouble` does.
    pub fn write_double(&mut self, v: f64) {
        let int = v as i32;
        if f64::from(int) == v {
            match int {
                0 => return self.buf.put_u8(0x5b),
                1 => return self.buf.put_u8(0x5c),
                -0x80..=0x7f => {
                    self.buf.put_u8(0x5d);
                    return self.buf.put_i8(int as i8);
                }
                -0x8000..=0x7fff => {
                    self.buf.put_u8(0x5e);
                    return self.buf.put_i16(int as i16);
                }
                _ => {}
            }
        }
        let mills = (v * 1000.0) as i32;
        if 0.001 * f64::from(mills) == v {
            self.buf.put_u8(0x5f);
            self.buf.put_i32(mills);
        } else {
            self.buf.put_u8(b'D');
            self.buf.put_f64(v);
        }
    }

    /// Writes a date (ms since the epoch), in minutes when it is a whole minute.
    pub fn write_date(&mut self, ms: i64) {
        if ms % 60_000 == 0
            && let Ok(minutes) = i32::try_from(ms / 60_000)
        {
            self.buf.put_u8(b'K');
            self.buf.put_i32(minutes);
            return;
        }
        self.buf.put_u8(b'J');
        self.buf.put_i64(ms);
    }

    /// Writes a string: lengths in UTF-16 units, chunks of at most 0x8000 units (never
    /// splitting a surrogate pair), each unit as 1–3 bytes, as Java writes it.
    pub fn write_str(&mut self, s: &str) {
        if s.is_ascii() {
            let bytes = s.as_bytes();
            let mut rest = bytes;
            while rest.len() > 0x8000 {
                let (chunk, tail) = rest.split_at(0x8000);
                self.buf.put_u8(b'R');
                self.buf.put_u16(0x8000);
                self.buf.put_slice(chunk);
                rest = tail;
            }
            self.string_final_len(rest.len());
            self.buf.put_slice(rest);
            return;
        }
        let units: Vec<u16> = s.encode_utf16().collect();
        let mut rest = &units[..];
        while rest.len() > 0x8000 {
            let mut n = 0x8000;
            if (0xd800..=0xdbff).contains(&rest[n - 1]) {
                n -= 1;
            }
            let (chunk, tail) = rest.split_at(n);
            self.buf.put_u8(b'R');
            self.buf.put_u16(n as u16);
            self.put_units(chunk);
            rest = tail;
        }
        self.string_final_len(rest.len());
        self.put_units(rest);
    }

    fn string_final_len(&mut self, len: usize) {
        if len <= 0x1f {
            self.buf.put_u8(len as u8);
        } else if len <= 0x3ff {
            self.buf.put_u8(0x30 + (len >> 8) as u8);
            self.buf.put_u8(len as u8);
        } else {
            self.buf.put_u8(b'S');
            self.buf.put_u16(len as u16);
        }
    }

    fn put_units(&mut self, units: &[u16]) {
        for &u in units {
            let u = u32::from(u);
            if u < 0x80 {
                self.buf.put_u8(u as u8);
            } else if u < 0x800 {
                self.buf.put_u8((0xc0 | (u >> 6)) as u8);
                self.buf.put_u8((0x80 | (u & 0x3f)) as u8);
            } else {
                self.buf.put_u8((0xe0 | (u >> 12)) as u8);
                self.buf.put_u8((0x80 | ((u >> 6) & 0x3f)) as u8);
                self.buf.put_u8((0x80 | (u & 0x3f)) as u8);
            }
        }
    }

    /// Writes a `byte[]`.
    pub fn write_binary(&mut self, b: &[u8]) {
        let mut rest = b;
        while rest.len() > 0x8000 {
            let (chunk, tail) = rest.split_at(0x8000);
            self.buf.put_u8(b'A');
            self.buf.put_u16(0x8000);
            self.buf.put_slice(chunk);
            rest = tail;
        }
        let len = rest.len();
        if len <= 0x0f {
            self.buf.put_u8(0x20 + len as u8);
        } else if len <= 0x3ff {
            self.buf.put_u8(0x34 + (len >> 8) as u8);
            self.buf.put_u8(len as u8);
        } else {
            self.buf.put_u8(b'B');
            self.buf.put_u16(len as u16);
        }
        self.buf.put_slice(rest);
    }

    fn write_type(&mut self, name: &Arc<str>) {
        if let Some(&index) = self.types.get(name) {
            self.write_int(index as i32);
        } else {
            self.types.insert(name.clone(), self.types.len() as u32);
            self.write_str(name);
        }
    }

    fn write_list(&mut self, list: &List) {
        let len = list.items.len();
        match (&list.type_name, len) {
            (Some(t), 0..=7) => {
                self.buf.put_u8(0x70 + len as u8);
                self.write_type(t);
            }
            (Some(t), _) => {
                self.buf.put_u8(b'V');
                self.write_type(t);
                self.write_int(len_i32(len));
            }
            (None, 0..=7) => self.buf.put_u8(0x78 + len as u8),
            (None, _) => {
                self.buf.put_u8(b'X');
                self.write_int(len_i32(len));
            }
        }
        for item in &list.items {
            self.write(item);
        }
    }

    fn write_map(&mut self, map: &Map) {
        match &map.type_name {
            Some(t) => {
                self.buf.put_u8(b'M');
                self.write_type(t);
            }
            None => self.buf.put_u8(b'H'),
        }
        for (k, v) in &map.entries {
            self.write(k);
            self.write(v);
        }
        self.buf.put_u8(b'Z');
    }

    fn write_object(&mut self, object: &Object) {
        let names: Vec<Arc<str>> = object.fields.iter().map(|(n, _)| n.clone()).collect();
        let key = (object.class.clone(), names);
        let index = match self.classes.get(&key) {
            Some(&index) => index,
            None => {
                self.buf.put_u8(b'C');
                self.write_str(&object.class);
                self.write_int(len_i32(object.fields.len()));
                for (name, _) in &object.fields {
                    self.write_str(name);
                }
                let index = self.classes.len() as u32;
                self.classes.insert(key, index);
                index
            }
        };
        if index <= 0x0f {
            self.buf.put_u8(0x60 + index as u8);
        } else {
            self.buf.put_u8(b'O');
            self.write_int(index as i32);
        }
        for (_, v) in &object.fields {
            self.write(v);
        }
    }
}

/// Collection lengths beyond `i32::MAX` cannot be sent; such a value does not fit in memory
/// of a frame anyway, so saturate rather than fail.
fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}
