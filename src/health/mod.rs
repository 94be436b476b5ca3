//! Health checks: a subsystem of the loop that checks every ship with a `healthcheck`, at
//! most one check in flight per ship, each a non-blocking probe ([`probe`]) with its own
//! timeout. It learns of starts and stops from the supervisor's messages and tells the
//! others what it finds: a change of a ship's health (`Message::Health`, which the edge
//! routes by and the supervisor takes as readiness), each check for the metrics
//! (`Message::Checked`), and a ship to restart (`Message::RestartUnhealthy`).
//!
//! Cadence: while a ship starts, checks follow each other quickly (100 ms, doubling up to
//! `health_interval`) so that readiness is seen soon; once it runs, one every
//! `health_interval` after the previous one ended.

pub mod breaker;
pub mod probe;
pub mod tracker;

use std::time::{Duration, Instant};

use mio::{Registry, Token};

use crate::fleet::health::{CheckFailure, Status};
use crate::fleet::Message;
use crate::manifest::ids::ProgramId;
use crate::manifest::{BindAddr, Health, HealthProbe, Program};
use crate::reactor::deadline::after;
use crate::reactor::{DeadlineQueue, TimerId, HEALTH_TOKENS};
use probe::{Check, Probe, Progress, Target};
use tracker::{Change, Tracker};

/// The first check after a start; the next ones double up to `health_interval`.
const START_CADENCE: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug)]
enum Due {
    /// Time for the next check.
    Check(usize),
    /// The check in flight has run out of time.
    Timeout(usize),
    /// The ship may have been unhealthy long enough to restart.
    Restart(usize),
}

/// A check under way: a probe on the loop, or an `exec:` command.
enum Under {
    Probe(Probe),
    /// The command's process (its own group); the supervisor reaps it and says how it
    /// ended (`Message::Reaped`). 0 once reaped.
    Exec {
        pid: i32,
    },
}

struct InFlight {
    under: Under,
    started: Instant,
    timeout: TimerId,
}

impl InFlight {
    /// Stops what is under way: deregisters a probe, kills an `exec:` command's group.
    fn stop(self, registry: &Registry) {
        match self.under {
            Under::Probe(mut p) => p.deregister(registry),
            // (Never `kill(0)`: that would be mothership's own group.)
            Under::Exec { pid } if pid > 0 => {
                // SAFETY: a signal to the check command's own process group.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
            }
            Under::Exec { .. } => {}
        }
    }
}

struct Ship {
    name: String,
    spec: Health,
    /// For `exec:` checks: where and with what environment the command runs.
    cwd: std::path::PathBuf,
    env: Vec<(String, String)>,
    tracker: Tracker,
    /// Starting or running (checks are made only then).
    live: bool,
    /// Its current process group, to tell a new start from news of the same one.
    pgid: Option<i32>,
    cadence: Duration,
    inflight: Option<InFlight>,
    next: Option<TimerId>,
    restart: Option<TimerId>,
}

/// Every ship's health checks.
pub struct Checks {
    /// By program index; `None` for programs without a health check.
    ships: Vec<Option<Ship>>,
    timers: DeadlineQueue<Due>,
    outbox: Vec<Message>,
}

impl Checks {
    pub fn new(programs: &[Program], now: Instant) -> Checks {
        let ships = programs
            .iter()
            .map(|p| {
                p.health.as_ref().map(|h| Ship {
                    name: p.name.clone(),
                    spec: h.clone(),
                    cwd: p.cwd.clone(),
                    env: p.env.clone(),
                    tracker: Tracker::new(h, now),
                    live: false,
                    pgid: None,
                    cadence: START_CADENCE,
                    inflight: None,
                    next: None,
                    restart: None,
                })
            })
            .collect();
        Checks {
            ships,
            timers: DeadlineQueue::default(),
            outbox: Vec::new(),
        }
    }

