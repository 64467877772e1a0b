//! The supervisor's log: one line per event on stderr, through `RUST_LOG`;
//! as text, or with `--log-format json` one JSON object per line (time,
//! level, message, and the typed fields of the lifecycle event the line
//! tells, when it tells one: see [`with_fields`]).
//!
//! Logging must never stop the supervisor: stderr may be a pipe that
//! nobody reads (a full pipe would block every `write`), or closed. So the
//! log writes a line only when stderr can take it now (`poll` with no
//! timeout), and otherwise drops it, counts it, and says how many were
//! dropped once it can write again. Stderr's file description is shared
//! with the children, so it is never made non-blocking.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Lines dropped since the last one written.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// stderr, written only when it is writable now.
struct Stderr;

impl Stderr {
    fn writable() -> bool {
        let mut p = libc::pollfd {
            fd: libc::STDERR_FILENO,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r == 1
            && p.revents & libc::POLLOUT != 0
            && p.revents & (libc::POLLERR | libc::POLLNVAL) == 0
    }

    fn raw(buf: &[u8]) -> isize {
        // SAFETY: `buf` is valid for reads of its length.
        unsafe { libc::write(libc::STDERR_FILENO, buf.as_ptr().cast(), buf.len()) }
    }
}

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !Stderr::writable() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            // Taken as written: the line is dropped, not retried.
            return Ok(buf.len());
        }
        // One write of at most PIPE_BUF bytes: a pipe that polls writable
        // has a free page, so it takes it without blocking.
        let dropped = DROPPED.swap(0, Ordering::Relaxed);
        let mut out = Vec::with_capacity(buf.len() + 80);
        if dropped > 0 {
            out.extend_from_slice(
                format!("supervisor: {dropped} log line(s) dropped: stderr was not writable\n")
                    .as_bytes(),
            );
        }
        out.extend_from_slice(buf);
        if out.len() > libc::PIPE_BUF {
            out.truncate(libc::PIPE_BUF - 4);
            out.extend_from_slice(b"...\n");
        }
        let n = Stderr::raw(&out);
        if n < 0 {
            // EPIPE (nobody reads; SIGPIPE is ignored), EBADF (closed):
            // nothing to do but go on.
            DROPPED.fetch_add(1 + dropped, Ordering::Relaxed);
            return Ok(buf.len());
        }
        // Taken as written whole: the note and any cut-off tail are ours,
        // and what the pipe took short is not retried (a retry could block).
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Make sure fds 0, 1 and 2 are open (on `/dev/null` if they were
/// closed), before anything else is opened: otherwise the first socket
/// would become "stderr", and log lines (and the children's output) would
/// go into it.
pub fn guard_standard_fds() {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: a constant NUL-terminated path; open(2) takes the
            // lowest free descriptor, which is `fd`, since the lower ones
            // were checked first. Not CLOEXEC: the children inherit it.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

std::thread_local! {
    /// The fields of the lifecycle event being logged, if any.
    static FIELDS: std::cell::RefCell<Option<serde_json::Map<String, serde_json::Value>>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` with the fields of `record` attached to every line it logs
/// (shown with `--log-format json`; the text format has them in its words).
pub fn with_fields<R>(record: Option<&hot_supervisor::events::Record>, f: impl FnOnce() -> R) -> R {
    let fields = record
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| match v {
            serde_json::Value::Object(mut m) => {
                // The line's own time is the one shown.
                m.remove("time");
                Some(m)
            }
            _ => None,
        });
    let before = FIELDS.with(|c| c.replace(fields));
    let out = f();
    FIELDS.with(|c| c.replace(before));
    out
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `2026-11-21T10:30:57.931123Z supervisor[4200] info: ...`
    Text,
    /// `{"time":"2026-11-21T10:30:57.931123Z","level":"info","message":"...",
    /// "event":"ready","generation":3,...}`, one object per line.
    Json,
}

/// Start logging: `RUST_LOG` (default `info`), in `format`.
pub fn init(format: Format) {
    let pid = std::process::id();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Pipe(Box::new(Stderr)))
        .format(move |buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            match format {
                Format::Text => writeln!(
                    buf,
                    "{} supervisor[{pid}] {level}: {}",
                    buf.timestamp_micros(),
                    record.args()
                ),
                Format::Json => {
                    // time, level and message first, then the event's
                    // fields (serde_json's map would sort them).
                    let head = [
                        ("time", buf.timestamp_micros().to_string()),
                        ("level", level),
                        ("message", record.args().to_string()),
                    ];
                    let mut line = String::from("{");
                    for (i, (k, v)) in head.iter().enumerate() {
                        if i > 0 {
                            line.push(',');
                        }
                        line.push_str(&format!("\"{k}\":{}", serde_json::Value::from(v.as_str())));
                    }
                    FIELDS.with(|c| {
                        if let Some(f) = &*c.borrow() {
                            for (k, v) in f {
                                line.push_str(&format!(
                                    ",{}:{v}",
                                    serde_json::Value::from(k.as_str())
                                ));
                            }
                        }
                    });
                    line.push('}');
                    writeln!(buf, "{line}")
                }
            }
        })
        .init();
}
