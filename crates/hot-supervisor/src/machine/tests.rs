//! The lifecycle machine's unit tests: inputs in, actions out, time
//! passed in; no process, no socket.

use super::*;

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
    }
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

/// The actions, less `Route` (a no-op in shared mode; the steer tests
/// below look at every action).
fn actions(m: &mut Machine) -> Vec<Action> {
    all_actions(m)
        .into_iter()
        .filter(|a| !matches!(a, Action::Route(_) | Action::Abandon(_)))
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

#[test]
fn an_upgrade_carries_generations_deadlines_and_tickets() {
    // Generation 1 draining, 2 active, 3 starting with a ticket, a
    // reload queued behind it.
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
    m.handle(ms(t0, 300), Input::Reload(2));
    m.handle(ms(t0, 350), Input::Reload(3));
    let _ = all_actions(&mut m);
    let text = serde_json::to_string(&m.save()).unwrap();
    let saved: Saved = serde_json::from_str(&text).unwrap();
    let mut back = Machine::restore(
        cfg(ReadyMode::Notify, RestartPolicy::OnFailure),
        saved,
        ms(t0, 400),
    );
    assert_eq!(
        back.phases()
            .iter()
            .map(|(g, p, _)| (*g, *p))
            .collect::<Vec<_>>(),
        m.phases()
            .iter()
            .map(|(g, p, _)| (*g, *p))
            .collect::<Vec<_>>()
    );
    assert_eq!(back.pending_reloads(), m.pending_reloads());
    let (a, b) = (m.next_deadline().unwrap(), back.next_deadline().unwrap());
    let gap = if a > b { a - b } else { b - a };
    assert!(gap < Duration::from_millis(5), "deadline moved by {gap:?}");
    // The restored machine finishes what the old one began: the drain
    // deadline kills generation 1, the start answers ticket 2, and the
    // reload queued behind it (ticket 3) starts generation 4.
    back.handle_timeout(ms(t0, 200 + 3000 + 1));
    assert!(signals(&all_actions(&mut back)).contains(&(G1, Signal::Kill)));
    back.handle(ms(t0, 3300), Input::WorkerReady(G3, 0));
    let acts = all_actions(&mut back);
    let answered: Vec<Vec<Ticket>> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Answer(t, _) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![vec![2]]);
    assert_eq!(spawns(&acts), vec![Generation(4)]);
}

#[test]
fn a_hand_off_quiesces_the_active_generation_then_exits_0() {
    let (mut m, t0) = serving(RestartPolicy::Always);
    m.cfg.quiesce = Some(Quiesce {
        quiet: Duration::from_millis(100),
        limit: Duration::from_secs(5),
        poll: Duration::from_millis(10),
    });
    m.handle(ms(t0, 100), Input::HandOff);
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Report(Event::HandedOff)), "{acts:?}");
    assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
    assert!(
        signals(&acts).is_empty(),
        "stopped before its queue emptied"
    );
    assert!(m.stopping());
    // Reloads are refused from now on.
    m.handle(ms(t0, 110), Input::Reload(7));
    assert!(all_actions(&mut m).contains(&Action::Answer(
        vec![7],
        ReloadOutcome::Refused(Refusal::Stopping)
    )));
    // Queue empty for the quiet period: stop signal, then the exit.
    m.handle(ms(t0, 120), Input::Queued(G1, 0));
    m.handle_timeout(ms(t0, 220));
    m.handle(ms(t0, 221), Input::Queued(G1, 0));
    assert_eq!(signals(&all_actions(&mut m)), vec![(G1, Signal::Stop)]);
    // A generation that dies of something else still ends in status 0,
    // and is not restarted.
    m.handle(ms(t0, 300), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    assert_eq!(all_actions(&mut m).last(), Some(&Action::Exit(0)));
    assert!(m.is_done());
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

#[test]
fn idle_active_generation_has_no_deadline() {
    let (m, _) = serving(RestartPolicy::OnFailure);
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn delay_mode_is_ready_at_its_deadline() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        cfg(
            ReadyMode::Delay(Duration::from_secs(1)),
            RestartPolicy::OnFailure,
        ),
        t0,
    );
    assert_eq!(actions(&mut m), vec![Action::Spawn(G1)]);
    assert_eq!(m.next_deadline(), Some(ms(t0, 1000)));
    m.handle_timeout(ms(t0, 999));
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(ms(t0, 1000));
    assert_eq!(m.active(), Some(G1));
    // READY=1 before the delay also counts.
    m.handle(ms(t0, 1100), Input::Reload(1));
    let _ = actions(&mut m);
    m.handle(ms(t0, 1200), Input::WorkerReady(G2, 0));
    assert_eq!(m.active(), Some(G2));
}