    /// True when no program has a health check (the loop can leave it out).
    pub fn is_empty(&self) -> bool {
        self.ships.iter().all(Option::is_none)
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut self.outbox);
    }

    /// Hears of starts and stops, and of `exec:` commands reaped.
    pub fn hear(&mut self, msg: &Message, registry: &Registry, now: Instant) {
        if let Message::Reaped { pid, success, what } = msg {
            let ours = self.ships.iter().position(|s| {
                matches!(s, Some(Ship { inflight: Some(InFlight { under: Under::Exec { pid: p }, .. }), .. }) if p == pid)
            });
            if let Some(i) = ours {
                let outcome = if *success {
                    Ok(())
                } else {
                    Err((CheckFailure::Exit, what.clone()))
                };
                // Reaped: nothing left to kill.
                if let Some(Some(Ship {
                    inflight: Some(f), ..
                })) = self.ships.get_mut(i)
                {
                    f.under = Under::Exec { pid: 0 };
                }
                self.finish(i, outcome, registry, now);
            }
            return;
        }
        let Message::Program {
            id, state, pgid, ..
        } = msg
        else {
            return;
        };
        let i = id.index();
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        match *state {
            "starting" if s.pgid != *pgid || !s.live => {
                s.pgid = *pgid;
                s.live = true;
                s.cadence = START_CADENCE;
                let change = s.tracker.started(now);
                self.cancel(i, registry);
                self.apply(i, change);
                self.schedule(i, after(now, START_CADENCE));
            }
            "running" => {
                s.tracker.running();
                if !s.live || s.pgid != *pgid {
                    // Up without having been seen starting (a one-shot turn): check soon.
                    s.live = true;
                    s.pgid = *pgid;
                    self.schedule(i, after(now, START_CADENCE));
                }
            }
            "starting" => {}
            _ => {
                if s.live {
                    s.live = false;
                    s.pgid = None;
                    let change = s.tracker.stopped();
                    self.cancel(i, registry);
                    self.apply(i, change);
                }
            }
        }
    }

    /// One of its tokens is ready: the probe in flight of one ship moves on.
    pub fn ready(&mut self, token: Token, registry: &Registry, now: Instant) {
        let Some(i) = token.0.checked_sub(HEALTH_TOKENS) else {
            return;
        };
        let Some(Some(Ship {
            inflight:
                Some(InFlight {
                    under: Under::Probe(probe),
                    ..
                }),
            ..
        })) = self.ships.get_mut(i)
        else {
            return;
        };
        let outcome = match probe.drive() {
            Progress::Pending => return,
            Progress::Passed(_) => Ok(()),
            Progress::Unreachable(e) => Err((CheckFailure::Connect, e)),
            Progress::Failed(e) => Err((CheckFailure::Status, e)),
        };
        self.finish(i, outcome, registry, now);
    }

    pub fn timers_due(&mut self, registry: &Registry, now: Instant) {
        while let Some((_, due)) = self.timers.pop_due(now) {
            match due {
                Due::Check(i) => {
                    if let Some(Some(s)) = self.ships.get_mut(i) {
                        s.next = None;
                    }
                    self.start(i, registry, now);
                }
                Due::Timeout(i) => {
                    let Some(Some(s)) = self.ships.get_mut(i) else {
                        continue;
                    };
                    let Some(f) = &mut s.inflight else { continue };
                    f.timeout = TimerId::NONE;
                    let why = format!("no answer within {:?}", s.spec.timeout);
                    self.finish(i, Err((CheckFailure::Timeout, why)), registry, now);
                }
                Due::Restart(i) => {
                    let Some(Some(s)) = self.ships.get_mut(i) else {
                        continue;
                    };
                    s.restart = None;
                    let change = s.tracker.restart_due(now);
                    self.apply(i, change);
                }
            }
        }
    }

    /// Starts a check of ship `i`.
    fn start(&mut self, i: usize, registry: &Registry, now: Instant) {
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        if !s.live || s.inflight.is_some() {
            return;
        }
        let (target, check) = match &s.spec.probe {
            HealthProbe::Exec { argv } => {
                let timeout = self
                    .timers
                    .insert(after(now, s.spec.timeout), Due::Timeout(i));
                match run_command(argv, &s.cwd, &s.env) {
                    Ok(pid) => {
                        s.inflight = Some(InFlight {
                            under: Under::Exec { pid },
                            started: now,
                            timeout,
                        });
                    }
                    Err(e) => {
                        self.timers.cancel(timeout);
                        let why = format!("cannot run: {e}");
                        self.finish(i, Err((CheckFailure::Exit, why)), registry, now);
                    }
                }
                return;
            }
            HealthProbe::Http { addr, host, path } => (
                target_of(addr),
                Check::Get {
                    host: host.clone(),
                    path: path.clone(),
                    agent: concat!("mothership-health/", env!("CARGO_PKG_VERSION")).into(),
                },
            ),
            HealthProbe::Tcp { addr } => (target_of(addr), Check::Connect),
        };
        let started = Probe::start(&target, check).and_then(|mut p| {
            p.register(registry, Token(HEALTH_TOKENS + i))?;
            Ok(p)
        });
        match started {
            Ok(probe) => {
                let timeout = self
                    .timers
                    .insert(after(now, s.spec.timeout), Due::Timeout(i));
                s.inflight = Some(InFlight {
                    under: Under::Probe(probe),
                    started: now,
                    timeout,
                });
            }
            Err(e) => {
                s.inflight = None;
                self.finish(
                    i,
                    Err((CheckFailure::Connect, e.to_string())),
                    registry,
                    now,
                );
            }
        }
    }

    /// Ship `i`'s check ended (`Err`: how and why it failed): tells the metrics, feeds the
    /// verdict, and schedules the next check.
    fn finish(
        &mut self,
        i: usize,
        outcome: Result<(), (CheckFailure, String)>,
        registry: &Registry,
        now: Instant,
    ) {
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        let started = match s.inflight.take() {
            Some(f) => {
                let started = f.started;
                self.timers.cancel(f.timeout);
                f.stop(registry);
                started
            }
            None => now,
        };
        let failure = outcome.as_ref().err().map(|(f, _)| *f);
        self.outbox.push(Message::Checked {
            id: ProgramId::at(i),
            took: now.saturating_duration_since(started),
            failure,
        });
        let what = s.spec.probe.describe();
        let change = s
            .tracker
            .result(outcome.map_err(|(_, why)| format!("{what}: {why}")), now);
        let next = if s.tracker.is_running() && s.tracker.status() != Status::Unknown {
            s.spec.interval
        } else {
            let c = s.cadence;
            s.cadence = (c * 2).min(s.spec.interval);
            c.min(s.spec.interval)
        };
        self.apply(i, change);
        self.schedule(i, after(now, next));
    }

    /// Logs and tells a change of ship `i`, and keeps its restart timer in line.
    fn apply(&mut self, i: usize, change: Option<Change>) {
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        let id = ProgramId::at(i);
        match change {
            None => {}
            Some(Change::Status(status, reason)) => {
                match status {
                    Status::Unhealthy => log::warn!("{}: unhealthy: {reason}", s.name),
                    Status::Healthy => log::info!("{}: healthy ({reason})", s.name),
                    Status::Unknown => {}
                }
                self.outbox.push(Message::Health { id, status, reason });
            }
            Some(Change::Restart(reason)) => {
                self.outbox.push(Message::RestartUnhealthy { id, reason });
            }
        }
        let want = s.tracker.restart_at();
        if let Some(t) = s.restart.take() {
            self.timers.cancel(t);
        }
        if let Some(at) = want {
            s.restart = Some(self.timers.insert(at, Due::Restart(i)));
        }
    }

    fn schedule(&mut self, i: usize, at: Instant) {
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        if let Some(t) = s.next.take() {
            self.timers.cancel(t);
        }
        if s.live {
            s.next = Some(self.timers.insert(at, Due::Check(i)));
        }
    }

    /// Drops ship `i`'s check in flight and its next one.
    fn cancel(&mut self, i: usize, registry: &Registry) {
        let Some(Some(s)) = self.ships.get_mut(i) else {
            return;
        };
        if let Some(f) = s.inflight.take() {
            self.timers.cancel(f.timeout);
            f.stop(registry);
        }
        if let Some(t) = s.next.take() {
            self.timers.cancel(t);
        }
    }
}

fn target_of(addr: &BindAddr) -> Target {
    match addr {
        BindAddr::Tcp(a) => Target::Tcp(*a),
        BindAddr::Unix(p) => Target::Unix(p.clone()),
    }
}

/// Starts an `exec:` check's command: no shell, stdin, stdout and stderr on /dev/null, in
/// the ship's folder with its environment over mothership's, in a process group of its
/// own (so that a timeout kills all of it). Returns its pid; the supervisor reaps it.
fn run_command(
    argv: &[String],
    cwd: &std::path::Path,
    env: &[(String, String)],
) -> std::io::Result<i32> {
    use std::process::{Command, Stdio};
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("no command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Mothership's own notification socket is not the command's to talk to.
    for v in crate::supervisor::notify::VARIABLES {
        cmd.env_remove(v);
    }
    crate::supervisor::spawn::isolate(&mut cmd);
    let child = cmd.spawn()?;
    Ok(child.id() as i32)
}
