//! Parsers of everything the supervisor reads from outside: notify
//! datagrams, control requests and answers, listener specs, signals and
//! ready modes from the command line, the `LISTEN_*` variables, and HTTP
//! heads (the health endpoint's requests, the probe's answers).
//!
//! Every function here is pure: it takes bytes or text and returns a value
//! or an error, with no I/O, no environment, no clock. The binary reads
//! sockets and variables and hands what it read to these. Durations and
//! environment files, parsed by [`crate::duration`] and [`crate::envfile`],
//! are pure in the same way.
//!
//! Being in the library, they can be fuzzed: the targets under `fuzz/` call
//! them directly, and property tests with a fixed seed run in `cargo test`.

pub mod activation;
pub mod control;
pub mod http;
pub mod listen;
pub mod notify;
pub mod ready;
pub mod signal;

#[cfg(test)]
pub(crate) mod rng;