#[test]
fn reload_stops_the_old_generation_only_once_the_new_one_is_ready() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(7));
    assert_eq!(actions(&mut m), vec![Action::Spawn(G2)]);
    m.handle_timeout(ms(t0, 350));
    assert!(
        actions(&mut m).is_empty(),
        "nothing happens to gen 1 while gen 2 starts"
    );
    m.handle(ms(t0, 400), Input::WorkerReady(G2, 0));
    let acts = actions(&mut m);
    let ready = ReloadOutcome::Ready {
        generation: G2,
        after: Duration::from_millis(300),
        replaced: Some(G1),
    };
    assert_eq!(
        acts,
        vec![
            Action::Report(Event::Ready {
                generation: G2,
                after: Duration::from_millis(300),
                replaced: Some(G1)
            }),
            Action::Stop(G1),
            Action::Report(Event::Draining { generation: G1 }),
            Action::Answer(vec![7], ready),
        ]
    );
    assert_eq!(m.next_deadline(), Some(ms(t0, 3400)));
    m.handle(
        ms(t0, 1600),
        Input::WorkerExited(G1, 0, ExitStatus::Code(0)),
    );
    assert_eq!(
        actions(&mut m),
        vec![Action::Report(Event::Drained {
            generation: G1,
            after: Duration::from_millis(1200),
            status: ExitStatus::Code(0)
        })]
    );
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn new_generation_exiting_at_start_fails_the_reload_and_keeps_the_old() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = actions(&mut m);
    m.handle(ms(t0, 150), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
    let acts = actions(&mut m);
    assert!(signals(&acts).is_empty(), "{acts:?}");
    assert!(acts.contains(&Action::Answer(
        vec![1],
        ReloadOutcome::Failed {
            generation: G2,
            why: StartFailure::Exited(ExitStatus::Code(1)),
            serving: Some(G1),
            stopping: false,
        }
    )));
    assert_eq!(m.active(), Some(G1));
    assert_eq!(m.next_deadline(), None);
    // A spawn failure reads the same way.
    m.handle(ms(t0, 200), Input::Reload(2));
    let _ = actions(&mut m);
    m.handle(
        ms(t0, 201),
        Input::WorkerSpawnFailed(G3, 0, "exec x: ENOENT".into()),
    );
    let acts = actions(&mut m);
    assert!(signals(&acts).is_empty());
    assert_eq!(m.active(), Some(G1));
}

#[test]
fn new_generation_never_ready_is_stopped_then_killed() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = actions(&mut m);
    assert_eq!(m.next_deadline(), Some(ms(t0, 5100)));
    m.handle_timeout(ms(t0, 5100));
    let acts = actions(&mut m);
    assert_eq!(signals(&acts), vec![(G2, Signal::Stop)]);
    assert!(acts.contains(&Action::Answer(
        vec![1],
        ReloadOutcome::Failed {
            generation: G2,
            why: StartFailure::NotReady(Duration::from_secs(5)),
            serving: Some(G1),
            stopping: false,
        }
    )));
    // A late READY=1 from the failed generation changes nothing.
    m.handle(ms(t0, 5200), Input::WorkerReady(G2, 0));
    assert!(actions(&mut m).is_empty());
    assert_eq!(m.active(), Some(G1));
    m.handle_timeout(ms(t0, 8100));
    assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Kill)]);
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn old_generation_ignoring_its_stop_signal_is_killed_after_the_drain_timeout() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
    let _ = actions(&mut m);
    m.handle_timeout(ms(t0, 3199));
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(ms(t0, 3200));
    let acts = actions(&mut m);
    assert_eq!(signals(&acts), vec![(G1, Signal::Kill)]);
    m.handle(
        ms(t0, 3210),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
    );
    assert!(matches!(
        actions(&mut m).as_slice(),
        [Action::Report(Event::Drained { generation: G1, .. })]
    ));
}

#[test]
fn several_old_generations_drain_at_once_each_with_its_own_deadline() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    for (g, at) in [(G2, 1000), (G3, 2000)] {
        m.handle(ms(t0, at), Input::Reload(g.0));
        m.handle(ms(t0, at + 10), Input::WorkerReady(g, 0));
    }
    let acts = actions(&mut m);
    assert_eq!(signals(&acts), vec![(G1, Signal::Stop), (G2, Signal::Stop)]);
    assert_eq!(m.active(), Some(G3));
    // Generation 1's deadline (1010 + 3000) comes first, then 2's.
    m.handle_timeout(ms(t0, 4010));
    assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Kill)]);
    m.handle_timeout(ms(t0, 5010));
    assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Kill)]);
    m.handle(
        ms(t0, 5020),
        Input::WorkerExited(G2, 0, ExitStatus::Signal(9)),
    );
    m.handle(
        ms(t0, 5030),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
    );
    let acts = actions(&mut m);
    assert_eq!(acts.len(), 2);
    assert_eq!(m.next_deadline(), None);
    assert_eq!(m.active(), Some(G3));
}

#[test]
fn the_generation_cap_kills_the_oldest_draining_generation_before_a_start() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.cfg.max_generations = Some(2);
    m.handle(ms(t0, 1000), Input::Reload(1));
    m.handle(ms(t0, 1010), Input::WorkerReady(G2, 0));
    assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
    // Generation 1 drains, 2 serves: a third would make 3.
    m.handle(ms(t0, 2000), Input::Reload(2));
    let acts = actions(&mut m);
    assert_eq!(
        acts[..3],
        [
            Action::Report(Event::Cut {
                generation: G1,
                was: Phase::Draining,
                max: 2
            }),
            Action::Kill(G1),
            Action::Spawn(G3),
        ]
    );
    // Killed already: its drain deadline is gone, and it no longer
    // counts against the cap, so nothing else is cut.
    m.handle(ms(t0, 2010), Input::WorkerReady(G3, 0));
    assert_eq!(signals(&actions(&mut m)), vec![(G2, Signal::Stop)]);
    m.handle(
        ms(t0, 2020),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
    );
    actions(&mut m);
    assert_eq!(m.phases().len(), 2);
    // Once generation 2 has drained, one serves: a reload cuts
    // nothing (a serving generation is never cut).
    m.handle(
        ms(t0, 2030),
        Input::WorkerExited(G2, 0, ExitStatus::Code(0)),
    );
    m.handle(ms(t0, 3000), Input::Reload(3));
    let acts = actions(&mut m);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Kill(_))),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::Spawn(Generation(4))));
}

