//! The operator's hooks: the `on_event` command and the signed webhook, told of the
//! fleet's events (`Message::Event` from the supervisor, health changes from the checks).
//! Both run from the loop and never block it.
//!
//! The command runs without a shell, in the manifest's folder, in a process group of its
//! own, with the event in `MS_EVENT_*` variables; at most [`MAX_RUNS`] at once, the others
//! queued (at most [`MAX_QUEUED`]; past that the oldest are dropped and counted), each
//! killed with its group at `on_event_timeout`. Its output is read by the loop and logged
//! line by line; the supervisor reaps it and says how it ended (`Message::Reaped`).
//!
//! The webhook gets each event as a JSON body posted over plain HTTP/1.1, one at a time in
//! order, signed with HMAC-SHA256 when there is a secret; a delivery that fails (no
//! connection, no 2xx within [`POST_TIMEOUT`]) is tried again after 1, 2 and 4 s, then
//! dropped with a warning.

pub mod hmac;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::fleet::{FleetView, Message};
use crate::manifest::EventHooks;
use crate::output::lines::{LineAssembler, Prefix};
use crate::proto::json;
use crate::reactor::deadline::after;
use crate::reactor::{DeadlineQueue, TimerId, HOOK_TOKENS};

/// Hook commands running at once.
pub const MAX_RUNS: usize = 4;
/// Events waiting for a hook command, or for the webhook.
pub const MAX_QUEUED: usize = 256;
/// How long one webhook delivery may take, connection included.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries of one event to the webhook before it is dropped.
const POST_ATTEMPTS: u32 = 4;
/// Most bytes of the webhook's answer read (its status line is what counts).
const ANSWER_MAX: usize = 4096;

/// One event, as the hooks get it.
#[derive(Clone, Debug)]
pub struct Notice {
    pub seq: u64,
    pub kind: &'static str,
    pub program: Option<String>,
    pub detail: String,
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
}

impl Notice {
    /// The `MS_EVENT_*` variables of a hook command.
    pub fn variables(&self) -> Vec<(String, String)> {
        vec![
            ("MS_EVENT_KIND".into(), self.kind.into()),
            (
                "MS_EVENT_PROGRAM".into(),
                self.program.clone().unwrap_or_default(),
            ),
            ("MS_EVENT_DETAIL".into(), self.detail.clone()),
            (
                "MS_EVENT_TIME".into(),
                crate::output::logger::rfc3339_ms(self.at_ms),
            ),
            ("MS_EVENT_SEQ".into(), self.seq.to_string()),
        ]
    }

    /// The webhook's body.
    pub fn json(&self) -> String {
        let mut o = String::from("{\"kind\":");
        json::write_str(&mut o, self.kind);
        o.push_str(",\"program\":");
        match &self.program {
            Some(p) => json::write_str(&mut o, p),
            None => o.push_str("null"),
        }
        o.push_str(",\"detail\":");
        json::write_str(&mut o, &self.detail);
        o.push_str(&format!(
            ",\"time\":\"{}\",\"seq\":{},\"mothership_pid\":{}}}",
            crate::output::logger::rfc3339_ms(self.at_ms),
            self.seq,
            std::process::id()
        ));
        o
    }
}

struct RunPipe {
    file: File,
    asm: LineAssembler,
    /// Its budget ran out with bytes left: read on at the end of the turn.
    more: bool,
}

/// Bytes read from a hook's pipe per call (a chatty hook does not hold the loop).
const READ_BUDGET: usize = 64 << 10;

/// A hook command under way.
struct Run {
    pid: i32,
    notice: Notice,
    /// Its stdout and stderr, while open.
    pipes: [Option<RunPipe>; 2],
    /// How it ended, once reaped.
    ended: Option<(bool, String)>,
    timeout: Option<TimerId>,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    RunTimeout(usize),
    PostTimeout,
    PostRetry,
}

