//! The command line: clap definitions, and the conversion of strings into
//! typed settings (addresses, durations, signals) at the edge.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
pub use hot_supervisor::parse::signal::parse as parse_signal;
use nix::sys::signal::Signal;

use crate::compat::Compat;
use crate::listen::Spec;
use crate::machine::{ReadyMode, RestartPolicy};
use crate::probe::Check;

const AFTER_HELP: &str = "\
Each generation of CMD gets the listeners as fds 3, 4, ... in --listen order,
with LISTEN_FDS, LISTEN_PID (its own pid), LISTEN_FDNAMES, NOTIFY_SOCKET,
SUPERVISOR_GENERATION and SUPERVISOR_CONTROL set, as systemd socket
activation does (plus the control socket's path), and its own channel
right after the listeners (SUPERVISOR_CHANNEL_FD: `fds` there answers its
generation's sockets, whatever user it runs as; nothing else is served).

Control commands (through the control socket): reload (all at once, or
--rolling[=K], or --canary PCT [--promote-after DUR]), promote, rollback,
status, events (follow the lifecycle events, one per line), stop; upgrade (re-execute the supervisor binary in place: same
pid, children and sockets); fds (fetch the listeners with SCM_RIGHTS and
exec a command with them); listen (open a listener at run time, kept for
every later generation). --takeover PATH starts a supervisor that takes
every socket of the one at PATH, which then drains and exits.

Signals:
  SIGHUP                   reload: start a new generation; once it is ready,
                           send new connections to it, then stop the old
                           one (which then drains)
  SIGTERM, SIGINT, SIGQUIT stop: after --shutdown-delay, send the stop signal
                           to every generation, wait for them to exit; a
                           second one ends the delay, or kills them now
  SIGUSR2                  upgrade the supervisor in place (as `supervisor
                           upgrade`): same pid, children and sockets
  SIGUSR1, SIGWINCH        forwarded to the serving generation

Exit status:
  the active child's     its exit code, or 128+N if signal N killed it (0 if
                         it died of the stop signal it was sent)
  0                      stopped with no child ever active
  1                      the supervisor's own failure (bind, missing command)
  2                      usage error
  127                    the first generation could not be executed

Durations: 500ms, 30s, 2m30s, 1h (decimals allowed: 1.5s). Signals: TERM,
SIGTERM or 15. Logging: RUST_LOG=debug for more, RUST_LOG=warn for less;
--log-format json for one JSON object per line.";

/// Zero-downtime hot-restart supervisor for network servers.
#[derive(Debug, Parser)]
#[command(
    name = "supervisor",
    version,
    override_usage = "supervisor [OPTIONS] -- CMD [ARGS...]\n       supervisor reload [--rolling[=K] | --canary PCT [--promote-after DUR]] [--control PATH]\n       supervisor promote|rollback|status|events|stop|upgrade [--control PATH]\n       supervisor fds [--control PATH] [--name NAME]... -- CMD [ARGS...]\n       supervisor listen [--control PATH] NAME=ADDR",
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    subcommand_value_name = "CONTROL",
    subcommand_help_heading = "Control a running supervisor (through its control socket)"
)]
pub struct Cli {
    /// A control command, or none to run a server.
    #[command(subcommand)]
    pub client: Option<Client>,

    /// Print the man page (man) or a shell's completions (complete-bash,
    /// complete-zsh, complete-fish) to stdout, and exit.
    #[arg(long, value_enum, value_name = "WHAT", exclusive = true)]
    pub generate: Option<Generate>,

    /// The server to run and how.
    #[command(flatten)]
    pub run: Args,
}

/// What `--generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Generate {
    /// The man page, roff (`supervisor --generate man > supervisor.1`).
    Man,
    /// Completions for bash.
    CompleteBash,
    /// Completions for zsh.
    CompleteZsh,
    /// Completions for fish.
    CompleteFish,
}

/// Write what `--generate` asks for, from the parser's own definition.
///
/// # Errors
/// Writing to `out` failed.
pub fn generate(what: Generate, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match what {
        Generate::Man => man(cmd, out),
        Generate::CompleteBash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "supervisor", out);
            Ok(())
        }
        Generate::CompleteZsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "supervisor", out);
            Ok(())
        }
        Generate::CompleteFish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "supervisor", out);
            Ok(())
        }
    }
}

/// The environment variable a bad value came from, when the option that
/// clap refused was not on the command line but its variable is set.
fn from_environment(e: &clap::Error) -> Option<String> {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // `--drain-timeout <DUR>`: the long name.
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let given = std::env::args_os().skip(1).any(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--"))
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if given {
        return None;
    }
    let cmd = Cli::command();
    let var = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some(long))?
        .get_env()?
        .to_str()?
        .to_string();
    std::env::var_os(&var).is_some().then_some(var)
}

