//! HTTP bays (docking version 3, COMPAT.md section 4b): a request routed to a bay that
//! docked with version 3, and that is not a WebSocket handshake, is carried over a link of
//! its own as Hail (CGI-style meta-variables) and Haul frames (the body), and answered by
//! Reply (status, headers, and a body that is empty, streamed in Haul frames until the
//! last, or a file mothership serves from beneath the bay's working folder). Ready frees
//! the link for the next request.
//!
//! Links: besides the docking link that carries the WebSocket traffic, a bay gets up to
//! `threads` links (its Dock's count, else 1), opened as requests need them; each docks
//! (Dock, Moored) and then carries one exchange at a time. Request ids are checked on
//! every frame: a frame for another request, an answer before the request, a Ready before
//! the answer ended, or any frame an HTTP link does not carry is a protocol error that
//! closes the link and restarts the bay. A request whose client leaves, or that times
//! out, closes its link (the bay's late answer must not reach the next request).
//!
//! Requests wait for a free link in order, as requests to a ship wait for a `maxconn`
//! slot (up to `hold_timeout`, at most `hold_queue`). A chunked request body is refused
//! with 411: Hail carries the body's length first. A Tunnel reply (an upgrade the app
//! takes over) is taken for the WebSocket handshakes of a bay with `websocket = "app"`:
//! the 101 goes to the client, then raw bytes pass both ways in Haul frames, and the
//! link is closed with the connection; to any other request it is a protocol error.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::bays::{LinkState, LINK_HIGH, VERSION};
use super::*;
use crate::payload::Outcome;
use crate::proto::dock::{self, kind as frame};

/// Most HTTP links per bay (Dock's `threads` is capped to it).
pub(super) const MAX_LINKS: usize = 64;
/// Most connections the app takes over at once per bay (`websocket = "app"`), each on a
/// link of its own besides the `threads` ones.
const MAX_TUNNELS: usize = 1024;
/// Link slots in tokens: bits 20 and up number the HTTP link (from 1), the bits below the
/// bay.
const LINK_SHIFT: u32 = 20;
/// A client with this much of an answer waiting to be written stops its link's reading.
const CLIENT_HIGH: usize = 4 * BUF;

/// The token slot of bay `b`'s HTTP link `n`.
pub(super) fn slot(b: usize, n: usize) -> usize {
    b | ((n + 1) << LINK_SHIFT)
}

/// (bay, HTTP link) of a token slot; `None` for a bay's docking link.
pub(super) fn unslot(slot: usize) -> (usize, Option<usize>) {
    let b = slot & ((1 << LINK_SHIFT) - 1);
    match slot >> LINK_SHIFT {
        0 => (b, None),
        n => (b, Some(n - 1)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum HState {
    /// Connected; waiting for Dock.
    Docking,
    Idle,
    /// Carrying request `id` for client `cid`; `done`: its answer has ended (Ready is
    /// next).
    Busy {
        cid: ConnId,
        id: u32,
        done: bool,
    },
    /// To be closed once its frames are handled (an exchange cut short).
    Closing,
}

pub(super) struct HttpLink {
    pub(super) link: bays::Link,
    pub(super) state: HState,
    /// It carries a connection the app took over (not counted against `threads`).
    tunnel: bool,
    /// While docking, or waiting for Ready: the link is closed if it does not come.
    timer: Option<TimerId>,
}

/// How an answer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// Not yet.
    No,
    /// Whole, with the whole request sent: Ready comes next.
    Whole,
    /// Whole before the request body was all sent: the exchange is cut short (the bay
    /// waits for a body that will not come), so the link is closed.
    Early,
}

/// How an answer's body reaches the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// As the bay sends it (it gave a Content-Length).
    Raw,
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client).
    Close,
    /// An upgraded connection the app took over: raw bytes both ways.
    Tunnel,
}

/// A client's request to an HTTP bay.
pub(super) struct BayEx {
    bay: ProgramId,
    /// The link it is on, once it has one.
    link: Option<usize>,
    id: u32,
    /// Hail's parameters, until a link takes the request.
    params: Option<dock::Pairs>,
    content_length: u64,
    /// Body bytes still to send to the bay.
    body_left: u64,
    head_only: bool,
    keep: bool,
    minor: u8,
    /// The answer began (its head is out) with this framing.
    answer: Option<Framing>,
    /// Body bytes of the answer still due by its Content-Length.
    due: Option<u64>,
    /// Since when it waits for a link, then since when it is on one.
    since: Instant,
    /// `Expect: 100-continue`: the interim answer goes out with the Hail.
    expect: bool,
    /// A WebSocket handshake for a bay with `websocket = "app"`: it may be tunnelled.
    upgrade: bool,
    /// Tunnel: the client's end went to the bay (last Haul), the bay's end came.
    client_fin: bool,
    bay_fin: bool,
    /// Tunnel: the bay's end was passed on to the client.
    shut: bool,
    /// The client's Accept-Encoding, when the answer may be compressed.
    accept: Option<String>,
    /// Compressing the answer (chunked).
    enc: Option<Box<compress::Encoder>>,
    /// The response modules chosen for the request (by its path before `strip_prefix`).
    modules: Vec<usize>,
}

impl BayEx {
    /// When it times out: the wait for a link, for the answer, or between body bytes.
    pub(super) fn deadline(&self, s: &HttpSettings, activity: Instant) -> Instant {
        if self.link.is_none() {
            return deadline(self.since, s.hold_timeout);
        }
        if self.answer.is_none() && self.body_left == 0 {
            return deadline(activity.max(self.since), s.response_timeout);
        }
        if self.answer == Some(Framing::Tunnel) {
            return deadline(activity, s.tunnel_timeout);
        }
        deadline(activity, s.body_timeout)
    }
}

