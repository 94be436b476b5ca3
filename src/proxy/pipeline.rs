//! The request pipeline: what happens to a request head once it is whole, in this order.
//!
//! 1. the metrics listener answers `/metrics` and `/health` itself;
//! 2. the route is found (for the statistics and the logs even when a later stage answers);
//! 3. rate limits (429);
//! 4. static mounts;
//! 5. the CORS preflight cache (a hit is answered here);
//! 6. WASM modules of the request phase whose routes match the path (COMPAT.md section 5:
//!    after static files and the CORS cache, before the answer for a path no route serves);
//!    one may block (its answer), fail (503) or change the request; a new path is routed
//!    again;
//! 7. no route: 404;
//! 8. the request body limit (413);
//! 9. a ship that is still coming up holds the request (up to hold_timeout, at most
//!    hold_queue per ship; else 503 with Retry-After);
//! 10. the request is forwarded and its exchange begins (`exchange.rs`).
//!
//! Each stage either lets the request go on ([`Flow::Next`]) or answers it; an answered
//! request has been accounted and its head consumed.

use super::*;
use crate::payload::Outcome;

/// A module's answer headers as header lines.
pub(super) fn block_lines(headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// What a stage did with the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flow {
    Next,
    Answered,
}

impl Edge {
    /// Runs a whole request head through the pipeline.
    pub(super) fn start_exchange(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        registry: &Registry,
        fleet: &FleetView,
    ) {
        // Keep the connection after answering ourselves only if no body must be skipped.
        let keep = req.body == Body::None && req.keep_alive;
        if c.bind == BindId::METRICS {
            self.serve_metrics(c, &req, keep, fleet);
            return;
        }
        let mut route = self.find_route(c, &req);
        if self.rate_limit(c, &req, keep) == Flow::Answered
            || self.static_mount(c, &req, keep) == Flow::Answered
        {
            return;
        }
        let mut cors_key = None;
        if let Some((_, route_id, _)) = &route {
            let Ok(k) = self.cors_cache(c, &req, *route_id, keep) else {
                return;
            };
            cors_key = k;
        }
        let mut req = req;
        if !self.payloads.is_empty() {
            let client = client_addr(&c.peer);
            match self.payloads.on_request(&mut req, client, self.now) {
                Outcome::Continue { reroute, changed } => {
                    if reroute {
                        route = self.reroute(c, &req);
                    }
                    // The preflight the backend answers is no longer the client's.
                    if changed {
                        cors_key = None;
                    }
                }
                o => {
                    self.module_answer(c, &req, o, keep);
                    return;
                }
            }
        }
        let Some((target, _, strip)) = route else {
            log::debug!("{} {} {}: no route", c.peer, req.method, req.target);
            self.refuse(c, &req, 404, "no route", !keep);
            return;
        };
        if self.body_limit(c, &req) == Flow::Answered {
            return;
        }
        // (A ship coming up, or with no free slot, makes the request wait: `forward`.)
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

    /// The route for the request, if any: (program, route, prefix to strip).
    /// Begins the request's statistics and log record either way.
    fn find_route(
        &mut self,
        c: &mut Conn,
        req: &RequestHead,
    ) -> Option<(ProgramId, RouteId, Option<String>)> {
        let (found, stat_route, ua) = self.lookup(c.bind, req);
        let rec = self.record(req, &ua, self.backend_name(&found));
        c.stat = Some(self.begin(stat_route, rec));
        found
    }

    /// The route for a request whose target (or User-Agent) a module changed; the
    /// request's statistics and log record follow it (the log keeps the request line as
    /// it came).
    fn reroute(
        &mut self,
        c: &mut Conn,
        req: &RequestHead,
    ) -> Option<(ProgramId, RouteId, Option<String>)> {
        let (found, stat_route, _) = self.lookup(c.bind, req);
        let backend = self.backend_name(&found).to_string();
        if let Some(st) = &mut c.stat {
            st.route = stat_route;
            if let Some(rec) = &mut st.rec {
                rec.backend = backend;
            }
        }
        found
    }

    /// The route of `req` on `bind`, its statistics row and the request's User-Agent.
    #[allow(clippy::type_complexity)]
    fn lookup(
        &self,
        bind: BindId,
        req: &RequestHead,
    ) -> (Option<(ProgramId, RouteId, Option<String>)>, usize, Vec<u8>) {
        let ua = req
            .header("user-agent")
            .map(|h| h.value.clone())
            .unwrap_or_default();
        let route = self.router.find(bind, req.path(), &ua);
        let stat_route = route.map_or(self.stats.unrouted(), |r| self.stats.row_of(r.id));
        let found = route.map(|r| (r.target, r.id, r.strip_prefix.clone()));
        (found, stat_route, ua)
    }

    /// The log's name for the backend of a route found (`-` for none).
    fn backend_name(&self, found: &Option<(ProgramId, RouteId, Option<String>)>) -> &str {
        found.as_ref().map_or("-", |(t, _, _)| {
            self.names.get(t.index()).map_or("?", String::as_str)
        })
    }

    /// Answers a request that a module blocked (its answer) or failed on (503), and
    /// accounts it.
    fn module_answer(&mut self, c: &mut Conn, req: &RequestHead, o: Outcome, keep: bool) {
        c.cin.consume(req.head_len);
        match o {
            Outcome::Block(b) => {
                log::debug!(
                    "{} {} {}: blocked by a module ({})",
                    c.peer,
                    req.method,
                    req.target,
                    b.status
                );
                let extra = block_lines(&b.headers);
                answer(c, &req.method, b.status, &extra, None, &b.body, !keep);
            }
            _ => {
                let body = crate::payload::FAILURE_BODY;
                answer(c, &req.method, 503, b"", Some(TEXT), body, !keep);
            }
        }
        self.account(c);
    }

    fn rate_limit(&mut self, c: &mut Conn, req: &RequestHead, keep: bool) -> Flow {
        let Some(rl) = &mut self.limiter else {
            return Flow::Next;
        };
        let Err(l) = rl.check(client_addr(&c.peer), self.now) else {
            return Flow::Next;
        };
        log::debug!(
            "{} {} {}: rate limited ({})",
            c.peer,
            req.method,
            req.target,
            l.scope
        );
        self.stats.rate_limited[usize::from(l.scope == "client")] += 1;
        c.cin.consume(req.head_len);
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
        Flow::Answered
    }

    fn static_mount(&mut self, c: &mut Conn, req: &RequestHead, keep: bool) -> Flow {
        if self.statics.is_empty() {
            return Flow::Next;
        }
        let may_compress = self.encoders.available();
        let (mount, outcome) = self.statics.lookup(c.bind, req, may_compress);
        if matches!(outcome, static_files::Outcome::Pass) {
            return Flow::Next;
        }
        if let (Some(st), Some(i)) = (&mut c.stat, mount) {
            st.route = self.static_base + i;
        }
        c.cin.consume(req.head_len);
        self.serve_static(c, &req.method, outcome, keep);
        Flow::Answered
    }

    /// A cacheable CORS preflight answered from the cache (`Err`), or its cache key for
    /// when the backend's answer comes (`Ok(Some)`).
    fn cors_cache(
        &mut self,
        c: &mut Conn,
        req: &RequestHead,
        route_id: RouteId,
        keep: bool,
    ) -> Result<Option<String>, ()> {
        let Some(cc) = &mut self.cors else {
            return Ok(None);
        };
        let Some(k) = cors::key_of(c.bind, route_id, req) else {
            return Ok(None);
        };
        let now = self.now;
        let hit = cc
            .get(&k, now)
            .map(|e| (e.status, e.header_lines(now), e.body.clone()));
        let Some((status, extra, body)) = hit else {
            self.stats.cors_misses += 1;
            return Ok(Some(k));
        };
        self.stats.cors_hits += 1;
        c.cin.consume(req.head_len);
        answer(c, &req.method, status, &extra, None, &body, !keep);
        self.account(c);
        Err(())
    }

    fn body_limit(&mut self, c: &mut Conn, req: &RequestHead) -> Flow {
        let Body::Length(n) = req.body else {
            return Flow::Next;
        };
        if n <= self.settings.max_body_size {
            return Flow::Next;
        }
        log::debug!(
            "{} {} {}: body of {n} bytes over max_body_size",
            c.peer,
            req.method,
            req.target
        );
        self.refuse(c, req, 413, "request body too large", true);
        Flow::Answered
    }

    /// The request waits, its head still in `cin`: for its ship to come up (sent on when
    /// it does, see `tick`) or for one of its `maxconn` slots (sent on in order as they
    /// come free). Up to hold_timeout, at most hold_queue per ship, both kinds together;
    /// past either bound, 503 with Retry-After.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn wait(
        &mut self,
        c: &mut Conn,
        id: usize,
        req: RequestHead,
        target: ProgramId,
        strip: Option<String>,
        cors_key: Option<String>,
        why: Wait,
    ) {
        let i = target.index();
        let queued = why == Wait::Slot;
        let what = if queued {
            "has no free slot (maxconn)"
        } else {
            "is starting"
        };
        let waiting = self.held_for.get(i).copied().unwrap_or(0);
        if self.settings.hold_timeout.is_zero() || waiting >= self.settings.hold_queue {
            log::warn!(
                "{} {} {}: {} {what} and {}; answering 503",
                c.peer,
                req.method,
                req.target,
                self.name_of(target),
                if waiting > 0 {
                    "hold_queue is full"
                } else {
                    "requests are not held (hold_timeout = 0)"
                }
            );
            let keep = req.body == Body::None && req.keep_alive;
            self.unavailable(c, &req, RETRY_SOON, !keep);
            return;
        }
        log::debug!(
            "{} {} {}: {} {what}; the request waits",
            c.peer,
            req.method,
            req.target,
            self.name_of(target)
        );
        if let Some(n) = self.held_for.get_mut(i) {
            *n += 1;
        }
        c.phase = Phase::Held(Box::new(Held {
            req,
            target,
            strip,
            cors_key,
            since: self.now,
            queued,
        }));
        let cid = ConnId {
            slot: id,
            gen: c.gen,
        };
        if queued {
            if let Some(n) = self.queued_now.get_mut(i) {
                *n += 1;
            }
            if let Some(q) = self.queue.get_mut(i) {
                q.push_back(cid);
            }
            return;
        }
        // Entries of requests answered at their timeout, or whose client left, are
        // pruned whenever the list has doubled since (a duplicate is skipped when read).
        if self.held.len() >= self.held_prune_at {
            self.prune_held();
            self.held_prune_at = (self.held.len() * 2).max(64);
        }
        self.held.push(cid);
    }
}

/// What a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wait {
    ComingUp,
    Slot,
}
