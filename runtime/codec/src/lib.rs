//! Wire codecs for the RPC protocols Outrigger speaks and proxies: SOFA Bolt (v1 and v2),
//! Dubbo 2 and the Hessian 2 serialization both of them carry.
//!
//! This crate is pure: no I/O, no async, and no allocation a peer can inflate past [`Limits`].
//! Framing is streaming — each protocol's `decode` takes the connection's read buffer, returns
//! `Ok(None)` until one whole frame is buffered, then splits exactly that frame off and hands
//! out zero-copy [`bytes::Bytes`] slices of it. Length fields are checked against [`Limits`] as
//! soon as the fixed header is in, so an oversized frame is refused before its body arrives.
//! What a frame *means* — routing, pooling, heartbeat timers, error mapping — belongs to the
//! channels and the proxy core, not here.
//!
//! The protocol modules are public namespaces (`bolt::Frame`, `dubbo::Frame`,
//! `hessian::Value`); everything shared is re-exported below.

pub mod bolt;
mod crc32;
pub mod dubbo;
mod error;
pub mod hessian;
mod limits;
mod sniff;

pub use error::{DecodeError, EncodeError};
pub use limits::Limits;
pub use sniff::{HTTP2_PREFACE, Sniffed, sniff};
