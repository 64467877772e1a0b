//! `supervisor`: run a server command under zero-downtime hot restarts.
//!
//! `main` blocks the handled signals before anything else (so that none can
//! arrive before the signalfd reads them), parses the command line, binds
//! the listeners and hands over to the driver. Errors of the supervisor's
//! own set-up print one line to stderr and exit 1.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod children;
mod cli;
mod client;
mod compat;
mod control;
mod driver;
mod environ;
mod health;
mod listen;
mod logging;
mod machine;
mod manager;
mod metrics;
mod notify;
mod parts;
mod probe;
mod report;
mod snapshot;
mod spawn;
mod steer;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SigmaskHow, sigprocmask};
use nix::sys::socket::Backlog;

use crate::machine::{Config, Machine};

fn main() -> ExitCode {
    logging::guard_standard_fds();
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
    logging::init();
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
        if let Some(hint) = cli::control_word_misplaced(&e, &args.command[0]) {
            // A usage error, not a failure of the supervisor.
            eprintln!("supervisor: error: {hint}");
            return Ok(2);
        }
        return Err(e);
    }
    let compat = compat::Compat::merge(&args.compat);
    // Everything about the children that can be wrong is checked before
    // anything is bound.
    let credentials = spawn::Credentials::resolve(args.user.as_deref(), args.group.as_deref())?;
    let mut env = Vec::new();
    for path in &args.env_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--env-file {}", path.display()))?;
        let parsed = supervisor::envfile::parse(&text)
            .map_err(|e| anyhow::anyhow!("--env-file {}: {e}", path.display()))?;
        env.extend(parsed);
    }
    env.extend(args.env.iter().cloned());
    if let Some(dir) = &args.chdir
        && !dir.is_dir()
    {
        anyhow::bail!("--chdir {}: not a directory", dir.display());
    }
    let health = args.health.map(health::HealthServer::bind).transpose()?;
    let backlog = match args.backlog {
        Some(n) => Backlog::new(n).context("--backlog")?,
        None => Backlog::MAXALLOWABLE,
    };
    let steer = args.handoff == cli::Handoff::Steer;
    if args.defer_accept.is_some() && matches!(args.ready, cli::Ready::Probe(probe::Check::Tcp)) {
        anyhow::bail!(
            "--ready tcp cannot work with --defer-accept: a probe connection that sends nothing never reaches the accept queue (use --ready http:PATH)"
        );
    }
    if !steer && matches!(args.ready, cli::Ready::Probe(_)) {
        anyhow::bail!(
            "--ready {} needs --handoff steer (a probe must reach the new generation alone)",
            args.ready.describe()
        );
    }
    let socket = listen::SocketOptions {
        nodelay: !args.no_tcp_nodelay,
        keepalive: args.tcp_keepalive,
        defer_accept: args
            .defer_accept
            .map_or(0, |d| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX)),
        rcvbuf: args.rcvbuf,
        sndbuf: args.sndbuf,
    };
    let bind = listen::BindOptions {
        backlog,
        reuseport: steer,
        socket,
    };
    let listeners = listen::merge(inherited, &args.listen, &bind)?;
    compat::check_keys(&compat, &listeners)?;
    let control_path = control::path_for_run(args.control.as_deref())?;
    let control = listen::bind_control(&control_path).with_context(|| {
        format!(
            "control socket {} (give another with --control PATH)",
            control_path.display()
        )
    })?;
    // Orphans of our children are reparented to us, so we reap them too.
    nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    let steering = steer::Steering::new(listeners, steer, backlog, socket);
    let (ready, prober) = match &args.ready {
        cli::Ready::Machine(m) => (*m, None),
        cli::Ready::Probe(check) => {
            if !steering.can_probe() {
                anyhow::bail!(
                    "--ready {}: no TCP listener can be steered to probe (Unix and UDP listeners, and sockets handed over without SO_REUSEPORT, cannot)",
                    check.describe()
                );
            }
            (
                machine::ReadyMode::Probe,
                Some(probe::Prober::new(check.clone())),
            )
        }
    };
    for (i, (l, mode)) in steering.listeners().enumerate() {
        let from = if l.inherited {
            ", handed over by the service manager"
        } else {
            ""
        };
        log::info!(
            "listening on {} as {:?} (fd {} in children), {}{from}",
            l.bound,
            l.name,
            supervisor::child::LISTEN_FDS_START + i as i32,
            mode.as_str()
        );
        if let (true, steer::Mode::Shared(why)) = (steer, mode) {
            log::info!("listener {:?} is shared by every generation: {why}", l.name);
        }
    }
    let cfg = Config {
        ready,
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        restart: args.restart.into(),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_secs(10),
        healthy_after: Duration::from_secs(10),
        quiesce: steering.any_steered().then_some(machine::Quiesce {
            quiet: args.quiesce,
            limit: args.quiesce_timeout,
            poll: Duration::from_millis(10),
        }),
        stop_signal: args.stop_signal as i32,
        start_limit: (args.start_limit_burst > 0).then_some(machine::StartLimit {
            burst: args.start_limit_burst,
            interval: args.start_limit_interval,
        }),
        shutdown_delay: args.shutdown_delay,
    };
    if let Some(h) = &health {
        log::info!(
            "health endpoint http://{}/ (/livez, /readyz, /metrics)",
            h.address()
        );
    }
    log::info!("control socket {}", control_path.display());
    if !compat.0.is_empty() {
        let names: Vec<String> = compat.0.iter().map(ToString::to_string).collect();
        log::info!("compatibility variables for: {}", names.join(", "));
    }
    let mut control = control::ControlServer::new(control);
    if let Some(c) = &credentials {
        // The children's user may fetch and open listeners, if the file
        // lets it connect: the socket stays root's, mode 0600, unless the
        // operator opens it (a default ACL on its directory).
        control.allow_fetch_by(c.uid);
    }
    let settings = snapshot::Settings {
        control_path: control_path.clone(),
        ready: args.ready.describe(),
        drain_timeout: args.drain_timeout,
    };
    let children = children::Children::new(children::Command {
        argv: args.command,
        stop_signal: args.stop_signal,
        compat,
        env,
        drain_timeout: args.drain_timeout,
        credentials,
        chdir: args.chdir,
        // Absolute: a child may change its directory.
        control: std::path::absolute(&control_path).unwrap_or(control_path),
    })?;
    let parts = parts::Parts {
        children,
        steering,
        control,
        manager: manager::ServiceManager::from_env(manager::watchdog_interval()),
        prober,
        health,
    };
    let machine = Machine::new(cfg, Instant::now());
    let mut driver = driver::Driver::new(machine, settings, parts)?;
    if matches!(ready, machine::ReadyMode::Notify) {
        driver.not_ready_hint(
            "no READY=1 received: does the server send it? otherwise use --ready delay:DUR, tcp or http:PATH",
        );
    }
    driver.run()
}
