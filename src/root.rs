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

use crate::fleet::{FleetView, Message};
use crate::manifest::Manifest;
use crate::output::Output;
use crate::proxy::Edge;
use crate::reactor::EDGE_TOKENS;
use crate::supervisor::{leftovers, Outcome, Style, Supervisor};

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
    fn hear(&mut self, _: &Message, _: &Turn) {}
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
    fn take_messages(&mut self, _: &mut Vec<Message>) {}
}

/// The subsystems and the fleet view the root keeps from their messages.
struct Fleet {
    sup: Supervisor,
    edge: Option<Edge>,
    view: FleetView,
    mail: Vec<Message>,
}

impl Fleet {
    /// Hands on what the subsystems have said; true when it included the end of serving
    /// (the supervisor then needs the edge's count of requests in flight at once).
    fn route(&mut self, registry: &Registry, now: Instant) -> bool {
        Subsystem::take_messages(&mut self.sup, &mut self.mail);
        if let Some(e) = &mut self.edge {
            Subsystem::take_messages(e, &mut self.mail);
        }
        if self.mail.is_empty() {
            return false;
        }
        let stop = self
            .mail
            .iter()
            .any(|m| matches!(m, Message::StopServing { .. }));
        // Hearing a message never makes another (the edge only listens), so the mail is
        // read once.
        let mail = std::mem::take(&mut self.mail);
        for msg in &mail {
            self.view.apply(msg);
            let t = Turn {
                registry,
                fleet: &self.view,
                now,
            };
            self.sup.hear(msg, &t);
            if let Some(e) = &mut self.edge {
                Subsystem::hear(e, msg, &t);
            }
        }
        self.mail = mail;
        self.mail.clear();
        stop
    }

    /// Calls `f` on each subsystem in turn, routing messages after each.
    fn each(&mut self, registry: &Registry, now: Instant, f: impl Fn(&mut dyn Subsystem, &Turn)) {
        let t = Turn {
            registry,
            fleet: &self.view,
            now,
        };
        f(&mut self.sup, &t);
        self.route(registry, now);
        if let Some(e) = &mut self.edge {
            let t = Turn {
                registry,
                fleet: &self.view,
                now,
            };
            f(e, &t);
            self.route(registry, now);
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let own = Subsystem::next_deadline(&mut self.sup);
        let theirs = self.edge.as_mut().and_then(Subsystem::next_deadline);
        match (own, theirs) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Sets up the loop, the supervisor and the edge for `m` (already filtered by tags), then
/// runs the fleet until it lands. `Err`: the loop could not be set up (nothing started).
pub fn run(
    m: &Manifest,
    out: Output,
    style: Style,
    socket_dir: &std::path::Path,
    record: Option<leftovers::Record>,
) -> io::Result<Outcome> {
    let mut poll = Poll::new()?;
    let serving = !m.binds.is_empty() || m.metrics_port.is_some();
    // Signals are caught from here on.
    let mut sup = Supervisor::new(m, out, style, socket_dir, record, poll.registry(), serving)?;
    Subsystem::register(&mut sup, poll.registry())?;
    let mut edge = None;
    if serving {
        let mut e = Edge::new(m)?;
        Subsystem::register(&mut e, poll.registry())?;
        for b in &m.binds {
            log::info!("listening on {} ({})", b.addr, b.name);
        }
        if let Some(p) = m.metrics_port {
            log::info!("metrics on http://127.0.0.1:{p}/metrics");
        }
        edge = Some(e);
    }
    let mut f = Fleet {
        sup,
        edge,
        view: FleetView::new(&m.programs, Instant::now()),
        mail: Vec::new(),
    };
    f.sup.start(Instant::now());
    f.route(poll.registry(), Instant::now());
    let mut events = Events::with_capacity(256);
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
            break;
        }
        let timeout = if f.sup.has_work() {
            Some(Duration::ZERO)
        } else {
            f.next_deadline().map(|d| d.saturating_duration_since(now))
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
            if ev.token().0 >= EDGE_TOKENS {
                if let Some(e) = &mut f.edge {
                    Subsystem::ready(e, ev, &t);
                }
            } else {
                Subsystem::ready(&mut f.sup, ev, &t);
            }
            f.route(registry, now);
        }
        f.each(registry, now, |s, t| s.turn_end(t));
        f.each(registry, now, |s, t| s.timers_due(t));
    }
    Ok(f.sup.finish())
}
