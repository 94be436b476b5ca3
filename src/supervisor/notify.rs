//! Telling mothership's own supervisor how the fleet is doing: the systemd notification
//! protocol on `$NOTIFY_SOCKET` (`READY=1` with a `STATUS=` line once every program is
//! ready, `STOPPING=1` when the fleet lands, `WATCHDOG=1` at half of `$WATCHDOG_USEC`),
//! and a notification descriptor (`--notify-fd N`, the s6 and OpenRC `notify=fd:N`
//! convention: one newline when the fleet is ready, then the descriptor is closed).
//! A notification that cannot be sent is logged once and never stops the fleet.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The variables of the protocol: removed from what the children inherit, so that none
/// of them talks to mothership's supervisor in its name.
pub const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    fd: Option<File>,
    watchdog: Option<Duration>,
    ready_told: bool,
    failed_once: bool,
}

/// The address a `$NOTIFY_SOCKET` names: a path, or (Linux) `@name` for an abstract one.
pub fn address(v: &OsString) -> Option<SocketAddr> {
    let bytes = v.as_encoded_bytes();
    match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(v).ok(),
        #[cfg(target_os = "linux")]
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(&bytes[1..]).ok()
        }
        _ => None,
    }
}

/// `$WATCHDOG_USEC` for this process (`$WATCHDOG_PID`, when set, must be its pid): how
/// often to ping, half the interval.
pub fn watchdog_every(usec: Option<&str>, pid: Option<&str>, own: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(own)) {
        return None;
    }
    let us: u64 = usec?.trim().parse().ok().filter(|&n| n > 0)?;
    Some(Duration::from_micros(us / 2).max(Duration::from_millis(1)))
}

impl Notifier {
    /// Tells nobody.
    pub fn none() -> Notifier {
        Notifier {
            socket: None,
            fd: None,
            watchdog: None,
            ready_told: false,
            failed_once: false,
        }
    }

    /// From the environment mothership was started with, and `--notify-fd`'s descriptor.
    pub fn from_env(fd: Option<File>) -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|v| {
            let Some(addr) = address(&v) else {
                log::warn!("NOTIFY_SOCKET {v:?} is not a socket path or @name; not notifying");
                return None;
            };
            // Never blocking the loop: a notification the receiver has no room for is
            // dropped (and logged once).
            match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(s) => Some((s, addr)),
                Err(e) => {
                    log::warn!("cannot open a socket to notify NOTIFY_SOCKET: {e}");
                    None
                }
            }
        });
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog = socket
            .as_ref()
            .and_then(|_| watchdog_every(usec.as_deref(), pid.as_deref(), std::process::id()));
        Notifier {
            socket,
            fd,
            watchdog,
            ready_told: false,
            failed_once: false,
        }
    }

    /// How often the watchdog wants a ping, if it does.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&mut self, msg: &str) {
        let Some((s, addr)) = &self.socket else {
            return;
        };
        if let Err(e) = s.send_to_addr(msg.as_bytes(), addr) {
            if !self.failed_once {
                log::warn!("cannot notify NOTIFY_SOCKET: {e}");
                self.failed_once = true;
            }
        }
    }

    /// Every program is ready (once).
    pub fn ready(&mut self, status: &str) {
        if std::mem::replace(&mut self.ready_told, true) {
            return;
        }
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
        if let Some(mut f) = self.fd.take() {
            if let Err(e) = f.write_all(b"\n") {
                log::warn!("cannot write to the notification descriptor: {e}");
            }
        }
    }

    /// The fleet lands.
    pub fn stopping(&mut self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
        // Never ready: whoever waits on the descriptor sees it close.
        self.fd = None;
    }

    pub fn ping(&mut self) {
        self.send("WATCHDOG=1");
    }
}

