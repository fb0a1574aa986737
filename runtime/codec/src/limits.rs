//! Caps on what a peer may make a decoder buffer or build. Every length read off the wire is
//! checked against these before it is trusted; nothing here is a protocol fact.

/// Size caps applied by every decoder in this crate.
///
/// The defaults suit a sidecar: a 16 MiB frame (Dubbo's own default payload is 8 MiB), Bolt
/// class names up to 4 KiB (real ones are ~50 bytes) and header maps up to the 64 KiB the
/// 16-bit length field allows, and Hessian values nested at most 128 deep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (fixed header + variable parts + checksum), in bytes.
    pub max_frame_bytes: usize,
    /// Largest Bolt class name, in bytes.
    pub max_class_bytes: usize,
    /// Largest Bolt header map, in bytes.
    pub max_header_bytes: usize,
    /// Deepest nesting of Hessian lists, maps and objects a body may contain.
    pub max_hessian_depth: usize,
}

impl Limits {
    /// 16 MiB.
    pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: Self::DEFAULT_MAX_FRAME_BYTES,
            max_class_bytes: 4 * 1024,
            max_header_bytes: u16::MAX as usize,
            max_hessian_depth: 128,
        }
    }
}
