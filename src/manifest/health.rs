//! `healthcheck` and `ready`: what a ship's health check probes and when a program counts
//! as ready, parsed from their strings. Pure: no socket is opened and no name resolved.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use regex::Regex;

use super::bind::BindAddr;
use super::units;

/// `health_interval` when not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// `health_timeout` when not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// `health_fails` when not given.
pub const DEFAULT_FAILS: u32 = 3;
/// `health_passes` when not given.
pub const DEFAULT_PASSES: u32 = 1;
/// `unhealthy_restart` when not given.
pub const DEFAULT_UNHEALTHY_RESTART: Duration = Duration::from_secs(60);
/// `ready_timeout` when not given.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A program that declares no readiness and has no bind counts as ready after this.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// `GET path` with this `Host`; a 2xx answer passes.
    Http {
        addr: BindAddr,
        host: String,
        path: String,
    },
    /// A connection to `addr` is accepted.
    Tcp { addr: BindAddr },
    /// The command (run without a shell) exits with status 0.
    Exec { argv: Vec<String> },
}

impl HealthProbe {
    /// For logs: what is probed.
    pub fn describe(&self) -> String {
        match self {
            HealthProbe::Http { addr, path, .. } => format!("GET {path} at {addr}"),
            HealthProbe::Tcp { addr } => format!("connect to {addr}"),
            HealthProbe::Exec { argv } => format!("run {}", argv.join(" ")),
        }
    }
}

/// A ship's health check and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub probe: HealthProbe,
    /// Between the end of one check and the start of the next.
    pub interval: Duration,
    /// A check not decided by then fails.
    pub timeout: Duration,
    /// Consecutive failures before a healthy ship is unhealthy.
    pub fails: u32,
    /// Consecutive passes before an unhealthy ship is healthy again.
    pub passes: u32,
    /// After a start, failures during this long do not count.
    pub grace: Duration,
    /// How long a ship may stay unhealthy before it is restarted (`None`: never).
    pub unhealthy_restart: Option<Duration>,
}

/// When a program counts as ready (its dependents start, the edge routes to it).
#[derive(Debug, Clone)]
pub enum Ready {
    /// Its bind accepts a connection.
    Bind,
    /// Its health check passes once.
    Healthcheck,
    /// It sends `READY=1` to its `NOTIFY_SOCKET`.
    Notify,
    /// It writes a newline to this file descriptor.
    Fd(i32),
    /// A line of its output matches.
    Log(Regex),
    /// It exits with status 0 (one-shot jobs).
    Exit,
    /// It has run this long.
    Delay(Duration),
    /// Bays: it has docked and been moored.
    Docked,
}

impl Ready {
    /// The name the manifest uses for it.
    pub fn describe(&self) -> String {
        match self {
            Ready::Bind => "bind".into(),
            Ready::Healthcheck => "healthcheck".into(),
            Ready::Notify => "notify".into(),
            Ready::Fd(n) => format!("fd:{n}"),
            Ready::Log(r) => format!("log:{}", r.as_str()),
            Ready::Exit => "exit".into(),
            Ready::Delay(d) => format!("{d:?}"),
            Ready::Docked => "docked".into(),
        }
    }
}

/// Parses a `healthcheck` string for a ship bound at `bind` (if it has a bind); `dir` is
/// the folder relative Unix socket paths resolve against. Forms:
/// `/path` (GET on the ship's bind), `http://host[:port]/path` (host an IP address or
/// `localhost`), `unix:///socket:/path` (GET over that socket), `tcp` (connect to the
/// ship's bind), `tcp://host:port`, and `exec:command args` (split shell-style, no shell).
pub fn parse_probe(s: &str, bind: Option<&BindAddr>, dir: &Path) -> Result<HealthProbe, String> {
    let s = s.trim();
    let own_bind = |form: &str| {
        bind.map(BindAddr::connect_addr).ok_or_else(|| {
            format!("a `{form}` health check probes the ship's `bind`, and this ship has none")
        })
    };
    if s.starts_with('/') {
        let addr = own_bind("/path")?;
        let host = host_of(&addr);
        return Ok(HealthProbe::Http {
            addr,
            host,
            path: s.to_string(),
        });
    }
    if s == "tcp" {
        return Ok(HealthProbe::Tcp {
            addr: own_bind("tcp")?,
        });
    }
    if let Some(rest) = s.strip_prefix("tcp://") {
        let addr = BindAddr::parse(&format!("tcp://{rest}"), dir)?.connect_addr();
        return Ok(HealthProbe::Tcp { addr });
    }
    if let Some(rest) = s.strip_prefix("exec:") {
        let argv = units::split_command(rest.trim())
            .map_err(|e| format!("cannot split the `exec:` command: {e}"))?;
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("the `exec:` health check has no command".into());
        }
        return Ok(HealthProbe::Exec { argv });
    }
    if let Some(rest) = s.strip_prefix("http://") {
        return http_url(rest);
    }
    if s.starts_with("https://") {
        return Err(
            "an https:// health check is not supported: probe the ship's plain HTTP port".into(),
        );
    }
    if let Some(rest) = s.strip_prefix("unix://") {
        let Some((sock, path)) = rest.rsplit_once(":/") else {
            return Err(format!(
                "a unix:// health check names the socket and the path to GET, as \"unix:///run/app.sock:/health\"; found {s:?}"
            ));
        };
        let addr = BindAddr::parse(&format!("unix://{sock}"), dir)?;
        return Ok(HealthProbe::Http {
            addr,
            host: "localhost".into(),
            path: format!("/{path}"),
        });
    }
    Err(format!(
        "`healthcheck` must be a path (\"/health\"), an http:// URL, \"unix:///socket:/path\", \"tcp\", \"tcp://host:port\" or \"exec:command\"; found {s:?}"
    ))
}