#[test]
fn reloads_during_a_start_coalesce_into_one_queued_reload() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 110), Input::Reload(2));
    m.handle(ms(t0, 120), Input::Reload(3));
    let acts = actions(&mut m);
    assert_eq!(spawns(&acts), vec![G2]);
    m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
    let acts = actions(&mut m);
    assert_eq!(spawns(&acts), vec![G3]);
    assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G2, .. }) if *t == vec![1])));
    m.handle(ms(t0, 300), Input::WorkerReady(G3, 0));
    let acts = actions(&mut m);
    assert!(acts.iter().any(|a| matches!(a, Action::Answer(t, ReloadOutcome::Ready { generation: G3, .. }) if *t == vec![2, 3])));
    assert_eq!(signals(&acts), vec![(G2, Signal::Stop)]);
}

#[test]
fn phases_and_restarts_are_reported_as_they_are() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    assert_eq!(m.phases(), vec![(G1, Phase::Active, ms(t0, 50))]);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 150), Input::WorkerReady(G2, 0));
    assert_eq!(
        m.phases(),
        vec![
            (G1, Phase::Draining, ms(t0, 150)),
            (G2, Phase::Active, ms(t0, 150))
        ]
    );
    assert_eq!(m.restarts(), 0);
    // A crash restart counts; a reload does not.
    m.handle(ms(t0, 200), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
    m.handle_timeout(ms(t0, 300));
    assert_eq!(m.restarts(), 1);
    assert!(matches!(m.phases().last(), Some((G3, Phase::Starting, _))));
    assert!(!m.stopping());
    m.handle(ms(t0, 400), Input::Stop);
    assert!(m.stopping());
}

#[test]
fn crash_restarts_with_capped_backoff_reset_by_a_healthy_run() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    let mut now = 1000;
    let mut delays = Vec::new();
    for g in 1..=5u64 {
        m.handle(
            ms(t0, now),
            Input::WorkerExited(Generation(g), 0, ExitStatus::Code(1)),
        );
        let acts = actions(&mut m);
        let Some(Action::Report(Event::Crashed {
            restart_in: Some(d),
            ..
        })) = acts.first()
        else {
            panic!("{acts:?}");
        };
        delays.push(d.as_millis());
        assert_eq!(m.next_deadline(), Some(ms(t0, now) + *d));
        now += d.as_millis() as u64;
        m.handle_timeout(ms(t0, now));
        assert_eq!(actions(&mut m), vec![Action::Spawn(Generation(g + 1))]);
        m.handle(ms(t0, now), Input::WorkerReady(Generation(g + 1), 0));
        let _ = actions(&mut m);
    }
    assert_eq!(delays, vec![100, 200, 400, 400, 400]);
    // Ten seconds of healthy service resets the backoff.
    now += 10_000;
    m.handle(
        ms(t0, now),
        Input::WorkerExited(Generation(6), 0, ExitStatus::Signal(11)),
    );
    let acts = actions(&mut m);
    assert!(matches!(
        acts.first(),
        Some(Action::Report(Event::Crashed { restart_in: Some(d), .. })) if d.as_millis() == 100
    ));
}

#[test]
fn restart_policy_decides_on_a_clean_exit() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
    let (mut m, t0) = serving(RestartPolicy::Always);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
    let _ = actions(&mut m);
    assert_eq!(m.next_deadline(), Some(ms(t0, 200)));
    let (mut m, t0) = serving(RestartPolicy::Never);
    m.handle(
        ms(t0, 100),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(6)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
}

#[test]
fn initial_spawn_failure_exits_127_whatever_the_policy() {
    let t0 = Instant::now();
    let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::Always), t0);
    let _ = actions(&mut m);
    m.handle(
        t0,
        Input::WorkerSpawnFailed(G1, 0, "exec x: Exec format error".into()),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(127)));
    // A later spawn failure (a restart) is retried with backoff.
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    m.handle_timeout(ms(t0, 200));
    let _ = actions(&mut m);
    m.handle(
        ms(t0, 200),
        Input::WorkerSpawnFailed(G2, 0, "exec x: ETXTBSY".into()),
    );
    assert!(!actions(&mut m).iter().any(|a| matches!(a, Action::Exit(_))));
    assert_eq!(m.next_deadline(), Some(ms(t0, 400)));
}

#[test]
fn replacing_a_healthy_generation_resets_the_backoff() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    // A crash streak: 100ms, 200ms.
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    m.handle_timeout(ms(t0, 200));
    m.handle(ms(t0, 210), Input::WorkerReady(G2, 0));
    m.handle(ms(t0, 300), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
    m.handle_timeout(ms(t0, 500));
    m.handle(ms(t0, 510), Input::WorkerReady(G3, 0));
    // Then an hour of service, a reload, and a quick crash of the new
    // generation: back to the first delay.
    m.handle(ms(t0, 3_600_000), Input::Reload(1));
    m.handle(ms(t0, 3_600_100), Input::WorkerReady(Generation(4), 0));
    let _ = actions(&mut m);
    m.handle(
        ms(t0, 3_600_200),
        Input::WorkerExited(Generation(4), 0, ExitStatus::Code(1)),
    );
    let acts = actions(&mut m);
    assert!(
        matches!(acts.first(), Some(Action::Report(Event::Crashed { restart_in: Some(d), .. })) if d.as_millis() == 100),
        "{acts:?}"
    );
}

