//! The control socket: `control.sock` in the socket folder, mode 0600 (0660 with a
//! `control_group`), served by the loop. Its protocol is line-delimited JSON, versioned:
//! a request is one line holding an object `{"v":1,"cmd":"..."}`, its answer one line
//! holding an object with `"ok"` (`true` with the command's fields, or `false` with
//! `"error"` and a `"code"`). Requests are bounded ([`MAX_REQUEST`]); a client that stops
//! reading is disconnected after [`STALL`] (a follower once its events pass
//! [`MAX_PENDING`] bytes), an idle one after [`IDLE`]; each call answers
//! at most [`LINES_PER_CALL`] requests of a client, the rest at the end of later turns,
//! so that no client holds the loop. Peers are served only when the kernel says they
//! run as the same user as mothership, or as root, or belong to the control group (which
//! may only look, or act too).
//!
//! Commands: `status`, `version`, `start`, `stop`, `restart`, `signal`, `reopen`, `logs`
//! and `subscribe` (see mothership(1)).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::fleet::resources::Usage;
use crate::fleet::{FleetView, Message, Operation};
use crate::manifest::ids::ProgramId;
use crate::output::journal::{now_ms, Journal, Line};
use crate::output::logger::rfc3339_ms;
use crate::output::Stream;
use crate::proto::json::{self, Value};
use crate::proxy::status::{Extras, SharedExtras};
use crate::reactor::CONTROL_TOKENS;

/// The socket's file name in the socket folder.
pub const SOCKET: &str = "control.sock";
/// The protocol's version.
pub const VERSION: u64 = 1;
/// Longest request line.
pub const MAX_REQUEST: usize = 64 << 10;
/// Answers waiting for a client beyond which it is disconnected.
pub const MAX_PENDING: usize = 4 << 20;
/// Clients at once.
const MAX_CLIENTS: usize = 64;
/// Of those, the slots only mothership's own user and root may take: the control group's
/// members cannot lock the owner out.
const OWNER_SLOTS: usize = 16;
/// A client that has not read any of its waiting answers for this long is disconnected.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(30);
/// A client that follows nothing and has sent nothing for this long is disconnected.
pub const IDLE: std::time::Duration = std::time::Duration::from_secs(600);
/// Requests of one client answered per call; the rest wait for the end of the turn.
pub const LINES_PER_CALL: usize = 32;

/// The lock file held, for the life of the process, by the mothership that owns the
/// control socket of a folder.
const LOCK: &str = "control.lock";

/// Why the control socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another mothership holds it: this one must not start a second fleet.
    Live(String),
    Other(String),
}

/// The bound control socket with the lock that makes it this process's.
pub struct Bound {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    lock: std::fs::File,
    group: Option<Group>,
}

/// A group whose members may use the control socket besides mothership's own user
/// (`control_group`): to look only, or (`full`) to act as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Group {
    pub gid: u32,
    pub full: bool,
}

/// Binds `dir/control.sock` (mode 0600) under an exclusive lock on `dir/control.lock`,
/// held until the process ends (the kernel lets it go even on SIGKILL): a socket file
/// left by a mothership that is gone is replaced; a lock another process holds means a
/// running mothership ([`BindError::Live`]). Probing, unlinking and binding under the lock
/// leaves no race between two starts.
pub fn bind(dir: &Path, group: Option<Group>) -> Result<Bound, BindError> {
    let lock_path = dir.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| BindError::Other(format!("cannot open {}: {e}", lock_path.display())))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(BindError::Live(format!(
                "another mothership is running with the socket folder {} (it holds {LOCK}); stop it, or give this one its own folder with MS_SOCKET_DIR",
                dir.display()
            )));
        }
        return Err(BindError::Other(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        )));
    }
    let path = dir.join(SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => log::info!("replaced the stale control socket {}", path.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(BindError::Other(format!(
                "cannot replace the stale {}: {e}",
                path.display()
            )))
        }
    }
    let listener = bind_new(&path, group).map_err(BindError::Other)?;
    Ok(Bound {
        listener,
        path,
        lock,
        group,
    })
}

