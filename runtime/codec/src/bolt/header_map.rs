//! The Bolt header map: SOFA RPC's `SimpleMapSerializer` format, repeated
//! `[i32 key length][key][i32 value length][value]` with no count prefix; length -1 is null,
//! 0 the empty string. Entries are kept in wire order and may repeat.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use crate::DecodeError;

/// The header map of a Bolt frame. Keys and values are the raw (UTF-8) bytes from the wire,
/// sliced from the frame without copying.
///
/// A null value (length -1) is kept as `None`. An entry with a null key is dropped on decode,
/// as SOFA RPC's Java decoder drops it (it also drops null values; we keep those so a proxy
/// forwards what it got).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(Bytes, Option<Bytes>)>,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of the first entry named `key`, if it has one (a null value reads as `None`).
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .and_then(|(_, v)| v.as_ref())
    }

    /// The value of `key` as UTF-8 text, if present, non-null and valid UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Sets `key` to `value`: replaces the first entry of that name, or appends one.
    pub fn insert(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let key = key.into();
        let value = Some(value.into());
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Appends an entry as is (duplicates and null values allowed).
    pub fn push(&mut self, key: impl Into<Bytes>, value: Option<Bytes>) {
        self.entries.push((key.into(), value));
    }

    /// Removes every entry named `key`; returns whether any was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k.as_ref() != key);
        before != self.entries.len()
    }

    /// The entries in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        self.entries.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes this map takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(k, v)| 8 + k.len() + v.as_ref().map_or(0, Bytes::len))
            .sum()
    }

    /// Writes the map in wire format. Every key and value must be shorter than 2 GiB, which
    /// a frame's 16-bit header length already guarantees; the caller checks that.
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        for (k, v) in &self.entries {
            put_string(dst, Some(k));
            put_string(dst, v.as_ref());
        }
    }

    /// Checks a header region and returns where its entries are, without copying. Entries
    /// with a null key are left out.
    pub(crate) fn scan(region: &[u8]) -> Result<Vec<EntryRange>, DecodeError> {
        let mut entries = Vec::new();
        let mut at = 0;
        while at < region.len() {
            let key = read_string(region, &mut at)?;
            let value = read_string(region, &mut at)?;
            if let Some(key) = key {
                entries.push((key, value));
            }
        }
        Ok(entries)
    }

    /// Builds the map from a region `scan` accepted; the entries share the region's memory.
    pub(crate) fn from_scan(region: &Bytes, ranges: Vec<EntryRange>) -> Self {
        let entries = ranges
            .into_iter()
            .map(|(k, v)| (region.slice(k), v.map(|v| region.slice(v))))
            .collect();
        Self { entries }
    }
}

/// Where one entry's key and (non-null) value sit inside a header region.
pub(crate) type EntryRange = (Range<usize>, Option<Range<usize>>);

impl<K: Into<Bytes>, V: Into<Bytes>> FromIterator<(K, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.into(), Some(v.into())))
                .collect(),
        }
    }
}

fn put_string(dst: &mut BytesMut, s: Option<&Bytes>) {
    match s {
        None => dst.put_i32(-1),
        Some(s) => {
            // Callers bound the whole map by u16::MAX, so this never truncates.
            dst.put_i32(i32::try_from(s.len()).unwrap_or(i32::MAX));
            dst.put_slice(s);
        }
    }
}

fn read_string(region: &[u8], at: &mut usize) -> Result<Option<Range<usize>>, DecodeError> {
    let offset = *at;
    let available = region.len() - offset;
    let Some(&[a, b, c, d]) = region.get(offset..offset + 4) else {
        return Err(DecodeError::TruncatedHeaderMap {
            offset,
            needed: 4,
            available,
        });
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    *at += 4;
    match len {
        -1 => Ok(None),
        len if len < -1 => Err(DecodeError::BadHeaderMapLength { offset, len }),
        len => {
            let len = len as usize;
            let start = *at;
            if region.len() - start < len {
                return Err(DecodeError::TruncatedHeaderMap {
                    offset: start,
                    needed: len,
                    available: region.len() - start,
                });
            }
            *at += len;
            Ok(Some(start..start + len))
        }
    }
}
