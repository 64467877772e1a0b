//! The event stream as the tests read it: a subscriber on a thread of its
//! own, bounded waits for a [`Record`], and helpers to find records in
//! what was received.

use super::*;

/// A subscriber to a supervisor's event stream (`events` on its control
/// socket), read on a thread of its own: every [`Record`] from the moment
/// it subscribed, in the order the supervisor published them. Waits are
/// bounded by [`WAIT`]; dropping it ends the subscription.
pub struct Events {
    got: Arc<(Mutex<Received>, Condvar)>,
    stream: UnixStream,
    reader: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Received {
    records: Vec<Record>,
    /// Lines that were not a record (the test fails on them).
    garbage: Vec<String>,
    ended: bool,
}

impl Events {
    /// Subscribe to the supervisor on `control`; returns once the
    /// supervisor has taken the subscription (`ok events`), so that every
    /// event after this call is seen.
    pub fn subscribe_at(control: &Path) -> Events {
        let stream = UnixStream::connect(control)
            .unwrap_or_else(|e| panic!("events: connect to {}: {e}", control.display()));
        stream.set_write_timeout(Some(WAIT)).unwrap();
        (&stream).write_all(b"events\n").unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap());
        let mut first = String::new();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        lines
            .read_line(&mut first)
            .unwrap_or_else(|e| panic!("events: no answer within {WAIT:?}: {e}"));
        assert_eq!(first, "ok events\n", "events: the subscription was refused");
        // The stream has no deadline: it lasts as long as the supervisor,
        // or until the subscriber is dropped.
        stream.set_read_timeout(None).unwrap();
        let got: Arc<(Mutex<Received>, Condvar)> = Arc::default();
        let shared = got.clone();
        let reader = std::thread::spawn(move || {
            let (m, cv) = &*shared;
            for line in lines.lines() {
                let Ok(line) = line else { break };
                let mut r = m.lock().unwrap();
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) => r.records.push(record),
                    Err(e) => r.garbage.push(format!("{line:?}: {e}")),
                }
                cv.notify_all();
            }
            m.lock().unwrap().ended = true;
            cv.notify_all();
        });
        Events {
            got,
            stream,
            reader: Some(reader),
        }
    }

    /// Every event received so far.
    pub fn all(&self) -> Vec<Record> {
        let r = self.got.0.lock().unwrap();
        assert!(
            r.garbage.is_empty(),
            "events: not records: {:#?}",
            r.garbage
        );
        r.records.clone()
    }

    /// The number of events received so far (a cursor for
    /// [`Events::wait_from`]).
    pub fn len(&self) -> usize {
        self.got.0.lock().unwrap().records.len()
    }

    /// Whether the stream has ended (the supervisor exited, upgraded or
    /// was taken over).
    pub fn ended(&self) -> bool {
        self.got.0.lock().unwrap().ended
    }

    /// Wait for an event at or after position `from` that matches `f`
    /// (`what` names it in the failure): its position and every event so
    /// far. Fails after [`WAIT`], or once the stream has ended without one.
    pub fn wait_from(
        &self,
        from: usize,
        what: &str,
        f: impl Fn(&Record) -> bool,
    ) -> (usize, Vec<Record>) {
        let deadline = Instant::now() + WAIT;
        let (m, cv) = &*self.got;
        let mut r = m.lock().unwrap();
        loop {
            assert!(
                r.garbage.is_empty(),
                "events: not records: {:#?}",
                r.garbage
            );
            if let Some(i) = r.records.iter().skip(from).position(&f) {
                return (from + i, r.records.clone());
            }
            let now = Instant::now();
            if r.ended || now >= deadline {
                let why = if r.ended {
                    "the stream ended without it".to_string()
                } else {
                    format!("not within {WAIT:?}")
                };
                let got = r.records.clone();
                drop(r);
                panic!("no event {what} after #{from}: {why}; got {got:#?}");
            }
            r = cv.wait_timeout(r, deadline - now).unwrap().0;
        }
    }

    /// Wait for an event matching `f`: every event so far.
    pub fn wait(&self, what: &str, f: impl Fn(&Record) -> bool) -> Vec<Record> {
        self.wait_from(0, what, f).1
    }

    /// Wait for the first event matching `f`; that event.
    pub fn first(&self, what: &str, f: impl Fn(&Record) -> bool) -> Record {
        let (i, all) = self.wait_from(0, what, f);
        all[i].clone()
    }

    /// Wait for the first event of `kind` about generation `g`; that event.
    pub fn first_of(&self, kind: Kind, g: u64) -> Record {
        self.first(&format!("{kind:?} of generation {g}"), |r| is(r, kind, g))
    }

    /// Wait until the stream ends (bounded): every event it carried.
    pub fn until_end(&self) -> Vec<Record> {
        let deadline = Instant::now() + WAIT;
        let (m, cv) = &*self.got;
        let mut r = m.lock().unwrap();
        while !r.ended {
            let now = Instant::now();
            if now >= deadline {
                let got = r.records.clone();
                drop(r);
                panic!("events: the stream did not end within {WAIT:?}; got {got:#?}");
            }
            r = cv.wait_timeout(r, deadline - now).unwrap().0;
        }
        assert!(
            r.garbage.is_empty(),
            "events: not records: {:#?}",
            r.garbage
        );
        r.records.clone()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Whether `r` is an event of `kind` about generation `g`.
pub fn is(r: &Record, kind: Kind, g: u64) -> bool {
    r.event == kind && r.generation == Some(g)
}

/// The position of the first event matching `f` at or after `from`; fails,
/// naming `what`, if there is none.
pub fn find(all: &[Record], from: usize, what: &str, f: impl Fn(&Record) -> bool) -> usize {
    all.iter()
        .skip(from)
        .position(f)
        .map(|i| from + i)
        .unwrap_or_else(|| panic!("no event {what} after #{from} in {all:#?}"))
}

/// The events of `all` matching `f`.
pub fn matching(all: &[Record], f: impl Fn(&Record) -> bool) -> Vec<&Record> {
    all.iter().filter(|r| f(r)).collect()
}
