//! Reads Hessian 2.0 values from one stream. Every length read is checked against the bytes
//! actually left before anything is allocated for it.

use std::sync::Arc;

use bytes::Bytes;

use super::{Error, List, Map, Object, Value};
use crate::Limits;

/// A class definition (`C`): name and field names, shared by every instance.
#[derive(Clone)]
struct ClassDef {
    name: Arc<str>,
    fields: Arc<[Arc<str>]>,
}

/// Reads the values of one Hessian stream (one Dubbo body) in order. Class definitions, type
/// names and reference numbers carry over from one value to the next, as in Java's
/// `Hessian2Input`.
pub struct Reader {
    buf: Bytes,
    pos: usize,
    classes: Vec<ClassDef>,
    types: Vec<Arc<str>>,
    depth: usize,
    max_depth: usize,
}

impl Reader {
    /// A reader over `buf` with the default [`Limits`].
    pub fn new(buf: Bytes) -> Self {
        Self::with_limits(buf, &Limits::default())
    }

    /// A reader over `buf` with `limits` (nesting depth). Every value starts with at least one
    /// byte of its own, so a reader builds at most one value per input byte and memory stays
    /// proportional to the input.
    pub fn with_limits(buf: Bytes, limits: &Limits) -> Self {
        Self {
            buf,
            pos: 0,
            classes: Vec::new(),
            types: Vec::new(),
            depth: 0,
            max_depth: limits.max_hessian_depth,
        }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> Bytes {
        self.buf.slice(self.pos.min(self.buf.len())..)
    }

    /// Reads the next value.
    pub fn read_value(&mut self) -> Result<Value, Error> {
        let mut at = self.pos;
        let mut tag = self.byte()?;
        // Class definitions precede the instance they were sent for.
        while tag == b'C' {
            self.class_def()?;
            at = self.pos;
            tag = self.byte()?;
        }
        Ok(match tag {
            b'N' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            0x80..=0xd7 | b'I' => Value::Int(self.int_after(tag, at)?),
            0xd8..=0xff | 0x38..=0x3f | b'Y' | b'L' => Value::Long(self.long_after(tag, at)?),
            0x5b..=0x5f | b'D' => Value::Double(self.double_after(tag)?),
            b'J' => Value::Date(self.i64()?),
            b'K' => Value::Date(i64::from(self.i32()?) * 60_000),
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => Value::String(self.string_after(tag, at)?),
            0x20..=0x2f | 0x34..=0x37 | b'A' | b'B' => Value::Binary(self.binary_after(tag, at)?),
            b'O' | 0x60..=0x6f => {
                let index = if tag == b'O' {
                    i64::from(self.read_int()?)
                } else {
                    i64::from(tag - 0x60)
                };
                let def = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.classes.get(i))
                    .cloned()
                    .ok_or(Error::UnknownClass { index, at })?;
                self.enter()?;
                let mut fields = Vec::with_capacity(def.fields.len().min(self.left()));
                for name in def.fields.iter() {
                    fields.push((name.clone(), self.read_value()?));
                }
                self.leave();
                Value::Object(Object {
                    class: def.name,
                    fields,
                })
            }
            b'H' | b'M' => {
                self.enter()?;
                let type_name = if tag == b'M' {
                    Some(self.read_type()?)
                } else {
                    None
                };
                let mut entries = Vec::new();
                while self.peek()? != b'Z' {
                    let k = self.read_value()?;
                    let v = self.read_value()?;
                    entries.push((k, v));
                }
                self.pos += 1;
                self.leave();
                Value::Map(Map { type_name, entries })
            }
            b'U' | b'W' => {
                self.enter()?;
                let type_name = if tag == b'U' {
                    Some(self.read_type()?)
                } else {
                    None
                };
                let mut items = Vec::new();
                while self.peek()? != b'Z' {
                    items.push(self.read_value()?);
                }
                self.pos += 1;
                self.leave();
                Value::List(List { type_name, items })
            }
            b'V' | b'X' | 0x70..=0x7f => {
                self.enter()?;
                let type_name = if tag == b'V' || (0x70..=0x77).contains(&tag) {
                    Some(self.read_type()?)
                } else {
                    None
                };
                let len = match tag {
                    b'V' | b'X' => {
                        let len_at = self.pos;
                        let len = self.read_int()?;
                        usize::try_from(len).map_err(|_| Error::NegativeLength {
                            len: i64::from(len),
                            at: len_at,
                        })?
                    }
                    t => usize::from((t - 0x70) & 0x07),
                };
                let mut items = Vec::with_capacity(len.min(self.left()));
                for _ in 0..len {
                    items.push(self.read_value()?);
                }
                self.leave();
                Value::List(List { type_name, items })
            }
            b'Q' => {
                let n = self.read_int()?;
                Value::Ref(n as u32)
            }
            tag => return Err(Error::UnexpectedTag { tag, at }),
        })
    }

