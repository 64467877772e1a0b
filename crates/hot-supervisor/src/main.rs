//! `supervisor`: run a server command under zero-downtime hot restarts.
//!
//! `main` blocks the handled signals before anything else (so that none can
//! arrive before the signalfd reads them), parses the command line, binds
//! the listeners and hands over to the driver. Errors of the supervisor's
//! own set-up print one line to stderr and exit 1.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod carry;
mod channel;
mod children;
mod cli;
mod client;
mod compat;
mod control;
mod driver;
mod environ;
mod handoff;
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
mod state;
mod steer;
mod stream;
mod takeover;
mod upgrade;
mod users;
mod watch;

use std::os::fd::AsFd;
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
    let began = takeover::Began::now();
    // An in-place upgrade's state, if this image was started by one; the
    // variables go, so that no child inherits them.
    let check = std::env::var_os(upgrade::CHECK_VAR).is_some();
    // SAFETY: no other thread exists yet (nothing has been started), and
    // nothing has opened an fd yet.
    let handed = unsafe {
        std::env::remove_var(upgrade::CHECK_VAR);
        upgrade::take_handed()
    };
    if let Some(what) = cli::generate_requested() {
        return generate(what);
    }
    let cli = cli::parse();
    if let Some(what) = cli.generate {
        return generate(what);
    }
    if let Some(c) = cli.client {
        return ExitCode::from(u8::try_from(client::run(c)).unwrap_or(1));
    }
    if check {
        // The check run of an upgrade: the command line must mean what it
        // meant to the old image, and the state must be readable.
        if let Err(e) = setup_args(&cli.run) {
            println!("error {e:#}");
            return ExitCode::from(1);
        }
        return ExitCode::from(u8::try_from(upgrade::check_main()).unwrap_or(1));
    }
    logging::init(cli.run.log_format);
    let result = match handed {
        Some(Ok(h)) => resume(cli.run, h),
        Some(Err(e)) => Err(e.context("cannot carry on from the upgrade's state")),
        None => run(cli.run, began),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("supervisor: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `--watch`: the watcher, if any path is watched.
fn watcher(args: &cli::Args) -> Result<Option<watch::Watcher>> {
    if args.watch.is_empty() {
        return Ok(None);
    }
    let w = watch::Watcher::new(args.watch.clone(), args.watch_debounce)?;
    for p in w.paths() {
        log::info!(
            "watching {} (a reload {} after a change)",
            p.display(),
            hot_supervisor::duration::human(args.watch_debounce)
        );
    }
    Ok(Some(w))
}

/// `--generate WHAT`: print it to stdout.
fn generate(what: cli::Generate) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match cli::generate(what, &mut out).and_then(|()| std::io::Write::flush(&mut out)) {
        Ok(()) => ExitCode::SUCCESS,
        // `supervisor --generate man | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("supervisor: error: --generate: {e}");
            ExitCode::from(1)
        }
    }
}

/// What the command line decides, before anything is bound.
struct Setup {
    compat: compat::Compat,
    credentials: Option<spawn::Credentials>,
    env: Vec<(String, String)>,
    backlog: Backlog,
    steer: bool,
    socket: listen::SocketOptions,
}

/// Check everything about the children that can be wrong, before anything
/// is bound: the command line, then the files and names it refers to.
fn setup(args: &cli::Args) -> Result<Setup> {
    let mut setup = setup_args(args)?;
    setup.credentials = spawn::Credentials::resolve(args.user.as_deref(), args.group.as_deref())?;
    // Read now to refuse a broken file before anything is bound; each
    // generation reads them again when it starts.
    setup.env = children::read_env(&args.env_file, &args.env)?;
    if let Some(dir) = &args.chdir
        && !dir.is_dir()
    {
        anyhow::bail!("--chdir {}: not a directory", dir.display());
    }
    Ok(setup)
}

/// What the command line alone decides (an upgrade's check runs it; the
/// environment and credentials read at start travel in the state).
fn setup_args(args: &cli::Args) -> Result<Setup> {
    let compat = compat::Compat::merge(&args.compat);
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
    Ok(Setup {
        compat,
        credentials: None,
        env: Vec::new(),
        backlog,
        steer,
        socket,
    })
}

