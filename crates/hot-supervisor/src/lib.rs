//! Internal: the parts of the `supervisor` command that its integration
//! tests and the fuzz targets call directly. **Not an API**: nothing here
//! is covered by semver, and every module is hidden from the docs.
//!
//! The crate a server adds is `supervisor-child` (the server's side of the
//! protocol); this package is installed for its binary, `supervisor`
//! (`cargo install hot-supervisor`).
//!
//! What is here, and why it is a library at all:
//! - the pure parsers of what the supervisor reads from outside
//!   (`parse`, `duration`, `envfile`), so that the targets under `fuzz/`
//!   can call them;
//! - `status`, the `supervisor status --json` document, which the tests
//!   read as typed values;
//! - `sockinfo`, the kernel's view of a socket, which the tests use to
//!   check queues.
//!
//! The fuzz targets reach them through these hidden modules rather than a
//! cargo feature: the tests need them too, and a feature would make every
//! `cargo test` name it.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod duration;
#[doc(hidden)]
pub mod envfile;
#[doc(hidden)]
pub mod events;
#[doc(hidden)]
pub mod parse;
#[doc(hidden)]
pub mod sockinfo;
#[doc(hidden)]
pub mod status;