/// `--generate WHAT` (or `--generate=WHAT`) as this process's only
/// arguments, with a valid WHAT: what to generate. Read before clap parses
/// the command line, since options set from the environment
/// (`SUPERVISOR_OPT_*`) would count as given beside an exclusive
/// `--generate`. Anything else is clap's to parse (and to refuse).
pub fn generate_requested() -> Option<Generate> {
    generate_alone(std::env::args_os().skip(1).collect())
}

fn generate_alone(args: Vec<OsString>) -> Option<Generate> {
    let words: Vec<&str> = args.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let what = match words.as_slice() {
        ["--generate", what] => *what,
        [one] => one.strip_prefix("--generate=")?,
        _ => return None,
    };
    <Generate as ValueEnum>::from_str(what, false).ok()
}

/// The man page: clap_mangen's sections for the whole command, then each
/// control command's own options, then where the rest is documented.
fn man(cmd: clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = cmd.long_about(LONG_ABOUT);
    // Section 8 (system administration): section 1 has a supervisor(1)
    // already, the page of Debian's supervisord package, and ours must
    // install beside it.
    let page = clap_mangen::Man::new(cmd.clone()).section("8");
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        writeln!(out, ".SH \"SUPERVISOR {}\"", name.to_uppercase())?;
        let usage = sub
            .clone()
            .bin_name(format!("supervisor {name}"))
            .render_usage();
        let usage = usage.to_string();
        let usage = usage.strip_prefix("Usage: ").unwrap_or(&usage);
        writeln!(out, "\\fB{}\\fR", roff_escape(usage))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(out, ".PP\n{}", roff_escape(&about.to_string()))?;
        }
        let mut opts = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut opts)?;
        // Its options, under a subheading instead of clap_mangen's section
        // (and without the string definitions it repeats first).
        let opts = String::from_utf8_lossy(&opts);
        let body = opts
            .split_once(".SH OPTIONS\n")
            .map_or("", |(_, rest)| rest);
        writeln!(out, ".SS Options")?;
        out.write_all(body.as_bytes())?;
    }
    // Every option's variable (clap_mangen does not show them).
    writeln!(out, ".SH \"OPTIONS FROM THE ENVIRONMENT\"")?;
    writeln!(
        out,
        "{}",
        roff_escape(
            "Every run option can also be set by an environment variable, SUPERVISOR_OPT_ and its \
             name in capitals with _ for -; the command line wins over the variable. A repeatable \
             option (--listen, --env, --env-file, --compat) takes one value per line of its \
             variable. A flag takes true or false. The variables are removed from the children's \
             environment."
        )
    )?;
    for arg in cmd.get_arguments() {
        if let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) {
            writeln!(
                out,
                ".TP\n\\fB{}\\fR\n\\-\\-{}",
                roff_escape(&var.to_string_lossy()),
                roff_escape(long)
            )?;
        }
    }
    // The help text's last part (the children's variables, signals, exit
    // statuses), as written: its columns need no-fill mode.
    writeln!(out, ".SH \"SIGNALS, EXIT STATUS, ENVIRONMENT\"\n.nf")?;
    writeln!(out, "{}\n.fi", roff_escape(AFTER_HELP))?;
    writeln!(out, ".SH \"SEE ALSO\"\n{}", roff_escape(SEE_ALSO))?;
    page.render_version_section(out)
}

