//! W3C trace context (`traceparent`, version `00`): parsing what a caller sent, making the
//! sidecar's own span as a child of it (same trace id, a fresh span id) or a new trace when
//! nothing valid arrived, and formatting the `traceparent` forwarded upstream. Malformed input
//! is rejected with a reason, never a panic. Not for exporting spans or sampling decisions
//! beyond carrying the caller's `sampled` flag.

use std::fmt;

/// The header (and gRPC metadata key) carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor-specific companion header, forwarded unchanged.
pub const TRACESTATE: &str = "tracestate";

/// Headers (Bolt) and attachments (Dubbo) where other tracers put their trace id, read when no
/// `traceparent` came so that the sidecar's spans stay in the caller's trace: SOFATracer's
/// (`rpc_trace_context.sofaTraceId`, and `sofa_trace_id` of older SOFA clients) and Zipkin B3's.
pub const FOREIGN_TRACE_ID_KEYS: [&str; 4] = [
    "rpc_trace_context.sofaTraceId",
    "sofa_trace_id",
    "X-B3-TraceId",
    "x-b3-traceid",
];

/// A 16-byte trace id, never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id, never all zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// One span's place in a trace: the trace, the span, and the trace flags (bit 0: sampled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace every span of the call belongs to.
    pub trace_id: TraceId,
    /// This span.
    pub span_id: SpanId,
    /// Trace flags; only bit 0 (`sampled`) is defined.
    pub flags: u8,
}

/// Why a `traceparent` value was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TraceParseError {
    /// Not `version-traceid-parentid-flags` with 2, 32, 16 and 2 hex digits.
    #[error("traceparent is not version-traceid-parentid-flags in lowercase hex")]
    Shape,
    /// Version `ff` is forbidden by the spec.
    #[error("traceparent version ff is invalid")]
    Version,
    /// An all-zero trace id.
    #[error("traceparent has an all-zero trace id")]
    ZeroTraceId,
    /// An all-zero parent id.
    #[error("traceparent has an all-zero parent id")]
    ZeroParentId,
}

/// Lowercase hex digits into `out`; `None` on any other byte.
fn hex_into(src: &[u8], out: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if src.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(())
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut out = [0u8; N];
        // Eight random bytes per draw, not one.
        for chunk in out.chunks_mut(8) {
            let r = fastrand::u64(..).to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        if out.iter().any(|&b| b != 0) {
            return out;
        }
    }
}

impl TraceContext {
    /// Parses a `traceparent` value. Version `00` must be exactly 55 characters; a higher
    /// version may carry more fields after the flags (ignored), as the spec asks.
    pub fn parse(value: &[u8]) -> Result<Self, TraceParseError> {
        // version(2) '-' trace(32) '-' parent(16) '-' flags(2)
        if value.len() < 55 {
            return Err(TraceParseError::Shape);
        }
        let mut version = [0u8; 1];
        hex_into(&value[0..2], &mut version).ok_or(TraceParseError::Shape)?;
        if version[0] == 0xff {
            return Err(TraceParseError::Version);
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return Err(TraceParseError::Shape);
        }
        if value.len() > 55 && (version[0] == 0 || value[55] != b'-') {
            return Err(TraceParseError::Shape);
        }
        let mut trace = [0u8; 16];
        hex_into(&value[3..35], &mut trace).ok_or(TraceParseError::Shape)?;
        let mut parent = [0u8; 8];
        hex_into(&value[36..52], &mut parent).ok_or(TraceParseError::Shape)?;
        let mut flags = [0u8; 1];
        hex_into(&value[53..55], &mut flags).ok_or(TraceParseError::Shape)?;
        if trace == [0; 16] {
            return Err(TraceParseError::ZeroTraceId);
        }
        if parent == [0; 8] {
            return Err(TraceParseError::ZeroParentId);
        }
        Ok(Self {
            trace_id: TraceId(trace),
            span_id: SpanId(parent),
            flags: flags[0],
        })
    }

    /// A new trace (random ids), sampled with probability `sampling_ratio` (0 to 1): what the
    /// sidecar starts when no valid context came.
    pub fn new_root(sampling_ratio: f64) -> Self {
        Self {
            trace_id: TraceId(random_nonzero()),
            span_id: SpanId(random_nonzero()),
            flags: u8::from(fastrand::f64() < sampling_ratio),
        }
    }

