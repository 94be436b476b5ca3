//! The HTTP edge: listeners of `[mothership.bind]`, one state machine per client
//! connection, routing to the ships' binds, keep-alive pools of upstream connections, and
//! WebSocket (any `Upgrade`) tunnels. Driven by the supervisor's loop; bytes are parsed by
//! `proto`, never here.
//!
//! Lifecycle of a connection: `Head` (read a request head) -> `Exchange` (request body to
//! the upstream, response back, both streamed through bounded buffers) -> `Head` again on
//! keep-alive, or `Tunnel` after a `101`, or `Closing` (write what is left, then close).

mod access_log;
mod answers;
mod bay_http;
mod bays;
pub mod buffers;
pub mod compress;
pub mod cors;
mod exchange;
mod files;
mod ids;
mod listen;
pub mod metrics;
mod pipeline;
mod pool;
pub mod ratelimit;
mod rewrite;
pub mod router;
mod session;
pub mod static_files;
pub mod status;
pub mod stream;
mod tunnel;
mod watch;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Interest, Registry};

use crate::fleet::{FleetView, Message};
use crate::health::breaker::{self, Breaker};
use crate::manifest::ids::{BindId, ProgramId, RouteId};
use crate::manifest::{BindAddr, Cidr, HttpSettings, Manifest, ProxyProtocol};
use crate::proto::http::{self, Body, Limits, RequestHead, ResponseHead};
use crate::proto::proxy_protocol;
use crate::proto::ws;
use crate::reactor::deadline::after as deadline;
use crate::reactor::{DeadlineQueue, TimerId};
use answers::*;
use buffers::{Buf, BufPool, BUF};
use exchange::{Ctx, Exchange, ReqBody, Resp, Step, Wire};
use files::*;
use ids::{token, untoken, ConnId, Generations};
use metrics::{Stats, UpstreamError};
use pipeline::Wait;
use ratelimit::RateLimiter;
use rewrite::*;
pub use rewrite::{client_head, upstream_head, ClientSide};
use router::Router;
use session::*;
use stream::{Listener, Stream};

/// Tokens at or above this belong to the edge.
const KIND_LISTENER: usize = 0;
const KIND_CLIENT: usize = 1;
const KIND_UPSTREAM: usize = 2;
const KIND_DOCK: usize = 3;
/// A closing connection reads and drops at most this much of what the client still sends,
/// for at most `LINGER_TIME` of silence.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const TEXT: &str = "text/plain; charset=utf-8";
/// Idle upstream connections kept per backend.
const MAX_IDLE: usize = 1024;
/// Connections accepted per listener in one turn of the loop: a connect storm must not
/// starve signals, child output and the connections already open. The rest of the backlog
/// is taken on the next turns (the poll does not wait while some is left).
const ACCEPTS_PER_TURN: usize = 64;
/// `/metrics` serves a resource sample of the fleet up to this old.
const SAMPLE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

struct Bound {
    listener: Listener,
    /// Generation of this listener in its slot (see `ids`).
    gen: u32,
    bind: BindId,
    open: bool,
    proxy: ProxyProtocol,
    /// Peers whose PROXY header is honoured.
    proxy_from: Vec<Cidr>,
}

/// What a connection on a PROXY-protocol bind must still settle before its first request.
#[derive(Clone, Copy, Debug)]
struct ProxyCheck {
    /// The peer is in `proxy_protocol_from`: its header is honoured.
    trusted: bool,
    /// `proxy_protocol = "required"`: no header, no service.
    required: bool,
}

struct Up {
    /// Upstream id: its token is `token(KIND_UPSTREAM, id, gen)` for its whole life,
    /// pooled or not, so moving it in and out of the pool costs no system call.
    id: usize,
    gen: u32,
    stream: Stream,
    addr: BindAddr,
    /// Taken from the pool (it may have been closed by the backend meanwhile).
    reused: bool,
    key: Rc<str>,
    /// When the connect started (for the connect timeout).
    since: Instant,
    readable: bool,
    writable: bool,
    hup: bool,
    /// Writing to the backend failed; reading goes on until it ends.
    write_failed: bool,
    connected: bool,
    eof: bool,
    uin: Buf,
    uout: Buf,
}

/// The request in progress on a connection, for metrics and logs; accounted once, when it
/// ends (or when its connection goes away first).
struct ReqStat {
    /// Index in `Stats::routes`.
    route: usize,
    started: Instant,
    /// Status sent (0: none yet).
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    /// What the request logs need, when one is on.
    rec: Option<Box<Record>>,
}

/// One request, for the access log and the debug request log.
struct Record {
    /// `GET /path HTTP/1.1`
    line: String,
    backend: String,
    ua: &'static str,
    /// Computed only when the debug request log is on.
    ja4h: Option<String>,
}

/// Where a client connection is; what a phase alone needs lives in it.
enum Phase {
    /// Waiting for, or reading, a request head.
    Head(Reading),
    /// A request forwarded to a backend and its answer coming back.
    Exchange(Box<Exchange>),
    /// Sending a static file.
    File(Box<FileSend>),
    /// An upgraded connection: bytes both ways until each side has closed.
    Tunnel { client_shut: bool, up_shut: bool },
    /// A WebSocket client of a bay (`bays.rs`).
    Socket(Box<bays::WsConn>),
    /// A request to an HTTP bay and its answer (`bay_http.rs`).
    BayHttp(Box<bay_http::BayEx>),
    /// A routed request waiting for its ship to come up.
    Held(Box<Held>),
    /// Answered or failed: the connection closes once its answer is out. Also what a
    /// connection is while a step has its phase out: a step that hands on no phase and
    /// keeps none closes the connection.
    Closing {
        /// Our side is shut: bytes read from the client and dropped so far.
        linger: Option<usize>,
    },
}

/// The state of reading a request head.
#[derive(Default)]
struct Reading {
    /// A PROXY protocol header may still come first (only before the first request).
    proxy: Option<ProxyCheck>,
    /// How far the search for the end of the head in `cin` got.
    scan: usize,
    /// When the first byte of the head arrived.
    since: Option<Instant>,
}

impl Phase {
    /// Waiting for the next request.
    fn head() -> Phase {
        Phase::Head(Reading::default())
    }

