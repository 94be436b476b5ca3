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

use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::fleet::FleetView;
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

/// Why the control socket could not be bound.
#[derive(Debug)]
pub enum BindError {
    /// Another mothership answers on it: this one must not start a second fleet.
    Live(String),
    Other(String),
}

/// Binds `dir/control.sock` (mode 0600). A socket file nobody listens on is replaced; one
/// that answers belongs to a running mothership ([`BindError::Live`]).
pub fn bind(dir: &Path) -> Result<(std::os::unix::net::UnixListener, PathBuf), BindError> {
    let path = dir.join(SOCKET);
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => {
                return Err(BindError::Live(format!(
                    "another mothership is running with the socket folder {} (its control socket answers); stop it, or give this one its own folder with MS_SOCKET_DIR",
                    dir.display()
                )))
            }
            Err(_) => {
                std::fs::remove_file(&path).map_err(|e| {
                    BindError::Other(format!("cannot replace the stale {}: {e}", path.display()))
                })?;
            }
        }
    }
    bind_new(&path)
        .map(|l| (l, path.clone()))
        .map_err(BindError::Other)
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
    /// Close once `out` is written (after an error that ends the connection).
    closing: bool,
}

/// The control socket's server.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Option<Client>>,
    uid: u32,
}

impl Control {
    pub fn new(listener: std::os::unix::net::UnixListener, path: PathBuf) -> Control {
        Control {
            listener: UnixListener::from_std(listener),
            path,
            clients: Vec::new(),
            // SAFETY: geteuid has no preconditions.
            uid: unsafe { libc::geteuid() },
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

    fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, _) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("control socket: accept: {e}");
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
        let Some(Some(c)) = self.clients.get_mut(i) else {
            return;
        };
        let mut gone = false;
        let mut buf = [0u8; 4096];
        while !c.closing {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => c.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            }
            // Whole lines are answered as they come; a line over the bound ends it.
            while let Some(end) = c.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = c.inbuf.drain(..=end).collect();
                c.out.extend_from_slice(&answer(&line[..end], fleet, now));
            }
            if c.inbuf.len() > MAX_REQUEST {
                c.out.extend_from_slice(&error_line("request over 64 KiB"));
                c.inbuf.clear();
                c.closing = true;
            }
            if c.out.len() > MAX_PENDING {
                // It does not read its answers: not buffered without bound.
                gone = true;
                break;
            }
        }
        while !gone && !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => gone = true,
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => gone = true,
            }
        }
        if gone || (c.closing && c.out.is_empty()) {
            if let Some(mut c) = self.clients[i].take() {
                let _ = registry.deregister(&mut c.stream);
            }
        }
    }

    /// Removes the socket file (at exit).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn error_line(why: &str) -> Vec<u8> {
    let mut o = String::from("{\"ok\":false,\"v\":1,\"error\":");
    json::write_str(&mut o, why);
    o.push_str("}\n");
    o.into_bytes()
}

/// The answer line to one request line.
pub fn answer(line: &[u8], fleet: &FleetView, now: Instant) -> Vec<u8> {
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
            let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
            let usage = crate::fleet::resources::sample(&pgids);
            let body = crate::proxy::status::json(fleet, &usage, &[], &[], now);
            let mut o = String::from("{\"ok\":true,\"v\":1,");
            o.push_str(body.trim_end().strip_prefix('{').unwrap_or("}"));
            o.push('\n');
            o.into_bytes()
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
        let a = answer(br#"{"v":1,"cmd":"status"}"#, &f, now);
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
            let a = answer(req, &f, now);
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
        let (live, path) = bind(&d).unwrap_or_else(|e| panic!("{e:?}"));
        let mode = std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
        match bind(&d) {
            Err(BindError::Live(e)) => assert!(e.contains("another mothership is running"), "{e}"),
            other => panic!("{other:?}"),
        }
        drop(live);
        let _ = std::fs::remove_dir_all(&d);
    }
}