fn one_line(s: &str) -> String {
    s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_the_watchdog_interval() {
        assert!(address(&OsString::from("/run/n.sock")).is_some());
        assert!(address(&OsString::from("relative")).is_none());
        #[cfg(target_os = "linux")]
        assert!(address(&OsString::from("@abstract")).is_some());
        assert_eq!(
            watchdog_every(Some("1000000"), None, 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog_every(Some("1000000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog_every(Some("1000000"), Some("8"), 7),
            None,
            "not ours"
        );
        assert_eq!(watchdog_every(Some("0"), None, 7), None);
        assert_eq!(watchdog_every(None, None, 7), None);
    }

    #[test]
    fn ready_is_sent_once_and_the_descriptor_gets_one_newline() {
        let dir = std::env::temp_dir().join(format!("ms-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("n.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).expect("bind");
        listener
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let (r, w) = crate::supervisor::spawn::cloexec_pipe().expect("pipe");
        let mut n = Notifier {
            socket: Some((
                UnixDatagram::unbound().expect("socket"),
                SocketAddr::from_pathname(&path).expect("addr"),
            )),
            fd: Some(File::from(w)),
            watchdog: None,
            ready_told: false,
            failed_once: false,
        };
        n.ready("2 up\n0 failed");
        n.ready("again");
        n.stopping("landing");
        let mut buf = [0u8; 256];
        let got: Vec<String> = (0..2)
            .map(|_| {
                let len = listener.recv(&mut buf).expect("a message");
                String::from_utf8_lossy(&buf[..len]).into_owned()
            })
            .collect();
        assert_eq!(
            got,
            [
                "READY=1\nSTATUS=2 up 0 failed",
                "STOPPING=1\nSTATUS=landing"
            ]
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut File::from(r), &mut text).expect("read");
        assert_eq!(text, "\n", "one newline, then closed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// What a program says on its notification socket, one message (`KEY=VALUE` lines).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Said {
    pub ready: bool,
    pub status: Option<String>,
    pub stopping: bool,
    pub reloading: bool,
    pub watchdog: bool,
    /// `WATCHDOG=trigger`: restart it now.
    pub trigger: bool,
    pub watchdog_usec: Option<u64>,
    pub extend_usec: Option<u64>,
}

/// Parses one notification message; unknown keys are ignored, as systemd does.
pub fn parse(msg: &[u8]) -> Said {
    let mut s = Said::default();
    for line in String::from_utf8_lossy(msg).lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match (k, v) {
            ("READY", "1") => s.ready = true,
            ("STATUS", v) => s.status = Some(v.chars().take(200).collect()),
            ("STOPPING", "1") => s.stopping = true,
            ("RELOADING", "1") => s.reloading = true,
            ("WATCHDOG", "1") => s.watchdog = true,
            ("WATCHDOG", "trigger") => s.trigger = true,
            ("WATCHDOG_USEC", v) => s.watchdog_usec = v.trim().parse().ok().filter(|&n| n > 0),
            ("EXTEND_TIMEOUT_USEC", v) => s.extend_usec = v.trim().parse().ok(),
            _ => {}
        }
    }
    s
}

/// A program's notification socket: a datagram socket at a path in the socket folder,
/// whose messages carry the sender's credentials (Linux).
#[cfg(target_os = "linux")]
pub struct Inbox {
    sock: UnixDatagram,
    path: std::path::PathBuf,
}

#[cfg(target_os = "linux")]
impl Inbox {
    /// Binds a fresh socket at `path` (a stale one there is replaced).
    pub fn bind(path: &std::path::Path) -> std::io::Result<Inbox> {
        use nix::sys::socket::{setsockopt, sockopt};
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        // Only mothership's user may send to it (its folder may let a control group
        // pass through).
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        sock.set_nonblocking(true)?;
        setsockopt(&sock, sockopt::PassCred, &true).map_err(std::io::Error::from)?;
        Ok(Inbox {
            sock,
            path: path.to_path_buf(),
        })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// The next message and its sender's pid (0 when unknown); `None` when none is left.
    pub fn recv(&self, buf: &mut [u8]) -> Option<(usize, i32)> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
        loop {
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [std::io::IoSliceMut::new(buf)];
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
            match recvmsg::<()>(self.raw_fd(), &mut iov, Some(&mut cmsg), flags) {
                Ok(msg) => {
                    let pid = msg
                        .cmsgs()
                        .ok()
                        .into_iter()
                        .flatten()
                        .find_map(|c| match c {
                            ControlMessageOwned::ScmCredentials(cr) => Some(cr.pid()),
                            _ => None,
                        })
                        .unwrap_or(0);
                    return Some((msg.bytes, pid));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
    }
}

#[cfg(target_os = "linux")]
impl Drop for Inbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod said_tests {
    use super::*;

    #[test]
    fn messages_parse_as_systemd_writes_them() {
        let s = parse(b"READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000\nX=1\nnonsense");
        assert!(s.ready && s.watchdog && !s.stopping && !s.trigger);
        assert_eq!(s.status.as_deref(), Some("serving 3 clients"));
        assert_eq!(s.extend_usec, Some(5_000_000));
        let s = parse(b"WATCHDOG=trigger\nWATCHDOG_USEC=0\nSTOPPING=1\nRELOADING=1\nREADY=0");
        assert!(s.trigger && s.stopping && s.reloading && !s.ready);
        assert_eq!(s.watchdog_usec, None, "0 is no watchdog");
    }
}