    /// Closing once the answer is out.
    const CLOSING: Phase = Phase::Closing { linger: None };
}

/// What a step of the exchange did.
enum Turned {
    /// The exchange goes on; `moved`: bytes moved or the upstream changed.
    Stays { moved: bool },
    /// It is over: the connection has its next phase (or is dead).
    Over,
}

struct Conn {
    /// Generation of this occupant of its slot (see `ids`).
    gen: u32,
    client: Stream,
    peer: String,
    bind: BindId,
    c_readable: bool,
    c_writable: bool,
    c_eof: bool,
    cin: Buf,
    cout: Buf,
    up: Option<Up>,
    phase: Phase,
    dead: bool,
    /// A request head has been received on this connection (until then, the connection
    /// has `header_timeout` from `opened`, not `keepalive_timeout`).
    served: bool,
    /// When it was accepted.
    opened: Instant,
    /// The client's side may have closed (read until end of stream).
    c_hup: bool,
    /// Last time bytes moved on this connection.
    activity: Instant,
    /// The armed timer and when it fires.
    timer: Option<(TimerId, Instant)>,
    /// The request being answered.
    stat: Option<ReqStat>,
    /// The ship whose slot (of its `maxconn`) this connection's exchange holds.
    slot: Option<ProgramId>,
}

struct Idle {
    up: Up,
    timer: TimerId,
}

/// A request parked until its ship is up (its head stays in the client buffer).
struct Held {
    req: RequestHead,
    target: ProgramId,
    strip: Option<String>,
    cors_key: Option<String>,
    since: Instant,
    /// In line for one of the ship's `maxconn` slots (else: waiting for it to come up).
    queued: bool,
}

/// Who an upstream id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Free,
    Conn(usize),
    Idle,
}

#[derive(Clone, Copy, Debug)]
enum TimerKey {
    Conn(usize),
    Idle(usize),
    /// A bay's retry or settle timer.
    BayLink(usize),
    /// The end of the wait of a bay's clients for it to dock again.
    BayResume(usize),
}

pub struct Edge {
    /// Shared with the control socket and the dashboard once asked for, and when last
    /// refreshed.
    extras: Option<status::SharedExtras>,
    extras_at: Instant,
    /// Lines lost to the programs' log files (the supervisor's writer counts them).
    log_lines_lost: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    listeners: Vec<Bound>,
    router: Router,
    names: Vec<String>,
    limits: Limits,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    idle: Vec<Option<Idle>>,
    /// Owner of each upstream id; `idle` holds pooled upstreams by the same id.
    up_owner: Vec<Owner>,
    up_free: Vec<usize>,
    /// Idle upstreams per backend, oldest first.
    pool: pool::IdleLists,
    /// Per program: its backend address and that address as a pool key, made once rather
    /// than formatted for every request.
    keys: Vec<Option<(BindAddr, Rc<str>)>>,
    draining: bool,
    settings: HttpSettings,
    timers: DeadlineQueue<TimerKey>,
    /// The loop's current time, set on every entry from the loop.
    now: Instant,
    open: usize,
    accept_paused: bool,
    /// Connections that stopped for fairness with work left: driven again next turn.
    pending: Vec<ConnId>,
    /// Listeners with connections left in their backlog after `ACCEPTS_PER_TURN`: taken
    /// on at the end of the next turn (`accept_due`), not of this one.
    accept_more: Vec<ConnId>,
    accept_due: Vec<ConnId>,
    /// Connections whose request waits for its ship to come up.
    held: Vec<ConnId>,
    /// News about the fleet arrived since the held requests were last looked at.
    held_news: bool,
    /// `held` is pruned when it grows to this length.
    held_prune_at: usize,
    /// Per program: requests held for it now (bounded by `hold_queue`).
    held_for: Vec<usize>,
    /// Per program: its circuit breaker, and its transitions so far by the state they
    /// went to (closed, open, half-open).
    breakers: Vec<Breaker>,
    breaker_moves: Vec<[u64; 3]>,
    /// Per program: exchanges in flight to it, its `maxconn`, the requests in line for a
    /// slot (oldest first; entries of those gone are skipped), how many are in line now,
    /// and how long those that left the line waited.
    active: Vec<u32>,
    maxconn: Vec<Option<u32>>,
    queue: Vec<std::collections::VecDeque<ConnId>>,
    queued_now: Vec<usize>,
    queue_waits: Vec<metrics::Waits>,
    /// Programs a slot came free for during this turn.
    slots_freed: Vec<ProgramId>,
    /// `forward` is sending on a request from the line (it does not join the line again).
    from_queue: bool,
    /// Per program: it has a bind (a request to it can wait for it to come up).
    has_bind: Vec<bool>,
    /// Connections whose whole request went out on a reused upstream during this turn:
    /// that upstream is read once at the end of the turn (see `tick`).
    awaiting: Vec<ConnId>,
    /// Generations for new connections and upstreams.
    gens: Generations,
    /// Read buffer shared by all connections (bytes are copied to their own buffers).
    scratch: Vec<u8>,
    /// Connection buffers not in use (see `buffers`).
    bufs: BufPool,
    stats: Stats,
    limiter: Option<RateLimiter>,
    cors: Option<cors::Cache>,
    statics: static_files::Statics,
    compression: bool,
    /// Compression encoders alive at once.
    encoders: compress::Budget,
    /// The last resource sample of the fleet, served by `/metrics` until it is older than
    /// `SAMPLE_MAX_AGE`.
    sample: crate::fleet::resources::Cached,
    /// Stats index of the first static mount (they follow the routes).
    static_base: usize,
    /// Per program: its docking link and WebSocket clients, for bays.
    bays: Vec<Option<bays::Bay>>,
    /// Bays whose link has something to write (or left to read) at the end of the turn.
    links_due: Vec<usize>,
    /// Bay clients that got something to write while a link was read.
    ws_wake: Vec<ConnId>,
    /// Messages for the siblings (bays docked, or to restart).
    outbox: Vec<Message>,
    /// The socket folder, watched for bays' sockets where the platform can.
    watch: Option<watch::Watch>,
    /// WASM payload modules (request and response phases).
    payloads: crate::payload::Payloads,
}

