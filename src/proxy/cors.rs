//! CORS preflight cache (`cors_cache`): answers to `OPTIONS` requests carrying `Origin` and
//! `Access-Control-Request-Method` are kept and replayed without asking the backend.
//!
//! The key is the bind, the route, the Host, the Origin, the request target, the requested
//! method and the requested headers normalised (split at commas, trimmed, lowercased,
//! sorted, without duplicates). Only 2xx answers with an `Access-Control-Allow-*` header and a small body
//! are stored, for `Access-Control-Max-Age` seconds (0 or less: not stored) or else the
//! configured default; at most `max_entries` and `MAX_BYTES` (keys, headers and bodies
//! counted), the least recently used evicted first. A key longer than `MAX_KEY` is not
//! cached. Each key is stored once, shared by the map and the use order.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::manifest::ids::{BindId, RouteId};
use crate::manifest::CorsCache as Config;
use crate::proto::http::{Header, RequestHead, ResponseHead};

/// Largest preflight body stored.
pub const MAX_BODY: u64 = 8 << 10;
/// Longest key cached (Origin, target and requested headers are the client's to choose).
pub const MAX_KEY: usize = 4 << 10;
/// Most bytes the cache holds, all entries together.
pub const MAX_BYTES: usize = 16 << 20;
/// Bookkeeping counted per entry and per header, beyond their bytes.
const ENTRY_OVERHEAD: usize = 160;
const HEADER_OVERHEAD: usize = 48;

/// A stored answer.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: u16,
    /// End-to-end headers as the backend sent them (framing, hop-by-hop and Date left out).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub stored: Instant,
    expires: Instant,
    stamp: u64,
    /// What this entry counts for against `MAX_BYTES`.
    size: usize,
}

impl Entry {
    /// Header lines for replaying this answer, with an `Age`.
    pub fn header_lines(&self, now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in &self.headers {
            out.extend_from_slice(n.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\r\n");
        }
        let age = now.saturating_duration_since(self.stored).as_secs();
        out.extend_from_slice(format!("age: {age}\r\n").as_bytes());
        out
    }
}

/// What to remember while the backend answers a cacheable preflight.
#[derive(Debug)]
pub struct Capture {
    pub key: String,
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub ttl: Duration,
    pub body: Vec<u8>,
    /// Body bytes still to come.
    pub left: u64,
}

pub struct Cache {
    default_ttl: Duration,
    max_entries: usize,
    map: HashMap<Rc<str>, Entry>,
    /// Use order: stamp -> key.
    order: BTreeMap<u64, Rc<str>>,
    next_stamp: u64,
    /// Bytes held (sum of the entries' sizes).
    bytes: usize,
}

/// The cache key of a request to route `route` of `bind`, if it is a cacheable CORS
/// preflight (fields that are not valid UTF-8 make it uncacheable, so that they cannot
/// collide with others).
pub fn key_of(bind: BindId, route: RouteId, req: &RequestHead) -> Option<String> {
    if req.method != "OPTIONS" {
        return None;
    }
    let origin = req.header("origin")?;
    let method = req.header("access-control-request-method")?;
    let utf8 = |h: &Header| std::str::from_utf8(&h.value).is_ok();
    let fields = [
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
        "host",
    ];
    if req
        .headers
        .iter()
        .any(|h| fields.iter().any(|f| h.is(f)) && !utf8(h))
    {
        return None;
    }
    let mut names: Vec<String> = req
        .headers
        .iter()
        .filter(|h| h.is("access-control-request-headers"))
        .flat_map(|h| {
            h.value_str()
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
        })
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names.dedup();
    // Fields are separated by a byte no header value or target may hold.
    let key = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}",
        bind.index(),
        route.index(),
        req.host.as_deref().unwrap_or("").to_ascii_lowercase(),
        origin.value_str(),
        req.target,
        method.value_str(),
        names.join(",")
    );
    (key.len() <= MAX_KEY).then_some(key)
}

fn ttl_of(headers: &[Header], default: Duration) -> Option<Duration> {
    match headers.iter().find(|h| h.is("access-control-max-age")) {
        None => Some(default),
        Some(h) => match h.value_str().trim().parse::<i64>() {
            Ok(n) if n > 0 => Some(Duration::from_secs(n as u64)),
            Ok(_) => None,
            Err(_) => Some(default),
        },
    }
}

impl Cache {
    pub fn new(cfg: &Config) -> Option<Cache> {
        (cfg.enabled && cfg.max_entries > 0).then(|| Cache {
            default_ttl: cfg.default_ttl,
            max_entries: cfg.max_entries,
            map: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
            bytes: 0,
        })
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.map.remove(key) {
            self.order.remove(&old.stamp);
            self.bytes -= old.size;
        }
    }

    /// Answers stored now.
    pub fn entries(&self) -> usize {
        self.map.len()
    }