fn bind_new(path: &Path, group: Option<Group>) -> Result<std::os::unix::net::UnixListener, String> {
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    // Mode 0600; 0660 with the group's ownership when a group may use it too.
    let mode = match group {
        Some(g) => {
            std::os::unix::fs::chown(path, None, Some(g.gid))
                .map_err(|e| format!("cannot give {} to group {}: {e}", path.display(), g.gid))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(l)
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Close once `out` is written: the client ended its side, or an error ended it.
    closing: bool,
    /// What it follows (`logs` with `follow`, `subscribe`).
    follow: Option<Follow>,
    /// Its events passed [`MAX_PENDING`] unread: disconnect it.
    overflow: bool,
    /// It may act (start, stop, ...), not only look.
    full: bool,
    /// Requests are waiting that this call left for a later one.
    more: bool,
    /// Mothership's own user or root.
    owner: bool,
    /// When its answers last moved: some written, or the first put in front of it.
    last_write: Instant,
    /// When it last asked something (or connected).
    last_request: Instant,
}

/// What a client follows: new lines of some programs' logs, and changes of state.
pub struct Follow {
    /// Journal indexes and the number of the next line to send of each.
    logs: Vec<(usize, u64)>,
    /// Only lines that match.
    grep: Option<regex::Regex>,
    /// Programs' states, health and the fleet's state, as they change.
    states: bool,
}

/// Answers waiting for a client past which its requests are not read until it reads them.
const SOFT_PENDING: usize = 256 << 10;
/// How long a process sample serves `status` (a walk of the processes costs), as for
/// `/metrics`.
const SAMPLE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(2);

/// The control socket's server.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    /// Held for the life of the process: the socket is this one's.
    _lock: std::fs::File,
    clients: Vec<Option<Client>>,
    uid: u32,
    /// Accepting stopped on a resource error: tried again at the end of each turn.
    accept_again: bool,
    sample: crate::fleet::resources::Cached,
    /// What the operators asked of the supervisor, for the root to hand on.
    outbox: Vec<Message>,
    /// The programs' recent lines, as the supervisor keeps them.
    journal: Option<Rc<RefCell<Journal>>>,
    /// Routes and modules' counts, as the edge shares them.
    extras: Option<SharedExtras>,
    /// Each program's log file (in the journal's order) and the archives kept of each.
    files: LogPaths,
    /// The group that may use it too.
    group: Option<Group>,
}

/// Where the programs' lines are written, for `logs` (whose client reads the files).
#[derive(Clone, Debug, Default)]
pub struct LogPaths {
    pub paths: Vec<Option<PathBuf>>,
    pub keep: u32,
}

impl Control {
    pub fn new(b: Bound) -> Control {
        Control {
            listener: UnixListener::from_std(b.listener),
            path: b.path,
            _lock: b.lock,
            clients: Vec::new(),
            // SAFETY: geteuid has no preconditions.
            uid: unsafe { libc::geteuid() },
            accept_again: false,
            sample: Default::default(),
            outbox: Vec::new(),
            journal: None,
            extras: None,
            files: LogPaths::default(),
            group: b.group,
        }
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(
            &mut self.listener,
            Token(CONTROL_TOKENS),
            Interest::READABLE,
        )
    }

    /// One of its tokens is ready.
    pub fn ready(&mut self, token: Token, registry: &Registry, fleet: &FleetView, now: Instant) {
        match token.0.checked_sub(CONTROL_TOKENS + 1) {
            None => self.accept(registry),
            Some(i) => self.serve(i, registry, fleet, now),
        }
    }

    /// Serves `logs` from the supervisor's journal.
    pub fn attach(&mut self, journal: Rc<RefCell<Journal>>) {
        self.journal = Some(journal);
    }

    /// Tells `logs` clients where the programs' log files are.
    pub fn attach_files(&mut self, files: LogPaths) {
        self.files = files;
    }

    /// Shows the edge's routes and modules in `status`.
    pub fn attach_extras(&mut self, extras: SharedExtras) {
        self.extras = Some(extras);
    }

    /// Now, when a client has requests waiting (the loop must not sleep); else when the
    /// first client would be too slow or idle.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.clients.iter().flatten().any(|c| c.more) {
            return Some(now);
        }
        self.clients.iter().flatten().filter_map(expiry).min()
    }

    /// What the operators asked since the last call.
    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut self.outbox);
    }

    /// The end of a turn: new lines and events to those who follow them, and accepting
    /// again after a resource error.
    pub fn turn_end(&mut self, registry: &Registry, fleet: &FleetView, now: Instant) {
        for i in 0..self.clients.len() {
            // One whose time is up gets a last write first (the kernel may have room that
            // no event announced).
            if self.clients[i]
                .as_ref()
                .is_some_and(|c| !c.out.is_empty() && expiry(c).is_some_and(|at| at <= now))
            {
                self.flush(i, registry);
            }
            if let Some(c) = &self.clients[i] {
                if expiry(c).is_some_and(|at| at <= now) {
                    log::info!(
                        "control socket: a client {} for {}s was disconnected",
                        if c.out.is_empty() {
                            "idle"
                        } else {
                            "that read none of its answers"
                        },
                        if c.out.is_empty() { IDLE } else { STALL }.as_secs()
                    );
                    self.drop_client(i, registry);
                    continue;
                }
            }
            if matches!(&self.clients[i], Some(c) if c.more) {
                self.serve(i, registry, fleet, now);
            }
            if matches!(&self.clients[i], Some(c) if c.follow.is_some()) {
                self.fill(i);
                self.flush(i, registry);
            }
        }
        if std::mem::take(&mut self.accept_again) {
            self.accept(registry);
        }
    }

    /// A sibling's news: changes of state to the clients that subscribed to them.
    pub fn hear(&mut self, msg: &Message, fleet: &FleetView) {
        let Some(line) = event_line(msg, fleet) else {
            return;
        };
        for c in self.clients.iter_mut().flatten() {
            if c.follow.as_ref().is_some_and(|f| f.states) {
                c.out.extend_from_slice(line.as_bytes());
                c.overflow |= c.out.len() > MAX_PENDING;
            }
        }
    }

    /// Adds the new lines of the logs client `i` follows to its answers, until they pass
    /// [`SOFT_PENDING`] (the rest waits until it has read them); lines it can no longer
    /// have (it read too slowly) are reported as a gap.
    fn fill(&mut self, i: usize) {
        let Some(j) = &self.journal else { return };
        let j = j.borrow();
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        let Some(f) = &mut c.follow else { return };
        let mut o = String::new();
        for (idx, next) in f.logs.iter_mut() {
            let Some(log) = j.get(*idx) else { continue };
            if log.next_seq() <= *next {
                continue;
            }
            if *next < log.first_seq() {
                o.push_str("{\"event\":\"gap\",\"name\":");
                json::write_str(&mut o, &log.name);
                o.push_str(&format!(",\"lost\":{}}}\n", log.first_seq() - *next));
                *next = log.first_seq();
            }
            for l in log.since(*next) {
                if c.out.len() + o.len() >= SOFT_PENDING {
                    break;
                }
                *next = l.seq + 1;
                if f.grep
                    .as_ref()
                    .is_none_or(|re| re.is_match(&String::from_utf8_lossy(&l.text)))
                {
                    o.push_str("{\"event\":\"log\",\"name\":");
                    json::write_str(&mut o, &log.name);
                    o.push(',');
                    line_fields(&mut o, &l);
                    o.push_str("}\n");
                }
            }
        }
        c.out.extend_from_slice(o.as_bytes());
    }

    /// Writes what client `i` has waiting; disconnects it when it is gone, has ended its
    /// side and been answered, or lets its events pile up.
    fn flush(&mut self, i: usize, registry: &Registry) {
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        let mut gone = c.overflow;
        while !gone && !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => gone = true,
                Ok(n) => {
                    c.out.drain(..n);
                    c.last_write = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => gone = true,
            }
        }
        // One that ended its side is closed once answered, unless it follows logs or
        // events (`socat` and `nc -N` end their side after sending the request).
        let answered = c.out.is_empty() && !c.inbuf.contains(&b'\n');
        if gone || (c.closing && answered && c.follow.is_none()) {
            self.drop_client(i, registry);
        }
    }

    fn drop_client(&mut self, i: usize, registry: &Registry) {
        if let Some(mut c) = self.clients.get_mut(i).and_then(Option::take) {
            let _ = registry.deregister(&mut c.stream);
        }
        // A slot is free: connections waiting since a resource error may come in.
        if std::mem::take(&mut self.accept_again) {
            self.accept(registry);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    // Out of descriptors or memory: the pending ones wait for a later turn.
                    log::warn!("control socket: accept: {e}");
                    self.accept_again = true;
                    return;
                }
            };
            // Its own user and root may do anything; members of the control group what
            // the group may; nobody else anything.
            let access = match crate::reactor::peer::peer_credentials(&stream) {
                Ok(p) if p.uid == self.uid || p.uid == 0 => Some((true, true)),
                Ok(p) => self.group.and_then(|g| {
                    let member = p.gid == g.gid
                        || crate::reactor::peer::peer_groups(&stream).contains(&g.gid);
                    member.then_some((g.full, false))
                }),
                Err(_) => None,
            };
            let Some((full, owner)) = access else {
                let _ = stream.write_all(&coded_error("permission denied", "denied"));
                continue;
            };
            let others = self.clients.iter().flatten().filter(|c| !c.owner).count();
            let free = self.clients.iter().position(Option::is_none);
            let slot = match free {
                _ if !owner && others >= MAX_CLIENTS - OWNER_SLOTS => None,
                Some(i) => Some(i),
                None if self.clients.len() < MAX_CLIENTS => {
                    self.clients.push(None);
                    Some(self.clients.len() - 1)
                }
                None => None,
            };
            let Some(slot) = slot else {
                let _ = stream.write_all(&coded_error("too many control clients", "busy"));
                continue;
            };
            let token = Token(CONTROL_TOKENS + 1 + slot);
            if let Err(e) =
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("control socket: register: {e}");
                continue;
            }
            self.clients[slot] = Some(Client {
                stream,
                inbuf: Vec::new(),
                out: Vec::new(),
                closing: false,
                follow: None,
                overflow: false,
                full,
                more: false,
                owner,
                last_write: Instant::now(),
                last_request: Instant::now(),
            });
        }
    }

    fn serve(&mut self, i: usize, registry: &Registry, fleet: &FleetView, now: Instant) {
        let mut gone = false;
        let mut buf = [0u8; 4096];
        let mut answered = 0;
        if let Some(Some(c)) = self.clients.get_mut(i) {
            c.more = false;
        }
        loop {
            let Some(Some(c)) = self.clients.get_mut(i) else {
                return;
            };
            // Answer the whole lines that came, one at a time, each within the bound.
            if let Some(end) = c.inbuf.iter().position(|&b| b == b'\n') {
                if c.out.len() >= SOFT_PENDING {
                    break; // read on once it has read its answers
                }
                if answered == LINES_PER_CALL {
                    c.more = true; // the others after the rest of the loop's work
                    break;
                }
                answered += 1;
                let line: Vec<u8> = c.inbuf.drain(..=end).collect();
                let needs_usage = line.windows(8).any(|w| w == b"\"status\"");
                let usage = needs_usage.then(|| {
                    let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
                    self.sample.get(&pgids, now, SAMPLE_MAX_AGE).clone()
                });
                let c_full = c.full;
                let journal = self.journal.as_ref().map(|j| j.borrow());
                let extras = self.extras.as_ref().map(|e| e.borrow());
                let (a, follow) = answer(
                    &line[..end],
                    &mut Ctx {
                        fleet,
                        usage: usage.as_ref(),
                        now,
                        outbox: &mut self.outbox,
                        journal: journal.as_deref(),
                        extras: extras.as_deref(),
                        files: Some(&self.files),
                        full: c_full,
                    },
                );
                drop(journal);
                drop(extras);
                let Some(Some(c)) = self.clients.get_mut(i) else {
                    return;
                };
                c.last_request = now;
                if c.out.is_empty() {
                    c.last_write = now;
                }
                c.out.extend_from_slice(&a);
                if follow.is_some() {
                    c.follow = follow;
                }
                if c.out.len() > MAX_PENDING {
                    gone = true; // it does not read its answers
                    break;
                }
                continue;
            }
            if c.inbuf.len() > MAX_REQUEST {
                c.out.extend_from_slice(&error_line("request over 64 KiB"));
                c.inbuf.clear();
                c.closing = true;
            }
            if c.closing || c.out.len() >= SOFT_PENDING {
                break;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    // The client ended its side: a last request without its line feed is
                    // answered, then the answers are written and the connection closed.
                    if !c.inbuf.is_empty() {
                        c.inbuf.push(b'\n');
                    }
                    c.closing = true;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    gone = true;
                    break;
                }
            }
        }
        if let Some(Some(c)) = self.clients.get_mut(i) {
            c.overflow |= gone;
        }
        self.fill(i);
        self.flush(i, registry);
        // Lines held back while its answers were pending, now that they are written: at
        // the end of the turn (never here: one client would hold the loop).
        if let Some(Some(c)) = self.clients.get_mut(i) {
            if c.out.is_empty() && c.inbuf.contains(&b'\n') {
                c.more = true;
            }
        }
    }
}

