//! Bind strings: `unix:///path`, `tcp://host:port`, `host:port`, `[::1]:80`, or a bare port
//! (`"3000"`, meaning `127.0.0.1:3000`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where something listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl BindAddr {
    /// Parses a bind string; relative Unix paths are resolved against `base`.
    pub fn parse(s: &str, base: &Path) -> Result<BindAddr, String> {
        let t = s.trim();
        if let Some(path) = t.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("invalid bind {s:?}: the Unix socket path is empty"));
            }
            let p = Path::new(path);
            return Ok(BindAddr::Unix(if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }));
        }
        let hostport = t.strip_prefix("tcp://").unwrap_or(t);
        if let Some((scheme, _)) = hostport.split_once("://") {
            return Err(format!(
                "invalid bind {s:?}: unknown scheme `{scheme}://` (use tcp:// or unix://)"
            ));
        }
        if !hostport.is_empty() && hostport.bytes().all(|b| b.is_ascii_digit()) {
            let port = parse_port(hostport, s)?;
            return Ok(BindAddr::Tcp(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                port,
            )));
        }
        let Some(colon) = hostport.rfind(':') else {
            return Err(format!(
                "invalid bind {s:?}: expected host:port, a port number, tcp://host:port or unix:///path"
            ));
        };
        let (host, port) = (&hostport[..colon], &hostport[colon + 1..]);
        let port = parse_port(port, s)?;
        let ip = parse_host(host).ok_or_else(|| {
            format!("invalid bind {s:?}: `{host}` is not an IP address (or `localhost`)")
        })?;
        Ok(BindAddr::Tcp(SocketAddr::new(ip, port)))
    }

    /// The address a client on this machine uses to reach this bind: a wildcard address
    /// (`0.0.0.0`, `::`) is reached at loopback.
    pub fn connect_addr(&self) -> BindAddr {
        match self {
            BindAddr::Tcp(a) if a.ip().is_unspecified() => {
                let ip = match a.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                };
                BindAddr::Tcp(SocketAddr::new(ip, a.port()))
            }
            other => other.clone(),
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            BindAddr::Tcp(a) => Some(a.port()),
            BindAddr::Unix(_) => None,
        }
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "tcp://{a}"),
            BindAddr::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

fn parse_port(p: &str, orig: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "invalid bind {orig:?}: port must be a number from 1 to 65535"
        )),
        Ok(n) => Ok(n),
    }
}

fn parse_host(h: &str) -> Option<IpAddr> {
    if h.eq_ignore_ascii_case("localhost") || h.is_empty() {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    if let Some(v6) = h.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    h.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let base = Path::new("/srv/app");
        let tcp = |s: &str| BindAddr::Tcp(s.parse().unwrap());
        for (input, want) in [
            ("3000", tcp("127.0.0.1:3000")),
            ("tcp://0.0.0.0:80", tcp("0.0.0.0:80")),
            ("127.0.0.1:8080", tcp("127.0.0.1:8080")),
            ("localhost:81", tcp("127.0.0.1:81")),
            ("[::1]:80", tcp("[::1]:80")),
            ("tcp://[::]:443", tcp("[::]:443")),
            ("unix:///run/a.sock", BindAddr::Unix("/run/a.sock".into())),
            (
                "unix://rel/a.sock",
                BindAddr::Unix("/srv/app/rel/a.sock".into()),
            ),
        ] {
            assert_eq!(BindAddr::parse(input, base), Ok(want), "{input}");
        }
        for bad in [
            "",
            "0",
            "70000",
            "host",
            "example.com:80",
            "http://x:1",
            "unix://",
            "1.2.3.4:",
            "::1:80",
        ] {
            assert!(BindAddr::parse(bad, base).is_err(), "{bad}");
        }
    }

    #[test]
    fn wildcard_is_reached_at_loopback() {
        let b = BindAddr::parse("0.0.0.0:9", Path::new("/")).unwrap();
        assert_eq!(b.connect_addr().to_string(), "tcp://127.0.0.1:9");
        let b = BindAddr::parse("[::]:9", Path::new("/")).unwrap();
        assert_eq!(b.connect_addr().to_string(), "tcp://[::1]:9");
    }
}
