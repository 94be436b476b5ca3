//! One probe driver for the event loop: a non-blocking connect to one address and, for an
//! HTTP check, a `GET` whose answer head decides (2xx passes; redirects are not
//! followed). Readiness probes (the supervisor) and uplink checks use it; health checks
//! will too. The owner registers the probe under a token of its own, calls
//! [`Probe::drive`] on every event for that token, and keeps the timeout: a probe has no
//! clock.

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use crate::proto::http::{self, Limits};

/// Most bytes of an HTTP answer read before its head must be complete.
pub const MAX_HEAD: usize = 16 << 10;

/// Where a probe connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The connection is accepted.
    Connect,
    /// `GET path` with this `Host` is answered with a 2xx status.
    Get {
        host: String,
        path: String,
        agent: String,
    },
}

/// Where a probe stands after [`Probe::drive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not decided yet: wait for the next event (or the owner's timeout).
    Pending,
    /// Passed, with a note for reports (empty for a plain connect).
    Passed(String),
    /// The connect failed (another address may do better).
    Unreachable(String),
    /// Connected, and the answer is not the one wanted.
    Failed(String),
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

enum Phase {
    Connecting,
    Sending { out: Vec<u8>, sent: usize },
    Reading { buf: Vec<u8> },
    Done,
}

pub struct Probe {
    conn: Conn,
    check: Check,
    phase: Phase,
}

impl Probe {
    /// Starts the connect. `Err`: it failed at once (nothing to register).
    pub fn start(target: &Target, check: Check) -> io::Result<Probe> {
        let conn = match target {
            Target::Tcp(a) => Conn::Tcp(TcpStream::connect(*a)?),
            Target::Unix(p) => Conn::Unix(UnixStream::connect(p)?),
        };
        Ok(Probe {
            conn,
            check,
            phase: Phase::Connecting,
        })
    }

    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match &mut self.conn {
            Conn::Tcp(s) => registry.register(s, token, interest),
            Conn::Unix(s) => registry.register(s, token, interest),
        }
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = match &mut self.conn {
            Conn::Tcp(s) => registry.deregister(s),
            Conn::Unix(s) => registry.deregister(s),
        };
    }

    /// Moves the probe on after an event for its token.
    pub fn drive(&mut self) -> Progress {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Done) {
                Phase::Connecting => match self.connected() {
                    Err(e) => return Progress::Unreachable(e.to_string()),
                    Ok(false) => {
                        self.phase = Phase::Connecting;
                        return Progress::Pending;
                    }
                    Ok(true) => match &self.check {
                        Check::Connect => return Progress::Passed(String::new()),
                        Check::Get { host, path, agent } => {
                            let out = format!(
                                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {agent}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
                            )
                            .into_bytes();
                            self.phase = Phase::Sending { out, sent: 0 };
                        }
                    },
                },
                Phase::Sending { out, mut sent } => {
                    while sent < out.len() {
                        match self.write(&out[sent..]) {
                            Ok(n) => sent += n,
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                self.phase = Phase::Sending { out, sent };
                                return Progress::Pending;
                            }
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => return Progress::Failed(format!("sending the request: {e}")),
                        }
                    }
                    self.phase = Phase::Reading { buf: Vec::new() };
                }
                Phase::Reading { mut buf } => {
                    let mut chunk = [0u8; 4096];
                    let mut eof = false;
                    while buf.len() <= MAX_HEAD {
                        match self.read(&mut chunk) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == ErrorKind::Interrupted => {}
                            Err(e) => return Progress::Failed(format!("reading the answer: {e}")),
                        }
                    }
                    return match verdict(&mut buf, eof) {
                        Some(Ok(note)) => Progress::Passed(note),
                        Some(Err(why)) => Progress::Failed(why),
                        None => {
                            self.phase = Phase::Reading { buf };
                            Progress::Pending
                        }
                    };
                }
                Phase::Done => return Progress::Pending,
            }
        }
    }

    /// The connect has completed (the probe is sending or waiting for an answer).
    pub fn connected_yet(&self) -> bool {
        !matches!(self.phase, Phase::Connecting)
    }

    /// Connected (true), still connecting (false), or refused.
    fn connected(&self) -> io::Result<bool> {
        let (err, peer) = match &self.conn {
            Conn::Tcp(s) => (s.take_error(), s.peer_addr().is_ok()),
            Conn::Unix(s) => (s.take_error(), s.peer_addr().is_ok()),
        };
        match err {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => Ok(peer),
        }
    }

    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match &mut self.conn {
            Conn::Tcp(s) => s.write(b),
            Conn::Unix(s) => s.write(b),
        }
    }

    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match &mut self.conn {
            Conn::Tcp(s) => s.read(b),
            Conn::Unix(s) => s.read(b),
        }
    }
}