/// When client `c` is to be disconnected: answers it has not read for [`STALL`], or no
/// request for [`IDLE`]. Not one that follows logs or events: what waits for it is bounded
/// already (lines past [`SOFT_PENDING`] become a gap, events past [`MAX_PENDING`] end it).
fn expiry(c: &Client) -> Option<Instant> {
    if c.follow.is_some() {
        None
    } else if !c.out.is_empty() {
        Some(c.last_write + STALL)
    } else if !c.more {
        Some(c.last_request + IDLE)
    } else {
        None
    }
}

impl Drop for Control {
    /// The socket file goes with the process that owns it (its lock says it does), and
    /// the lock file with it (a clean exit leaves nothing in the folder).
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_file(dir.join(LOCK));
        }
    }
}

fn error_line(why: &str) -> Vec<u8> {
    coded_error(why, "bad_request")
}

/// An error answer with its machine-readable `code` (see mothership(1)): `bad_request`,
/// `no_such_program` (the client exits 3), `not_running`, `not_now`, `denied`, `busy`.
fn coded_error(why: &str, code: &str) -> Vec<u8> {
    let mut o = String::from("{\"ok\":false,\"v\":1,\"error\":");
    json::write_str(&mut o, why);
    o.push_str(",\"code\":");
    json::write_str(&mut o, code);
    o.push_str("}\n");
    o.into_bytes()
}

