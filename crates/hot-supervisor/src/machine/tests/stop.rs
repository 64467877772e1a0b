//! Retiring: quiescing, draining, the drain timeout, the supervisor's
//! stop and a hand-off.

use super::*;

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
    // Its sockets go with it, as the machine forgets it.
    assert!(matches!(
        all_actions(&mut m)[..],
        [
            Action::Release(G1),
            Action::Report(Event::Drained { generation: G1, .. })
        ]
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