/// Text for roff: backslashes and the leading `.` or `'` of a line escaped.
fn roff_escape(text: &str) -> String {
    text.replace('\\', "\\e")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with(['.', '\'']) {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The man page's description.
const LONG_ABOUT: &str = "\
supervisor binds the listening sockets once and runs the server command as \
a child, handing it the sockets as inherited file descriptors (fds 3, 4, ... \
with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, as systemd socket activation \
does). On SIGHUP or `supervisor reload` it starts a new generation of the \
server on the same sockets, waits until it is ready (--ready), sends new \
connections to it (--handoff steer: each generation has its own socket in a \
SO_REUSEPORT group steered by a BPF program), then sends the old generation \
its stop signal and waits out its drain. A new generation that fails to \
become ready is stopped, the reload fails, and the old one keeps serving.";

/// The man page's SEE ALSO.
const SEE_ALSO: &str = "\
The docs/ chapters of the source distribution (installed with the Debian \
package under /usr/share/doc/hot-supervisor/docs/): usage.md (every option \
with its reasons), handoff.md, readiness.md, control.md, workers.md, \
upgrade.md, systemd.md, containers.md, child-protocol.md, servers.md, \
performance.md, guarantees.md. systemd.socket(5), sd_listen_fds(3), \
sd_notify(3).";

/// The control commands: clients of a running supervisor.
#[derive(Debug, Subcommand)]
pub enum Client {
    /// Reload and wait for the outcome: exit 0 once the new generation is
    /// ready, 1 with the reason if it failed (the old one still serves).
    Reload {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Give up waiting after DUR (exit 3; the reload may still finish).
        #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
        /// Replace the workers K at a time (default 1): never more than N+K
        /// alive, each generation's share of new connections following its
        /// ready workers; a new worker that fails rolls the reload back.
        #[arg(long, value_name = "K", num_args = 0..=1, require_equals = true,
              default_missing_value = "1", value_parser = clap::value_parser!(u32).range(1..=1024),
              conflicts_with = "canary")]
        rolling: Option<u32>,
        /// Start the new generation as a canary: once ready it gets PCT
        /// percent of new connections until `supervisor promote` or
        /// `supervisor rollback` (a crash of it rolls back at once).
        #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u32).range(1..=99))]
        canary: Option<u32>,
        /// With --canary: promote it by itself after DUR if it has not
        /// crashed by then.
        #[arg(long, value_name = "DUR", value_parser = parse_duration, requires = "canary")]
        promote_after: Option<Duration>,
    },
    /// Finish a canary reload: the canary takes every new connection and
    /// the old generation quiesces and stops (as a reload's switch).
    Promote {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Give up waiting after DUR (exit 3).
        #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
    },
    /// Undo a canary (or a rolling reload under way): the serving
    /// generation takes every new connection back, the new one quiesces
    /// and stops.
    Rollback {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Give up waiting after DUR (exit 3).
        #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
    },
    /// Show the command, listeners, generations and restarts.
    Status {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Print the status as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Follow the lifecycle events (reload requested, spawned, ready,
    /// switched, quiescing, stopping, exited, reload succeeded or failed,
    /// upgrade, takeover, ...), one per line, until the supervisor ends the
    /// stream (it exits, upgrades in place or is taken over: reconnect).
    Events {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Print each event as the JSON object sent (one per line).
        #[arg(long)]
        json: bool,
    },
    /// Stop gracefully (every generation drains) and wait until the
    /// supervisor has exited.
    Stop {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Give up waiting after DUR (exit 3; the stop goes on).
        #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
    },
    /// Upgrade the supervisor in place (same pid, children and sockets):
    /// re-execute the binary at the path it was started from, after
    /// checking that it can take over. Exit 0 once the new image serves,
    /// 1 with the reason if it cannot (the old one carries on).
    Upgrade {
        /// The supervisor's control socket (default: as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// How long the new binary may take to confirm that it can take
        /// over (default 10s).
        #[arg(long, value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
        timeout: Option<Duration>,
    },
    /// Fetch the listening sockets (SCM_RIGHTS) and exec CMD with them at
    /// fds 3, 4, ... and LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES set, as
    /// socket activation does.
    #[command(override_usage = "supervisor fds [--control PATH] [--name NAME]... -- CMD [ARGS...]")]
    Fds {
        /// The supervisor's control socket (default: $SUPERVISOR_CONTROL,
        /// else as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// Only this listener; repeatable, in the order wanted (default:
        /// every listener, in fd order).
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// The command to exec and its arguments (after `--`).
        #[arg(trailing_var_arg = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Open a listener in the running supervisor (or find the one of that
    /// name): kept for every later generation, after the others.
    #[command(override_usage = "supervisor listen [--control PATH] NAME=ADDR")]
    Listen {
        /// The supervisor's control socket (default: $SUPERVISOR_CONTROL,
        /// else as the supervisor's).
        #[arg(long, value_name = "PATH", env = "SUPERVISOR_OPT_CONTROL")]
        control: Option<PathBuf>,
        /// NAME=ADDR, ADDR as for --listen (tcp:0.0.0.0:9090,
        /// udp:127.0.0.1:5353, unix:/run/x.sock).
        #[arg(value_name = "NAME=ADDR", value_parser = parse_named_listener)]
        listener: Spec,
    },
}

/// Parse `NAME=ADDR` for `supervisor listen` (a name is required).
pub fn parse_named_listener(s: &str) -> Result<Spec, String> {
    let Some((name, addr)) = s.split_once('=') else {
        return Err("expected NAME=ADDR (a run-time listener needs a name)".into());
    };
    Spec::named(name, addr)
}

/// The prefix of the environment variables that set the run options
/// (`SUPERVISOR_OPT_DRAIN_TIMEOUT` for `--drain-timeout`): not a plain
/// `SUPERVISOR_`, which the variables the supervisor sets in its children
/// use. They are removed from the children's environment.
pub const OPTION_PREFIX: &str = "SUPERVISOR_OPT_";

/// Options of the server-running mode. Each can also be set by the
/// environment variable [`OPTION_PREFIX`] + its name in capitals with `_`
/// for `-`; a repeatable option takes one value per line of its variable.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The listeners, in the order of their fds (see the help text).
    #[arg(
        env = "SUPERVISOR_OPT_LISTEN",
        value_delimiter = '\n',
        short,
        long = "listen",
        value_name = "[NAME=]ADDR",
        help = "Listen on [NAME=]ADDR: HOST:PORT, [IPV6]:PORT, :PORT or PORT (every address), udp:HOST:PORT, unix:/PATH or unix:@ABSTRACT. Repeatable; the name defaults to ADDR with ':' replaced by '_'"
    )]
    pub listen: Vec<Spec>,

    /// Listen backlog (1 to 4096); default: the kernel's limit
    /// (net.core.somaxconn).
    #[arg(long, env = "SUPERVISOR_OPT_BACKLOG", value_name = "N", value_parser = clap::value_parser!(i32).range(1..=4096))]
    pub backlog: Option<i32>,

    /// How each worker proves it is ready. `auto` (the default): it sends
    /// READY=1, or it accepts a probe connection on the first steered TCP
    /// listener, whichever comes first (where nothing can be probed: READY=1
    /// or 1s alive, and the log says so). `notify`: READY=1 to NOTIFY_SOCKET
    /// (best for a server that accepts before it can serve). `tcp`: a probe
    /// connection accepted. `http:PATH`: GET PATH answered 2xx or 3xx.
    /// `delay:DUR`: alive for DUR, or READY=1 earlier (a timer, not a
    /// signal). Probes reach each worker and need steer mode.
    #[arg(long, env = "SUPERVISOR_OPT_READY", value_name = "MODE", default_value = "auto", value_parser = parse_ready)]
    pub ready: Ready,

    /// How listeners are handed to the generations: `steer` (each
    /// generation gets its own socket in a reuseport group; new connections
    /// go only to the serving one) or `shared` (every generation gets the
    /// same socket). Unix sockets, and sockets that cannot be joined, are
    /// always shared.
    #[arg(
        long,
        env = "SUPERVISOR_OPT_HANDOFF",
        value_enum,
        value_name = "MODE",
        default_value = "steer"
    )]
    pub handoff: Handoff,

    /// Steer mode: once a new generation serves, the old one is stopped
    /// only after its own queue has been empty for DUR, so that every
    /// connection it accepted has had its request read.
    #[arg(long, env = "SUPERVISOR_OPT_QUIESCE", value_name = "DUR", default_value = "200ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub quiesce: Duration,

    /// Steer mode: stop an old generation whose queue is not empty after
    /// DUR anyway (the log says how many connections were still queued).
    #[arg(long, env = "SUPERVISOR_OPT_QUIESCE_TIMEOUT", value_name = "DUR", default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub quiesce_timeout: Duration,

    /// Do not set TCP_NODELAY on TCP listeners (by default it is set, as
    /// nginx, Go and Node do; accepted connections inherit it).
    #[arg(env = "SUPERVISOR_OPT_NO_TCP_NODELAY", long)]
    pub no_tcp_nodelay: bool,

    /// Set SO_KEEPALIVE on TCP listeners (accepted connections inherit it).
    #[arg(env = "SUPERVISOR_OPT_TCP_KEEPALIVE", long)]
    pub tcp_keepalive: bool,

    /// TCP_DEFER_ACCEPT: wake the server only once a connection has data,
    /// waiting at most DUR (whole seconds).
    #[arg(long, env = "SUPERVISOR_OPT_DEFER_ACCEPT", value_name = "DUR", value_parser = parse_duration, allow_hyphen_values = true)]
    pub defer_accept: Option<Duration>,

    /// SO_RCVBUF of the listeners, in bytes.
    #[arg(long, env = "SUPERVISOR_OPT_RCVBUF", value_name = "BYTES")]
    pub rcvbuf: Option<usize>,

    /// SO_SNDBUF of the listeners, in bytes.
    #[arg(long, env = "SUPERVISOR_OPT_SNDBUF", value_name = "BYTES")]
    pub sndbuf: Option<usize>,

    /// How long a new generation may take to become ready before it is
    /// stopped and the reload counts as failed.
    #[arg(long, env = "SUPERVISOR_OPT_READY_TIMEOUT", value_name = "DUR", default_value = "60s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub ready_timeout: Duration,

    /// Signal that asks a generation to drain and exit (nginx wants QUIT,
    /// HAProxy USR1).
    #[arg(long, env = "SUPERVISOR_OPT_STOP_SIGNAL", value_name = "SIG", default_value = "TERM", value_parser = parse_signal)]
    pub stop_signal: Signal,

    /// How long a stopped generation may drain before SIGKILL to its
    /// process group.
    #[arg(long, env = "SUPERVISOR_OPT_DRAIN_TIMEOUT", value_name = "DUR", default_value = "30s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub drain_timeout: Duration,

    /// How the log is written on stderr: `text` (the default), or `json`,
    /// one object per line (time, level, message, and the lifecycle
    /// event's typed fields: event, generation, pid, reason, duration_ms,
    /// ...) for container log pipelines.
    #[arg(
        long,
        env = "SUPERVISOR_OPT_LOG_FORMAT",
        value_enum,
        value_name = "FORMAT",
        default_value = "text"
    )]
    pub log_format: crate::logging::Format,

    /// At most N generations alive at once (2 or more; default: no cap).
    /// A reload that would make more kills the oldest generation that no
    /// longer receives new connections (quiescing or draining) at once,
    /// cutting its drain short: for long-lived connections and frequent
    /// reloads, which otherwise keep old generations for the whole drain
    /// timeout. Status shows each draining generation's open connections.
    #[arg(long, env = "SUPERVISOR_OPT_MAX_GENERATIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1_000_000))]
    pub max_generations: Option<u32>,

    /// When the serving generation exits on its own: restart it (with
    /// exponential backoff from 100ms to 10s, reset after 10s of healthy
    /// run) on failure, always, or never (then the supervisor exits with
    /// its status).
    #[arg(
        long,
        env = "SUPERVISOR_OPT_RESTART",
        value_enum,
        value_name = "POLICY",
        default_value = "on-failure"
    )]
    pub restart: Restart,

    /// On a stop request (SIGTERM, SIGINT, `supervisor stop`), keep
    /// everything serving for DUR first (the health endpoint's /readyz says
    /// 503 meanwhile); a second request ends the delay.
    #[arg(long, env = "SUPERVISOR_OPT_SHUTDOWN_DELAY", value_name = "DUR", default_value = "0", value_parser = parse_duration, allow_hyphen_values = true)]
    pub shutdown_delay: Duration,

    /// Give up (exit with the failing generation's status) after N starts
    /// by the crash policy within --start-limit-interval; 0: never.
    #[arg(
        long,
        env = "SUPERVISOR_OPT_START_LIMIT_BURST",
        value_name = "N",
        default_value = "5"
    )]
    pub start_limit_burst: u32,

    /// The window of --start-limit-burst.
    #[arg(long, env = "SUPERVISOR_OPT_START_LIMIT_INTERVAL", value_name = "DUR", default_value = "10s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub start_limit_interval: Duration,

    /// Serve /livez, /readyz and /metrics (Prometheus) on ADDR
    /// (HOST:PORT).
    #[arg(long, env = "SUPERVISOR_OPT_HEALTH", value_name = "ADDR")]
    pub health: Option<std::net::SocketAddr>,

    /// Take over from the supervisor whose control socket is at PATH: take
    /// its sockets (and the control socket), start a generation on them,
    /// and once it is ready tell the old supervisor to drain and exit. If
    /// the new generation fails, the old supervisor carries on and this one
    /// exits 1.
    #[arg(long, env = "SUPERVISOR_OPT_TAKEOVER", value_name = "PATH")]
    pub takeover: Option<PathBuf>,

    /// Run the children as USER (name or uid), with its groups (the
    /// supervisor must be root; it keeps binding the listeners).
    #[arg(long, env = "SUPERVISOR_OPT_USER", value_name = "USER")]
    pub user: Option<String>,

    /// Run the children with GROUP (name or gid) as their group (default:
    /// the user's primary group).
    #[arg(long, env = "SUPERVISOR_OPT_GROUP", value_name = "GROUP")]
    pub group: Option<String>,

    /// Set KEY=VALUE in the children's environment; repeatable.
    #[arg(long, env = "SUPERVISOR_OPT_ENV", value_delimiter = '\n', value_name = "KEY=VALUE", value_parser = hot_supervisor::envfile::parse_assignment)]
    pub env: Vec<(String, String)>,

    /// Read KEY=VALUE lines for the children's environment from PATH (the
    /// format of systemd's EnvironmentFile=); repeatable; read at start.
    #[arg(
        long,
        env = "SUPERVISOR_OPT_ENV_FILE",
        value_delimiter = '\n',
        value_name = "PATH"
    )]
    pub env_file: Vec<PathBuf>,

    /// Run the children in DIR.
    #[arg(long, env = "SUPERVISOR_OPT_CHDIR", value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Also set the variables of servers written for other launchers:
    /// einhorn, server-starter, nginx (comma-separated, or all).
    #[arg(
        long,
        env = "SUPERVISOR_OPT_COMPAT",
        value_delimiter = '\n',
        value_name = "LIST"
    )]
    pub compat: Vec<Compat>,

    /// The control socket for `supervisor reload|status|events|stop|upgrade|fds|listen`; default
    /// supervisor.sock in $RUNTIME_DIRECTORY, else in $XDG_RUNTIME_DIR,
    /// else in the private directory /tmp/supervisor-UID.
    #[arg(long, env = "SUPERVISOR_OPT_CONTROL", value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// Run N processes of the command per generation (workers), each told
    /// its index (SUPERVISOR_WORKER=0..N-1) and the count
    /// (SUPERVISOR_WORKERS), all on the generation's sockets; a worker that
    /// crashes is restarted alone.
    #[arg(long, env = "SUPERVISOR_OPT_WORKERS", value_name = "N", default_value = "1", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub workers: u32,

    /// How SIGHUP and a plain `supervisor reload` replace the workers:
    /// all-at-once (N new workers, then the switch), or rolling[=K] (K at
    /// a time, never more than N+K alive).
    #[arg(long, env = "SUPERVISOR_OPT_RELOAD", value_name = "HOW", default_value = "all-at-once", value_parser = parse_reload)]
    pub reload: crate::machine::Strategy,

    /// The server command and its arguments (after `--`).
    /// Reload when PATH changes (a file, a directory, or a symlink such as
    /// a deploy's `current`; a Kubernetes ConfigMap or Secret mount too);
    /// repeatable. One reload per burst of changes, once
    /// --watch-debounce has passed without another.
    #[arg(
        long,
        env = "SUPERVISOR_OPT_WATCH",
        value_delimiter = '\n',
        value_name = "PATH"
    )]
    pub watch: Vec<PathBuf>,

    /// With --watch: how long the watched paths must stay unchanged after
    /// a change before the reload starts.
    #[arg(long, env = "SUPERVISOR_OPT_WATCH_DEBOUNCE", value_name = "DUR", default_value = "500ms", value_parser = parse_duration, allow_hyphen_values = true)]
    pub watch_debounce: Duration,

    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `--handoff` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Handoff {
    /// A socket per generation, new connections routed to the serving one.
    Steer,
    /// The same socket for every generation.
    Shared,
}

