//! Bays: the docking link to each bay and the WebSocket clients the edge terminates for
//! it (COMPAT.md sections 3 and 4).
//!
//! A bay listens on a Unix socket (`MS_SOCKET_PATH`). Once the supervisor says it is
//! starting, the edge connects: at once, the moment the socket appears in the watched
//! socket folder (`watch.rs`), and after a short, doubling delay while it is not there
//! or not listening yet. It reads Dock and answers Moored with the bay's `config`.
//! A bay that docks with version 3 or later gets version-3 frames (Cargo with its kind);
//! one that docks with an earlier version gets version-1 frames, and Moored names the
//! version it sent, at most 3. Nothing else is written to the bay until Moored has been
//! out for `MOOR_SETTLE` (a version-1 bay may lose what arrives in the same read as
//! Moored); then the bay is ready: the supervisor is told (`Message::Docked`), requests
//! held for it go on, and clients that outlived its previous run are boarded again with
//! `"resumed": true`.
//!
//! A WebSocket client routed to a bay is a connection in `Phase::Socket`: its frames are
//! decoded from `cin` (`proto::ws`) and become Cargo frames queued on the link; the bay's
//! Cargo frames become WebSocket frames in the client's `cout`. Bounds: a link with more
//! than `LINK_HIGH` bytes queued stops the reading of its clients (a slow bay stalls its
//! clients, never grows memory); a client with more than `websocket_send_queue` bytes
//! waiting is closed with 1008 and the bay told (a slow client never stalls the bay).
//!
//! A protocol error on the link (unknown type, malformed or oversize frame, a frame only
//! mothership sends) is logged with the bay's name, the link closed and the bay restarted
//! (`Message::BayFault`). Its clients stay connected meanwhile, for up to
//! `websocket_resume_timeout`, then are closed with 1012.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;
use crate::manifest::Role;
use crate::proto::dock::{self, kind as frame, MessageKind};
use crate::proto::ws;

/// Bytes queued for a bay past which its clients are not read any more (until it drains
/// below half).
pub(super) const LINK_HIGH: usize = 1 << 20;
/// Rounds of reading and handling frames on one link per turn (each reads up to `BUF`):
/// a bay that floods frames does not starve the rest of the loop.
const LINK_ROUNDS: usize = 64;
/// First delay before connecting again to a bay whose socket is not there yet; it doubles
/// up to `RETRY_CAP`.
const RETRY_FIRST: Duration = Duration::from_millis(10);
const RETRY_CAP: Duration = Duration::from_millis(500);
const RETRY_CAP_WATCHED: Duration = Duration::from_secs(2);
/// How long after Moored is out nothing else is sent to the bay.
const MOOR_SETTLE: Duration = Duration::from_millis(50);
/// The highest docking version spoken.
pub(super) const VERSION: u32 = 3;

/// Where a bay's docking link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LinkState {
    /// No link: the bay is not running, or its link was lost and it is being restarted.
    Down,
    /// Its socket did not take a connection yet: trying again at the link timer.
    Retry,
    /// Connected; waiting for Dock.
    Docking,
    /// Moored sent; ready once it has been out for `MOOR_SETTLE`.
    Settling,
    /// Ready: clients are boarded and their messages flow.
    Moored,
}

pub(super) struct Link {
    pub(super) stream: Stream,
    pub(super) gen: u32,
    pub(super) lin: Buf,
    pub(super) lout: Buf,
    pub(super) readable: bool,
    pub(super) writable: bool,
    pub(super) hup: bool,
    pub(super) eof: bool,
}

impl Link {
    /// A link on a connected socket (registered by the caller).
    pub(super) fn new(stream: Stream, gen: u32) -> Link {
        Link {
            stream,
            gen,
            lin: Buf::new(),
            lout: Buf::new(),
            readable: true,
            writable: true,
            hup: false,
            eof: false,
        }
    }

    /// Reads what the socket has: up to a buffer, or to the end of the frame at the
    /// front (bounded by `max`). `Err` when reading failed.
    pub(super) fn read(
        &mut self,
        bufs: &mut buffers::BufPool,
        scratch: &mut [u8],
        max: usize,
    ) -> Result<bool, ()> {
        let want = match self.lin.get(1..dock::HEADER) {
            Some(n) => {
                let n = u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize;
                (n.min(max) + dock::HEADER).max(BUF)
            }
            None => BUF,
        };
        if !self.readable || self.eof || self.lin.len() >= want {
            return Ok(false);
        }
        let mut dead = false;
        bufs.lend(&mut self.lin);
        let progress = read_into(
            &mut self.stream,
            &mut self.lin,
            scratch,
            want,
            self.hup,
            &mut self.readable,
            &mut self.eof,
            &mut dead,
        );
        if dead {
            return Err(());
        }
        Ok(progress)
    }

    /// Writes what is queued. `Err` when writing failed (the bay closed its side).
    pub(super) fn write(&mut self) -> Result<bool, ()> {
        if !self.writable || self.lout.is_empty() {
            return Ok(false);
        }
        let mut dead = false;
        let wrote = write_from(
            &mut self.stream,
            &mut self.lout,
            false,
            &mut self.writable,
            &mut dead,
        );
        if dead {
            return Err(());
        }
        Ok(wrote)
    }
}

