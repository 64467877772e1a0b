//! The lifecycle machine's unit tests: inputs in, actions out, time
//! passed in; no process, no socket.
//!
//! The helpers are here; the tests are beside the machine's files, one
//! file per phase.

use super::*;

mod exit;
mod rollout;
mod saved;
mod start;
mod stop;

const G1: Generation = Generation(1);

const G2: Generation = Generation(2);

const G3: Generation = Generation(3);

fn cfg(ready: ReadyMode, restart: RestartPolicy) -> Config {
    Config {
        ready,
        ready_timeout: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(3),
        restart,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(400),
        healthy_after: Duration::from_secs(10),
        quiesce: None,
        stop_signal: 15,
        start_limit: None,
        shutdown_delay: Duration::ZERO,
        workers: 1,
        reload: Strategy::AllAtOnce,
        max_generations: None,
        first_start_final: false,
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// The actions, less those about sockets and probes (`Route` is a no-op
/// in shared mode; the steer tests below look at every action).
fn actions(m: &mut Machine) -> Vec<Action> {
    all_actions(m)
        .into_iter()
        .filter(|a| {
            !matches!(
                a,
                Action::Route(_) | Action::Abandon(_) | Action::Release(_)
            )
        })
        .collect()
}

fn all_actions(m: &mut Machine) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Kill,
}

fn signals(acts: &[Action]) -> Vec<(Generation, Signal)> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Stop(g) => Some((*g, Signal::Stop)),
            Action::Kill(g) => Some((*g, Signal::Kill)),
            _ => None,
        })
        .collect()
}

fn spawns(acts: &[Action]) -> Vec<Generation> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Spawn(g) => Some(*g),
            _ => None,
        })
        .collect()
}

/// A machine with generation 1 active (notify mode).
fn serving(restart: RestartPolicy) -> (Machine, Instant) {
    let t0 = Instant::now();
    let mut m = Machine::new(cfg(ReadyMode::Notify, restart), t0);
    assert_eq!(actions(&mut m), vec![Action::Spawn(G1)]);
    m.handle(ms(t0, 50), Input::WorkerReady(G1, 0));
    let acts = actions(&mut m);
    assert_eq!(
        acts,
        vec![Action::Report(Event::Ready {
            generation: G1,
            after: Duration::from_millis(50),
            replaced: None
        })]
    );
    assert_eq!(m.active(), Some(G1));
    (m, t0)
}

fn steer_cfg() -> Config {
    Config {
        quiesce: Some(Quiesce {
            quiet: Duration::from_millis(200),
            limit: Duration::from_secs(2),
            poll: Duration::from_millis(10),
        }),
        ..cfg(ReadyMode::Notify, RestartPolicy::OnFailure)
    }
}

/// Steer mode, generation 2 just became ready over generation 1.
fn switched() -> (Machine, Instant) {
    let t0 = Instant::now();
    let mut m = Machine::new(steer_cfg(), t0);
    assert_eq!(all_actions(&mut m), vec![Action::Spawn(G1)]);
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    let acts = all_actions(&mut m);
    assert_eq!(acts[0], Action::Route(G1), "the first generation is routed");
    m.handle(ms(t0, 100), Input::Reload(1));
    assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
    m.handle(ms(t0, 150), Input::WorkerReady(G2, 0));
    let acts = all_actions(&mut m);
    assert_eq!(
        acts[0],
        Action::Route(G2),
        "new connections go to gen 2 first"
    );
    assert!(
        !acts.contains(&Action::Stop(G1)),
        "gen 1 is not stopped at the switch: {acts:?}"
    );
    assert!(acts.contains(&Action::Report(Event::Quiescing { generation: G1 })));
    assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
    assert_eq!(m.phases()[0].1, Phase::Quiescing);
    (m, t0)
}

/// A steered machine with `n` workers per generation, generation 1
/// serving with every worker ready.
fn pool(n: u32) -> (Machine, Instant) {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Config {
            workers: n,
            ..steer_cfg()
        },
        t0,
    );
    assert_eq!(all_actions(&mut m), vec![Action::Spawn(G1)]);
    for w in 0..n {
        assert_eq!(m.active(), None, "ready before worker {w}");
        m.handle(ms(t0, 10), Input::WorkerReady(G1, w));
    }
    assert_eq!(m.active(), Some(G1));
    assert_eq!(all_actions(&mut m)[0], Action::Route(G1));
    (m, t0)
}

fn answers(acts: &[Action]) -> Vec<ReloadOutcome> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Answer(_, o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

/// Drive a rolling reload of `n` workers, `k` at a time, with every
/// new worker ready and every retired one exiting as soon as they can,
/// one fact at a time; check that no more than n + k are ever alive.
fn roll_all(m: &mut Machine, t0: Instant, n: u32, k: u32) -> Vec<Action> {
    m.handle(ms(t0, 100), Input::ReloadWith(1, Strategy::Rolling(k)));
    let mut seen = Vec::new();
    let mut facts = VecDeque::new();
    let mut at = 100;
    loop {
        assert!(m.alive_workers() <= n + k, "{} alive", m.alive_workers());
        for a in all_actions(m) {
            match &a {
                Action::SpawnWorker(g, w) => facts.push_back(Input::WorkerReady(*g, *w)),
                Action::StopWorker(g, w) => {
                    facts.push_back(Input::WorkerExited(*g, *w, ExitStatus::Code(0)));
                }
                _ => {}
            }
            seen.push(a);
        }
        let Some(next) = facts.pop_front() else {
            break;
        };
        at += 10;
        m.handle(ms(t0, at), next);
    }
    seen
}

/// Generation 2 a canary with `percent`, beside generation 1.
fn canary(percent: u32, promote_after: Option<Duration>) -> (Machine, Instant) {
    let (mut m, t0) = pool(2);
    m.handle(
        ms(t0, 100),
        Input::ReloadWith(
            1,
            Strategy::Canary {
                percent,
                promote_after,
            },
        ),
    );
    assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
    m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
    m.handle(ms(t0, 120), Input::WorkerReady(G2, 1));
    let acts = all_actions(&mut m);
    assert_eq!(
        acts[0],
        Action::Split(vec![(G1, 100 - percent), (G2, percent)])
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::Route(_))));
    assert!(matches!(
        answers(&acts)[..],
        [ReloadOutcome::Canary {
            generation: G2,
            serving: G1,
            ..
        }]
    ));
    assert_eq!(m.active(), Some(G1));
    assert_eq!(m.canary(), Some(G2));
    (m, t0)
}
