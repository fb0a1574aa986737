//! Protocol detection for `auto` listeners: look at the first bytes a client sends and pick the
//! codec. It only classifies; it never consumes or validates a frame.

/// The protocol a connection's first bytes announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// SOFA Bolt: first byte `0x01` (v1) or `0x02` (v2).
    Bolt,
    /// Dubbo 2: magic `0xda 0xbb`.
    Dubbo,
    /// Anything else is taken for HTTP/1.1.
    Http,
}

/// Classifies a connection by its first bytes, or `None` while too few bytes are buffered to
/// tell (nothing yet, or a lone `0xda`).
pub fn sniff(prefix: &[u8]) -> Option<Sniffed> {
    match prefix {
        [] => None,
        [0x01 | 0x02, ..] => Some(Sniffed::Bolt),
        [0xda] => None,
        [0xda, 0xbb, ..] => Some(Sniffed::Dubbo),
        _ => Some(Sniffed::Http),
    }
}

#[cfg(test)]
mod tests {
    use super::{Sniffed, sniff};

    #[test]
    fn table() {
        let cases: &[(&[u8], Option<Sniffed>)] = &[
            (b"", None),
            (&[0x01], Some(Sniffed::Bolt)),
            (&[0x02, 0x01], Some(Sniffed::Bolt)),
            (&[0xda], None),
            (&[0xda, 0xbb], Some(Sniffed::Dubbo)),
            (&[0xda, 0x00], Some(Sniffed::Http)),
            (b"GET / HTTP/1.1\r\n", Some(Sniffed::Http)),
            (b"P", Some(Sniffed::Http)),
        ];
        for (input, want) in cases {
            assert_eq!(sniff(input), *want, "input {input:02x?}");
        }
    }
}
