//! WASM payloads: `[[modules]]` that see each request (or each backend answer) as JSON
//! and let it pass, block it with an answer of their own, or change it (COMPAT.md
//! section 5 is the ABI; mothership(5) documents it with what this host adds).
//!
//! This file is the part that does not need the interpreter: the JSON a module reads, the
//! checks on what a module asks to change, and the edits applied to a request or response
//! head. `host.rs` (cargo feature `wasm`) runs the modules on wasmi. A build without the
//! feature refuses a manifest with modules rather than run without them: a guard that
//! silently does not run fails open.
//!
//! Instance model: one instance per `[[modules]]` entry, made at start and reused for
//! every call on the loop thread, its memory and globals kept between calls (as upstream).
//! Each call gets the entry's fuel afresh. A module that traps in three calls in a row is
//! instantiated again from its compiled code (fresh memory and globals), at most once per
//! backoff period (1 s, doubling to 60 s, back to 1 s after a call that does not fail);
//! meanwhile its calls still answer 503. Running out of fuel does not count towards it.

use std::fmt::Write;
use std::net::IpAddr;
use std::time::Instant;

use crate::manifest::{Module, Phase};
use crate::proto::http::{self, Header, RequestHead, ResponseHead};
use crate::proto::{json, target};

#[cfg(feature = "wasm")]
mod host;

/// The body of the 503 that answers a module failure (trap, fuel, a malformed action).
pub const FAILURE_BODY: &[u8] = b"Module processing failure";
/// The body of the 403 of `set_action(1)`.
pub const BLOCKED_BODY: &[u8] = b"Blocked by module";
/// Upper bounds (seconds) of the module call duration histogram.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];
/// Longest request target a module may set.
const MAX_TARGET: usize = 8192;
/// Longest header name or value a module may set.
const MAX_HEADER: usize = 8192;

/// The answer a module gave instead of letting the request (or response) go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub status: u16,
    pub body: Vec<u8>,
    /// Checked names (lowercase) and values, in the module's order.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// What a chain of modules decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Go on. `reroute`: a module changed what routing looks at (the target or the
    /// User-Agent): route the request again; `changed`: a module changed the head.
    Continue {
        reroute: bool,
        changed: bool,
    },
    Block(Block),
    /// A module failed: answer 503 with [`FAILURE_BODY`] (fail-closed).
    Fail,
}

/// A change a module asked for, checked when it was asked; applied only when the module's
/// call ends without a block or a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replaces every field of that name (lowercase).
    SetHeader(String, Vec<u8>),
    RemoveHeader(String),
    /// A new request target (path and optional query).
    Target(String),
    Status(u16),
}

/// Counts of one module since start.
#[derive(Debug, Clone, Default)]
pub struct ModStats {
    pub calls: u64,
    pub blocks: u64,
    pub errors: u64,
    /// Times the module was instantiated again after failing.
    pub resets: u64,
    pub hist: [u64; DURATION_BUCKETS.len()],
    pub sum: f64,
}

impl ModStats {
    pub fn observe(&mut self, secs: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|&b| secs <= b) {
            self.hist[i] += 1;
        }
        self.sum += secs;
    }
}

/// What the metrics and the status views show of a module.
#[derive(Debug, Clone)]
pub struct ModRow {
    pub name: String,
    pub phase: Phase,
    pub stats: ModStats,
}

/// The loaded modules, in manifest order.
pub struct Payloads {
    /// Per module: phase and route regexes (empty = every path).
    select: Vec<(Phase, Vec<regex::Regex>)>,
    #[cfg(feature = "wasm")]
    host: Option<host::Host>,
}

impl Payloads {
    /// No modules.
    pub fn none() -> Payloads {
        Payloads {
            select: Vec::new(),
            #[cfg(feature = "wasm")]
            host: None,
        }
    }