/// `--ready` values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// `auto`: a TCP probe or READY=1 where a probe can reach the workers,
    /// else READY=1 or a delay (decided once the listeners are bound).
    Auto,
    /// As the machine sees it (notify, delay).
    Machine(ReadyMode),
    /// A probe by the supervisor.
    Probe(Check),
}

impl Ready {
    /// The mode as the user wrote it (for status).
    pub fn describe(&self) -> String {
        match self {
            Ready::Auto => "auto".into(),
            Ready::Machine(ReadyMode::Notify) => "notify".into(),
            Ready::Machine(ReadyMode::Delay(d)) => {
                format!("delay:{}", hot_supervisor::duration::human(*d))
            }
            Ready::Machine(ReadyMode::Probe) => "probe".into(),
            Ready::Probe(c) => c.describe(),
        }
    }
}

/// `--restart` values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Restart {
    /// Restart unless the child exited with status 0.
    OnFailure,
    /// Always restart.
    Always,
    /// Never restart.
    Never,
}

impl From<Restart> for RestartPolicy {
    fn from(r: Restart) -> RestartPolicy {
        match r {
            Restart::OnFailure => RestartPolicy::OnFailure,
            Restart::Always => RestartPolicy::Always,
            Restart::Never => RestartPolicy::Never,
        }
    }
}

