//! The state carried across an in-place upgrade, old formats included.

use super::*;

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