    /// Steps over the next value without building it: what [`Reader::read_value`] would
    /// consume, with the same errors, but no strings, lists or maps are allocated. Class
    /// definitions and type names met on the way are still recorded, so the values after it
    /// read as they would have.
    pub fn skip_value(&mut self) -> Result<(), Error> {
        let mut at = self.pos;
        let mut tag = self.byte()?;
        while tag == b'C' {
            self.class_def()?;
            at = self.pos;
            tag = self.byte()?;
        }
        match tag {
            b'N' | b'T' | b'F' => {}
            0x80..=0xd7 | b'I' => {
                self.int_after(tag, at)?;
            }
            0xd8..=0xff | 0x38..=0x3f | b'Y' | b'L' => {
                self.long_after(tag, at)?;
            }
            0x5b..=0x5f | b'D' => {
                self.double_after(tag)?;
            }
            b'J' => {
                self.i64()?;
            }
            b'K' => {
                self.i32()?;
            }
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => self.string_chunks(tag, at, None)?,
            0x20..=0x2f | 0x34..=0x37 | b'A' | b'B' => {
                // An unchunked binary is a slice of the input, not a copy.
                self.binary_after(tag, at)?;
            }
            b'O' | 0x60..=0x6f => {
                let index = if tag == b'O' {
                    i64::from(self.read_int()?)
                } else {
                    i64::from(tag - 0x60)
                };
                let fields = usize::try_from(index)
                    .ok()
                    .and_then(|i| self.classes.get(i))
                    .map(|def| def.fields.len())
                    .ok_or(Error::UnknownClass { index, at })?;
                self.enter()?;
                for _ in 0..fields {
                    self.skip_value()?;
                }
                self.leave();
            }
            b'H' | b'M' => {
                self.enter()?;
                if tag == b'M' {
                    self.read_type()?;
                }
                while self.peek()? != b'Z' {
                    self.skip_value()?;
                    self.skip_value()?;
                }
                self.pos += 1;
                self.leave();
            }
            b'U' | b'W' => {
                self.enter()?;
                if tag == b'U' {
                    self.read_type()?;
                }
                while self.peek()? != b'Z' {
                    self.skip_value()?;
                }
                self.pos += 1;
                self.leave();
            }
            b'V' | b'X' | 0x70..=0x7f => {
                self.enter()?;
                if tag == b'V' || (0x70..=0x77).contains(&tag) {
                    self.read_type()?;
                }
                let len = match tag {
                    b'V' | b'X' => {
                        let len_at = self.pos;
                        let len = self.read_int()?;
                        usize::try_from(len).map_err(|_| Error::NegativeLength {
                            len: i64::from(len),
                            at: len_at,
                        })?
                    }
                    t => usize::from((t - 0x70) & 0x07),
                };
                for _ in 0..len {
                    self.skip_value()?;
                }
                self.leave();
            }
            b'Q' => {
                self.read_int()?;
            }
            tag => return Err(Error::UnexpectedTag { tag, at }),
        }
        Ok(())
    }

