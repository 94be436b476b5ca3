//! A connected socket of either family, so connections and listeners can be TCP or Unix.

use std::io::{self, Read, Write};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::manifest::BindAddr;

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Starts a non-blocking connect.
    pub fn connect(addr: &BindAddr) -> io::Result<Stream> {
        match addr {
            BindAddr::Tcp(a) => {
                let s = TcpStream::connect(*a)?;
                let _ = s.set_nodelay(true);
                Ok(Stream::Tcp(s))
            }
            BindAddr::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
        }
    }

    /// After a writable event: `Ok(true)` connected, `Ok(false)` still connecting (a
    /// stale or early event), `Err` the connect failed.
    pub fn connect_result(&self) -> io::Result<bool> {
        let err = match self {
            Stream::Tcp(s) => s.take_error()?,
            Stream::Unix(s) => s.take_error()?,
        };
        if let Some(e) = err {
            return Err(e);
        }
        let peer = match self {
            Stream::Tcp(s) => s.peer_addr().map(|_| ()),
            Stream::Unix(s) => s.peer_addr().map(|_| ()),
        };
        match peer {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes with MSG_MORE on TCP: the kernel holds the bytes (up to 200 ms) until more
    /// follow, so a response head and its body leave in one segment.
    pub fn write_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Stream::Tcp(s) => {
                use std::os::fd::AsRawFd;
                // SAFETY: send on a socket we own, with a valid buffer.
                let n = unsafe {
                    libc::send(
                        s.as_raw_fd(),
                        buf.as_ptr().cast(),
                        buf.len(),
                        libc::MSG_MORE | libc::MSG_NOSIGNAL,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    /// Sends up to `len` bytes of `file` from `offset`, without copying them through user
    /// space where the system allows it (Linux `sendfile`). Returns the bytes sent; 0 means
    /// the file ended early.
    pub fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            let out = match self {
                Stream::Tcp(s) => s.as_raw_fd(),
                Stream::Unix(s) => s.as_raw_fd(),
            };
            let mut off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: both descriptors are open and owned; `off` is a valid pointer.
            let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, len) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            use std::os::unix::fs::FileExt;
            let mut buf = vec![0; len.min(256 << 10)];
            let n = file.read_at(&mut buf, offset)?;
            if n == 0 {
                return Ok(0);
            }
            self.write(&buf[..n])
        }
    }

    /// True when nothing can be read right now and the peer has not closed: a
    /// non-blocking peek says it would block.
    pub fn is_quiet(&self) -> bool {
        use std::os::fd::AsRawFd;
        let fd = match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        };
        let mut b = [0u8; 1];
        // SAFETY: recv into a one-byte buffer we own, on a socket we own; MSG_PEEK leaves
        // the byte in the socket and MSG_DONTWAIT never blocks.
        let n = unsafe {
            libc::recv(
                fd,
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
    }

    pub fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            Stream::Unix(s) => s.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Binds `addr`. A stale Unix socket file (nobody listening) is replaced; a live one is
    /// an error.
    pub fn bind(addr: &BindAddr) -> io::Result<Listener> {
        match addr {
            BindAddr::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(*a)?)),
            BindAddr::Unix(p) => {
                if p.exists() {
                    if std::os::unix::net::UnixStream::connect(p).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{} is in use by another process", p.display()),
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Ok(Listener::Unix(UnixListener::bind(p)?))
            }
        }
    }

    /// Accepts one connection: the stream and the client address (`ip:port`, or `unix`).
    pub fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, a) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), a.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), "unix".to_string()))
            }
        }
    }
}

impl Source for Listener {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.register(r, t, i),
            Listener::Unix(l) => l.register(r, t, i),
        }
    }

    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.reregister(r, t, i),
            Listener::Unix(l) => l.reregister(r, t, i),
        }
    }

    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.deregister(r),
            Listener::Unix(l) => l.deregister(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_means_nothing_to_read_and_not_closed() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let a = Stream::Unix(UnixStream::from_std(a));
        assert!(a.is_quiet());
        let mut b = b;
        b.write_all(b"x").unwrap();
        assert!(!a.is_quiet(), "unread bytes");
        assert!(!a.is_quiet(), "a peek leaves them there");
        drop(b);
        let (c, d) = std::os::unix::net::UnixStream::pair().unwrap();
        c.set_nonblocking(true).unwrap();
        let c = Stream::Unix(UnixStream::from_std(c));
        drop(d);
        assert!(!c.is_quiet(), "end of stream");
    }
}