/// The `Host` header for a probe of `addr`.
fn host_of(addr: &BindAddr) -> String {
    match addr {
        BindAddr::Tcp(a) => a.to_string(),
        BindAddr::Unix(_) => "localhost".into(),
    }
}

/// `host[:port]/path` of an http:// URL.
fn http_url(rest: &str) -> Result<HealthProbe, String> {
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.contains('@') {
        return Err("a health check URL may not carry credentials".into());
    }
    let bad_port = |p: &str| format!("bad port {p:?} in the health check URL");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in the health check URL {authority:?}"))?;
        match after.strip_prefix(':') {
            Some(p) => (h, p.parse::<u16>().map_err(|_| bad_port(p))?),
            None if after.is_empty() => (h, 80),
            None => {
                return Err(format!(
                    "bad authority {authority:?} in the health check URL"
                ))
            }
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad_port(p))?),
            None => (authority, 80),
        }
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>().map_err(|_| {
            format!("the health check URL's host must be an IP address or localhost (names are not resolved); found {host:?}")
        })?
    };
    let addr = BindAddr::Tcp(SocketAddr::new(ip, port)).connect_addr();
    Ok(HealthProbe::Http {
        addr,
        host: authority.to_string(),
        path,
    })
}

/// Parses a `ready` string: `bind`, `healthcheck`, `notify`, `fd:N` (N from 3 to 255),
/// `log:REGEX`, `exit`, or a duration (`"2s"`).
pub fn parse_ready(s: &str) -> Result<Ready, String> {
    let s = s.trim();
    match s {
        "bind" => return Ok(Ready::Bind),
        "healthcheck" => return Ok(Ready::Healthcheck),
        "notify" => return Ok(Ready::Notify),
        "exit" => return Ok(Ready::Exit),
        _ => {}
    }
    if let Some(n) = s.strip_prefix("fd:") {
        return match n.trim().parse::<i32>() {
            Ok(n) if (3..=255).contains(&n) => Ok(Ready::Fd(n)),
            _ => Err(format!(
                "`ready = \"fd:N\"` needs a descriptor from 3 to 255 (0 to 2 are the standard streams); found {n:?}"
            )),
        };
    }
    if let Some(re) = s.strip_prefix("log:") {
        return Regex::new(re)
            .map(Ready::Log)
            .map_err(|e| format!("`ready = \"log:...\"`: bad regex: {e}"));
    }
    units::parse_duration(s).map(Ready::Delay).map_err(|_| {
        format!(
            "`ready` must be \"bind\", \"healthcheck\", \"notify\", \"fd:N\", \"log:REGEX\", \"exit\" or a duration such as \"2s\"; found {s:?}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind() -> BindAddr {
        BindAddr::parse("0.0.0.0:3000", Path::new("/")).expect("bind")
    }

    #[test]
    fn health_check_forms() {
        let dir = Path::new("/srv");
        let b = bind();
        assert_eq!(
            parse_probe("/health", Some(&b), dir),
            Ok(HealthProbe::Http {
                addr: BindAddr::parse("127.0.0.1:3000", dir).expect("a"),
                host: "127.0.0.1:3000".into(),
                path: "/health".into()
            })
        );
        assert_eq!(
            parse_probe("http://localhost:4000/up?x=1", None, dir),
            Ok(HealthProbe::Http {
                addr: BindAddr::parse("127.0.0.1:4000", dir).expect("a"),
                host: "localhost:4000".into(),
                path: "/up?x=1".into()
            })
        );
        for (url, want) in [
            ("http://[::1]:81", "tcp://[::1]:81"),
            ("http://[::1]/x", "tcp://[::1]:80"),
        ] {
            let HealthProbe::Http { addr, .. } = parse_probe(url, None, dir).expect(url) else {
                panic!("{url}: not http");
            };
            assert_eq!(addr.to_string(), want);
        }
        assert_eq!(
            parse_probe("unix://run/app.sock:/health", None, dir),
            Ok(HealthProbe::Http {
                addr: BindAddr::Unix("/srv/run/app.sock".into()),
                host: "localhost".into(),
                path: "/health".into()
            })
        );
        assert_eq!(
            parse_probe("tcp", Some(&b), dir),
            Ok(HealthProbe::Tcp {
                addr: BindAddr::parse("127.0.0.1:3000", dir).expect("a")
            })
        );
        assert_eq!(
            parse_probe("exec:pg_isready -h 'a b'", None, dir),
            Ok(HealthProbe::Exec {
                argv: vec!["pg_isready".into(), "-h".into(), "a b".into()]
            })
        );
        for (bad, why) in [
            ("/health", "has none"),
            ("tcp", "has none"),
            ("https://127.0.0.1/x", "not supported"),
            ("http://example.com/x", "IP address or localhost"),
            ("http://127.0.0.1:99999/x", "bad port"),
            ("unix:///run/app.sock", "names the socket and the path"),
            ("exec:", "no command"),
            ("health", "must be a path"),
        ] {
            let e = parse_probe(bad, None, dir).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn ready_forms() {
        assert!(matches!(parse_ready("bind"), Ok(Ready::Bind)));
        assert!(matches!(parse_ready("fd:3"), Ok(Ready::Fd(3))));
        assert!(matches!(parse_ready("2s"), Ok(Ready::Delay(d)) if d == Duration::from_secs(2)));
        assert!(
            matches!(parse_ready("log:port [0-9]+"), Ok(Ready::Log(r)) if r.is_match("port 42"))
        );
        for bad in ["fd:1", "fd:x", "log:(", "soon"] {
            assert!(parse_ready(bad).is_err(), "{bad}");
        }
    }
}
