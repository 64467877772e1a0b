//! `supervisor`: a zero-downtime hot-restart supervisor for network servers.
//!
//! The binary owns the listening sockets and hands them to each generation of
//! the child server; this library is the child side of that contract, for Rust
//! servers that want named listeners and readiness in a few lines. See
//! [`child`].
//!
//! It also holds the supervisor's pure parsers of what it reads from
//! outside ([`parse`], [`duration`], [`envfile`]), so that fuzz targets can
//! call them.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

pub mod child;
pub mod duration;
pub mod envfile;
pub mod parse;
pub mod sockinfo;
pub mod status;
