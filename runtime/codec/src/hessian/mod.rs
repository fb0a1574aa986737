//! Hessian 2.0 serialization, as Dubbo's `hessian-lite` and `hessian.js` write it: enough to
//! read and write Dubbo request and response bodies, their header strings, attachments and
//! the generic-invoke call `$invoke(String, String[], Object[])` with its result.
//!
//! A [`Reader`] and a [`Writer`] each cover one *stream* (one Dubbo body): class definitions,
//! list/map type names and back-references are numbered across every value of that stream,
//! as Java's `Hessian2Input` numbers them. The reader keeps back-references as
//! [`Value::Ref`] instead of cloning their target, so a hostile body cannot amplify memory
//! and a self-referencing exception (`Throwable.cause == this`) still reads; [`resolve_refs`]
//! expands them when a caller needs a plain tree.
//!
//! Not covered: the pre-2.0 draft dialect SOFA's Hessian 3.1.3 writes (`'O'` class
//! definitions, `'V' 't' … 'z'` lists) and Hessian 1 — Bolt content stays opaque bytes here.

mod reader;
mod value;
mod writer;

pub use reader::Reader;
pub use value::{List, Map, Object, Value, resolve_refs};
pub use writer::Writer;

/// Why Hessian bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside a value.
    #[error("hessian input ends inside a value (at byte {at})")]
    UnexpectedEof {
        /// Offset where more bytes were needed.
        at: usize,
    },
    /// A tag no value starts with, or one this position does not allow.
    #[error("unexpected hessian tag {tag:#04x} at byte {at}")]
    UnexpectedTag {
        /// The tag byte.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A value of the wrong type where a specific type is required.
    #[error("expected {expected} at byte {at}, found tag {tag:#04x}")]
    Expected {
        /// What was required.
        expected: &'static str,
        /// The tag found.
        tag: u8,
        /// Its offset.
        at: usize,
    },
    /// A string whose bytes are not UTF-8.
    #[error("invalid utf-8 in hessian string at byte {at}")]
    InvalidUtf8 {
        /// Offset of the bad byte.
        at: usize,
    },
    /// An object instance naming a class definition that was never sent.
    #[error("hessian object refers to undefined class #{index} at byte {at}")]
    UnknownClass {
        /// The class index.
        index: i64,
        /// Offset of the instance.
        at: usize,
    },
    /// A list or map type given by an index that was never defined.
    #[error("hessian type reference #{index} is undefined at byte {at}")]
    UnknownType {
        /// The type index.
        index: i64,
        /// Offset of the reference.
        at: usize,
    },
    /// A negative length or count.
    #[error("negative hessian length {len} at byte {at}")]
    NegativeLength {
        /// The length read.
        len: i64,
        /// Its offset.
        at: usize,
    },
    /// Lists, maps and objects nested deeper than the limit.
    #[error("hessian values nested deeper than {max}")]
    TooDeep {
        /// The configured depth limit.
        max: usize,
    },
    /// Expanding back-references would build more values than allowed, or loops.
    #[error("hessian back-references expand past {max} values")]
    RefExpansion {
        /// The configured budget.
        max: usize,
    },
}
