//! `supervisor`: run a server command under zero-downtime hot restarts.
//!
//! `main` blocks the handled signals before anything else (so that none can
//! arrive before the signalfd reads them), parses the command line, binds
//! the listeners and hands over to the driver. Errors of the supervisor's
//! own set-up print one line to stderr and exit 1.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod cli;
mod client;
mod compat;
mod control;
mod driver;
mod listen;
mod machine;
mod notify;
mod spawn;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigmaskHow, sigprocmask};
use nix::sys::socket::Backlog;

use crate::machine::{Config, Machine};

fn main() -> ExitCode {
    if let Err(e) = sigprocmask(
        SigmaskHow::SIG_BLOCK,
        Some(&driver::handled_signals()),
        None,
    ) {
        eprintln!("supervisor: error: block signals: {e}");
        return ExitCode::from(1);
    }
    let cli = cli::parse();
    if let Some(c) = cli.client {
        return ExitCode::from(u8::try_from(client::run(c)).unwrap_or(1));
    }
    init_logging();
    match run(cli.run) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("supervisor: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: cli::Args) -> Result<i32> {
    // First, before any other descriptor is opened: the sockets a launcher
    // may have handed us as fds 3, 4, ...
    let inherited = listen::inherited()?;
    // Fail before binding anything if the command cannot run at all; each
    // generation resolves it again, so a deploy may replace it.
    if let Err(e) = spawn::resolve(&args.command[0]) {
        if let Some(c) = args.command[0]
            .to_str()
            .filter(|c| ["reload", "status", "stop"].contains(c))
        {
            anyhow::bail!(
                "{e:#} (to control a running supervisor, put the command first: supervisor {c} --control PATH)"
            );
        }
        return Err(e);
    }
    let backlog = match args.backlog {
        Some(n) => Backlog::new(n).context("--backlog")?,
        None => Backlog::MAXALLOWABLE,
    };
    let listeners = listen::merge(inherited, &args.listen, backlog)?;
    let control_path = match &args.control {
        Some(p) => p.clone(),
        None => {
            let p = control::default_path_here();
            if let Some(dir) = p.parent()
                && dir == control::fallback_dir(nix::unistd::geteuid().as_raw())
            {
                control::private_dir(dir).context("control socket directory")?;
            }
            p
        }
    };
    let control = listen::bind_control(&control_path).with_context(|| {
        format!(
            "control socket {} (give another with --control PATH)",
            control_path.display()
        )
    })?;
    // Orphans of our children are reparented to us, so we reap them too.
    nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    let cfg = Config {
        ready: args.ready,
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        restart: args.restart.into(),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        healthy_after: Duration::from_secs(10),
    };
    let compat = compat::Compat::merge(&args.compat);
    if compat.has(compat::Launcher::ServerStarter)
        && let Some(l) = listeners
            .iter()
            .find(|l| l.starter_key.contains(['=', ';']))
    {
        anyhow::bail!(
            "--compat server-starter: listener {} cannot be named in SERVER_STARTER_PORT (its key {:?} holds '=' or ';')",
            l.bound,
            l.starter_key
        );
    }
    for (i, l) in listeners.iter().enumerate() {
        let from = if l.inherited {
            ", handed over by the service manager"
        } else {
            ""
        };
        log::info!(
            "listening on {} as {:?} (fd {} in children){from}",
            l.bound,
            l.name,
            supervisor::child::LISTEN_FDS_START + i as i32
        );
    }
    log::info!("control socket {}", control_path.display());
    let manager = notify::Manager::from_env();
    if !compat.0.is_empty() {
        let names: Vec<String> = compat.0.iter().map(ToString::to_string).collect();
        log::info!("compatibility variables for: {}", names.join(", "));
    }
    let settings = driver::Settings {
        command: args.command,
        stop_signal: args.stop_signal,
        compat,
        control_path,
        ready: match args.ready {
            machine::ReadyMode::Notify => "notify".to_string(),
            machine::ReadyMode::Delay(d) => format!("delay:{}", supervisor::duration::human(d)),
        },
        drain_timeout: args.drain_timeout,
    };
    let machine = Machine::new(cfg, Instant::now());
    let watchdog = watchdog_interval();
    if let Some(w) = watchdog
        && manager.is_some()
    {
        log::info!(
            "sending the service manager WATCHDOG=1 every {}",
            supervisor::duration::human(w)
        );
    }
    driver::Driver::new(machine, settings, listeners, control, manager)?
        .with_watchdog(watchdog)
        .run()
}

/// Half of `WATCHDOG_USEC`, if the service manager asks this process (not
/// a parent of it: `WATCHDOG_PID`) for keep-alives.
fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    // At least 1ms: a tiny WATCHDOG_USEC must not turn into a busy loop.
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

fn init_logging() {
    let pid = std::process::id();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} supervisor[{pid}] {}: {}",
                buf.timestamp_micros(),
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            )
        })
        .init();
}
