//! Parsers of everything the supervisor reads from outside: notify
//! datagrams, control requests, listener specs, signals and ready modes
//! from the command line, and HTTP heads (the health endpoint's requests,
//! the probe's answers). The formats a child reads as well (the `LISTEN_*`
//! variables, the fetch wire format) are defined once, in
//! `supervisor_child::protocol`, and used from there.
//!
//! Every function here is pure: it takes bytes or text and returns a value
//! or an error, with no I/O, no environment, no clock. The binary reads
//! sockets and variables and hands what it read to these. Durations and
//! environment files, parsed by [`crate::duration`] and [`crate::envfile`],
//! are pure in the same way.
//!
//! Being in the (internal) library, they can be fuzzed: the targets under `fuzz/` call
//! them directly, and property tests with a fixed seed run in `cargo test`.

pub mod control;
pub mod http;
pub mod listen;
pub mod notify;
pub mod ready;
pub mod signal;