/// A webhook delivery under way.
struct Conn {
    stream: TcpStream,
    request: Vec<u8>,
    written: usize,
    answer: Vec<u8>,
    timeout: TimerId,
}

struct Poster {
    addrs: Vec<SocketAddr>,
    host: String,
    path: String,
    masked: String,
    secret: Option<Vec<u8>>,
    /// Events to deliver, oldest first, with the deliveries tried so far.
    queue: VecDeque<(Notice, u32)>,
    conn: Option<Conn>,
    retry: Option<TimerId>,
    dropped: u64,
}

/// The hooks' subsystem.
pub struct Hooks {
    command: Vec<String>,
    timeout: Duration,
    cwd: PathBuf,
    queue: VecDeque<Notice>,
    runs: Vec<Option<Run>>,
    dropped: u64,
    seq: u64,
    timers: DeadlineQueue<Timer>,
    poster: Option<Poster>,
    prefix: Prefix,
}

impl Hooks {
    /// `None` when the manifest has neither hook. The webhook's host is resolved here,
    /// once, before the loop runs.
    pub fn new(cfg: &EventHooks, dir: &Path) -> Option<Hooks> {
        if cfg.command.is_empty() && cfg.webhook.is_none() {
            return None;
        }
        let poster = cfg.webhook.as_ref().map(|w| {
            let addrs: Vec<SocketAddr> = match (w.host.as_str(), w.port).to_socket_addrs() {
                Ok(a) => a.collect(),
                Err(e) => {
                    log::warn!(
                        "webhook {}: cannot resolve {}: {e}; events will not be posted",
                        w.masked,
                        w.host
                    );
                    Vec::new()
                }
            };
            let host = if w.host.contains(':') {
                format!("[{}]:{}", w.host, w.port)
            } else {
                format!("{}:{}", w.host, w.port)
            };
            Poster {
                addrs,
                host,
                path: w.path.clone(),
                masked: w.masked.clone(),
                secret: w.secret.as_ref().map(|s| s.as_bytes().to_vec()),
                queue: VecDeque::new(),
                conn: None,
                retry: None,
                dropped: 0,
            }
        });
        Some(Hooks {
            command: cfg.command.clone(),
            timeout: cfg.timeout,
            cwd: dir.to_path_buf(),
            queue: VecDeque::new(),
            runs: (0..MAX_RUNS).map(|_| None).collect(),
            dropped: 0,
            seq: 0,
            timers: DeadlineQueue::new(),
            poster,
            prefix: Prefix::new("", 0, None),
        })
    }

    /// A hook command runs, or one waits to, or a webhook delivery is under way.
    pub fn busy(&self) -> bool {
        self.runs.iter().any(Option::is_some)
            || !self.queue.is_empty()
            || self
                .poster
                .as_ref()
                .is_some_and(|p| p.conn.is_some() || (!p.queue.is_empty() && !p.addrs.is_empty()))
    }

    /// How long, at most, what is under way may take to finish.
    pub fn linger(&self) -> Duration {
        self.timeout.max(POST_TIMEOUT)
    }

    /// At exit: hook commands still running are killed with their process groups.
    pub fn kill_all(&mut self) {
        for r in self.runs.iter_mut().filter_map(Option::take) {
            // Still running, or reaped while something it started holds its output:
            // the whole group goes.
            if r.ended.is_none() || r.pipes.iter().any(Option::is_some) {
                log::warn!(
                    "on_event: the hook for the {} event still runs at exit; killing its process group",
                    r.notice.kind
                );
                crate::supervisor::spawn::signal_group(r.pid, libc::SIGKILL);
            }
        }
        if let Some(p) = &self.poster {
            if !p.queue.is_empty() {
                log::warn!(
                    "webhook {}: {} event(s) not delivered at exit",
                    p.masked,
                    p.queue.len()
                );
            }
        }
    }