/// The programs `targets` name: each a program's name, `all`, a group (`[[fleet.NAME]]`)
/// or a tag, tried in that order; `group:NAME` and `tag:NAME` say which. In the fleet's
/// order, each once. `Err`: the first target that names nothing.
pub fn resolve(fleet: &FleetView, targets: &[&str]) -> Result<Vec<ProgramId>, String> {
    let mut chosen = vec![false; fleet.ships.len()];
    for &t in targets {
        let pick = |f: &dyn Fn(&crate::fleet::ShipView) -> bool| -> Vec<usize> {
            fleet
                .ships
                .iter()
                .enumerate()
                .filter(|(_, s)| f(s))
                .map(|(i, _)| i)
                .collect()
        };
        let found = if let Some(g) = t.strip_prefix("group:") {
            pick(&|s| s.group == g)
        } else if let Some(tag) = t.strip_prefix("tag:") {
            pick(&|s| s.tags.iter().any(|x| x == tag))
        } else {
            let by_name = pick(&|s| s.name == t);
            if !by_name.is_empty() {
                by_name
            } else if t == "all" {
                pick(&|_| true)
            } else {
                let by_group = pick(&|s| s.group == t);
                if by_group.is_empty() {
                    pick(&|s| s.tags.iter().any(|x| x == t))
                } else {
                    by_group
                }
            }
        };
        if found.is_empty() {
            return Err(t.to_string());
        }
        for i in found {
            chosen[i] = true;
        }
    }
    Ok(chosen
        .iter()
        .enumerate()
        .filter(|(_, &c)| c)
        .map(|(i, _)| ProgramId::at(i))
        .collect())
}

/// The answer to `start`, `stop`, `restart` and `signal`: the programs named, told to the
/// supervisor through `outbox`.
fn operate(v: &Value, cmd: &str, fleet: &FleetView, outbox: &mut Vec<Message>) -> Vec<u8> {
    let targets: Vec<&str> = match v.get("targets") {
        Some(Value::Array(a)) => {
            let t: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
            if t.len() != a.len() {
                return error_line("\"targets\" holds strings");
            }
            t
        }
        Some(Value::String(s)) => vec![s.as_str()],
        _ => return error_line("no \"targets\" (program names, groups, tags or \"all\")"),
    };
    if targets.is_empty() {
        return error_line("no \"targets\" (program names, groups, tags or \"all\")");
    }
    let op = match cmd {
        "start" => Operation::Start,
        "stop" => Operation::Stop,
        "restart" => Operation::Restart,
        _ => {
            let Some(name) = v.get("signal").and_then(Value::as_str) else {
                return error_line("no \"signal\" (a name such as \"HUP\", or a number)");
            };
            // A name (`HUP`, `SIGUSR1`), or a number of a signal this system has.
            let number = name.parse::<i32>().ok().filter(|n| (1..=64).contains(n));
            match number
                .map(Ok)
                .unwrap_or_else(|| crate::manifest::units::parse_signal(name))
            {
                Ok(sig) => Operation::Signal(sig),
                Err(e) => return error_line(&e),
            }
        }
    };
    let ids = match resolve(fleet, &targets) {
        Ok(ids) => ids,
        Err(t) => {
            let mut why = String::from("no program, group or tag named ");
            json::write_str(&mut why, &t);
            return coded_error(&why, "no_such_program");
        }
    };
    if let Some(why) = refusal(fleet, op, &ids) {
        return coded_error(&why, "not_now");
    }
    let ids: Vec<ProgramId> = match op {
        // Only a process that runs can be signalled.
        Operation::Signal(_) => {
            ids.into_iter()
                .filter(|id| {
                    fleet.ships.get(id.index()).is_some_and(|s| {
                        s.pgid.is_some() && matches!(s.state, "starting" | "running")
                    })
                })
                .collect()
        }
        _ => ids,
    };
    if ids.is_empty() {
        return coded_error("none of them is running", "not_running");
    }
    let mut o = String::from("{\"ok\":true,\"v\":1,\"programs\":[");
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            o.push(',');
        }
        json::write_str(
            &mut o,
            fleet.ships.get(id.index()).map_or("", |s| s.name.as_str()),
        );
    }
    o.push_str("]}\n");
    outbox.push(Message::Operate { ids, op });
    o.into_bytes()
}