    /// A fresh entry for `key` (marked as just used); expired entries are dropped.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        let (k, e) = self.map.get_key_value(key)?;
        if e.expires <= now {
            self.remove(key);
            return None;
        }
        let k = Rc::clone(k);
        let e = self.map.get_mut(key)?;
        self.order.remove(&e.stamp);
        e.stamp = self.next_stamp;
        self.next_stamp += 1;
        self.order.insert(e.stamp, k);
        self.map.get(key)
    }

    /// Whether this answer may be stored: what to capture of it.
    pub fn capture(&self, key: String, r: &ResponseHead, body_len: u64) -> Option<Capture> {
        if !(200..300).contains(&r.status) || body_len > MAX_BODY {
            return None;
        }
        const ALLOW: &str = "access-control-allow-";
        let allows = r.headers.iter().any(|h| {
            h.name.len() > ALLOW.len()
                && h.name
                    .get(..ALLOW.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(ALLOW))
        });
        if !allows {
            return None;
        }
        // An answer that varies with more than the key, or that must not be stored.
        let key_fields = [
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ];
        let varies_more = r.headers.iter().filter(|h| h.is("vary")).any(|h| {
            h.value_str()
                .split(',')
                .map(str::trim)
                .any(|v| !v.is_empty() && !key_fields.iter().any(|k| v.eq_ignore_ascii_case(k)))
        });
        let no_store = ["no-store", "private", "no-cache"]
            .iter()
            .any(|t| crate::proto::http::has_token(&r.headers, "cache-control", t));
        if varies_more || no_store {
            return None;
        }
        let ttl = ttl_of(&r.headers, self.default_ttl)?;
        let tokens = crate::proto::http::connection_tokens(&r.headers);
        let headers = r
            .headers
            .iter()
            .filter(|h| {
                !crate::proto::http::is_hop_by_hop(&h.name, &tokens)
                    && !h.is("content-length")
                    && !h.is("transfer-encoding")
                    && !h.is("date")
                    && !h.is("age")
            })
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        Some(Capture {
            key,
            status: r.status,
            headers,
            ttl,
            body: Vec::new(),
            left: body_len,
        })
    }

    /// Stores a complete capture.
    pub fn put(&mut self, c: Capture, now: Instant) {
        if c.left != 0 || c.key.len() > MAX_KEY {
            return;
        }
        let size = ENTRY_OVERHEAD
            + c.key.len()
            + c.body.len()
            + c.headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + HEADER_OVERHEAD)
                .sum::<usize>();
        if size > MAX_BYTES {
            return;
        }
        self.remove(&c.key);
        while self.map.len() >= self.max_entries || self.bytes + size > MAX_BYTES {
            let Some((_, k)) = self.order.pop_first() else {
                break;
            };
            if let Some(old) = self.map.remove(&k) {
                self.bytes -= old.size;
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        let key: Rc<str> = c.key.into();
        self.order.insert(stamp, Rc::clone(&key));
        self.bytes += size;
        self.map.insert(
            key,
            Entry {
                status: c.status,
                headers: c.headers,
                body: c.body,
                stored: now,
                expires: now
                    .checked_add(c.ttl)
                    .unwrap_or(now + Duration::from_secs(86400 * 365)),
                stamp,
                size,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{parse_request, parse_response, Limits};

    fn req(extra: &str) -> RequestHead {
        let raw = format!("OPTIONS /api/x?y=1 HTTP/1.1\r\nHost: Example.com\r\n{extra}\r\n");
        parse_request(raw.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap()
    }

    fn resp(extra: &str) -> ResponseHead {
        let raw = format!("HTTP/1.1 204 No Content\r\n{extra}\r\n");
        parse_response(raw.as_bytes(), &Limits::default(), "OPTIONS")
            .unwrap()
            .unwrap()
    }

    fn cfg(max: usize) -> Config {
        Config {
            enabled: true,
            default_ttl: Duration::from_secs(100),
            max_entries: max,
        }
    }

    #[test]
    fn only_preflights_have_keys_and_headers_are_normalised() {
        assert!(key_of(BindId::at(0), RouteId::at(0), &req("Origin: https://a\r\n")).is_none());
        assert!(key_of(
            BindId::at(0),
            RouteId::at(0),
            &req("Access-Control-Request-Method: PUT\r\n")
        )
        .is_none());
        let a = key_of(
            BindId::at(0),
            RouteId::at(0),
            &req("Origin: https://a\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-B, content-type\r\n"),
        )
        .unwrap();
        let b = key_of(
            BindId::at(0),
            RouteId::at(0),
            &req("Origin: https://a\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: Content-Type,x-b,x-b\r\n"),
        )
        .unwrap();
        assert_eq!(a, b);
        let other_origin = key_of(
            BindId::at(0),
            RouteId::at(0),
            &req("Origin: https://b\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-B, content-type\r\n"),
        );
        assert_ne!(Some(a.clone()), other_origin);
        let other_bind = key_of(
            BindId::at(1),
            RouteId::at(0),
            &req("Origin: https://a\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-B, content-type\r\n"),
        );
        assert_ne!(Some(a.clone()), other_bind);
        let other_route = key_of(
            BindId::at(0),
            RouteId::at(1),
            &req("Origin: https://a\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: X-B, content-type\r\n"),
        );
        assert_ne!(Some(a), other_route);
        let raw = b"OPTIONS /x HTTP/1.1\r\nHost: h\r\nOrigin: https://a\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x\xff\r\n\r\n";
        let binary = parse_request(raw, &Limits::default()).unwrap().unwrap();
        assert!(key_of(BindId::at(0), RouteId::at(0), &binary).is_none());
    }

    #[test]
    fn what_is_stored_and_for_how_long() {
        let c = Cache::new(&cfg(10)).unwrap();
        let ok = resp("Access-Control-Allow-Origin: *\r\nAccess-Control-Max-Age: 600\r\nDate: x\r\nConnection: keep-alive\r\n");
        let cap = c.capture("k".into(), &ok, 0).unwrap();
        assert_eq!(cap.ttl, Duration::from_secs(600));
        let names: Vec<&str> = cap.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Access-Control-Allow-Origin", "Access-Control-Max-Age"]
        );
        let default = resp("Access-Control-Allow-Methods: PUT\r\n");
        assert_eq!(
            c.capture("k".into(), &default, 0).unwrap().ttl,
            Duration::from_secs(100)
        );
        assert!(c
            .capture("k".into(), &resp("Vary: Origin\r\n"), 0)
            .is_none());
        let zero = resp("Access-Control-Allow-Origin: *\r\nAccess-Control-Max-Age: 0\r\n");
        assert!(c.capture("k".into(), &zero, 0).is_none());
        assert!(c.capture("k".into(), &ok, MAX_BODY + 1).is_none());
        let raw = b"HTTP/1.1 403 Forbidden\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
        let denied = parse_response(raw, &Limits::default(), "OPTIONS")
            .unwrap()
            .unwrap();
        assert!(c.capture("k".into(), &denied, 0).is_none());
    }

    #[test]
    fn ttl_expiry_and_lru_eviction() {
        let t0 = Instant::now();
        let mut c = Cache::new(&cfg(2)).unwrap();
        let r = resp("Access-Control-Allow-Origin: *\r\nAccess-Control-Max-Age: 10\r\n");
        for k in ["a", "b"] {
            let cap = c.capture(k.into(), &r, 0).unwrap();
            c.put(cap, t0);
        }
        // "a" used, so "b" is the least recently used when "c" comes.
        assert!(c.get("a", t0).is_some());
        let cap = c.capture("c".into(), &r, 0).unwrap();
        c.put(cap, t0);
        assert_eq!(c.entries(), 2);
        assert!(c.get("b", t0).is_none());
        assert!(c.get("a", t0).is_some());
        let e = c.get("c", t0 + Duration::from_secs(3)).unwrap();
        assert!(
            String::from_utf8_lossy(&e.header_lines(t0 + Duration::from_secs(3)))
                .ends_with("age: 3\r\n")
        );
        assert!(c.get("c", t0 + Duration::from_secs(10)).is_none());
        assert_eq!(c.entries(), 1);
        // An incomplete capture is not stored.
        let mut cap = c.capture("d".into(), &r, 5).unwrap();
        cap.body.extend_from_slice(b"abc");
        cap.left = 2;
        c.put(cap, t0);
        assert!(c.get("d", t0).is_none());
    }

    #[test]
    fn bounded_by_bytes_and_oversized_keys_are_refused() {
        let t0 = Instant::now();
        let mut c = Cache::new(&cfg(1_000_000)).unwrap();
        let r = resp("Access-Control-Allow-Origin: *\r\nAccess-Control-Max-Age: 600\r\n");
        // Keys near the limit, far more of them than MAX_BYTES holds.
        let n = MAX_BYTES / MAX_KEY * 3;
        for i in 0..n {
            let key = format!("{i:08}{}", "k".repeat(MAX_KEY - 8));
            let cap = c.capture(key, &r, 0).unwrap();
            c.put(cap, t0);
            assert!(c.bytes() <= MAX_BYTES);
        }
        assert!(c.entries() < n / 2, "{} entries", c.entries());
        assert!(c.bytes() > MAX_BYTES / 2);
        // The most recent is kept, the oldest evicted.
        assert!(c
            .get(&format!("{:08}{}", n - 1, "k".repeat(MAX_KEY - 8)), t0)
            .is_some());
        assert!(c
            .get(&format!("{:08}{}", 0, "k".repeat(MAX_KEY - 8)), t0)
            .is_none());
        // A key over MAX_KEY is never stored, nor made by key_of.
        let before = c.entries();
        let cap = c.capture("x".repeat(MAX_KEY + 1), &r, 0).unwrap();
        c.put(cap, t0);
        assert_eq!(c.entries(), before);
        let long_origin = format!(
            "Origin: https://{}\r\nAccess-Control-Request-Method: GET\r\n",
            "o".repeat(MAX_KEY)
        );
        assert!(key_of(BindId::at(0), RouteId::at(0), &req(&long_origin)).is_none());
        // Removing and expiring give the bytes back.
        let total: usize = c.bytes();
        assert!(total > 0);
        for i in 0..n {
            let key = format!("{i:08}{}", "k".repeat(MAX_KEY - 8));
            c.get(&key, t0 + Duration::from_secs(601));
        }
        assert_eq!((c.entries(), c.bytes()), (0, 0));
    }
}
