//! The supervisor's own hand-offs, as one typed state machine beside the
//! lifecycle's: an in-place upgrade (its binary checked, then the exec at
//! the top of the loop), another supervisor taking every socket
//! ([`crate::takeover::Source`]), and this one taking them from another
//! ([`crate::takeover::Sink`]). At most one is under way; what each state
//! refuses is decided here, typed ([`Refusal`]), and said once.
//!
//! Owns which hand-off is under way and the parts that carry it out (the
//! check process, the connection to the other supervisor). It never
//! polls, logs or changes the lifecycle itself: the driver routes its fds
//! and feeds the machine what it decides.

use std::fmt;
use std::time::Instant;

use crate::control::ConnId;
use crate::machine::Generation;

/// Which hand-off is under way.
#[derive(Default)]
pub enum Handoff {
    /// None.
    #[default]
    Idle,
    /// An upgrade's new binary is being checked.
    Checking(crate::upgrade::Check),
    /// The check said yes: the exec is due at the top of the loop (the
    /// connection to answer, when it was asked for), once no worker's exec
    /// status is awaited (the next image could not read it; each comes
    /// within its bound). A takeover needs no such wait: the processes stay
    /// with this supervisor, whose loop goes on.
    ExecDue {
        /// The requester.
        waiter: Option<ConnId>,
        /// When it asked.
        requested: Instant,
    },
    /// Another supervisor has every socket and starts its generation; this
    /// one serves until it is told to drain.
    HandingOver(crate::takeover::Source),
    /// This supervisor took every socket of another, until that one has
    /// exited.
    TakingOver {
        /// The connection to the supervisor taken over from.
        from: crate::takeover::Sink,
        /// The first generation failed to start: give up and exit.
        failed: bool,
    },
}

/// Why a request was refused because of a hand-off (or the state that
/// forbids one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The supervisor is stopping.
    Stopping,
    /// An upgrade is under way (asked: a takeover).
    Upgrading,
    /// An upgrade is under way (asked: another upgrade).
    UpgradingAlready,
    /// Another supervisor is taking over (asked: an upgrade).
    HandingOver,
    /// Another supervisor is taking over (asked: another takeover).
    HandingOverAlready,
    /// Another supervisor (pid) is taking over (asked: a reload).
    NoReloadHere(i32),
    /// Still taking over from another supervisor (asked: a takeover).
    StillTakingOver,
    /// Still taking over from another supervisor (asked: an upgrade).
    UpgradeAfterTakeover,
    /// A generation is starting (asked: a takeover).
    Starting(Generation),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => write!(f, "the supervisor is stopping"),
            Refusal::Upgrading => write!(f, "an upgrade is under way"),
            Refusal::UpgradingAlready => write!(f, "an upgrade is already under way"),
            Refusal::HandingOver => write!(f, "another supervisor is taking over"),
            Refusal::HandingOverAlready => {
                write!(f, "another supervisor is taking over already")
            }
            Refusal::NoReloadHere(peer) => {
                write!(f, "supervisor pid {peer} is taking over: no reload here")
            }
            Refusal::StillTakingOver => {
                write!(f, "this supervisor is still taking over from another")
            }
            Refusal::UpgradeAfterTakeover => write!(
                f,
                "this supervisor is taking over from another: upgrade it once that one has exited"
            ),
            Refusal::Starting(g) => write!(f, "{g} is starting: ask again once it is ready"),
        }
    }
}

impl Handoff {
    /// Whether another supervisor may take the sockets now (`stopping`:
    /// the supervisor is; `starting`: the generation starting, if any).
    ///
    /// # Errors
    /// Why not.
    pub fn may_hand_over(
        &self,
        stopping: bool,
        starting: Option<Generation>,
    ) -> Result<(), Refusal> {
        match self {
            _ if stopping => Err(Refusal::Stopping),
            Handoff::HandingOver(_) => Err(Refusal::HandingOverAlready),
            Handoff::Checking(_) | Handoff::ExecDue { .. } => Err(Refusal::Upgrading),
            Handoff::TakingOver { .. } => Err(Refusal::StillTakingOver),
            Handoff::Idle => starting.map_or(Ok(()), |g| Err(Refusal::Starting(g))),
        }
    }