/// Parse `--reload`: `all-at-once`, `rolling` or `rolling=K`.
pub fn parse_reload(s: &str) -> Result<crate::machine::Strategy, String> {
    use crate::machine::Strategy;
    match s {
        "all-at-once" => Ok(Strategy::AllAtOnce),
        "rolling" => Ok(Strategy::Rolling(1)),
        _ => match s.strip_prefix("rolling=").map(str::parse::<u32>) {
            Some(Ok(k)) if (1..=1024).contains(&k) => Ok(Strategy::Rolling(k)),
            _ => Err("expected all-at-once, rolling or rolling=K (K from 1 to 1024)".into()),
        },
    }
}

/// Parse a duration (see [`hot_supervisor::duration::parse`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    hot_supervisor::duration::parse(s)
}

/// Parse `auto`, `notify`, `tcp`, `http:PATH` or `delay:DUR` (see
/// [`hot_supervisor::parse::ready::parse`]).
pub fn parse_ready(s: &str) -> Result<Ready, String> {
    use hot_supervisor::parse::ready;
    Ok(match ready::parse(s)? {
        ready::Ready::Auto => Ready::Auto,
        ready::Ready::Notify => Ready::Machine(ReadyMode::Notify),
        ready::Ready::Tcp => Ready::Probe(Check::Tcp),
        ready::Ready::Http(path) => Ready::Probe(Check::Http(path)),
        ready::Ready::Delay(d) => Ready::Machine(ReadyMode::Delay(d)),
    })
}