/// Why `op` on `ids` cannot be done now (the control socket answers `not_now`, the
/// dashboard shows it): programs are started and stopped only while the fleet runs, and
/// one whose dependency has failed for good would fail too (a critical one landing the
/// fleet), one whose dependency the operator stopped would wait for it for ever, unless
/// that dependency starts with it.
pub fn refusal(fleet: &FleetView, op: Operation, ids: &[ProgramId]) -> Option<String> {
    if !matches!(op, Operation::Signal(_))
        && !matches!(fleet.state, "launching" | "running" | "mayday")
    {
        return Some(format!(
            "the fleet is {}: programs are started and stopped only while it runs",
            fleet.state
        ));
    }
    let cmd = match op {
        Operation::Start => "start",
        Operation::Restart => "restart",
        _ => return None,
    };
    for id in ids {
        let Some(s) = fleet.ships.get(id.index()) else {
            continue;
        };
        // Starting one that runs does nothing.
        if matches!(op, Operation::Start) && matches!(s.state, "starting" | "running") {
            continue;
        }
        if let Some(d) = down_dependency(fleet, id.index(), ids).and_then(|d| fleet.ships.get(d)) {
            let how = if d.state == "failed" {
                "has failed"
            } else {
                "is stopped"
            };
            return Some(format!(
                "{} depends on {}, which {how}: {cmd} {} as well",
                s.name, d.name, d.name
            ));
        }
    }
    None
}

/// A program that `i` needs, directly or through others that are not up either, that has
/// failed or that the operator stopped, and that is not among those asked to start
/// (`with`). One that is up (or a job that is done) satisfies what depends on it,
/// whatever its own dependencies have become since.
fn down_dependency(fleet: &FleetView, i: usize, with: &[ProgramId]) -> Option<usize> {
    let mut seen = vec![false; fleet.ships.len()];
    let mut stack = vec![i];
    while let Some(j) = stack.pop() {
        for &d in fleet.ships.get(j).map_or(&[][..], |s| &s.deps[..]) {
            if d >= seen.len() || std::mem::replace(&mut seen[d], true) {
                continue;
            }
            if with.iter().any(|w| w.index() == d) {
                continue;
            }
            match fleet.ships[d].state {
                "failed" | "stopped" => return Some(d),
                "running" | "starting" | "done" => {}
                _ => stack.push(d),
            }
        }
    }
    None
}

/// What a request is answered with.
pub struct Ctx<'a> {
    pub fleet: &'a FleetView,
    /// The process sample `status` shows.
    pub usage: Option<&'a HashMap<i32, Usage>>,
    pub now: Instant,
    /// Requests for the supervisor.
    pub outbox: &'a mut Vec<Message>,
    pub journal: Option<&'a Journal>,
    pub extras: Option<&'a Extras>,
    pub files: Option<&'a LogPaths>,
    /// The client may act, not only look.
    pub full: bool,
}

/// The answer line to one request line, and what the client follows from then on.
pub fn answer(line: &[u8], ctx: &mut Ctx) -> (Vec<u8>, Option<Follow>) {
    let v = match json::parse(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return (error_line("a request is a JSON object"), None),
        Err(e) => return (error_line(&format!("not JSON: {e}")), None),
    };
    match v.get("v").map(|x| x.as_u64()) {
        None | Some(Some(VERSION)) => {}
        Some(_) => {
            return (
                error_line("unsupported protocol version (this mothership speaks 1)"),
                None,
            )
        }
    }
    let Some(cmd) = v.get("cmd").and_then(Value::as_str) else {
        return (error_line("no \"cmd\""), None);
    };
    let looks = matches!(cmd, "status" | "version" | "logs" | "subscribe");
    if !looks && !ctx.full {
        return (
            coded_error(
                "permission denied: members of the control group may only look (control_group_access = \"read\")",
                "denied",
            ),
            None,
        );
    }
    match cmd {
        "logs" => logs(&v, ctx.journal, ctx.files),
        "subscribe" => subscribe(&v, ctx.journal),
        _ => (command(&v, cmd, ctx), None),
    }
}

fn command(v: &Value, cmd: &str, ctx: &mut Ctx) -> Vec<u8> {
    let (fleet, usage, now) = (ctx.fleet, ctx.usage, ctx.now);
    match cmd {
        "status" => {
            let empty = HashMap::new();
            let body =
                crate::proxy::status::json_with(fleet, usage.unwrap_or(&empty), ctx.extras, now);
            let mut o = String::from("{\"ok\":true,\"v\":1,");
            o.push_str(body.trim_end().strip_prefix('{').unwrap_or("}"));
            o.push('\n');
            o.into_bytes()
        }
        "start" | "stop" | "restart" | "signal" => operate(v, cmd, fleet, ctx.outbox),
        "reopen" => {
            ctx.outbox.push(Message::Reopen);
            b"{\"ok\":true,\"v\":1}\n".to_vec()
        }
        "version" => format!(
            "{{\"ok\":true,\"v\":1,\"version\":\"{}\"}}\n",
            env!("CARGO_PKG_VERSION")
        )
        .into_bytes(),
        other => {
            let mut why = String::from("unknown command ");
            json::write_str(&mut why, other);
            error_line(&why)
        }
    }
}

/// Writes a log line's members: `seq`, `time` (RFC 3339, UTC), `stream`, `text`.
fn line_fields(o: &mut String, l: &Line) {
    o.push_str(&format!(
        "\"seq\":{},\"time\":\"{}\",\"stream\":\"{}\",\"text\":",
        l.seq,
        rfc3339_ms(l.at_ms),
        match l.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    ));
    json::write_str(o, &String::from_utf8_lossy(&l.text));
}

/// `grep` of a request: a regular expression of bounded size.
fn grep_of(v: &Value) -> Result<Option<regex::Regex>, Vec<u8>> {
    match v.get("grep") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(p)) => regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .build()
            .map(Some)
            .map_err(|e| error_line(&format!("grep: {e}"))),
        Some(_) => Err(error_line("\"grep\" is a string")),
    }
}