#[test]
fn initial_spawn_failure_with_never_exits_127() {
    let t0 = Instant::now();
    let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::Never), t0);
    let _ = actions(&mut m);
    m.handle(t0, Input::WorkerSpawnFailed(G1, 0, "exec: ENOENT".into()));
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(127)));
    assert!(m.is_done());
}

#[test]
fn stop_drains_everything_and_exits_with_the_active_status() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = actions(&mut m);
    m.handle(ms(t0, 200), Input::Stop);
    let acts = actions(&mut m);
    assert_eq!(signals(&acts), vec![(G1, Signal::Stop), (G2, Signal::Stop)]);
    assert!(acts.contains(&Action::Answer(
        vec![1],
        ReloadOutcome::Failed {
            generation: G2,
            why: StartFailure::Stopping,
            serving: None,
            stopping: true,
        }
    )));
    m.handle(ms(t0, 250), Input::Reload(2));
    assert!(matches!(
        actions(&mut m).as_slice(),
        [Action::Answer(_, ReloadOutcome::Refused(_))]
    ));
    m.handle(ms(t0, 300), Input::WorkerExited(G2, 0, ExitStatus::Code(0)));
    // Killed by the stop signal it was sent: a clean stop.
    m.handle(
        ms(t0, 400),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
}

#[test]
fn a_death_by_another_signal_or_an_unsent_stop_signal_stays_a_failure() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Stop);
    m.handle(
        ms(t0, 200),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(6)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(134)));
    // SIGTERM from someone else, while serving: a crash.
    let (mut m, t0) = serving(RestartPolicy::Never);
    m.handle(
        ms(t0, 100),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(143)));
}

#[test]
fn stop_before_anything_is_ready_exits_with_the_starting_status() {
    let t0 = Instant::now();
    let mut m = Machine::new(cfg(ReadyMode::Notify, RestartPolicy::OnFailure), t0);
    let _ = actions(&mut m);
    m.handle(ms(t0, 10), Input::Stop);
    assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
    m.handle(
        ms(t0, 20),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(15)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(0)));
}

#[test]
fn second_stop_kills_at_once() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Stop);
    assert_eq!(signals(&actions(&mut m)), vec![(G1, Signal::Stop)]);
    m.handle(ms(t0, 200), Input::Stop);
    let acts = actions(&mut m);
    assert_eq!(signals(&acts), vec![(G1, Signal::Kill)]);
    assert_eq!(m.next_deadline(), None);
    m.handle(
        ms(t0, 210),
        Input::WorkerExited(G1, 0, ExitStatus::Signal(9)),
    );
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(137)));
}

#[test]
fn stop_during_a_restart_backoff_exits_with_the_crash_status() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(3)));
    let _ = actions(&mut m);
    m.handle(ms(t0, 150), Input::Stop);
    assert_eq!(actions(&mut m).last(), Some(&Action::Exit(3)));
}

#[test]
fn reload_during_backoff_starts_at_once() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let _ = actions(&mut m);
    m.handle(ms(t0, 120), Input::Reload(4));
    assert_eq!(spawns(&actions(&mut m)), vec![G2]);
    assert_eq!(m.next_deadline(), Some(ms(t0, 5120)));
}

#[test]
fn active_exit_during_a_reload_lets_the_new_generation_take_over() {
    let (mut m, t0) = serving(RestartPolicy::Never);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = actions(&mut m);
    m.handle(ms(t0, 150), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let acts = actions(&mut m);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Exit(_))),
        "{acts:?}"
    );
    m.handle(ms(t0, 200), Input::WorkerReady(G2, 0));
    assert_eq!(m.active(), Some(G2));
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

#[test]
fn steer_a_starting_generation_is_never_routed() {
    let t0 = Instant::now();
    let mut m = Machine::new(steer_cfg(), t0);
    all_actions(&mut m);
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    all_actions(&mut m);
    m.handle(ms(t0, 20), Input::Reload(1));
    m.handle(ms(t0, 30), Input::WorkerExited(G2, 0, ExitStatus::Code(1)));
    let acts = all_actions(&mut m);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Route(_))),
        "a failed start is never routed: {acts:?}"
    );
    assert_eq!(m.active(), Some(G1));
}

#[test]
fn steer_the_old_generation_stops_once_its_queue_stays_empty() {
    let (mut m, t0) = switched();
    // Two connections still wait: measure again after the poll time.
    m.handle(ms(t0, 150), Input::Queued(G1, 2));
    assert_eq!(m.next_deadline(), Some(ms(t0, 160)));
    m.handle_timeout(ms(t0, 160));
    assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
    // Empty: the quiet period starts; nothing is stopped yet.
    m.handle(ms(t0, 160), Input::Queued(G1, 0));
    assert!(all_actions(&mut m).is_empty());
    assert_eq!(m.next_deadline(), Some(ms(t0, 360)));
    m.handle_timeout(ms(t0, 360));
    assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
    // A late connection (a handshake under way at the switch) restarts
    // the wait.
    m.handle(ms(t0, 360), Input::Queued(G1, 1));
    m.handle_timeout(ms(t0, 370));
    assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
    m.handle(ms(t0, 370), Input::Queued(G1, 0));
    m.handle_timeout(ms(t0, 570));
    assert_eq!(all_actions(&mut m), vec![Action::MeasureQueue(G1)]);
    m.handle(ms(t0, 570), Input::Queued(G1, 0));
    assert_eq!(
        all_actions(&mut m),
        vec![
            Action::Stop(G1),
            Action::Report(Event::Draining { generation: G1 })
        ]
    );
}

