//! The machine's state carried across an in-place upgrade: what is saved,
//! and the machine made again from it. The format is read back by every
//! later version (fields added since are `#[serde(default)]`; a state
//! without workers gets one worker per generation); it never holds the
//! settings, which the new image reads from its own command line.

use super::*;

/// The machine's state as carried across an in-place upgrade (everything
/// but the settings, which the new image reads from its command line, and
/// the actions, which are all carried out before an upgrade).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    generations: Vec<(Generation, State)>,
    last: u64,
    queued: Option<Vec<Ticket>>,
    #[serde(with = "crate::carry::mono::opt")]
    restart_at: Option<Instant>,
    failures: u32,
    stopping: Stopping,
    exit_with: Option<Generation>,
    exit_status: Option<ExitStatus>,
    last_status: Option<ExitStatus>,
    done: bool,
    restarts: u64,
    #[serde(with = "crate::carry::mono")]
    now: Instant,
    #[serde(with = "crate::carry::mono::seq")]
    starts: VecDeque<Instant>,
    #[serde(default)]
    pools: Vec<(Generation, Vec<Worker>)>,
    #[serde(default)]
    rollout: Option<Rollout>,
    #[serde(default)]
    queued_strategy: Option<Strategy>,
    #[serde(default)]
    split: Vec<(Generation, u32)>,
    #[serde(default)]
    surge: u32,
}

impl Machine {
    /// The state to carry across an in-place upgrade.
    ///
    /// # Panics
    /// In debug builds, if actions are still waiting to be carried out.
    pub fn save(&self) -> Saved {
        debug_assert!(self.actions.is_empty(), "saved with actions pending");
        Saved {
            generations: self.states().map(|(g, s)| (g, s.clone())).collect(),
            last: self.last,
            queued: self.queued.clone(),
            restart_at: self.restart_at,
            failures: self.failures,
            stopping: self.stopping,
            exit_with: self.exit_with,
            exit_status: self.exit_status,
            last_status: self.last_status,
            done: self.done,
            restarts: self.restarts,
            now: self.now,
            starts: self.starts.clone(),
            pools: self
                .gens
                .iter()
                .map(|(g, x)| (*g, x.workers.clone()))
                .collect(),
            rollout: self.rollout.clone(),
            queued_strategy: self.queued_strategy,
            split: self.split.clone(),
            surge: self.surge,
        }
    }

    /// The machine an upgrade carried across, with this image's settings.
    /// Its time is `now` at the earliest (the clock goes on through exec,
    /// but the carried instants are approximations).
    pub fn restore(cfg: Config, saved: Saved, now: Instant) -> Machine {
        let mut pools: BTreeMap<Generation, Vec<Worker>> = saved.pools.into_iter().collect();
        let gens = saved
            .generations
            .into_iter()
            .map(|(g, state)| {
                // A state saved by a version without workers has no pools:
                // each generation gets its one worker, in its phase.
                let workers = pools
                    .remove(&g)
                    .unwrap_or_else(|| vec![Worker::alone(&state)]);
                (g, Gen { state, workers })
            })
            .collect();
        Machine {
            cfg,
            gens,
            last: saved.last,
            queued: saved.queued,
            restart_at: saved.restart_at,
            failures: saved.failures,
            stopping: saved.stopping,
            exit_with: saved.exit_with,
            exit_status: saved.exit_status,
            last_status: saved.last_status,
            done: saved.done,
            restarts: saved.restarts,
            // An upgrade is refused while a takeover is under way: a
            // machine carried across one is past its first start.
            served: true,
            now: saved.now.max(now),
            starts: saved.starts,
            rollout: saved.rollout,
            queued_strategy: saved.queued_strategy,
            split: saved.split,
            surge: saved.surge.max(1),
            actions: VecDeque::new(),
        }
    }
}
