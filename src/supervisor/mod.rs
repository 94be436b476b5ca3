//! The supervisor: one `mio` loop that owns every child pipe, readiness probe, signal and
//! timer of the fleet. It runs prelaunch jobs, launches ships and bays in dependency order,
//! restarts what crashes, and lands the fleet in reverse order. Each program's lifecycle is
//! the pure state machine in [`child`]; this module performs its actions.

pub mod child;
pub mod leftovers;
pub mod notify;
pub mod plan;
pub mod spawn;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use signal_hook::consts::signal::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use crate::flagship::coord::{Coordinator, Report};
use crate::flagship::Rank;
use crate::fleet::{health, resources, FleetView, Message, Operation};
use crate::health::probe::{Check, Probe, Progress, Target};
use crate::manifest::graph;
use crate::manifest::ids::ProgramId;
use crate::manifest::units::signal_name;
use crate::manifest::{BindAddr, Manifest, Program, Ready, Role};
use crate::output::files::Files;
use crate::output::journal::{self, Journal};
use crate::output::lines::{LineAssembler, Prefix};
use crate::output::{Output, Stream};
use crate::reactor::deadline::after;
use crate::reactor::{DeadlineQueue, Slab, TimerId, SIGNALS, WAKER};
use child::{Action, Child, Event, ExitInfo, Policy, Readiness, State, SETTLE};
use plan::{Decision, Phase, Transition};

/// Programs spawned per loop turn; signals and timers are handled between batches.
const SPAWN_BATCH: usize = 32;
/// Most bytes taken from one pipe at the final drain, whatever the output congestion.
const FINAL_DRAIN: usize = 1 << 20;
/// How often ships with `max_memory` have their memory sampled.
pub const MEMORY_CHECK: Duration = Duration::from_secs(5);
/// Bytes read from one pipe before the loop turns to other work.
const READ_BUDGET: usize = 1 << 20;

/// How the run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub code: i32,
    pub reason: String,
}

/// Display and colour settings for child output.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub colour_stdout: bool,
    pub colour_stderr: bool,
    /// The children's lines go to the journal only (the dashboard shows them), not to
    /// mothership's stdout and stderr.
    pub journal_only: bool,
}

struct Member {
    prog: Program,
    child: Child,
    deps: Vec<usize>,
    dependents: Vec<usize>,
    env: Vec<(OsString, OsString)>,
    timer: Option<TimerId>,
    probe: Option<Token>,
    pipes: Vec<Token>,
    prefix: [Prefix; 2],
    was_up: bool,
    wait_logged: bool,
    /// While it starts with `ready = "log:..."`: the pattern and the line read so far.
    log_wait: Option<(regex::Regex, [Vec<u8>; 2])>,
    /// The line of its output that made it ready was read (handled after the reads).
    log_matched: bool,
    /// Its `ready = "fd:N"` pipe, while open.
    ready_fd: Option<Token>,
    /// What it last said in a `STATUS=` notification.
    status: Option<String>,
    /// `watchdog` (or what it asked for with `WATCHDOG_USEC=`): a `WATCHDOG=1` is due
    /// within this while it runs, by `watchdog_due`.
    watchdog: Option<Duration>,
    watchdog_due: Option<Instant>,
    /// The one watchdog timer pending for it.
    watchdog_timer: Option<TimerId>,
    /// Where it stands in a restart the operator asked for.
    restart: RestartMark,
}

/// A program's part in an operator's restart: its dependents in the same restart stop
/// first, and what depends on it does not start until it is up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RestartMark {
    None,
    /// To be stopped once its dependents in the restart are down.
    Queued,
    /// Stopping; over once it is down (waiting to start again).
    Told,
}

impl Member {
    fn is_prelaunch(&self) -> bool {
        self.prog.role == Role::Prelaunch
    }
}

enum Source {
    Pipe(Pipe),
    Probe {
        member: usize,
        probe: Probe,
    },
    /// The read end of a program's `ready = "fd:N"` pipe: a newline means ready.
    ReadyFd {
        member: usize,
        file: File,
    },
    /// A program's notification socket (`ready = "notify"`).
    #[cfg(target_os = "linux")]
    Notify {
        member: usize,
        inbox: notify::Inbox,
    },
}

struct Pipe {
    file: File,
    member: usize,
    stream: Stream,
    asm: LineAssembler,
    readable: bool,
}

#[derive(Clone, Copy, Debug)]
enum TimerKind {
    Member(usize),
    ReapDeadline,
    ReapGiveUp,
    DrainDeadline,
    /// Time to compare the ships' memory with their `max_memory`.
    MemoryCheck,
    /// The election has taken longer than it may: give up.
    ElectionDeadline,
    /// Time to tell mothership's own supervisor's watchdog that all is well.
    Watchdog,
    /// A program's `WATCHDOG=1` may be overdue.
    ChildWatchdog(usize),
}

/// The members as the fleet planner sees them.
struct Members<'a>(&'a [Member]);

impl plan::View for Members<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn prelaunch(&self, i: usize) -> bool {
        self.0[i].is_prelaunch()
    }
    fn state(&self, i: usize) -> &State {
        &self.0[i].child.state
    }
    fn satisfies_dependents(&self, i: usize) -> bool {
        self.0[i].child.satisfies_dependents() && self.0[i].restart == RestartMark::None
    }
    fn deps(&self, i: usize) -> &[usize] {
        &self.0[i].deps
    }
    fn dependents(&self, i: usize) -> &[usize] {
        &self.0[i].dependents
    }
    fn was_up(&self, i: usize) -> bool {
        self.0[i].was_up
    }
    fn oneshot(&self, i: usize) -> bool {
        self.0[i].prog.oneshot
    }
}

pub struct Supervisor {
    /// For the child pipes, readiness probes and the signal source.
    registry: Registry,
    signals: Signals,
    sources: Slab<Source>,
    timers: DeadlineQueue<TimerKind>,
    members: Vec<Member>,
    pids: HashMap<i32, usize>,
    out: Output,
    batch: [Vec<u8>; 2],
    buf: Vec<u8>,
    phase: Phase,
    failure: Option<String>,
    land_reason: Option<String>,
    paused: bool,
    pid1: bool,
    reap_timer: Option<TimerId>,
    more_to_start: bool,
    poll_errors: u32,
    final_drain: bool,
    /// An HTTP edge serves beside the fleet (the manifest has binds or metrics).
    serving: bool,
    /// Its requests in flight, as the root last reported them.
    edge_busy: usize,
    /// Messages for the root to hand on (program changes, backends up and down, the end
    /// of serving).
    outbox: Vec<Message>,
    /// The fleet as the messages sent so far describe it: a change is told once.
    told: FleetView,
    /// Number of prelaunch members (they come first in `members`).
    npre: usize,
    /// While landing: wait for HTTP exchanges in flight until then.
    drain_until: Option<Instant>,
    /// The flagship election worker, when the election is PostgreSQL.
    coord: Option<Coordinator>,
    /// How long the worker may take to publish at the end.
    election_wait: Duration,
    /// Longest time in the Electing phase.
    election_limit: Duration,
    /// The signal that started the landing, and when.
    stop_signal: Option<(i32, Instant)>,
    /// Where the process groups of the children are recorded (see `leftovers`).
    record: Option<leftovers::Record>,
    /// Mothership's own supervisor, told when the fleet is ready and when it lands.
    notifier: notify::Notifier,
    /// The lifecycle state last told (one of `fleet::FLEET_STATES`), and whether a
    /// program changed since it was worked out.
    told_state: &'static str,
    state_dirty: bool,
    /// Every program's recent lines, shared with the control socket (the loop's one
    /// thread: borrowed only within a call).
    journal: Rc<RefCell<Journal>>,
    /// The children's lines are not written out (see [`Style::journal_only`]).
    journal_only: bool,
    /// The programs' log files, when the manifest has any, and the lines read for each
    /// since the last flush.
    files: Option<Files>,
    file_bufs: Vec<Vec<u8>>,
}