/// `Content-Encoding` and `Vary` (the bay's, with Accept-Encoding added) of a compressed
/// answer.
fn content_coding(coding: &str, vary: Option<&str>) -> String {
    let mut v: Vec<&str> = vary
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("accept-encoding"))
        .collect();
    if !v.contains(&"*") {
        v.push("Accept-Encoding");
    }
    format!("content-encoding: {coding}\r\nvary: {}\r\n", v.join(", "))
}

/// The ETag line of an answer: a strong validator becomes weak when the answer is
/// compressed (the compressed bytes are another representation).
fn etag_line(etag: &str, compressed: bool) -> String {
    if compressed && !etag.starts_with("W/") {
        format!("etag: W/{etag}\r\n")
    } else {
        format!("etag: {etag}\r\n")
    }
}

/// A header name that is a token (RFC 9110 section 5.6.2).
fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

/// CGI meta-variables of a request (RFC 3875 section 4.1), headers as `HTTP_<NAME>`;
/// `target`: path and query as the bay sees them, `script`: the prefix stripped.
fn params(req: &RequestHead, target: &str, script: &str, peer: &str, upgrade: bool) -> dock::Pairs {
    let mut p: dock::Pairs = Vec::with_capacity(req.headers.len() + 12);
    let put = |p: &mut dock::Pairs, k: &str, v: &[u8]| p.push((k.as_bytes().to_vec(), v.to_vec()));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    put(&mut p, "REQUEST_METHOD", req.method.as_bytes());
    put(&mut p, "SCRIPT_NAME", script.as_bytes());
    put(&mut p, "PATH_INFO", path.as_bytes());
    put(&mut p, "QUERY_STRING", query.as_bytes());
    put(&mut p, "REQUEST_URI", req.target.as_bytes());
    put(
        &mut p,
        "SERVER_PROTOCOL",
        format!("HTTP/1.{}", req.minor).as_bytes(),
    );
    put(&mut p, "SERVER_SOFTWARE", b"mothership");
    put(&mut p, "GATEWAY_INTERFACE", b"CGI/1.1");
    let (raddr, rport) = peer.rsplit_once(':').unwrap_or((peer, ""));
    put(
        &mut p,
        "REMOTE_ADDR",
        raddr.trim_matches(['[', ']']).as_bytes(),
    );
    put(&mut p, "REMOTE_PORT", rport.as_bytes());
    let host = req.host.as_deref().unwrap_or("");
    let (sname, sport) = match host.rsplit_once(':') {
        Some((h, port)) if !port.contains(']') => (h, port),
        _ => (host, "80"),
    };
    put(
        &mut p,
        "SERVER_NAME",
        sname.trim_matches(['[', ']']).as_bytes(),
    );
    put(&mut p, "SERVER_PORT", sport.as_bytes());
    for h in &req.headers {
        let name = match h.name.to_ascii_lowercase().as_str() {
            "content-length" => "CONTENT_LENGTH".to_string(),
            "content-type" => "CONTENT_TYPE".to_string(),
            // Hop by hop: mothership's business, not the app's.
            // (Except on an upgrade the app may take over, which it must see.)
            "connection" if upgrade => "HTTP_CONNECTION".to_string(),
            "upgrade" if upgrade => "HTTP_UPGRADE".to_string(),
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "upgrade"
            | "proxy-connection" | "expect" => continue,
            // `HTTP_PROXY` would be taken for the proxy setting (httpoxy).
            "proxy" => continue,
            // `X_Foo` would arrive as `HTTP_X_FOO`, the twin of `X-Foo`: dropped.
            n if n.contains('_') => continue,
            n => format!("HTTP_{}", n.to_ascii_uppercase().replace('-', "_")),
        };
        match p.iter_mut().find(|(k, _)| *k == name.as_bytes()) {
            // Repeated: joined, as CGI has one variable per name.
            Some((_, v)) => {
                v.extend_from_slice(if name == "HTTP_COOKIE" { b"; " } else { b", " });
                v.extend_from_slice(&h.value);
            }
            None => p.push((name.into_bytes(), h.value.clone())),
        }
    }
    p
}