    /// Compiles and instantiates every module; `Err` names each one that cannot run and why.
    pub fn load(modules: &[Module], now: Instant) -> Result<Payloads, Vec<String>> {
        if modules.is_empty() {
            return Ok(Payloads::none());
        }
        #[cfg(feature = "wasm")]
        {
            let host = host::Host::load(modules, now)?;
            Ok(Payloads {
                select: modules
                    .iter()
                    .map(|m| (m.phase, m.routes.clone()))
                    .collect(),
                host: Some(host),
            })
        }
        #[cfg(not(feature = "wasm"))]
        {
            let _ = now;
            let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
            Err(vec![format!(
                "this build has no WASM support (cargo feature `wasm`): refusing to run without module(s) {}",
                names.join(", ")
            )])
        }
    }

    pub fn is_empty(&self) -> bool {
        self.select.is_empty()
    }

    /// The modules of `phase` whose routes match `path`, in manifest order.
    pub fn select(&self, phase: Phase, path: &str) -> Vec<usize> {
        self.select
            .iter()
            .enumerate()
            .filter(|(_, (p, routes))| {
                *p == phase && (routes.is_empty() || routes.iter().any(|r| r.is_match(path)))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Runs the request modules in manifest order, each whose routes match the request's
    /// path as it is when its turn comes (a module after one that changed the path is
    /// chosen by the new path), changing `req` as they ask; the first block or failure
    /// ends the chain.
    pub fn on_request(
        &mut self,
        req: &mut RequestHead,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Outcome {
        let (mut reroute, mut changed) = (false, false);
        for i in 0..self.select.len() {
            let (phase, routes) = &self.select[i];
            let hit = *phase == Phase::Request
                && (routes.is_empty() || routes.iter().any(|r| r.is_match(req.path())));
            if !hit {
                continue;
            }
            match self.call(i, Phase::Request, req, client, now) {
                Err(o) => return o,
                Ok(edits) => {
                    changed |= !edits.is_empty();
                    reroute |= apply_request(req, edits);
                }
            }
        }
        Outcome::Continue { reroute, changed }
    }

    /// Runs the response modules `chosen` (selected when the request was routed) on a
    /// backend's final answer head, changing it as they ask.
    pub fn on_response(
        &mut self,
        chosen: &[usize],
        resp: &mut ResponseHead,
        now: Instant,
    ) -> Outcome {
        let mut changed = false;
        for &i in chosen {
            let input = response_json(resp);
            match self.call_with(i, Phase::Response, input, None, resp.status, now) {
                Err(o) => return o,
                Ok(edits) => {
                    changed |= !edits.is_empty();
                    apply_response(resp, edits);
                }
            }
        }
        Outcome::Continue {
            reroute: false,
            changed,
        }
    }

    fn call(
        &mut self,
        i: usize,
        phase: Phase,
        req: &RequestHead,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Vec<Edit>, Outcome> {
        let input = request_json(req, client);
        self.call_with(i, phase, input, req.query(), 0, now)
    }

    /// One call of module `i`; without the interpreter (a build without `wasm`, which
    /// refuses modules at load), a failure.
    fn call_with(
        &mut self,
        i: usize,
        phase: Phase,
        input: Vec<u8>,
        query: Option<&str>,
        status: u16,
        now: Instant,
    ) -> Result<Vec<Edit>, Outcome> {
        #[cfg(feature = "wasm")]
        if let Some(h) = &mut self.host {
            return h.call(i, phase, input, query, status, now);
        }
        let _ = (i, phase, input, query, status, now);
        Err(Outcome::Fail)
    }

    /// Every module with its counts, in manifest order.
    pub fn rows(&self) -> Vec<ModRow> {
        #[cfg(feature = "wasm")]
        if let Some(h) = &self.host {
            return h.rows();
        }
        Vec::new()
    }
}

/// Whether a header value is shown to modules: visible ASCII, spaces and tabs.
fn shown(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// `"headers":{...}`: names lowercase, one value per name (the last), in order of first
/// appearance; a value that is not visible ASCII becomes "".
fn headers_json(out: &mut String, headers: &[Header]) {
    let mut names: Vec<String> = Vec::with_capacity(headers.len());
    let mut values: Vec<&[u8]> = Vec::with_capacity(headers.len());
    for h in headers {
        let n = h.name.to_ascii_lowercase();
        match names.iter().position(|x| *x == n) {
            Some(i) => values[i] = &h.value,
            None => {
                names.push(n);
                values.push(&h.value);
            }
        }
    }
    out.push_str("\"headers\":{");
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(out, n);
        out.push(':');
        let v = if shown(v) {
            std::str::from_utf8(v).unwrap_or("")
        } else {
            ""
        };
        json::write_str(out, v);
    }
    out.push('}');
}

/// The request as a module reads it: `{"method","path","query","headers","client_ip"}`
/// (the last one added by this host; the others as upstream has them).
pub fn request_json(req: &RequestHead, client: Option<IpAddr>) -> Vec<u8> {
    let mut o = String::with_capacity(128 + req.target.len() + req.headers.len() * 48);
    o.push_str("{\"method\":");
    json::write_str(&mut o, &req.method);
    o.push_str(",\"path\":");
    json::write_str(&mut o, req.path());
    o.push_str(",\"query\":");
    match req.query() {
        Some(q) => json::write_str(&mut o, q),
        None => o.push_str("null"),
    }
    o.push(',');
    headers_json(&mut o, &req.headers);
    o.push_str(",\"client_ip\":");
    match client {
        Some(ip) => json::write_str(&mut o, &ip.to_string()),
        None => o.push_str("null"),
    }
    o.push('}');
    o.into_bytes()
}

/// The response as a module reads it: `{"status","headers"}`.
pub fn response_json(resp: &ResponseHead) -> Vec<u8> {
    let mut o = String::with_capacity(64 + resp.headers.len() * 48);
    let _ = write!(o, "{{\"status\":{},", resp.status);
    headers_json(&mut o, &resp.headers);
    o.push('}');
    o.into_bytes()
}

/// A module's `config` table as JSON (`{}` when empty), in manifest order.
pub fn config_json(config: &[(String, String)]) -> Vec<u8> {
    let mut o = String::from("{");
    for (i, (k, v)) in config.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json::write_str(&mut o, k);
        o.push(':');
        json::write_str(&mut o, v);
    }
    o.push('}');
    o.into_bytes()
}

fn is_token(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Fields a module may not set or remove: they frame the message or the connection, which
/// mothership owns.
fn protected(name: &str) -> bool {
    matches!(
        name,
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
            | "proxy-authorization"
    )
}

/// Fields of a request that mothership writes itself on the way to the backend (from the
/// real client address), so that no one can forge them.
fn forwarding(name: &str) -> bool {
    matches!(
        name,
        "x-forwarded-for" | "x-real-ip" | "x-forwarded-proto" | "x-forwarded-host"
    )
}

/// A field a module asks to set (`value` Some) or remove, checked: a token name that is not
/// [`protected`] (nor, on a `request`, one of the [`forwarding`] fields), a value of visible
/// ASCII, spaces and tabs, neither over 8 KiB. `host` may be set on a request (to a valid
/// `host[:port]`) but not removed, and is not a response field.
pub fn header_edit(name: &[u8], value: Option<&[u8]>, request: bool) -> Option<Edit> {
    if !is_token(name) || name.len() > MAX_HEADER {
        return None;
    }
    let name = String::from_utf8(name.to_ascii_lowercase()).ok()?;
    if protected(&name) || (request && forwarding(&name)) || (!request && name == "host") {
        return None;
    }
    match value {
        None if name == "host" => None,
        None => Some(Edit::RemoveHeader(name)),
        Some(v) if v.len() <= MAX_HEADER && shown(v) => {
            let v = trim(v);
            if name == "host" && !std::str::from_utf8(v).is_ok_and(target::valid_authority) {
                return None;
            }
            Some(Edit::SetHeader(name, v.to_vec()))
        }
        Some(_) => None,
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|&b| b != b' ' && b != b'\t');
    let end = v.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => &v[s..=e],
        _ => &[],
    }
}

/// A request target a module asks for: origin form (`/path` with an optional `?query`;
/// without one, the request's `query` is kept), visible ASCII, at most 8 KiB in all, in the
/// normal form the router and the ship see for a client's target (`proto::target`), or
/// refused as a client's would be.
pub fn target_edit(t: &[u8], query: Option<&str>) -> Option<Edit> {
    if t.first() != Some(&b'/') || t.len() > MAX_TARGET {
        return None;
    }
    let t = std::str::from_utf8(t).ok()?;
    let whole = match (t.contains('?'), query) {
        (false, Some(q)) => format!("{t}?{q}"),
        _ => t.to_string(),
    };
    if whole.len() > MAX_TARGET || !whole.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return None;
    }
    let normal = target::normalize(&whole).ok()?.into_owned();
    Some(Edit::Target(normal))
}

/// A status a module asks for on a response: 200..=599 but 204 and 304 (the body was
/// framed for the backend's status, which must itself have a body: not 1xx, 204 or 304).
pub fn status_edit(status: i32, original: u16) -> Option<Edit> {
    let s = u16::try_from(status).ok()?;
    let bodyless = |s: u16| s < 200 || s == 204 || s == 304;
    if !(200..=599).contains(&s) || bodyless(s) || bodyless(original) {
        return None;
    }
    Some(Edit::Status(s))
}

/// Whether a field's name is `name` (lowercase) when `_` is read as `-`: WSGI and CGI
/// backends take `X_User` for `X-User`, so a client's twin must not survive a module's
/// change of the real one.
fn same_field(field: &str, name: &str) -> bool {
    field.len() == name.len()
        && field.bytes().zip(name.bytes()).all(|(a, b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            let b = if b == b'_' { b'-' } else { b };
            a == b
        })
}

fn edit_headers(headers: &mut Vec<Header>, edit: &Edit) {
    let name = match edit {
        Edit::SetHeader(n, _) | Edit::RemoveHeader(n) => n,
        Edit::Target(_) | Edit::Status(_) => return,
    };
    headers.retain(|h| !same_field(&h.name, name));
    // A field a `Connection` header names is dropped on the way as hop-by-hop: the name
    // leaves that list, so what the module set is what goes on.
    for h in headers.iter_mut().filter(|h| h.is("connection")) {
        let kept: Vec<&str> = h
            .value_str()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && !same_field(t, name))
            .collect();
        h.value = kept.join(", ").into_bytes();
    }
    headers.retain(|h| !(h.is("connection") && h.value.is_empty()));
    if let Edit::SetHeader(n, v) = edit {
        headers.push(Header {
            name: n.clone(),
            value: v.clone(),
        });
    }
}

/// Applies a module's edits to a request; true when what routing looks at changed (the
/// target or the User-Agent). `X-Forwarded-Host` keeps the client's Host.
pub fn apply_request(req: &mut RequestHead, edits: Vec<Edit>) -> bool {
    let mut reroute = false;
    for e in edits {
        match e {
            Edit::Target(t) => {
                reroute |= t != req.target;
                req.target = t;
            }
            Edit::Status(_) => {}
            e => {
                match &e {
                    // A request without Host (HTTP/1.0) goes out with the module's.
                    Edit::SetHeader(n, v) if n == "host" && req.host.is_none() => {
                        req.host = Some(String::from_utf8_lossy(v).into_owned());
                    }
                    Edit::SetHeader(n, _) | Edit::RemoveHeader(n) if n == "user-agent" => {
                        reroute = true;
                    }
                    _ => {}
                }
                edit_headers(&mut req.headers, &e);
            }
        }
    }
    reroute
}

/// Applies a module's edits to a response head.
pub fn apply_response(resp: &mut ResponseHead, edits: Vec<Edit>) {
    for e in edits {
        match e {
            Edit::Status(s) => {
                resp.status = s;
                resp.reason = http::reason(s).to_string();
            }
            Edit::Target(_) => {}
            e => edit_headers(&mut resp.headers, &e),
        }
    }
}

/// The headers of `set_block_with_headers`: a JSON object of string values, or `null` for
/// none. Names that are not tokens, or that frame the message, are skipped; a value that is
/// not a string, or holds a control character (a line feed among them), fails the call.
pub fn block_headers(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let v = json::parse(text).map_err(|e| format!("headers are not JSON: {e}"))?;
    let members = match v {
        json::Value::Null => return Ok(Vec::new()),
        json::Value::Object(m) => m,
        _ => return Err("headers are not a JSON object".into()),
    };
    let mut out = Vec::with_capacity(members.len());
    for (name, value) in members {
        let json::Value::String(value) = value else {
            return Err(format!("header {name:?} is not a string"));
        };
        if !value.bytes().all(|b| b == b'\t' || b >= 0x20 && b != 0x7f) {
            return Err(format!("header {name:?} holds a control character"));
        }
        if !is_token(name.as_bytes()) || protected(&name.to_ascii_lowercase()) {
            continue;
        }
        out.push((name.to_ascii_lowercase(), value.into_bytes()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, parse_response, Limits};

    fn req(text: &str) -> RequestHead {
        match parse_request(text.as_bytes(), &Limits::default()) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn request_json_keeps_upstream_order_and_adds_the_client_after() {
        let r =
            req("GET /a%20b?x=1&y HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-Bin: café\r\n\r\n");
        let j = String::from_utf8(request_json(&r, "10.0.0.7".parse().ok())).unwrap_or_default();
        assert_eq!(
            j,
            r#"{"method":"GET","path":"/a%20b","query":"x=1&y","headers":{"host":"h","x-a":"2","x-bin":""},"client_ip":"10.0.0.7"}"#
        );
        let r = req("GET /p HTTP/1.1\r\nHost: h\r\n\r\n");
        let j = String::from_utf8(request_json(&r, None)).unwrap_or_default();
        assert!(j.contains(r#""query":null"#), "{j}");
        let r = req("GET /p? HTTP/1.1\r\nHost: h\r\n\r\n");
        let j = String::from_utf8(request_json(&r, None)).unwrap_or_default();
        assert!(j.contains(r#""path":"/p","query":"""#), "{j}");
    }

    #[test]
    fn response_and_config_json() {
        let r = match parse_response(
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\nX-Q: \"q\"\r\n\r\n",
            &Limits::default(),
            "GET",
        ) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        };
        let j = String::from_utf8(response_json(&r)).unwrap_or_default();
        assert_eq!(
            j,
            r#"{"status":201,"headers":{"content-length":"0","x-q":"\"q\""}}"#
        );
        assert_eq!(config_json(&[]), b"{}");
        let c = config_json(&[("k".into(), "v\"".into()), ("a".into(), "".into())]);
        assert_eq!(c, br#"{"k":"v\"","a":""}"#);
    }

    #[test]
    fn edits_are_checked_before_they_are_kept() {
        assert_eq!(
            header_edit(b"X-User", Some(b" ann "), true),
            Some(Edit::SetHeader("x-user".into(), b"ann".to_vec()))
        );
        assert_eq!(header_edit(b"bad name", Some(b"v"), true), None);
        assert_eq!(header_edit(b"x", Some(b"a\r\nb: c"), true), None);
        assert_eq!(header_edit(b"Content-Length", Some(b"1"), false), None);
        assert_eq!(header_edit(b"transfer-encoding", None, true), None);
        assert_eq!(header_edit(b"host", None, true), None);
        assert_eq!(header_edit(b"host", Some(b""), true), None);
        assert_eq!(
            header_edit(b"Cookie", None, false),
            Some(Edit::RemoveHeader("cookie".into()))
        );
        assert_eq!(header_edit(b"X-Real-IP", Some(b"1.2.3.4"), true), None);
        assert!(header_edit(b"X-Real-IP", Some(b"1.2.3.4"), false).is_some());
        assert_eq!(header_edit(b"host", Some(b"h"), false), None);
        assert_eq!(
            target_edit(b"/new?q=1", Some("old")),
            Some(Edit::Target("/new?q=1".into()))
        );
        assert_eq!(
            target_edit(b"/new", Some("old")),
            Some(Edit::Target("/new?old".into()))
        );
        assert_eq!(
            target_edit(b"//x/../admin/%7e", None),
            Some(Edit::Target("/admin/~".into()))
        );
        assert_eq!(target_edit(b"new", None), None);
        assert_eq!(target_edit(b"/a b", None), None);
        assert_eq!(target_edit(b"/a#f", None), None);
        assert_eq!(target_edit(b"/a\\b", None), None);
        assert_eq!(target_edit(b"/..;/x", None), None);
        assert_eq!(target_edit(b"/%zz", None), None);
        let long = "q".repeat(MAX_TARGET);
        assert_eq!(target_edit(b"/x", Some(&long)), None);
        assert_eq!(header_edit(b"Expect", None, true), None);
        assert_eq!(header_edit(b"host", Some(b"a b"), true), None);
        assert!(header_edit(b"host", Some(b"example.org:8080"), true).is_some());
        assert_eq!(status_edit(418, 200), Some(Edit::Status(418)));
        assert_eq!(status_edit(204, 200), None);
        assert_eq!(status_edit(200, 304), None);
        assert_eq!(status_edit(99, 200), None);
        assert_eq!(status_edit(-1, 200), None);
        assert_eq!(status_edit(70000, 200), None);
    }

    #[test]
    fn edits_apply_in_order() {
        let mut r = req("GET /old?a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\nCookie: c\r\n\r\n");
        let moved = apply_request(
            &mut r,
            vec![
                Edit::SetHeader("x-a".into(), b"3".to_vec()),
                Edit::RemoveHeader("cookie".into()),
                Edit::Target("/new?a".into()),
                Edit::SetHeader("host".into(), b"other".to_vec()),
            ],
        );
        assert!(moved);
        assert_eq!(r.target, "/new?a");
        // X-Forwarded-Host keeps the client's.
        assert_eq!(r.host.as_deref(), Some("h"));
        let names: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|h| (h.name.as_str(), &h.value[..]))
            .collect();
        assert_eq!(names, vec![("x-a", &b"3"[..]), ("host", &b"other"[..])]);
        assert!(!apply_request(&mut r, vec![Edit::Target("/new?a".into())]));
        assert!(apply_request(
            &mut r,
            vec![Edit::SetHeader("user-agent".into(), b"bot".to_vec())]
        ));
    }

    #[test]
    fn a_client_cannot_undo_what_a_module_set() {
        // An underscore twin (WSGI's HTTP_X_USER) goes, and the name leaves Connection,
        // which would otherwise drop the module's field on the way as hop-by-hop.
        let mut r = req("GET / HTTP/1.1\r\nHost: h\r\nConnection: X-User, keep-alive\r\nX_User: admin\r\nx-user: a\r\n\r\n");
        apply_request(
            &mut r,
            vec![Edit::SetHeader("x-user".into(), b"verified".to_vec())],
        );
        let names: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("Host", "h"),
                ("Connection", "keep-alive"),
                ("x-user", "verified")
            ]
        );
        let mut r = req("GET / HTTP/1.1\r\nHost: h\r\nConnection: x-user\r\nX_USER: admin\r\n\r\n");
        apply_request(&mut r, vec![Edit::RemoveHeader("x-user".into())]);
        assert_eq!(r.headers.len(), 1, "{:?}", r.headers);
        assert_eq!(header_edit(b"Proxy-Authorization", Some(b"x"), true), None);
    }

    #[test]
    fn block_headers_follow_the_upstream_rules() {
        assert_eq!(block_headers(b"null"), Ok(Vec::new()));
        assert_eq!(
            block_headers(br#"{"X-A":"1","bad name":"2","Content-Length":"9"}"#),
            Ok(vec![("x-a".into(), b"1".to_vec())])
        );
        assert!(block_headers(b"").is_err());
        assert!(block_headers(b"[1]").is_err());
        assert!(block_headers(br#"{"x":1}"#).is_err());
        assert!(block_headers(br#"{"x":"a\nb"}"#).is_err());
    }

    #[test]
    fn selection_by_phase_and_route() {
        let p = Payloads {
            select: vec![
                (Phase::Request, vec![]),
                (Phase::Request, vec![regex::Regex::new("^/admin").unwrap()]),
                (Phase::Response, vec![regex::Regex::new("/x").unwrap()]),
            ],
            #[cfg(feature = "wasm")]
            host: None,
        };
        assert_eq!(p.select(Phase::Request, "/admin/a"), vec![0, 1]);
        assert_eq!(p.select(Phase::Request, "/public/admin"), vec![0]);
        assert_eq!(p.select(Phase::Response, "/a/x/b"), vec![2]);
        assert!(p.select(Phase::Response, "/a").is_empty());
    }
}
