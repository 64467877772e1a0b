//! Starting: reloads, spawns, readiness (of each worker, then of the
//! generation), the cap on live generations, failed starts.

use super::*;

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
    // The delay counts from the exec: none while the exec is pending,
    // however long it takes.
    assert_eq!(m.next_deadline(), None);
    m.handle_timeout(ms(t0, 1500));
    assert_eq!(m.active(), None, "ready before its exec");
    m.handle(ms(t0, 1600), Input::WorkerExecuted(G1, 0));
    assert_eq!(m.next_deadline(), Some(ms(t0, 2600)));
    m.handle_timeout(ms(t0, 2599));
    assert!(actions(&mut m).is_empty());
    m.handle_timeout(ms(t0, 2600));
    assert_eq!(m.active(), Some(G1));
    // READY=1 before the delay also counts.
    m.handle(ms(t0, 2700), Input::Reload(1));
    let _ = actions(&mut m);
    m.handle(ms(t0, 2710), Input::WorkerExecuted(G2, 0));
    m.handle(ms(t0, 2800), Input::WorkerReady(G2, 0));
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
fn reload_during_backoff_starts_at_once() {
    let (mut m, t0) = serving(RestartPolicy::OnFailure);
    m.handle(ms(t0, 100), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let _ = actions(&mut m);
    m.handle(ms(t0, 120), Input::Reload(4));
    assert_eq!(spawns(&actions(&mut m)), vec![G2]);
    assert_eq!(m.next_deadline(), Some(ms(t0, 5120)));
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