#[test]
fn steer_a_queue_that_never_empties_is_bounded() {
    let (mut m, t0) = switched();
    let mut now = 150;
    loop {
        m.handle(ms(t0, now), Input::Queued(G1, 3));
        now = m
            .next_deadline()
            .map(|d| d.duration_since(t0).as_millis() as u64)
            .unwrap();
        m.handle_timeout(ms(t0, now));
        let acts = all_actions(&mut m);
        if acts.contains(&Action::Stop(G1)) {
            assert!(acts.contains(&Action::Report(Event::QuiesceTimedOut {
                generation: G1,
                queued: 3,
                after: Duration::from_secs(2),
            })));
            break;
        }
        assert_eq!(acts, vec![Action::MeasureQueue(G1)]);
        assert!(now <= 2150, "bounded by the limit");
    }
    assert_eq!(now, 2150);
}

#[test]
fn steer_a_quiescing_generation_that_exits_counts_as_drained() {
    let (mut m, t0) = switched();
    m.handle(ms(t0, 200), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
    assert!(matches!(
        all_actions(&mut m)[..],
        [Action::Report(Event::Drained { generation: G1, .. })]
    ));
    assert_eq!(m.next_deadline(), None);
}

#[test]
fn steer_stop_stops_quiescing_generations_at_once() {
    let (mut m, t0) = switched();
    m.handle(ms(t0, 200), Input::Stop);
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Stop(G1)), "{acts:?}");
    assert!(acts.contains(&Action::Stop(G2)), "{acts:?}");
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

#[test]
fn workers_a_generation_is_ready_once_every_worker_is() {
    let (mut m, t0) = pool(3);
    assert_eq!(m.alive_workers(), 3);
    // A duplicate READY=1 changes nothing.
    m.handle(ms(t0, 20), Input::WorkerReady(G1, 1));
    assert!(all_actions(&mut m).is_empty());
    // A reload (all at once): the new generation waits for all three.
    m.handle(ms(t0, 100), Input::Reload(1));
    assert_eq!(all_actions(&mut m), vec![Action::Spawn(G2)]);
    assert_eq!(m.alive_workers(), 6);
    m.handle(ms(t0, 110), Input::WorkerReady(G2, 2));
    m.handle(ms(t0, 120), Input::WorkerReady(G2, 0));
    assert!(all_actions(&mut m).is_empty(), "not all ready");
    m.handle(ms(t0, 130), Input::WorkerReady(G2, 1));
    let acts = all_actions(&mut m);
    assert_eq!(acts[0], Action::Route(G2));
    assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
    assert!(matches!(answers(&acts)[..], [ReloadOutcome::Ready { .. }]));
}

/// With a probe, as with READY=1, a worker's ready timeout is a
/// failure, never readiness: in a reload, and for a worker restarted
/// alone (which then counts as a failed start and is tried again).
#[test]
fn workers_a_probe_timeout_is_never_readiness() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Config {
            workers: 2,
            ready: ReadyMode::Probe,
            ..steer_cfg()
        },
        t0,
    );
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 1));
    let _ = all_actions(&mut m);
    assert_eq!(m.active(), Some(G1));
    // A reload whose second worker is never verified fails.
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
    let _ = all_actions(&mut m);
    m.handle_timeout(ms(t0, 100 + 5000));
    let acts = all_actions(&mut m);
    assert!(
        matches!(
            answers(&acts)[..],
            [ReloadOutcome::Failed {
                serving: Some(G1),
                ..
            }]
        ),
        "{acts:?}"
    );
    assert_eq!(m.active(), Some(G1));
    // A worker of the serving generation restarted alone and never
    // verified is stopped at its ready timeout, not counted ready.
    m.handle(
        ms(t0, 6000),
        Input::WorkerExited(G1, 1, ExitStatus::Code(1)),
    );
    let _ = all_actions(&mut m);
    m.handle_timeout(ms(t0, 6100));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
    assert!(m.worker_starting(G1, 1));
    m.handle_timeout(ms(t0, 6100 + 5000));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::StopWorker(G1, 1)), "{acts:?}");
    assert!(!m.worker_starting(G1, 1), "never counted ready");
    assert_eq!(m.starting_workers(G1), Vec::<u32>::new());
}

#[test]
fn workers_one_that_exits_at_start_fails_the_whole_start() {
    let (mut m, t0) = pool(3);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
    m.handle(ms(t0, 120), Input::WorkerExited(G2, 1, ExitStatus::Code(3)));
    let acts = all_actions(&mut m);
    assert!(
        acts.contains(&Action::Stop(G2)),
        "the others stop: {acts:?}"
    );
    assert!(matches!(
        answers(&acts)[..],
        [ReloadOutcome::Failed {
            serving: Some(G1),
            ..
        }]
    ));
    assert_eq!(m.active(), Some(G1));
    // The generation goes once its last worker is reaped.
    m.handle(ms(t0, 130), Input::WorkerExited(G2, 0, ExitStatus::Code(0)));
    assert!(m.knows(G2));
    m.handle(ms(t0, 140), Input::WorkerExited(G2, 2, ExitStatus::Code(0)));
    assert!(!m.knows(G2));
}