impl Edge {
    /// A request for an HTTP bay: sent at once on a free link, or waits for one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn http_to_bay(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        target: ProgramId,
        strip: Option<&str>,
        upgrade: bool,
        registry: &Registry,
    ) {
        let content_length = match req.body {
            Body::None => 0,
            Body::Length(n) => n,
            Body::Chunked | Body::UntilClose => {
                self.refuse(
                    c,
                    &req,
                    411,
                    "a request to a bay needs a Content-Length",
                    true,
                );
                return;
            }
        };
        let b = target.index();
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        // Requests that stopped waiting (answered at their timeout, or gone) leave.
        let conns = &self.conns;
        bay.http_wait.retain(|cid| {
            matches!(conns.get(cid.slot), Some(Some(c)) if c.gen == cid.gen && matches!(&c.phase, Phase::BayHttp(ex) if ex.link.is_none()))
        });
        let waiting = bay.http_wait.len();
        if waiting >= self.settings.hold_queue {
            let keep = req.body == Body::None && req.keep_alive;
            log::warn!(
                "{} {} {}: {} has no free link and hold_queue is full; answering 503",
                c.peer,
                req.method,
                req.target,
                bay.name
            );
            self.unavailable(c, &req, RETRY_SOON, !keep);
            return;
        }
        let rid = bay.next_request;
        bay.next_request = bay.next_request.wrapping_add(1).max(1);
        let path = router::rewrite_target(&req.target, strip);
        let script = strip.unwrap_or("").trim_end_matches('/');
        let ex = BayEx {
            bay: target,
            link: None,
            id: rid,
            params: Some(params(&req, &path, script, &c.peer, upgrade)),
            content_length,
            body_left: content_length,
            head_only: req.method == "HEAD",
            keep: req.keep_alive,
            minor: req.minor,
            answer: None,
            due: None,
            since: self.now,
            expect: req.expect_continue && content_length > 0,
            upgrade,
            client_fin: false,
            bay_fin: false,
            shut: false,
            modules: if self.payloads.is_empty() {
                Vec::new()
            } else {
                self.payloads
                    .select(crate::manifest::Phase::Response, req.path())
            },
            accept: (self.compression && req.minor == 1 && req.method != "HEAD").then(|| {
                req.headers
                    .iter()
                    .filter(|h| h.is("accept-encoding"))
                    .map(|h| h.value_str())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            enc: None,
        };
        c.cin.consume(req.head_len);
        c.phase = Phase::BayHttp(Box::new(ex));
        let cid = ConnId {
            slot: id,
            gen: c.gen,
        };
        if let Some(Some(bay)) = self.bays.get_mut(b) {
            bay.http_wait.push_back(cid);
        }
        // A free link takes it now; else one is opened if the bay allows more.
        if !self.http_next(b, Some((cid, c))) {
            self.open_http_link(b, registry);
        }
    }

    /// Gives the oldest waiting request of bay `b` to a free link; true if one did. The
    /// caller's own connection, taken out of its slot, comes as `own`.
    fn http_next(&mut self, b: usize, mut own: Option<(ConnId, &mut Conn)>) -> bool {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return false;
        };
        let Some(n) = bay
            .http
            .iter()
            .position(|l| matches!(l, Some(l) if l.state == HState::Idle))
        else {
            return false;
        };
        while let Some(cid) = bay.http_wait.pop_front() {
            let c: &mut Conn = match &mut own {
                Some((o, c)) if *o == cid => c,
                _ => match self.conns.get_mut(cid.slot) {
                    Some(Some(c)) if c.gen == cid.gen => c,
                    _ => continue,
                },
            };
            let Phase::BayHttp(ex) = &mut c.phase else {
                continue;
            };
            let Some(params) = ex.params.take() else {
                continue;
            };
            let Some(Some(l)) = bay.http.get_mut(n) else {
                return false;
            };
            let mut f = Vec::new();
            dock::encode_hail(
                &dock::Hail {
                    request_id: ex.id,
                    content_length: ex.content_length,
                    params,
                },
                &mut f,
            );
            l.link.lout.extend_from_slice(&f);
            l.state = HState::Busy {
                cid,
                id: ex.id,
                done: false,
            };
            ex.link = Some(n);
            ex.since = self.now;
            if ex.expect {
                c.cout.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                if own.as_ref().is_none_or(|(o, _)| *o != cid) {
                    self.ws_wake.push(cid);
                }
            }
            self.links_due.push(slot(b, n));
            if own.as_ref().is_none_or(|(o, _)| *o != cid) {
                self.pending.push(cid);
            }
            return true;
        }
        false
    }

    /// Opens one more HTTP link to bay `b` if it takes more.
    fn open_http_link(&mut self, b: usize, registry: &Registry) {
        let gen = self.gens.next();
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let open = bay.http.iter().flatten().filter(|l| !l.tunnel).count();
        let all = bay.http.iter().flatten().count();
        if open >= bay.threads || all >= MAX_LINKS + MAX_TUNNELS || bay.state != LinkState::Moored {
            return;
        }
        let n = bay
            .http
            .iter()
            .position(Option::is_none)
            .unwrap_or(bay.http.len());
        super::bays::private_socket(&bay.socket);
        match mio::net::UnixStream::connect(&bay.socket) {
            Ok(s) => {
                let mut stream = Stream::Unix(s);
                let t = token(KIND_DOCK, slot(b, n), gen);
                if let Err(e) =
                    registry.register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                {
                    log::warn!("{}: cannot watch an HTTP link: {e}", bay.name);
                    return;
                }
                let l = HttpLink {
                    link: bays::Link::new(stream, gen),
                    state: HState::Docking,
                    tunnel: false,
                    timer: Some(self.timers.insert(
                        deadline(self.now, self.settings.connect_timeout),
                        TimerKey::BayLink(slot(b, n)),
                    )),
                };
                if n == bay.http.len() {
                    bay.http.push(Some(l));
                } else {
                    bay.http[n] = Some(l);
                }
                log::debug!("{}: HTTP link {n} connected", bay.name);
                self.links_due.push(slot(b, n));
            }
            Err(e) => log::warn!("{}: cannot open an HTTP link: {e}", bay.name),
        }
    }

    /// One step of a client's request to an HTTP bay: its body goes to the bay in Haul
    /// frames (the answer comes from the link's side, `http_frame`).
    pub(super) fn bay_http_step(&mut self, c: &mut Conn, mut ex: Box<BayEx>) -> bool {
        let mut progress = false;
        let b = ex.bay.index();
        if let (Some(n), Some(Some(bay))) = (ex.link, self.bays.get_mut(b)) {
            if let Some(Some(l)) = bay.http.get_mut(n) {
                while ex.body_left > 0 && !c.cin.is_empty() && l.link.lout.len() < LINK_HIGH {
                    let take = (c.cin.len() as u64)
                        .min(ex.body_left)
                        .min(dock::MAX_HAUL as u64) as usize;
                    ex.body_left -= take as u64;
                    let mut f = Vec::with_capacity(take + 16);
                    dock::encode_haul(
                        &dock::Haul {
                            request_id: ex.id,
                            last: ex.body_left == 0,
                            data: &c.cin[..take],
                        },
                        &mut f,
                    );
                    l.link.lout.extend_from_slice(&f);
                    c.cin.consume(take);
                    if let Some(st) = &mut c.stat {
                        st.bytes_in += take as u64;
                    }
                    progress = true;
                }
                if ex.answer == Some(Framing::Tunnel) {
                    // Raw bytes of the taken-over connection, and its end once.
                    while !c.cin.is_empty() && l.link.lout.len() < LINK_HIGH {
                        let take = c.cin.len().min(dock::MAX_HAUL);
                        let mut f = Vec::with_capacity(take + 16);
                        let h = dock::Haul {
                            request_id: ex.id,
                            last: false,
                            data: &c.cin[..take],
                        };
                        dock::encode_haul(&h, &mut f);
                        l.link.lout.extend_from_slice(&f);
                        c.cin.consume(take);
                        progress = true;
                    }
                    if c.c_eof && c.cin.is_empty() && !ex.client_fin {
                        let mut f = Vec::new();
                        let h = dock::Haul {
                            request_id: ex.id,
                            last: true,
                            data: &[],
                        };
                        dock::encode_haul(&h, &mut f);
                        l.link.lout.extend_from_slice(&f);
                        ex.client_fin = true;
                        progress = true;
                    }
                }
                // A client that drained its answer lets the link read on.
                if progress || c.cout.len() < CLIENT_HIGH {
                    self.links_due.push(slot(b, n));
                }
            }
        }
        if ex.answer == Some(Framing::Tunnel) {
            // Over once both ends are passed on and the client's last bytes left for the
            // bay (closing the link any sooner would drop them).
            let flushed = match (ex.link, self.bays.get(b)) {
                (Some(n), Some(Some(bay))) => {
                    !matches!(bay.http.get(n), Some(Some(l)) if !l.link.lout.is_empty())
                }
                _ => true,
            };
            if ex.bay_fin && c.cout.is_empty() && !ex.shut {
                // The app's end, passed on once.
                c.client.shutdown_write();
                ex.shut = true;
                progress = true;
            }
            if ex.shut && ex.client_fin && flushed {
                c.dead = true;
            }
            c.phase = Phase::BayHttp(ex);
            return progress;
        }
        if c.c_eof && ex.body_left > 0 && c.cin.is_empty() {
            log::debug!("{}: client left in the middle of its request body", c.peer);
            c.dead = true;
        }
        c.phase = Phase::BayHttp(ex);
        progress
    }

    /// A client in the middle of an exchange with an HTTP bay goes away: its link is
    /// closed (a late answer must not reach the next request).
    pub(super) fn bay_http_gone(&mut self, ex: &BayEx, registry: &Registry) {
        let b = ex.bay.index();
        if let Some(n) = ex.link {
            let busy = matches!(self.bays.get(b), Some(Some(bay)) if matches!(bay.http.get(n), Some(Some(l)) if matches!(l.state, HState::Busy { id, done: false, .. } if id == ex.id)));
            if busy {
                self.close_http_link(b, n, "its request was abandoned", registry);
            }
        }
    }

    /// The client's timer: no link in time (503), no answer in time (504), or a stalled
    /// body (the connection is closed).
    pub(super) fn bay_http_timer(&mut self, c: &mut Conn, registry: &Registry) {
        let Phase::BayHttp(ex) = std::mem::replace(&mut c.phase, Phase::CLOSING) else {
            return;
        };
        let name = self.name_of(ex.bay).to_string();
        if ex.link.is_none() {
            log::warn!(
                "{}: {name} had no free HTTP link within {:?} (hold_timeout); answering 503",
                c.peer,
                self.settings.hold_timeout
            );
            self.finish(c, 503);
            answer(
                c,
                "",
                503,
                b"retry-after: 1\r\n",
                Some(TEXT),
                b"bay busy\n",
                true,
            );
            return;
        }
        self.bay_http_gone(&ex, registry);
        if ex.answer.is_none() && ex.body_left == 0 {
            log::warn!(
                "{}: {name} did not answer within {:?}",
                c.peer,
                self.settings.response_timeout
            );
            self.finish(c, 504);
            c.cin.clear();
            respond(c, 504, "bay timeout", true);
        } else {
            log::debug!("{}: exchange with {name} stalled", c.peer);
            c.dead = true;
        }
    }

    /// Closes bay `b`'s HTTP link `n`; its request, if any, fails (502, or the
    /// connection is dropped once its answer began).
    pub(super) fn close_http_link(&mut self, b: usize, n: usize, why: &str, registry: &Registry) {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let Some(mut l) = bay.http.get_mut(n).and_then(Option::take) else {
            return;
        };
        log::debug!("{}: HTTP link {n} closed: {why}", bay.name);
        if let Some(t) = l.timer.take() {
            self.timers.cancel(t);
        }
        let _ = registry.deregister(&mut l.link.stream);
        for buf in [&mut l.link.lin, &mut l.link.lout] {
            buf.clear();
            self.bufs.take_back(buf);
        }
        if let HState::Busy {
            cid, done: false, ..
        } = l.state
        {
            if let Some(Some(mut c)) = self.conns.get_mut(cid.slot).map(Option::take) {
                if c.gen == cid.gen {
                    if let Phase::BayHttp(ex) = &c.phase {
                        if ex.answer == Some(Framing::Tunnel) {
                            // The app's end of a taken-over connection: what it sent is
                            // written, then the connection closes (lingering).
                            c.cin.clear();
                            c.phase = Phase::CLOSING;
                        } else if ex.answer.is_some() {
                            c.dead = true;
                        } else {
                            c.phase = Phase::CLOSING;
                            c.cin.clear();
                            self.finish(&mut c, 502);
                            respond(&mut c, 502, "bad gateway", true);
                        }
                    }
                    self.ws_wake.push(cid);
                }
                self.conns[cid.slot] = Some(c);
            }
        }
        // Requests still waiting get a link again.
        self.http_reopen(b, registry);
    }

    /// Opens a link for the requests waiting for one, if the bay takes more.
    pub(super) fn http_reopen(&mut self, b: usize, registry: &Registry) {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let conns = &self.conns;
        bay.http_wait.retain(|cid| {
            matches!(conns.get(cid.slot), Some(Some(c)) if c.gen == cid.gen && matches!(&c.phase, Phase::BayHttp(ex) if ex.link.is_none()))
        });
        // As many links as the waiting requests need, up to the bay's threads.
        let free = bay
            .http
            .iter()
            .flatten()
            .filter(|l| matches!(l.state, HState::Idle | HState::Docking))
            .count();
        let open = bay.http.iter().flatten().filter(|l| !l.tunnel).count();
        let more = bay
            .http_wait
            .len()
            .saturating_sub(free)
            .min(bay.threads.saturating_sub(open));
        for _ in 0..more {
            self.open_http_link(b, registry);
        }
    }

    /// Drives HTTP link `n` of bay `b`: reads and handles its frames, writes what is
    /// queued.
    pub(super) fn drive_http_link(
        &mut self,
        b: usize,
        n: usize,
        registry: &Registry,
        fleet: &FleetView,
    ) {
        let max = self.settings.docking_max_frame;
        let mut failed: Option<(String, bool)> = None;
        for _ in 0..64 {
            let client_full = match self.bays.get(b) {
                Some(Some(bay)) => match bay.http.get(n) {
                    Some(Some(HttpLink {
                        state:
                            HState::Busy {
                                cid, done: false, ..
                            },
                        ..
                    })) => {
                        matches!(self.conns.get(cid.slot), Some(Some(c)) if c.gen == cid.gen && c.cout.len() >= CLIENT_HIGH)
                    }
                    Some(Some(_)) => false,
                    _ => return,
                },
                _ => return,
            };
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                return;
            };
            let Some(Some(hl)) = bay.http.get_mut(n) else {
                return;
            };
            let l = &mut hl.link;
            let mut progress = false;
            if !client_full {
                match l.read(&mut self.bufs, &mut self.scratch, max) {
                    Ok(p) => progress = p,
                    Err(()) => {
                        failed = Some(("read failed".into(), false));
                        break;
                    }
                }
            }
            let lin = std::mem::take(&mut l.lin);
            let (used, err) = bays::each_frame(self, &lin, max, |e, k, p| e.http_frame(b, n, k, p));
            let mut lin = lin;
            lin.consume(used);
            progress |= used > 0;
            let Some(Some(bay)) = self.bays.get_mut(b) else {
                return;
            };
            let Some(Some(hl)) = bay.http.get_mut(n) else {
                // Closed while its frames were handled.
                break;
            };
            hl.link.lin = lin;
            if let Some(e) = err {
                failed = Some((e, true));
                break;
            }
            if hl.state == HState::Closing {
                failed = Some((
                    "its answer ended before the request body was sent".into(),
                    false,
                ));
                break;
            }
            let l = &mut hl.link;
            let wrote = match l.write() {
                Ok(wrote) => wrote,
                Err(()) => {
                    failed = Some(("write failed".into(), false));
                    break;
                }
            };
            progress |= wrote;
            // Room again: a client held back with its request body goes on.
            if let (true, HState::Busy { cid, .. }) = (wrote, hl.state) {
                if l.lout.len() < LINK_HIGH / 2 {
                    self.pending.push(cid);
                }
            }
            if l.eof {
                failed = Some(("closed by the bay".into(), false));
                break;
            }
            self.wake_clients(registry, fleet);
            if !progress {
                break;
            }
        }
        if let Some((why, fault)) = failed {
            self.close_http_link(b, n, &why, registry);
            if fault {
                // A protocol error on any of its links is the bay's: it restarts.
                let (id, name) = match self.bays.get(b) {
                    Some(Some(bay)) => (bay.id, bay.name.clone()),
                    _ => return,
                };
                log::warn!("{name}: HTTP link {why}; restarting the bay");
                if let Some(Some(bay)) = self.bays.get_mut(b) {
                    bay.stats.faults += 1;
                }
                self.outbox.push(Message::BayFault {
                    id,
                    reason: format!("HTTP link {why}"),
                });
            }
        }
        self.wake_clients(registry, fleet);
    }

    /// One frame on HTTP link `n` of bay `b`.
    fn http_frame(&mut self, b: usize, n: usize, k: u8, payload: &[u8]) -> Result<(), String> {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return Ok(());
        };
        let Some(Some(hl)) = bay.http.get_mut(n) else {
            return Ok(());
        };
        match (hl.state, k) {
            (HState::Docking, frame::DOCK) => {
                let d = dock::decode_dock(payload).map_err(|e| e.to_string())?;
                let mut f = Vec::new();
                dock::encode_moored(d.version.min(VERSION), &bay.config, &mut f);
                hl.link.lout.extend_from_slice(&f);
                hl.state = HState::Idle;
                if let Some(t) = hl.timer.take() {
                    self.timers.cancel(t);
                }
                self.links_due.push(slot(b, n));
                self.http_next(b, None);
                Ok(())
            }
            (HState::Busy { cid, id, done }, frame::REPLY) => {
                let r = dock::decode_reply(payload).map_err(|e| e.to_string())?;
                if r.request_id != id || done {
                    return Err(format!(
                        "Reply for request {} while request {id} is on the link",
                        r.request_id
                    ));
                }
                let tunnel = r.body == dock::ReplyBody::Tunnel;
                let finished = self.http_reply(b, cid, r)?;
                if let Some(Some(bay)) = self.bays.get_mut(b) {
                    if let Some(Some(hl)) = bay.http.get_mut(n) {
                        // Not one of the `threads` links any more: another may open.
                        hl.tunnel = tunnel;
                    }
                }
                self.http_answer_ended(b, n, finished);
                Ok(())
            }
            (
                HState::Busy {
                    cid,
                    id,
                    done: false,
                },
                frame::HAUL,
            ) => {
                let h = dock::decode_haul(payload).map_err(|e| e.to_string())?;
                if h.request_id != id {
                    return Err(format!(
                        "Haul for request {} while request {id} is on the link",
                        h.request_id
                    ));
                }
                let ended = self.http_body(cid, &h)?;
                self.http_answer_ended(b, n, ended);
                Ok(())
            }
            (HState::Busy { id, done: true, .. }, frame::READY) => {
                let r = dock::decode_ready(payload).map_err(|e| e.to_string())?;
                if r != id {
                    return Err(format!("Ready for request {r} after request {id}"));
                }
                hl.state = HState::Idle;
                if let Some(t) = hl.timer.take() {
                    self.timers.cancel(t);
                }
                self.http_next(b, None);
                Ok(())
            }
            (HState::Busy { done: false, .. }, frame::READY) => {
                Err("Ready before its answer ended".into())
            }
            // Cut short: whatever else comes on it is dropped with it.
            (HState::Closing, _) => Ok(()),
            (state, k) => Err(format!(
                "frame 0x{k:02x} on an HTTP link that is {}",
                match state {
                    HState::Docking => "waiting for Dock",
                    HState::Idle => "idle",
                    HState::Busy { .. } => "carrying a request",
                    HState::Closing => "closing",
                }
            )),
        }
    }

    /// The answer on link `n` ended: the link waits for Ready (within
    /// `response_timeout`), or is closed if the request body was not all sent.
    fn http_answer_ended(&mut self, b: usize, n: usize, ended: Ended) {
        let at = deadline(self.now, self.settings.response_timeout);
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let Some(Some(hl)) = bay.http.get_mut(n) else {
            return;
        };
        match (ended, hl.state) {
            (Ended::Whole, HState::Busy { cid, id, .. }) => {
                hl.state = HState::Busy {
                    cid,
                    id,
                    done: true,
                };
                if let Some(t) = hl.timer.take() {
                    self.timers.cancel(t);
                }
                hl.timer = Some(self.timers.insert(at, TimerKey::BayLink(slot(b, n))));
            }
            (Ended::Early, _) => hl.state = HState::Closing,
            _ => {}
        }
    }

    /// A link's timer: no Dock, or no Ready, in time; the link is closed.
    pub(super) fn http_link_timer(&mut self, b: usize, n: usize, registry: &Registry) {
        let Some(Some(bay)) = self.bays.get_mut(b) else {
            return;
        };
        let Some(Some(hl)) = bay.http.get_mut(n) else {
            return;
        };
        hl.timer = None;
        let why = match hl.state {
            HState::Docking => "no Dock in time",
            HState::Busy { done: true, .. } => "no Ready in time",
            _ => return,
        };
        self.close_http_link(b, n, why, registry);
    }

    /// A Reply: the answer's head goes to the client; true when the answer is whole.
    fn http_reply(&mut self, b: usize, cid: ConnId, r: dock::Reply) -> Result<Ended, String> {
        let cwd = match self.bays.get(b) {
            Some(Some(bay)) => bay.cwd.clone(),
            _ => return Ok(Ended::Early),
        };
        let Some(Some(mut c)) = self.conns.get_mut(cid.slot).map(Option::take) else {
            return Ok(Ended::Early);
        };
        if c.gen != cid.gen {
            self.conns[cid.slot] = Some(c);
            return Ok(Ended::Early);
        }
        let out = self.http_reply_to(&mut c, &cwd, r);
        self.ws_wake.push(cid);
        self.conns[cid.slot] = Some(c);
        out
    }

    fn http_reply_to(&mut self, c: &mut Conn, cwd: &Path, r: dock::Reply) -> Result<Ended, String> {
        let Phase::BayHttp(ex) = &mut c.phase else {
            return Ok(Ended::Early);
        };
        if ex.answer.is_some() {
            return Err("a second Reply".into());
        }
        if r.status < 200 && r.body != dock::ReplyBody::Tunnel {
            return Err(format!("Reply with status {}", r.status));
        }
        // Every header must be one HTTP can carry: a name that is a token, a value with
        // no line break or NUL (nothing the bay sends can start a header of its own); and
        // no more of them than a backend's answer may have.
        if r.headers.iter().any(|(name, value)| {
            !is_token(name) || value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0)
        }) {
            return Err("Reply with a header that is not valid HTTP".into());
        }
        if r.headers.len() > self.limits.max_headers {
            return Err(format!(
                "Reply with {} headers (at most {})",
                r.headers.len(),
                self.limits.max_headers
            ));
        }
        let mut r = r;
        if !ex.modules.is_empty() && r.body != dock::ReplyBody::Tunnel {
            // The response modules see the bay's answer as they see a ship's.
            let mut head = http::ResponseHead {
                status: r.status,
                reason: String::new(),
                minor: 1,
                headers: r
                    .headers
                    .iter()
                    .map(|(n, v)| http::Header {
                        name: String::from_utf8_lossy(n).into_owned(),
                        value: v.clone(),
                    })
                    .collect(),
                body: http::Body::None,
                keep_alive: true,
                head_len: 0,
                codings: Vec::new(),
            };
            match self.payloads.on_response(&ex.modules, &mut head, self.now) {
                Outcome::Continue { .. } => {
                    r.status = head.status;
                    r.headers = head
                        .headers
                        .into_iter()
                        .map(|h| (h.name.into_bytes(), h.value))
                        .collect();
                }
                o => {
                    // The module's answer replaces the bay's, whose body (if it streams
                    // one) is dropped as it comes.
                    let body_done = ex.body_left == 0;
                    let keep = ex.keep && body_done;
                    let method = if ex.head_only { "HEAD" } else { "GET" };
                    ex.keep = keep;
                    let (status, extra, ctype, body) = match o {
                        Outcome::Block(b) => {
                            (b.status, pipeline::block_lines(&b.headers), None, b.body)
                        }
                        _ => (
                            503,
                            Vec::new(),
                            Some(TEXT),
                            crate::payload::FAILURE_BODY.to_vec(),
                        ),
                    };
                    let head_only = method == "HEAD";
                    c.cout.extend_from_slice(&http::response(
                        status, &extra, ctype, &body, !keep, head_only,
                    ));
                    if let Some(st) = &mut c.stat {
                        st.status = status;
                        let bodiless = head_only || status == 204 || status == 304;
                        st.bytes_out += if bodiless { 0 } else { body.len() as u64 };
                    }
                    // The client has its whole answer; a bay still streaming is cut
                    // short (its link closed, as for an abandoned request) so that a
                    // stream that never ends holds neither.
                    self.http_done(c);
                    let streamed = r.body == dock::ReplyBody::Stream;
                    return Ok(if body_done && !streamed {
                        Ended::Whole
                    } else {
                        Ended::Early
                    });
                }
            }
        }
        let Phase::BayHttp(ex) = &mut c.phase else {
            return Ok(Ended::Early);
        };
        let (head_only, minor) = (ex.head_only, ex.minor);
        let early = if ex.body_left == 0 {
            Ended::Whole
        } else {
            Ended::Early
        };
        let mut keep = ex.keep && ex.body_left == 0;
        let accept = ex.accept.take();
        let mut extra = Vec::new();
        let mut length: Option<u64> = None;
        // What compression needs to know of the answer.
        // Every value of a header, joined (Vary and Cache-Control may come several times).
        let header = |n: &str| {
            let v: Vec<String> = r
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            (!v.is_empty()).then(|| v.join(", "))
        };
        let (ctype, encoded, ranged) = (
            header("content-type"),
            header("content-encoding").is_some(),
            header("content-range").is_some(),
        );
        let no_transform = header("cache-control").is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("no-transform"))
        });
        let vary = header("vary");
        let etag = header("etag");
        for (name, value) in &r.headers {
            let lower = name.to_ascii_lowercase();
            match lower.as_slice() {
                // (Vary is written below, with Accept-Encoding when compressed, and the
                // ETag, made weak when compressed.)
                b"connection" | b"keep-alive" | b"transfer-encoding" | b"upgrade" | b"vary"
                | b"etag" => continue,
                b"content-length" => {
                    let n = std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or("Reply with an invalid Content-Length")?;
                    if length.is_some_and(|l| l != n) {
                        return Err("Reply with two Content-Lengths".into());
                    }
                    length = Some(n);
                    continue;
                }
                _ => {}
            }
            extra.extend_from_slice(name);
            extra.extend_from_slice(b": ");
            extra.extend_from_slice(value);
            extra.extend_from_slice(b"\r\n");
        }
        let no_body = head_only || r.status == 204 || r.status == 304;
        match r.body {
            dock::ReplyBody::Tunnel if !ex.upgrade || r.status != 101 => {
                return Err(
                    "Tunnel reply to a request that was not an upgrade, or not a 101".into(),
                )
            }
            dock::ReplyBody::Tunnel => {
                // The app takes the connection over: its 101 with its headers (the
                // hop-by-hop ones it must give are passed), then raw bytes both ways.
                // Connection and Upgrade are mothership's to write (an app may leave them
                // to the server); the app's own go.
                let mut head = b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n".to_vec();
                for (name, value) in &r.headers {
                    let lower = name.to_ascii_lowercase();
                    if matches!(
                        lower.as_slice(),
                        b"content-length"
                            | b"transfer-encoding"
                            | b"connection"
                            | b"upgrade"
                            | b"keep-alive"
                    ) {
                        continue;
                    }
                    head.extend_from_slice(name);
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(value);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"\r\n");
                c.cout.extend_from_slice(&head);
                self.finish(c, 101);
                if let Phase::BayHttp(ex) = &mut c.phase {
                    ex.answer = Some(Framing::Tunnel);
                    ex.keep = false;
                }
                return Ok(Ended::No);
            }
            // A file reply without a body to send (HEAD is served by serve_static).
            dock::ReplyBody::File(_) if r.status == 204 || r.status == 304 => {}
            dock::ReplyBody::File(path) => {
                let path = PathBuf::from(std::ffi::OsStr::from_bytes(&path));
                // Relative to the folder as written, or as resolved (a symlinked release
                // folder gives the app the resolved one).
                let real = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
                let rel = path
                    .strip_prefix(cwd)
                    .or_else(|_| path.strip_prefix(&real))
                    .unwrap_or(&path);
                let req_method = if head_only { "HEAD" } else { "GET" };
                match static_files::open_confined(cwd, rel) {
                    Ok((file, len)) => {
                        // Typed by its extension when the bay gives no type, as static
                        // files are.
                        let ctype = ctype.or_else(|| {
                            let ext = rel.extension()?.to_str()?.to_ascii_lowercase();
                            let t = crate::proto::coding::media_type(&ext);
                            extra.extend_from_slice(format!("content-type: {t}\r\n").as_bytes());
                            Some(t.to_string())
                        });
                        let coding = accept
                            .filter(|_| r.status == 200 && !ranged && self.encoders.available())
                            .and_then(|a| {
                                compress::choose(
                                    &[&a],
                                    ctype.as_deref(),
                                    encoded,
                                    Some(len),
                                    no_transform,
                                )
                            });
                        match (coding, &vary) {
                            (Some(coding), _) => extra.extend_from_slice(
                                content_coding(coding, vary.as_deref()).as_bytes(),
                            ),
                            (None, Some(v)) => {
                                extra.extend_from_slice(format!("vary: {v}\r\n").as_bytes())
                            }
                            (None, None) => {}
                        }
                        if let Some(e) = &etag {
                            extra.extend_from_slice(etag_line(e, coding.is_some()).as_bytes());
                        }
                        let o = static_files::Outcome::File {
                            status: r.status,
                            headers: extra,
                            file,
                            start: 0,
                            len,
                            compress: coding,
                        };
                        c.phase = Phase::CLOSING;
                        // (An HTTP/1.0 client is not told of keep-alive here: it closes.)
                        self.serve_static(c, req_method, o, keep && minor == 1);
                    }
                    Err(why) => {
                        log::warn!(
                            "{}: the bay's file reply {}: {why}; answering 502",
                            c.peer,
                            path.display()
                        );
                        self.finish(c, 502);
                        respond(c, 502, "bad gateway", !keep);
                    }
                }
                return Ok(early);
            }
            dock::ReplyBody::None | dock::ReplyBody::Stream => {}
        }
        let streamed = r.body == dock::ReplyBody::Stream;
        // A streamed 2xx answer is compressed as a proxied one would be.
        let coding = accept
            .filter(|_| {
                streamed && !no_body && (200..300).contains(&r.status) && r.status != 206 && !ranged
            })
            .and_then(|a| compress::choose(&[&a], ctype.as_deref(), encoded, length, no_transform));
        let enc = coding.and_then(|c| self.encoders.encoder(c)).map(Box::new);
        let coding = enc.as_ref().and(coding);
        if coding.is_some() {
            length = None;
        }
        let framing = if no_body || !streamed || length.is_some() {
            Framing::Raw
        } else if minor >= 1 {
            Framing::Chunked
        } else {
            keep = false;
            Framing::Close
        };
        let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, http::reason(r.status)).into_bytes();
        head.extend_from_slice(&extra);
        match (coding, &vary) {
            (Some(coding), _) => {
                head.extend_from_slice(content_coding(coding, vary.as_deref()).as_bytes())
            }
            (None, Some(v)) => head.extend_from_slice(format!("vary: {v}\r\n").as_bytes()),
            (None, None) => {}
        }
        if let Some(e) = &etag {
            head.extend_from_slice(etag_line(e, coding.is_some()).as_bytes());
        }
        match (framing, streamed) {
            (Framing::Chunked, _) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            (Framing::Raw, true) if !(r.status == 204 || r.status == 304) => {
                if let Some(n) = length {
                    head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
                }
            }
            // HEAD: the length of what GET would answer, when the bay says it.
            (Framing::Raw, false) if head_only => {
                if let Some(n) = length {
                    head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes());
                }
            }
            (Framing::Raw, false) if r.status != 204 && r.status != 304 => {
                head.extend_from_slice(b"content-length: 0\r\n");
            }
            _ => {}
        }
        if !keep {
            head.extend_from_slice(b"connection: close\r\n");
        } else if minor == 0 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");
        c.cout.extend_from_slice(&head);
        if let Some(st) = &mut c.stat {
            st.status = r.status;
        }
        let Phase::BayHttp(ex) = &mut c.phase else {
            return Ok(early);
        };
        ex.keep = keep;
        ex.answer = Some(framing);
        ex.due = length.filter(|_| streamed && !no_body);
        ex.enc = enc;
        if streamed && !no_body {
            return Ok(Ended::No);
        }
        if streamed {
            // HEAD, 204, 304: whatever body the bay streams is dropped.
            ex.head_only = true;
            return Ok(Ended::No);
        }
        self.http_done(c);
        Ok(early)
    }

    /// A Haul of the answer: its data to the client; true when it was the last.
    fn http_body(&mut self, cid: ConnId, h: &dock::Haul<'_>) -> Result<Ended, String> {
        let end = if h.last { Ended::Whole } else { Ended::No };
        let Some(Some(c)) = self.conns.get_mut(cid.slot) else {
            return Ok(end);
        };
        if c.gen != cid.gen {
            return Ok(end);
        }
        let Phase::BayHttp(ex) = &mut c.phase else {
            return Ok(end);
        };
        let Some(framing) = ex.answer else {
            return Err("Haul before the Reply".into());
        };
        if let Some(due) = &mut ex.due {
            let n = h.data.len() as u64;
            if n > *due || (h.last && n < *due) {
                return Err("an answer body that is not its Content-Length".into());
            }
            *due -= n;
        }
        if framing == Framing::Tunnel {
            c.cout.extend_from_slice(h.data);
            if h.last {
                ex.bay_fin = true;
            }
            self.ws_wake.push(cid);
            return Ok(Ended::No);
        }
        let skip = ex.head_only;
        let whole = ex.body_left == 0;
        if let Some(enc) = &mut ex.enc {
            // Compressed: each Haul pushed out as it comes (a slow stream is not held).
            if !h.data.is_empty() {
                let at = c.cout.len();
                enc.feed(h.data, true, c.cout.vec());
                if let Some(st) = &mut c.stat {
                    st.bytes_out += c.cout.len().saturating_sub(at) as u64;
                }
            }
        } else if !h.data.is_empty() && !skip {
            match framing {
                Framing::Chunked => {
                    c.cout
                        .extend_from_slice(format!("{:x}\r\n", h.data.len()).as_bytes());
                    c.cout.extend_from_slice(h.data);
                    c.cout.extend_from_slice(b"\r\n");
                }
                Framing::Raw | Framing::Close | Framing::Tunnel => c.cout.extend_from_slice(h.data),
            }
            if let Some(st) = &mut c.stat {
                st.bytes_out += h.data.len() as u64;
            }
        }
        if h.last {
            if let Some(enc) = ex.enc.take() {
                enc.finish(c.cout.vec());
            } else if framing == Framing::Chunked && !skip {
                c.cout.extend_from_slice(b"0\r\n\r\n");
            }
            let mut c = self.conns[cid.slot].take();
            if let Some(c) = &mut c {
                self.http_done(c);
            }
            self.conns[cid.slot] = c;
        }
        self.ws_wake.push(cid);
        Ok(match (h.last, whole) {
            (false, _) => Ended::No,
            (true, true) => Ended::Whole,
            (true, false) => Ended::Early,
        })
    }

    /// The client's answer is whole: the request is accounted and the connection goes
    /// on with the next one, or closes.
    fn http_done(&mut self, c: &mut Conn) {
        let Phase::BayHttp(ex) = &c.phase else { return };
        let keep = ex.keep;
        self.account(c);
        c.phase = if keep { Phase::head() } else { Phase::CLOSING };
    }

    /// Bay `b`'s docking link is gone: its HTTP links go with it.
    pub(super) fn close_http_links(&mut self, b: usize, registry: &Registry) {
        let n = match self.bays.get(b) {
            Some(Some(bay)) => bay.http.len(),
            _ => return,
        };
        for i in 0..n {
            self.close_http_link(b, i, "the bay went down", registry);
        }
    }
}
