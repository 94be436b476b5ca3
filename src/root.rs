//! The composition root: one `mio` loop that owns the subsystems as siblings (the
//! supervisor, the HTTP edge with its metrics listener; later bays, the control socket and
//! probes) and routes what passes between them. Neither subsystem knows the other: the
//! supervisor's view of the fleet is lent to the edge for each event, the edge's count of
//! requests in flight is handed to the supervisor each turn, and the supervisor's requests
//! come out as [`Note`]s that the root carries out.
//!
//! Tokens: the supervisor's (signals, the waker, child pipes and probes) lie below
//! [`EDGE_TOKENS`], the edge's above it.

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Poll};

use crate::manifest::Manifest;
use crate::output::Output;
use crate::proxy::Edge;
use crate::reactor::EDGE_TOKENS;
use crate::supervisor::{leftovers, Note, Outcome, Style, Supervisor};

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
    let mut edge = None;
    if serving {
        let mut e = Edge::new(m)?;
        e.register(poll.registry())?;
        for b in &m.binds {
            log::info!("listening on {} ({})", b.addr, b.name);
        }
        if let Some(p) = m.metrics_port {
            log::info!("metrics on http://127.0.0.1:{p}/metrics");
        }
        edge = Some(e);
    }
    sup.start(Instant::now());
    let mut events = Events::with_capacity(256);
    loop {
        let now = Instant::now();
        // Counted only while landing waits for it: a scan of every connection.
        let busy = match &edge {
            Some(e) if sup.draining() => e.busy(),
            _ => 0,
        };
        sup.advance(now, busy);
        if carry_out(&mut sup, edge.as_mut(), &poll) {
            // The supervisor sees the outcome at once.
            continue;
        }
        sup.flush_output();
        if sup.done() {
            break;
        }
        let timeout = if sup.has_work() {
            Some(Duration::ZERO)
        } else {
            let own = sup.next_deadline();
            let theirs = edge.as_mut().and_then(Edge::next_deadline);
            let next = match (own, theirs) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            next.map(|d| d.saturating_duration_since(now))
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted && sup.poll_failed(&e, Instant::now()) {
                break;
            }
            continue;
        }
        sup.poll_ok();
        let now = Instant::now();
        for ev in events.iter() {
            if ev.token().0 >= EDGE_TOKENS {
                if let Some(e) = &mut edge {
                    e.ready(ev, poll.registry(), sup.fleet(), now);
                }
            } else {
                sup.ready(ev.token(), now);
                // A stop signal closes the listeners before the edge's events of this turn.
                carry_out(&mut sup, edge.as_mut(), &poll);
            }
        }
        sup.after_events(now);
        if let Some(e) = &mut edge {
            e.tick(poll.registry(), sup.fleet(), now);
        }
        sup.timers_due(now);
        carry_out(&mut sup, edge.as_mut(), &poll);
    }
    Ok(sup.finish())
}

/// Carries out what the supervisor asked of the root; true when it asked anything.
fn carry_out(sup: &mut Supervisor, mut edge: Option<&mut Edge>, poll: &Poll) -> bool {
    let notes = sup.take_notes();
    let any = !notes.is_empty();
    for note in notes {
        match note {
            Note::StopServing { grace } => {
                if let Some(e) = edge.as_deref_mut() {
                    e.drain(poll.registry());
                    let busy = e.busy();
                    if busy > 0 {
                        log::info!("draining: listeners closed; waiting up to {grace:?} for {busy} request(s) in flight");
                    }
                }
            }
        }
    }
    any
}