    /// Reads a string, or `None` for `N` (Java's `readString()` of a null).
    pub fn read_string_or_null(&mut self) -> Result<Option<String>, Error> {
        let at = self.pos;
        let tag = self.byte()?;
        match tag {
            b'N' => Ok(None),
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => self.string_after(tag, at).map(Some),
            tag => Err(Error::Expected {
                expected: "string",
                tag,
                at,
            }),
        }
    }

    /// Reads a string; `N` reads as the empty string.
    pub fn read_string(&mut self) -> Result<String, Error> {
        Ok(self.read_string_or_null()?.unwrap_or_default())
    }

    /// Reads an int (any int encoding).
    pub fn read_int(&mut self) -> Result<i32, Error> {
        let at = self.pos;
        let tag = self.byte()?;
        match tag {
            0x80..=0xd7 | b'I' => self.int_after(tag, at),
            tag => Err(Error::Expected {
                expected: "int",
                tag,
                at,
            }),
        }
    }

    fn left(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn enter(&mut self) -> Result<(), Error> {
        if self.depth >= self.max_depth {
            return Err(Error::TooDeep {
                max: self.max_depth,
            });
        }
        self.depth += 1;
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn peek(&self) -> Result<u8, Error> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Error::UnexpectedEof { at: self.pos })
    }

    fn byte(&mut self) -> Result<u8, Error> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(Error::UnexpectedEof { at: self.buf.len() })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn u16(&mut self) -> Result<usize, Error> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn int_after(&mut self, tag: u8, at: usize) -> Result<i32, Error> {
        Ok(match tag {
            0x80..=0xbf => i32::from(tag) - 0x90,
            0xc0..=0xcf => ((i32::from(tag) - 0xc8) << 8) | i32::from(self.byte()?),
            0xd0..=0xd7 => {
                let [b1, b0] = self.array()?;
                ((i32::from(tag) - 0xd4) << 16) | (i32::from(b1) << 8) | i32::from(b0)
            }
            b'I' => self.i32()?,
            tag => return Err(Error::UnexpectedTag { tag, at }),
        })
    }

    fn long_after(&mut self, tag: u8, at: usize) -> Result<i64, Error> {
        Ok(match tag {
            0xd8..=0xef => i64::from(tag) - 0xe0,
            0xf0..=0xff => ((i64::from(tag) - 0xf8) << 8) | i64::from(self.byte()?),
            0x38..=0x3f => {
                let [b1, b0] = self.array()?;
                ((i64::from(tag) - 0x3c) << 16) | (i64::from(b1) << 8) | i64::from(b0)
            }
            b'Y' => i64::from(self.i32()?),
            b'L' => self.i64()?,
            tag => return Err(Error::UnexpectedTag { tag, at }),
        })
    }

    fn double_after(&mut self, tag: u8) -> Result<f64, Error> {
        Ok(match tag {
            0x5b => 0.0,
            0x5c => 1.0,
            0x5d => f64::from(self.byte()? as i8),
            0x5e => f64::from(i16::from_be_bytes(self.array()?)),
            // Java's Hessian2Output writes whole thousandths as an int ("double mill").
            0x5f => 0.001 * f64::from(self.i32()?),
            _ => f64::from_bits(self.i64()? as u64),
        })
    }

    /// Reads string chunks after `tag`; lengths count UTF-16 code units, each written as a
    /// 1–3 byte UTF-8 sequence (surrogates separately, as Java does). 4-byte sequences are
    /// accepted as two units. Unpaired surrogates become U+FFFD.
    fn string_after(&mut self, tag: u8, at: usize) -> Result<String, Error> {
        let mut units: Vec<u16> = Vec::new();
        self.string_chunks(tag, at, Some(&mut units))?;
        Ok(char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect())
    }

