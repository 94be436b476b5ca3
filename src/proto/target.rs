//! Request targets and authorities (RFC 9112 3.2, RFC 3986): the normal form a request is
//! routed and forwarded on, and the syntax of `Host`. Pure functions over strings.
//!
//! Normalising the path of an origin-form target:
//! - percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded, other
//!   percent-encodings keep their escape with upper-case hex digits (`%2f` -> `%2F`: an
//!   encoded slash is never a separator); a `%` without two hex digits is refused;
//! - repeated slashes are merged (`//admin` is `/admin`, as nginx does by default);
//! - dot-segments are removed (RFC 3986 5.2.4): `/x/../admin` is `/admin`, and `..`
//!   never climbs above the root;
//! - the query is kept as it came.
//!
//! Refused: a backslash in the path (some backends take it for a slash) and a dot-segment
//! with parameters (`/..;/`, which Java servlet containers resolve as `..`), so that no
//! backend resolves a path differently from the router.

use std::borrow::Cow;
use std::net::Ipv6Addr;

/// Why a target or authority was refused (the request gets 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// The shapes a request target takes (RFC 9112 3.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Form<'a> {
    /// `/path?query`, normalised.
    Origin(Cow<'a, str>),
    /// `http://authority/path?query`: the authority, and the origin-form target normalised.
    Absolute {
        authority: &'a str,
        target: Cow<'a, str>,
    },
    /// `*` (OPTIONS only).
    Asterisk,
}

/// Classifies and normalises a request target sent with `method`. Authority-form (which
/// only CONNECT may use, and a reverse proxy does not serve) is refused.
pub fn parse<'a>(method: &str, target: &'a str) -> Result<Form<'a>, Invalid> {
    if target == "*" {
        return if method == "OPTIONS" {
            Ok(Form::Asterisk)
        } else {
            Err(Invalid("`*` is a target for OPTIONS only"))
        };
    }
    if target.starts_with('/') {
        return normalize(target).map(Form::Origin);
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(Invalid(
            "the request target is not a path or an absolute URI",
        ));
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(Invalid("the absolute target's scheme is not http or https"));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || !valid_authority(authority) {
        return Err(Invalid("the absolute target's authority is invalid"));
    }
    let target = if path.is_empty() {
        Cow::Borrowed("/")
    } else if path.starts_with('?') {
        Cow::Owned(normalize(&format!("/{path}"))?.into_owned())
    } else {
        normalize(path)?
    };
    Ok(Form::Absolute { authority, target })
}

/// The normal form of an origin-form target (see the module's notes); borrowed when the
/// target is already normal, which is the common case.
pub fn normalize(target: &str) -> Result<Cow<'_, str>, Invalid> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return Err(Invalid("the request path does not start with `/`"));
    }
    if target.contains('#') {
        return Err(Invalid("a fragment in the request target"));
    }
    if path.contains('\\') {
        return Err(Invalid("a backslash in the request path"));
    }
    let needs_work = path.contains('%')
        || path.contains("//")
        || path
            .split('/')
            .any(|s| s == "." || s == ".." || dot_with_params(s));
    if !needs_work {
        return Ok(Cow::Borrowed(target));
    }
    let decoded = decode_unreserved(path)?;
    if decoded.split('/').any(dot_with_params) {
        return Err(Invalid("a dot-segment with parameters in the request path"));
    }
    let mut out = remove_dots(&decoded);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(Cow::Owned(out))
}

/// `.;x` or `..;x`: a dot-segment as servlet containers see it.
fn dot_with_params(seg: &str) -> bool {
    seg.starts_with(".;") || seg.starts_with("..;")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decodes `%XX` of unreserved characters; other escapes are kept, upper-cased.
fn decode_unreserved(path: &str) -> Result<String, Invalid> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(Invalid("malformed percent-encoding in the request path"));
        };
        let v = (h << 4) | l;
        if is_unreserved(v) {
            out.push(v as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
        }
        i += 3;
    }
    Ok(out)
}