#[test]
fn workers_a_crashed_worker_is_restarted_alone_with_its_own_backoff() {
    let (mut m, t0) = pool(3);
    m.handle(
        ms(t0, 1000),
        Input::WorkerExited(G1, 1, ExitStatus::Code(1)),
    );
    let acts = all_actions(&mut m);
    assert_eq!(
        acts,
        vec![Action::Report(Event::WorkerCrashed {
            generation: G1,
            worker: 1,
            status: ExitStatus::Code(1),
            restart_in: Some(Duration::from_millis(100)),
        })]
    );
    assert_eq!(m.active(), Some(G1), "the others serve on");
    assert_eq!(m.next_deadline(), Some(ms(t0, 1100)));
    m.handle_timeout(ms(t0, 1100));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
    assert_eq!(m.restarts(), 1);
    m.handle(ms(t0, 1150), Input::WorkerReady(G1, 1));
    // A second crash soon after: twice the delay.
    m.handle(
        ms(t0, 1200),
        Input::WorkerExited(G1, 1, ExitStatus::Signal(9)),
    );
    assert!(matches!(
        all_actions(&mut m)[..],
        [Action::Report(Event::WorkerCrashed {
            restart_in: Some(d),
            ..
        })] if d == Duration::from_millis(200)
    ));
    // A restarted worker that is never ready is stopped, then started
    // again.
    m.handle_timeout(ms(t0, 1400));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G1, 1)]);
    m.handle_timeout(ms(t0, 1400 + 5000));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::StopWorker(G1, 1)), "{acts:?}");
    m.handle(
        ms(t0, 6500),
        Input::WorkerExited(G1, 1, ExitStatus::Code(0)),
    );
    assert!(matches!(
        all_actions(&mut m)[..],
        [Action::Report(Event::WorkerCrashed {
            restart_in: Some(_),
            ..
        })]
    ));
    // Every worker gone with nothing to restart (a clean exit under
    // on-failure): the generation has ended, as one process would.
    let (mut m, t0) = pool(2);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(0)));
    assert_eq!(m.active(), Some(G1));
    m.handle(ms(t0, 200), Input::WorkerExited(G1, 1, ExitStatus::Code(0)));
    let acts = all_actions(&mut m);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Report(Event::Crashed { .. }))),
        "{acts:?}"
    );
    assert_eq!(acts.last(), Some(&Action::Exit(0)));
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

#[test]
fn rolling_replaces_workers_one_at_a_time_never_more_than_n_plus_1() {
    let (mut m, t0) = pool(4);
    let acts = roll_all(&mut m, t0, 4, 1);
    let spawned: Vec<u32> = acts
        .iter()
        .filter_map(|a| match a {
            Action::SpawnWorker(G2, w) => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(spawned, vec![0, 1, 2, 3]);
    let stopped: Vec<u32> = acts
        .iter()
        .filter_map(|a| match a {
            Action::StopWorker(G1, w) => Some(*w),
            _ => None,
        })
        .collect();
    assert_eq!(stopped, vec![3, 2, 1], "the last old worker quiesces");
    // The shares follow the ready workers: 1 of 4, 2 of 4, 3 of 4.
    let splits: Vec<Vec<(Generation, u32)>> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Split(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        splits,
        vec![
            vec![(G1, 75), (G2, 25)],
            vec![(G1, 50), (G2, 50)],
            vec![(G1, 25), (G2, 75)],
            vec![],
        ]
    );
    assert_eq!(m.active(), Some(G2));
    assert!(acts.contains(&Action::Route(G2)));
    assert!(acts.contains(&Action::MeasureQueue(G1)));
    assert!(matches!(answers(&acts)[..], [ReloadOutcome::Ready { .. }]));
    assert!(m.shares().is_empty());
}

#[test]
fn rolling_two_at_a_time_never_more_than_n_plus_2() {
    let (mut m, t0) = pool(5);
    let acts = roll_all(&mut m, t0, 5, 2);
    assert_eq!(m.active(), Some(G2));
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::SpawnWorker(G2, _)))
            .count(),
        5
    );
}

#[test]
fn rolling_a_failing_new_worker_rolls_everything_back() {
    let (mut m, t0) = pool(4);
    m.handle(ms(t0, 100), Input::ReloadWith(7, Strategy::Rolling(1)));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 0)]);
    m.handle(ms(t0, 110), Input::WorkerReady(G2, 0));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Split(vec![(G1, 75), (G2, 25)])));
    assert!(acts.contains(&Action::StopWorker(G1, 3)));
    m.handle(ms(t0, 120), Input::WorkerExited(G1, 3, ExitStatus::Code(0)));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 1)]);
    // The second new worker fails.
    m.handle(ms(t0, 130), Input::WorkerExited(G2, 1, ExitStatus::Code(1)));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Split(vec![])), "{acts:?}");
    assert!(
        acts.contains(&Action::MeasureQueue(G2)),
        "the new generation had a share: it quiesces: {acts:?}"
    );
    assert!(matches!(
        answers(&acts)[..],
        [ReloadOutcome::Failed {
            serving: Some(G1),
            ..
        }]
    ));
    // The old generation's stopped worker starts again (5 alive at most).
    assert!(acts.contains(&Action::SpawnWorker(G1, 3)), "{acts:?}");
    assert_eq!(m.active(), Some(G1));
    assert!(m.alive_workers() <= 5);
    // A new worker not ready in time rolls back the same way.
    let (mut m, t0) = pool(2);
    m.handle(ms(t0, 100), Input::ReloadWith(8, Strategy::Rolling(1)));
    let _ = all_actions(&mut m);
    assert_eq!(m.next_deadline(), Some(ms(t0, 5100)));
    m.handle_timeout(ms(t0, 5100));
    let acts = all_actions(&mut m);
    assert!(
        acts.contains(&Action::Stop(G2)),
        "no share: stopped at once"
    );
    assert!(matches!(answers(&acts)[..], [ReloadOutcome::Failed { .. }]));
}

