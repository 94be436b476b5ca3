//! The control socket: `control.sock` in the socket folder, mode 0600, served by the
//! loop. Its protocol is line-delimited JSON, versioned: a request is one line holding an
//! object `{"v":1,"cmd":"..."}`, its answer one line holding an object with `"ok"`
//! (`true` with the command's fields, or `false` with `"error"`). Requests are bounded
//! ([`MAX_REQUEST`]); a client that stops reading is disconnected once its answers pass
//! [`MAX_PENDING`] bytes; peers are served only when the kernel says they run as the
//! same user as mothership, or as root.
//!
//! Commands of this version: `status` (the fleet's state and each program's, as
//! `/status.json` has them) and `version`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::fleet::resources::Usage;
use crate::fleet::{FleetView, Message, Operation};
use crate::manifest::ids::ProgramId;
use crate::proto::json::{self, Value};
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
}

/// Binds `dir/control.sock` (mode 0600) under an exclusive lock on `dir/control.lock`,
/// held until the process ends (the kernel lets it go even on SIGKILL): a socket file
/// left by a mothership that is gone is replaced; a lock another process holds means a
/// running mothership ([`BindError::Live`]). Probing, unlinking and binding under the lock
/// leaves no race between two starts.
pub fn bind(dir: &Path) -> Result<Bound, BindError> {
    let lock_path = dir.join(LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
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
    let listener = bind_new(&path).map_err(BindError::Other)?;
    Ok(Bound {
        listener,
        path,
        lock,
    })
}

fn bind_new(path: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let l = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
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

    /// What the operators asked since the last call.
    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut self.outbox);
    }

    /// The end of a turn: accepting again after a resource error.
    pub fn turn_end(&mut self, registry: &Registry) {
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
            let allowed = crate::reactor::peer::peer_credentials(&stream)
                .is_ok_and(|p| p.uid == self.uid || p.uid == 0);
            if !allowed {
                let _ = stream.write_all(&error_line("permission denied"));
                continue;
            }
            let slot = match self.clients.iter().position(Option::is_none) {
                Some(i) => i,
                None if self.clients.len() < MAX_CLIENTS => {
                    self.clients.push(None);
                    self.clients.len() - 1
                }
                None => {
                    let _ = stream.write_all(&error_line("too many control clients"));
                    continue;
                }
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
            });
        }
    }

    fn serve(&mut self, i: usize, registry: &Registry, fleet: &FleetView, now: Instant) {
        let mut gone = false;
        let mut buf = [0u8; 4096];
        loop {
            let Some(Some(c)) = self.clients.get_mut(i) else {
                return;
            };
            // Answer the whole lines that came, one at a time, each within the bound.
            if let Some(end) = c.inbuf.iter().position(|&b| b == b'\n') {
                if c.out.len() >= SOFT_PENDING {
                    break; // read on once it has read its answers
                }
                let line: Vec<u8> = c.inbuf.drain(..=end).collect();
                let needs_usage = line.windows(8).any(|w| w == b"\"status\"");
                let usage = needs_usage.then(|| {
                    let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
                    self.sample.get(&pgids, now, SAMPLE_MAX_AGE).clone()
                });
                let Some(Some(c)) = self.clients.get_mut(i) else {
                    return;
                };
                let a = answer(&line[..end], fleet, usage.as_ref(), now, &mut self.outbox);
                c.out.extend_from_slice(&a);
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
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        while !gone && !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => gone = true,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => gone = true,
            }
        }
        let more = !gone && c.out.is_empty() && c.inbuf.contains(&b'\n');
        if gone || (c.closing && c.out.is_empty() && !c.inbuf.contains(&b'\n')) {
            if let Some(mut c) = self.clients[i].take() {
                let _ = registry.deregister(&mut c.stream);
            }
            if self.accept_again {
                self.turn_end(registry);
            }
        } else if more {
            // Lines held back while its answers were pending: answer them now.
            self.serve(i, registry, fleet, now);
        }
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
            match crate::manifest::units::parse_signal(name) {
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
    if !matches!(op, Operation::Signal(_))
        && !matches!(fleet.state, "launching" | "running" | "mayday")
    {
        return coded_error(
            &format!(
                "the fleet is {}: programs are started and stopped only while it runs",
                fleet.state
            ),
            "not_now",
        );
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

/// The answer line to one request line (`usage`: the process sample `status` shows).
pub fn answer(
    line: &[u8],
    fleet: &FleetView,
    usage: Option<&HashMap<i32, Usage>>,
    now: Instant,
    outbox: &mut Vec<Message>,
) -> Vec<u8> {
    let v = match json::parse(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return error_line("a request is a JSON object"),
        Err(e) => return error_line(&format!("not JSON: {e}")),
    };
    match v.get("v").map(|x| x.as_u64()) {
        None | Some(Some(VERSION)) => {}
        Some(_) => return error_line("unsupported protocol version (this mothership speaks 1)"),
    }
    let Some(cmd) = v.get("cmd").and_then(Value::as_str) else {
        return error_line("no \"cmd\"");
    };
    match cmd {
        "status" => {
            let empty = HashMap::new();
            let body = crate::proxy::status::json(fleet, usage.unwrap_or(&empty), &[], &[], now);
            let mut o = String::from("{\"ok\":true,\"v\":1,");
            o.push_str(body.trim_end().strip_prefix('{').unwrap_or("}"));
            o.push('\n');
            o.into_bytes()
        }
        "start" | "stop" | "restart" | "signal" => operate(&v, cmd, fleet, outbox),
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
        let a = answer(br#"{"v":1,"cmd":"status"}"#, &f, None, now, &mut out);
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
            let a = answer(req, &f, None, now, &mut out);
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
        let live = bind(&d).unwrap_or_else(|e| panic!("{e:?}"));
        let mode = std::fs::metadata(&live.path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        match bind(&d) {
            Err(BindError::Live(e)) => assert!(e.contains("another mothership is running"), "{e}"),
            other => panic!("{:?}", other.err()),
        }
        // Dropping the server removes its socket; the lock goes with the file.
        let c = Control::new(live);
        let path = c.path.clone();
        drop(c);
        assert!(!path.exists());
        let again = bind(&d);
        assert!(again.is_ok(), "{:?}", again.err());
        drop(again);
        let _ = std::fs::remove_dir_all(&d);
    }
}
