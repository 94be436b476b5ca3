//! The composition root: one `mio` loop that owns the subsystems as siblings (the
//! supervisor, the HTTP edge with its metrics listener; later bays, the control socket and
//! probes) and routes what passes between them. Neither subsystem knows the other.
//!
//! Every subsystem shows the loop the same surface, [`Subsystem`]: register with the
//! loop, handle a ready token, finish a turn, handle due timers, say when its next timer
//! is due, and hand over the [`Message`]s it has for its siblings. The root takes those
//! after each call into a subsystem and hands them on at once: to the fleet view it keeps
//! (which the edge routes and reports with) and to every subsystem (`hear`). So a stop signal closes the listeners
//! before the edge's events of the same turn, and a program that comes up is routed to in
//! the turn it came up.
//!
//! Tokens: the supervisor's (signals, the waker, child pipes and probes) lie below
//! [`EDGE_TOKENS`], the edge's above it. The supervisor also decides when the loop ends
//! and how landing waits for the edge: those calls stay its own.

use std::io;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Registry};

use crate::control::Control;
use crate::fleet::{FleetView, Message};
use crate::health::Checks;
use crate::hooks::Hooks;
use crate::manifest::Manifest;
use crate::output::Output;
use crate::proxy::Edge;
use crate::reactor::deadline::after;
use crate::reactor::{CONTROL_TOKENS, EDGE_TOKENS, HEALTH_TOKENS, HOOK_TOKENS, TUI_TOKENS};
use crate::supervisor::notify::Notifier;
use crate::supervisor::{leftovers, Outcome, Style, Supervisor};
#[cfg(feature = "tui")]
use crate::tui::local::Local;

/// What a subsystem is given on every call from the loop.
pub struct Turn<'a> {
    pub registry: &'a Registry,
    /// The fleet as the messages so far describe it.
    pub fleet: &'a FleetView,
    pub now: Instant,
}

/// The surface every subsystem shows the loop.
pub trait Subsystem {
    /// Registers what it has open with the loop, once, before the first poll (what it
    /// opens later it registers itself, through the registry it is given on each call).
    fn register(&mut self, registry: &Registry) -> io::Result<()>;
    /// One of its tokens is ready.
    fn ready(&mut self, ev: &Event, t: &Turn);
    /// The events of the turn have been handled: work kept for the end of a turn.
    fn turn_end(&mut self, t: &Turn);
    /// Handles the timers that are due.
    fn timers_due(&mut self, t: &Turn);
    /// When its next timer is due.
    fn next_deadline(&mut self) -> Option<Instant>;
    /// A message from a sibling.
    fn hear(&mut self, msg: &Message, t: &Turn);
    /// Its messages for the others since the last call.
    fn take_messages(&mut self, out: &mut Vec<Message>);
}

impl Subsystem for Supervisor {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        Supervisor::register(self, registry)
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Supervisor::ready(self, ev.token(), t.now);
    }
    fn turn_end(&mut self, t: &Turn) {
        self.after_events(t.now);
    }
    fn timers_due(&mut self, t: &Turn) {
        Supervisor::timers_due(self, t.now);
    }
    fn next_deadline(&mut self) -> Option<Instant> {
        Supervisor::next_deadline(self)
    }
    fn hear(&mut self, msg: &Message, t: &Turn) {
        Supervisor::hear(self, msg, t.now);
    }
    fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut Supervisor::take_messages(self));
    }
}

impl Subsystem for Edge {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        Edge::register(self, registry)
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Edge::ready(self, ev, t.registry, t.fleet, t.now);
    }
    fn turn_end(&mut self, t: &Turn) {
        self.tick(t.registry, t.fleet, t.now);
    }
    // The edge's timers are handled at the end of its turn (`tick`).
    fn timers_due(&mut self, _: &Turn) {}
    fn next_deadline(&mut self) -> Option<Instant> {
        Edge::next_deadline(self)
    }
    fn hear(&mut self, msg: &Message, t: &Turn) {
        Edge::hear(self, msg, t.registry);
    }
    fn take_messages(&mut self, out: &mut Vec<Message>) {
        Edge::take_messages(self, out);
    }
}