#[test]
fn rolling_by_default_for_a_plain_reload() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        Config {
            workers: 2,
            reload: Strategy::Rolling(1),
            ..steer_cfg()
        },
        t0,
    );
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 1));
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 100), Input::Reload(1));
    assert_eq!(all_actions(&mut m), vec![Action::SpawnWorker(G2, 0)]);
    // `rollback` during a rolling reload.
    m.handle(ms(t0, 110), Input::Rollback(2));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Stop(G2)));
    assert!(answers(&acts).contains(&ReloadOutcome::RolledBack {
        generation: G2,
        serving: G1
    }));
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

#[test]
fn canary_gets_its_share_then_promote_switches() {
    let (mut m, t0) = canary(20, None);
    assert_eq!(m.shares(), &[(G1, 80), (G2, 20)]);
    // Another reload waits for the canary's verdict.
    m.handle(ms(t0, 200), Input::Reload(5));
    assert_eq!(
        answers(&all_actions(&mut m)),
        vec![ReloadOutcome::Refused(Refusal::CanaryRunning(G2))]
    );
    m.handle(ms(t0, 300), Input::Promote(6));
    let acts = all_actions(&mut m);
    assert_eq!(acts[0], Action::Split(vec![]));
    assert_eq!(acts[1], Action::Route(G2));
    assert!(acts.contains(&Action::MeasureQueue(G1)), "{acts:?}");
    assert_eq!(
        answers(&acts),
        vec![ReloadOutcome::Promoted {
            generation: G2,
            replaced: G1
        }]
    );
    assert_eq!(m.active(), Some(G2));
    // Nothing left to promote.
    m.handle(ms(t0, 400), Input::Promote(7));
    assert_eq!(
        answers(&all_actions(&mut m)),
        vec![ReloadOutcome::Refused(Refusal::NothingToPromote)]
    );
}

#[test]
fn canary_rollback_sends_everything_back_and_quiesces_it() {
    let (mut m, t0) = canary(20, None);
    m.handle(ms(t0, 300), Input::Rollback(6));
    let acts = all_actions(&mut m);
    assert_eq!(acts[0], Action::Split(vec![]));
    assert!(acts.contains(&Action::MeasureQueue(G2)), "{acts:?}");
    assert!(!acts.contains(&Action::Stop(G2)), "it quiesces first");
    assert_eq!(m.active(), Some(G1));
    assert_eq!(m.canary(), None);
    // It stops once its queue has been empty for the quiet period.
    m.handle(ms(t0, 310), Input::Queued(G2, 0));
    m.handle_timeout(ms(t0, 510));
    m.handle(ms(t0, 511), Input::Queued(G2, 0));
    assert!(all_actions(&mut m).contains(&Action::Stop(G2)));
}

#[test]
fn canary_a_crash_rolls_back_at_once() {
    let (mut m, t0) = canary(10, Some(Duration::from_secs(60)));
    m.handle(
        ms(t0, 300),
        Input::WorkerExited(G2, 1, ExitStatus::Signal(11)),
    );
    let acts = all_actions(&mut m);
    assert_eq!(acts[0], Action::Split(vec![]));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Report(Event::RolledBack { generation: G2, .. }))),
        "{acts:?}"
    );
    assert!(acts.contains(&Action::MeasureQueue(G2)));
    assert_eq!(m.canary(), None);
    // No promotion comes later.
    m.handle_timeout(ms(t0, 120 + 60_000));
    assert_eq!(m.active(), Some(G1));
}

#[test]
fn canary_promotes_itself_after_promote_after() {
    let (mut m, t0) = canary(20, Some(Duration::from_secs(30)));
    assert_eq!(m.next_deadline(), Some(ms(t0, 120 + 30_000)));
    m.handle_timeout(ms(t0, 120 + 30_000));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Route(G2)));
    assert!(acts.contains(&Action::Report(Event::Promoted {
        generation: G2,
        replaced: G1,
        automatic: true
    })));
    assert_eq!(m.active(), Some(G2));
}

#[test]
fn canary_takes_over_when_the_serving_generation_dies() {
    let t0 = Instant::now();
    let mut m = Machine::new(steer_cfg(), t0);
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    m.handle(
        ms(t0, 20),
        Input::ReloadWith(
            1,
            Strategy::Canary {
                percent: 10,
                promote_after: None,
            },
        ),
    );
    m.handle(ms(t0, 30), Input::WorkerReady(G2, 0));
    assert_eq!(m.canary(), Some(G2));
    let _ = all_actions(&mut m);
    m.handle(ms(t0, 40), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Route(G2)), "{acts:?}");
    assert!(spawns(&acts).is_empty(), "no restart: {acts:?}");
    assert_eq!(m.active(), Some(G2));
    assert_eq!(m.canary(), None);
}

