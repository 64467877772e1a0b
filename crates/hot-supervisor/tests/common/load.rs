//! Load for the tests: HTTP clients against a listener, each answer
//! counted by the generation that served it, every failure kept with its
//! reason; a load loop is always bounded.

use super::*;

/// Outcome of one HTTP request.
#[derive(Debug)]
pub enum Reply {
    Ok { generation: u64, close: bool },
    Failed(String),
}

/// One keep-alive HTTP/1.1 client connection.
pub struct Client {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
    /// Send `Connection: close` and use a new connection for every request.
    close: bool,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            stream: None,
            close: false,
        }
    }

    /// A client that sends `Connection: close` with every request, so that
    /// every request comes on a new connection.
    pub fn closing(addr: SocketAddr) -> Client {
        Client {
            close: true,
            ..Client::new(addr)
        }
    }

    /// Send one GET and read the whole response.
    pub fn get(&mut self, path: &str) -> Reply {
        if self.stream.is_none() {
            match TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    s.set_nodelay(true).unwrap();
                    self.stream = Some(BufReader::new(s));
                }
                Err(e) => return Reply::Failed(format!("connect: {e}")),
            }
        }
        let reply = self.exchange(path);
        match &reply {
            Reply::Ok { close: false, .. } if !self.close => {}
            _ => self.stream = None,
        }
        reply
    }

    fn exchange(&mut self, path: &str) -> Reply {
        let r = self.stream.as_mut().unwrap();
        let close = if self.close {
            "Connection: close\r\n"
        } else {
            ""
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{close}\r\n");
        if let Err(e) = r.get_mut().write_all(req.as_bytes()) {
            return Reply::Failed(format!("write: {e}"));
        }
        let mut status = String::new();
        match r.read_line(&mut status) {
            Ok(0) => return Reply::Failed("read: EOF before the status line".into()),
            Ok(_) => {}
            Err(e) => return Reply::Failed(format!("read: {e}")),
        }
        if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
            return Reply::Failed(format!("status: {}", status.trim()));
        }
        let mut length = None;
        let mut close = status.starts_with("HTTP/1.0");
        loop {
            let mut h = String::new();
            match r.read_line(&mut h) {
                Ok(0) => return Reply::Failed("read: EOF in headers".into()),
                Ok(_) => {}
                Err(e) => return Reply::Failed(format!("read headers: {e}")),
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            } else if let Some(v) = lower.strip_prefix("connection:") {
                close = v.trim() == "close";
            }
        }
        let mut body = Vec::new();
        let res = match length {
            Some(n) => {
                body.resize(n, 0);
                r.read_exact(&mut body)
            }
            None => {
                close = true;
                r.read_to_end(&mut body).map(|_| ())
            }
        };
        if let Err(e) = res {
            return Reply::Failed(format!("read body: {e}"));
        }
        let text = String::from_utf8_lossy(&body);
        let generation = text
            .split_whitespace()
            .skip_while(|w| *w != "generation")
            .nth(1)
            .and_then(|g| g.parse().ok());
        match generation {
            Some(generation) => Reply::Ok { generation, close },
            None => Reply::Failed(format!("body without a generation: {text:?}")),
        }
    }
}

/// Continuous load from several client threads, bounded in time and count.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub stats: Arc<LoadStats>,
}

#[derive(Default)]
pub struct LoadStats {
    pub ok: AtomicU64,
    pub failures: Mutex<Vec<String>>,
    pub by_generation: Mutex<BTreeMap<u64, u64>>,
}

impl Load {
    /// `connections` clients sending back-to-back requests until `finish`,
    /// `max_time` or `max_requests` each.
    pub fn start(addr: SocketAddr, connections: usize, max_time: Duration) -> Load {
        Load::start_with(addr, connections, max_time, Client::new)
    }

    /// As [`Load::start`], with `Connection: close` on every request (a
    /// new connection for each).
    pub fn start_closing(addr: SocketAddr, connections: usize, max_time: Duration) -> Load {
        Load::start_with(addr, connections, max_time, Client::closing)
    }

