//! The parts around the loop, and what the loop polls of them.
//!
//! Each part owns its state and says which fds it wants polled (and for
//! what) and when it next needs the loop; this module only gathers those
//! into one poll set and names each entry, so that the driver can route a
//! wake-up to its part. It decides nothing.

use std::time::Instant;

use nix::poll::{PollFd, PollFlags};

use crate::children::Children;
use crate::control::{self, ControlServer};
use crate::health::{self, HealthServer};
use crate::machine::Generation;
use crate::manager::ServiceManager;
use crate::probe::Prober;
use crate::steer::Steering;

/// The parts the loop routes between.
pub struct Parts {
    /// The generations' processes.
    pub children: Children,
    /// The listeners' sockets.
    pub steering: Steering,
    /// The control socket.
    pub control: ControlServer,
    /// The supervisor's own service manager, if it has one.
    pub manager: Option<ServiceManager>,
    /// Readiness probes, in `--ready tcp|http:PATH` mode.
    pub prober: Option<Prober>,
    /// The health endpoint, with `--health ADDR`.
    pub health: Option<HealthServer>,
    /// The upgrade or takeover under way, if any.
    pub handoff: crate::handoff::Handoff,
    /// `--watch`: the watched paths.
    pub watcher: Option<crate::watch::Watcher>,
    /// The children's own channels.
    pub channels: crate::channel::Channels,
}

/// What a poll entry watches.
#[derive(Clone, Copy)]
pub enum Watch {
    /// The signalfd.
    Signals,
    /// A worker's exec-status pipe (its generation and index).
    Exec(Generation, u32),
    /// The control socket or one of its connections.
    Control(control::Watch),
    /// A worker's notify socket (its generation and index).
    Notify(Generation, u32),
    /// A worker's channel.
    Channel(Generation, u32),
    /// The service manager's socket has room.
    Manager,
    /// The readiness probe's connection.
    Probe,
    /// The health endpoint or one of its connections.
    Health(health::Watch),
    /// A listening socket, for a hang-up (it stopped listening).
    Hangup(i32),
    /// The upgrade check's answer.
    Upgrade,
    /// The connection of the supervisor taking over.
    Handover,
    /// The connection to the supervisor this one took over from.
    Takeover,
    /// The `--watch` inotify fd.
    Inotify,
}

impl Parts {
    /// The earliest deadline of any part.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.children.exec_deadline(),
            self.control.deadline(),
            self.manager.as_ref().and_then(ServiceManager::deadline),
            self.prober.as_ref().and_then(Prober::deadline),
            self.health.as_ref().and_then(HealthServer::deadline),
            self.handoff.check().map(crate::upgrade::Check::deadline),
            self.handoff
                .source()
                .and_then(crate::takeover::Source::deadline),
            self.watcher
                .as_ref()
                .and_then(crate::watch::Watcher::deadline),
            self.channels.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Add every part's fds to the poll set, each with its watch.
    pub fn interest<'a>(&'a self, watch: &mut Vec<Watch>, fds: &mut Vec<PollFd<'a>>) {
        let flags = |input: bool| {
            if input {
                PollFlags::POLLIN
            } else {
                PollFlags::POLLOUT
            }
        };
        // First: a worker's exec is told before anything it then did
        // (its READY=1 may be in the same wake-up).
        for ((g, w), fd) in self.children.exec_interest() {
            watch.push(Watch::Exec(g, w));
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        for (w, fd, input) in self.control.interest() {
            watch.push(Watch::Control(w));
            fds.push(PollFd::new(fd, flags(input)));
        }
        for ((g, w), fd, input) in self.channels.interest() {
            watch.push(Watch::Channel(g, w));
            fds.push(PollFd::new(fd, flags(input)));
        }
        for ((g, w), fd) in self.children.interest() {
            watch.push(Watch::Notify(g, w));
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if let Some(fd) = self.manager.as_ref().and_then(ServiceManager::interest) {
            watch.push(Watch::Manager);
            fds.push(PollFd::new(fd, PollFlags::POLLOUT));
        }
        if let Some((fd, input)) = self.prober.as_ref().and_then(Prober::interest) {
            watch.push(Watch::Probe);
            fds.push(PollFd::new(fd, flags(input)));
        }
        for (w, fd, input) in self.health.iter().flat_map(HealthServer::interest) {
            watch.push(Watch::Health(w));
            fds.push(PollFd::new(fd, flags(input)));
        }
        if let Some(c) = self.handoff.check() {
            watch.push(Watch::Upgrade);
            fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
        }
        if let Some((fd, input)) = self.handoff.source().and_then(|h| h.interest()) {
            watch.push(Watch::Handover);
            fds.push(PollFd::new(fd, flags(input)));
        }
        if let Some(fd) = self.handoff.sink().and_then(|t| t.interest()) {
            watch.push(Watch::Takeover);
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        if let Some(w) = &self.watcher {
            watch.push(Watch::Inotify);
            fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
        }
        // No events asked: only a hang-up (or an error) is reported, which a
        // listening socket never has.
        for (raw, fd) in self.steering.hangup_interest() {
            watch.push(Watch::Hangup(raw));
            fds.push(PollFd::new(fd, PollFlags::empty()));
        }
    }
}
