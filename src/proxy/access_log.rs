//! Per-request accounting: metrics, the access log and the debug request log.

use super::*;

impl Edge {
    pub(super) fn begin(&self, route: usize, rec: Option<Box<Record>>) -> ReqStat {
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
    pub(super) fn record(
        &self,
        req: &RequestHead,
        ua: &[u8],
        backend: &str,
    ) -> Option<Box<Record>> {
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
    pub(super) fn emit(
        &self,
        peer: &str,
        rec: Option<&Record>,
        status: u16,
        bytes: u64,
        secs: f64,
    ) {
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
    pub(super) fn finish(&mut self, c: &mut Conn, status: u16) {
        if let Some(s) = &mut c.stat {
            s.status = status;
        }
        self.account(c);
    }

    /// Counts the request in progress in the metrics and writes its log lines (once). A
    /// request whose connection went away before any answer counts as 499.
    pub(super) fn account(&mut self, c: &mut Conn) {
        let Some(s) = c.stat.take() else { return };
        let status = if s.status == 0 { 499 } else { s.status };
        let secs = self.now.saturating_duration_since(s.started).as_secs_f64();
        if let Some(r) = self.stats.routes.get_mut(s.route) {
            r.observe(status, secs, s.bytes_in, s.bytes_out);
        }
        self.emit(&c.peer, s.rec.as_deref(), status, s.bytes_out, secs);
    }
}