    /// Whether an upgrade may begin now.
    ///
    /// # Errors
    /// Why not.
    pub fn may_upgrade(&self, stopping: bool) -> Result<(), Refusal> {
        match self {
            Handoff::Checking(_) | Handoff::ExecDue { .. } => Err(Refusal::UpgradingAlready),
            Handoff::HandingOver(_) => Err(Refusal::HandingOver),
            Handoff::TakingOver { .. } => Err(Refusal::UpgradeAfterTakeover),
            Handoff::Idle if stopping => Err(Refusal::Stopping),
            Handoff::Idle => Ok(()),
        }
    }

    /// Whether a reload (promote, rollback) may begin now.
    ///
    /// # Errors
    /// Why not: another supervisor is taking over.
    pub fn may_reload(&self) -> Result<(), Refusal> {
        match self {
            Handoff::HandingOver(s) => Err(Refusal::NoReloadHere(s.peer)),
            _ => Ok(()),
        }
    }

    /// The check under way, if any.
    pub fn check(&self) -> Option<&crate::upgrade::Check> {
        match self {
            Handoff::Checking(c) => Some(c),
            _ => None,
        }
    }

    /// The check under way, if any, to advance.
    pub fn check_mut(&mut self) -> Option<&mut crate::upgrade::Check> {
        match self {
            Handoff::Checking(c) => Some(c),
            _ => None,
        }
    }

    /// The supervisor taking over from this one, if any.
    pub fn source(&self) -> Option<&crate::takeover::Source> {
        match self {
            Handoff::HandingOver(s) => Some(s),
            _ => None,
        }
    }

    /// The same, to advance.
    pub fn source_mut(&mut self) -> Option<&mut crate::takeover::Source> {
        match self {
            Handoff::HandingOver(s) => Some(s),
            _ => None,
        }
    }

    /// The supervisor this one takes over from, if it has not exited.
    pub fn sink(&self) -> Option<&crate::takeover::Sink> {
        match self {
            Handoff::TakingOver { from, .. } => Some(from),
            _ => None,
        }
    }

    /// A start failed while taking over, before the first generation of
    /// ours served: remembered until the takeover decides (it gives up).
    pub fn start_failed(&mut self) {
        if let Handoff::TakingOver { from, failed, .. } = self
            && !from.drained()
        {
            *failed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_allows_everything_but_a_takeover_during_a_start_or_a_stop() {
        let h = Handoff::Idle;
        assert_eq!(h.may_hand_over(false, None), Ok(()));
        assert_eq!(
            h.may_hand_over(false, Some(Generation(3))),
            Err(Refusal::Starting(Generation(3)))
        );
        assert_eq!(h.may_hand_over(true, None), Err(Refusal::Stopping));
        assert_eq!(h.may_upgrade(false), Ok(()));
        assert_eq!(h.may_upgrade(true), Err(Refusal::Stopping));
        assert_eq!(h.may_reload(), Ok(()));
    }

    #[test]
    fn an_upgrade_under_way_refuses_another_and_a_takeover_but_not_a_reload() {
        let h = Handoff::ExecDue {
            waiter: None,
            requested: Instant::now(),
        };
        assert_eq!(h.may_upgrade(false), Err(Refusal::UpgradingAlready));
        assert_eq!(h.may_hand_over(false, None), Err(Refusal::Upgrading));
        assert_eq!(h.may_reload(), Ok(()));
        assert_eq!(
            Refusal::UpgradingAlready.to_string(),
            "an upgrade is already under way"
        );
    }

    #[test]
    fn refusals_say_what_they_refuse() {
        assert_eq!(
            Refusal::NoReloadHere(42).to_string(),
            "supervisor pid 42 is taking over: no reload here"
        );
        assert_eq!(
            Refusal::Starting(Generation(2)).to_string(),
            "generation 2 is starting: ask again once it is ready"
        );
        assert_eq!(
            Refusal::UpgradeAfterTakeover.to_string(),
            "this supervisor is taking over from another: upgrade it once that one has exited"
        );
    }
}