/// SIGPWR: how LXC's `lxc-stop` and some power daemons ask an init to shut down; a
/// landing like SIGTERM (Linux only: the BSDs have no such signal).
#[cfg(target_os = "linux")]
const POWER_SIGNAL: Option<i32> = Some(libc::SIGPWR);
#[cfg(not(target_os = "linux"))]
const POWER_SIGNAL: Option<i32> = None;

/// A stop signal repeated within this window of the first is the same request (see
/// `handle_signals`); a later one kills everything at once.
const REPEAT_WINDOW: Duration = Duration::from_millis(250);

fn stream_index(s: Stream) -> usize {
    match s {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Supervisor {
    /// Sets up the loop for `m` (already filtered by tags). Signals are caught from here on.
    pub fn new(
        m: &Manifest,
        out: Output,
        style: Style,
        socket_dir: &std::path::Path,
        record: Option<leftovers::Record>,
        registry: &Registry,
        serving: bool,
    ) -> io::Result<Supervisor> {
        let registry = registry.try_clone()?;
        let waker = Arc::new(Waker::new(&registry, WAKER)?);
        #[cfg(feature = "postgres")]
        let coord = if m.flagship.enabled
            && matches!(
                m.flagship.election,
                crate::manifest::Election::Postgres { .. }
            ) {
            Some(crate::flagship::postgres::start(m, Arc::clone(&waker))?)
        } else {
            None
        };
        #[cfg(not(feature = "postgres"))]
        let coord: Option<Coordinator> = None;
        out.set_waker(waker.clone());
        let signals = Signals::new(
            [SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2]
                .into_iter()
                .chain(POWER_SIGNAL),
        )?;
        let pid1 = std::process::id() == 1;
        if !spawn::become_subreaper() {
            log::debug!("could not become a child subreaper; orphans of the fleet go to init");
        }

        // Inherited variables are passed on as they are, UTF-8 or not.
        // Not mothership's own notification socket and watchdog (see `notify`).
        let inherited: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !notify::VARIABLES.iter().any(|v| k == v))
            .collect();
        let width = m.name_width().max(10);
        crate::output::logger::set_width(width);
        let mut members = Vec::new();
        let all: Vec<&Program> = m.prelaunch.iter().chain(&m.programs).collect();
        // Jitter seed: differs between instances (PID 1 in every container has pid 1).
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = std::process::id() as u64 ^ clock ^ 0x9e37_79b9_7f4a_7c15;
        for (i, p) in all.iter().enumerate() {
            // inherited < fleet env_file < fleet env < program (group env < env_file < env)
            let mut env = inherited.clone();
            set_all(&mut env, &m.env_file);
            set_all(&mut env, &m.env);
            set_all(&mut env, &p.env);
            let mut extra = vec![
                ("MS_PID".to_string(), std::process::id().to_string()),
                ("MS_SHIP".to_string(), p.name.clone()),
                (
                    "MS_SOCKET_DIR".to_string(),
                    socket_dir.display().to_string(),
                ),
            ];
            if let Role::Bay { bay_type } = &p.role {
                extra.push((
                    "MS_SOCKET_PATH".into(),
                    socket_dir
                        .join(format!("{}.sock", p.name))
                        .display()
                        .to_string(),
                ));
                extra.push(("MS_BAY_TYPE".into(), bay_type.clone()));
            }
            if matches!(p.ready, Ready::Notify) {
                let path = notify_path(socket_dir, &p.name);
                extra.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
                if let Some(w) = p.watchdog {
                    extra.push(("WATCHDOG_USEC".into(), w.as_micros().to_string()));
                }
            }
            set_all(&mut env, &extra);
            let policy = Policy {
                name: p.name.clone(),
                oneshot: p.oneshot,
                critical: p.critical,
                restart: p.restart,
                crash_limit: p.crash_limit,
                crash_window: p.crash_window,
                grace: p.grace_period,
                stop_signal: p.stop_signal,
                ready: match p.ready {
                    Ready::Bind => Readiness::Probe,
                    Ready::Delay(d) => Readiness::Settle(d),
                    // One-shot jobs are ready when they end (the machine knows them).
                    Ready::Exit => Readiness::Settle(SETTLE),
                    Ready::Healthcheck
                    | Ready::Notify
                    | Ready::Fd(_)
                    | Ready::Log(_)
                    | Ready::Docked => Readiness::Told,
                },
                ready_timeout: p.ready_timeout,
            };
            members.push(Member {
                prog: (*p).clone(),
                child: Child::new(policy, seed.wrapping_mul(i as u64 + 1)),
                deps: Vec::new(),
                dependents: Vec::new(),
                env,
                timer: None,
                probe: None,
                pipes: Vec::new(),
                prefix: [
                    Prefix::new(&p.name, width, style.colour_stdout.then_some(i)),
                    Prefix::new(&p.name, width, style.colour_stderr.then_some(i)),
                ],
                was_up: false,
                wait_logged: false,
                log_wait: None,
                log_matched: false,
                ready_fd: None,
                status: None,
                watchdog: p.watchdog,
                watchdog_due: None,
                watchdog_timer: None,
                restart: RestartMark::None,
            });
        }
        // Dependencies within each set (prelaunch jobs among themselves, ships and bays
        // among themselves), resolved once: members are the prelaunch jobs, then the rest.
        let npre = m.prelaunch.len();
        let edges = graph::deps(&m.prelaunch).into_iter().chain(
            graph::deps(&m.programs)
                .into_iter()
                .map(|ds| ds.into_iter().map(|d| d + npre).collect()),
        );
        for (i, deps) in edges.enumerate() {
            for &d in &deps {
                members[d].dependents.push(i);
            }
            members[i].deps = deps;
        }
        let phase = if coord.is_some() {
            Phase::Electing
        } else if m.prelaunch.is_empty() {
            Phase::Launching
        } else {
            Phase::Prelaunch
        };
        let journal = Journal::new(members.iter().map(|m| m.prog.name.clone()));
        let paths: Vec<Option<std::path::PathBuf>> =
            members.iter().map(|m| m.prog.log_file.clone()).collect();
        let files = if paths.iter().any(Option::is_some) {
            let f = Files::start(paths, &m.log_files)?;
            f.set_waker(waker.clone());
            Some(f)
        } else {
            None
        };
        let file_bufs = vec![Vec::new(); members.len()];
        let mut sup = Supervisor {
            files,
            file_bufs,
            journal: Rc::new(RefCell::new(journal)),
            journal_only: style.journal_only,
            registry,
            signals,
            sources: Slab::default(),
            timers: DeadlineQueue::new(),
            members,
            pids: HashMap::new(),
            out,
            batch: [Vec::new(), Vec::new()],
            // As large as a default pipe: larger reads measured slower (cache misses).
            buf: vec![0; 64 << 10],
            phase,
            failure: None,
            land_reason: None,
            paused: false,
            pid1,
            reap_timer: None,
            more_to_start: false,
            poll_errors: 0,
            final_drain: false,
            serving,
            edge_busy: 0,
            outbox: Vec::new(),
            told: FleetView::new(&m.programs, Instant::now()),
            npre: m.prelaunch.len(),
            drain_until: None,
            coord,
            election_wait: m.flagship.election_timeout,
            election_limit: m
                .flagship
                .election_timeout
                .saturating_add(m.flagship.prelaunch_timeout)
                .saturating_add(Duration::from_secs(10)),
            stop_signal: None,
            record,
            notifier: notify::Notifier::none(),
            told_state: "initializing",
            state_dirty: true,
        };
        sup.open_inboxes(socket_dir)?;
        Ok(sup)
    }

    /// Opens the notification socket of every program with `ready = "notify"`.
    fn open_inboxes(&mut self, socket_dir: &std::path::Path) -> io::Result<()> {
        for i in 0..self.members.len() {
            if !matches!(self.members[i].prog.ready, Ready::Notify) {
                continue;
            }
            let path = notify_path(socket_dir, &self.members[i].prog.name);
            #[cfg(target_os = "linux")]
            {
                let inbox = notify::Inbox::bind(&path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("notification socket {}: {e}", path.display()),
                    )
                })?;
                let raw = inbox.raw_fd();
                let token = self.sources.insert(Source::Notify { member: i, inbox });
                self.registry
                    .register(&mut SourceFd(&raw), token, Interest::READABLE)?;
            }
            #[cfg(not(target_os = "linux"))]
            return Err(io::Error::other(format!(
                "{}: ready = \"notify\" needs Linux",
                path.display()
            )));
        }
        Ok(())
    }

    /// Reads what program `member` said on its notification socket.
    #[cfg(target_os = "linux")]
    fn read_notify(&mut self, token: Token, now: Instant) {
        let mut buf = [0u8; 4096];
        loop {
            let Some(Source::Notify { member, inbox }) = self.sources.get(token) else {
                return;
            };
            let member = *member;
            let Some((n, pid)) = inbox.recv(&mut buf) else {
                return;
            };
            let m = &self.members[member];
            let name = m.prog.name.clone();
            let Some(group) = m.child.pgid() else {
                log::debug!("{name}: notification while not running; ignored");
                continue;
            };
            // SAFETY: getpgid has no memory effects.
            let sender_group = if pid > 0 {
                unsafe { libc::getpgid(pid) }
            } else {
                -1
            };
            // A sender that has already exited (`systemd-notify` run by a script) cannot
            // be placed in a group any more; the socket's folder is mothership's alone
            // (0700), so its message is taken.
            let gone = pid > 0 && sender_group < 0;
            if sender_group != group && !gone {
                log::warn!(
                    "{name}: notification from pid {pid}, outside its process group {group}; ignored"
                );
                continue;
            }
            self.heard(member, notify::parse(&buf[..n]), now);
        }
    }

    /// Acts on what program `i` said in one notification.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn heard(&mut self, i: usize, said: notify::Said, now: Instant) {
        let name = self.members[i].prog.name.clone();
        if let Some(s) = said.status {
            log::debug!("{name}: status: {s}");
            self.members[i].status = Some(s);
        }
        if let Some(us) = said.watchdog_usec {
            let d = Duration::from_micros(us);
            if self.members[i].watchdog != Some(d) {
                log::info!("{name}: asks for a watchdog every {d:?}");
                self.members[i].watchdog = Some(d);
                self.members[i].watchdog_due = None;
                self.arm_watchdog(i, now);
            }
        }
        if said.watchdog {
            if let (Some(d), Some(_)) = (self.members[i].watchdog, self.members[i].watchdog_due) {
                self.members[i].watchdog_due = Some(after(now, d));
            }
        }
        if let Some(us) = said.extend_usec {
            let by = Duration::from_micros(us);
            self.dispatch(i, Event::Extend { by }, now);
        }
        if said.stopping {
            log::info!("{name}: says it is stopping");
        }
        if said.reloading {
            log::info!("{name}: says it is reloading");
        }
        if said.ready && matches!(self.members[i].child.state, State::Starting { .. }) {
            self.dispatch(i, Event::ProbeOk, now);
        }
        if said.trigger && matches!(self.members[i].child.state, State::Running { .. }) {
            let reason = "it asked for a restart (WATCHDOG=trigger)".to_string();
            self.dispatch(i, Event::Unhealthy { reason }, now);
        }
    }

    /// Program `i` runs with a watchdog: its next `WATCHDOG=1` is due one interval from
    /// now (once per run).
    fn arm_watchdog(&mut self, i: usize, now: Instant) {
        let m = &mut self.members[i];
        let (Some(d), None, State::Running { .. }) = (m.watchdog, m.watchdog_due, &m.child.state)
        else {
            return;
        };
        let due = after(now, d);
        m.watchdog_due = Some(due);
        if let Some(t) = m.watchdog_timer.take() {
            self.timers.cancel(t);
        }
        m.watchdog_timer = Some(self.timers.insert(due, TimerKind::ChildWatchdog(i)));
    }

    /// Program `i`'s watchdog timer: restarts it if its `WATCHDOG=1` is overdue.
    fn child_watchdog(&mut self, i: usize, now: Instant) {
        let Some(m) = self.members.get_mut(i) else {
            return;
        };
        m.watchdog_timer = None;
        let Some(due) = m.watchdog_due else { return };
        if !matches!(m.child.state, State::Running { .. }) {
            m.watchdog_due = None;
            return;
        }
        if now < due {
            m.watchdog_timer = Some(self.timers.insert(due, TimerKind::ChildWatchdog(i)));
            return;
        }
        m.watchdog_due = None;
        let d = m.watchdog.unwrap_or_default();
        let reason = format!("no WATCHDOG=1 within {d:?}");
        self.dispatch(i, Event::Unhealthy { reason }, now);
    }

    /// The count of lines lost to their log files, when there are log files.
    pub fn log_lines_lost(&self) -> Option<Arc<std::sync::atomic::AtomicU64>> {
        self.files.as_ref().map(Files::lost_counter)
    }

    /// The programs' recent lines, for the control socket.
    pub fn journal(&self) -> Rc<RefCell<Journal>> {
        self.journal.clone()
    }

    /// Who to tell when the fleet is ready and when it lands.
    pub fn notify_with(&mut self, n: notify::Notifier) {
        self.notifier = n;
    }

    /// Starts the fleet: from here on the root calls the methods below, once per turn of
    /// its loop, until [`Supervisor::done`].
    pub fn start(&mut self, now: Instant) {
        let ships = self.members.iter().filter(|m| !m.is_prelaunch()).count();
        let jobs = self.members.len() - ships;
        if self.pid1 {
            log::info!("running as PID 1: reaping every orphan");
        }
        if jobs > 0 {
            log::info!("prelaunch: {jobs} job(s)");
        } else {
            log::info!("launching {ships} program(s)");
        }
        if self.coord.is_some() {
            let at = after(now, self.election_limit);
            self.timers.insert(at, TimerKind::ElectionDeadline);
        }
        if self.members.iter().any(|m| m.prog.max_memory.is_some()) {
            let at = after(now, MEMORY_CHECK);
            self.timers.insert(at, TimerKind::MemoryCheck);
        }
        if let Some(every) = self.notifier.watchdog_every() {
            self.notifier.ping();
            self.timers.insert(after(now, every), TimerKind::Watchdog);
        }
        // A signal that arrived before the loop started is honoured at once.
        self.handle_signals(now);
    }

    /// Advances launch, landing and restarts; `edge_busy` is the number of requests the
    /// edge has in flight.
    pub fn advance(&mut self, now: Instant, edge_busy: usize) {
        // A count taken before the edge heard that serving stops is not the one landing
        // waits for.
        let unheard = self
            .outbox
            .iter()
            .any(|m| matches!(m, Message::StopServing { .. }));
        if !unheard {
            self.edge_busy = edge_busy;
        }
        self.schedule(now);
        self.tell_state();
    }

    /// Works out the fleet's lifecycle state, and logs and tells it when it changed.
    fn tell_state(&mut self) {
        if !std::mem::take(&mut self.state_dirty) && !self.phase_moved() {
            return;
        }
        let mut why = None;
        let state = match self.phase {
            Phase::Electing => "electing",
            Phase::Prelaunch => "prelaunch",
            Phase::Launching => "launching",
            Phase::Running => {
                why = self.in_trouble();
                if why.is_some() {
                    "mayday"
                } else {
                    "running"
                }
            }
            Phase::Landing | Phase::Reaping => "draining",
            Phase::Done if self.failure.is_some() => "failed",
            Phase::Done => "landed",
        };
        if state == self.told_state {
            return;
        }
        match why {
            Some(w) => log::warn!("fleet state: mayday ({w})"),
            None if self.told_state == "mayday" => {
                log::info!("fleet state: {state} (every critical program is up and healthy)")
            }
            None => log::info!("fleet state: {state}"),
        }
        self.told_state = state;
        let msg = Message::Fleet { state };
        self.told.apply(&msg);
        self.outbox.push(msg);
    }

    /// The phase is not the one the last told state was worked out for.
    fn phase_moved(&self) -> bool {
        let expected: &[&str] = match self.phase {
            Phase::Electing => &["electing"],
            Phase::Prelaunch => &["prelaunch"],
            Phase::Launching => &["launching"],
            Phase::Running => &["running", "mayday"],
            Phase::Landing | Phase::Reaping => &["draining"],
            Phase::Done => &["failed", "landed"],
        };
        !expected.contains(&self.told_state)
    }

    /// Why the running fleet is in trouble, if it is: a critical program unhealthy, or
    /// crash-looping (restarting after two or more recent crashes).
    fn in_trouble(&self) -> Option<String> {
        self.members.iter().enumerate().find_map(|(i, m)| {
            if !m.prog.critical || m.is_prelaunch() {
                return None;
            }
            let unhealthy = i
                .checked_sub(self.npre)
                .and_then(|p| self.told.ships.get(p))
                .is_some_and(|s| s.health == health::Status::Unhealthy);
            if unhealthy {
                return Some(format!("critical {} is unhealthy", m.prog.name));
            }
            let looping = matches!(
                m.child.state,
                State::Backoff { .. } | State::Starting { .. }
            ) && m.child.recent_crashes() >= 2;
            looping.then(|| {
                format!(
                    "critical {} is crash-looping ({} crashes lately)",
                    m.prog.name,
                    m.child.recent_crashes()
                )
            })
        })
    }

    /// What the supervisor tells its siblings since the last call.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.outbox)
    }

    /// Landing waits for the edge's requests in flight: `advance` needs their count.
    pub fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// The fleet has landed: the loop ends.
    pub fn done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Work is waiting that needs no event (buffered output, programs still to spawn).
    pub fn has_work(&self) -> bool {
        self.pipes_ready() || self.more_to_start
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// `poll` failed: the fleet fails. True when it keeps failing and the root should
    /// give up (every process group has been killed).
    pub fn poll_failed(&mut self, e: &io::Error, now: Instant) -> bool {
        self.poll_errors += 1;
        log::error!("event loop: {e}");
        self.fail(format!("event loop failed: {e}"), now);
        if self.poll_errors < 10 {
            return false;
        }
        log::error!("event loop keeps failing; killing every process group and giving up");
        for m in &self.members {
            if let Some(pgid) = m.child.pgid() {
                spawn::signal_group(pgid, libc::SIGKILL);
            }
        }
        true
    }

    pub fn poll_ok(&mut self) {
        self.poll_errors = 0;
    }

    /// A message from a sibling: a health check's verdict (readiness for a ship that
    /// waits for its first passing check) or a ship to restart for staying unhealthy.
    pub fn hear(&mut self, msg: &Message, now: Instant) {
        match msg {
            Message::Health { id, status, .. } => {
                self.told.apply(msg);
                self.state_dirty = true;
                let i = self.npre + id.index();
                let Some(m) = self.members.get(i) else { return };
                if *status == health::Status::Healthy
                    && matches!(m.prog.ready, Ready::Healthcheck)
                    && matches!(m.child.state, State::Starting { .. })
                {
                    self.dispatch(i, Event::ProbeOk, now);
                }
            }
            Message::Docked { id } => {
                let i = self.npre + id.index();
                let starting = self
                    .members
                    .get(i)
                    .is_some_and(|m| matches!(m.child.state, State::Starting { .. }));
                if starting {
                    self.dispatch(i, Event::ProbeOk, now);
                }
            }
            Message::BayFault { id, reason } => {
                let i = self.npre + id.index();
                let up = self.members.get(i).is_some_and(|m| {
                    matches!(
                        m.child.state,
                        State::Starting { .. } | State::Running { .. }
                    )
                });
                if up && !self.draining() {
                    self.dispatch(
                        i,
                        Event::Fault {
                            reason: reason.clone(),
                        },
                        now,
                    );
                }
            }
            Message::RestartUnhealthy { id, reason } => {
                let i = self.npre + id.index();
                let running = self
                    .members
                    .get(i)
                    .is_some_and(|m| matches!(m.child.state, State::Running { .. }));
                if running && !self.draining() {
                    let reason = format!("unhealthy for longer than unhealthy_restart ({reason})");
                    self.dispatch(i, Event::Unhealthy { reason }, now);
                }
            }
            Message::Operate { ids, op } => self.operate(ids, *op, now),
            Message::Land { reason } => self.land(reason.clone(), now),
            Message::Reopen => self.reopen_files(),
            _ => {}
        }
    }

    /// SIGUSR1 or `mothership reopen`: the log files are closed and opened again with
    /// their next lines (after an external logrotate moved them).
    fn reopen_files(&mut self) {
        match &self.files {
            Some(f) => {
                log::info!("reopening the log files");
                f.reopen();
            }
            None => log::info!("asked to reopen the log files: this fleet has none"),
        }
    }

    /// Carries out what the operator asked on the control socket (which checked the
    /// names). Nothing is started or restarted once the fleet lands.
    fn operate(&mut self, ids: &[ProgramId], op: Operation, now: Instant) {
        let members: Vec<usize> = ids
            .iter()
            .map(|id| self.npre + id.index())
            .filter(|&i| i < self.members.len())
            .collect();
        if !matches!(self.phase, Phase::Launching | Phase::Running)
            && !matches!(op, Operation::Signal(_))
        {
            log::warn!("control: {op:?} ignored: the fleet is not running");
            return;
        }
        for &i in &members {
            let name = &self.members[i].prog.name;
            // (The control socket and the dashboard refuse this; kept for a dependency
            // that fails between their check and this.)
            let failed_dep = self.members[i]
                .deps
                .iter()
                .copied()
                .find(|&d| self.members[d].child.is_failed() && !members.contains(&d));
            if let (Some(d), Operation::Start | Operation::Restart) = (failed_dep, op) {
                log::warn!(
                    target: "fleet",
                    "{name}: not started: its dependency {} has failed (start both)",
                    self.members[d].prog.name
                );
                continue;
            }
            match op {
                Operation::Stop => {
                    log::info!(target: "fleet", "{name}: stop asked on the control socket");
                    self.members[i].restart = RestartMark::None;
                    self.dispatch(i, Event::Hold, now);
                }
                Operation::Start => {
                    log::info!(target: "fleet", "{name}: start asked on the control socket");
                    self.members[i].wait_logged = false;
                    self.dispatch(i, Event::Release, now);
                }
                Operation::Restart => {
                    log::info!(target: "fleet", "{name}: restart asked on the control socket");
                    self.members[i].wait_logged = false;
                    self.members[i].restart = RestartMark::Queued;
                }
                Operation::Signal(sig) => match self.members[i].child.pid() {
                    Some(pid) => {
                        log::info!(
                            target: "fleet",
                            "{name}: sending {} to pid {pid}, as asked on the control socket",
                            signal_name(sig)
                        );
                        spawn::signal_process(pid, sig);
                    }
                    None => {
                        log::info!(target: "fleet", "{name}: not running; {} not sent", signal_name(sig))
                    }
                },
            }
        }
        if op == Operation::Restart {
            self.restarts(now);
        }
    }

    /// Moves the operator's restarts on: a program stops once its dependents in the same
    /// restart are down (the reverse of the launch order); once down it waits to start
    /// as at launch, which its dependents in the restart wait for in turn.
    fn restarts(&mut self, now: Instant) {
        for i in 0..self.members.len() {
            match self.members[i].restart {
                RestartMark::None => {}
                RestartMark::Told => {
                    if self.members[i].child.is_down() {
                        self.members[i].restart = RestartMark::None;
                    }
                }
                RestartMark::Queued => {
                    let dependents_down = self.members[i].dependents.iter().all(|&d| {
                        self.members[d].restart == RestartMark::None
                            || self.members[d].child.is_down()
                    });
                    if dependents_down {
                        self.members[i].restart = RestartMark::Told;
                        self.dispatch(i, Event::Restart, now);
                        if self.members[i].child.is_down() {
                            self.members[i].restart = RestartMark::None;
                        }
                    }
                }
            }
        }
    }

    /// Registers its signal source with the loop (signals are caught from `new` on; the
    /// waker, which the election's thread needs from the start, registers itself there;
    /// child pipes and probes register as they open).
    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.signals, SIGNALS, Interest::READABLE)
    }

    /// One of the supervisor's tokens is ready: signals, the waker, a pipe or a probe.
    pub fn ready(&mut self, token: Token, now: Instant) {
        match token {
            SIGNALS => self.handle_signals(now),
            WAKER => {
                self.paused = false;
                self.election_reports(now);
            }
            t => self.source_ready(t, now),
        }
    }

    /// After the events of a turn: reads the child pipes that are ready.
    pub fn after_events(&mut self, now: Instant) {
        self.read_pipes(now);
    }

    /// Handles the timers that are due.
    pub fn timers_due(&mut self, now: Instant) {
        while let Some((_, kind)) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Member(i) => {
                    self.members[i].timer = None;
                    self.dispatch(i, Event::Timer, now);
                }
                TimerKind::ReapDeadline => {
                    self.reap_timer = None;
                    log::warn!("descendants still running at the deadline; sending SIGKILL to every process");
                    kill_everything();
                    self.reap_timer = Some(
                        self.timers
                            .insert(after(now, child::KILL_WAIT), TimerKind::ReapGiveUp),
                    );
                }
                // Only wakes the loop: the next `advance` sees the drain is over, with
                // the edge's count of that moment.
                TimerKind::DrainDeadline => {}
                TimerKind::ChildWatchdog(i) => self.child_watchdog(i, now),
                TimerKind::Watchdog => {
                    if let Some(every) = self.notifier.watchdog_every() {
                        self.notifier.ping();
                        self.timers.insert(after(now, every), TimerKind::Watchdog);
                    }
                }
                TimerKind::MemoryCheck => {
                    if matches!(
                        self.phase,
                        Phase::Prelaunch | Phase::Launching | Phase::Running
                    ) {
                        self.check_memory(now);
                        let at = after(now, MEMORY_CHECK);
                        self.timers.insert(at, TimerKind::MemoryCheck);
                    }
                }
                TimerKind::ElectionDeadline => {
                    if self.phase == Phase::Electing {
                        self.fail(
                            "flagship election: no outcome within election_timeout + prelaunch_timeout".into(),
                            now,
                        );
                    }
                }
                TimerKind::ReapGiveUp => {
                    self.reap_timer = None;
                    log::error!("some descendants did not exit even after SIGKILL; leaving them");
                    self.phase = Phase::Done;
                }
            }
        }
    }

    /// After the loop: closes what is left and reports how the fleet ended.
    pub fn finish(mut self) -> Outcome {
        self.close_all();
        if let Some(r) = self.record.take() {
            // Nothing left behind: a later start has nothing to look for.
            let left = self
                .members
                .iter()
                .filter_map(|m| m.child.pgid())
                .any(spawn::group_alive);
            if !left {
                r.remove();
            }
        }
        if let Some(c) = &mut self.coord {
            // Let the election worker publish `abort` (or finish publishing) first.
            c.wait(self.election_wait);
        }
        match self.failure.take() {
            Some(reason) => Outcome { code: 1, reason },
            None => Outcome {
                code: 0,
                reason: self.land_reason.take().unwrap_or_else(|| "landed".into()),
            },
        }
    }

    fn handle_signals(&mut self, now: Instant) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                SIGCHLD => self.reap(now),
                s if s == SIGTERM || s == SIGINT || s == SIGQUIT || POWER_SIGNAL == Some(s) => {
                    let repeat = self
                        .stop_signal
                        .is_some_and(|(s, at)| s == sig && now.saturating_duration_since(at) < REPEAT_WINDOW);
                    if repeat {
                        // timeout(1), `docker kill` on a group or a terminal can deliver the
                        // same signal twice within microseconds: one request, not two.
                        log::debug!("received {} again within {REPEAT_WINDOW:?}: the same request", signal_name(sig));
                        continue;
                    }
                    if matches!(self.phase, Phase::Landing | Phase::Reaping | Phase::Done) {
                        log::warn!("received {} again: killing every process now", signal_name(sig));
                        for i in 0..self.members.len() {
                            self.dispatch(i, Event::Kill, now);
                        }
                        if self.phase == Phase::Reaping {
                            kill_everything();
                        }
                    } else {
                        self.stop_signal = Some((sig, now));
                        self.land(format!("received {}", signal_name(sig)), now);
                    }
                }
                SIGHUP => log::warn!("received SIGHUP: reloading the manifest is not available yet; nothing was changed"),
                SIGUSR1 => self.reopen_files(),
                other => log::info!("received {}: ignored", signal_name(other)),
            }
        }
    }

    /// Restarts (gracefully) each running program whose process group uses more resident
    /// memory than its `max_memory`.
    fn check_memory(&mut self, now: Instant) {
        let watched: Vec<(usize, i32, u64)> = self
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_prelaunch() && !m.prog.oneshot)
            .filter_map(|(i, m)| match (&m.child.state, m.prog.max_memory) {
                (State::Running { pid, .. }, Some(max)) => Some((i, *pid, max)),
                _ => None,
            })
            .collect();
        if watched.is_empty() {
            return;
        }
        let pgids: Vec<i32> = watched.iter().map(|w| w.1).collect();
        let usage = resources::sample(&pgids);
        for (i, pgid, max) in watched {
            let Some(u) = usage.get(&pgid) else { continue };
            if u.rss_bytes > max {
                log::warn!(
                    target: "fleet",
                    "{}: resident memory {} MiB is over max_memory ({} MiB); restarting it",
                    self.members[i].prog.name,
                    u.rss_bytes >> 20,
                    max >> 20
                );
                self.outbox.push(Message::Event {
                    kind: "memory",
                    program: Some(self.members[i].prog.name.clone()),
                    detail: format!(
                        "resident memory {} MiB is over max_memory ({} MiB); restarting it",
                        u.rss_bytes >> 20,
                        max >> 20
                    ),
                });
                self.dispatch(i, Event::Recycle, now);
            }
        }
    }

    /// Begins landing (once). The first reason is the one reported.
    fn land(&mut self, reason: String, now: Instant) {
        if matches!(self.phase, Phase::Landing | Phase::Reaping | Phase::Done) {
            return;
        }
        log::info!("landing: {reason}");
        self.notifier.stopping(&format!("landing: {reason}"));
        self.outbox.push(Message::Event {
            kind: "landing",
            program: None,
            detail: reason.clone(),
        });
        if matches!(self.phase, Phase::Prelaunch | Phase::Electing) {
            if let Some(c) = &mut self.coord {
                if self.failure.is_some() {
                    // Escorts must hear that this flagship's prelaunch failed.
                    c.prelaunch_done(false);
                } else {
                    // Stopped by a signal: no verdict, an escort takes over.
                    c.release();
                }
            }
        }
        self.land_reason = Some(reason);
        self.phase = Phase::Landing;
        // Nothing more is launched.
        self.more_to_start = false;
        if self.serving {
            // Not known until the edge has stopped taking requests and counted those in
            // flight: nothing stops before the next `advance` says.
            self.edge_busy = plan::NOT_COUNTED;
            // The edge stops taking requests; landing waits for those in flight.
            let grace = self.longest_grace();
            self.outbox.push(Message::StopServing { grace });
            let until = after(now, grace);
            self.drain_until = Some(until);
            self.timers.insert(until, TimerKind::DrainDeadline);
        }
        self.schedule(now);
    }

    fn fail(&mut self, reason: String, now: Instant) {
        if self.failure.is_none()
            && !matches!(self.phase, Phase::Landing | Phase::Reaping | Phase::Done)
        {
            self.failure = Some(reason.clone());
        }
        self.land(reason, now);
    }

    /// Acts on what the flagship election worker reported.
    fn election_reports(&mut self, now: Instant) {
        while let Some(r) = self.coord.as_mut().and_then(Coordinator::report) {
            if self.phase != Phase::Electing {
                if let Report::Failed(why) = r {
                    if self.phase == Phase::Prelaunch {
                        // The lock is gone: going on could run prelaunch twice.
                        self.fail(format!("flagship election: {why}"), now);
                    } else {
                        log::warn!("flagship election: {why}");
                    }
                }
                continue;
            }
            match r {
                Report::Elected(Rank::Flagship, why) => {
                    log::info!("flagship: this instance runs the prelaunch jobs ({why})");
                    self.phase = Phase::Prelaunch;
                    self.schedule(now);
                }
                Report::Elected(Rank::Escort, why) => log::info!("escort: {why}"),
                Report::Ready(why) => {
                    let n = self.members.iter().filter(|m| !m.is_prelaunch()).count();
                    log::info!("escort: {why}; launching {n} program(s)");
                    self.phase = Phase::Launching;
                    self.schedule(now);
                }
                Report::Failed(why) => self.fail(format!("flagship election: {why}"), now),
            }
        }
    }

    /// Starts what may start and stops what must stop, according to the phase.
    fn schedule(&mut self, now: Instant) {
        // Launch and landing decisions for this round.
        match self.phase {
            Phase::Prelaunch => self.start_ready(true, now),
            Phase::Launching | Phase::Running => {
                if self.members.iter().any(|m| m.restart != RestartMark::None) {
                    self.restarts(now);
                }
                self.start_ready(false, now)
            }
            Phase::Landing if self.drain_until.is_none() => {
                let mut from = 0;
                while let Some((Decision::Stop(i), next)) =
                    plan::next_landing(&Members(&self.members), from)
                {
                    self.dispatch(i, Event::Stop, now);
                    from = next;
                }
            }
            _ => {}
        }
        // Then where the fleet goes: asked again after each step, as each may lead on.
        loop {
            let facts = plan::Facts {
                now,
                serving: self.serving,
                drain_until: self.drain_until,
                edge_busy: self.edge_busy,
                pid1: self.pid1,
                children_left: self.phase == Phase::Reaping && has_children(),
            };
            let Some(t) = plan::next_phase(&Members(&self.members), self.phase, &facts) else {
                return;
            };
            match t {
                Transition::Launch { n } => {
                    log::info!("prelaunch complete; launching {n} program(s)");
                    if let Some(c) = &mut self.coord {
                        c.prelaunch_done(true);
                    }
                    self.phase = Phase::Launching;
                    return self.schedule(now);
                }
                Transition::Running { up, ended, failed } => {
                    log::info!("running: {up} up, {ended} ended, {failed} failed");
                    self.phase = Phase::Running;
                    self.notifier
                        .ready(&format!("running: {up} up, {ended} ended, {failed} failed"));
                }
                // `land` schedules again itself.
                Transition::Land(reason) => return self.land(reason.into(), now),
                Transition::Drain => return,
                Transition::DrainOver { late } => {
                    if late > 0 {
                        log::warn!("{late} request(s) still in flight at the end of the drain; landing anyway");
                    }
                    self.drain_until = None;
                    return self.schedule(now);
                }
                Transition::Reap => {
                    self.phase = Phase::Reaping;
                    self.begin_reaping(now);
                }
                Transition::Done => self.phase = Phase::Done,
            }
        }
    }

    /// The longest grace period of the fleet: how long draining and final reaping wait.
    fn longest_grace(&self) -> Duration {
        self.members
            .iter()
            .map(|m| m.prog.grace_period)
            .max()
            .unwrap_or(Duration::from_secs(10))
    }

    /// PID 1: everything left in the namespace is ours; ask it to stop, then wait.
    fn begin_reaping(&mut self, now: Instant) {
        if !has_children() {
            self.phase = Phase::Done;
            return;
        }
        let grace = self.longest_grace();
        log::info!("waiting up to {grace:?} for remaining descendants");
        // SAFETY: as PID 1, -1 addresses every process of our PID namespace except us.
        unsafe {
            libc::kill(-1, libc::SIGTERM);
            libc::kill(-1, libc::SIGCONT);
        }
        self.reap_timer = Some(
            self.timers
                .insert(after(now, grace), TimerKind::ReapDeadline),
        );
    }

    /// Applies the launch decisions (see `plan`) for one set: prelaunch jobs or the rest.
    fn start_ready(&mut self, prelaunch: bool, now: Instant) {
        let mut spawned = 0;
        self.more_to_start = false;
        let mut from = 0;
        while let Some((d, next)) = plan::next_launch(&Members(&self.members), prelaunch, from) {
            from = next;
            match d {
                Decision::Start(i) => {
                    if spawned == SPAWN_BATCH {
                        // Let signals and timers in before spawning the rest.
                        self.more_to_start = true;
                        return;
                    }
                    spawned += 1;
                    self.dispatch(i, Event::Start, now);
                }
                Decision::DependencyFailed { member, dependency } => {
                    let dependency = self.members[dependency].prog.name.clone();
                    self.dispatch(member, Event::DependencyFailed { dependency }, now);
                }
                Decision::Waits { member, on } => {
                    if !self.members[member].wait_logged {
                        let names: Vec<&str> = on
                            .iter()
                            .map(|&d| self.members[d].prog.name.as_str())
                            .collect();
                        log::info!(
                            "{}: waiting for {}",
                            self.members[member].prog.name,
                            names.join(", ")
                        );
                        self.members[member].wait_logged = true;
                    }
                }
                Decision::Stop(_) => {}
            }
        }
    }

    /// Feeds one event to a program's machine and performs the resulting actions.
    fn dispatch(&mut self, i: usize, event: Event, now: Instant) {
        self.state_dirty = true;
        let actions = self.members[i].child.handle(event, now);
        // What happened is told before its actions are carried out (a critical failure's
        // reason before the landing it causes).
        for h in self.members[i].child.take_happened() {
            log::log!(target: "fleet", h.level(), "{}: {h}", self.members[i].prog.name);
            if let Some(kind) = h.event_kind() {
                self.outbox.push(Message::Event {
                    kind,
                    program: Some(self.members[i].prog.name.clone()),
                    detail: h.to_string(),
                });
            }
        }
        for a in actions {
            match a {
                Action::Spawn => {
                    let ev = self.spawn(i);
                    self.dispatch(i, ev, now);
                }
                Action::Signal { pgid, sig } => spawn::signal_group(pgid, sig),
                Action::ArmTimer(at) => {
                    if let Some(t) = self.members[i].timer.take() {
                        self.timers.cancel(t);
                    }
                    self.members[i].timer = Some(self.timers.insert(at, TimerKind::Member(i)));
                }
                Action::CancelTimer => {
                    if let Some(t) = self.members[i].timer.take() {
                        self.timers.cancel(t);
                    }
                }
                Action::Probe => self.start_probe(i, now),
                Action::FleetFailed(reason) => self.fail(reason, now),
            }
        }
        let m = &mut self.members[i];
        if matches!(m.child.state, State::Running { .. }) {
            m.was_up = true;
            self.arm_watchdog(i, now);
        } else {
            let m = &mut self.members[i];
            m.watchdog_due = None;
            if let Some(t) = m.watchdog_timer.take() {
                self.timers.cancel(t);
            }
        }
        if let Some(p) = i.checked_sub(self.npre) {
            self.tell_changes(i, ProgramId::at(p));
        }
        let m = &self.members[i];
        if !matches!(m.child.state, State::Starting { .. }) {
            self.drop_probe(i);
        }
    }

    /// Tells the siblings what changed of member `i` (program `id`) since it was last told.
    fn tell_changes(&mut self, i: usize, id: ProgramId) {
        let m = &self.members[i];
        let st = &m.child.state;
        let (state, up_since, restarts, pgid) =
            (st.name(), st.up_since(), m.child.restarts, m.child.pgid());
        let last_exit = m.child.last_exit.map(|e| e.to_string());
        let up = matches!(st, State::Running { .. }) && !m.prog.oneshot;
        let addr = m
            .prog
            .bind
            .as_ref()
            .filter(|_| up)
            .map(|b| b.connect_addr());
        let mut news = Vec::new();
        if let Some(s) = self.told.ships.get(id.index()) {
            if (s.state, s.up_since, s.restarts, s.pgid, &s.last_exit)
                != (state, up_since, restarts, pgid, &last_exit)
            {
                news.push(Message::Program {
                    id,
                    state,
                    up_since,
                    restarts,
                    pgid,
                    last_exit,
                });
            }
        }
        if addr.as_ref() != self.told.address(id) {
            news.push(match addr {
                Some(addr) => Message::BackendUp { id, addr },
                None => Message::BackendDown { id },
            });
        }
        for msg in news {
            self.told.apply(&msg);
            self.outbox.push(msg);
        }
    }

    fn spawn(&mut self, i: usize) -> Event {
        let m = &self.members[i];
        // `ready = "fd:N"`: a pipe whose write end the child gets as N.
        let ready_pipe = match m.prog.ready {
            Ready::Fd(n) => match spawn::cloexec_pipe() {
                Ok((r, w)) => Some((r, w, n)),
                Err(e) => {
                    return Event::SpawnFailed {
                        error: format!("cannot make its readiness pipe: {e}"),
                        permanent: false,
                    }
                }
            },
            _ => None,
        };
        let pass = ready_pipe.as_ref().map(|(_, w, n)| (w.as_raw_fd(), *n));
        let spawned = spawn::spawn(&m.prog.argv, &m.env, &m.prog.cwd, pass);
        match spawned {
            Ok(s) => {
                self.pids.insert(s.pid, i);
                if let Some(old) = self.members[i].ready_fd.take() {
                    // An earlier run's: what it says no longer counts.
                    self.drop_ready_fd(old);
                }
                if let Some((r, w, _)) = ready_pipe {
                    // Ours is closed: the pipe ends when the child's copies are gone.
                    drop(w);
                    if let Err(e) = self.add_ready_fd(i, r) {
                        log::error!(
                            "{}: cannot watch its readiness descriptor: {e}",
                            self.members[i].prog.name
                        );
                    }
                }
                // What an earlier run printed does not make this one ready.
                self.members[i].log_matched = false;
                if let Ready::Log(re) = &self.members[i].prog.ready {
                    self.members[i].log_wait = Some((re.clone(), [Vec::new(), Vec::new()]));
                }
                if let Some(r) = &mut self.record {
                    let m = &self.members[i];
                    r.spawned(s.pid, m.prog.grace_period, &m.prog.name);
                }
                for (fd, stream) in [
                    (OwnedFd::from(s.stdout), Stream::Stdout),
                    (OwnedFd::from(s.stderr), Stream::Stderr),
                ] {
                    if let Err(e) = self.add_pipe(i, fd, stream) {
                        log::error!(
                            "{}: cannot watch its output: {e}",
                            self.members[i].prog.name
                        );
                    }
                }
                Event::Spawned { pid: s.pid }
            }
            Err(e) => Event::SpawnFailed {
                permanent: matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied
                ),
                error: e.to_string(),
            },
        }
    }

    fn add_ready_fd(&mut self, member: usize, fd: OwnedFd) -> io::Result<()> {
        let file = File::from(fd);
        set_nonblocking(file.as_raw_fd())?;
        let raw = file.as_raw_fd();
        let token = self.sources.insert(Source::ReadyFd { member, file });
        let registered = self
            .registry
            .register(&mut SourceFd(&raw), token, Interest::READABLE);
        if let Err(e) = registered {
            self.sources.remove(token);
            return Err(e);
        }
        self.members[member].ready_fd = Some(token);
        Ok(())
    }

    /// Closes a readiness descriptor.
    fn drop_ready_fd(&mut self, token: Token) {
        if let Some(Source::ReadyFd { file, member }) = self.sources.remove(token) {
            let _ = self.registry.deregister(&mut SourceFd(&file.as_raw_fd()));
            if self.members[member].ready_fd == Some(token) {
                self.members[member].ready_fd = None;
            }
        }
    }

    fn add_pipe(&mut self, member: usize, fd: OwnedFd, stream: Stream) -> io::Result<()> {
        let file = File::from(fd);
        set_nonblocking(file.as_raw_fd())?;

        let token = self.sources.insert(Source::Pipe(Pipe {
            file,
            member,
            stream,
            asm: LineAssembler::default(),
            readable: true,
        }));
        let registered = match self.sources.get(token) {
            Some(Source::Pipe(p)) => self.registry.register(
                &mut SourceFd(&p.file.as_raw_fd()),
                token,
                Interest::READABLE,
            ),
            _ => Err(io::Error::other("pipe slot vanished")),
        };
        if let Err(e) = registered {
            // Closing our end makes the child's writes fail instead of blocking for ever.
            self.sources.remove(token);
            return Err(e);
        }
        self.members[member].pipes.push(token);
        Ok(())
    }

    fn start_probe(&mut self, i: usize, now: Instant) {
        self.drop_probe(i);
        let Some(bind) = self.members[i].prog.bind.as_ref().map(|b| b.connect_addr()) else {
            self.dispatch(i, Event::ProbeOk, now);
            return;
        };
        let target = match bind {
            BindAddr::Tcp(addr) => Target::Tcp(addr),
            BindAddr::Unix(path) => Target::Unix(path),
        };
        let Ok(probe) = Probe::start(&target, Check::Connect) else {
            self.dispatch(i, Event::ProbeFailed, now);
            return;
        };
        let token_slot = self.sources.insert(Source::Probe { member: i, probe });
        let reg = match self.sources.get_mut(token_slot) {
            Some(Source::Probe { probe, .. }) => probe.register(&self.registry, token_slot),
            _ => Err(io::Error::other("probe slot vanished")),
        };
        if reg.is_err() {
            self.sources.remove(token_slot);
            self.dispatch(i, Event::ProbeFailed, now);
            return;
        }
        self.members[i].probe = Some(token_slot);
    }

    /// Closes the readiness probe of program `i`, if one is in flight.
    fn drop_probe(&mut self, i: usize) {
        if let Some(t) = self.members[i].probe.take() {
            if let Some(Source::Probe { mut probe, .. }) = self.sources.remove(t) {
                probe.deregister(&self.registry);
            }
        }
    }

    fn source_ready(&mut self, token: Token, now: Instant) {
        match self.sources.get_mut(token) {
            Some(Source::Pipe(p)) => p.readable = true,
            #[cfg(target_os = "linux")]
            Some(Source::Notify { .. }) => self.read_notify(token, now),
            Some(Source::ReadyFd { member, file }) => {
                let member = *member;
                let mut buf = [0u8; 256];
                let mut ready = false;
                let over = loop {
                    match file.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(n) => {
                            if buf[..n].contains(&b'\n') {
                                ready = true;
                                break true;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                        Err(_) => break true,
                    }
                };
                if over {
                    self.drop_ready_fd(token);
                }
                let starting = matches!(self.members[member].child.state, State::Starting { .. });
                if ready && starting {
                    self.dispatch(member, Event::ProbeOk, now);
                }
            }
            Some(Source::Probe { member, probe }) => {
                let member = *member;
                let ok = match probe.drive() {
                    Progress::Pending => return,
                    Progress::Passed(_) => true,
                    Progress::Unreachable(_) | Progress::Failed(_) => false,
                };
                self.drop_probe(member);
                self.dispatch(
                    member,
                    if ok {
                        Event::ProbeOk
                    } else {
                        Event::ProbeFailed
                    },
                    now,
                );
            }
            None => {}
        }
    }

    /// Is a pipe known to have bytes to read (and is reading allowed)?
    fn pipes_ready(&self) -> bool {
        !self.paused
            && self
                .sources
                .any(|s| matches!(s, Source::Pipe(p) if p.readable))
    }

    /// Reads every readable pipe, up to a budget each, unless output is congested.
    fn read_pipes(&mut self, now: Instant) {
        if !self.pipes_ready() {
            return;
        }
        for t in self.sources.tokens() {
            if self.paused {
                break;
            }
            if matches!(self.sources.get(t), Some(Source::Pipe(p)) if p.readable) {
                self.read_pipe(t, READ_BUDGET);
            }
        }
        // A line of output declared a program ready (`ready = "log:..."`).
        for i in 0..self.members.len() {
            if std::mem::take(&mut self.members[i].log_matched) {
                self.members[i].log_wait = None;
                if matches!(self.members[i].child.state, State::Starting { .. }) {
                    self.dispatch(i, Event::ProbeOk, now);
                }
            }
        }
    }

    /// Reads one pipe until it would block, it ends, or `budget` bytes were read.
    fn read_pipe(&mut self, t: Token, budget: usize) {
        let mut total = 0;
        loop {
            if total >= budget {
                return;
            }
            if self.batch[0].len() + self.batch[1].len() >= 64 << 10 {
                self.flush_output();
            }
            // At the final drain what is left in the pipes is taken whatever the congestion
            // (bounded by FINAL_DRAIN per pipe): it is often a dying program's last words.
            let files_congested = self.files.as_ref().is_some_and(Files::congested);
            if !self.final_drain && (self.paused || self.out.congested() || files_congested) {
                self.paused = true;
                return;
            }
            let Some(Source::Pipe(p)) = self.sources.get_mut(t) else {
                return;
            };
            match p.file.read(&mut self.buf) {
                Ok(0) => {
                    let m = &mut self.members[p.member];
                    let si = stream_index(p.stream);
                    let (member, stream) = (p.member, p.stream);
                    {
                        let mut sink = line_sink(
                            &self.journal,
                            &self.files,
                            &mut self.file_bufs,
                            member,
                            stream,
                        );
                        p.asm.flush(&m.prefix[si], &mut self.batch[si], &mut sink);
                    }
                    self.close_pipe(t, member);
                    return;
                }
                Ok(n) => {
                    total += n;
                    let m = &mut self.members[p.member];
                    let si = stream_index(p.stream);
                    let (member, stream) = (p.member, p.stream);
                    let mut sink = line_sink(
                        &self.journal,
                        &self.files,
                        &mut self.file_bufs,
                        member,
                        stream,
                    );
                    p.asm.feed(
                        &self.buf[..n],
                        &m.prefix[si],
                        &mut self.batch[si],
                        &mut sink,
                    );
                    drop(sink);
                    if let Some((re, lines)) = &mut m.log_wait {
                        m.log_matched |= log_match(re, &mut lines[si], &self.buf[..n]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    p.readable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let member = p.member;
                    log::warn!(
                        "{}: reading its output failed: {e}",
                        self.members[member].prog.name
                    );
                    self.close_pipe(t, member);
                    return;
                }
            }
        }
    }

    fn close_pipe(&mut self, t: Token, member: usize) {
        if let Some(Source::Pipe(p)) = self.sources.remove(t) {
            let _ = self.registry.deregister(&mut SourceFd(&p.file.as_raw_fd()));
        }
        self.members[member].pipes.retain(|x| *x != t);
    }

    /// Hands buffered child output to the writer.
    pub fn flush_output(&mut self) {
        if let Some(f) = &self.files {
            for (i, b) in self.file_bufs.iter_mut().enumerate() {
                if !b.is_empty() {
                    f.push(i, std::mem::take(b));
                }
            }
        }
        // Lines are pushed in the order they were read; stdout and stderr are separate
        // streams, as they were for the child.
        for (si, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            if self.journal_only {
                self.batch[si].clear();
            } else if !self.batch[si].is_empty() {
                let data = std::mem::take(&mut self.batch[si]);
                self.out.push(stream, data);
            }
        }
    }

    /// Reaps every child that has exited, including orphans we never spawned.
    fn reap(&mut self, now: Instant) {
        let mut exited = Vec::new();
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid with a valid out-pointer.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let exit = if libc::WIFEXITED(status) {
                ExitInfo::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                ExitInfo::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            match self.pids.remove(&pid) {
                Some(i) => exited.push((i, pid, exit)),
                None => {
                    log::debug!("reaped pid {pid} ({exit}), not a program's");
                    // Maybe a sibling's (a health check's command): it is told.
                    self.outbox.push(Message::Reaped {
                        pid,
                        success: exit.success(),
                        what: exit.to_string(),
                    });
                }
            }
        }
        for (i, pid, exit) in exited {
            // Print what the process wrote before saying it ended.
            for t in self.members[i].pipes.clone() {
                self.read_pipe(t, READ_BUDGET);
            }
            self.flush_output();
            let group_alive = spawn::group_alive(pid);
            self.dispatch(i, Event::Exited { exit, group_alive }, now);
        }
        for i in 0..self.members.len() {
            if let State::Stopping {
                pid, leader: false, ..
            } = self.members[i].child.state
            {
                if !spawn::group_alive(pid) {
                    self.dispatch(i, Event::GroupGone, now);
                }
            }
        }
        if self.phase == Phase::Reaping && !has_children() {
            if let Some(t) = self.reap_timer.take() {
                self.timers.cancel(t);
            }
            self.phase = Phase::Done;
        }
    }

    /// Final drain of what children left in their pipes, then close everything.
    fn close_all(&mut self) {
        self.final_drain = true;
        for t in self.sources.tokens() {
            if let Some(Source::Pipe(_)) = self.sources.get(t) {
                self.read_pipe(t, FINAL_DRAIN);
                if let Some(Source::Pipe(p)) = self.sources.get_mut(t) {
                    let si = stream_index(p.stream);
                    let (member, stream) = (p.member, p.stream);
                    let mut sink = line_sink(
                        &self.journal,
                        &self.files,
                        &mut self.file_bufs,
                        member,
                        stream,
                    );
                    p.asm.flush(
                        &self.members[p.member].prefix[si],
                        &mut self.batch[si],
                        &mut sink,
                    );
                }
            }
        }
        self.flush_output();
    }
}

fn set_all(env: &mut Vec<(OsString, OsString)>, vars: &[(String, String)]) {
    for (k, v) in vars {
        match env.iter_mut().find(|(ek, _)| ek.as_os_str() == k.as_str()) {
            Some(slot) => slot.1 = v.into(),
            None => env.push((k.into(), v.into())),
        }
    }
}

pub fn set_nonblocking(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// PID 1 only: SIGKILL to every other process of the PID namespace.
fn kill_everything() {
    // SAFETY: as PID 1, -1 addresses every process of our PID namespace except us.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
    }
}

/// True while this process has any child (running or zombie).
fn has_children() -> bool {
    // SAFETY: waitid with WNOWAIT only queries and leaves any zombie in place; ECHILD
    // means there are no children at all.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    !(r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// Most bytes of one line kept while looking for a readiness line.
const LOG_LINE_MAX: usize = 4096;

/// Feeds `data` to the line being assembled in `line`; true when a whole line matches.
fn log_match(re: &regex::Regex, line: &mut Vec<u8>, data: &[u8]) -> bool {
    let mut found = false;
    for piece in data.split_inclusive(|&b| b == b'\n') {
        let room = LOG_LINE_MAX.saturating_sub(line.len());
        let (body, ends) = match piece.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (piece, false),
        };
        line.extend_from_slice(&body[..body.len().min(room)]);
        if ends {
            let text = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
            found |= re.is_match(&text);
            line.clear();
        }
    }
    found
}

/// Where each line a program writes goes besides mothership's output: the journal,
/// and its log file's buffer as `TIME out|err TEXT` (when it has a file). The time is
/// that of the read.
fn line_sink<'a>(
    journal: &'a RefCell<Journal>,
    files: &Option<Files>,
    bufs: &'a mut [Vec<u8>],
    member: usize,
    stream: Stream,
) -> impl FnMut(&[u8]) + 'a {
    let at_ms = journal::now_ms();
    let mut j = journal.borrow_mut();
    let has = files.as_ref().is_some_and(|f| f.path(member).is_some());
    let head = has.then(|| {
        let tag = match stream {
            Stream::Stdout => " out ",
            Stream::Stderr => " err ",
        };
        let mut h = crate::output::logger::rfc3339_ms(at_ms).into_bytes();
        h.extend_from_slice(tag.as_bytes());
        h
    });
    let buf = bufs.get_mut(member);
    let mut target = head.zip(buf);
    move |line: &[u8]| {
        j.push(member, at_ms, stream, line);
        if let Some((h, b)) = &mut target {
            b.extend_from_slice(h);
            b.extend_from_slice(line);
            b.push(b'\n');
        }
    }
}

/// Where program `name`'s notification socket lives.
fn notify_path(socket_dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    socket_dir.join(format!("{name}.notify"))
}