    pub fn next_deadline(&mut self) -> Option<Instant> {
        if self.pipes_with_more().next().is_some() {
            return Some(Instant::now());
        }
        self.timers.next_deadline()
    }

    fn pipes_with_more(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.runs.iter().enumerate().flat_map(|(slot, r)| {
            (0..2).filter_map(move |k| {
                r.as_ref()
                    .and_then(|r| r.pipes[k].as_ref())
                    .filter(|p| p.more)
                    .map(|_| (slot, k))
            })
        })
    }

    /// The end of a turn: the pipes whose budget ran out are read on.
    pub fn turn_end(&mut self, registry: &Registry, now: Instant) {
        let pending: Vec<(usize, usize)> = self.pipes_with_more().collect();
        for (slot, k) in pending {
            self.read_pipe(slot, k, registry);
            self.maybe_done(slot, registry, now);
        }
    }

    /// An event to tell, a health change (an event too), or a hook command reaped.
    pub fn hear(&mut self, msg: &Message, fleet: &FleetView, registry: &Registry, now: Instant) {
        let (kind, program, detail) = match msg {
            Message::Event {
                kind,
                program,
                detail,
            } => (*kind, program.clone(), detail.clone()),
            Message::Health { id, status, reason } => (
                "health",
                fleet.ships.get(id.index()).map(|s| s.name.clone()),
                format!("{}: {reason}", status.name()),
            ),
            Message::Reaped { pid, success, what } => {
                if let Some(i) = self
                    .runs
                    .iter()
                    .position(|r| r.as_ref().is_some_and(|r| r.pid == *pid))
                {
                    if let Some(r) = &mut self.runs[i] {
                        r.ended = Some((*success, what.clone()));
                    }
                    self.maybe_done(i, registry, now);
                }
                return;
            }
            _ => return,
        };
        self.seq += 1;
        let notice = Notice {
            seq: self.seq,
            kind,
            program,
            detail,
            at_ms: crate::output::journal::now_ms(),
        };
        if let Some(p) = &mut self.poster {
            if p.queue.len() >= MAX_QUEUED {
                p.queue.pop_front();
                p.dropped += 1;
                if p.dropped.is_power_of_two() {
                    log::warn!(
                        "webhook {}: {} event(s) dropped: it does not keep up",
                        p.masked,
                        p.dropped
                    );
                }
            }
            p.queue.push_back((notice.clone(), 0));
        }
        if !self.command.is_empty() {
            if self.queue.len() >= MAX_QUEUED {
                self.queue.pop_front();
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    log::warn!(
                        "on_event: {} event(s) dropped: the hook does not keep up",
                        self.dropped
                    );
                }
            }
            self.queue.push_back(notice);
        }
        self.start_runs(registry, now);
        self.post(registry, now);
    }

    /// Starts hook commands for queued events while there is room.
    fn start_runs(&mut self, registry: &Registry, now: Instant) {
        while !self.queue.is_empty() {
            let Some(slot) = self.runs.iter().position(Option::is_none) else {
                return;
            };
            let Some(notice) = self.queue.pop_front() else {
                return;
            };
            match spawn(&self.command, &self.cwd, &notice.variables()) {
                Ok((pid, out, err)) => {
                    let mut pipes = [None, None];
                    for (k, fd) in [out, err].into_iter().enumerate() {
                        let file = File::from(fd);
                        let token = Token(HOOK_TOKENS + 1 + slot * 2 + k);
                        match registry.register(
                            &mut SourceFd(&file.as_raw_fd()),
                            token,
                            Interest::READABLE,
                        ) {
                            Ok(()) => {
                                pipes[k] = Some(RunPipe {
                                    file,
                                    asm: LineAssembler::default(),
                                    more: false,
                                })
                            }
                            Err(e) => log::warn!("on_event: {e}"),
                        }
                    }
                    let timeout = self
                        .timers
                        .insert(after(now, self.timeout), Timer::RunTimeout(slot));
                    self.runs[slot] = Some(Run {
                        pid,
                        notice,
                        pipes,
                        ended: None,
                        timeout: Some(timeout),
                    });
                }
                Err(e) => log::warn!(
                    "on_event: cannot run {} for the {} event: {e}",
                    self.command[0],
                    notice.kind
                ),
            }
        }
    }

    /// One of its tokens is ready: a hook's output, or the webhook's connection.
    pub fn ready(&mut self, token: Token, registry: &Registry, now: Instant) {
        let Some(k) = token.0.checked_sub(HOOK_TOKENS) else {
            return;
        };
        if k == 0 {
            self.post_ready(registry, now);
            return;
        }
        let (slot, stream) = ((k - 1) / 2, (k - 1) % 2);
        self.read_pipe(slot, stream, registry);
        self.maybe_done(slot, registry, now);
    }

    /// Reads a hook's pipe until it would block, logging its lines; closes it at its end.
    fn read_pipe(&mut self, slot: usize, stream: usize, registry: &Registry) {
        let Some(Some(run)) = self.runs.get_mut(slot) else {
            return;
        };
        let kind = run.notice.kind;
        let Some(p) = &mut run.pipes[stream] else {
            return;
        };
        let mut buf = [0u8; 8192];
        let mut sink = Vec::new();
        let mut budget = READ_BUDGET;
        p.more = false;
        let mut log_line = |l: &[u8]| {
            let line = String::from_utf8_lossy(l);
            if stream == 0 {
                log::info!("on_event ({kind}): {line}");
            } else {
                log::warn!("on_event ({kind}): {line}");
            }
        };
        loop {
            match p.file.read(&mut buf) {
                Ok(0) => {
                    p.asm.flush(&self.prefix, &mut sink, &mut log_line);
                    let _ = registry.deregister(&mut SourceFd(&p.file.as_raw_fd()));
                    run.pipes[stream] = None;
                    return;
                }
                Ok(n) => {
                    p.asm
                        .feed(&buf[..n], &self.prefix, &mut sink, &mut log_line);
                    sink.clear();
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        p.more = true;
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("on_event: reading its output: {e}");
                    let _ = registry.deregister(&mut SourceFd(&p.file.as_raw_fd()));
                    run.pipes[stream] = None;
                    return;
                }
            }
        }
    }

    /// A run is over once reaped with its output read: says how it ended if it failed,
    /// and starts the next.
    fn maybe_done(&mut self, slot: usize, registry: &Registry, now: Instant) {
        let over = matches!(&self.runs[slot], Some(r) if r.ended.is_some() && r.pipes.iter().all(Option::is_none));
        if !over {
            return;
        }
        let Some(r) = self.runs[slot].take() else {
            return;
        };
        if let Some(t) = r.timeout {
            self.timers.cancel(t);
        }
        if let Some((false, what)) = &r.ended {
            log::warn!(
                "on_event: the hook for the {} event{} failed ({what})",
                r.notice.kind,
                r.notice
                    .program
                    .as_ref()
                    .map(|p| format!(" of {p}"))
                    .unwrap_or_default()
            );
        }
        self.start_runs(registry, now);
    }

    pub fn timers_due(&mut self, registry: &Registry, now: Instant) {
        while let Some((_, t)) = self.timers.pop_due(now) {
            match t {
                Timer::RunTimeout(slot) => {
                    let Some(Some(r)) = self.runs.get_mut(slot) else {
                        continue;
                    };
                    r.timeout = None;
                    log::warn!(
                        "on_event: the hook for the {} event still runs after {:?}; killing its process group",
                        r.notice.kind,
                        self.timeout
                    );
                    // Its group is its own; the supervisor reaps it (or has).
                    crate::supervisor::spawn::signal_group(r.pid, libc::SIGKILL);
                    // Pipes a grandchild still holds are not waited for.
                    for p in r.pipes.iter_mut() {
                        if let Some(p) = p.take() {
                            let _ = registry.deregister(&mut SourceFd(&p.file.as_raw_fd()));
                        }
                    }
                    self.maybe_done(slot, registry, now);
                }
                Timer::PostTimeout => {
                    if let Some(p) = &mut self.poster {
                        if let Some(c) = &mut p.conn {
                            let _ = registry.deregister(&mut c.stream);
                        }
                        p.conn = None;
                    }
                    self.post_failed("no answer in time", now);
                }
                Timer::PostRetry => {
                    if let Some(p) = &mut self.poster {
                        p.retry = None;
                    }
                    self.post(registry, now);
                }
            }
        }
    }

    /// Starts delivering the oldest event to the webhook, unless one is under way or
    /// waits for its retry.
    fn post(&mut self, registry: &Registry, now: Instant) {
        let Some(p) = &mut self.poster else { return };
        if p.conn.is_some() || p.retry.is_some() {
            return;
        }
        let Some((notice, attempts)) = p.queue.front() else {
            return;
        };
        if p.addrs.is_empty() {
            p.queue.clear();
            return;
        }
        let addr = p.addrs[*attempts as usize % p.addrs.len()];
        let body = notice.json();
        let mut req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: mothership/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Mothership-Event: {}\r\nX-Mothership-Delivery: {}\r\n",
            p.path,
            p.host,
            env!("CARGO_PKG_VERSION"),
            body.len(),
            notice.kind,
            notice.seq
        );
        if let Some(secret) = &p.secret {
            req.push_str(&format!(
                "X-Mothership-Signature-256: sha256={}\r\n",
                hmac::hex(&hmac::sha256(secret, body.as_bytes()))
            ));
        }
        req.push_str("Connection: close\r\n\r\n");
        req.push_str(&body);
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(
                    &mut stream,
                    Token(HOOK_TOKENS),
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    log::warn!("webhook {}: {e}", p.masked);
                    return self.post_failed(&e.to_string(), now);
                }
                let timeout = self
                    .timers
                    .insert(after(now, POST_TIMEOUT), Timer::PostTimeout);
                p.conn = Some(Conn {
                    stream,
                    request: req.into_bytes(),
                    written: 0,
                    answer: Vec::new(),
                    timeout,
                });
            }
            Err(e) => self.post_failed(&e.to_string(), now),
        }
    }

    /// The webhook's connection is ready: write the request, read the status line.
    fn post_ready(&mut self, registry: &Registry, now: Instant) {
        let Some(p) = &mut self.poster else { return };
        let Some(c) = &mut p.conn else { return };
        let mut failed = None;
        while c.written < c.request.len() {
            match c.stream.write(&c.request[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        let mut buf = [0u8; 1024];
        while failed.is_none() {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    failed = Some("closed without an answer".into());
                }
                Ok(n) => {
                    let room = ANSWER_MAX.saturating_sub(c.answer.len());
                    c.answer.extend_from_slice(&buf[..n.min(room)]);
                    if status_code(&c.answer).is_some() || c.answer.len() >= ANSWER_MAX {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => failed = Some(e.to_string()),
            }
        }
        let status = status_code(&c.answer);
        let mut c = match p.conn.take() {
            Some(c) => c,
            None => return,
        };
        let _ = registry.deregister(&mut c.stream);
        self.timers.cancel(c.timeout);
        match (failed, status) {
            (_, Some(code)) if (200..300).contains(&code) => {
                p.queue.pop_front();
                self.post(registry, now);
            }
            (_, Some(code)) => self.post_failed(&format!("answered {code}"), now),
            (Some(why), None) => self.post_failed(&why, now),
            (None, None) => self.post_failed("no HTTP status line in its answer", now),
        }
    }

    /// A delivery failed: tried again later, or dropped after the last attempt.
    fn post_failed(&mut self, why: &str, now: Instant) {
        let Some(p) = &mut self.poster else { return };
        let Some((notice, attempts)) = p.queue.front_mut() else {
            return;
        };
        *attempts += 1;
        if *attempts >= POST_ATTEMPTS {
            log::warn!(
                "webhook {}: the {} event (#{}) was not delivered after {} attempts ({why}); dropped",
                p.masked,
                notice.kind,
                notice.seq,
                POST_ATTEMPTS
            );
            p.queue.pop_front();
            // The next one waits a second too: the webhook is down.
            p.retry = Some(
                self.timers
                    .insert(after(now, Duration::from_secs(1)), Timer::PostRetry),
            );
            return;
        }
        let delay = Duration::from_secs(1 << (*attempts - 1));
        log::debug!("webhook {}: {why}; trying again in {delay:?}", p.masked);
        p.retry = Some(self.timers.insert(after(now, delay), Timer::PostRetry));
    }
}

/// The status of an HTTP/1.x answer's final head, once it is whole (interim 1xx heads,
/// such as 100 Continue, are passed over), parsed as the proxy parses answers.
fn status_code(answer: &[u8]) -> Option<u16> {
    let limits = crate::proto::http::Limits::default();
    let mut at = 0;
    while let Ok(Some(r)) = crate::proto::http::parse_response(&answer[at..], &limits, "POST") {
        if !(100..200).contains(&r.status) {
            return Some(r.status);
        }
        at += r.head_len;
    }
    None
}

/// Starts a hook command: no shell, stdin on /dev/null, stdout and stderr on pipes the
/// loop reads, in its own process group, with `vars` over mothership's environment.
fn spawn(
    argv: &[String],
    cwd: &Path,
    vars: &[(String, String)],
) -> io::Result<(i32, OwnedFd, OwnedFd)> {
    use std::process::{Command, Stdio};
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::other("no command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(cwd)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for v in crate::supervisor::notify::VARIABLES {
        cmd.env_remove(v);
    }
    crate::supervisor::spawn::isolate(&mut cmd);
    let mut child = cmd.spawn()?;
    let out = child.stdout.take().map(OwnedFd::from);
    let err = child.stderr.take().map(OwnedFd::from);
    let (Some(out), Some(err)) = (out, err) else {
        return Err(io::Error::other("no pipes"));
    };
    for fd in [&out, &err] {
        crate::supervisor::set_nonblocking(fd.as_raw_fd())?;
    }
    // The supervisor reaps it (`Message::Reaped`); the handle is not waited on.
    Ok((child.id() as i32, out, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(204));
        assert_eq!(
            status_code(b"HTTP/1.0 500 Oops\r\nServer: x\r\n\r\n"),
            Some(500)
        );
        assert_eq!(
            status_code(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\n\r\n"),
            Some(201)
        );
        // Not whole yet, or not HTTP.
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 100 Continue\r\n\r\n"), None);
        assert_eq!(status_code(b"SSH-2.0\r\n\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 2000 x\r\n\r\n"), None);
        assert_eq!(status_code(b""), None);
    }

    #[test]
    fn an_event_as_variables_and_as_json() {
        let n = Notice {
            seq: 7,
            kind: "crash",
            program: Some("web \"1\"".into()),
            detail: "exited unexpectedly (exit code 1)".into(),
            at_ms: 1000,
        };
        let vars = n.variables();
        assert!(vars.contains(&("MS_EVENT_KIND".into(), "crash".into())));
        assert!(vars.contains(&("MS_EVENT_PROGRAM".into(), "web \"1\"".into())));
        assert!(vars.contains(&("MS_EVENT_TIME".into(), "1970-01-01T00:00:01.000Z".into())));
        let v = json::parse(n.json().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v.get("program").and_then(json::Value::as_str),
            Some("web \"1\"")
        );
        assert_eq!(v.get("seq").and_then(json::Value::as_u64), Some(7));
        let fleet = Notice { program: None, ..n };
        assert!(fleet.json().contains("\"program\":null"));
    }
}