#[test]
fn workers_not_started_after_a_spawn_failure_end_the_generation() {
    let (mut m, t0) = pool(3);
    m.handle(ms(t0, 100), Input::Reload(1));
    let _ = all_actions(&mut m);
    // Worker 0 started, worker 1 could not be: worker 2 never is (the
    // machine says so; the driver spawns only starting workers).
    m.handle(
        ms(t0, 101),
        Input::WorkerSpawnFailed(G2, 1, "fork: EAGAIN".into()),
    );
    assert!(!m.worker_starting(G2, 2));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Stop(G2)), "{acts:?}");
    assert!(m.knows(G2));
    m.handle(
        ms(t0, 150),
        Input::WorkerExited(G2, 0, ExitStatus::Signal(15)),
    );
    assert!(!m.knows(G2));
    assert_eq!(m.active(), Some(G1));
}

#[test]
fn canary_needs_a_serving_generation_and_a_stop_ends_it() {
    let t0 = Instant::now();
    let mut m = Machine::new(steer_cfg(), t0);
    let _ = all_actions(&mut m);
    m.handle(
        ms(t0, 5),
        Input::ReloadWith(
            1,
            Strategy::Canary {
                percent: 20,
                promote_after: None,
            },
        ),
    );
    assert_eq!(
        answers(&all_actions(&mut m)),
        vec![ReloadOutcome::Refused(Refusal::NothingServing)]
    );
    let (mut m, t0) = canary(20, None);
    m.handle(ms(t0, 300), Input::Stop);
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::Stop(G1)) && acts.contains(&Action::Stop(G2)));
}

#[test]
fn workers_and_rollouts_survive_an_upgrade() {
    let (mut m, t0) = canary(20, Some(Duration::from_secs(30)));
    m.handle(ms(t0, 200), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let _ = all_actions(&mut m);
    let text = serde_json::to_string(&m.save()).unwrap();
    let saved: Saved = serde_json::from_str(&text).unwrap();
    let mut back = Machine::restore(
        Config {
            workers: 2,
            ..steer_cfg()
        },
        saved,
        ms(t0, 250),
    );
    assert_eq!(back.canary(), Some(G2));
    assert_eq!(back.shares(), &[(G1, 80), (G2, 20)]);
    assert_eq!(back.workers(G1)[0].1, WorkerPhase::Backoff);
    let (a, b) = (m.next_deadline().unwrap(), back.next_deadline().unwrap());
    let gap = if a > b { a - b } else { b - a };
    assert!(gap < Duration::from_millis(5), "deadline moved by {gap:?}");
    back.handle_timeout(ms(t0, 310));
    assert_eq!(all_actions(&mut back), vec![Action::SpawnWorker(G1, 0)]);
    // A state saved before workers existed has no pools: each
    // generation gets its one worker.
    let mut old: serde_json::Value = serde_json::from_str(&text).unwrap();
    for key in ["pools", "rollout", "queued_strategy", "split", "surge"] {
        old.as_object_mut().unwrap().remove(key);
    }
    let saved: Saved = serde_json::from_value(old).unwrap();
    let back = Machine::restore(steer_cfg(), saved, ms(t0, 250));
    assert_eq!(back.workers(G1).len(), 1);
    assert!(back.worker_alive(G1, 0));
}

#[test]
fn pending_reloads_are_counted_by_the_machine() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    assert_eq!(m.pending_reloads(), 0);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 110), Input::Reload(2));
    m.handle(ms(t0, 120), Input::Reload(3));
    assert_eq!(m.pending_reloads(), 3);
    m.handle(ms(t0, 130), Input::WorkerReady(G2, 0));
    assert_eq!(m.pending_reloads(), 2, "the queued ones ride on gen 3");
    m.handle(ms(t0, 140), Input::WorkerReady(G3, 0));
    assert_eq!(m.pending_reloads(), 0);
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_never_goes_backwards() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::Reload(1));
    m.handle(ms(t0, 50), Input::Stop);
}

#[test]
fn workers_the_start_limit_hit_by_the_last_worker_alive_ends_the_generation() {
    // Two workers, two starts allowed per minute (the first start used
    // one): both crash and wait for their restart; the first restart
    // uses the second start and crashes again, which the limit refuses.
    // Nothing is alive then and the other worker will not be restarted:
    // the generation has ended and the supervisor exits with the crash
    // status, rather than wait for processes that are gone.
    let t0 = Instant::now();
    let mut m = Machine::new(
        Config {
            workers: 2,
            start_limit: Some(StartLimit {
                burst: 2,
                interval: Duration::from_secs(60),
            }),
            ..steer_cfg()
        },
        t0,
    );
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 0));
    m.handle(ms(t0, 10), Input::WorkerReady(G1, 1));
    assert_eq!(m.active(), Some(G1));
    all_actions(&mut m);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(3)));
    m.handle(ms(t0, 150), Input::WorkerExited(G1, 1, ExitStatus::Code(3)));
    m.handle_timeout(ms(t0, 200));
    let acts = all_actions(&mut m);
    assert!(acts.contains(&Action::SpawnWorker(G1, 0)), "{acts:?}");
    m.handle(ms(t0, 210), Input::WorkerExited(G1, 0, ExitStatus::Code(3)));
    let acts = all_actions(&mut m);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Report(Event::StartLimitHit { .. }))),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Report(Event::Drained { generation: G1, .. }))),
        "{acts:?}"
    );
    assert_eq!(acts.last(), Some(&Action::Exit(3)), "{acts:?}");
    assert!(m.is_done());
}