impl Edge {
    /// Binds every listener of the manifest.
    pub fn new(
        m: &Manifest,
        socket_dir: &std::path::Path,
        payloads: crate::payload::Payloads,
    ) -> io::Result<Edge> {
        let mut gens = Generations::default();
        let mut listeners = Vec::new();
        for (i, b) in m.binds.iter().enumerate() {
            let l = Listener::bind(&b.addr).map_err(|e| {
                io::Error::new(e.kind(), format!("bind `{}` ({}): {e}", b.name, b.addr))
            })?;
            listeners.push(Bound {
                listener: l,
                gen: gens.next(),
                bind: BindId::at(i),
                open: true,
                proxy: b.proxy_protocol,
                proxy_from: b.proxy_protocol_from.clone(),
            });
        }
        if let Some(port) = m.metrics_port {
            let addr = BindAddr::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            let l = Listener::bind(&addr)
                .map_err(|e| io::Error::new(e.kind(), format!("metrics listener ({addr}): {e}")))?;
            listeners.push(Bound {
                listener: l,
                gen: gens.next(),
                bind: BindId::METRICS,
                open: true,
                proxy: ProxyProtocol::Off,
                proxy_from: Vec::new(),
            });
        }
        let router = Router::new(m);
        let statics = static_files::Statics::new(m);
        let mut route_labels: Vec<(String, String)> = router
            .routes()
            .into_iter()
            .map(|(label, t)| {
                (
                    label,
                    m.programs
                        .get(t.index())
                        .map_or(String::new(), |p| p.name.clone()),
                )
            })
            .collect();
        let static_base = route_labels.len();
        route_labels.extend(statics.labels().into_iter().map(|l| (l, String::new())));
        Ok(Edge {
            extras: None,
            extras_at: Instant::now(),
            log_lines_lost: None,
            listeners,
            router,
            names: m.programs.iter().map(|p| p.name.clone()).collect(),
            limits: Limits {
                max_head: m.http.max_head_size,
                max_headers: m.http.max_headers,
                max_line: Limits::default().max_line,
            },
            conns: Vec::new(),
            free: Vec::new(),
            idle: Vec::new(),
            up_owner: Vec::new(),
            up_free: Vec::new(),
            pool: pool::IdleLists::new(MAX_IDLE),
            keys: Vec::new(),
            draining: false,
            settings: m.http.clone(),
            timers: DeadlineQueue::new(),
            now: Instant::now(),
            open: 0,
            accept_paused: false,
            pending: Vec::new(),
            awaiting: Vec::new(),
            gens,
            accept_more: Vec::new(),
            accept_due: Vec::new(),
            held: Vec::new(),
            held_news: false,
            held_prune_at: 64,
            held_for: vec![0; m.programs.len()],
            breakers: vec![
                Breaker::new(breaker::Settings {
                    failures: m.http.breaker_failures,
                    window: m.http.breaker_window,
                    cooldown: m.http.breaker_cooldown,
                });
                m.programs.len()
            ],
            breaker_moves: vec![[0; 3]; m.programs.len()],
            active: vec![0; m.programs.len()],
            maxconn: m.programs.iter().map(|p| p.maxconn).collect(),
            queue: vec![std::collections::VecDeque::new(); m.programs.len()],
            queued_now: vec![0; m.programs.len()],
            queue_waits: vec![metrics::Waits::default(); m.programs.len()],
            slots_freed: Vec::new(),
            from_queue: false,
            has_bind: m.programs.iter().map(|p| p.bind.is_some()).collect(),
            scratch: vec![0; BUF],
            bufs: BufPool::new(64),
            stats: Stats::new(route_labels, m.programs.len()),
            limiter: RateLimiter::new(&m.rate_limiting, Instant::now()),
            cors: cors::Cache::new(&m.cors_cache),
            statics,
            compression: m.compression,
            encoders: compress::Budget::new(compress::MAX_ENCODERS),
            sample: Default::default(),
            static_base,
            bays: bays::bays_of(m, socket_dir),
            watch: m
                .programs
                .iter()
                .any(|p| matches!(p.role, crate::manifest::Role::Bay { .. }))
                .then(|| watch::Watch::new(socket_dir))
                .flatten(),
            links_due: Vec::new(),
            ws_wake: Vec::new(),
            payloads,
            outbox: Vec::new(),
        })
    }

