//! Head rewriting, pure: the request head sent upstream, the response head sent to the
//! client, and the choices they depend on.

use super::*;

/// Whether (and how) to compress this proxied response for a client whose Accept-Encoding
/// is `accept`.
pub(super) fn compress_choice(r: &ResponseHead, accept: &str) -> Option<&'static str> {
    let framing_ok = r.codings.is_empty() || r.codings == ["chunked"];
    if !(200..300).contains(&r.status)
        || r.status == 204
        || r.status == 206
        || r.body == Body::None
        || !framing_ok
        || r.header("content-range").is_some()
    {
        return None;
    }
    let len = match r.body {
        Body::Length(n) => Some(n),
        _ => None,
    };
    let no_transform = http::has_token(&r.headers, "cache-control", "no-transform");
    compress::choose(
        &[accept],
        r.header("content-type").map(|h| h.value_str()),
        r.header("content-encoding").is_some(),
        len,
        no_transform,
    )
}

/// The client's IP address, for the rate limits (None for a Unix-socket client).
pub(super) fn client_addr(peer: &str) -> Option<std::net::IpAddr> {
    client_ip(peer)?.parse().ok()
}

pub(super) fn client_ip(peer: &str) -> Option<&str> {
    if peer == "unix" {
        return None;
    }
    let ip = peer.rsplit_once(':').map_or(peer, |(ip, _)| ip);
    Some(ip.trim_start_matches('[').trim_end_matches(']'))
}