    /// A child span of this one: the same trace and flags, a fresh span id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: SpanId(random_nonzero()),
            flags: self.flags,
        }
    }

    /// The sidecar's span for a call that arrived with `traceparent` (if any): a child of a
    /// valid one (keeping the caller's sampling decision), else a new trace sampled with
    /// probability `sampling_ratio`. A malformed value is logged and replaced, never forwarded.
    pub fn continue_from(traceparent: Option<&[u8]>, sampling_ratio: f64) -> Self {
        Self::continue_with_parent(traceparent, sampling_ratio).0
    }

    /// [`continue_from`](Self::continue_from), with the caller's span id when a valid context
    /// came (the parent of the sidecar's span in an exported trace).
    pub fn continue_with_parent(
        traceparent: Option<&[u8]>,
        sampling_ratio: f64,
    ) -> (Self, Option<SpanId>) {
        match traceparent.map(Self::parse) {
            Some(Ok(parent)) => (parent.child(), Some(parent.span_id)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "ignoring a malformed traceparent; starting a new trace");
                (Self::new_root(sampling_ratio), None)
            }
            None => (Self::new_root(sampling_ratio), None),
        }
    }

    /// A new span in the trace another tracer named with `trace_id` (see
    /// [`FOREIGN_TRACE_ID_KEYS`]), sampled with probability `sampling_ratio`: up to 32 hex
    /// digits (SOFATracer's and B3's ids are) are the W3C trace id, right-aligned; anything
    /// else is hashed into one, so that every span of the call still shares it. `None` for an
    /// empty or all-zero id.
    pub fn from_foreign(trace_id: &str, sampling_ratio: f64) -> Option<Self> {
        let raw = trace_id.trim().as_bytes();
        if raw.is_empty() {
            return None;
        }
        let mut id = [0u8; 16];
        let hex = raw.len() <= 32 && raw.iter().all(u8::is_ascii_hexdigit);
        if hex {
            // Right-aligned: an odd digit count gets a leading zero.
            let mut padded = [b'0'; 32];
            padded[32 - raw.len()..].copy_from_slice(raw);
            padded.make_ascii_lowercase();
            hex_into(&padded, &mut id)?;
        } else {
            // FNV-1a, twice with different seeds: stable, and spread over 16 bytes.
            for (half, seed) in [(0, 0xcbf2_9ce4_8422_2325_u64), (8, 0x8422_2325_cbf2_9ce4)] {
                let h = raw.iter().fold(seed, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                });
                id[half..half + 8].copy_from_slice(&h.to_be_bytes());
            }
        }
        (id != [0; 16]).then(|| Self {
            trace_id: TraceId(id),
            span_id: SpanId(random_nonzero()),
            flags: u8::from(fastrand::f64() < sampling_ratio),
        })
    }

    /// The `traceparent` naming this span (version `00`, 55 characters).
    pub fn traceparent(&self) -> http::HeaderValue {
        fn put(out: &mut [u8; 55], at: usize, bytes: &[u8]) {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for (k, b) in bytes.iter().enumerate() {
                out[at + 2 * k] = HEX[usize::from(b >> 4)];
                out[at + 2 * k + 1] = HEX[usize::from(b & 0xf)];
            }
        }
        let mut out = [b'-'; 55];
        put(&mut out, 0, &[0]);
        put(&mut out, 3, &self.trace_id.0);
        put(&mut out, 36, &self.span_id.0);
        put(&mut out, 53, &[self.flags]);
        // Only hex digits and dashes: always a valid header value.
        http::HeaderValue::from_bytes(&out).unwrap_or(http::HeaderValue::from_static(
            "00-00000000000000000000000000000000-0000000000000000-00",
        ))
    }

    /// Puts this span's `traceparent` into `headers`, replacing the caller's.
    pub fn inject(&self, headers: &mut http::HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example() {
        let t = TraceContext::parse(VALID.as_bytes()).unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(t.flags, 1);
        assert_eq!(t.traceparent(), VALID, "round trip");
    }

    #[test]
    fn rejects_malformed_values() {
        use TraceParseError::*;
        for (value, want) in [
            ("", Shape),
            ("00", Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
                Shape,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
                Shape,
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
                Shape,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-é1",
                Shape,
            ),
        ] {
            assert_eq!(
                TraceContext::parse(value.as_bytes()),
                Err(want),
                "{value:?}"
            );
        }
    }

    #[test]
    fn foreign_trace_ids_keep_the_trace() {
        let sofa = TraceContext::from_foreign("0a0fe8e21585036488312100116856", 1.0).unwrap();
        assert_eq!(
            sofa.trace_id.to_string(),
            "000a0fe8e21585036488312100116856"
        );
        assert_eq!(sofa.flags, 1);
        let b3 = TraceContext::from_foreign("463AC35C9F6413AD", 0.0).unwrap();
        assert_eq!(b3.trace_id.to_string(), "0000000000000000463ac35c9f6413ad");
        assert_eq!(b3.flags, 0);
        let odd = TraceContext::from_foreign("trace-é/42", 1.0).unwrap();
        assert_eq!(
            odd.trace_id,
            TraceContext::from_foreign("trace-é/42", 1.0)
                .unwrap()
                .trace_id,
            "hashed ids are stable"
        );
        assert_eq!(TraceContext::from_foreign("", 1.0), None);
        assert_eq!(TraceContext::from_foreign("0000", 1.0), None);
    }

    #[test]
    fn a_future_version_may_carry_more_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        let t = TraceContext::parse(v.as_bytes()).unwrap();
        assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_sidecar_span_is_a_child_or_a_new_trace() {
        let parent = TraceContext::parse(VALID.as_bytes()).unwrap();
        let child = TraceContext::continue_from(Some(VALID.as_bytes()), 0.0);
        assert_eq!(child.trace_id, parent.trace_id);
        assert_ne!(child.span_id, parent.span_id);
        assert_eq!(
            child.flags, parent.flags,
            "the caller's sampling decision is kept"
        );
        let fresh = TraceContext::continue_from(Some(b"garbage"), 0.0);
        assert_ne!(fresh.trace_id, parent.trace_id);
        assert_eq!(fresh.flags, 0, "a new trace is sampled by the ratio");
        let root = TraceContext::continue_from(None, 1.0);
        assert_eq!(root.flags, 1);
        assert_ne!(root.trace_id.0, [0; 16]);
        let formatted = root.traceparent();
        assert_eq!(
            TraceContext::parse(formatted.as_bytes()).unwrap(),
            root,
            "what the sidecar forwards parses back"
        );
    }
}