    /// Reads the string chunks after `tag`, appending their UTF-16 units to `out` (or only
    /// checking them when `out` is `None`).
    fn string_chunks(
        &mut self,
        mut tag: u8,
        mut at: usize,
        mut out: Option<&mut Vec<u16>>,
    ) -> Result<(), Error> {
        loop {
            let (len, last) = match tag {
                0x00..=0x1f => (usize::from(tag), true),
                0x30..=0x33 => (
                    (usize::from(tag - 0x30) << 8) | usize::from(self.byte()?),
                    true,
                ),
                b'S' => (self.u16()?, true),
                b'R' => (self.u16()?, false),
                tag => {
                    return Err(Error::Expected {
                        expected: "string chunk",
                        tag,
                        at,
                    });
                }
            };
            if let Some(units) = out.as_deref_mut() {
                units.reserve(len.min(self.left()));
            }
            self.utf16_units(len, out.as_deref_mut())?;
            if last {
                return Ok(());
            }
            at = self.pos;
            tag = self.byte()?;
        }
    }

    fn utf16_units(&mut self, count: usize, mut out: Option<&mut Vec<u16>>) -> Result<(), Error> {
        let mut n = 0;
        while n < count {
            let at = self.pos;
            let b0 = self.byte()?;
            let cont = |s: &mut Self| -> Result<u32, Error> {
                let at = s.pos;
                let b = s.byte()?;
                if b & 0xc0 == 0x80 {
                    Ok(u32::from(b & 0x3f))
                } else {
                    Err(Error::InvalidUtf8 { at })
                }
            };
            match b0 {
                0x00..=0x7f => {
                    if let Some(out) = out.as_deref_mut() {
                        out.push(u16::from(b0));
                    }
                    n += 1;
                }
                0xc0..=0xdf => {
                    let c = (u32::from(b0 & 0x1f) << 6) | cont(self)?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push(c as u16);
                    }
                    n += 1;
                }
                0xe0..=0xef => {
                    let c = (u32::from(b0 & 0x0f) << 12) | (cont(self)? << 6) | cont(self)?;
                    if let Some(out) = out.as_deref_mut() {
                        out.push(c as u16);
                    }
                    n += 1;
                }
                0xf0..=0xf7 => {
                    let c = (u32::from(b0 & 0x07) << 18)
                        | (cont(self)? << 12)
                        | (cont(self)? << 6)
                        | cont(self)?;
                    let mut pair = [0u16; 2];
                    match (char::from_u32(c), out.as_deref_mut()) {
                        (Some(ch), Some(out)) => out.extend_from_slice(ch.encode_utf16(&mut pair)),
                        (Some(_), None) => {}
                        (None, _) => return Err(Error::InvalidUtf8 { at }),
                    }
                    n += 2;
                }
                _ => return Err(Error::InvalidUtf8 { at }),
            }
        }
        Ok(())
    }

    fn binary_after(&mut self, mut tag: u8, mut at: usize) -> Result<Bytes, Error> {
        let mut chunks: Option<Vec<u8>> = None;
        loop {
            let (len, last) = match tag {
                0x20..=0x2f => (usize::from(tag - 0x20), true),
                0x34..=0x37 => (
                    (usize::from(tag - 0x34) << 8) | usize::from(self.byte()?),
                    true,
                ),
                b'B' => (self.u16()?, true),
                b'A' => (self.u16()?, false),
                tag => {
                    return Err(Error::Expected {
                        expected: "binary chunk",
                        tag,
                        at,
                    });
                }
            };
            let start = self.pos;
            self.take(len)?;
            match (&mut chunks, last) {
                // One unchunked piece: hand out a slice of the input.
                (None, true) => return Ok(self.buf.slice(start..start + len)),
                (None, false) => chunks = Some(self.buf[start..start + len].to_vec()),
                (Some(acc), _) => acc.extend_from_slice(&self.buf[start..start + len]),
            }
            if last {
                return Ok(Bytes::from(chunks.unwrap_or_default()));
            }
            at = self.pos;
            tag = self.byte()?;
        }
    }

    /// `type ::= string | int`: a new type name, or the index of one seen before.
    fn read_type(&mut self) -> Result<Arc<str>, Error> {
        let at = self.pos;
        match self.peek()? {
            0x00..=0x1f | 0x30..=0x33 | b'S' | b'R' => {
                let name: Arc<str> = self.read_string()?.into();
                self.types.push(name.clone());
                Ok(name)
            }
            _ => {
                let index = i64::from(self.read_int()?);
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.types.get(i))
                    .cloned()
                    .ok_or(Error::UnknownType { index, at })
            }
        }
    }

    /// `C string int string*`: a class name, a field count and the field names.
    fn class_def(&mut self) -> Result<(), Error> {
        let name: Arc<str> = self.read_string()?.into();
        let count_at = self.pos;
        let count = self.read_int()?;
        let count = usize::try_from(count).map_err(|_| Error::NegativeLength {
            len: i64::from(count),
            at: count_at,
        })?;
        let mut fields = Vec::with_capacity(count.min(self.left()));
        for _ in 0..count {
            fields.push(Arc::<str>::from(self.read_string()?));
        }
        self.classes.push(ClassDef {
            name,
            fields: fields.into(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_matches_read() {
        let limits = Limits {
            max_hessian_depth: 3,
            ..Limits::default()
        };
        let cases: &[(&[u8], Result<usize, Error>)] = &[
            (b"N", Ok(1)),
            (b"\x90", Ok(1)),
            (b"\xd4\x00\x01", Ok(3)),
            (b"L\x00\x00\x00\x00\x00\x00\x00\x01", Ok(9)),
            (b"D\x40\x00\x00\x00\x00\x00\x00\x00", Ok(9)),
            (b"J\x00\x00\x00\x00\x00\x00\x00\x00", Ok(9)),
            (b"K\x00\x00\x00\x01", Ok(5)),
            (b"\x03abc", Ok(4)),
            // "é" is one unit in two bytes; "😀" two units in four.
            (b"\x01\xc3\xa9", Ok(3)),
            (b"\x02\xf0\x9f\x98\x80", Ok(5)),
            (b"R\x00\x01aS\x00\x01b", Ok(8)),
            (b"\x22\x01\x02", Ok(3)),
            (b"A\x00\x01xB\x00\x01y", Ok(8)),
            (b"H\x01a\x90Z", Ok(5)),
            (b"M\x04java\x90\x91Z", Ok(9)),
            (b"W\x90\x91Z", Ok(4)),
            (b"\x7a\x90\x91", Ok(3)),
            (b"\x71\x01t\x90", Ok(4)),
            (b"C\x01P\x91\x01x\x60\x95", Ok(8)),
            (b"Q\x90", Ok(2)),
            // Malformed: the same error as read_value.
            (b"", Err(Error::UnexpectedEof { at: 0 })),
            (b"\x05ab", Err(Error::UnexpectedEof { at: 3 })),
            (b"\x01\xc3", Err(Error::UnexpectedEof { at: 2 })),
            (b"\x01\xff", Err(Error::InvalidUtf8 { at: 1 })),
            (b"\x01\xc3\x41", Err(Error::InvalidUtf8 { at: 2 })),
            (
                b"R\x00\x01a\x90",
                Err(Error::Expected {
                    expected: "string chunk",
                    tag: 0x90,
                    at: 4,
                }),
            ),
            (b"\x60", Err(Error::UnknownClass { index: 0, at: 0 })),
            (b"\x71\x92\x90", Err(Error::UnknownType { index: 2, at: 1 })),
            (b"X\x8f", Err(Error::NegativeLength { len: -1, at: 1 })),
            (b"W\x90", Err(Error::UnexpectedEof { at: 2 })),
            (b"WWWW", Err(Error::TooDeep { max: 3 })),
            (b"Z", Err(Error::UnexpectedTag { tag: b'Z', at: 0 })),
            (b"C\x01P\x8f", Err(Error::NegativeLength { len: -1, at: 3 })),
        ];
        for (input, want) in cases {
            let mut read = Reader::with_limits(Bytes::from_static(input), &limits);
            let mut skip = Reader::with_limits(Bytes::from_static(input), &limits);
            let read_result = read.read_value().map(|_| read.position());
            let skip_result = skip.skip_value().map(|()| skip.position());
            assert_eq!(&skip_result, want, "{input:02x?}");
            assert_eq!(read_result, skip_result, "{input:02x?}");
        }
    }
}
