//! The HTTP edge: listeners of `[mothership.bind]`, one state machine per client
//! connection, routing to the ships' binds, keep-alive pools of upstream connections, and
//! WebSocket (any `Upgrade`) tunnels. Driven by the supervisor's loop; bytes are parsed by
//! `proto`, never here.
//!
//! Lifecycle of a connection: `Head` (read a request head) -> `Exchange` (request body to
//! the upstream, response back, both streamed through bounded buffers) -> `Head` again on
//! keep-alive, or `Tunnel` after a `101`, or `Closing` (write what is left, then close).

pub mod buffers;
pub mod compress;
pub mod cors;
pub mod metrics;
pub mod ratelimit;
pub mod router;
pub mod static_files;
pub mod stream;

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::time::Instant;

use mio::event::Event;
use mio::{Interest, Registry, Token};

use crate::fleet::view::FleetView;
use crate::manifest::{BindAddr, Cidr, HttpSettings, Manifest, ProxyProtocol};
use crate::proto::chunked::ChunkedDecoder;
use crate::proto::http::{self, Body, Limits, RequestHead, ResponseHead};
use crate::proto::proxy_protocol;
use crate::reactor::deadline::after as deadline;
use crate::reactor::{DeadlineQueue, TimerId};
use buffers::{BufPool, BUF};
use metrics::{Stats, UpstreamError};
use ratelimit::RateLimiter;
use router::Router;
use stream::{Listener, Stream};

/// Tokens at or above this belong to the edge.
use crate::reactor::EDGE_TOKENS as EDGE_BASE;
const KIND_LISTENER: usize = 0;
const KIND_CLIENT: usize = 1;
const KIND_UPSTREAM: usize = 2;
/// A closing connection reads and drops at most this much of what the client still sends,
/// for at most `LINGER_TIME` of silence.
const LINGER_BYTES: usize = 1 << 20;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
/// `Bound::bind` of the metrics listener.
const METRICS_BIND: usize = usize::MAX;
const TEXT: &str = "text/plain; charset=utf-8";
/// Static files up to this size are read into the client buffer; larger ones are sent from
/// the file (sendfile) a chunk at a time.
const SMALL_FILE: u64 = 32 << 10;
/// Most bytes of a file handed to one sendfile call.
const FILE_CHUNK: usize = 1 << 20;
/// Idle upstream connections kept per backend.
const MAX_IDLE: usize = 1024;
/// Connections accepted per listener in one turn of the loop: a connect storm must not
/// starve signals, child output and the connections already open. The rest of the backlog
/// is taken on the next turns (the poll does not wait while some is left).
const ACCEPTS_PER_TURN: usize = 64;
/// `/metrics` serves a resource sample of the fleet up to this old.
const SAMPLE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

fn token(kind: usize, id: usize) -> Token {
    Token(EDGE_BASE + ((id << 2) | kind))
}

fn untoken(t: Token) -> Option<(usize, usize)> {
    let v = t.0.checked_sub(EDGE_BASE)?;
    Some((v & 3, v >> 2))
}

struct Bound {
    listener: Listener,
    bind: usize,
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
    /// Upstream id: its token is `token(KIND_UPSTREAM, id)` for its whole life, pooled or
    /// not, so moving it in and out of the pool costs no system call.
    id: usize,
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
    uin: Vec<u8>,
    uout: Vec<u8>,
}

enum ReqBody {
    Done,
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
}

enum RespBody {
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    UntilClose,
}

enum Resp {
    Head,
    Body {
        body: RespBody,
        dechunk: bool,
        reusable: bool,
    },
    Done {
        reusable: bool,
    },
}

struct Exchange {
    method: String,
    client_keep: bool,
    client_minor: u8,
    upgrade: bool,
    req: ReqBody,
    resp: Resp,
    /// Bytes of the response sent to the client so far (0: an error can still be answered).
    sent: u64,
    /// The client buffer holds a response head whose body has not arrived yet: it is sent
    /// with MSG_MORE so that head and first body bytes leave in one segment.
    head_only: bool,
    /// How far the search for the end of the response head in the upstream buffer got.
    resp_scan: usize,
    /// An interim (1xx) response said the connection cannot be reused.
    no_reuse: bool,
    /// For an idempotent request without a body sent on a reused connection: the bytes to
    /// send again on a fresh connection if the reused one turns out to be closed.
    replay: Option<Vec<u8>>,
    /// Program index of the backend (for upstream error counts).
    target: usize,
    /// A cacheable CORS preflight: its cache key until the response head arrives, then
    /// what is kept of the answer while its body arrives.
    cors_key: Option<String>,
    capture: Option<Box<cors::Capture>>,
    /// The request's Accept-Encoding, when the response may be compressed.
    accept: Option<String>,
    /// Compressing the response body.
    enc: Option<Box<compress::Encoder>>,
}

