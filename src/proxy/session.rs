//! The session driver: the only code that reads and writes client and upstream sockets.
//! It moves bytes between sockets and buffers, runs the protocol steps until nothing more
//! can happen, and keeps each connection's one timer.

use super::*;

impl Edge {
    /// When this connection's current phase times out.
    pub(super) fn deadline_of(&self, c: &Conn) -> Instant {
        let s = &self.settings;
        let at = |since: Instant, d| deadline(since, d);
        match &c.phase {
            // Until its first request head is in, a connection has header_timeout from
            // its accept: silent or slow, it is held no longer than a slow head.
            Phase::Head(_) if !c.served => at(c.opened, s.header_timeout),
            Phase::Head(_) if c.cin.is_empty() => at(c.activity, s.keepalive_timeout),
            Phase::Head(r) => at(r.since.unwrap_or(c.activity), s.header_timeout),
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
            Phase::Socket(ws) => ws.deadline(s.websocket_ping_interval, self.now),
            Phase::BayHttp(ex) => ex.deadline(s, c.activity),
            Phase::Held(h) => at(h.since, s.hold_timeout),
            Phase::File(_) => at(c.activity, s.body_timeout),
            Phase::Closing { linger: Some(_) } => at(c.activity, LINGER_TIME),
            Phase::Closing { linger: None } => at(c.activity, s.body_timeout),
        }
    }

    /// Makes sure a timer fires no later than the connection's deadline. Timers are not
    /// moved on every byte: an early one is simply re-armed when it fires.
    pub(super) fn arm(&mut self, id: usize, c: &mut Conn) {
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

    pub(super) fn on_timer(&mut self, id: usize, registry: &Registry, fleet: &FleetView) {
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
            Phase::Head(_) if c.cin.is_empty() => c.dead = true,
            Phase::Head(_) => {
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
                let name = self.name_of(h.target);
                let what = if h.queued {
                    "had no free slot (maxconn)"
                } else {
                    "did not come up"
                };
                log::warn!(
                    "{}: {name} {what} within {:?} (hold_timeout); answering 503",
                    c.peer,
                    self.settings.hold_timeout
                );
                if let Phase::Held(h) = std::mem::replace(&mut c.phase, Phase::CLOSING) {
                    self.unhold(&h);
                    self.unavailable(&mut c, &h.req, RETRY_SOON, true);
                }
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
                let target = ex.target;
                self.backend_failed(target, UpstreamError::Timeout, &what);
                self.finish(&mut c, 504);
                if let Some(up) = c.up.take() {
                    self.close_up(up, registry);
                }
                c.cin.clear();
                respond(&mut c, 504, "upstream timeout", true);
            }
            Phase::Socket(_) => self.ws_timer(&mut c),
            Phase::BayHttp(_) => self.bay_http_timer(&mut c, registry),
            _ => {
                log::debug!("{}: idle for too long; closing", c.peer);
                c.dead = true;
            }
        }
        self.conns[id] = Some(c);
        self.drive(id, registry, fleet);
    }

    /// Moves bytes and advances the connection's state until nothing more can happen now.
    pub(super) fn drive(&mut self, id: usize, registry: &Registry, fleet: &FleetView) {
        let Some(Some(mut c)) = self.conns.get_mut(id).map(Option::take) else {
            return;
        };
        let mut rounds = 0;
        loop {
            rounds += 1;
            let mut progress = false;
            // Read from the client.
            // A WebSocket client reads on to the end of a frame larger than a buffer
            // (up to the largest message), unless its bay does not take its messages.
            let limit = match &c.phase {
                Phase::Socket(ws) if !ws.stalled() => ws::frame_len(&c.cin).map_or(BUF, |n| {
                    (n.min(self.settings.websocket_max_message as u64 + 14) as usize).max(BUF)
                }),
                _ => BUF,
            };
            if c.c_readable
                && !c.c_eof
                && c.cin.len() < limit
                && !matches!(c.phase, Phase::Closing { linger: None })
            {
                self.bufs.lend(&mut c.cin);
                progress |= read_into(
                    &mut c.client,
                    &mut c.cin,
                    &mut self.scratch,
                    limit,
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
                        BUF,
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
                                _ => (ProgramId::NONE, false),
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
                        self.awaiting.push(ConnId {
                            slot: id,
                            gen: c.gen,
                        });
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
            if matches!(c.phase, Phase::File(_)) {
                progress |= self.send_file_part(&mut c);
            }
            // (Not for a connection given up: it is closed at once, not shut.)
            if let (Phase::Closing { linger }, true) = (&mut c.phase, c.cout.is_empty() && !c.dead)
            {
                // Lingering close: stop writing, then read and drop what the client still
                // sends (up to a bound), so that unread bytes do not make the kernel reset
                // the connection and destroy the answer we just wrote.
                if linger.is_none() {
                    c.client.shutdown_write();
                    *linger = Some(0);
                    progress = true;
                }
                if c.c_eof || linger.is_some_and(|n| n > LINGER_BYTES) {
                    c.dead = true;
                }
            }
            if progress {
                c.activity = self.now;
            }
            if let Phase::Head(r) = &mut c.phase {
                if c.cin.is_empty() {
                    r.since = None;
                } else if r.since.is_none() {
                    r.since = Some(self.now);
                }
            }
            if c.dead || !progress {
                break;
            }
            if rounds >= 64 {
                // Fairness: other connections get their turn; this one goes on next turn.
                self.pending.push(ConnId {
                    slot: id,
                    gen: c.gen,
                });
                break;
            }
        }
        if c.dead {
            self.release(id, c, registry);
            self.resume_accept(registry, fleet);
        } else {
            self.settle_slot(&mut c);
            if matches!(c.phase, Phase::Head(_) | Phase::Socket(_)) {
                // Between requests, or between WebSocket messages: empty buffers go back
                // to the pool (an idle client holds none, whatever it once moved).
                self.bufs.take_back(&mut c.cin);
                self.bufs.take_back(&mut c.cout);
            }
            self.arm(id, &mut c);
            self.conns[id] = Some(c);
        }
    }
}

/// Reads until the buffer is full, the socket would block, or it ends.
///
/// A short read means the socket is drained for now: with edge-triggered readiness, bytes
/// that arrive later raise a new event, so the extra read that would only say
/// `WouldBlock` is skipped, unless the event said the peer closed (`hup`), whose end of
/// stream must then be read.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_into(
    s: &mut Stream,
    buf: &mut Buf,
    scratch: &mut [u8],
    limit: usize,
    hup: bool,
    readable: &mut bool,
    eof: &mut bool,
    dead: &mut bool,
) -> bool {
    let mut progress = false;
    while buf.len() < limit {
        let want = (limit - buf.len()).min(scratch.len());
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

pub(super) fn write_from(
    s: &mut Stream,
    buf: &mut Buf,
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
    buf.consume(written);
    written > 0
}

/// Moves as much of `from` into `to` as `to` has room for.
pub(super) fn move_bytes(from: &mut Buf, to: &mut Buf) -> bool {
    let n = from.len().min(BUF.saturating_sub(to.len()));
    if n == 0 {
        return false;
    }
    to.extend_from_slice(&from[..n]);
    from.consume(n);
    true
}