/// The timer `--ready auto` falls back to where nothing can be probed.
const AUTO_DELAY: Duration = Duration::from_secs(1);

/// What `--ready auto` is here: a TCP probe (READY=1 counting too) where
/// a probe can reach the workers, else READY=1 or [`AUTO_DELAY`]; and, for
/// the second, why (said once in the log).
fn auto_readiness(args: &cli::Args, steering: &steer::Steering) -> (cli::Ready, Option<String>) {
    let why = if args.handoff != cli::Handoff::Steer {
        Some(
            "with --handoff shared every generation has the same socket, so a probe cannot tell them apart",
        )
    } else if !steering.can_probe() {
        Some(
            "there is no TCP listener a probe can be steered to (only Unix or UDP listeners, none at all, or sockets handed over without SO_REUSEPORT)",
        )
    } else if args.defer_accept.is_some() {
        Some("with --defer-accept a probe that sends nothing is never accepted")
    } else {
        None
    };
    match why {
        None => (cli::Ready::Probe(probe::Check::Tcp), None),
        Some(why) => (
            cli::Ready::Machine(machine::ReadyMode::Delay(AUTO_DELAY)),
            Some(why.to_string()),
        ),
    }
}

/// What `--ready` amounts to, as `status` shows it.
fn readiness_text(args: &cli::Args, steering: &steer::Steering) -> String {
    match &args.ready {
        cli::Ready::Auto => match auto_readiness(args, steering) {
            (_, None) => "auto (READY=1 or a tcp probe)".to_string(),
            (_, Some(_)) => format!(
                "auto (READY=1 or {} alive)",
                hot_supervisor::duration::human(AUTO_DELAY)
            ),
        },
        other => other.describe(),
    }
}

/// The readiness mode and its prober.
fn readiness(
    args: &cli::Args,
    steering: &steer::Steering,
) -> Result<(machine::ReadyMode, Option<probe::Prober>)> {
    let ready = match &args.ready {
        cli::Ready::Auto => {
            let (r, why) = auto_readiness(args, steering);
            if let Some(why) = why {
                log::warn!(
                    "readiness is a timer here: a generation counts as ready once it sends READY=1 or has run {} ({why}); for a real signal, have the server send READY=1 and use --ready notify",
                    hot_supervisor::duration::human(AUTO_DELAY)
                );
            }
            r
        }
        r => r.clone(),
    };
    Ok(match &ready {
        // Never what auto_readiness gives; its fallback if it were.
        cli::Ready::Auto => (machine::ReadyMode::Delay(AUTO_DELAY), None),
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
    })
}

/// The soft open-files limit this process started with, if it raised it
/// (set once, at the start of a run).
static NOFILE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// Raise the soft open-files limit to the hard one, as systemd advises a
/// program that needs many descriptors to do (each steered listener takes
/// up to three, and `LimitNOFILE=`'s soft default is 1,024): the soft
/// limit it had, if it was lower, which the children get back.
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur >= lim.rlim_max
    {
        return None;
    }
    let soft = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: `lim` is a valid rlimit; raising the soft limit up to the
    // hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::debug!("could not raise the open-files limit from {soft}");
        return None;
    }
    log::debug!(
        "open-files limit raised from {soft} to {} (the children get {soft} back)",
        lim.rlim_max
    );
    Some(soft)
}

/// The machine's settings.
fn config(args: &cli::Args, ready: machine::ReadyMode, steering: &steer::Steering) -> Config {
    Config {
        ready,
        ready_timeout: args.ready_timeout,
        drain_timeout: args.drain_timeout,
        restart: args.restart.into(),
        first_start_final: false,
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
        workers: args.workers,
        reload: args.reload,
        max_generations: args.max_generations.map(|n| n as usize),
    }
}