/// `{"cmd":"logs","name":N,"lines":100,"grep":RE,"since":SECONDS,"follow":BOOL}`: the
/// last lines of one program's output (both streams, each with its time), and with
/// `follow` its new lines as `log` events from then on.
fn logs(
    v: &Value,
    journal: Option<&Journal>,
    files: Option<&LogPaths>,
) -> (Vec<u8>, Option<Follow>) {
    let Some(name) = v.get("name").and_then(Value::as_str) else {
        return (error_line("no \"name\""), None);
    };
    let Some((idx, log)) = journal.and_then(|j| j.find(name).and_then(|i| Some((i, j.get(i)?))))
    else {
        let mut why = String::from("no program named ");
        json::write_str(&mut why, name);
        return (coded_error(&why, "no_such_program"), None);
    };
    let n = match v.get("lines") {
        None => 100,
        Some(x) => match x.as_u64() {
            Some(n) => n.min(usize::MAX as u64) as usize,
            None => return (error_line("\"lines\" is a count"), None),
        },
    };
    let grep = match grep_of(v) {
        Ok(g) => g,
        Err(e) => return (e, None),
    };
    let since = match v.get("since") {
        None | Some(Value::Null) => None,
        Some(Value::Number(x)) => match x.parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => {
                Some(now_ms().saturating_sub((s * 1000.0).min(u64::MAX as f64) as u64))
            }
            _ => return (error_line("\"since\" is a number of seconds"), None),
        },
        Some(_) => return (error_line("\"since\" is a number of seconds"), None),
    };
    let lines = log.tail(n, |l| {
        since.is_none_or(|t| l.at_ms >= t)
            && grep
                .as_ref()
                .is_none_or(|re| re.is_match(&String::from_utf8_lossy(&l.text)))
    });
    let mut o = String::from("{\"ok\":true,\"v\":1,\"name\":");
    json::write_str(&mut o, &log.name);
    // The number of the next line: a later `subscribe` may go on from it.
    o.push_str(&format!(",\"next\":{}", log.next_seq()));
    // Where older lines are: its log file and archives (the client reads them), and the
    // time of the oldest line still in memory (older ones are only in the files).
    if let Some((path, keep)) = files.and_then(|f| Some((f.paths.get(idx)?.as_ref()?, f.keep))) {
        o.push_str(",\"file\":");
        json::write_str(&mut o, &path.to_string_lossy());
        o.push_str(&format!(",\"keep\":{keep}"));
    }
    if let Some(first) = log.since(log.first_seq()).next() {
        // Lines of the same millisecond as the oldest kept may be older ones too: how
        // many of them memory still has tells the client which of the file's to take.
        let same = log
            .since(log.first_seq())
            .take_while(|l| l.at_ms == first.at_ms)
            .count();
        o.push_str(&format!(
            ",\"kept_since\":\"{}\",\"kept_at_since\":{same}",
            rfc3339_ms(first.at_ms)
        ));
    }
    o.push_str(",\"lines\":[");
    for (k, l) in lines.iter().enumerate() {
        if k > 0 {
            o.push(',');
        }
        o.push('{');
        line_fields(&mut o, l);
        o.push('}');
    }
    o.push_str("]}\n");
    let follow = (v.get("follow") == Some(&Value::Bool(true))).then(|| Follow {
        logs: vec![(idx, log.next_seq())],
        grep,
        states: false,
    });
    (o.into_bytes(), follow)
}

/// `{"cmd":"subscribe","events":["state","log"],"names":[...]}`: from then on, `program`,
/// `health` and `fleet` events as states change, and `log` events for the new lines of
/// the programs named (all when `names` is left out).
fn subscribe(v: &Value, journal: Option<&Journal>) -> (Vec<u8>, Option<Follow>) {
    let mut f = Follow {
        logs: Vec::new(),
        grep: None,
        states: false,
    };
    let events: Vec<&str> = match v.get("events") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        None => vec!["state", "log"],
        Some(_) => return (error_line("\"events\" is an array"), None),
    };
    let names: Option<Vec<&str>> = match v.get("names") {
        Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_str).collect()),
        None | Some(Value::Null) => None,
        Some(_) => return (error_line("\"names\" is an array"), None),
    };
    for e in &events {
        match *e {
            "state" => f.states = true,
            "log" => {
                let Some(j) = journal else { continue };
                let picked: Vec<usize> = match &names {
                    None => (0..j.len()).collect(),
                    Some(ns) => {
                        let mut v = Vec::new();
                        for n in ns {
                            match j.find(n) {
                                Some(i) => v.push(i),
                                None => {
                                    let mut why = String::from("no program named ");
                                    json::write_str(&mut why, n);
                                    return (coded_error(&why, "no_such_program"), None);
                                }
                            }
                        }
                        v
                    }
                };
                // From the next line, or from where an earlier `logs` answer left off
                // (`"from":{"web":120}`), so that nothing is missed in between.
                let from = |name: &str| match v.get("from") {
                    Some(Value::Object(_)) => v.get("from")?.get(name)?.as_u64(),
                    _ => None,
                };
                f.logs = picked
                    .into_iter()
                    .filter_map(|i| {
                        let log = j.get(i)?;
                        let next =
                            from(&log.name).map_or(log.next_seq(), |n| n.min(log.next_seq()));
                        Some((i, next))
                    })
                    .collect();
            }
            other => {
                let mut why = String::from("unknown event ");
                json::write_str(&mut why, other);
                return (error_line(&why), None);
            }
        }
    }
    let mut o = String::from("{\"ok\":true,\"v\":1,\"events\":[");
    for (k, e) in events.iter().enumerate() {
        if k > 0 {
            o.push(',');
        }
        json::write_str(&mut o, e);
    }
    o.push_str("]}\n");
    (o.into_bytes(), Some(f))
}