    /// Hands over what the edge has to tell its siblings.
    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut self.outbox);
    }

    /// Connections with a request or tunnel in progress.
    pub fn busy(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| {
                !matches!(c.phase, Phase::Head(_)) || !c.cin.is_empty() || !c.cout.is_empty()
            })
            .count()
    }

    /// A message from a sibling, through the root: a change in the fleet (held requests
    /// are looked at again at the end of the turn), or the end of serving.
    pub fn hear(&mut self, msg: &Message, registry: &Registry) {
        match msg {
            Message::StopServing { grace } => {
                self.drain(registry);
                self.drain_bays();
                self.held_news = true;
                let busy = self.busy();
                if busy > 0 {
                    log::info!("draining: listeners closed; waiting up to {grace:?} for {busy} request(s) in flight");
                }
            }
            Message::Program { id, state, .. } => {
                self.held_news = true;
                if self.is_bay(*id) {
                    self.bay_state(*id, state, registry);
                }
            }
            Message::BackendUp { .. } | Message::BackendDown { .. } | Message::Health { .. } => {
                self.held_news = true;
            }
            Message::Checked {
                id, failure: None, ..
            } => {
                if let Some(b) = self.breakers.get_mut(id.index()) {
                    let t = b.check_passed(self.now);
                    self.breaker_moved(*id, t, "a health check passed");
                }
            }
            Message::Checked { .. }
            | Message::Docked { .. }
            | Message::BayFault { .. }
            | Message::RestartUnhealthy { .. }
            | Message::Fleet { .. }
            | Message::Operate { .. }
            | Message::Land { .. }
            | Message::Reopen
            | Message::Event { .. }
            | Message::Reaped { .. } => {}
        }
    }

    /// Handles one readiness event for an edge token.
    pub fn ready(&mut self, ev: &Event, registry: &Registry, fleet: &FleetView, now: Instant) {
        self.now = now;
        let Some((kind, id, gen)) = untoken(ev.token()) else {
            return;
        };
        match kind {
            KIND_LISTENER => self.accept(ConnId { slot: id, gen }, registry, fleet),
            KIND_DOCK => {
                let r = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let w = ev.is_writable() || ev.is_error();
                let hup = ev.is_read_closed() || ev.is_error();
                self.dock_ready(id, gen, (r, w, hup), registry, fleet);
            }
            KIND_CLIENT | KIND_UPSTREAM => {
                let (r, w) = (
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_error(),
                );
                let hup = ev.is_read_closed() || ev.is_error();
                let cid = if kind == KIND_CLIENT {
                    id
                } else {
                    match self.up_owner.get(id) {
                        Some(Owner::Conn(cid)) => *cid,
                        Some(Owner::Idle) => {
                            // A pooled connection became readable: the backend closed it (or
                            // sent something unasked). Either way it can no longer be used.
                            let ours =
                                matches!(self.idle.get(id), Some(Some(i)) if i.up.gen == gen);
                            if r && ours {
                                self.drop_idle(id, registry);
                            }
                            return;
                        }
                        _ => return,
                    }
                };
                let Some(Some(c)) = self.conns.get_mut(cid) else {
                    return;
                };
                if kind == KIND_CLIENT && c.gen != gen {
                    // For an earlier occupant of the slot.
                    return;
                }
                if kind == KIND_CLIENT {
                    c.c_readable |= r;
                    c.c_writable |= w;
                    c.c_hup |= hup;
                } else if let Some(up) = c.up.as_mut().filter(|u| u.id == id && u.gen == gen) {
                    up.readable |= r;
                    up.writable |= w;
                    up.hup |= hup;
                }
                self.drive(cid, registry, fleet);
            }
            _ => {}
        }
    }

    /// A program's name, for log lines.
    fn name_of(&self, p: ProgramId) -> &str {
        self.names.get(p.index()).map_or("?", String::as_str)
    }

    /// Forgets held requests that are gone or no longer held (answered at their timeout,
    /// or their client left), and second entries of a connection held again.
    fn prune_held(&mut self) {
        let conns = &self.conns;
        let mut seen = std::collections::HashSet::new();
        self.held.retain(|cid| {
            matches!(conns.get(cid.slot), Some(Some(c)) if c.gen == cid.gen && matches!(c.phase, Phase::Held(_)))
                && seen.insert(*cid)
        });
    }

    /// The connection `cid` names is still the one in its slot.
    fn live(&self, cid: ConnId) -> bool {
        matches!(self.conns.get(cid.slot), Some(Some(c)) if c.gen == cid.gen)
    }

    fn close(&mut self, id: usize, registry: &Registry) {
        if let Some(Some(c)) = self.conns.get_mut(id).map(Option::take) {
            self.release(id, c, registry);
        }
    }

    /// Logs and counts a move of `target`'s breaker.
    fn breaker_moved(&mut self, target: ProgramId, t: Option<breaker::Transition>, why: &str) {
        let Some(t) = t else { return };
        let name = self.name_of(target).to_string();
        let slot = match t.to {
            breaker::State::Closed => {
                log::info!("{name}: circuit breaker closed ({why})");
                0
            }
            breaker::State::Open { until } => {
                log::warn!(
                    "{name}: circuit breaker open ({why}); requests to it get 503 for {:?}",
                    until.saturating_duration_since(self.now)
                );
                1
            }
            breaker::State::HalfOpen { .. } => {
                log::info!("{name}: circuit breaker half-open: one trial request goes through");
                2
            }
        };
        if let Some(m) = self.breaker_moves.get_mut(target.index()) {
            m[slot] += 1;
        }
    }

    /// A request to `target` failed in a way that counts against it.
    fn backend_failed(&mut self, target: ProgramId, kind: UpstreamError, why: &str) {
        self.stats.upstream_error(target, kind);
        let now = self.now;
        let t = self
            .breakers
            .get_mut(target.index())
            .and_then(|b| b.failure(now));
        self.breaker_moved(target, t, why);
    }

    /// A request to `target` got an answer with `status`.
    fn backend_answered(&mut self, target: ProgramId, status: u16) {
        let Some(b) = self.breakers.get_mut(target.index()) else {
            return;
        };
        let now = self.now;
        if self.settings.breaker_statuses.contains(&status) {
            let t = b.failure(now);
            self.breaker_moved(target, t, &format!("answered {status}"));
        } else {
            let t = b.success();
            self.breaker_moved(target, t, "the trial request was answered");
        }
    }

    /// A held request stops waiting (sent on, answered at its timeout, or gone).
    fn unhold(&mut self, h: &Held) {
        let i = h.target.index();
        if let Some(n) = self.held_for.get_mut(i) {
            *n = n.saturating_sub(1);
        }
        if h.queued {
            if let Some(n) = self.queued_now.get_mut(i) {
                *n = n.saturating_sub(1);
            }
            let waited = self.now.saturating_duration_since(h.since);
            if let Some(w) = self.queue_waits.get_mut(i) {
                w.observe(waited);
            }
        }
    }

    /// The connection's exchange is over: the slot it held on its ship comes free.
    fn settle_slot(&mut self, c: &mut Conn) {
        if matches!(c.phase, Phase::Exchange(_) | Phase::Tunnel { .. }) && !c.dead {
            return;
        }
        self.free_slot(c);
    }

    /// Gives back the slot the connection holds, if any.
    fn free_slot(&mut self, c: &mut Conn) {
        let Some(target) = c.slot.take() else { return };
        if let Some(n) = self.active.get_mut(target.index()) {
            *n = n.saturating_sub(1);
        }
        if self
            .queue
            .get(target.index())
            .is_some_and(|q| !q.is_empty())
        {
            self.slots_freed.push(target);
        }
    }

    /// Sends on the requests in line for the ships whose slots came free.
    fn serve_queues(&mut self, registry: &Registry, fleet: &FleetView) {
        let freed = std::mem::take(&mut self.slots_freed);
        for target in freed {
            let i = target.index();
            loop {
                let max = self.maxconn.get(i).copied().flatten().unwrap_or(u32::MAX);
                if self.active.get(i).is_none_or(|&n| n >= max) {
                    break;
                }
                let Some(cid) = self.queue.get_mut(i).and_then(|q| q.pop_front()) else {
                    break;
                };
                if !self.live(cid) {
                    continue;
                }
                let Some(Some(mut c)) = self.conns.get_mut(cid.slot).map(Option::take) else {
                    continue;
                };
                let in_line = matches!(&c.phase, Phase::Held(h) if h.queued && h.target == target);
                if !in_line {
                    self.conns[cid.slot] = Some(c);
                    continue;
                }
                if let Phase::Held(h) = std::mem::replace(&mut c.phase, Phase::CLOSING) {
                    let h = *h;
                    self.unhold(&h);
                    self.from_queue = true;
                    self.forward(
                        &mut c,
                        cid.slot,
                        h.req,
                        h.target,
                        h.strip.as_deref(),
                        h.cors_key,
                        registry,
                        fleet,
                    );
                    self.from_queue = false;
                }
                self.conns[cid.slot] = Some(c);
                self.drive(cid.slot, registry, fleet);
            }
        }
    }

    /// Frees a connection taken out of its slot.
    fn release(&mut self, id: usize, mut c: Conn, registry: &Registry) {
        c.dead = true;
        self.settle_slot(&mut c);
        match std::mem::replace(&mut c.phase, Phase::CLOSING) {
            Phase::Held(h) => self.unhold(&h),
            Phase::Socket(ws) => self.ws_gone(
                &ws,
                ConnId {
                    slot: id,
                    gen: c.gen,
                },
            ),
            Phase::BayHttp(ex) => self.bay_http_gone(&ex, registry),
            _ => {}
        }
        self.account(&mut c);
        let _ = registry.deregister(&mut c.client);
        for b in [&mut c.cin, &mut c.cout] {
            b.clear();
            self.bufs.take_back(b);
        }
        if let Some(up) = c.up.take() {
            self.close_up(up, registry);
        }
        if let Some((t, _)) = c.timer.take() {
            self.timers.cancel(t);
        }
        self.free.push(id);
        self.open = self.open.saturating_sub(1);
    }

    /// The earliest edge deadline (for the poll timeout); `Some(now)` when connections have
    /// work left over from the last turn.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if !self.pending.is_empty()
            || !self.awaiting.is_empty()
            || !self.accept_more.is_empty()
            || !self.slots_freed.is_empty()
            || !self.accept_due.is_empty()
            || !self.links_due.is_empty()
            || !self.ws_wake.is_empty()
            || (self.held_news && !self.held.is_empty())
        {
            return Some(self.now);
        }
        self.timers.next_deadline()
    }

    /// Shows the count of lines lost to log files in the metrics.
    pub fn count_log_lines_lost(&mut self, c: std::sync::Arc<std::sync::atomic::AtomicU64>) {
        self.log_lines_lost = Some(c);
    }

    /// The routes and modules' counts for the control socket and the dashboard, kept up
    /// to date from here on.
    pub fn share_extras(&mut self) -> status::SharedExtras {
        let e = self.extras.get_or_insert_with(|| {
            let routes = self
                .router
                .routes()
                .into_iter()
                .map(|(l, t)| (l, self.names.get(t.index()).cloned().unwrap_or_default()))
                .collect();
            std::rc::Rc::new(std::cell::RefCell::new(status::Extras {
                routes,
                modules: self.payloads.rows(),
            }))
        });
        e.clone()
    }

    /// Drives connections left with work, then handles expired timers.
    pub fn tick(&mut self, registry: &Registry, fleet: &FleetView, now: Instant) {
        self.now = now;
        if let Some(e) = &self.extras {
            if now.saturating_duration_since(self.extras_at) >= Duration::from_secs(1) {
                self.extras_at = now;
                let rows = self.payloads.rows();
                if !rows.is_empty() {
                    e.borrow_mut().modules = rows;
                }
            }
        }
        // Reused upstreams whose whole request went out during the turn are read once
        // now. A backend on this machine has often answered while the rest of the turn was
        // handled; reading now rather than right after the write (too early) or when the
        // answer's event comes round (a whole ready-list queue later) takes that wait off
        // most requests, for the same number of reads: the event still comes and finds
        // nothing. A slot reused meanwhile just reads once for nothing. Requests written
        // while this runs are read at the end of the next turn (the poll does not wait).
        let awaiting = std::mem::take(&mut self.awaiting);
        let pending = std::mem::take(&mut self.pending);
        for cid in awaiting {
            if !self.live(cid) {
                continue;
            }
            let id = cid.slot;
            if let Some(Some(c)) = self.conns.get_mut(id) {
                if let Some(up) = &mut c.up {
                    up.readable = true;
                }
                self.drive(id, registry, fleet);
            }
        }
        for cid in pending {
            if self.live(cid) {
                self.drive(cid.slot, registry, fleet);
            }
        }
        // Messages queued for bays during the turn go out, in one write per bay; bay
        // clients closed meanwhile (landing, a bay that did not come back) write theirs.
        if !self.links_due.is_empty() {
            self.links_turn(registry, fleet);
        }
        self.wake_clients(registry, fleet);
        if std::mem::take(&mut self.held_news) && !self.held.is_empty() {
            self.resume_held(registry, fleet);
        }
        if !self.slots_freed.is_empty() {
            self.serve_queues(registry, fleet);
        }
        // Backlogs left at the cap in the previous turn; those capped in this turn wait
        // for the next, so that no turn accepts more than ACCEPTS_PER_TURN per listener.
        let due = std::mem::replace(&mut self.accept_due, std::mem::take(&mut self.accept_more));
        for li in due {
            if !self.accept_paused && !self.accept_due.contains(&li) {
                self.accept(li, registry, fleet);
            }
        }
        while let Some((_, key)) = self.timers.pop_due(now) {
            match key {
                TimerKey::Idle(id) => {
                    if let Some(Some(idle)) = self.idle.get_mut(id) {
                        // Already popped: make drop_idle's cancel a no-op.
                        idle.timer = TimerId::NONE;
                    }
                    self.drop_idle(id, registry);
                }
                TimerKey::Conn(id) => self.on_timer(id, registry, fleet),
                k @ (TimerKey::BayLink(_) | TimerKey::BayResume(_)) => {
                    self.bay_timer(k, registry, fleet)
                }
            }
        }
    }

    /// Sends on the held requests whose ship came up, and refuses those whose ship will
    /// not come up any more.
    fn resume_held(&mut self, registry: &Registry, fleet: &FleetView) {
        let held = std::mem::take(&mut self.held);
        for cid in held {
            if !self.live(cid) {
                continue;
            }
            let id = cid.slot;
            let Some(Some(mut c)) = self.conns.get_mut(id).map(Option::take) else {
                continue;
            };
            let target = match &c.phase {
                Phase::Held(h) => h.target,
                _ => {
                    self.conns[id] = Some(c);
                    continue;
                }
            };
            let up = if self.is_bay(target) {
                self.bay_up(target)
            } else {
                fleet.backend(target).is_some()
            };
            if !up && self.coming_up(target, fleet) {
                // A duplicate (a connection held again) is skipped above once the
                // first copy has moved it on.
                self.held.push(cid);
                self.conns[id] = Some(c);
                continue;
            }
            // `forward` hands on the next phase: an exchange, or an answer.
            if let Phase::Held(h) = std::mem::replace(&mut c.phase, Phase::CLOSING) {
                let h = *h;
                self.unhold(&h);
                self.forward(
                    &mut c,
                    id,
                    h.req,
                    h.target,
                    h.strip.as_deref(),
                    h.cors_key,
                    registry,
                    fleet,
                );
            }
            self.conns[id] = Some(c);
            self.drive(id, registry, fleet);
        }
    }

    /// One protocol step; returns true if anything changed.
    fn step(&mut self, c: &mut Conn, id: usize, registry: &Registry, fleet: &FleetView) -> bool {
        // Each arm puts back the phase it keeps, or hands on the next one (the pipeline,
        // an answer, the exchange); the phase is `Closing` in between.
        match std::mem::replace(&mut c.phase, Phase::CLOSING) {
            Phase::Head(r) => self.read_head(c, id, r, registry, fleet),
            Phase::File(f) => {
                c.phase = Phase::File(f);
                false
            }
            Phase::Held(h) => {
                // The client may send its body meanwhile (up to the buffer). One that
                // closes its side after a whole request still gets its answer; one that
                // leaves in the middle of its body is let go.
                let whole = match h.req.body {
                    Body::None | Body::UntilClose => true,
                    Body::Length(n) => (c.cin.len().saturating_sub(h.req.head_len) as u64) >= n,
                    Body::Chunked => false,
                };
                c.dead = c.c_eof && !whole;
                c.phase = Phase::Held(h);
                false
            }
            Phase::Exchange(mut ex) => match self.exchange(c, id, &mut ex, registry) {
                Turned::Stays { moved } => {
                    c.phase = Phase::Exchange(ex);
                    moved
                }
                Turned::Over => true,
            },
            Phase::Tunnel {
                client_shut,
                up_shut,
            } => tunnel::step(c, client_shut, up_shut),
            Phase::Socket(ws) => self.ws_step(c, id, ws),
            Phase::BayHttp(ex) => self.bay_http_step(c, ex),
            Phase::Closing { mut linger } => {
                if let Some(n) = &mut linger {
                    *n += c.cin.len();
                }
                c.cin.clear();
                c.phase = Phase::Closing { linger };
                false
            }
        }
    }

    /// The step of a connection reading a request head: the PROXY header first where one
    /// may come, then the head; a whole head starts its exchange (the pipeline hands on
    /// the next phase).
    fn read_head(
        &mut self,
        c: &mut Conn,
        id: usize,
        mut r: Reading,
        registry: &Registry,
        fleet: &FleetView,
    ) -> bool {
        if c.cin.is_empty() {
            if c.c_eof {
                c.dead = true;
            }
            c.phase = Phase::Head(r);
            return false;
        }
        if self.draining && c.cout.is_empty() {
            c.dead = true;
            return true;
        }
        if c.cout.len() >= BUF {
            // The client does not read its answers: stop taking requests until it
            // does (cin then fills and the socket pushes back).
            c.phase = Phase::Head(r);
            return false;
        }
        if let Some(check) = r.proxy {
            match proxy_protocol::parse(&c.cin) {
                Ok(None) => {
                    c.dead = c.c_eof;
                    c.phase = Phase::Head(r);
                    return false;
                }
                Ok(Some(proxy_protocol::Outcome::Absent)) if check.required => {
                    log::debug!(
                        "{}: no PROXY protocol header on a bind that requires one",
                        c.peer
                    );
                    self.refuse_connection(c, 400, "PROXY protocol header required");
                    return true;
                }
                Ok(Some(proxy_protocol::Outcome::Absent)) => r.proxy = None,
                Ok(Some(proxy_protocol::Outcome::Header { .. })) if !check.trusted => {
                    log::warn!("{}: PROXY protocol header from a peer outside proxy_protocol_from; refused", c.peer);
                    self.refuse_connection(c, 400, "PROXY protocol header from an untrusted peer");
                    return true;
                }
                Ok(Some(proxy_protocol::Outcome::Header { len, addr })) => {
                    c.cin.consume(len);
                    if let Some(a) = addr {
                        c.peer = a.to_string();
                    }
                    r.proxy = None;
                    r.scan = 0;
                    c.phase = Phase::Head(r);
                    return true;
                }
                Err(e) => {
                    log::debug!("{}: {}", c.peer, e.0);
                    c.dead = true;
                    return true;
                }
            }
        }
        match http::parse_request_resume(&c.cin, &self.limits, &mut r.scan) {
            Ok(None) => {
                if c.c_eof {
                    c.dead = true;
                }
                c.phase = Phase::Head(r);
                false
            }
            Err(e) => {
                log::debug!("{}: {e}", c.peer);
                self.refuse_connection(c, e.status(), &e.to_string());
                true
            }
            Ok(Some(req)) => {
                c.served = true;
                self.start_exchange(c, id, req, registry, fleet);
                true
            }
        }
    }

    /// Can program `target` still come up without anyone's action: it has a bind and is
    /// waiting to start, starting, or waiting to restart?
    fn coming_up(&self, target: ProgramId, fleet: &FleetView) -> bool {
        if self.is_bay(target) {
            return self.bay_coming_up(target, fleet);
        }
        self.has_bind.get(target.index()).copied().unwrap_or(false)
            && !self.draining
            && fleet
                .ships
                .get(target.index())
                .is_some_and(|s| matches!(s.state, "waiting" | "starting" | "backoff"))
    }

    /// Sends a routed request to its ship (the request head is still in `cin`).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        target: ProgramId,
        strip: Option<&str>,
        cors_key: Option<String>,
        registry: &Registry,
        fleet: &FleetView,
    ) {
        if self.is_bay(target) {
            self.route_to_bay(c, id, req, target, strip, cors_key, fleet, registry);
            return;
        }
        let keep = req.body == Body::None && req.keep_alive;
        let Some(addr) = fleet.backend(target).cloned() else {
            // Starting, or restarting (a request from the maxconn line, say): it waits.
            if self.coming_up(target, fleet) {
                let strip = strip.map(str::to_string);
                self.wait(c, id, req, target, strip, cors_key, Wait::ComingUp);
                return;
            }
            log::warn!(
                "{} {} {}: {} is not up",
                c.peer,
                req.method,
                req.target,
                self.name_of(target)
            );
            self.refuse(c, &req, 503, "backend not available", !keep);
            return;
        };
        let i = target.index();
        if let Some(max) = self.maxconn.get(i).copied().flatten() {
            let busy = self.active.get(i).is_some_and(|&n| n >= max);
            let line = !self.from_queue && self.queue.get(i).is_some_and(|q| !q.is_empty());
            if busy || line {
                let strip = strip.map(str::to_string);
                self.wait(c, id, req, target, strip, cors_key, Wait::Slot);
                return;
            }
        }
        let now = self.now;
        if let Some(b) = self.breakers.get_mut(target.index()) {
            let (admit, t) = b.admit(now);
            self.breaker_moved(target, t, "cool-down over");
            if let breaker::Admit::Refuse { retry_after } = admit {
                log::debug!(
                    "{} {} {}: {}'s circuit breaker is open",
                    c.peer,
                    req.method,
                    req.target,
                    self.name_of(target)
                );
                self.unavailable(c, &req, retry_after, !keep);
                return;
            }
        }
        let new_target = router::rewrite_target(&req.target, strip);
        let key = self.key_of(target, &addr);
        // An upstream: a pooled one if there is one, else a new connection.
        let up = match self.take_idle(&key, id, registry) {
            Some(up) => up,
            None => match self.connect_up(&addr, key.clone(), id, registry) {
                Ok(up) => up,
                Err(e) => {
                    log::warn!(
                        "{} {} {}: connect to {key}: {e}",
                        c.peer,
                        req.method,
                        req.target
                    );
                    self.backend_failed(target, UpstreamError::Connect, &format!("connect: {e}"));
                    self.refuse(c, &req, 502, "backend refused the connection", true);
                    return;
                }
            },
        };
        let mut up = up;
        let start = self.settings.request_start_header.then(|| {
            // When the request came in, on the wall clock.
            let came = c.stat.as_ref().map_or(self.now, |s| s.started);
            let ago = self.now.saturating_duration_since(came);
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(ago)
                .as_micros()
        });
        up.uout = upstream_head(&req, &new_target, &c.peer, &addr, start).into();
        let idempotent = matches!(
            req.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        let replay = (up.reused && idempotent && req.body == Body::None && req.upgrade.is_none())
            .then(|| up.uout.to_vec());
        let accept = (self.compression && req.minor == 1 && req.method != "HEAD").then(|| {
            req.headers
                .iter()
                .filter(|h| h.is("accept-encoding"))
                .map(|h| h.value_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        c.cin.consume(req.head_len);
        c.up = Some(up);
        let mut ex = Exchange::new(&req, target, replay, accept, cors_key);
        if !self.payloads.is_empty() {
            ex.modules = self
                .payloads
                .select(crate::manifest::Phase::Response, req.path());
        }
        c.phase = Phase::Exchange(Box::new(ex));
        // The connection's previous exchange may have ended in this same turn (a
        // pipelined request): its slot is given back before this one takes one.
        self.free_slot(c);
        if let Some(n) = self.active.get_mut(i) {
            *n += 1;
            c.slot = Some(target);
        }
    }

    /// The fleet's resource usage, sampled at most every [`SAMPLE_MAX_AGE`].
    fn usage(&mut self, fleet: &FleetView) -> &HashMap<i32, crate::fleet::resources::Usage> {
        let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
        self.sample.get(&pgids, self.now, SAMPLE_MAX_AGE)
    }

    /// The metrics listener: `/metrics`, `/health` and the status page.
    fn serve_metrics(&mut self, c: &mut Conn, req: &RequestHead, keep: bool, fleet: &FleetView) {
        c.cin.consume(req.head_len);
        let close = !keep;
        if req.method != "GET" && req.method != "HEAD" {
            let body = b"method not allowed\n";
            answer(
                c,
                &req.method,
                405,
                b"allow: GET, HEAD\r\n",
                Some(TEXT),
                body,
                true,
            );
            return;
        }
        match req.path() {
            "/status" | "/status.json" => {
                let usage = self.usage(fleet).clone();
                let modules = self.payloads.rows();
                let routes: Vec<(String, String)> = self
                    .router
                    .routes()
                    .into_iter()
                    .map(|(l, t)| (l, self.name_of(t).to_string()))
                    .collect();
                let (ct, text) = if req.path() == "/status" {
                    let t = status::html(fleet, &usage, &routes, &modules, self.now);
                    ("text/html; charset=utf-8", t)
                } else {
                    let t = status::json(fleet, &usage, &routes, &modules, self.now);
                    ("application/json", t)
                };
                let extra = b"cache-control: no-store\r\n";
                answer(c, &req.method, 200, extra, Some(ct), text.as_bytes(), close);
            }
            "/metrics" => {
                let usage = self.usage(fleet).clone();
                let g = metrics::Gauges {
                    open_connections: self.open,
                    idle_upstreams: self.pool.len(),
                    rate_limit_clients: self.limiter.as_ref().map_or(0, |r| r.tracked()),
                    cors_entries: self.cors.as_ref().map_or(0, cors::Cache::entries),
                    cors_bytes: self.cors.as_ref().map_or(0, cors::Cache::bytes),
                    compression_encoders: self.encoders.live(),
                    breakers: self
                        .breakers
                        .iter()
                        .zip(&self.breaker_moves)
                        .map(|(b, m)| (b.state().name(), *m))
                        .collect(),
                    lines: (0..self.active.len())
                        .map(|i| {
                            (
                                self.active[i],
                                self.queued_now[i],
                                self.queue_waits[i].clone(),
                            )
                        })
                        .collect(),
                    bays: self.bay_gauges(),
                    modules: self.payloads.rows(),
                    log_lines_lost: self
                        .log_lines_lost
                        .as_ref()
                        .map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed)),
                };
                let text = metrics::render(&self.stats, fleet, &usage, &g, self.now);
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                answer(c, &req.method, 200, b"", Some(ct), text.as_bytes(), close);
            }
            "/health" => answer(c, &req.method, 200, b"", Some(TEXT), b"ok\n", close),
            _ => answer(c, &req.method, 404, b"", Some(TEXT), b"not found\n", close),
        }
    }

    /// The backend of program `target` failed; `sent`: part of the answer is out already.
    fn upstream_failed(
        &mut self,
        c: &mut Conn,
        registry: &Registry,
        (target, sent): (ProgramId, bool),
        kind: UpstreamError,
        why: &str,
    ) {
        log::warn!("{}: {why}", c.peer);
        if sent {
            // The backend did answer: not a failure its breaker counts.
            self.stats.upstream_error(target, kind);
        } else {
            self.backend_failed(target, kind, why);
        }
        if let Some(up) = c.up.take() {
            self.close_up(up, registry);
        }
        if sent {
            c.dead = true;
        } else {
            respond(c, 502, "bad gateway", true);
            self.account(c);
        }
    }

    /// Drives the exchange machine over the connection's buffers and carries out what it
    /// returns; sets `c.phase` when the exchange ends.
    fn exchange(
        &mut self,
        c: &mut Conn,
        id: usize,
        ex: &mut Exchange,
        registry: &Registry,
    ) -> Turned {
        let mut moved = false;
        loop {
            let Some(up) = c.up.as_mut() else {
                c.dead = true;
                return Turned::Over;
            };
            let mut wire = Wire {
                cin: &mut c.cin,
                cout: &mut c.cout,
                uin: &mut up.uin,
                uout: &mut up.uout,
                client_eof: c.c_eof,
                up_eof: up.eof,
                up_readable: up.readable,
            };
            let mut cx = Ctx {
                limits: &self.limits,
                max_body_size: self.settings.max_body_size,
                draining: self.draining,
                cors: self.cors.as_mut(),
                encoders: &self.encoders,
                now: self.now,
                payloads: Some(&mut self.payloads),
            };
            let step = ex.step(&mut wire, &mut cx);
            let (bytes_in, bytes_out) = ex.take_counts();
            if let Some(st) = &mut c.stat {
                st.bytes_in += bytes_in;
                st.bytes_out += bytes_out;
                if ex.status != 0 {
                    st.status = ex.status;
                }
            }
            match step {
                Step::Wait => return Turned::Stays { moved },
                Step::Moved => return Turned::Stays { moved: true },
                Step::Replay(bytes) => {
                    // The pooled connection was closed by the backend before it answered:
                    // the request goes once more on a fresh connection.
                    let Some(old) = c.up.take() else { continue };
                    let (addr, key) = (old.addr.clone(), old.key.clone());
                    log::debug!(
                        "{}: reused connection to {key} was closed; retrying on a new one",
                        c.peer
                    );
                    self.close_up(old, registry);
                    match self.connect_up(&addr, key, id, registry) {
                        Ok(mut fresh) => {
                            fresh.uout = bytes.into();
                            c.up = Some(fresh);
                            moved = true;
                        }
                        Err(e) => {
                            let why = format!("reconnect: {e}");
                            let ts = (ex.target, ex.sent > 0);
                            self.upstream_failed(c, registry, ts, UpstreamError::Connect, &why);
                            return Turned::Over;
                        }
                    }
                }
                Step::Upgrade => {
                    c.phase = Phase::Tunnel {
                        client_shut: false,
                        up_shut: false,
                    };
                    return Turned::Over;
                }
                Step::Done { reusable, keep } => {
                    self.backend_answered(ex.target, ex.status);
                    self.account(c);
                    if let Some(up) = c.up.take() {
                        if reusable
                            && !up.write_failed
                            && up.uout.is_empty()
                            && up.uin.is_empty()
                            && !up.eof
                            && !up.hup
                            && !self.draining
                        {
                            self.put_idle(up, registry);
                        } else {
                            self.close_up(up, registry);
                        }
                    }
                    c.phase = if keep { Phase::head() } else { Phase::CLOSING };
                    return Turned::Over;
                }
                Step::AnsweredEarly => {
                    self.backend_answered(ex.target, ex.status);
                    if let Some(up) = c.up.take() {
                        self.close_up(up, registry);
                    }
                    c.phase = Phase::CLOSING;
                    return Turned::Over;
                }
                Step::Refuse { status, why } => {
                    log::debug!("{}: {why}", c.peer);
                    if let Some(up) = c.up.take() {
                        self.close_up(up, registry);
                    }
                    respond(c, status, why, true);
                    self.account(c);
                    return Turned::Over;
                }
                Step::Fail { kind, why, sent } => {
                    let why = format!("upstream {} {why}", up_key(c));
                    self.upstream_failed(c, registry, (ex.target, sent), kind, &why);
                    return Turned::Over;
                }
                Step::Drop => {
                    c.dead = true;
                    return Turned::Over;
                }
                Step::Replace {
                    outcome,
                    backend,
                    keep,
                } => {
                    self.backend_answered(ex.target, backend);
                    if let Some(up) = c.up.take() {
                        self.close_up(up, registry);
                    }
                    let method = ex.method().to_string();
                    match *outcome {
                        crate::payload::Outcome::Block(b) => {
                            let extra = pipeline::block_lines(&b.headers);
                            answer(c, &method, b.status, &extra, None, &b.body, !keep);
                        }
                        _ => {
                            let body = crate::payload::FAILURE_BODY;
                            answer(c, &method, 503, b"", Some(TEXT), body, !keep);
                        }
                    }
                    self.account(c);
                    return Turned::Over;
                }
            }
        }
    }
}

/// The pool key (address) of a connection's upstream, for log lines.
fn up_key(c: &Conn) -> Rc<str> {
    c.up.as_ref()
        .map_or_else(|| Rc::from("?"), |u| u.key.clone())
}