    /// As [`Load::start`], with clients made by `client`.
    pub fn start_with(
        addr: SocketAddr,
        connections: usize,
        max_time: Duration,
        client: fn(SocketAddr) -> Client,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let deadline = Instant::now() + max_time;
        let threads = (0..connections)
            .map(|_| {
                let (stop, stats) = (stop.clone(), stats.clone());
                std::thread::spawn(move || {
                    let mut c = client(addr);
                    for _ in 0..200_000 {
                        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
                            break;
                        }
                        match c.get("/") {
                            Reply::Ok { generation, .. } => {
                                stats.ok.fetch_add(1, Ordering::Relaxed);
                                *stats
                                    .by_generation
                                    .lock()
                                    .unwrap()
                                    .entry(generation)
                                    .or_default() += 1;
                            }
                            Reply::Failed(why) => stats.failures.lock().unwrap().push(why),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            stats,
        }
    }

    /// Requests answered by generation `g` so far.
    pub fn served_by(&self, g: u64) -> u64 {
        self.stats
            .by_generation
            .lock()
            .unwrap()
            .get(&g)
            .copied()
            .unwrap_or(0)
    }

    /// Wait until generation `g` has answered at least `n` more requests
    /// than it had at the call.
    pub fn wait_served_by(&self, g: u64, n: u64, timeout: Duration) -> bool {
        let base = self.served_by(g);
        wait_until(timeout, || (self.served_by(g) >= base + n).then_some(())).is_some()
    }

    pub fn ok(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> Vec<String> {
        self.stats.failures.lock().unwrap().clone()
    }

    /// Fail unless generation `g` answers at least `n` more requests
    /// within the harness's deadline (`what` says what that shows).
    pub fn expect_served(&self, g: u64, n: u64, what: &str) {
        assert!(
            self.wait_served_by(g, n, WAIT),
            "{what}: generation {g} did not serve {n} more requests; {} ok, failures: {:?}",
            self.ok(),
            self.failures()
        );
    }

    /// The generations that have answered so far.
    pub fn generations(&self) -> Vec<u64> {
        self.stats
            .by_generation
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect()
    }

    /// Stop the clients and check the run was clean: not one failed
    /// request (they are printed otherwise) and at least `min_ok` answered.
    pub fn finish_clean(self, what: &str, min_ok: u64) -> Served {
        let stats = self.finish();
        let failures = stats.failures.lock().unwrap().clone();
        let ok = stats.ok.load(Ordering::Relaxed);
        let by_generation = stats.by_generation.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{what}: {} failed requests ({ok} ok, by generation {by_generation:?}):\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(
            ok >= min_ok,
            "{what}: only {ok} requests answered, want at least {min_ok} ({by_generation:?})"
        );
        Served { ok, by_generation }
    }

    /// Stop the clients and wait for them.
    pub fn finish(mut self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats.clone()
    }
}

/// What a clean load run served.
#[derive(Debug)]
pub struct Served {
    /// Requests answered.
    pub ok: u64,
    /// Requests answered by each generation.
    pub by_generation: BTreeMap<u64, u64>,
}

impl Served {
    /// The generations that answered, in order.
    pub fn generations(&self) -> Vec<u64> {
        self.by_generation.keys().copied().collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Reload `reloads` times (SIGHUP) under load from `clients`
/// connections. After each reload: the new generation serves at least
/// `served` requests, the old one drains with exit status 0 and is reaped,
/// and no request has failed. `before_reload(g)` runs before the reload
/// that starts generation `g`. Returns the number of requests answered.
pub fn reload_under_load(
    name: &str,
    sv: &Supervisor,
    reloads: u64,
    clients: usize,
    served: u64,
    mut before_reload: impl FnMut(u64),
) -> u64 {
    let mut old_pid = sv.wait_active(1);
    let events = sv.events();
    let load = Load::start(sv.listener_addr(0), clients, Duration::from_secs(240));
    load.expect_served(1, served, &format!("{name}: first generation"));
    for g in 2..=reloads + 1 {
        before_reload(g);
        sv.signal(libc::SIGHUP);
        let pid = sv.wait_active(g);
        load.expect_served(g, served, &format!("{name}: traffic to the new generation"));
        let exited = events.first_of(Kind::Exited, g - 1);
        assert_eq!(
            (
                exited.pid,
                exited.reason.as_deref(),
                exited.status.as_deref()
            ),
            (Some(old_pid), Some("drained"), Some("exited with status 0")),
            "{name}: generation {} did not drain cleanly: {exited:?}",
            g - 1
        );
        // Reaped by the supervisor, which is alive: not even a zombie.
        assert!(
            wait_gone(old_pid, WAIT),
            "{name}: generation {} (pid {old_pid}) was not reaped",
            g - 1
        );
        let failures = load.failures();
        assert!(
            failures.is_empty(),
            "{name}: failed requests by reload {}: {failures:?}",
            g - 1
        );
        old_pid = pid;
    }
    let served = load.finish_clean(name, 1);
    assert_eq!(
        served.generations(),
        (1..=reloads + 1).collect::<Vec<_>>(),
        "{name}: answers from unexpected generations"
    );
    eprintln!(
        "{name}: {reloads} reloads, {} requests, 0 failures; by generation: {:?}",
        served.ok, served.by_generation
    );
    served.ok
}