/// Fields that mothership sets itself on the way upstream.
pub(super) const SET_UPSTREAM: [&str; 9] = [
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-host",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// A client field spelt with underscores that names one mothership sets (`X_Real_IP`,
/// `X-Forwarded_Proto`): WSGI and CGI backends map `-` and `_` to the same variable, so
/// passing it on would let a client forge the real one.
pub(super) fn underscore_twin(name: &str) -> bool {
    name.contains('_')
        && SET_UPSTREAM.iter().any(|s| {
            s.len() == name.len()
                && s.bytes().zip(name.bytes()).all(|(a, b)| {
                    let b = if b == b'_' {
                        b'-'
                    } else {
                        b.to_ascii_lowercase()
                    };
                    a == b
                })
        })
}

/// The request head sent to the upstream: hop-by-hop headers removed, forwarding headers
/// set, framing kept. Public for the fuzz targets.
/// `request_start`: when set, the client's `X-Request-Start` is replaced by
/// `t=<microseconds since the epoch>` of when the request came in.
pub fn upstream_head(
    req: &RequestHead,
    target: &str,
    peer: &str,
    backend: &BindAddr,
    request_start: Option<u128>,
) -> Vec<u8> {
    let conn = http::connection_tokens(&req.headers);
    let mut out = Vec::with_capacity(req.head_len + 128);
    let _ = write!(out, "{} {} HTTP/1.1\r\n", req.method, target);
    if req.host.is_none() {
        // HTTP/1.0 without Host goes out as HTTP/1.1, which requires one: name the backend.
        match backend {
            BindAddr::Tcp(a) => {
                let _ = write!(out, "host: {a}\r\n");
            }
            BindAddr::Unix(_) => out.extend_from_slice(b"host: localhost\r\n"),
        }
    }
    let mut xff: Vec<String> = Vec::new();
    for h in &req.headers {
        let n = h.name.as_str();
        if n.eq_ignore_ascii_case("x-forwarded-for") {
            xff.push(h.value_str().trim().to_string());
            continue;
        }
        // Framing is written below from what was parsed, never copied.
        if http::is_hop_by_hop(n, &conn)
            || n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("x-real-ip")
            || n.eq_ignore_ascii_case("x-forwarded-proto")
            || n.eq_ignore_ascii_case("x-forwarded-host")
            || (request_start.is_some() && n.eq_ignore_ascii_case("x-request-start"))
            || underscore_twin(n)
        {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    match req.body {
        Body::Chunked => {
            let _ = write!(out, "transfer-encoding: {}\r\n", req.codings.join(", "));
        }
        Body::Length(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
        Body::None | Body::UntilClose => {
            if req.content_length == Some(0) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
    }
    if let Some(ip) = client_ip(peer) {
        xff.retain(|v| !v.is_empty());
        xff.push(ip.to_string());
        let _ = write!(
            out,
            "x-forwarded-for: {}\r\nx-real-ip: {ip}\r\n",
            xff.join(", ")
        );
    } else if !xff.is_empty() {
        let _ = write!(out, "x-forwarded-for: {}\r\n", xff.join(", "));
    }
    out.extend_from_slice(b"x-forwarded-proto: http\r\n");
    if let Some(host) = req.host.as_deref().filter(|h| !h.is_empty()) {
        let _ = write!(out, "x-forwarded-host: {host}\r\n");
    }
    if let Some(proto) = &req.upgrade {
        let _ = write!(out, "connection: upgrade\r\nupgrade: {proto}\r\n");
    }
    if let Some(t) = request_start {
        let _ = write!(out, "x-request-start: t={t}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// What the response head for the client depends on in the exchange.
#[derive(Clone, Copy, Debug)]
pub struct ClientSide {
    /// The request asked for an upgrade (WebSocket).
    pub upgrade: bool,
    /// Minor version of the client's request.
    pub client_minor: u8,
}

/// The head of a 1xx (or of the 101 that starts a tunnel) for the client.
pub(super) fn interim_head(r: &ResponseHead, side: ClientSide) -> Vec<u8> {
    client_head(r, side, true, false, false, None)
}

/// The response head for the client. `compress`: the body is sent compressed with this
/// coding, chunked. Public for the fuzz targets.
pub fn client_head(
    r: &ResponseHead,
    ex: ClientSide,
    keep: bool,
    chunked: bool,
    say_keep_alive: bool,
    compress: Option<&str>,
) -> Vec<u8> {
    let conn = http::connection_tokens(&r.headers);
    let mut out = Vec::with_capacity(r.head_len + 64);
    let reason = if r.reason.is_empty() {
        http::reason(r.status)
    } else {
        &r.reason
    };
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", r.status, reason);
    for h in &r.headers {
        if http::is_hop_by_hop(&h.name, &conn) {
            continue;
        }
        // Framing is written from what was parsed; only a response without a body (HEAD,
        // 304) passes its Content-Length on, as information (never a 1xx or 204, which
        // may not have one).
        if h.is("content-length") && (r.body != Body::None || r.status < 200 || r.status == 204) {
            continue;
        }
        if compress.is_some() {
            if h.is("vary") {
                // Merged into the Vary written below.
                continue;
            }
            if h.is("etag") && !h.value.starts_with(b"W/") {
                // Another representation: the strong validator becomes weak.
                out.extend_from_slice(b"etag: W/");
                out.extend_from_slice(&h.value);
                out.extend_from_slice(b"\r\n");
                continue;
            }
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    if r.status == 101 && ex.upgrade {
        let proto = r
            .header("upgrade")
            .map(|h| h.value_str().to_string())
            .unwrap_or_default();
        let _ = write!(out, "connection: upgrade\r\nupgrade: {proto}\r\n");
    } else if (100..200).contains(&r.status) {
        // interim responses carry no connection management
    } else if let Some(coding) = compress {
        let mut vary: Vec<&str> = r
            .headers
            .iter()
            .filter(|h| h.is("vary"))
            .flat_map(|h| h.value_str().split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("accept-encoding"))
            .collect();
        if vary.contains(&"*") {
            // Varies with anything: `*` stays alone.
            vary = vec!["*"];
        } else {
            vary.push("Accept-Encoding");
        }
        let _ = write!(
            out,
            "content-encoding: {coding}\r\nvary: {}\r\ntransfer-encoding: chunked\r\n",
            vary.join(", ")
        );
    } else if chunked {
        let _ = write!(out, "transfer-encoding: {}\r\n", r.codings.join(", "));
    } else if let Body::Length(n) = r.body {
        let _ = write!(out, "content-length: {n}\r\n");
    } else if r.body == Body::UntilClose && !r.codings.is_empty() && ex.client_minor == 1 {
        // Close-delimited with other codings (gzip, say): pass them on.
        let _ = write!(out, "transfer-encoding: {}\r\n", r.codings.join(", "));
    }
    if r.status >= 200 {
        if !keep {
            out.extend_from_slice(b"connection: close\r\n");
        } else if say_keep_alive {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