/// How the children are run.
fn command(args: cli::Args, setup: Setup, control_path: &std::path::Path) -> children::Command {
    children::Command {
        argv: args.command,
        stop_signal: args.stop_signal,
        compat: setup.compat,
        env: setup.env,
        env_files: args.env_file,
        env_args: args.env,
        drain_timeout: args.drain_timeout,
        credentials: setup.credentials,
        chdir: args.chdir,
        workers: args.workers,
        // Absolute: a child may change its directory.
        control: std::path::absolute(control_path).unwrap_or_else(|_| control_path.to_path_buf()),
    }
}

/// The binary an in-place upgrade executes: the path this one was started
/// from (a deploy may put a new version there), made absolute now, since
/// the working directory may change.
fn binary_path() -> std::path::PathBuf {
    let arg0 = std::env::args_os().next().unwrap_or_default();
    let p = std::path::Path::new(&arg0);
    if p.as_os_str().as_encoded_bytes().contains(&b'/') {
        // Absolute, `.` components gone (symbolic links are kept: a deploy
        // may switch one).
        if let Ok(a) = std::path::absolute(p) {
            return a;
        }
    } else if let Ok(found) = spawn::resolve(&arg0) {
        return found;
    }
    std::env::current_exe().unwrap_or_else(|_| p.to_path_buf())
}

/// Carry on from the state an in-place upgrade handed this image.
fn resume(args: cli::Args, handed: upgrade::Handed) -> Result<i32> {
    let upgrade::Handed {
        state: state_fd,
        old_exe,
        refused,
    } = handed;
    // Everything is read and checked before a single fd is adopted: a new
    // image that refuses goes back to the old one, which must find every
    // fd and file as it left them.
    let checked = upgrade::read_handed(state_fd.as_fd()).and_then(|state| {
        let adopt = carry::Adopt::new(&state.fds)?;
        let mut setup = setup_args(&args)?;
        setup.env.clone_from(&state.children.env);
        setup.credentials.clone_from(&state.children.credentials);
        Ok((state, adopt, setup))
    });
    let (state, mut adopt, setup) = match checked {
        Ok(c) => c,
        Err(e) => {
            let why = format!("{e:#}");
            if let (Some(old), None) = (&old_exe, &refused) {
                log::error!("cannot take over from the old image ({why}): going back to it");
                let e = upgrade::go_back(state_fd.as_fd(), old.as_fd(), &why);
                return Err(e.context(format!("cannot take over from the old image ({why})")));
            }
            return Err(e.context("cannot carry on from the upgrade's state"));
        }
    };
    let steering =
        steer::Steering::restore(state.steering, setup.backlog, setup.socket, &mut adopt);
    let control = control::ControlServer::restore(state.control, &mut adopt);
    let health = match state.health {
        Some(h) => Some(health::HealthServer::restore(h, &mut adopt)?),
        None => None,
    };
    let (ready, prober) = readiness(&args, &steering)?;
    let cfg = config(&args, ready, &steering);
    let settings = snapshot::Settings {
        control_path: control::path_for_run(args.control.as_deref())?,
        ready: readiness_text(&args, &steering),
        drain_timeout: args.drain_timeout,
        binary: binary_path(),
    };
    let watchdog = manager::watchdog_interval();
    let control_path = settings.control_path.clone();
    // The state is adopted already: a watch that cannot be set up now is
    // said, not fatal.
    let watcher = watcher(&args).unwrap_or_else(|e| {
        log::warn!("{e:#}; nothing is watched");
        None
    });
    let children = children::Children::restore(
        command(args, setup, &control_path),
        state.children,
        &mut adopt,
    );
    let mut manager = manager::ServiceManager::from_env(watchdog);
    if let (Some(m), Some(saved)) = (&mut manager, state.manager) {
        m.restore(saved);
    }
    let channels = channel::Channels::restore(state.channels, &mut adopt);
    adopt.close_rest();
    // The state's memfd and the old binary's fd: done with.
    drop((state_fd, old_exe));
    let parts = parts::Parts {
        children,
        steering,
        control,
        manager,
        prober,
        health,
        handoff: handoff::Handoff::Idle,
        watcher,
        channels,
    };
    let machine = Machine::restore(cfg, state.machine, Instant::now());
    let driver = driver::Driver::restore(
        machine,
        settings,
        parts,
        state.report,
        state.driver,
        refused,
    )?;
    driver.run()
}

