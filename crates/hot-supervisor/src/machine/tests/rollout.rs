//! Rolling and canary reloads: N+K, shares, promote and rollback.

use super::*;

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
