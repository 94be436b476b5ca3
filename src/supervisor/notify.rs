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
            match UnixDatagram::unbound() {
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