/// `began`: when this process began (a takeover reports how long it took
/// from then).
fn run(args: cli::Args, began: takeover::Began) -> Result<i32> {
    // First, before any other descriptor is opened: the sockets a launcher
    // may have handed us as fds 3, 4, ...
    let inherited = listen::inherited()?;
    let _ = NOFILE.set(raise_open_files_limit());
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
    let setup = setup(&args)?;
    if let Some(path) = args.takeover.clone() {
        if !inherited.is_empty() {
            anyhow::bail!(
                "--takeover takes the sockets of the running supervisor: sockets handed over by a launcher (LISTEN_FDS) cannot be used as well"
            );
        }
        return take_over(args, setup, &path, began);
    }
    let health = args.health.map(health::HealthServer::bind).transpose()?;
    let bind = listen::BindOptions {
        backlog: setup.backlog,
        reuseport: setup.steer,
        socket: setup.socket,
    };
    let listeners = listen::merge(inherited, &args.listen, &bind)?;
    compat::check_keys(&setup.compat, &listeners)?;
    let control_path = control::path_for_run(args.control.as_deref())?;
    let control = listen::bind_control(&control_path).with_context(|| {
        format!(
            "control socket {} (give another with --control PATH)",
            control_path.display()
        )
    })?;
    // Orphans of our children are reparented to us, so we reap them too.
    nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    let steering = steer::Steering::new(listeners, setup.steer, setup.backlog, setup.socket);
    serve(args, setup, steering, control, control_path, health, None)
}

/// Start by taking every socket of the supervisor whose control socket is
/// at `path` (see [`takeover`]).
fn take_over(
    args: cli::Args,
    setup: Setup,
    path: &std::path::Path,
    began: takeover::Began,
) -> Result<i32> {
    if let Some(c) = &args.control
        && c != path
    {
        // A usage error: nothing was asked of the old supervisor yet.
        eprintln!(
            "supervisor: error: --control {} and --takeover {}: the control socket is taken over too (give the same path, or none)",
            c.display(),
            path.display()
        );
        return Ok(2);
    }
    let asked = Instant::now();
    let taken = takeover::fetch(path)?;
    log::debug!(
        "{} socket(s) received from {} in {}",
        taken.fds.len(),
        path.display(),
        hot_supervisor::duration::human(asked.elapsed())
    );
    let payload = taken.payload;
    let mut adopt = carry::Adopt::received(&taken.numbers, taken.fds)?;
    let mut steering = steer::Steering::restore(
        payload.steering.into_previous(),
        setup.backlog,
        setup.socket,
        &mut adopt,
    );
    let mut control = listen::Listener::restore(payload.control, &mut adopt);
    // The socket files stay the old supervisor's until it is told to go:
    // this one may yet fail and leave them to it.
    control.disown_file();
    steering.disown_files(true);
    // A client learns who serves the socket from SO_PEERCRED, which is
    // whoever last called listen() on it: this supervisor from now.
    nix::sys::socket::listen(&control.fd(), Backlog::MAXALLOWABLE)
        .context("listen on the control socket taken over")?;
    let old_health = match payload.health {
        Some(h) => Some(health::HealthServer::restore(h, &mut adopt)?),
        None => None,
    };
    adopt.close_rest();
    // The listeners given must be the ones taken (as for sockets handed
    // over by a launcher): a named one by its name, one without a name by
    // its address; the others are bound anew, after them.
    let bounds = steering.bounds();
    let mut matched = vec![false; bounds.len()];
    for spec in &args.listen {
        let found = if spec.name_from_address {
            (0..bounds.len())
                .find(|&i| !matched[i] && bounds[i].as_ref().is_some_and(|b| b.agrees(&spec.addr)))
        } else {
            None
        };
        let i = match found {
            Some(i) => i,
            None => steering
                .open(spec)
                .map_err(|e| anyhow::anyhow!("--listen {}: {e}", spec.text))?,
        };
        // A listener named by an option is matched too (a new one is not
        // among those taken).
        if let Some(m) = matched.get_mut(i) {
            *m = true;
        }
    }
    let health = match (args.health, old_health) {
        (Some(want), Some(h)) if h.address() == want => Some(h),
        (Some(want), _) => Some(health::HealthServer::bind(want)?),
        (None, _) => None,
    };
    nix::sys::prctl::set_child_subreaper(true).context("become child subreaper")?;
    for (l, mode) in steering.listeners() {
        if setup.steer != (*mode == steer::Mode::Steer) {
            log::info!(
                "listener {:?} keeps the hand-off mode it had: {} (taken over)",
                l.name,
                mode.as_str()
            );
        }
    }
    log::info!(
        "took over the sockets of supervisor {} (pid {}) at {}: {} listener(s)",
        payload.writer,
        payload.pid,
        path.display(),
        steering.listeners().count()
    );
    let sink = takeover::Sink::new(taken.stream, payload.pid, began);
    serve(
        args,
        setup,
        steering,
        control,
        path.to_path_buf(),
        health,
        Some(sink),
    )
}

