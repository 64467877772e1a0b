//! Processes that exit: crashes and their restarts (backoff, the start
//! limit), workers restarted alone, spawn failures, and the sockets of a
//! generation that has ended.

use super::*;

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

#[test]
fn a_failed_start_releases_its_sockets_before_the_queued_reload_spawns() {
    // Generation 2 exits at start while a reload waits behind it: its
    // sockets are released before generation 3 is spawned, so that the
    // sockets generation 3 gets are not joined beside a dead member.
    let (mut m, t0) = switched();
    m.handle(ms(t0, 300), Input::Reload(7));
    m.handle(ms(t0, 310), Input::Reload(8));
    all_actions(&mut m);
    m.handle(ms(t0, 320), Input::WorkerExited(G3, 0, ExitStatus::Code(1)));
    let acts = all_actions(&mut m);
    let release = acts.iter().position(|a| *a == Action::Release(G3));
    let spawn = acts.iter().position(|a| *a == Action::Spawn(Generation(4)));
    assert!(
        release.is_some() && spawn.is_some() && release < spawn,
        "{acts:?}"
    );
    // A generation still running is never released.
    assert!(!acts.contains(&Action::Release(G2)), "{acts:?}");
}

#[test]
fn taking_over_a_failed_first_start_is_final_then_the_policy_applies() {
    // While taking over: the first generation exits before it is ready;
    // under `always` it would be restarted, but the old supervisor still
    // serves, so this one stops with the failure.
    let first_start_final = |t0| {
        Machine::new(
            Config {
                first_start_final: true,
                ..cfg(ReadyMode::Notify, RestartPolicy::Always)
            },
            t0,
        )
    };
    let t0 = Instant::now();
    let mut m = first_start_final(t0);
    actions(&mut m);
    m.handle(ms(t0, 50), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let acts = actions(&mut m);
    assert!(spawns(&acts).is_empty(), "{acts:?}");
    assert_eq!(acts.last(), Some(&Action::Exit(1)), "{acts:?}");
    assert!(m.is_done());

    // Once a generation has served, the policy asked for applies: a crash
    // is restarted.
    let mut m = first_start_final(t0);
    actions(&mut m);
    m.handle(ms(t0, 50), Input::WorkerReady(G1, 0));
    m.handle(ms(t0, 900), Input::WorkerExited(G1, 0, ExitStatus::Code(1)));
    let acts = actions(&mut m);
    assert!(
        acts.iter().any(|a| matches!(
            a,
            Action::Report(Event::Crashed {
                restart_in: Some(_),
                ..
            })
        )),
        "{acts:?}"
    );
    assert!(!m.is_done());
}
