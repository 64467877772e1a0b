//! The state one image of the supervisor hands the next (an in-place
//! upgrade) or, in part, another supervisor (a takeover): every part's
//! saved form, gathered beside the driver that writes and reads it. Only
//! types: it never reads, writes or acts.

use std::os::fd::RawFd;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::carry::mono;

/// The state's format name.
pub const FORMAT: &str = "supervisor-state";

/// The state's version written by this binary; it reads every version up
/// to this one. Version 1 is the first.
pub const VERSION: u32 = 1;

/// Everything an image hands to the next one.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`] of the writer.
    pub version: u32,
    /// The writer's version (what `supervisor --version` says).
    pub writer: String,
    /// Every fd the state names (each open, each once).
    pub fds: Vec<RawFd>,
    /// The lifecycle.
    pub machine: crate::machine::Saved,
    /// The processes.
    pub children: crate::children::Saved,
    /// The listeners and their groups.
    pub steering: crate::steer::Saved,
    /// The control socket and its connections.
    pub control: crate::control::Saved,
    /// The health endpoint's listening socket.
    pub health: Option<crate::health::Saved>,
    /// What the service manager has been told.
    pub manager: Option<crate::manager::Saved>,
    /// The children's channels (absent in states written before they
    /// existed).
    #[serde(default)]
    pub channels: crate::channel::Saved,
    /// Counters and texts of the report.
    pub report: crate::report::Report,
    /// The driver's own.
    pub driver: DriverSaved,
}

/// The driver's part of the state.
#[derive(Debug, Serialize, Deserialize)]
pub struct DriverSaved {
    /// The last reload ticket issued.
    pub next_ticket: u64,
    /// Reload tickets and the control connections waiting for them.
    pub reload_waiters: Vec<(u64, u64)>,
    /// The control connection that asked for this upgrade.
    pub upgrade_waiter: Option<u64>,
    /// When the supervisor started.
    #[serde(with = "mono")]
    pub started: Instant,
    /// Upgrades so far, this one included.
    pub upgrades: u64,
    /// When the upgrade was asked for (for the answer's timing).
    #[serde(with = "mono")]
    pub requested: Instant,
    /// The version that wrote the state before this one (for the answer).
    pub from_version: String,
    /// Unix time of this upgrade.
    pub upgraded_at: f64,
}