impl Exchange {
    fn side(&self) -> ClientSide {
        ClientSide {
            upgrade: self.upgrade,
            client_minor: self.client_minor,
        }
    }
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

/// A static file being sent.
struct FileSend {
    file: std::fs::File,
    pos: u64,
    end: u64,
    keep: bool,
    /// Compressing: the file is read and encoded instead of sent with sendfile.
    enc: Option<Box<compress::Encoder>>,
}

enum Phase {
    Head,
    Exchange(Box<Exchange>),
    File(Box<FileSend>),
    Tunnel {
        client_shut: bool,
        up_shut: bool,
    },
    /// A routed request waiting for its ship to come up.
    Held(Box<Held>),
    Closing,
    /// Placeholder while a step has the phase out; a step that does not set a new phase
    /// gets its own back.
    Busy,
}

struct Conn {
    client: Stream,
    peer: String,
    bind: usize,
    c_readable: bool,
    c_writable: bool,
    c_eof: bool,
    cin: Vec<u8>,
    cout: Vec<u8>,
    up: Option<Up>,
    phase: Phase,
    dead: bool,
    /// A PROXY protocol header may still come first.
    proxy_pending: Option<ProxyCheck>,
    /// How far the search for the end of the request head in `cin` got.
    head_scan: usize,
    /// A request head has been received on this connection (until then, the connection
    /// has `header_timeout` from `opened`, not `keepalive_timeout`).
    served: bool,
    /// When it was accepted.
    opened: Instant,
    /// The client's side may have closed (read until end of stream).
    c_hup: bool,
    /// Closing with our side shut: bytes read and dropped so far.
    linger: Option<usize>,
    /// Last time bytes moved on this connection.
    activity: Instant,
    /// When the first byte of the current request head arrived.
    head_start: Option<Instant>,
    /// The armed timer and when it fires.
    timer: Option<(TimerId, Instant)>,
    /// The request being answered.
    stat: Option<ReqStat>,
}

struct Idle {
    up: Up,
    timer: TimerId,
}

/// A request parked until its ship is up (its head stays in the client buffer).
struct Held {
    req: RequestHead,
    target: usize,
    strip: Option<String>,
    cors_key: Option<String>,
    since: Instant,
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
}

pub struct Edge {
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
    pool: HashMap<Rc<str>, VecDeque<usize>>,
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
    pending: Vec<usize>,
    /// Listeners with connections left in their backlog after `ACCEPTS_PER_TURN`: taken
    /// on at the end of the next turn (`accept_due`), not of this one.
    accept_more: Vec<usize>,
    accept_due: Vec<usize>,
    /// Connections whose request waits for its ship to come up.
    held: Vec<usize>,
    /// Per program: it has a bind (a request to it can wait for it to come up).
    has_bind: Vec<bool>,
    /// Connections whose whole request went out on a reused upstream during this turn:
    /// that upstream is read once at the end of the turn (see `tick`).
    awaiting: Vec<usize>,
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
    sample: Option<(Instant, HashMap<i32, crate::fleet::resources::Usage>)>,
    /// Stats index of the first static mount (they follow the routes).
    static_base: usize,
}

impl Edge {
    /// Binds every listener of the manifest.
    pub fn new(m: &Manifest) -> io::Result<Edge> {
        let mut listeners = Vec::new();
        for (i, b) in m.binds.iter().enumerate() {
            let l = Listener::bind(&b.addr).map_err(|e| {
                io::Error::new(e.kind(), format!("bind `{}` ({}): {e}", b.name, b.addr))
            })?;
            listeners.push(Bound {
                listener: l,
                bind: i,
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
                bind: METRICS_BIND,
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
                    m.programs.get(t).map_or(String::new(), |p| p.name.clone()),
                )
            })
            .collect();
        let static_base = route_labels.len();
        route_labels.extend(statics.labels().into_iter().map(|l| (l, String::new())));
        Ok(Edge {
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
            pool: HashMap::new(),
            keys: Vec::new(),
            draining: false,
            settings: m.http.clone(),
            timers: DeadlineQueue::new(),
            now: Instant::now(),
            open: 0,
            accept_paused: false,
            pending: Vec::new(),
            awaiting: Vec::new(),
            accept_more: Vec::new(),
            accept_due: Vec::new(),
            held: Vec::new(),
            has_bind: m.programs.iter().map(|p| p.bind.is_some()).collect(),
            scratch: vec![0; BUF],
            bufs: BufPool::new(64),
            stats: Stats::new(route_labels, m.programs.len()),
            limiter: RateLimiter::new(&m.rate_limiting, Instant::now()),
            cors: cors::Cache::new(&m.cors_cache),
            statics,
            compression: m.compression,
            encoders: compress::Budget::new(compress::MAX_ENCODERS),
            sample: None,
            static_base,
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        for (i, l) in self.listeners.iter_mut().enumerate() {
            registry.register(&mut l.listener, token(KIND_LISTENER, i), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Stops accepting and closes idle client connections; exchanges in flight go on.
    pub fn drain(&mut self, registry: &Registry) {
        self.draining = true;
        for l in &mut self.listeners {
            if l.open {
                let _ = registry.deregister(&mut l.listener);
                l.open = false;
            }
        }
        for id in 0..self.conns.len() {
            let idle = matches!(&self.conns[id], Some(c) if matches!(c.phase, Phase::Head) && c.cin.is_empty() && c.cout.is_empty());
            if idle {
                self.close(id, registry);
            }
        }
    }

    /// Connections with a request or tunnel in progress.
    pub fn busy(&self) -> usize {
        self.conns
            .iter()
            .flatten()
            .filter(|c| !matches!(c.phase, Phase::Head) || !c.cin.is_empty() || !c.cout.is_empty())
            .count()
    }

    /// Handles one readiness event for an edge token.
    pub fn ready(&mut self, ev: &Event, registry: &Registry, fleet: &FleetView, now: Instant) {
        self.now = now;
        let Some((kind, id)) = untoken(ev.token()) else {
            return;
        };
        match kind {
            KIND_LISTENER => self.accept(id, registry, fleet),
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
                            if r {
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
                if kind == KIND_CLIENT {
                    c.c_readable |= r;
                    c.c_writable |= w;
                    c.c_hup |= hup;
                } else if let Some(up) = c.up.as_mut().filter(|u| u.id == id) {
                    up.readable |= r;
                    up.writable |= w;
                    up.hup |= hup;
                }
                self.drive(cid, registry, fleet);
            }
            _ => {}
        }
    }

    fn accept(&mut self, li: usize, registry: &Registry, fleet: &FleetView) {
        for taken in 0.. {
            if taken >= ACCEPTS_PER_TURN {
                if !self.accept_more.contains(&li) {
                    self.accept_more.push(li);
                }
                return;
            }
            if self.open >= self.settings.max_connections {
                if !self.accept_paused {
                    log::warn!(
                        "{} client connections open (max_connections): accepting paused",
                        self.open
                    );
                }
                self.accept_paused = true;
                return;
            }
            let Some(l) = self.listeners.get(li) else {
                return;
            };
            if !l.open {
                return;
            }
            match l.listener.accept() {
                Ok((mut s, peer)) => {
                    let id = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if registry
                        .register(
                            &mut s,
                            token(KIND_CLIENT, id),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(id);
                        continue;
                    }
                    let proxy_pending = match l.proxy {
                        ProxyProtocol::Off => None,
                        mode => {
                            let ip = client_addr(&peer);
                            Some(ProxyCheck {
                                trusted: ip
                                    .is_some_and(|ip| l.proxy_from.iter().any(|n| n.contains(ip))),
                                required: mode == ProxyProtocol::Required,
                            })
                        }
                    };
                    self.conns[id] = Some(Conn {
                        client: s,
                        peer,
                        bind: l.bind,
                        c_readable: true,
                        c_writable: true,
                        c_eof: false,
                        cin: Vec::new(),
                        cout: Vec::new(),
                        up: None,
                        phase: Phase::Head,
                        dead: false,
                        proxy_pending,
                        head_scan: 0,
                        served: false,
                        opened: self.now,
                        c_hup: false,
                        linger: None,
                        activity: self.now,
                        head_start: None,
                        timer: None,
                        stat: None,
                    });
                    self.stats.connections_total += 1;
                    self.open += 1;
                    self.drive(id, registry, fleet);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    // Out of descriptors or memory: retry when a connection closes (the
                    // listener will not report the waiting connections again by itself).
                    log::warn!("accept: {e}; accepting paused until a connection closes");
                    self.accept_paused = true;
                    return;
                }
                Err(e) => {
                    // A connection that failed while it waited in the backlog: skip it.
                    log::debug!("accept: {e}");
                }
            }
        }
    }

    fn close(&mut self, id: usize, registry: &Registry) {
        if let Some(Some(c)) = self.conns.get_mut(id).map(Option::take) {
            self.release(id, c, registry);
        }
    }

    /// Frees a connection taken out of its slot.
    fn release(&mut self, id: usize, mut c: Conn, registry: &Registry) {
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

    /// Resumes accepting after the connection count went under the limit.
    fn resume_accept(&mut self, registry: &Registry, fleet: &FleetView) {
        if !self.accept_paused || self.open >= self.settings.max_connections || self.draining {
            return;
        }
        self.accept_paused = false;
        log::info!("accepting connections again ({} open)", self.open);
        for li in 0..self.listeners.len() {
            self.accept(li, registry, fleet);
        }
    }

    fn drop_idle(&mut self, id: usize, registry: &Registry) {
        if let Some(Some(idle)) = self.idle.get_mut(id).map(Option::take) {
            self.timers.cancel(idle.timer);
            if let Some(v) = self.pool.get_mut(&idle.up.key) {
                v.retain(|&x| x != id);
            }
            self.close_up(idle.up, registry);
        }
    }

    /// Closes an upstream connection and frees its id.
    fn close_up(&mut self, mut up: Up, registry: &Registry) {
        let _ = registry.deregister(&mut up.stream);
        for b in [&mut up.uin, &mut up.uout] {
            b.clear();
            self.bufs.take_back(b);
        }
        if let Some(o) = self.up_owner.get_mut(up.id) {
            *o = Owner::Free;
            self.up_free.push(up.id);
        }
    }

    fn new_up_id(&mut self, conn: usize) -> usize {
        let id = self.up_free.pop().unwrap_or_else(|| {
            self.up_owner.push(Owner::Free);
            self.idle.push(None);
            self.up_owner.len() - 1
        });
        self.up_owner[id] = Owner::Conn(conn);
        id
    }

    /// The earliest edge deadline (for the poll timeout); `Some(now)` when connections have
    /// work left over from the last turn.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        if !self.pending.is_empty()
            || !self.awaiting.is_empty()
            || !self.accept_more.is_empty()
            || !self.accept_due.is_empty()
        {
            return Some(self.now);
        }
        self.timers.next_deadline()
    }

    /// Drives connections left with work, then handles expired timers.
    pub fn tick(&mut self, registry: &Registry, fleet: &FleetView, now: Instant) {
        self.now = now;
        // Reused upstreams whose whole request went out during the turn are read once
        // now. A backend on this machine has often answered while the rest of the turn was
        // handled; reading now rather than right after the write (too early) or when the
        // answer's event comes round (a whole ready-list queue later) takes that wait off
        // most requests, for the same number of reads: the event still comes and finds
        // nothing. A slot reused meanwhile just reads once for nothing. Requests written
        // while this runs are read at the end of the next turn (the poll does not wait).
        let awaiting = std::mem::take(&mut self.awaiting);
        let pending = std::mem::take(&mut self.pending);
        for id in awaiting {
            if let Some(Some(c)) = self.conns.get_mut(id) {
                if let Some(up) = &mut c.up {
                    up.readable = true;
                }
                self.drive(id, registry, fleet);
            }
        }
        for id in pending {
            self.drive(id, registry, fleet);
        }
        if !self.held.is_empty() {
            self.resume_held(registry, fleet);
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
            }
        }
    }

    /// Sends on the held requests whose ship came up, and refuses those whose ship will
    /// not come up any more.
    fn resume_held(&mut self, registry: &Registry, fleet: &FleetView) {
        let held = std::mem::take(&mut self.held);
        for id in held {
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
            let up = fleet.backends.get(target).is_some_and(Option::is_some);
            if !up && self.coming_up(target, fleet) {
                if !self.held.contains(&id) {
                    self.held.push(id);
                }
                self.conns[id] = Some(c);
                continue;
            }
            if let Phase::Held(h) = std::mem::replace(&mut c.phase, Phase::Busy) {
                let h = *h;
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
            if matches!(c.phase, Phase::Busy) {
                c.phase = Phase::Closing;
            }
            self.conns[id] = Some(c);
            self.drive(id, registry, fleet);
        }
    }

    /// When this connection's current phase times out.
    fn deadline_of(&self, c: &Conn) -> Instant {
        let s = &self.settings;
        let at = |since: Instant, d| deadline(since, d);
        match &c.phase {
            // Until its first request head is in, a connection has header_timeout from
            // its accept: silent or slow, it is held no longer than a slow head.
            Phase::Head if !c.served => at(c.opened, s.header_timeout),
            Phase::Head if c.cin.is_empty() => at(c.activity, s.keepalive_timeout),
            Phase::Head => at(c.head_start.unwrap_or(c.activity), s.header_timeout),
            Phase::Exchange(ex) => match (&c.up, &ex.resp) {
                (Some(up), _) if !up.connected => at(up.since, s.connect_timeout),
                // Still sending the request body: a stall is the client's.
                (_, Resp::Head) if !matches!(ex.req, ReqBody::Done) => {
                    at(c.activity, s.body_timeout)
                }
                (_, Resp::Head) => at(c.activity, s.response_timeout),
                _ => at(c.activity, s.body_timeout),
            },
            Phase::Tunnel { .. } => at(c.activity, s.tunnel_timeout),
            Phase::Held(h) => at(h.since, s.connect_timeout),
            Phase::File(_) => at(c.activity, s.body_timeout),
            Phase::Closing | Phase::Busy if c.linger.is_some() => at(c.activity, LINGER_TIME),
            Phase::Closing | Phase::Busy => at(c.activity, s.body_timeout),
        }
    }

    /// Makes sure a timer fires no later than the connection's deadline. Timers are not
    /// moved on every byte: an early one is simply re-armed when it fires.
    fn arm(&mut self, id: usize, c: &mut Conn) {
        let want = self.deadline_of(c);
        match c.timer {
            Some((_, at)) if at <= want => {}
            Some((t, _)) => {
                self.timers.cancel(t);
                c.timer = Some((self.timers.insert(want, TimerKey::Conn(id)), want));
            }
            None => c.timer = Some((self.timers.insert(want, TimerKey::Conn(id)), want)),
        }
    }

    fn on_timer(&mut self, id: usize, registry: &Registry, fleet: &FleetView) {
        let Some(Some(mut c)) = self.conns.get_mut(id).map(Option::take) else {
            return;
        };
        c.timer = None;
        let now = self.now;
        if self.deadline_of(&c) > now {
            self.arm(id, &mut c);
            self.conns[id] = Some(c);
            return;
        }
        match &c.phase {
            Phase::Head if c.cin.is_empty() => c.dead = true,
            Phase::Head => {
                log::debug!(
                    "{}: request head not received within {:?}",
                    c.peer,
                    self.settings.header_timeout
                );
                c.cin.clear();
                c.stat = Some(self.begin(self.stats.unrouted(), None));
                respond(&mut c, 408, "request timeout", true);
                self.account(&mut c);
            }
            Phase::Exchange(ex) if ex.sent == 0 && !matches!(ex.req, ReqBody::Done) => {
                log::debug!(
                    "{}: request body stalled for {:?}",
                    c.peer,
                    self.settings.body_timeout
                );
                self.finish(&mut c, 408);
                if let Some(up) = c.up.take() {
                    self.close_up(up, registry);
                }
                c.cin.clear();
                respond(&mut c, 408, "request body timeout", true);
            }
            Phase::Held(h) => {
                let name = self.names.get(h.target).map_or("?", |s| s.as_str());
                log::warn!(
                    "{}: {name} did not come up within {:?}; answering 503",
                    c.peer,
                    self.settings.connect_timeout
                );
                let (method, head_len) = (h.req.method.clone(), h.req.head_len);
                c.cin.drain(..head_len.min(c.cin.len()));
                respond_to(&mut c, &method, 503, "backend not available", true);
                self.account(&mut c);
            }
            Phase::Exchange(ex) if ex.sent == 0 => {
                let what = match &c.up {
                    Some(up) if !up.connected => format!(
                        "connecting to {} took longer than {:?}",
                        up.key, self.settings.connect_timeout
                    ),
                    Some(up) => format!(
                        "{} did not answer within {:?}",
                        up.key, self.settings.response_timeout
                    ),
                    None => "upstream timeout".to_string(),
                };
                log::warn!("{}: {what}", c.peer);
                self.stats.upstream_error(ex.target, UpstreamError::Timeout);
                self.finish(&mut c, 504);
                if let Some(up) = c.up.take() {
                    self.close_up(up, registry);
                }
                c.cin.clear();
                respond(&mut c, 504, "upstream timeout", true);
            }
            _ => {
                log::debug!("{}: idle for too long; closing", c.peer);
                c.dead = true;
            }
        }
        self.conns[id] = Some(c);
        self.drive(id, registry, fleet);
    }

    /// Moves bytes and advances the connection's state until nothing more can happen now.
    fn drive(&mut self, id: usize, registry: &Registry, fleet: &FleetView) {
        let Some(Some(mut c)) = self.conns.get_mut(id).map(Option::take) else {
            return;
        };
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut progress = false;
            // Read from the client.
            if c.c_readable
                && !c.c_eof
                && c.cin.len() < BUF
                && (!matches!(c.phase, Phase::Closing) || c.linger.is_some())
            {
                self.bufs.lend(&mut c.cin);
                progress |= read_into(
                    &mut c.client,
                    &mut c.cin,
                    &mut self.scratch,
                    c.c_hup,
                    &mut c.c_readable,
                    &mut c.c_eof,
                    &mut c.dead,
                );
            }
            // Read from the upstream.
            if let Some(up) = &mut c.up {
                if up.connected && up.readable && !up.eof && up.uin.len() < BUF {
                    // An upstream error ends the upstream, not the client connection.
                    let mut failed = false;
                    self.bufs.lend(&mut up.uin);
                    progress |= read_into(
                        &mut up.stream,
                        &mut up.uin,
                        &mut self.scratch,
                        up.hup,
                        &mut up.readable,
                        &mut up.eof,
                        &mut failed,
                    );
                }
                if !up.connected && up.writable {
                    match up.stream.connect_result() {
                        Ok(true) => {
                            up.connected = true;
                            progress = true;
                        }
                        Ok(false) => up.writable = false,
                        Err(e) => {
                            let why = format!("connect to {}: {e}", up.key);
                            let (target, sent) = match &c.phase {
                                Phase::Exchange(ex) => (ex.target, ex.sent > 0),
                                _ => (usize::MAX, false),
                            };
                            let kind = UpstreamError::Connect;
                            self.upstream_failed(&mut c, registry, (target, sent), kind, &why);
                            progress = true;
                        }
                    }
                }
            }
            progress |= self.step(&mut c, id, registry, fleet);
            // Write to the upstream, then to the client.
            if let Some(up) = &mut c.up {
                if up.write_failed && !up.uout.is_empty() {
                    // The backend stopped reading (it may have answered early): what is
                    // still sent its way is dropped, and its answer is still read.
                    up.uout.clear();
                    progress = true;
                } else if up.connected && up.writable && !up.uout.is_empty() {
                    let mut failed = false;
                    let wrote = write_from(
                        &mut up.stream,
                        &mut up.uout,
                        false,
                        &mut up.writable,
                        &mut failed,
                    );
                    progress |= wrote;
                    let whole = matches!(&c.phase, Phase::Exchange(ex)
                        if matches!(ex.req, ReqBody::Done) && matches!(ex.resp, Resp::Head));
                    // Only reused connections: a fresh one never read after its write, so the
                    // extra read would be one more system call per request.
                    if wrote && whole && up.reused && up.uout.is_empty() && !up.readable {
                        self.awaiting.push(id);
                    }
                    if failed {
                        up.write_failed = true;
                        up.uout.clear();
                    }
                }
            }
            if c.c_writable && !c.cout.is_empty() {
                let more = matches!(&c.phase, Phase::Exchange(ex) if ex.head_only);
                progress |= write_from(
                    &mut c.client,
                    &mut c.cout,
                    more,
                    &mut c.c_writable,
                    &mut c.dead,
                );
            }
            if let Phase::File(f) = &mut c.phase {
                if let Some(enc) = &mut f.enc {
                    // Compressing: read a piece, encode it, queue the chunk.
                    if c.cout.len() < BUF && f.pos < f.end {
                        use std::os::unix::fs::FileExt;
                        let want = (f.end - f.pos).min(self.scratch.len() as u64) as usize;
                        match f.file.read_at(&mut self.scratch[..want], f.pos) {
                            Ok(0) => {
                                log::warn!("{}: static file shrank while being sent", c.peer);
                                c.dead = true;
                            }
                            Ok(n) => {
                                f.pos += n as u64;
                                let before = c.cout.len();
                                enc.feed(&self.scratch[..n], false, &mut c.cout);
                                if f.pos >= f.end {
                                    if let Some(enc) = f.enc.take() {
                                        enc.finish(&mut c.cout);
                                    }
                                }
                                if let Some(st) = &mut c.stat {
                                    st.bytes_out += (c.cout.len() - before) as u64;
                                }
                                progress = true;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                log::warn!("{}: static file read failed: {e}", c.peer);
                                c.dead = true;
                            }
                        }
                    }
                } else if c.cout.is_empty() && c.c_writable && f.pos < f.end {
                    let n = (f.end - f.pos).min(FILE_CHUNK as u64) as usize;
                    match c.client.send_file(&f.file, f.pos, n) {
                        Ok(0) => {
                            log::warn!("{}: static file shrank while being sent", c.peer);
                            c.dead = true;
                        }
                        Ok(k) => {
                            f.pos += k as u64;
                            if let Some(st) = &mut c.stat {
                                st.bytes_out += k as u64;
                            }
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.c_writable = false,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            log::debug!("{}: sendfile: {e}", c.peer);
                            c.dead = true;
                        }
                    }
                }
                if f.pos >= f.end && f.enc.is_none() && !c.dead {
                    c.phase = if f.keep { Phase::Head } else { Phase::Closing };
                    self.account(&mut c);
                    progress = true;
                }
            }
            if matches!(c.phase, Phase::Closing) && c.cout.is_empty() {
                // Lingering close: stop writing, then read and drop what the client still
                // sends (up to a bound), so that unread bytes do not make the kernel reset
                // the connection and destroy the answer we just wrote.
                if c.linger.is_none() {
                    c.client.shutdown_write();
                    c.linger = Some(0);
                    progress = true;
                }
                if c.c_eof || c.linger.is_some_and(|n| n > LINGER_BYTES) {
                    c.dead = true;
                }
            }
            if progress {
                c.activity = self.now;
            }
            if matches!(c.phase, Phase::Head) {
                if c.cin.is_empty() {
                    c.head_start = None;
                } else if c.head_start.is_none() {
                    c.head_start = Some(self.now);
                }
            }
            if c.dead || !progress {
                break;
            }
            if rounds >= 64 {
                // Fairness: other connections get their turn; this one goes on next turn.
                self.pending.push(id);
                break;
            }
        }
        if c.dead {
            self.release(id, c, registry);
            self.resume_accept(registry, fleet);
        } else {
            if matches!(c.phase, Phase::Head) {
                // Between requests: empty buffers go back to the pool.
                self.bufs.take_back(&mut c.cin);
                self.bufs.take_back(&mut c.cout);
            }
            self.arm(id, &mut c);
            self.conns[id] = Some(c);
        }
    }

    /// One protocol step; returns true if anything changed.
    fn step(&mut self, c: &mut Conn, id: usize, registry: &Registry, fleet: &FleetView) -> bool {
        match std::mem::replace(&mut c.phase, Phase::Busy) {
            Phase::Head => {
                if c.cin.is_empty() {
                    if c.c_eof {
                        c.dead = true;
                    }
                    c.phase = Phase::Head;
                    return false;
                }
                if self.draining && c.cout.is_empty() {
                    c.dead = true;
                    return true;
                }
                if c.cout.len() >= BUF {
                    // The client does not read its answers: stop taking requests until it
                    // does (cin then fills and the socket pushes back).
                    c.phase = Phase::Head;
                    return false;
                }
                if let Some(check) = c.proxy_pending {
                    match proxy_protocol::parse(&c.cin) {
                        Ok(None) => {
                            c.dead = c.c_eof;
                            c.phase = Phase::Head;
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
                        Ok(Some(proxy_protocol::Outcome::Absent)) => c.proxy_pending = None,
                        Ok(Some(proxy_protocol::Outcome::Header { .. })) if !check.trusted => {
                            log::warn!("{}: PROXY protocol header from a peer outside proxy_protocol_from; refused", c.peer);
                            self.refuse_connection(
                                c,
                                400,
                                "PROXY protocol header from an untrusted peer",
                            );
                            return true;
                        }
                        Ok(Some(proxy_protocol::Outcome::Header { len, addr })) => {
                            c.cin.drain(..len);
                            if let Some(a) = addr {
                                c.peer = a.to_string();
                            }
                            c.proxy_pending = None;
                            c.head_scan = 0;
                            c.phase = Phase::Head;
                            return true;
                        }
                        Err(e) => {
                            log::debug!("{}: {}", c.peer, e.0);
                            c.dead = true;
                            return true;
                        }
                    }
                }
                match http::parse_request_resume(&c.cin, &self.limits, &mut c.head_scan) {
                    Ok(None) => {
                        if c.c_eof {
                            c.dead = true;
                        }
                        c.phase = Phase::Head;
                        false
                    }
                    Err(e) => {
                        log::debug!("{}: {e}", c.peer);
                        c.head_scan = 0;
                        self.refuse_connection(c, e.status(), &e.to_string());
                        true
                    }
                    Ok(Some(req)) => {
                        c.head_start = None;
                        c.served = true;
                        self.start_exchange(c, id, req, registry, fleet);
                        true
                    }
                }
            }
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
            Phase::Exchange(mut ex) => {
                let p = self.exchange(c, id, &mut ex, registry);
                if matches!(c.phase, Phase::Busy) {
                    c.phase = Phase::Exchange(ex);
                }
                p
            }
            Phase::Tunnel {
                mut client_shut,
                mut up_shut,
            } => {
                let Some(up) = &mut c.up else {
                    c.dead = true;
                    return true;
                };
                let mut p =
                    move_bytes(&mut c.cin, &mut up.uout) | move_bytes(&mut up.uin, &mut c.cout);
                if c.c_eof && c.cin.is_empty() && up.uout.is_empty() && !up_shut {
                    up.stream.shutdown_write();
                    up_shut = true;
                    p = true;
                }
                if up.eof && up.uin.is_empty() && c.cout.is_empty() && !client_shut {
                    c.client.shutdown_write();
                    client_shut = true;
                    p = true;
                }
                if client_shut && up_shut {
                    c.dead = true;
                }
                c.phase = Phase::Tunnel {
                    client_shut,
                    up_shut,
                };
                p
            }
            Phase::Closing | Phase::Busy => {
                if let Some(n) = &mut c.linger {
                    *n += c.cin.len();
                }
                c.cin.clear();
                c.phase = Phase::Closing;
                false
            }
        }
    }

    fn start_exchange(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        registry: &Registry,
        fleet: &FleetView,
    ) {
        let ua = req
            .header("user-agent")
            .map(|h| h.value.clone())
            .unwrap_or_default();
        // Keep the connection after answering ourselves only if no body must be skipped.
        let keep = req.body == Body::None && req.keep_alive;
        if c.bind == METRICS_BIND {
            self.serve_metrics(c, &req, keep, fleet);
            return;
        }
        let route = self.router.find(c.bind, req.path(), &ua);
        let backend = route.map_or("-", |r| {
            self.names.get(r.target).map_or("?", String::as_str)
        });
        let rec = self.record(&req, &ua, backend);
        c.stat = Some(self.begin(route.map_or(self.stats.unrouted(), |r| r.id), rec));
        if let Some(rl) = &mut self.limiter {
            if let Err(l) = rl.check(client_addr(&c.peer), self.now) {
                log::debug!(
                    "{} {} {}: rate limited ({})",
                    c.peer,
                    req.method,
                    req.target,
                    l.scope
                );
                self.stats.rate_limited[usize::from(l.scope == "client")] += 1;
                c.cin.drain(..req.head_len);
                let body = b"too many requests\n";
                answer(
                    c,
                    &req.method,
                    429,
                    l.headers().as_bytes(),
                    Some(TEXT),
                    body,
                    !keep,
                );
                self.account(c);
                return;
            }
        }
        if !self.statics.is_empty() {
            let may_compress = self.encoders.available();
            let (mount, outcome) = self.statics.lookup(c.bind, &req, may_compress);
            if !matches!(outcome, static_files::Outcome::Pass) {
                if let (Some(st), Some(i)) = (&mut c.stat, mount) {
                    st.route = self.static_base + i;
                }
                c.cin.drain(..req.head_len);
                self.serve_static(c, &req, outcome, keep);
                return;
            }
        }
        let Some(route) = route else {
            log::debug!("{} {} {}: no route", c.peer, req.method, req.target);
            self.refuse(c, &req, 404, "no route", !keep);
            return;
        };
        let target = route.target;
        let cors_key = self
            .cors
            .as_ref()
            .and_then(|_| cors::key_of(c.bind, route.id, &req));
        if let Some(k) = &cors_key {
            let now = self.now;
            let hit = self
                .cors
                .as_mut()
                .and_then(|cc| cc.get(k, now))
                .map(|e| (e.status, e.header_lines(now), e.body.clone()));
            if let Some((status, extra, body)) = hit {
                self.stats.cors_hits += 1;
                c.cin.drain(..req.head_len);
                answer(c, &req.method, status, &extra, None, &body, !keep);
                self.account(c);
                return;
            }
            self.stats.cors_misses += 1;
        }
        if let Body::Length(n) = req.body {
            if n > self.settings.max_body_size {
                log::debug!(
                    "{} {} {}: body of {n} bytes over max_body_size",
                    c.peer,
                    req.method,
                    req.target
                );
                self.refuse(c, &req, 413, "request body too large", true);
                return;
            }
        }
        let strip = route.strip_prefix.clone();
        if fleet.backends.get(target).is_some_and(Option::is_none) && self.coming_up(target, fleet)
        {
            // The ship is starting (or about to): the request waits for it (see `tick`),
            // its head still in `cin`, up to connect_timeout.
            log::debug!(
                "{} {} {}: {} is starting; the request waits for it",
                c.peer,
                req.method,
                req.target,
                self.names.get(target).map_or("?", |s| s)
            );
            c.phase = Phase::Held(Box::new(Held {
                req,
                target,
                strip,
                cors_key,
                since: self.now,
            }));
            if !self.held.contains(&id) {
                self.held.push(id);
            }
            return;
        }
        self.forward(
            c,
            id,
            req,
            target,
            strip.as_deref(),
            cors_key,
            registry,
            fleet,
        );
    }

    /// Can program `target` still come up without anyone's action: it has a bind and is
    /// waiting to start, starting, or waiting to restart?
    fn coming_up(&self, target: usize, fleet: &FleetView) -> bool {
        self.has_bind.get(target).copied().unwrap_or(false)
            && !self.draining
            && fleet
                .ships
                .get(target)
                .is_some_and(|s| matches!(s.state, "waiting" | "starting" | "backoff"))
    }

    /// Sends a routed request to its ship (the request head is still in `cin`).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        target: usize,
        strip: Option<&str>,
        cors_key: Option<String>,
        registry: &Registry,
        fleet: &FleetView,
    ) {
        let keep = req.body == Body::None && req.keep_alive;
        let Some(addr) = fleet.backends.get(target).cloned().flatten() else {
            log::warn!(
                "{} {} {}: {} is not up",
                c.peer,
                req.method,
                req.target,
                self.names.get(target).map_or("?", |s| s)
            );
            self.refuse(c, &req, 503, "backend not available", !keep);
            return;
        };
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
                    self.stats.upstream_error(target, UpstreamError::Connect);
                    self.refuse(c, &req, 502, "backend refused the connection", true);
                    return;
                }
            },
        };
        let mut up = up;
        up.uout = upstream_head(&req, &new_target, &c.peer, &addr);
        let idempotent = matches!(
            req.method.as_str(),
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        );
        let replay = (up.reused && idempotent && req.body == Body::None && req.upgrade.is_none())
            .then(|| up.uout.clone());
        let accept = (self.compression && req.minor == 1 && req.method != "HEAD").then(|| {
            req.headers
                .iter()
                .filter(|h| h.is("accept-encoding"))
                .map(|h| h.value_str())
                .collect::<Vec<_>>()
                .join(",")
        });
        c.cin.drain(..req.head_len);
        let req_body = match req.body {
            Body::None | Body::UntilClose => ReqBody::Done,
            Body::Length(n) => ReqBody::Length(n),
            Body::Chunked => ReqBody::Chunked(Box::default()),
        };
        c.up = Some(up);
        c.phase = Phase::Exchange(Box::new(Exchange {
            method: req.method,
            client_keep: req.keep_alive,
            client_minor: req.minor,
            upgrade: req.upgrade.is_some(),
            req: req_body,
            resp: Resp::Head,
            sent: 0,
            head_only: false,
            resp_scan: 0,
            no_reuse: false,
            replay,
            target,
            cors_key,
            capture: None,
            accept,
            enc: None,
        }));
    }

    fn begin(&self, route: usize, rec: Option<Box<Record>>) -> ReqStat {
        ReqStat {
            route,
            started: self.now,
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            rec,
        }
    }

    /// A log record for this request, if a request log is on.
    fn record(&self, req: &RequestHead, ua: &[u8], backend: &str) -> Option<Box<Record>> {
        let debug = log::log_enabled!(target: "request", log::Level::Debug);
        if !self.settings.access_log && !debug {
            return None;
        }
        Some(Box::new(Record {
            line: format!("{} {} HTTP/1.{}", req.method, req.target, req.minor),
            backend: backend.to_string(),
            ua: crate::proto::ua::classify(ua).label(),
            ja4h: debug.then(|| crate::proto::ja4h::ja4h(req)),
        }))
    }

    /// Writes the request's access-log line and, at debug level, its request-log line.
    fn emit(&self, peer: &str, rec: Option<&Record>, status: u16, bytes: u64, secs: f64) {
        let Some(r) = rec else { return };
        let ms = secs * 1000.0;
        if self.settings.access_log {
            log::info!(target: "access", "{peer} \"{}\" {status} {bytes} {ms:.1}ms {} ua={}", r.line, r.backend, r.ua);
        }
        if let Some(j) = &r.ja4h {
            log::debug!(target: "request", "{peer} \"{}\" {status} {bytes} {ms:.1}ms backend={} ua={} ja4h={j}", r.line, r.backend, r.ua);
        }
    }

    /// Ends the request in progress with `status` (an answer of our own) and accounts it.
    fn finish(&mut self, c: &mut Conn, status: u16) {
        if let Some(s) = &mut c.stat {
            s.status = status;
        }
        self.account(c);
    }

    /// Counts the request in progress in the metrics and writes its log lines (once). A
    /// request whose connection went away before any answer counts as 499.
    fn account(&mut self, c: &mut Conn) {
        let Some(s) = c.stat.take() else { return };
        let status = if s.status == 0 { 499 } else { s.status };
        let secs = self.now.saturating_duration_since(s.started).as_secs_f64();
        if let Some(r) = self.stats.routes.get_mut(s.route) {
            r.observe(status, secs, s.bytes_in, s.bytes_out);
        }
        self.emit(&c.peer, s.rec.as_deref(), status, s.bytes_out, secs);
    }

    /// Answers what came on the connection with an error of our own and closes it (the
    /// bytes read cannot be trusted to frame a next request).
    fn refuse_connection(&mut self, c: &mut Conn, status: u16, why: &str) {
        c.cin.clear();
        c.proxy_pending = None;
        c.stat = Some(self.begin(self.stats.unrouted(), None));
        respond(c, status, why, true);
        self.account(c);
    }

    /// Answers a request without a backend (an error) and accounts it.
    fn refuse(&mut self, c: &mut Conn, req: &RequestHead, status: u16, body: &str, close: bool) {
        c.cin.drain(..req.head_len);
        respond_to(c, &req.method, status, body, close);
        self.account(c);
    }

    /// Answers from a static mount (the request head is already consumed).
    fn serve_static(
        &mut self,
        c: &mut Conn,
        req: &RequestHead,
        o: static_files::Outcome,
        keep: bool,
    ) {
        use static_files::Outcome;
        let method = req.method.as_str();
        match o {
            Outcome::Pass => {}
            Outcome::Answer {
                status,
                headers,
                body,
            } => {
                let ct = (!body.is_empty()).then_some(TEXT);
                answer(c, method, status, &headers, ct, &body, !keep);
                self.account(c);
            }
            Outcome::File {
                status,
                headers,
                file,
                start,
                len,
                compress: coding,
            } => {
                let mut head =
                    format!("HTTP/1.1 {status} {}\r\n", http::reason(status)).into_bytes();
                if coding.is_some() {
                    head.extend_from_slice(b"transfer-encoding: chunked\r\n");
                }
                head.extend_from_slice(&headers);
                if coding.is_none() {
                    head.extend_from_slice(format!("content-length: {len}\r\n").as_bytes());
                }
                if !keep {
                    head.extend_from_slice(b"connection: close\r\n");
                }
                head.extend_from_slice(b"\r\n");
                c.cout.extend_from_slice(&head);
                if let Some(st) = &mut c.stat {
                    st.status = status;
                }
                let next = if keep { Phase::Head } else { Phase::Closing };
                if method == "HEAD" || len == 0 {
                    c.phase = next;
                    self.account(c);
                    return;
                }
                if let Some(coding) = coding {
                    // The lookup chose compression only with an encoder available.
                    let Some(enc) = self.encoders.encoder(coding) else {
                        log::error!("{}: no encoder for a compressed static answer", c.peer);
                        c.dead = true;
                        return;
                    };
                    c.phase = Phase::File(Box::new(FileSend {
                        file,
                        pos: start,
                        end: start + len,
                        keep,
                        enc: Some(Box::new(enc)),
                    }));
                    return;
                }
                if len <= SMALL_FILE {
                    // Small: one read, and head and body leave together.
                    use std::os::unix::fs::FileExt;
                    let at = c.cout.len();
                    c.cout.resize(at + len as usize, 0);
                    match file.read_exact_at(&mut c.cout[at..], start) {
                        Ok(()) => {
                            if let Some(st) = &mut c.stat {
                                st.bytes_out += len;
                            }
                            c.phase = next;
                            self.account(c);
                        }
                        Err(e) => {
                            // The file changed under us: the head is out, so close.
                            log::warn!("{}: static file read failed: {e}", c.peer);
                            c.cout.truncate(at);
                            c.dead = true;
                        }
                    }
                    return;
                }
                c.phase = Phase::File(Box::new(FileSend {
                    file,
                    pos: start,
                    end: start + len,
                    keep,
                    enc: None,
                }));
            }
        }
    }

    /// The metrics listener: `/metrics` and `/health`.
    fn serve_metrics(&mut self, c: &mut Conn, req: &RequestHead, keep: bool, fleet: &FleetView) {
        c.cin.drain(..req.head_len);
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
            "/metrics" => {
                // Walking the processes of the fleet costs with its size: a scrape storm
                // on this unauthenticated listener gets the last sample while it is fresh.
                let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
                let fresh = self.sample.as_ref().is_some_and(|(at, u)| {
                    self.now.saturating_duration_since(*at) < SAMPLE_MAX_AGE
                        && pgids.iter().all(|p| u.contains_key(p))
                });
                if !fresh {
                    let usage = crate::fleet::resources::sample(&pgids);
                    self.sample = Some((self.now, usage));
                }
                let empty = HashMap::new();
                let usage = self.sample.as_ref().map_or(&empty, |(_, u)| u);
                let g = metrics::Gauges {
                    open_connections: self.open,
                    idle_upstreams: self.pool.values().map(VecDeque::len).sum(),
                    rate_limit_clients: self.limiter.as_ref().map_or(0, |r| r.tracked()),
                    cors_entries: self.cors.as_ref().map_or(0, cors::Cache::entries),
                    cors_bytes: self.cors.as_ref().map_or(0, cors::Cache::bytes),
                    compression_encoders: self.encoders.live(),
                };
                let text = metrics::render(&self.stats, fleet, usage, &g, self.now);
                let ct = "text/plain; version=0.0.4; charset=utf-8";
                answer(c, &req.method, 200, b"", Some(ct), text.as_bytes(), close);
            }
            "/health" => answer(c, &req.method, 200, b"", Some(TEXT), b"ok\n", close),
            _ => answer(c, &req.method, 404, b"", Some(TEXT), b"not found\n", close),
        }
    }