/// Hands the whole frames at the front of `lin` to `handle`, in order, until one fails or
/// only part of a frame is left: the bytes taken, and the protocol error that stopped it.
pub(super) fn each_frame(
    edge: &mut Edge,
    lin: &[u8],
    max: usize,
    mut handle: impl FnMut(&mut Edge, u8, &[u8]) -> Result<(), String>,
) -> (usize, Option<String>) {
    let mut used = 0;
    loop {
        match dock::next_frame(&lin[used..], max) {
            Ok(Some((f, n))) => {
                used += n;
                if let Err(e) = handle(edge, f.kind, f.payload) {
                    return (used, Some(e));
                }
            }
            Ok(None) => return (used, None),
            Err(e) => return (used, Some(e.to_string())),
        }
    }
}

pub(super) struct Bay {
    pub(super) id: ProgramId,
    pub(super) name: String,
    pub(super) socket: PathBuf,
    pub(super) config: Vec<(String, String)>,
    pub(super) subprotocols: Vec<String>,
    pub(super) link: Option<Link>,
    pub(super) state: LinkState,
    /// The frame version the link speaks (1 or 3), from Dock.
    pub(super) version: u32,
    /// The bay said it sends Broadcast frames.
    pub(super) broadcast: bool,
    pub(super) clients: HashMap<u32, ConnId>,
    pub(super) next_conn: u32,
    /// Clients that stopped reading because the bay was not ready or its queue was full.
    pub(super) stalled: Vec<ConnId>,
    /// The supervisor runs it (starting or running).
    pub(super) running: bool,
    /// The retry or settle timer.
    pub(super) timer: Option<TimerId>,
    /// Clients wait for the bay to come back until this fires.
    pub(super) resume_timer: Option<TimerId>,
    pub(super) retry: Duration,
    pub(super) stats: metrics::BayCounts,
    /// Version 3: links that carry HTTP exchanges, one at a time each (`bay_http.rs`).
    pub(super) http: Vec<Option<super::bay_http::HttpLink>>,
    /// How many HTTP links it takes (Dock's `threads`, else 1).
    pub(super) threads: usize,
    pub(super) next_request: u32,
    /// HTTP requests waiting for a free link, oldest first.
    pub(super) http_wait: std::collections::VecDeque<ConnId>,
    /// Its working folder: file replies are served from beneath it.
    pub(super) cwd: PathBuf,
    /// `websocket = "app"`: handshakes are HTTP exchanges the app takes over.
    pub(super) websocket_app: bool,
}

/// A WebSocket client of a bay.
pub(super) struct WsConn {
    bay: ProgramId,
    conn_id: u32,
    decoder: ws::Decoder,
    /// What Boarding carries, kept to board the client again after a restart of the bay.
    path: String,
    headers: Vec<(String, String)>,
    protocol: Option<String>,
    /// On the bay's stalled list.
    stalled: bool,
    /// Bytes in `cin` when last looked at: more means the client spoke.
    seen: usize,
    last_heard: Instant,
    ping_sent: Option<Instant>,
}

impl WsConn {
    /// Its bay does not take its messages now: it is not read further.
    pub(super) fn stalled(&self) -> bool {
        self.stalled
    }

    /// When the client is pinged, or given up if it was pinged already. A stalled client
    /// is not: what it sent is not read (its pongs neither) until its bay takes it.
    pub(super) fn deadline(&self, every: Duration, now: Instant) -> Instant {
        if self.stalled {
            return deadline(now, every);
        }
        deadline(self.ping_sent.unwrap_or(self.last_heard), every)
    }
}

/// Takes group and other permissions off a socket file of the socket folder. A file
/// that is not this user's is left alone (connecting to it then fails or is refused),
/// and so is anything but a socket (a symlink's target is not ours to change).
pub fn private_socket(path: &Path) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.file_type().is_socket() && meta.uid() == me && meta.mode() & 0o077 != 0 {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// The bays of the manifest, by program index.
pub(super) fn bays_of(m: &Manifest, socket_dir: &Path) -> Vec<Option<Bay>> {
    m.programs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            matches!(p.role, Role::Bay { .. }).then(|| Bay {
                id: ProgramId::at(i),
                name: p.name.clone(),
                socket: socket_dir.join(format!("{}.sock", p.name)),
                config: p.config.clone(),
                subprotocols: p.subprotocols.clone(),
                link: None,
                state: LinkState::Down,
                version: 1,
                broadcast: false,
                clients: HashMap::new(),
                next_conn: 1,
                stalled: Vec::new(),
                running: false,
                timer: None,
                resume_timer: None,
                retry: RETRY_FIRST,
                stats: metrics::BayCounts::default(),
                http: Vec::new(),
                threads: 1,
                next_request: 1,
                http_wait: std::collections::VecDeque::new(),
                cwd: p.cwd.clone(),
                websocket_app: p.websocket_app,
            })
        })
        .collect()
}

/// The subprotocol to select: the first the client offers that the bay speaks, or, for a
/// bay that lists none, the first the client offers.
fn select<'a>(offered: &'a [String], spoken: &[String]) -> Option<&'a String> {
    if spoken.is_empty() {
        return offered.first();
    }
    offered.iter().find(|o| spoken.contains(o))
}