/// A command that cannot be found but is a control command's name was
/// most likely meant as one (`supervisor --control P reload`): the message
/// that says how to write it.
pub fn control_word_misplaced(e: &anyhow::Error, command: &std::ffi::OsStr) -> Option<String> {
    let c = command.to_str().filter(|c| {
        [
            "reload", "promote", "rollback", "status", "stop", "upgrade", "fds", "listen",
        ]
        .contains(c)
    })?;
    Some(format!(
        "{e:#} (to control a running supervisor, put the command first: supervisor {c} --control PATH)"
    ))
}

/// Parse the command line; on a usage error print one line to stderr and
/// exit 2 (help and version print as usual and exit 0).
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let message = if e.kind() == ErrorKind::MissingRequiredArgument {
                "no command given: supervisor [OPTIONS] -- CMD [ARGS...]".to_string()
            } else {
                // clap's first paragraph, on one line.
                let rendered = e.render().to_string();
                let para: Vec<&str> = rendered
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let text = para.join(" ");
                let text = text.strip_prefix("error: ").unwrap_or(&text).to_string();
                match from_environment(&e) {
                    Some(var) => format!("{text} (set by the environment variable {var})"),
                    None => text,
                }
            };
            eprintln!("supervisor: error: {message} (see supervisor --help)");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
        assert!(
            parse_duration("2600000000000000h")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn ready_modes() {
        assert_eq!(parse_ready("notify"), Ok(Ready::Machine(ReadyMode::Notify)));
        assert_eq!(
            parse_ready("delay:250ms"),
            Ok(Ready::Machine(ReadyMode::Delay(Duration::from_millis(250))))
        );
        assert_eq!(parse_ready("tcp"), Ok(Ready::Probe(Check::Tcp)));
        assert_eq!(
            parse_ready("http:/health"),
            Ok(Ready::Probe(Check::Http("/health".into())))
        );
        assert!(parse_ready("http:health").is_err());
        assert!(parse_ready("http:/a b").is_err());
        assert!(parse_ready("soon").is_err());
    }

    #[test]
    fn command_after_dashes() {
        let a = Cli::try_parse_from(["supervisor", "-l", ":0", "--", "srv", "--flag"]).unwrap();
        assert!(a.client.is_none());
        assert_eq!(
            a.run.command,
            vec![OsString::from("srv"), OsString::from("--flag")]
        );
        assert!(Cli::try_parse_from(["supervisor", "-l", ":0"]).is_err());
        // Options of the command after its name are the command's.
        let a = Cli::try_parse_from(["supervisor", "srv", "-l", "x"]).unwrap();
        assert_eq!(a.run.command.len(), 3);
        assert!(a.run.listen.is_empty());
        assert!(Cli::try_parse_from(["supervisor", "--bogus", "--", "srv"]).is_err());
        // A server that happens to be called `reload` runs after `--`.
        let a = Cli::try_parse_from(["supervisor", "--", "reload"]).unwrap();
        assert!(a.client.is_none());
        assert_eq!(a.run.command, vec![OsString::from("reload")]);
    }

    #[test]
    fn workers_and_reload_strategies() {
        let a = Cli::try_parse_from(["supervisor", "--workers", "4", "--reload", "rolling=2", "x"])
            .unwrap();
        assert_eq!(a.run.workers, 4);
        assert_eq!(a.run.reload, crate::machine::Strategy::Rolling(2));
        let a = Cli::try_parse_from(["supervisor", "x"]).unwrap();
        assert_eq!(
            (a.run.workers, a.run.reload),
            (1, crate::machine::Strategy::AllAtOnce)
        );
        for bad in [
            &["supervisor", "--workers", "0", "x"][..],
            &["supervisor", "--reload", "rolling=0", "x"],
            &["supervisor", "--reload", "canary", "x"],
            &["supervisor", "reload", "--canary", "100"],
            &["supervisor", "reload", "--canary", "0"],
            &["supervisor", "reload", "--promote-after", "1m"],
            &["supervisor", "reload", "--rolling", "--canary", "5"],
            &["supervisor", "reload", "--rolling=0"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        match Cli::try_parse_from(["supervisor", "reload", "--rolling"])
            .unwrap()
            .client
        {
            Some(Client::Reload { rolling, .. }) => assert_eq!(rolling, Some(1)),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from(["supervisor", "reload", "--rolling=3"])
            .unwrap()
            .client
        {
            Some(Client::Reload { rolling, .. }) => assert_eq!(rolling, Some(3)),
            other => panic!("parsed as {other:?}"),
        }
        match Cli::try_parse_from([
            "supervisor",
            "reload",
            "--canary",
            "20",
            "--promote-after",
            "10m",
        ])
        .unwrap()
        .client
        {
            Some(Client::Reload {
                canary,
                promote_after,
                ..
            }) => {
                assert_eq!(canary, Some(20));
                assert_eq!(promote_after, Some(Duration::from_secs(600)));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["supervisor", "promote"])
                .unwrap()
                .client,
            Some(Client::Promote { .. })
        ));
        assert!(matches!(
            Cli::try_parse_from(["supervisor", "rollback", "--timeout", "5s"])
                .unwrap()
                .client,
            Some(Client::Rollback { .. })
        ));
    }

    #[test]
    fn control_commands() {
        let a = Cli::try_parse_from(["supervisor", "reload", "--timeout", "5s"]).unwrap();
        match a.client {
            Some(Client::Reload {
                control,
                timeout,
                rolling,
                canary,
                ..
            }) => {
                assert_eq!(control, None);
                assert_eq!(timeout, Some(Duration::from_secs(5)));
                assert_eq!((rolling, canary), (None, None));
            }
            other => panic!("parsed as {other:?}"),
        }
        let a = Cli::try_parse_from(["supervisor", "status", "--control", "/x.sock", "--json"])
            .unwrap();
        match a.client {
            Some(Client::Status { control, json }) => {
                assert_eq!(control, Some(PathBuf::from("/x.sock")));
                assert!(json);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["supervisor", "stop"]).unwrap().client,
            Some(Client::Stop { .. })
        ));
        assert!(matches!(
            Cli::try_parse_from(["supervisor", "upgrade", "--timeout", "3s"])
                .unwrap()
                .client,
            Some(Client::Upgrade {
                timeout: Some(t),
                ..
            }) if t == Duration::from_secs(3)
        ));
        // After a run option, `reload` can only be the server's name.
        let a = Cli::try_parse_from(["supervisor", "-l", ":0", "reload"]).unwrap();
        assert!(a.client.is_none());
        let a = Cli::try_parse_from([
            "supervisor",
            "fds",
            "--name",
            "b",
            "--name",
            "a",
            "--",
            "srv",
            "--flag",
        ])
        .unwrap();
        match a.client {
            Some(Client::Fds { names, command, .. }) => {
                assert_eq!(names, ["b", "a"]);
                assert_eq!(command, [OsString::from("srv"), OsString::from("--flag")]);
            }
            other => panic!("parsed as {other:?}"),
        }
        let a = Cli::try_parse_from(["supervisor", "listen", "m=tcp:127.0.0.1:9090"]).unwrap();
        match a.client {
            Some(Client::Listen { listener, .. }) => {
                assert_eq!(
                    (listener.name.as_str(), listener.text.as_str()),
                    ("m", "tcp:127.0.0.1:9090")
                );
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["supervisor", "listen", "tcp:127.0.0.1:9090"]).is_err());
        assert!(Cli::try_parse_from(["supervisor", "listen", "a b=127.0.0.1:1"]).is_err());
        // Run options make no sense with a control command.
        assert!(Cli::try_parse_from(["supervisor", "reload", "--ready", "notify"]).is_err());
        assert!(Cli::try_parse_from(["supervisor", "reload", "--timeout", "soon"]).is_err());
    }
}