impl Subsystem for Checks {
    // Its probes register as they start.
    fn register(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Checks::ready(self, ev.token(), t.registry, t.now);
    }
    fn turn_end(&mut self, _: &Turn) {}
    fn timers_due(&mut self, t: &Turn) {
        Checks::timers_due(self, t.registry, t.now);
    }
    fn next_deadline(&mut self) -> Option<Instant> {
        Checks::next_deadline(self)
    }
    fn hear(&mut self, msg: &Message, t: &Turn) {
        Checks::hear(self, msg, t.registry, t.now);
    }
    fn take_messages(&mut self, out: &mut Vec<Message>) {
        Checks::take_messages(self, out);
    }
}

impl Subsystem for Control {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        Control::register(self, registry)
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Control::ready(self, ev.token(), t.registry, t.fleet, t.now);
    }
    fn turn_end(&mut self, t: &Turn) {
        Control::turn_end(self, t.registry, t.fleet, t.now);
    }
    fn timers_due(&mut self, _: &Turn) {}
    fn next_deadline(&mut self) -> Option<Instant> {
        Control::next_deadline(self, Instant::now())
    }
    fn hear(&mut self, msg: &Message, t: &Turn) {
        Control::hear(self, msg, t.fleet);
    }
    fn take_messages(&mut self, out: &mut Vec<Message>) {
        Control::take_messages(self, out);
    }
}

impl Subsystem for Hooks {
    // Its pipes and connection register as they open.
    fn register(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Hooks::ready(self, ev.token(), t.registry, t.now);
    }
    fn turn_end(&mut self, t: &Turn) {
        Hooks::turn_end(self, t.registry, t.now);
    }
    fn timers_due(&mut self, t: &Turn) {
        Hooks::timers_due(self, t.registry, t.now);
    }
    fn next_deadline(&mut self) -> Option<Instant> {
        Hooks::next_deadline(self)
    }
    fn hear(&mut self, msg: &Message, t: &Turn) {
        Hooks::hear(self, msg, t.fleet, t.registry, t.now);
    }
    fn take_messages(&mut self, _: &mut Vec<Message>) {}
}

#[cfg(feature = "tui")]
impl Subsystem for Local {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        Local::register(self, registry)
    }
    fn ready(&mut self, ev: &Event, t: &Turn) {
        Local::ready(self, ev.token(), t.registry, t.fleet);
    }
    fn turn_end(&mut self, t: &Turn) {
        Local::turn_end(self, t.fleet, t.now);
    }
    fn timers_due(&mut self, t: &Turn) {
        Local::timers_due(self, t.fleet, t.now);
    }
    fn next_deadline(&mut self) -> Option<Instant> {
        Local::next_deadline(self)
    }
    fn hear(&mut self, msg: &Message, _: &Turn) {
        Local::hear(self, msg);
    }
    fn take_messages(&mut self, out: &mut Vec<Message>) {
        Local::take_messages(self, out);
    }
}

/// The subsystems and the fleet view the root keeps from their messages.
struct Fleet {
    sup: Supervisor,
    checks: Option<Checks>,
    edge: Option<Edge>,
    control: Option<Control>,
    hooks: Option<Hooks>,
    #[cfg(feature = "tui")]
    tui: Option<Local>,
    view: FleetView,
    mail: Vec<Message>,
}

impl Fleet {
    /// The subsystems in the order they are called (those not running are `None`), and
    /// the view they are given.
    fn parts(&mut self) -> ([Option<&mut dyn Subsystem>; 6], &mut FleetView) {
        let sup: &mut dyn Subsystem = &mut self.sup;
        let checks = self.checks.as_mut().map(|c| c as &mut dyn Subsystem);
        let edge = self.edge.as_mut().map(|e| e as &mut dyn Subsystem);
        let control = self.control.as_mut().map(|c| c as &mut dyn Subsystem);
        let hooks = self.hooks.as_mut().map(|h| h as &mut dyn Subsystem);
        #[cfg(feature = "tui")]
        let tui = self.tui.as_mut().map(|t| t as &mut dyn Subsystem);
        #[cfg(not(feature = "tui"))]
        let tui = None;
        (
            [Some(sup), checks, edge, control, hooks, tui],
            &mut self.view,
        )
    }

