//! Protocol detection for `auto` listeners: look at the first bytes a client sends and pick the
//! codec. It only classifies; it never consumes or validates a frame.

/// The protocol a connection's first bytes announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// SOFA Bolt: first byte `0x01` (v1) or `0x02` (v2).
    Bolt,
    /// Dubbo 2: magic `0xda 0xbb`.
    Dubbo,
    /// HTTP/2 with prior knowledge: the connection preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
    Http2,
    /// Anything else is taken for HTTP/1.1.
    Http,
}

/// The client connection preface every HTTP/2 connection starts with (RFC 9113, 3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies a connection by its first bytes, or `None` while too few bytes are buffered to
/// tell (nothing yet, a lone `0xda`, or a start of the HTTP/2 preface).
pub fn sniff(prefix: &[u8]) -> Option<Sniffed> {
    match prefix {
        [] => None,
        [0x01 | 0x02, ..] => Some(Sniffed::Bolt),
        [0xda] => None,
        [0xda, 0xbb, ..] => Some(Sniffed::Dubbo),
        p if p.len() < HTTP2_PREFACE.len() && HTTP2_PREFACE.starts_with(p) => None,
        p if p.starts_with(HTTP2_PREFACE) => Some(Sniffed::Http2),
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
            (b"P", None),
            (b"PRI * HTTP/2.0", None),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00",
                Some(Sniffed::Http2),
            ),
            (b"PRI * HTTP/1.1\r\n", Some(Sniffed::Http)),
            (b"POST / HTTP/1.1\r\n", Some(Sniffed::Http)),
        ];
        for (input, want) in cases {
            assert_eq!(sniff(input), *want, "input {input:02x?}");
        }
    }
}