/// Removes dot-segments and merges repeated slashes of an absolute path.
fn remove_dots(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    let mut trailing = false;
    for s in path.split('/').skip(1) {
        trailing = matches!(s, "" | "." | "..");
        match s {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segs.is_empty() {
        out.push('/');
    }
    out
}

/// Is `s` a valid `host[:port]` (RFC 3986 3.2.2, 3.2.3): an IP literal in brackets or a
/// registered name or IPv4 address, no userinfo, and a port of at most 65535.
pub fn valid_authority(s: &str) -> bool {
    let (host_ok, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return false,
            },
        };
        (ip.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (valid_reg_name(h), Some(p)),
            None => (valid_reg_name(s), None),
        }
    };
    host_ok && port.is_none_or(valid_port)
}

/// A registered name or IPv4 address: unreserved characters, sub-delims and `%XX`.
fn valid_reg_name(h: &str) -> bool {
    let b = h.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            c if is_unreserved(c) => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            b'%' if b.len() > i + 2 && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => i += 2,
            _ => return false,
        }
        i += 1;
    }
    !b.is_empty()
}

/// One to five digits, at most 65535 (an empty port is refused).
fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|c| c.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65535)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_forms() {
        for (input, want) in [
            ("/", "/"),
            ("/a/b?x=1", "/a/b?x=1"),
            ("/%61dmin/x", "/admin/x"),
            ("/x/../admin/y", "/admin/y"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/./a/./b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%2e%2E/admin", "/admin"),
            ("/a%2fb", "/a%2Fb"),
            ("/a%2Fb/../c", "/c"),
            ("/a%20b", "/a%20b"),
            ("/%7euser", "/~user"),
            ("/a/..?q=/../x", "/?q=/../x"),
            ("/a/", "/a/"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a..b/c", "/a..b/c"),
            ("/a;b/c;d", "/a;b/c;d"),
            ("/x/..a;/y", "/x/..a;/y"),
        ] {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
        assert!(matches!(normalize("/plain/path?q"), Ok(Cow::Borrowed(_))));
        for bad in [
            "/%",
            "/%4",
            "/%zz",
            "/a#frag",
            "a/b",
            "/a\\..\\admin",
            "/pub/..;/admin",
            "/pub/%2e%2e;x/admin",
            "/.;/admin",
        ] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forms() {
        assert_eq!(parse("OPTIONS", "*"), Ok(Form::Asterisk));
        assert!(parse("GET", "*").is_err());
        assert!(parse("GET", "example.com:80").is_err(), "authority-form");
        assert!(parse("GET", "ftp://x/y").is_err());
        assert!(parse("GET", "http://user@x/y").is_err(), "userinfo");
        assert!(parse("GET", "http:///y").is_err());
        // Found by the fuzzer: a fragment after an authority with only a query.
        assert!(parse("GET", "http://h?0/x#y").is_err());
        assert_eq!(
            parse("GET", "http://example.test/abs?q=1"),
            Ok(Form::Absolute {
                authority: "example.test",
                target: Cow::Borrowed("/abs?q=1")
            })
        );
        assert_eq!(
            parse("GET", "HTTP://example.test:8080"),
            Ok(Form::Absolute {
                authority: "example.test:8080",
                target: Cow::Borrowed("/")
            })
        );
        assert_eq!(
            parse("GET", "http://h?q"),
            Ok(Form::Absolute {
                authority: "h",
                target: Cow::Owned("/?q".into())
            })
        );
        assert_eq!(
            parse("GET", "http://h/x/../admin"),
            Ok(Form::Absolute {
                authority: "h",
                target: Cow::Owned("/admin".into())
            })
        );
    }

    #[test]
    fn authorities() {
        for good in [
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:443",
            "a-b_c~d.e",
            "x%41y",
            "localhost:65535",
        ] {
            assert!(valid_authority(good), "{good}");
        }
        for bad in [
            "",
            "user@example.com",
            "example.com/path",
            "exa mple.com",
            "example.com:",
            "example.com:99999",
            "example.com:8o",
            "example.com:80:80",
            "[::1",
            "[zz]:80",
            "[::1]x",
            ":80",
            "a\"b",
            "x%4",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