/// The verdict on an HTTP answer read so far (`None`: read more). Interim (1xx) answers
/// are skipped.
fn verdict(buf: &mut Vec<u8>, eof: bool) -> Option<Result<String, String>> {
    while let Ok(Some(r)) = http::parse_response(buf, &Limits::default(), "GET") {
        if !(100..200).contains(&r.status) {
            break;
        }
        buf.drain(..r.head_len);
    }
    match http::parse_response(buf, &Limits::default(), "GET") {
        Ok(Some(r)) => Some(match r.status {
            200..=299 => Ok(format!("HTTP {}", r.status)),
            300..=399 => Err(format!(
                "HTTP {} (redirect to {}, not followed)",
                r.status,
                r.header("location").map_or("?", |h| h.value_str())
            )),
            s => Err(format!("HTTP {s}")),
        }),
        Ok(None) if eof => Some(Err("the connection closed before an answer".into())),
        Ok(None) if buf.len() > MAX_HEAD => Some(Err("answer head too large".into())),
        Ok(None) => None,
        Err(e) => Some(Err(format!("not an HTTP answer: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_verdicts() {
        let v = |s: &str, eof| verdict(&mut s.as_bytes().to_vec(), eof);
        assert_eq!(
            v("HTTP/1.1 204 No Content\r\n\r\n", false),
            Some(Ok("HTTP 204".into()))
        );
        assert_eq!(
            v(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
                false
            ),
            Some(Ok("HTTP 200".into()))
        );
        assert_eq!(
            v("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n", false),
            Some(Err("HTTP 302 (redirect to /x, not followed)".into()))
        );
        assert_eq!(
            v("HTTP/1.1 503 Unavailable\r\n\r\n", false),
            Some(Err("HTTP 503".into()))
        );
        assert_eq!(v("HTTP/1.1 200 OK\r\n", false), None);
        assert_eq!(
            v("HTTP/1.1 200 OK\r\n", true),
            Some(Err("the connection closed before an answer".into()))
        );
        assert!(
            matches!(v("SSH-2.0-x\r\n\r\n", false), Some(Err(e)) if e.starts_with("not an HTTP answer"))
        );
    }

    #[test]
    fn connect_and_get_against_real_sockets() {
        use std::io::{BufRead, BufReader};
        let drive = |p: &mut Probe| {
            let mut poll = mio::Poll::new().unwrap();
            let mut events = mio::Events::with_capacity(8);
            p.register(poll.registry(), Token(7)).unwrap();
            let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                poll.poll(&mut events, Some(std::time::Duration::from_millis(100)))
                    .unwrap();
                match p.drive() {
                    Progress::Pending => {}
                    done => return done,
                }
                assert!(std::time::Instant::now() < end, "probe never decided");
            }
        };
        // A listener that answers one HTTP request.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            let mut head = String::new();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut s = r.into_inner();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
            head
        });
        let mut p = Probe::start(
            &Target::Tcp(addr),
            Check::Get {
                host: "svc".into(),
                path: "/health".into(),
                agent: "test".into(),
            },
        )
        .unwrap();
        assert_eq!(drive(&mut p), Progress::Passed("HTTP 200".into()));
        let head = server.join().unwrap();
        assert!(
            head.starts_with("GET /health HTTP/1.1\r\nHost: svc\r\n"),
            "{head}"
        );

        // A port nobody listens on: refused. The port stays bound (but not
        // listening) for the whole check, so no other test can take it and
        // answer in between.
        let held = bound_not_listening();
        let gone = SocketAddr::from(([127, 0, 0, 1], held.1));
        match Probe::start(&Target::Tcp(gone), Check::Connect) {
            Err(_) => {}
            Ok(mut p) => assert!(matches!(drive(&mut p), Progress::Unreachable(_))),
        }
        drop(held);
    }

    /// A TCP socket bound to a loopback port without listening: a connect to
    /// that port is refused, and no other test can take the port meanwhile.
    fn bound_not_listening() -> (std::os::fd::OwnedFd, u16) {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        // SAFETY: plain socket calls on a descriptor this function owns, with
        // a sockaddr_in of the right size.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                len,
            );
            assert_eq!(rc, 0, "bind: {}", io::Error::last_os_error());
            let mut out_len = len;
            let rc = libc::getsockname(
                fd.as_raw_fd(),
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut out_len,
            );
            assert_eq!(rc, 0, "getsockname: {}", io::Error::last_os_error());
            (fd, u16::from_be(sa.sin_port))
        }
    }
}