/// Serve on the listeners: the first generation, then the event loop.
fn serve(
    args: cli::Args,
    setup: Setup,
    steering: steer::Steering,
    control: listen::Listener,
    control_path: std::path::PathBuf,
    health: Option<health::HealthServer>,
    takeover: Option<takeover::Sink>,
) -> Result<i32> {
    let (ready, prober) = readiness(&args, &steering)?;
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
            supervisor_child::protocol::LISTEN_FDS_START + i as i32,
            mode.as_str()
        );
        if let (true, steer::Mode::Frozen(why) | steer::Mode::Shared(why)) = (setup.steer, mode) {
            log::info!("listener {:?} is shared by every generation: {why}", l.name);
        }
    }
    let mut cfg = config(&args, ready, &steering);
    // Taking over, a first generation that fails is not started again: the
    // old supervisor carries on, this one exits. The policy asked for
    // applies once a generation has served (and the old one is told to go).
    cfg.first_start_final = takeover.is_some();
    if let Some(h) = &health {
        log::info!(
            "health endpoint http://{}/ (/livez, /readyz, /metrics)",
            h.address()
        );
    }
    log::info!("control socket {}", control_path.display());
    if !setup.compat.0.is_empty() {
        let names: Vec<String> = setup.compat.0.iter().map(ToString::to_string).collect();
        log::info!("compatibility variables for: {}", names.join(", "));
    }
    let mut control = control::ControlServer::new(control);
    if let Some(c) = &setup.credentials {
        // The children's user may fetch and open listeners, if the file
        // lets it connect: the socket stays root's, mode 0600, unless the
        // operator opens it (a default ACL on its directory).
        control.allow_fetch_by(c.uid);
    }
    let settings = snapshot::Settings {
        control_path: control_path.clone(),
        ready: readiness_text(&args, &steering),
        drain_timeout: args.drain_timeout,
        binary: binary_path(),
    };
    let auto = matches!(args.ready, cli::Ready::Auto);
    let watcher = watcher(&args)?;
    let mut children = children::Children::new(command(args, setup, &control_path))?;
    children.give_back_nofile(NOFILE.get().copied().flatten());
    let parts = parts::Parts {
        children,
        steering,
        control,
        manager: manager::ServiceManager::from_env(manager::watchdog_interval()),
        prober,
        health,
        handoff: match takeover {
            Some(from) => handoff::Handoff::TakingOver {
                from,
                failed: false,
            },
            None => handoff::Handoff::Idle,
        },
        watcher,
        channels: channel::Channels::default(),
    };
    let machine = Machine::new(cfg, Instant::now());
    let mut driver = driver::Driver::new(machine, settings, parts)?;
    if matches!(ready, machine::ReadyMode::Notify) {
        driver.not_ready_hint(
            "no READY=1 received: does the server send it? otherwise use --ready delay:DUR, tcp or http:PATH",
        );
    } else if auto && matches!(ready, machine::ReadyMode::Probe) {
        driver.not_ready_hint(
            "--ready auto: it neither sent READY=1 nor accepted a probe connection on the first TCP listener; a server that needs longer wants a longer --ready-timeout, one that never accepts there --ready notify or delay:DUR",
        );
    }
    driver.run()
}