/// Queues a close frame for the client (once).
fn send_close(c: &mut Conn, code: u16, reason: &str) {
    let mut f = Vec::with_capacity(4 + reason.len().min(123));
    ws::encode_close(code, reason, &mut f);
    c.cout.extend_from_slice(&f);
    c.phase = Phase::CLOSING;
}

impl Edge {
    pub(super) fn is_bay(&self, t: ProgramId) -> bool {
        matches!(self.bays.get(t.index()), Some(Some(_)))
    }

    /// The bay is docked and takes clients.
    pub(super) fn bay_up(&self, t: ProgramId) -> bool {
        matches!(self.bays.get(t.index()), Some(Some(b)) if b.state == LinkState::Moored)
    }

    /// The bay may still dock without anyone's action: it runs, or waits to (re)start.
    pub(super) fn bay_coming_up(&self, t: ProgramId, fleet: &FleetView) -> bool {
        let running = matches!(self.bays.get(t.index()), Some(Some(b)) if b.running);
        !self.draining
            && (running
                || fleet
                    .ships
                    .get(t.index())
                    .is_some_and(|s| matches!(s.state, "waiting" | "starting" | "backoff")))
    }

    /// A request routed to a bay: a WebSocket handshake is answered here and the client
    /// boarded; a bay that is not docked yet makes it wait like a ship coming up.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn route_to_bay(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        target: ProgramId,
        strip: Option<&str>,
        cors_key: Option<String>,
        fleet: &FleetView,
        registry: &Registry,
    ) {
        let keep = req.body == Body::None && req.keep_alive;
        if self.draining {
            self.refuse(c, &req, 503, "landing", true);
            return;
        }
        // Not docked yet: the request waits as one for a ship coming up does.
        if !self.bay_up(target) {
            if self.bay_coming_up(target, fleet) {
                let strip = strip.map(str::to_string);
                self.wait(c, id, req, target, strip, cors_key, Wait::ComingUp);
                return;
            }
            log::warn!(
                "{} {} {}: bay {} is not docked",
                c.peer,
                req.method,
                req.target,
                self.name_of(target)
            );
            self.refuse(c, &req, 503, "bay not available", !keep);
            return;
        }
        let (version, to_app) = match self.bays.get(target.index()) {
            Some(Some(b)) => (b.version, b.websocket_app),
            _ => return,
        };
        // A WebSocket handshake is boarded; anything else (a stray or other Upgrade
        // included, which a server may ignore) is plain HTTP, for a bay of version 3.
        let websocket = http::has_token(&req.headers, "upgrade", "websocket")
            && http::has_token(&req.headers, "connection", "upgrade");
        if !websocket || to_app {
            if version >= 3 {
                self.http_to_bay(c, id, req, target, strip, websocket, registry);
            } else {
                c.cin.consume(req.head_len);
                let body = b"this route is served by a bay of docking version 1: WebSocket only\n";
                let extra = b"upgrade: websocket\r\nconnection: upgrade\r\n";
                answer(c, &req.method, 426, extra, Some(TEXT), body, !keep);
                self.account(c);
            }
            return;
        }
        let hs = match ws::handshake(&req) {
            Ok(h) => h,
            Err(r) => {
                log::debug!("{} {} {}: {}", c.peer, req.method, req.target, r.why);
                self.refuse(c, &req, r.status, r.why, true);
                return;
            }
        };
        if req.body != Body::None {
            self.refuse(c, &req, 400, "a WebSocket handshake has no body", true);
            return;
        }
        let full = matches!(self.bays.get(target.index()), Some(Some(b)) if b.link.as_ref().is_some_and(|l| l.lout.len() >= LINK_HIGH));
        if full {
            log::warn!(
                "{} {}: bay {} does not read what is sent to it; answering 503",
                c.peer,
                req.target,
                self.name_of(target)
            );
            self.unavailable(c, &req, RETRY_SOON, true);
            return;
        }
        let now = self.now;
        let cid = ConnId {
            slot: id,
            gen: c.gen,
        };
        let Some(Some(bay)) = self.bays.get_mut(target.index()) else {
            return;
        };
        let protocol = select(&hs.protocols, &bay.subprotocols).cloned();
        let mut conn_id = bay.next_conn;
        while conn_id == 0 || bay.clients.contains_key(&conn_id) {
            conn_id = conn_id.wrapping_add(1);
        }
        bay.next_conn = conn_id.wrapping_add(1);
        bay.clients.insert(conn_id, cid);
        let mut headers: Vec<(String, String)> = Vec::with_capacity(req.headers.len());
        for h in &req.headers {
            let name = h.name.to_ascii_lowercase();
            let value = String::from_utf8_lossy(&h.value);
            match headers.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => {
                    v.push_str(", ");
                    v.push_str(&value);
                }
                None => headers.push((name, value.into_owned())),
            }
        }
        let ws = WsConn {
            bay: target,
            conn_id,
            decoder: ws::Decoder::default(),
            path: router::rewrite_target(&req.target, strip),
            headers,
            protocol,
            stalled: false,
            seen: 0,
            last_heard: now,
            ping_sent: None,
        };
        c.cin.consume(req.head_len);
        c.cout
            .extend_from_slice(&ws::switching_protocols(&hs, ws.protocol.as_deref()));
        self.finish(c, 101);
        log::debug!(
            "{} {}: boarded bay {} as conn {conn_id}",
            c.peer,
            req.target,
            self.name_of(target)
        );
        self.board(target, &ws, &c.peer, false);
        c.phase = Phase::Socket(Box::new(ws));
    }

    /// Queues Boarding for a client on the bay's link.
    fn board(&mut self, target: ProgramId, ws: &WsConn, peer: &str, resumed: bool) {
        let b = dock::Boarding {
            conn_id: ws.conn_id,
            path: &ws.path,
            remote_addr: peer,
            headers: &ws.headers,
            protocol: ws.protocol.as_deref(),
            resumed,
        };
        let Some(bay) = self.bays.get_mut(target.index()).and_then(Option::as_mut) else {
            return;
        };
        if let Some(l) = &mut bay.link {
            let mut f = Vec::new();
            dock::encode_boarding(&b, &mut f);
            l.lout.extend_from_slice(&f);
            self.links_due.push(target.index());
        }
    }

    /// Tells the bay that a client left or was closed.
    fn tell_bay(&mut self, target: ProgramId, conn_id: u32, code: u16, reason: &str) {
        let Some(bay) = self.bays.get_mut(target.index()).and_then(Option::as_mut) else {
            return;
        };
        bay.clients.remove(&conn_id);
        // (While settling, the clients it has are not boarded on this run yet.)
        if bay.state != LinkState::Moored {
            return;
        }
        if let Some(l) = &mut bay.link {
            let mut f = Vec::new();
            let d = dock::Disembark {
                conn_id,
                code,
                reason: reason.to_string(),
            };
            dock::encode_disembark(&d, &mut f);
            l.lout.extend_from_slice(&f);
            self.links_due.push(target.index());
        }
    }

    /// One step of a WebSocket client: its frames become Cargo for the bay while the bay
    /// takes them. Puts back the phase it keeps or sets the next one.
    pub(super) fn ws_step(&mut self, c: &mut Conn, id: usize, mut ws: Box<WsConn>) -> bool {
        let max = self.settings.websocket_max_message;
        let queue = self.settings.websocket_send_queue;
        let now = self.now;
        let mut progress = false;
        ws_seen(c, &mut ws, now);
        let target = ws.bay;
        loop {
            let Some(bay) = self.bays.get_mut(target.index()).and_then(Option::as_mut) else {
                c.dead = true;
                return true;
            };
            let takes = bay.state == LinkState::Moored
                && bay.link.as_ref().is_some_and(|l| l.lout.len() < LINK_HIGH);
            if !takes {
                if !c.cin.is_empty() && !ws.stalled {
                    ws.stalled = true;
                    bay.stalled.push(ConnId {
                        slot: id,
                        gen: c.gen,
                    });
                }
                break;
            }
            if ws.stalled {
                // Woken: read on, and count it as heard from (its pongs were not read).
                ws.stalled = false;
                ws.last_heard = now;
                ws.ping_sent = None;
            }
            let version = bay.version;
            match ws.decoder.next(&c.cin, max) {
                Err(v) => {
                    log::debug!("{}: WebSocket: {} (closing with {})", c.peer, v.why, v.code);
                    c.cin.clear();
                    send_close(c, v.code, v.why);
                    self.tell_bay(target, ws.conn_id, v.code, v.why);
                    return true;
                }
                Ok(ws::Step::Need) => break,
                Ok(ws::Step::Took(n)) => {
                    c.cin.consume(n);
                    progress = true;
                }
                Ok(ws::Step::Event(e, n)) => {
                    c.cin.consume(n);
                    progress = true;
                    let (kind, data) = match e {
                        ws::Event::Text(d) => (MessageKind::Text, d),
                        ws::Event::Binary(d) => (MessageKind::Binary, d),
                        ws::Event::Ping(p) => {
                            if c.cout.len() < queue {
                                let (h, hn) = ws::head(0xA, p.len());
                                c.cout.extend_from_slice(&h[..hn]);
                                c.cout.extend_from_slice(&p);
                            }
                            continue;
                        }
                        ws::Event::Pong(_) => continue,
                        ws::Event::Close { code, reason } => {
                            let reason = String::from_utf8_lossy(&reason).into_owned();
                            log::debug!("{}: WebSocket client closes ({code} {reason})", c.peer);
                            c.cin.clear();
                            // The close is answered with the client's code (none if it
                            // gave none).
                            if code == 1005 {
                                let (h, hn) = ws::head(0x8, 0);
                                c.cout.extend_from_slice(&h[..hn]);
                                c.phase = Phase::CLOSING;
                            } else {
                                send_close(c, code, "");
                            }
                            self.tell_bay(target, ws.conn_id, code, &reason);
                            return true;
                        }
                    };
                    let cargo = dock::Cargo {
                        conn_id: ws.conn_id,
                        kind,
                        data: &data,
                    };
                    if let Some(Some(bay)) = self.bays.get_mut(target.index()) {
                        if let Some(l) = &mut bay.link {
                            let mut f = Vec::with_capacity(data.len() + 16);
                            dock::encode_cargo(version, &cargo, &mut f);
                            l.lout.extend_from_slice(&f);
                            bay.stats.to_bay += 1;
                        }
                    }
                    self.links_due.push(target.index());
                }
            }
        }
        if c.c_eof && c.cin.is_empty() {
            log::debug!("{}: WebSocket client left without a close", c.peer);
            self.tell_bay(target, ws.conn_id, 1006, "connection lost");
            c.dead = true;
            return true;
        }
        ws_seen(c, &mut ws, now);
        c.phase = Phase::Socket(ws);
        progress
    }

    /// A client connection of a bay goes away: the bay is told, unless it knows.
    pub(super) fn ws_gone(&mut self, ws: &WsConn, cid: ConnId) {
        let ours = matches!(self.bays.get(ws.bay.index()), Some(Some(b)) if b.clients.get(&ws.conn_id) == Some(&cid));
        if ours {
            self.tell_bay(ws.bay, ws.conn_id, 1006, "connection lost");
        }
    }

    /// The client's ping timer: a silent client is pinged, and given up when it stays
    /// silent as long again.
    pub(super) fn ws_timer(&mut self, c: &mut Conn) {
        let now = self.now;
        let Phase::Socket(ws) = &mut c.phase else {
            return;
        };
        if ws.stalled {
            return;
        }
        if ws.ping_sent.is_none() {
            ws.ping_sent = Some(now);
            let (h, hn) = ws::head(0x9, 0);
            c.cout.extend_from_slice(&h[..hn]);
            return;
        }
        log::debug!(
            "{}: WebSocket client silent for twice {:?}; closing",
            c.peer,
            self.settings.websocket_ping_interval
        );
        let (target, conn_id) = (ws.bay, ws.conn_id);
        self.tell_bay(target, conn_id, 1006, "no answer to ping");
        c.dead = true;
    }

    /// A message from the bay for one client; `wake`: clients with something to write.
    fn deliver(&mut self, b: usize, conn_id: u32, kind: MessageKind, data: &[u8]) {
        let queue = self.settings.websocket_send_queue;
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let Some(&cid) = bay.clients.get(&conn_id) else {
            bay.stats.unknown += 1;
            return;
        };
        let target = bay.id;
        let c = match self.conns.get_mut(cid.slot) {
            Some(Some(c)) if c.gen == cid.gen && matches!(c.phase, Phase::Socket(_)) => c,
            _ => {
                bay.clients.remove(&conn_id);
                return;
            }
        };
        bay.stats.from_bay += 1;
        // One message always fits an empty queue (frames are bounded by docking_max_frame).
        if !c.cout.is_empty() && c.cout.len() + data.len() > queue {
            log::warn!(
                "{}: WebSocket client of {} reads too slowly ({} bytes waiting); closing it with 1008",
                c.peer,
                bay.name,
                c.cout.len()
            );
            bay.stats.slow_clients += 1;
            send_close(c, 1008, "too slow");
            self.ws_wake.push(cid);
            self.tell_bay(target, conn_id, 1008, "client too slow");
            return;
        }
        let op = match kind {
            MessageKind::Text => 0x1,
            MessageKind::Binary => 0x2,
        };
        // A client with bytes already waiting is on the wake list, or waits for its
        // socket to take more: listed once, however many messages come.
        let first = c.cout.is_empty();
        let (h, hn) = ws::head(op, data.len());
        c.cout.extend_from_slice(&h[..hn]);
        c.cout.extend_from_slice(data);
        if first {
            self.ws_wake.push(cid);
        }
    }

    /// Closes a client of bay `b` with `code` (the bay closes it, or gave up on it).
    fn close_client(&mut self, cid: ConnId, code: u16, reason: &str) {
        if let Some(Some(c)) = self.conns.get_mut(cid.slot) {
            if c.gen == cid.gen && matches!(c.phase, Phase::Socket(_)) {
                send_close(c, code, reason);
                self.ws_wake.push(cid);
            }
        }
    }

    /// The supervisor says a bay changed state: it is started (connect to it) or stopped
    /// (its link goes).
    pub(super) fn bay_state(&mut self, t: ProgramId, state: &str, registry: &Registry) {
        let b = t.index();
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        match state {
            "starting" => {
                bay.running = true;
                bay.retry = RETRY_FIRST;
                if bay.link.is_some() {
                    self.link_lost(b, "replaced: the bay started again", false, registry);
                }
                self.connect_bay(b, registry);
            }
            "running" => bay.running = true,
            _ => {
                bay.running = false;
                if let Some(tm) = bay.timer.take() {
                    self.timers.cancel(tm);
                }
                if bay.state == LinkState::Retry {
                    bay.state = LinkState::Down;
                }
                if bay.link.is_some() {
                    self.link_lost(b, "closed: the bay stops", false, registry);
                }
            }
        }
    }

    /// Tries to connect to bay `b`'s socket; tries again later while it is not there.
    fn connect_bay(&mut self, b: usize, registry: &Registry) {
        let gen = self.gens.next();
        let now = self.now;
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        if !bay.running || bay.link.is_some() {
            return;
        }
        // The bay made its socket with its own umask; in a folder its group may pass
        // through (`control_group`), only mothership's user may talk to it.
        private_socket(&bay.socket);
        let tried = mio::net::UnixStream::connect(&bay.socket);
        match tried {
            Ok(s) => {
                let mut stream = Stream::Unix(s);
                if let Err(e) = registry.register(
                    &mut stream,
                    token(KIND_DOCK, b, gen),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::warn!("{}: cannot watch its docking socket: {e}", bay.name);
                    bay.state = LinkState::Retry;
                    let at = deadline(now, RETRY_CAP);
                    if let Some(tm) = bay.timer.take() {
                        self.timers.cancel(tm);
                    }
                    bay.timer = Some(self.timers.insert(at, TimerKey::BayLink(b)));
                    return;
                }
                if let Some(tm) = bay.timer.take() {
                    self.timers.cancel(tm);
                }
                log::debug!("{}: connected to {}", bay.name, bay.socket.display());
                bay.link = Some(Link::new(stream, gen));
                bay.state = LinkState::Docking;
                bay.retry = RETRY_FIRST;
                self.links_due.push(b);
            }
            Err(e) => {
                log::trace!("{}: {}: {e}; trying again", bay.name, bay.socket.display());
                bay.state = LinkState::Retry;
                let at = deadline(now, bay.retry);
                // With the folder watched, a socket that appears is tried at once: the
                // timer is only for one that appears before it listens.
                let cap = if self.watch.is_some() {
                    RETRY_CAP_WATCHED
                } else {
                    RETRY_CAP
                };
                bay.retry = (bay.retry * 2).min(cap);
                if let Some(tm) = bay.timer.take() {
                    self.timers.cancel(tm);
                }
                bay.timer = Some(self.timers.insert(at, TimerKey::BayLink(b)));
            }
        }
    }

    /// Files appeared in the socket folder: bays waiting for their socket are tried now.
    fn sockets_appeared(&mut self, registry: &Registry) {
        let Some(w) = &self.watch else { return };
        let mut names = Vec::new();
        let all = w.read(&mut names);
        for b in 0..self.bays.len() {
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                continue;
            };
            let named = bay
                .socket
                .file_name()
                .is_some_and(|f| names.iter().any(|n| n == f));
            if bay.state == LinkState::Retry && (all || named) {
                if let Some(t) = bay.timer.take() {
                    self.timers.cancel(t);
                }
                bay.state = LinkState::Down;
                bay.retry = RETRY_FIRST;
                log::trace!("{}: its socket appeared", bay.name);
                self.connect_bay(b, registry);
            }
        }
    }

    /// A readiness event for a docking link.
    pub(super) fn dock_ready(
        &mut self,
        b: usize,
        gen: u32,
        ev: (bool, bool, bool),
        registry: &Registry,
        fleet: &FleetView,
    ) {
        if b == self.bays.len() {
            self.sockets_appeared(registry);
            return;
        }
        if let (b, Some(n)) = bay_http::unslot(b) {
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                return;
            };
            let Some(Some(hl)) = bay.http.get_mut(n) else {
                return;
            };
            let l = &mut hl.link;
            if l.gen != gen {
                return;
            }
            l.readable |= ev.0;
            l.writable |= ev.1;
            l.hup |= ev.2;
            self.drive_http_link(b, n, registry, fleet);
            return;
        }
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let Some(l) = bay.link.as_mut().filter(|l| l.gen == gen) else {
            return;
        };
        l.readable |= ev.0;
        l.writable |= ev.1;
        l.hup |= ev.2;
        self.drive_link(b, registry, fleet);
    }

    /// Reads and handles what the bay sent, writes what is queued for it, then writes to
    /// the clients that got messages.
    fn drive_link(&mut self, b: usize, registry: &Registry, fleet: &FleetView) {
        let max = self.settings.docking_max_frame;
        let mut failed: Option<(String, bool)> = None;
        for round in 0.. {
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                return;
            };
            let Some(l) = bay.link.as_mut() else { break };
            let Ok(mut progress) = l.read(&mut self.bufs, &mut self.scratch, max) else {
                failed = Some(("read failed".into(), true));
                break;
            };
            // Handle whole frames.
            let lin = std::mem::take(&mut l.lin);
            let (used, err) = each_frame(self, &lin, max, |e, k, p| e.link_frame(b, k, p));
            let mut lin = lin;
            lin.consume(used);
            progress |= used > 0;
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                return;
            };
            let Some(l) = bay.link.as_mut() else { break };
            l.lin = lin;
            if let Some(e) = err {
                failed = Some((e, true));
                break;
            }
            match l.write() {
                Ok(wrote) => progress |= wrote,
                Err(()) => {
                    failed = Some(("write failed (the bay closed its side)".into(), true));
                    break;
                }
            }
            if l.lout.len() < LINK_HIGH / 2 && !bay.stalled.is_empty() {
                self.pending.append(&mut bay.stalled);
            }
            if bay.state == LinkState::Settling && l.lout.is_empty() && bay.timer.is_none() {
                let at = deadline(self.now, MOOR_SETTLE);
                bay.timer = Some(self.timers.insert(at, TimerKey::BayLink(b)));
            }
            if l.eof {
                let what = if l.lin.is_empty() {
                    "closed by the bay"
                } else {
                    "closed by the bay in the middle of a frame"
                };
                failed = Some((what.into(), true));
                break;
            }
            // Clients with messages from this round write them now, before the next
            // round adds to their queues.
            self.wake_clients(registry, fleet);
            if !progress {
                break;
            }
            if round + 1 >= LINK_ROUNDS {
                // Fairness: the rest next turn.
                self.links_due.push(b);
                break;
            }
        }
        if let Some((why, fault)) = failed {
            self.link_lost(b, &why, fault, registry);
        }
        self.wake_clients(registry, fleet);
    }

    /// Drives the clients that got something to write.
    pub(super) fn wake_clients(&mut self, registry: &Registry, fleet: &FleetView) {
        while !self.ws_wake.is_empty() {
            for cid in std::mem::take(&mut self.ws_wake) {
                if self.live(cid) {
                    self.drive(cid.slot, registry, fleet);
                }
            }
        }
    }

    /// One frame from bay `b`.
    fn link_frame(&mut self, b: usize, k: u8, payload: &[u8]) -> Result<(), String> {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return Ok(());
        };
        let docked = matches!(bay.state, LinkState::Settling | LinkState::Moored);
        match k {
            frame::DOCK if bay.state == LinkState::Docking => {
                let d = dock::decode_dock(payload).map_err(|e| e.to_string())?;
                if d.version == 0 {
                    return Err("Dock with version 0".into());
                }
                if !d.ship.eq_ignore_ascii_case(&bay.name) {
                    log::warn!(
                        "{}: docked as `{}` (the manifest names it `{}`)",
                        bay.name,
                        d.ship,
                        bay.name
                    );
                }
                bay.version = if d.version >= 3 { 3 } else { 1 };
                bay.broadcast = d.broadcast;
                bay.threads =
                    usize::from(d.threads.unwrap_or(1)).clamp(1, super::bay_http::MAX_LINKS);
                let mut f = Vec::new();
                dock::encode_moored(d.version.min(VERSION), &bay.config, &mut f);
                if let Some(l) = &mut bay.link {
                    l.lout.extend_from_slice(&f);
                }
                bay.state = LinkState::Settling;
                let mut extra = String::new();
                if let Some(p) = d.pid {
                    extra.push_str(&format!(", pid {p}"));
                }
                if let Some(t) = d.threads {
                    extra.push_str(&format!(", {t} threads"));
                }
                if d.broadcast {
                    extra.push_str(", broadcast");
                }
                log::info!(
                    "{}: docked (protocol version {}{extra})",
                    bay.name,
                    d.version
                );
                Ok(())
            }
            frame::DOCK => Err("a second Dock".into()),
            _ if !docked => Err(format!("frame 0x{k:02x} before Dock")),
            frame::CARGO => {
                // A version-1 bay's Cargo is conn_id and data, whatever the data says.
                let cg = if bay.version >= 3 {
                    dock::decode_cargo(payload)
                } else {
                    dock::decode_cargo_v1(payload)
                }
                .map_err(|e| e.to_string())?;
                self.deliver(b, cg.conn_id, cg.kind, cg.data);
                Ok(())
            }
            frame::BROADCAST if bay.broadcast => {
                let m = dock::decode_broadcast(payload).map_err(|e| e.to_string())?;
                let ids: Vec<u32> = if m.conn_ids.is_empty() && bay.state == LinkState::Moored {
                    bay.clients.keys().copied().collect()
                } else if m.conn_ids.is_empty() {
                    // Settling: its clients are not boarded on this run yet.
                    Vec::new()
                } else {
                    m.conn_ids
                };
                for id in ids {
                    self.deliver(b, id, m.kind, m.data);
                }
                Ok(())
            }
            frame::BROADCAST => {
                Err("Broadcast from a bay whose Dock did not say \"broadcast\": true".into())
            }
            frame::DISEMBARK => {
                let d = dock::decode_disembark(payload).map_err(|e| e.to_string())?;
                // The same Disembark again, or for a client already gone: nothing to do.
                if let Some(cid) = bay.clients.remove(&d.conn_id) {
                    let code = if (1000..=4999).contains(&d.code)
                        && !matches!(d.code, 1004..=1006 | 1015)
                    {
                        d.code
                    } else {
                        1000
                    };
                    self.close_client(cid, code, &d.reason);
                } else {
                    bay.stats.unknown += 1;
                }
                Ok(())
            }
            frame::REPLY | frame::HAUL | frame::READY => {
                Err(format!("HTTP frame 0x{k:02x} with no request in flight"))
            }
            _ => Err(format!(
                "frame 0x{k:02x} is sent by mothership, not by bays"
            )),
        }
    }

    /// Bay `b`'s link is gone: closed by the bay, broken, or by us. `fault`: the bay is
    /// restarted for it. Its clients wait for it to come back (up to the resume bound),
    /// or are closed when the fleet lands.
    fn link_lost(&mut self, b: usize, why: &str, fault: bool, registry: &Registry) {
        let resume = self.settings.websocket_resume_timeout;
        let now = self.now;
        let draining = self.draining;
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let had_http = !bay.http.is_empty();
        if let Some(mut l) = bay.link.take() {
            let _ = registry.deregister(&mut l.stream);
            for buf in [&mut l.lin, &mut l.lout] {
                buf.clear();
                self.bufs.take_back(buf);
            }
        }
        if let Some(t) = bay.timer.take() {
            self.timers.cancel(t);
        }
        let was_up = bay.state == LinkState::Moored;
        bay.state = LinkState::Down;
        let clients = bay.clients.len();
        if fault && bay.running {
            log::warn!("{}: docking link {why}; restarting the bay", bay.name);
            bay.stats.faults += 1;
            self.outbox.push(Message::BayFault {
                id: bay.id,
                reason: format!("docking link {why}"),
            });
        } else {
            log::info!("{}: docking link {why}", bay.name);
        }
        if had_http {
            self.close_http_links(b, registry);
        }
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        if clients > 0 && draining {
            self.close_bay_clients(b, 1001, "going away");
        } else if clients > 0 && bay.resume_timer.is_none() && was_up {
            log::info!(
                "{}: {clients} client(s) wait up to {resume:?} for it to dock again",
                bay.name
            );
            bay.resume_timer = Some(
                self.timers
                    .insert(deadline(now, resume), TimerKey::BayResume(b)),
            );
        }
    }

    /// Closes every client of bay `b` with `code` (the bay is not told).
    fn close_bay_clients(&mut self, b: usize, code: u16, reason: &str) {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let all: Vec<ConnId> = bay.clients.drain().map(|(_, c)| c).collect();
        for cid in all {
            self.close_client(cid, code, reason);
        }
    }

    /// A bay timer fired: connect again, end the settle, or give up on resuming.
    pub(super) fn bay_timer(&mut self, key: TimerKey, registry: &Registry, fleet: &FleetView) {
        match key {
            TimerKey::BayLink(k) if bay_http::unslot(k).1.is_some() => {
                if let (b, Some(n)) = bay_http::unslot(k) {
                    self.http_link_timer(b, n, registry);
                }
            }
            TimerKey::BayLink(b) => {
                let Some(Some(bay)) = self.bays.get_mut(b) else {
                    return;
                };
                bay.timer = None;
                match bay.state {
                    LinkState::Retry => {
                        bay.state = LinkState::Down;
                        self.connect_bay(b, registry);
                    }
                    LinkState::Settling => {
                        self.moored(b);
                        self.http_reopen(b, registry);
                    }
                    _ => {}
                }
            }
            TimerKey::BayResume(b) => {
                let Some(Some(bay)) = self.bays.get_mut(b) else {
                    return;
                };
                bay.resume_timer = None;
                if bay.state != LinkState::Moored && !bay.clients.is_empty() {
                    log::warn!(
                        "{}: did not dock again within {:?}; closing its {} client(s) with 1012",
                        bay.name,
                        self.settings.websocket_resume_timeout,
                        bay.clients.len()
                    );
                    bay.stats.expired += bay.clients.len() as u64;
                    self.close_bay_clients(b, 1012, "service restart");
                }
            }
            _ => {}
        }
        self.wake_clients(registry, fleet);
    }

    /// Bay `b` is ready: the supervisor is told, held requests go on, and clients from its
    /// previous run are boarded again.
    fn moored(&mut self, b: usize) {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        bay.state = LinkState::Moored;
        bay.stats.docked += 1;
        let id = bay.id;
        self.outbox.push(Message::Docked { id });
        self.held_news = true;
        if let Some(t) = bay.resume_timer.take() {
            self.timers.cancel(t);
        }
        let clients: Vec<ConnId> = bay.clients.values().copied().collect();
        if !clients.is_empty() {
            log::info!("{}: boarding {} client(s) again", bay.name, clients.len());
        }
        bay.stats.resumed += clients.len() as u64;
        for cid in clients {
            let Some(Some(mut c)) = self.conns.get_mut(cid.slot).map(Option::take) else {
                continue;
            };
            if c.gen == cid.gen {
                if let Phase::Socket(ws) = &mut c.phase {
                    ws.stalled = false;
                }
                if let Phase::Socket(ws) = &c.phase {
                    self.board(id, ws, &c.peer, true);
                }
                self.pending.push(cid);
            }
            self.conns[cid.slot] = Some(c);
        }
        if let Some(Some(bay)) = self.bays.get_mut(b) {
            self.pending.append(&mut bay.stalled);
        }
        self.links_due.push(b);
    }

    /// The fleet lands: every bay client is closed with 1001 and its bay told.
    pub(super) fn drain_bays(&mut self) {
        for b in 0..self.bays.len() {
            let Some(Some(bay)) = self.bays.get(b) else {
                continue;
            };
            let all: Vec<(u32, ConnId)> = bay.clients.iter().map(|(k, v)| (*k, *v)).collect();
            let id = bay.id;
            for (conn_id, cid) in all {
                self.close_client(cid, 1001, "going away");
                self.tell_bay(id, conn_id, 1001, "going away");
            }
        }
    }

    /// The bays for the metrics: name, docked, clients, counts.
    pub(super) fn bay_gauges(&self) -> Vec<metrics::BayRow> {
        self.bays
            .iter()
            .flatten()
            .map(|b| {
                (
                    b.name.clone(),
                    b.state == LinkState::Moored,
                    b.clients.len(),
                    b.stats,
                )
            })
            .collect()
    }

    /// Drives the links with work queued this turn, then the clients they woke.
    pub(super) fn links_turn(&mut self, registry: &Registry, fleet: &FleetView) {
        let mut due = std::mem::take(&mut self.links_due);
        due.sort_unstable();
        due.dedup();
        for s in due {
            match bay_http::unslot(s) {
                (b, None) => self.drive_link(b, registry, fleet),
                (b, Some(n)) => self.drive_http_link(b, n, registry, fleet),
            }
        }
    }
}

/// Notes bytes from the client: it is alive, the ping can wait.
fn ws_seen(c: &Conn, ws: &mut WsConn, now: Instant) {
    if c.cin.len() != ws.seen {
        if c.cin.len() > ws.seen {
            ws.last_heard = now;
            ws.ping_sent = None;
        }
        ws.seen = c.cin.len();
    }
}