/// The event line a subscriber to states gets for `msg`, if any.
fn event_line(msg: &Message, fleet: &FleetView) -> Option<String> {
    let name = |id: &ProgramId| fleet.ships.get(id.index()).map(|s| s.name.as_str());
    let mut o = String::new();
    match msg {
        Message::Program {
            id,
            state,
            restarts,
            pgid,
            last_exit,
            ..
        } => {
            o.push_str("{\"event\":\"program\",\"name\":");
            json::write_str(&mut o, name(id)?);
            o.push_str(&format!(",\"state\":\"{state}\",\"pid\":"));
            match pgid {
                Some(p) => o.push_str(&p.to_string()),
                None => o.push_str("null"),
            }
            o.push_str(&format!(",\"restarts\":{restarts},\"last_exit\":"));
            match last_exit {
                Some(e) => json::write_str(&mut o, e),
                None => o.push_str("null"),
            }
        }
        Message::Health { id, status, reason } => {
            o.push_str("{\"event\":\"health\",\"name\":");
            json::write_str(&mut o, name(id)?);
            o.push_str(&format!(",\"health\":\"{}\",\"reason\":", status.name()));
            json::write_str(&mut o, reason);
        }
        Message::Fleet { state } => {
            o.push_str(&format!("{{\"event\":\"fleet\",\"state\":\"{state}\""));
        }
        _ => return None,
    }
    o.push_str("}\n");
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> FleetView {
        FleetView::new(&[], Instant::now())
    }

    fn parse(b: &[u8]) -> Value {
        json::parse(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
    }

    #[test]
    fn requests_get_one_line_each_and_errors_are_objects() {
        let f = fleet();
        let now = Instant::now();
        let mut out = Vec::new();
        let mut ctx = Ctx {
            fleet: &f,
            usage: None,
            now,
            outbox: &mut out,
            journal: None,
            extras: None,
            files: None,
            full: true,
        };
        let (a, _) = answer(br#"{"v":1,"cmd":"status"}"#, &mut ctx);
        assert!(a.ends_with(b"\n") && a.iter().filter(|&&b| b == b'\n').count() == 1);
        let v = parse(&a);
        assert_eq!(v.get("ok"), Some(&Value::Bool(true)));
        assert_eq!(v.get("state").and_then(Value::as_str), Some("initializing"));
        assert!(matches!(v.get("programs"), Some(Value::Array(_))));
        for (req, want) in [
            (&b"nonsense"[..], "not JSON"),
            (b"[1]", "a JSON object"),
            (br#"{"v":1}"#, "no \\\"cmd\\\""),
            (br#"{"v":2,"cmd":"status"}"#, "unsupported protocol version"),
            (br#"{"cmd":"reboot"}"#, "unknown command \\\"reboot\\\""),
        ] {
            let (a, _) = answer(req, &mut ctx);
            let text = String::from_utf8_lossy(&a);
            let v = parse(&a);
            assert_eq!(v.get("ok"), Some(&Value::Bool(false)), "{text}");
            assert!(text.contains(want), "{text}");
        }
    }

    #[test]
    fn a_stale_socket_is_replaced_and_a_live_one_refused() {
        let d = std::env::temp_dir().join(format!("ms-control-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        // A socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(d.join(SOCKET)));
        let live = bind(&d, None).unwrap_or_else(|e| panic!("{e:?}"));
        let mode = std::fs::metadata(&live.path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        match bind(&d, None) {
            Err(BindError::Live(e)) => assert!(e.contains("another mothership is running"), "{e}"),
            other => panic!("{:?}", other.err()),
        }
        // Dropping the server removes its socket; the lock goes with the file.
        let c = Control::new(live);
        let path = c.path.clone();
        drop(c);
        assert!(!path.exists());
        let again = bind(&d, None);
        assert!(again.is_ok(), "{:?}", again.err());
        drop(again);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_start_that_would_wait_for_ever_is_found_through_the_chain() {
        let text = "[[fleet.a]]\nname = \"db\"\ncommand = \"x\"\n[[fleet.a]]\nname = \"api\"\ncommand = \"x\"\ndepends_on = [\"db\"]\n[[fleet.a]]\nname = \"web\"\ncommand = \"x\"\ndepends_on = [\"api\"]\n";
        let l = crate::manifest::parse(
            std::path::Path::new("m.toml"),
            std::path::Path::new("/srv"),
            text.to_string(),
            &|_| None,
        );
        let diags = l.render_diags();
        let m = l.manifest.unwrap_or_else(|| panic!("{diags}"));
        let mut f = FleetView::new(&m.programs, Instant::now());
        let at = ProgramId::at;
        // db stopped, api waiting for it: web would wait for ever.
        f.ships[0].state = "stopped";
        f.ships[1].state = "waiting";
        assert_eq!(down_dependency(&f, 2, &[at(2)]), Some(0));
        // What the control socket and the dashboard both answer.
        f.state = "running";
        assert_eq!(
            refusal(&f, Operation::Restart, &[at(2)]).as_deref(),
            Some("web depends on db, which is stopped: restart db as well")
        );
        assert_eq!(refusal(&f, Operation::Stop, &[at(2)]), None);
        f.state = "draining";
        assert!(refusal(&f, Operation::Start, &[at(2)])
            .is_some_and(|w| w.contains("the fleet is draining")));
        f.state = "running";
        // Unless db starts with it.
        assert_eq!(down_dependency(&f, 2, &[at(2), at(0)]), None);
        // An api that is up serves web, whatever became of db since.
        f.ships[1].state = "running";
        assert_eq!(down_dependency(&f, 2, &[at(2)]), None);
        f.ships[1].state = "failed";
        assert_eq!(down_dependency(&f, 2, &[at(2)]), Some(1));
    }

    #[test]
    fn a_client_that_reads_nothing_or_idles_is_disconnected() {
        use std::io::Read;
        let d = std::env::temp_dir().join(format!("ms-control-stall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
        let mut c = Control::new(bind(&d, None).unwrap_or_else(|e| panic!("{e:?}")));
        let poll = mio::Poll::new().unwrap();
        let reg = poll.registry();
        c.register(reg).unwrap();
        let mut j = Journal::new(["web".to_string()]);
        for k in 0..64 {
            j.push(0, 1000 + k, Stream::Stdout, &[b'x'; 1000]);
        }
        c.attach(Rc::new(RefCell::new(j)));
        let f = fleet();
        let now = Instant::now();
        let connect = || std::os::unix::net::UnixStream::connect(d.join(SOCKET)).unwrap();
        let (mut slow, mut idle, mut follower) = (connect(), connect(), connect());
        c.ready(Token(CONTROL_TOKENS), reg, &f, now);
        assert!(c.clients.len() == 3 && c.clients.iter().all(Option::is_some));
        // A follower is bounded otherwise (gaps, 4 MiB of events): never timed out.
        follower
            .write_all(b"{\"cmd\":\"subscribe\",\"events\":[\"state\"]}\n")
            .unwrap();
        c.ready(Token(CONTROL_TOKENS + 3), reg, &f, now);
        assert!(c.clients[2].as_ref().is_some_and(|c| c.follow.is_some()));
        // Far more answers than the kernel holds, never read.
        for _ in 0..60 {
            slow.write_all(b"{\"cmd\":\"logs\",\"name\":\"web\",\"lines\":100}\n")
                .unwrap();
        }
        for _ in 0..60 {
            c.ready(Token(CONTROL_TOKENS + 1), reg, &f, now);
            c.turn_end(reg, &f, now);
        }
        assert!(c.clients[0].as_ref().is_some_and(|c| !c.out.is_empty()));
        // Its last write is the stall's start.
        let t = c.next_deadline(now).unwrap();
        assert!(t >= now + STALL && t <= Instant::now() + STALL);
        c.turn_end(reg, &f, t - std::time::Duration::from_millis(1));
        assert!(c.clients[0].is_some(), "not before its time");
        c.turn_end(reg, &f, t);
        assert!(
            c.clients[0].is_none(),
            "the client that reads nothing is gone"
        );
        assert!(c.clients[1].is_some(), "the idle one is not, yet");
        let t = c.next_deadline(now).unwrap();
        assert!(t >= now + IDLE && t <= Instant::now() + IDLE);
        c.turn_end(reg, &f, t);
        assert!(c.clients[1].is_none());
        assert_eq!(c.next_deadline(now), None);
        c.turn_end(reg, &f, now + IDLE + IDLE);
        assert!(c.clients[2].is_some(), "the follower stays");
        idle.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 16];
        assert_eq!(idle.read(&mut b).ok(), Some(0), "closed");
        // What the slow one had been sent before, then the end.
        slow.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut all = Vec::new();
        let _ = slow.read_to_end(&mut all);
        assert!(!all.is_empty());
        drop(c);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn logs_and_subscribe_requests() {
        let f = fleet();
        let mut j = Journal::new(["web".to_string()]);
        for k in 0..5 {
            j.push(0, 1000 + k, Stream::Stdout, format!("line {k}").as_bytes());
        }
        j.push(0, 2000, Stream::Stderr, b"\xff oops \"quoted\"");
        let mut out = Vec::new();
        let mut ask = |req: &[u8]| {
            let mut ctx = Ctx {
                fleet: &f,
                usage: None,
                now: Instant::now(),
                outbox: &mut out,
                journal: Some(&j),
                extras: None,
                files: None,
                full: true,
            };
            let (a, follow) = answer(req, &mut ctx);
            (parse(&a), String::from_utf8_lossy(&a).into_owned(), follow)
        };
        let (v, text, follow) = ask(br#"{"cmd":"logs","name":"web","lines":2}"#);
        assert!(follow.is_none());
        let Some(Value::Array(lines)) = v.get("lines") else {
            panic!("{text}")
        };
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0].get("text").and_then(Value::as_str), Some("line 4"));
        assert_eq!(lines[0].get("seq").and_then(Value::as_u64), Some(4));
        assert_eq!(
            lines[0].get("time").and_then(Value::as_str),
            Some("1970-01-01T00:00:01.004Z")
        );
        assert_eq!(
            lines[1].get("stream").and_then(Value::as_str),
            Some("stderr")
        );
        assert_eq!(
            lines[1].get("text").and_then(Value::as_str),
            Some("\u{fffd} oops \"quoted\"")
        );
        let (v, _, _) = ask(br#"{"cmd":"logs","name":"web","grep":"line [13]"}"#);
        assert!(matches!(v.get("lines"), Some(Value::Array(a)) if a.len() == 2));
        let (_, _, follow) = ask(br#"{"cmd":"logs","name":"web","lines":0,"follow":true}"#);
        let follow = follow.unwrap_or_else(|| panic!("follows"));
        assert_eq!(follow.logs, vec![(0, 6)]);
        for (req, code) in [
            (&br#"{"cmd":"logs"}"#[..], "bad_request"),
            (br#"{"cmd":"logs","name":"db"}"#, "no_such_program"),
            (br#"{"cmd":"logs","name":"web","lines":-1}"#, "bad_request"),
            (br#"{"cmd":"logs","name":"web","grep":"("}"#, "bad_request"),
            (
                br#"{"cmd":"logs","name":"web","since":"1h"}"#,
                "bad_request",
            ),
            (
                br#"{"cmd":"subscribe","events":["weather"]}"#,
                "bad_request",
            ),
            (br#"{"cmd":"subscribe","names":["db"]}"#, "no_such_program"),
            (br#"{"cmd":"stop","targets":["db"]}"#, "no_such_program"),
            (br#"{"cmd":"stop"}"#, "bad_request"),
            (br#"{"cmd":"signal","targets":["all"]}"#, "bad_request"),
        ] {
            let (v, text, follow) = ask(req);
            assert_eq!(v.get("ok"), Some(&Value::Bool(false)), "{text}");
            assert_eq!(v.get("code").and_then(Value::as_str), Some(code), "{text}");
            assert!(follow.is_none());
        }
        let (v, _, follow) = ask(br#"{"cmd":"subscribe"}"#);
        assert_eq!(v.get("ok"), Some(&Value::Bool(true)));
        let follow = follow.unwrap_or_else(|| panic!("subscribed"));
        assert!(follow.states && follow.logs == vec![(0, 6)]);
        assert!(out.is_empty(), "nothing asked of the supervisor");
    }
}