    /// Hands on what the subsystems have said, until none has more to say (hearing one
    /// message may make another: a health check's verdict makes a program ready, which
    /// is news for the edge); true when it included the end of serving (the supervisor
    /// then needs the edge's count of requests in flight at once).
    fn route(&mut self, registry: &Registry, now: Instant) -> bool {
        let mut mail = std::mem::take(&mut self.mail);
        let mut stop = false;
        // A bound against two subsystems answering each other for ever.
        for _ in 0..64 {
            let (mut all, view) = self.parts();
            for s in all.iter_mut().flatten() {
                s.take_messages(&mut mail);
            }
            if mail.is_empty() {
                break;
            }
            stop |= mail
                .iter()
                .any(|m| matches!(m, Message::StopServing { .. }));
            for msg in mail.drain(..) {
                view.apply(&msg);
                let t = Turn {
                    registry,
                    fleet: view,
                    now,
                };
                for s in all.iter_mut().flatten() {
                    s.hear(&msg, &t);
                }
            }
        }
        mail.clear();
        self.mail = mail;
        stop
    }

    /// Calls `f` on each subsystem in turn, routing messages after each.
    fn each(&mut self, registry: &Registry, now: Instant, f: impl Fn(&mut dyn Subsystem, &Turn)) {
        for i in 0..6 {
            let (mut all, view) = self.parts();
            let Some(s) = all[i].as_mut() else { continue };
            let t = Turn {
                registry,
                fleet: view,
                now,
            };
            f(&mut **s, &t);
            self.route(registry, now);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let (all, _) = self.parts();
        all.into_iter()
            .flatten()
            .filter_map(|s| s.next_deadline())
            .min()
    }
}

/// Sets up the loop, the supervisor and the edge for `m` (already filtered by tags), then
/// runs the fleet until it lands. `Err`: the loop could not be set up (nothing started).
#[allow(clippy::too_many_arguments)]
pub fn run(
    m: &Manifest,
    payloads: crate::payload::Payloads,
    control: Option<Control>,
    out: Output,
    style: Style,
    socket_dir: &std::path::Path,
    record: Option<leftovers::Record>,
    notifier: Notifier,
    dashboard: bool,
) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    // Bays dock with the edge, which terminates their clients' WebSocket.
    let bays = m
        .programs
        .iter()
        .any(|p| matches!(p.role, crate::manifest::Role::Bay { .. }));
    let serving = !m.binds.is_empty() || m.metrics_port.is_some() || bays;
    // Signals are caught from here on.
    let mut sup = Supervisor::new(m, out, style, socket_dir, record, poll.registry(), serving)?;
    Subsystem::register(&mut sup, poll.registry())?;
    sup.notify_with(notifier);
    let mut edge = None;
    if serving {
        let mut e = Edge::new(m, socket_dir, payloads)?;
        Subsystem::register(&mut e, poll.registry())?;
        for b in &m.binds {
            log::info!("listening on {} ({})", b.addr, b.name);
        }
        if let Some(p) = m.metrics_port {
            log::info!("metrics on http://127.0.0.1:{p}/metrics");
        }
        edge = Some(e);
    }
    let checks = Some(Checks::new(&m.programs, Instant::now())).filter(|c| !c.is_empty());
    let extras = edge.as_mut().map(Edge::share_extras);
    if let (Some(e), Some(c)) = (edge.as_mut(), sup.log_lines_lost()) {
        e.count_log_lines_lost(c);
    }
    let mut control = control;
    if let Some(c) = &mut control {
        c.attach(sup.journal());
        c.attach_files(crate::control::LogPaths {
            paths: m
                .prelaunch
                .iter()
                .chain(&m.programs)
                .map(|p| p.log_file.clone())
                .collect(),
            keep: m.log_files.keep,
        });
        if let Some(e) = &extras {
            c.attach_extras(e.clone());
        }
        Subsystem::register(c, poll.registry())?;
    }
    #[cfg(feature = "tui")]
    let tui = match dashboard {
        true => {
            let mut t = Local::new(sup.journal())?;
            // Its own lines to `mothership.log` in `log_dir`, unless a program has it.
            if let Some(dir) = &m.log_files.dir {
                let path = dir.join("mothership.log");
                let taken = m
                    .prelaunch
                    .iter()
                    .chain(&m.programs)
                    .any(|p| p.log_file.as_ref() == Some(&path));
                if !taken {
                    t.own_lines_to(path, &m.log_files);
                }
            }
            if let Some(e) = &extras {
                t.attach_extras(e.clone());
            }
            Subsystem::register(&mut t, poll.registry())?;
            Some(t)
        }
        false => None,
    };
    #[cfg(not(feature = "tui"))]
    let _ = dashboard;
    let mut f = Fleet {
        #[cfg(feature = "tui")]
        tui,
        sup,
        checks,
        edge,
        control,
        hooks: Hooks::new(&m.events, &m.dir),
        view: FleetView::new(&m.programs, Instant::now()),
        mail: Vec::new(),
    };
    f.sup.start(Instant::now());
    f.route(poll.registry(), Instant::now());
    let mut events = Events::with_capacity(256);
    // Once the fleet has landed: until when hook commands and a webhook delivery under
    // way may finish.
    let mut linger: Option<Instant> = None;
    loop {
        let now = Instant::now();
        // Counted only while landing waits for it: a scan of every connection.
        let busy = match &f.edge {
            Some(e) if f.sup.draining() => e.busy(),
            _ => 0,
        };
        f.sup.advance(now, busy);
        if f.route(poll.registry(), now) {
            // The edge has stopped taking requests: landing sees its count at once.
            continue;
        }
        f.sup.flush_output();
        if f.sup.done() {
            // The hooks told of the landing (or of what came before) may finish first,
            // within their time limits.
            let busy = f.hooks.as_ref().is_some_and(Hooks::busy);
            let until = *linger.get_or_insert_with(|| {
                after(now, f.hooks.as_ref().map_or(Duration::ZERO, Hooks::linger))
            });
            if !busy || now >= until {
                break;
            }
        }
        let timeout = if f.sup.has_work() {
            Some(Duration::ZERO)
        } else {
            let next = f.next_deadline();
            let next = match linger {
                Some(l) => Some(next.map_or(l, |n| n.min(l))),
                None => next,
            };
            next.map(|d| d.saturating_duration_since(now))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted && f.sup.poll_failed(&e, Instant::now()) {
                break;
            }
            f.route(poll.registry(), Instant::now());
            continue;
        }
        f.sup.poll_ok();
        let now = Instant::now();
        let registry = poll.registry();
        for ev in events.iter() {
            let t = Turn {
                registry,
                fleet: &f.view,
                now,
            };
            // Tokens by range: the edge's, the health checks', the supervisor's.
            let tok = ev.token().0;
            if tok >= EDGE_TOKENS {
                if let Some(e) = &mut f.edge {
                    Subsystem::ready(e, ev, &t);
                }
            } else if tok >= HEALTH_TOKENS {
                if let Some(c) = &mut f.checks {
                    Subsystem::ready(c, ev, &t);
                }
            } else if tok >= CONTROL_TOKENS {
                if let Some(c) = &mut f.control {
                    Subsystem::ready(c, ev, &t);
                }
            } else if tok >= HOOK_TOKENS {
                if let Some(h) = &mut f.hooks {
                    Subsystem::ready(h, ev, &t);
                }
            } else if tok >= TUI_TOKENS {
                #[cfg(feature = "tui")]
                if let Some(d) = &mut f.tui {
                    Subsystem::ready(d, ev, &t);
                }
            } else {
                Subsystem::ready(&mut f.sup, ev, &t);
            }
            f.route(registry, now);
        }
        f.each(registry, now, |s, t| s.turn_end(t));
        f.each(registry, now, |s, t| s.timers_due(t));
    }
    if let Some(h) = &mut f.hooks {
        h.kill_all();
    }
    // (The control socket's file goes when the server is dropped, with the fleet.)
    Ok(f.sup.finish())
}
