//! Uplink URLs: `scheme://[user[:password]@]host[:port][/path][?query]`, with the default
//! port per scheme and a masked form that never shows a password.

use std::time::Duration;

use super::model::Uplink;

fn default_port(scheme: &str) -> Option<u16> {
    Some(match scheme {
        "postgres" | "postgresql" => 5432,
        "mysql" => 3306,
        "redis" | "rediss" => 6379,
        "memgraph" | "neo4j" | "bolt" => 7687,
        "http" => 80,
        "https" => 443,
        "tcp" => return None,
        _ => return None,
    })
}

const SCHEMES: &[&str] = &[
    "postgres",
    "postgresql",
    "mysql",
    "redis",
    "rediss",
    "memgraph",
    "neo4j",
    "bolt",
    "http",
    "https",
    "tcp",
];

pub fn parse(url: &str) -> Result<Uplink, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!(
            "uplink URL {:?} has no scheme (such as postgres:// or tcp://)",
            mask_loose(url)
        )
    })?;
    let scheme = scheme.to_ascii_lowercase();
    if !SCHEMES.contains(&scheme.as_str()) {
        return Err(format!(
            "uplink scheme `{scheme}://` is not supported; use one of {}",
            SCHEMES.join(", ")
        ));
    }
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(path_start);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or("uplink URL has an unclosed `[` in its host")?;
        let host = &v6[..end];
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("`{host}` is not an IPv6 address"))?;
        let after = &v6[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("unexpected text after the IPv6 address in uplink URL".into()),
        };
        (host.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("uplink URL {} has no host", mask(url)));
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "uplink URL {} has an invalid port `{p}`",
                    mask(url)
                ))
            }
        },
        None => default_port(&scheme).ok_or_else(|| {
            format!(
                "uplink URL {} needs a port (`{scheme}://` has no default)",
                mask(url)
            )
        })?,
    };
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Uplink {
        name: String::new(),
        scheme,
        host,
        port,
        path,
        masked: mask(url),
        userinfo: userinfo.is_some(),
        timeout: Duration::from_secs(5),
    })
}

/// Replaces the password of a URL's user info (and secret-looking query values) with `***`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return mask_loose(url);
    };
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(path_start);
    let authority = match authority.rfind('@') {
        Some(i) => {
            let user = &authority[..i];
            let user = match user.split_once(':') {
                Some((u, _)) => format!("{u}:***"),
                None => user.to_string(),
            };
            format!("{user}@{}", &authority[i + 1..])
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((p, q)) => {
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if is_secret_key(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{p}?{}", q.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pass",
        "secret",
        "token",
        "key",
        "sslpassword",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// For text that is not even a URL: show nothing that could be a secret.
fn mask_loose(s: &str) -> String {
    if s.contains('@') || s.contains(':') {
        "<redacted>".into()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_parts() {
        for (url, host, port, path) in [
            ("postgres://u:pw@db.local/app", "db.local", 5432, "/app"),
            ("postgresql://db:6000", "db", 6000, "/"),
            ("mysql://m", "m", 3306, "/"),
            ("redis://r:1", "r", 1, "/"),
            ("neo4j://n", "n", 7687, "/"),
            ("memgraph://n", "n", 7687, "/"),
            ("http://h/health?x=1", "h", 80, "/health?x=1"),
            ("https://h?x=1", "h", 443, "/?x=1"),
            ("tcp://[::1]:9000", "::1", 9000, "/"),
            ("postgres://[2001:db8::1]/x", "2001:db8::1", 5432, "/x"),
        ] {
            let u = parse(url).unwrap();
            assert_eq!(
                (u.host.as_str(), u.port, u.path.as_str()),
                (host, port, path),
                "{url}"
            );
        }
        for bad in [
            "db:5432",
            "ftp://x",
            "tcp://host",
            "http://:80",
            "tcp://h:0",
            "tcp://h:99999",
            "tcp://[::1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(
            mask("postgres://user:s3cret@db/app"),
            "postgres://user:***@db/app"
        );
        assert_eq!(mask("redis://:pw@r:6379"), "redis://:***@r:6379");
        assert_eq!(mask("http://h/x?token=abc&a=1"), "http://h/x?token=***&a=1");
        assert_eq!(mask("tcp://h:1"), "tcp://h:1");
        let e = parse("ftp://u:hunter2@x").unwrap_err();
        assert!(!e.contains("hunter2"));
        let e = parse("u:hunter2@x").unwrap_err();
        assert!(!e.contains("hunter2"));
    }
}
