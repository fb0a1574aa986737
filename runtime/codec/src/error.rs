//! Framing errors shared by the Bolt and Dubbo codecs. A `DecodeError` means the byte stream
//! cannot be trusted any more: the caller closes the connection (after answering in the
//! protocol's own status code where it can). Body-level errors live with the body parsers.

/// Why a byte stream is not a valid frame.
///
/// After an error nothing is consumed from the buffer; the stream is out of sync and the
/// connection should be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte is neither Bolt v1 (`0x01`) nor v2 (`0x02`).
    #[error("not a bolt frame: protocol byte {0:#04x}")]
    BadBoltProtocol(u8),
    /// A Bolt `type` byte other than 0 (response), 1 (request) and 2 (one-way).
    #[error("unknown bolt frame type {0:#04x}")]
    UnknownBoltType(u8),
    /// A Bolt frame whose type/cmdcode pair names no known command.
    #[error("unknown bolt command: type {rpc_type:#04x}, cmdcode {cmd_code}")]
    UnknownBoltCommand {
        /// The `type` byte.
        rpc_type: u8,
        /// The `cmdcode` field.
        cmd_code: u16,
    },
    /// The first two bytes are not Dubbo's magic `0xdabb`.
    #[error("not a dubbo frame: magic {0:#06x}")]
    BadDubboMagic(u16),
    /// A length field exceeds the configured [`crate::Limits`].
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Which part of the frame.
        what: &'static str,
        /// The length the peer announced.
        len: u64,
        /// The configured cap.
        max: u64,
    },
    /// A length field is negative.
    #[error("negative {what} length {len}")]
    NegativeLength {
        /// Which part of the frame.
        what: &'static str,
        /// The length the peer announced.
        len: i64,
    },
    /// A Bolt header map entry runs past the end of the header region.
    #[error(
        "truncated bolt header map: entry at offset {offset} needs {needed} bytes, {available} left"
    )]
    TruncatedHeaderMap {
        /// Offset of the failing length field or string inside the header region.
        offset: usize,
        /// Bytes the entry needs.
        needed: usize,
        /// Bytes left in the header region.
        available: usize,
    },
    /// A Bolt header map length below -1 (-1 means null).
    #[error("bad bolt header map string length {len} at offset {offset}")]
    BadHeaderMapLength {
        /// Offset of the length field inside the header region.
        offset: usize,
        /// The length read.
        len: i32,
    },
    /// A Bolt v2 frame whose CRC32 does not match its bytes.
    #[error("bolt crc32 mismatch: frame carries {carried:#010x}, bytes hash to {computed:#010x}")]
    CrcMismatch {
        /// The checksum at the end of the frame.
        carried: u32,
        /// The checksum of the frame's bytes.
        computed: u32,
    },
    /// A request-id rewrite was given fewer bytes than the frame needs.
    #[error("frame is {needed} bytes but only {available} were given")]
    Incomplete {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
}

/// Why a frame cannot be encoded: a variable part is larger than its length field can say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A part of the frame does not fit its length field.
    #[error("{what} of {len} bytes does not fit the {max}-byte length field")]
    TooLarge {
        /// Which part of the frame.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most the field can carry.
        max: usize,
    },
}

pub(crate) fn too_large(what: &'static str, len: usize, max: usize) -> EncodeError {
    EncodeError::TooLarge { what, len, max }
}