    /// Starts a connection to a backend for connection `conn`.
    fn connect_up(
        &mut self,
        addr: &BindAddr,
        key: Rc<str>,
        conn: usize,
        registry: &Registry,
    ) -> io::Result<Up> {
        let mut s = Stream::connect(addr)?;
        let up_id = self.new_up_id(conn);
        if let Err(e) = registry.register(
            &mut s,
            token(KIND_UPSTREAM, up_id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.up_owner[up_id] = Owner::Free;
            self.up_free.push(up_id);
            return Err(e);
        }
        Ok(Up {
            id: up_id,
            stream: s,
            addr: addr.clone(),
            reused: false,
            key,
            since: self.now,
            readable: false,
            writable: false,
            hup: false,
            write_failed: false,
            connected: false,
            eof: false,
            uin: Vec::new(),
            uout: Vec::new(),
        })
    }

    /// The pool key of program `target`'s backend at `addr`.
    fn key_of(&mut self, target: usize, addr: &BindAddr) -> Rc<str> {
        if self.keys.len() <= target {
            self.keys.resize(target + 1, None);
        }
        match &self.keys[target] {
            Some((a, k)) if a == addr => k.clone(),
            _ => {
                let k: Rc<str> = addr.to_string().into();
                self.keys[target] = Some((addr.clone(), k.clone()));
                k
            }
        }
    }

    /// The oldest idle upstream to `key` that is still quiet. The oldest, because the
    /// events of its socket have surely been seen; quiet, checked with a non-blocking
    /// peek: a connection with unread bytes (a backend that answered more than it
    /// announced, or left a body unread and answered it) or at end of stream would hand
    /// the next client someone else's answer, so it is closed instead.
    fn take_idle(&mut self, key: &str, conn: usize, registry: &Registry) -> Option<Up> {
        loop {
            let up_id = self.pool.get_mut(key)?.pop_front()?;
            let idle = self.idle.get_mut(up_id)?.take()?;
            self.timers.cancel(idle.timer);
            self.up_owner[up_id] = Owner::Conn(conn);
            if !idle.up.stream.is_quiet() {
                log::debug!("pooled connection to {key} has unread bytes or ended; closed");
                self.close_up(idle.up, registry);
                continue;
            }
            return Some(self.reuse(idle.up));
        }
    }

    fn reuse(&mut self, mut up: Up) -> Up {
        // Writable readiness seen while pooled was not recorded; readable readiness reported
        // while pooled drops the connection. `readable` keeps what it was when pooled: false
        // after a read that drained the socket, true if bytes may be left. No read right
        // after the request is written: the answer cannot be there yet. It raises a new
        // edge, and the end of the turn reads once (see `tick`).
        up.writable = true;
        up.since = self.now;
        up.reused = true;
        up
    }

    fn put_idle(&mut self, mut up: Up, registry: &Registry) {
        let id = up.id;
        self.bufs.take_back(&mut up.uin);
        self.bufs.take_back(&mut up.uout);
        let timer = self.timers.insert(
            deadline(self.now, self.settings.pool_idle_timeout),
            TimerKey::Idle(id),
        );
        self.up_owner[id] = Owner::Idle;
        let list = self.pool.entry(Rc::clone(&up.key)).or_default();
        list.push_back(id);
        let oldest = (list.len() > MAX_IDLE).then(|| list[0]);
        self.idle[id] = Some(Idle { up, timer });
        if let Some(oldest) = oldest {
            self.drop_idle(oldest, registry);
        }
    }

    /// The backend of program `target` failed; `sent`: part of the answer is out already.
    fn upstream_failed(
        &mut self,
        c: &mut Conn,
        registry: &Registry,
        (target, sent): (usize, bool),
        kind: UpstreamError,
        why: &str,
    ) {
        log::warn!("{}: {why}", c.peer);
        self.stats.upstream_error(target, kind);
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

    /// Request body out, response in; sets `c.phase` when the exchange ends.
    fn exchange(
        &mut self,
        c: &mut Conn,
        id: usize,
        ex: &mut Exchange,
        registry: &Registry,
    ) -> bool {
        let mut progress = false;
        let Some(up) = c.up.as_mut() else {
            c.dead = true;
            return true;
        };
        // Request body: client -> upstream.
        let room = BUF.saturating_sub(up.uout.len());
        if room > 0 && !c.cin.is_empty() {
            match &mut ex.req {
                ReqBody::Done => {}
                ReqBody::Length(left) => {
                    let n = (*left).min(c.cin.len() as u64).min(room as u64) as usize;
                    if n > 0 {
                        up.uout.extend_from_slice(&c.cin[..n]);
                        c.cin.drain(..n);
                        *left -= n as u64;
                        if let Some(st) = &mut c.stat {
                            st.bytes_in += n as u64;
                        }
                        progress = true;
                    }
                    if *left == 0 {
                        ex.req = ReqBody::Done;
                    }
                }
                ReqBody::Chunked(dec) => {
                    let n = c.cin.len().min(room);
                    // Chunks pass as they came; trailers are checked, and the fields that
                    // may not be trailers are removed.
                    match dec.forward(&c.cin[..n], &mut up.uout) {
                        Ok(_) if dec.payload > self.settings.max_body_size => {
                            log::debug!("{}: chunked body over max_body_size", c.peer);
                            c.cin.clear();
                            if ex.sent == 0 {
                                if let Some(up) = c.up.take() {
                                    self.close_up(up, registry);
                                }
                                respond(c, 413, "request body too large", true);
                                self.account(c);
                            } else {
                                c.dead = true;
                            }
                            return true;
                        }
                        Ok(used) => {
                            c.cin.drain(..used);
                            if let Some(st) = &mut c.stat {
                                st.bytes_in += used as u64;
                            }
                            progress |= used > 0;
                            if dec.is_done() {
                                ex.req = ReqBody::Done;
                            }
                        }
                        Err(e) => {
                            log::debug!("{}: bad chunked request body: {e:?}", c.peer);
                            c.cin.clear();
                            if ex.sent == 0 {
                                respond(c, 400, "bad chunked body", true);
                                self.account(c);
                            } else {
                                c.dead = true;
                            }
                            let _ = registry;
                            return true;
                        }
                    }
                }
            }
        }
        if c.c_eof && !matches!(ex.req, ReqBody::Done) && c.cin.is_empty() {
            // The client left in the middle of its request.
            c.dead = true;
            return true;
        }
        // Response: upstream -> client.
        let ts = (ex.target, ex.sent > 0);
        while let Some(up) = c.up.as_mut() {
            match &mut ex.resp {
                Resp::Head if c.cout.len() >= BUF => break,
                Resp::Head => match http::parse_response_resume(
                    &up.uin,
                    &self.limits,
                    &ex.method,
                    &mut ex.resp_scan,
                ) {
                    Ok(None) => {
                        if up.eof && up.uin.is_empty() && ex.replay.is_some() {
                            // The pooled connection was closed by the backend before it
                            // answered: send the request once more on a fresh connection.
                            let bytes = ex.replay.take().unwrap_or_default();
                            let addr = up.addr.clone();
                            let key = up.key.clone();
                            log::debug!(
                                "{}: reused connection to {key} was closed; retrying on a new one",
                                c.peer
                            );
                            if let Some(old) = c.up.take() {
                                self.close_up(old, registry);
                            }
                            match self.connect_up(&addr, key, id, registry) {
                                Ok(mut fresh) => {
                                    fresh.uout = bytes;
                                    ex.resp_scan = 0;
                                    c.up = Some(fresh);
                                    progress = true;
                                    continue;
                                }
                                Err(e) => {
                                    let why = format!("reconnect: {e}");
                                    let kind = UpstreamError::Connect;
                                    self.upstream_failed(c, registry, ts, kind, &why);
                                    return true;
                                }
                            }
                        }
                        if up.eof {
                            let why = if up.uin.is_empty() {
                                "closed the connection before responding"
                            } else {
                                "sent an incomplete response head"
                            };
                            let why = format!("upstream {} {why}", up.key);
                            let kind = UpstreamError::Closed;
                            self.upstream_failed(c, registry, ts, kind, &why);
                            return true;
                        }
                        break;
                    }
                    Err(e) => {
                        let why = format!("upstream {}: invalid response: {e}", up.key);
                        let kind = UpstreamError::Invalid;
                        self.upstream_failed(c, registry, ts, kind, &why);
                        return true;
                    }
                    Ok(Some(r)) => {
                        progress = true;
                        up.uin.drain(..r.head_len);
                        if r.status == 101 && ex.upgrade {
                            c.cout.extend_from_slice(&interim_head(&r, ex.side()));
                            ex.sent += 1;
                            c.phase = Phase::Tunnel {
                                client_shut: false,
                                up_shut: false,
                            };
                            return true;
                        }
                        if r.status == 101 {
                            // Switching protocols without being asked (RFC 9110 7.8): what
                            // follows is another protocol, never an answer to pass on, and
                            // the connection must not go back to the pool.
                            let why =
                                format!("upstream {} switched protocols (101) unasked", up.key);
                            let kind = UpstreamError::Invalid;
                            self.upstream_failed(c, registry, ts, kind, &why);
                            return true;
                        }
                        if (100..200).contains(&r.status) {
                            // One that announced a body comes from a broken upstream.
                            ex.no_reuse |= !r.keep_alive;
                            if ex.client_minor == 1 {
                                c.cout.extend_from_slice(&interim_head(&r, ex.side()));
                            }
                            continue;
                        }
                        let coding = ex.accept.take().and_then(|a| compress_choice(&r, &a));
                        ex.enc = coding.and_then(|c| self.encoders.encoder(c)).map(Box::new);
                        let coding = ex.enc.as_ref().and(coding);
                        let dechunk =
                            r.body == Body::Chunked && (ex.client_minor == 0 || coding.is_some());
                        let until_close =
                            coding.is_none() && (r.body == Body::UntilClose || dechunk);
                        // An answer before the whole request body arrived ends the connection:
                        // the rest of the body cannot be told from a next request.
                        let keep = ex.client_keep
                            && !until_close
                            && !self.draining
                            && matches!(ex.req, ReqBody::Done);
                        c.cout.extend_from_slice(&client_head(
                            &r,
                            ex.side(),
                            keep,
                            r.body == Body::Chunked && !dechunk,
                            ex.client_minor == 0 && keep,
                            coding,
                        ));
                        ex.sent += 1;
                        ex.client_keep = keep;
                        if let (Some(k), Some(cc)) = (ex.cors_key.take(), &self.cors) {
                            let len = match r.body {
                                Body::None => Some(0),
                                Body::Length(n) => Some(n),
                                _ => None,
                            };
                            ex.capture = len.and_then(|n| cc.capture(k, &r, n)).map(Box::new);
                        }
                        let reusable = r.keep_alive && !ex.no_reuse;
                        ex.resp = match r.body {
                            Body::None | Body::Length(0) => Resp::Done { reusable },
                            Body::Length(n) => Resp::Body {
                                body: RespBody::Length(n),
                                dechunk,
                                reusable,
                            },
                            Body::Chunked => Resp::Body {
                                body: RespBody::Chunked(Box::default()),
                                dechunk,
                                reusable,
                            },
                            Body::UntilClose => Resp::Body {
                                body: RespBody::UntilClose,
                                dechunk,
                                reusable: false,
                            },
                        };
                        ex.head_only = matches!(ex.resp, Resp::Body { .. }) && up.uin.is_empty();
                        if let Some(st) = &mut c.stat {
                            st.status = r.status;
                        }
                    }
                },
                Resp::Body {
                    body,
                    dechunk,
                    reusable,
                } => {
                    let room = BUF.saturating_sub(c.cout.len());
                    if room == 0 {
                        break;
                    }
                    let n = up.uin.len().min(room);
                    if n > 0 {
                        ex.head_only = false;
                    }
                    let before = c.cout.len();
                    let finished;
                    match body {
                        RespBody::Length(left) => {
                            let k = (*left).min(n as u64) as usize;
                            if let Some(cap) = &mut ex.capture {
                                cap.body.extend_from_slice(&up.uin[..k]);
                                cap.left = cap.left.saturating_sub(k as u64);
                            }
                            c.cout.extend_from_slice(&up.uin[..k]);
                            up.uin.drain(..k);
                            *left -= k as u64;
                            progress |= k > 0;
                            finished = *left == 0;
                            if !finished && up.eof && up.uin.is_empty() {
                                log::warn!(
                                    "{}: upstream {} closed in the middle of a response",
                                    c.peer,
                                    up.key
                                );
                                self.stats.upstream_error(ex.target, UpstreamError::Closed);
                                c.dead = true;
                                return true;
                            }
                        }
                        RespBody::Chunked(dec) => {
                            let cout = &mut c.cout;
                            let res = if *dechunk {
                                dec.feed(&up.uin[..n], |d| cout.extend_from_slice(d))
                            } else {
                                dec.forward(&up.uin[..n], cout)
                            };
                            match res {
                                Ok(used) => {
                                    up.uin.drain(..used);
                                    progress |= used > 0;
                                    finished = dec.is_done();
                                    if !finished && up.eof && up.uin.is_empty() {
                                        log::warn!("{}: upstream {} closed in the middle of a chunked response", c.peer, up.key);
                                        self.stats.upstream_error(ex.target, UpstreamError::Closed);
                                        c.dead = true;
                                        return true;
                                    }
                                }
                                Err(e) => {
                                    log::warn!(
                                        "{}: upstream {} sent a bad chunked body: {e:?}",
                                        c.peer,
                                        up.key
                                    );
                                    self.stats.upstream_error(ex.target, UpstreamError::Invalid);
                                    c.dead = true;
                                    return true;
                                }
                            }
                        }
                        RespBody::UntilClose => {
                            c.cout.extend_from_slice(&up.uin[..n]);
                            up.uin.drain(..n);
                            progress |= n > 0;
                            finished = up.eof && up.uin.is_empty();
                        }
                    }
                    if let Some(enc) = &mut ex.enc {
                        let plain = c.cout.split_off(before);
                        // Flush when nothing more is at hand, so a slow stream is not held.
                        let flush = !finished && up.uin.is_empty() && !up.readable;
                        enc.feed(&plain, flush, &mut c.cout);
                        if finished {
                            if let Some(enc) = ex.enc.take() {
                                enc.finish(&mut c.cout);
                            }
                        }
                    }
                    if let Some(st) = &mut c.stat {
                        st.bytes_out += (c.cout.len() - before) as u64;
                    }
                    if finished {
                        ex.resp = Resp::Done {
                            reusable: *reusable && up.uin.is_empty(),
                        };
                        progress = true;
                    } else {
                        break;
                    }
                }
                Resp::Done { .. } => break,
            }
        }
        if let (ReqBody::Done, Resp::Done { reusable }) = (&ex.req, &ex.resp) {
            let reusable = *reusable;
            if let (Some(cap), Some(cc)) = (ex.capture.take(), &mut self.cors) {
                cc.put(*cap, self.now);
            }
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
            c.phase = if ex.client_keep {
                Phase::Head
            } else {
                Phase::Closing
            };
            return true;
        }
        if matches!(ex.resp, Resp::Done { .. }) && !matches!(ex.req, ReqBody::Done) {
            // The upstream answered before reading the whole request body (an error, say):
            // the rest of the body cannot be told apart from the next request, so close.
            if let Some(up) = c.up.take() {
                self.close_up(up, registry);
            }
            c.phase = Phase::Closing;
            return true;
        }
        progress
    }
}

/// Reads until the buffer is full, the socket would block, or it ends.
///
/// A short read means the socket is drained for now: with edge-triggered readiness, bytes
/// that arrive later raise a new event, so the extra read that would only say
/// `WouldBlock` is skipped, unless the event said the peer closed (`hup`), whose end of
/// stream must then be read.
#[allow(clippy::too_many_arguments)]
fn read_into(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    scratch: &mut [u8],
    hup: bool,
    readable: &mut bool,
    eof: &mut bool,
    dead: &mut bool,
) -> bool {
    let mut progress = false;
    while buf.len() < BUF {
        let want = (BUF - buf.len()).min(scratch.len());
        match s.read(&mut scratch[..want]) {
            Ok(0) => {
                *eof = true;
                return true;
            }
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                progress = true;
                if n < want && !hup {
                    *readable = false;
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return progress;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                *eof = true;
                *dead = true;
                return true;
            }
        }
    }
    progress
}

fn write_from(
    s: &mut Stream,
    buf: &mut Vec<u8>,
    more: bool,
    writable: &mut bool,
    dead: &mut bool,
) -> bool {
    let mut written = 0;
    while written < buf.len() {
        let r = if more {
            s.write_more(&buf[written..])
        } else {
            s.write(&buf[written..])
        };
        match r {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                *dead = true;
                break;
            }
        }
    }
    buf.drain(..written);
    written > 0
}

/// Moves as much of `from` into `to` as `to` has room for.
fn move_bytes(from: &mut Vec<u8>, to: &mut Vec<u8>) -> bool {
    let n = from.len().min(BUF.saturating_sub(to.len()));
    if n == 0 {
        return false;
    }
    to.extend_from_slice(&from[..n]);
    from.drain(..n);
    true
}

/// Queues a response generated by mothership; `close` ends the connection after it.
fn respond(c: &mut Conn, status: u16, body: &str, close: bool) {
    respond_to(c, "", status, body, close);
}

/// [`respond`] to a request: the answer to HEAD has no body.
fn respond_to(c: &mut Conn, method: &str, status: u16, body: &str, close: bool) {
    let mut b = Vec::with_capacity(body.len() + 1);
    b.extend_from_slice(body.as_bytes());
    b.push(b'\n');
    let ct = "text/plain; charset=utf-8";
    answer(c, method, status, b"", Some(ct), &b, close);
}

/// Queues a whole answer of our own; the connection goes on with the next request unless
/// `close`.
fn answer(
    c: &mut Conn,
    method: &str,
    status: u16,
    extra: &[u8],
    content_type: Option<&str>,
    body: &[u8],
    close: bool,
) {
    let head_only = method == "HEAD";
    c.cout.extend_from_slice(&http::response(
        status,
        extra,
        content_type,
        body,
        close,
        head_only,
    ));
    if let Some(s) = &mut c.stat {
        s.status = status;
        s.bytes_out += if head_only { 0 } else { body.len() as u64 };
    }
    c.phase = if close { Phase::Closing } else { Phase::Head };
}

/// Whether (and how) to compress this proxied response for a client whose Accept-Encoding
/// is `accept`.
fn compress_choice(r: &ResponseHead, accept: &str) -> Option<&'static str> {
    let framing_ok = r.codings.is_empty() || r.codings == ["chunked"];
    if !(200..300).contains(&r.status)
        || r.status == 204
        || r.status == 206
        || r.body == Body::None
        || !framing_ok
        || r.header("content-range").is_some()
    {
        return None;
    }
    let len = match r.body {
        Body::Length(n) => Some(n),
        _ => None,
    };
    let no_transform = http::has_token(&r.headers, "cache-control", "no-transform");
    compress::choose(
        &[accept],
        r.header("content-type").map(|h| h.value_str()),
        r.header("content-encoding").is_some(),
        len,
        no_transform,
    )
}

/// The client's IP address, for the rate limits (None for a Unix-socket client).
fn client_addr(peer: &str) -> Option<std::net::IpAddr> {
    client_ip(peer)?.parse().ok()
}

fn client_ip(peer: &str) -> Option<&str> {
    if peer == "unix" {
        return None;
    }
    let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
    Some(ip.trim_start_matches('[').trim_end_matches(']'))
}

/// Fields that mothership sets itself on the way upstream.
const SET_UPSTREAM: [&str; 9] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// A client field spelt with underscores that names one mothership sets (`X_Real_IP`,
/// `X-Forwarded_Proto`): WSGI and CGI backends map `-` and `_` to the same variable, so
/// passing it on would let a client forge the real one.
fn underscore_twin(name: &str) -> bool {
    name.contains('_')
        && SET_UPSTREAM.iter().any(|s| {
            s.len() == name.len()
                && s.bytes().zip(name.bytes()).all(|(a, b)| {
                    let b = if b == b'_' {
                        b'-'
                    } else {
                        b.to_ascii_lowercase()
                    };
                    a == b
                })
        })
}

/// The request head sent to the upstream: hop-by-hop headers removed, forwarding headers
/// set, framing kept. Public for the fuzz targets.
pub fn upstream_head(req: &RequestHead, target: &str, peer: &str, backend: &BindAddr) -> Vec<u8> {
    let conn = http::connection_tokens(&req.headers);
    let mut out = Vec::with_capacity(req.head_len + 128);
    let _ = write!(out, "{} {} HTTP/1.1\r\n", req.method, target);
    if req.host.is_none() {
        // HTTP/1.0 without Host goes out as HTTP/1.1, which requires one: name the backend.
        match backend {
            BindAddr::Tcp(a) => {
                let _ = write!(out, "host: {a}\r\n");
            }
            BindAddr::Unix(_) => out.extend_from_slice(b"host: localhost\r\n"),
        }
    }
    let mut xff: Vec<String> = Vec::new();
    for h in &req.headers {
        let n = h.name.as_str();
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff.push(h.value_str().trim().to_string());
            continue;
        }
        // Framing is written below from what was parsed, never copied.
        if http::is_hop_by_hop(n, &conn)
            || n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("x-real-ip")
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || n.eq_ignore_ascii_case("x-forwarded-host")
            || underscore_twin(n)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    match req.body {
        Body::Chunked => {
            let _ = write!(out, "transfer-encoding: {}\r\n", req.codings.join(", "));
        }
        Body::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Body::None | Body::UntilClose => {
            if req.content_length == Some(0) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    if let Some(ip) = client_ip(peer) {
        xff.retain(|v| !v.is_empty());
        xff.push(ip.to_string());
        let _ = write!(
            out,
            "x-forwarded-for: {}\r\nx-real-ip: {ip}\r\n",
            xff.join(", ")
        );
    } else if !xff.is_empty() {
        let _ = write!(out, "x-forwarded-for: {}\r\n", xff.join(", "));
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    if let Some(host) = req.host.as_deref().filter(|h| !h.is_empty()) {
        let _ = write!(out, "x-forwarded-host: {host}\r\n");
    }
    if let Some(proto) = &req.upgrade {
        let _ = write!(out, "connection: upgrade\r\nupgrade: {proto}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the response head for the client depends on in the exchange.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide {
    /// The request asked for an upgrade (WebSocket).
    pub upgrade: bool,
    /// Minor version of the client's request.
    pub client_minor: u8,
}

/// The head of a 1xx (or of the 101 that starts a tunnel) for the client.
fn interim_head(r: &ResponseHead, side: ClientSide) -> Vec<u8> {
    client_head(r, side, true, false, false, None)
}

/// The response head for the client. `compress`: the body is sent compressed with this
/// coding, chunked. Public for the fuzz targets.
pub fn client_head(
    r: &ResponseHead,
    ex: ClientSide,
    keep: bool,
    chunked: bool,
    say_keep_alive: bool,
    compress: Option<&str>,
) -> Vec<u8> {
    let conn = http::connection_tokens(&r.headers);
    let mut out = Vec::with_capacity(r.head_len + 64);
    let reason = if r.reason.is_empty() {
        http::reason(r.status)
    } else {
        &r.reason
    };
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason);
    for h in &r.headers {
        if http::is_hop_by_hop(&h.name, &conn) {
            continue;
        }
        // Framing is written from what was parsed; only a response without a body (HEAD,
        // 304) passes its Content-Length on, as information (never a 1xx or 204, which
        // may not have one).
        if h.is("content-length") && (r.body != Body::None || r.status < 200 || r.status == 204) {
            continue;
        }
        if compress.is_some() {
            if h.is("vary") {
                // Merged into the Vary written below.
                continue;
            }
            if h.is("etag") && !h.value.starts_with(b"W/") {
                // Another representation: the strong validator becomes weak.
                out.extend_from_slice(b"etag: W/");
                out.extend_from_slice(&h.value);
                out.extend_from_slice(b"\r\n");
                continue;
            }
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    if r.status == 101 && ex.upgrade {
        let proto = r
            .header("upgrade")
            .map(|h| h.value_str().to_string())
            .unwrap_or_default();
        let _ = write!(out, "connection: upgrade\r\nupgrade: {proto}\r\n");
    } else if (100..200).contains(&r.status) {
        // interim responses carry no connection management
    } else if let Some(coding) = compress {
        let mut vary: Vec<&str> = r
            .headers
            .iter()
            .filter(|h| h.is("vary"))
            .flat_map(|h| h.value_str().split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("accept-encoding"))
            .collect();
        if vary.contains(&"*") {
            // Varies with anything: `*` stays alone.
            vary = vec!["*"];
        } else {
            vary.push("Accept-Encoding");
        }
        let _ = write!(
            out,
            "content-encoding: {coding}\r\nvary: {}\r\ntransfer-encoding: chunked\r\n",
            vary.join(", ")
        );
    } else if chunked {
        let _ = write!(out, "transfer-encoding: {}\r\n", r.codings.join(", "));
    } else if let Body::Length(n) = r.body {
        let _ = write!(out, "content-length: {n}\r\n");
    } else if r.body == Body::UntilClose && !r.codings.is_empty() && ex.client_minor == 1 {
        // Close-delimited with other codings (gzip, say): pass them on.
        let _ = write!(out, "transfer-encoding: {}\r\n", r.codings.join(", "));
    }
    if r.status >= 200 {
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        } else if say_keep_alive {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
