//! Rate limits (`[mothership.rate_limiting]`): a global bucket refilled at `global_rps`
//! tokens per second and one bucket per client refilled at `per_ip_rpm` tokens per minute.
//! Each bucket holds at most one period's worth (one second of the global rate, one minute
//! of the per-client rate), so a client that was quiet starts with its whole budget. Time
//! is the monotonic clock the loop passes in.
//!
//! Clients are keyed by address; IPv6 clients by their /64, since one host usually holds a
//! whole /64. The per-client table is bounded: a bucket that has filled up again says
//! nothing a fresh one would not, so those are swept out when the table is full; if it is
//! still full, new clients share one overflow bucket until entries expire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::manifest::RateLimiting;

/// Most clients tracked one by one.
pub const MAX_CLIENTS: usize = 65_536;
/// Least time between two sweeps of a full table.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(capacity: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: capacity,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, capacity: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(capacity);
        self.last = now;
    }
}

/// One limit: tokens per second and the bucket size.
#[derive(Debug, Clone, Copy)]
struct Rule {
    rate: f64,
    capacity: f64,
    /// For the headers: `limit` requests per `window` seconds (a bucketful, and how long
    /// an empty bucket takes to fill).
    limit: u64,
    window: u64,
}

impl Rule {
    fn new(quota: f64, window: u64) -> Option<Rule> {
        (quota.is_finite() && quota > 0.0).then(|| {
            let rate = quota / window as f64;
            let capacity = quota.max(1.0);
            Rule {
                rate,
                capacity,
                limit: capacity.floor() as u64,
                window: (capacity / rate).ceil().max(1.0) as u64,
            }
        })
    }

    /// Seconds until `b` holds `want` tokens.
    fn wait(&self, b: &Bucket, want: f64) -> f64 {
        ((want - b.tokens).max(0.0) / self.rate).max(0.0)
    }
}

/// What to tell a client that is over a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    /// Which limit: `global` or `client`.
    pub scope: &'static str,
    /// Requests allowed per window, and the window in seconds.
    pub limit: u64,
    pub window: u64,
    /// Whole seconds until one more request is allowed (at least 1).
    pub retry_after: u64,
    /// Whole seconds until the bucket is full again.
    pub reset: u64,
}

impl Limited {
    /// The extra header lines of the 429 answer.
    pub fn headers(&self) -> String {
        format!(
            "Retry-After: {}\r\nRateLimit-Limit: {}\r\nRateLimit-Remaining: 0\r\nRateLimit-Reset: {}\r\nRateLimit-Policy: {};w={}\r\n",
            self.retry_after, self.limit, self.reset, self.limit, self.window
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    /// Clients that arrived while the table was full.
    Overflow,
}

pub struct RateLimiter {
    global: Option<(Rule, Bucket)>,
    per_client: Option<Rule>,
    clients: HashMap<Key, Bucket>,
    max_clients: usize,
    last_sweep: Option<Instant>,
    overflow_logged: bool,
}

impl RateLimiter {
    /// None when no limit is set.
    pub fn new(cfg: &RateLimiting, now: Instant) -> Option<RateLimiter> {
        let global = cfg.global_rps.and_then(|q| Rule::new(q, 1));
        let per_client = cfg.per_ip_rpm.and_then(|q| Rule::new(q, 60));
        if global.is_none() && per_client.is_none() {
            return None;
        }
        Some(RateLimiter {
            global: global.map(|r| (r, Bucket::full(r.capacity, now))),
            per_client,
            clients: HashMap::new(),
            max_clients: MAX_CLIENTS,
            last_sweep: None,
            overflow_logged: false,
        })
    }

    #[cfg(test)]
    fn with_max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Clients tracked one by one.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }

    /// Takes one token for a request from `client` (None when the address is unknown, for
    /// example a Unix-socket client: only the global limit applies), or says why not.
    /// Nothing is taken from any bucket when a request is refused.
    pub fn check(&mut self, client: Option<IpAddr>, now: Instant) -> Result<(), Limited> {
        if let Some((rule, b)) = &mut self.global {
            b.refill(rule.rate, rule.capacity, now);
            if b.tokens < 1.0 {
                return Err(limited("global", rule, b));
            }
        }
        if let (Some(rule), Some(ip)) = (self.per_client, client) {
            let key = self.key_for(ip, now, rule);
            let b = self
                .clients
                .entry(key)
                .or_insert_with(|| Bucket::full(rule.capacity, now));
            b.refill(rule.rate, rule.capacity, now);
            if b.tokens < 1.0 {
                return Err(limited("client", &rule, b));
            }
            b.tokens -= 1.0;
        }
        if let Some((_, b)) = &mut self.global {
            b.tokens -= 1.0;
        }
        Ok(())
    }

    fn key_for(&mut self, ip: IpAddr, now: Instant, rule: Rule) -> Key {
        let key = Key::Ip(client_key(ip));
        if self.clients.contains_key(&key) || self.clients.len() < self.max_clients {
            return key;
        }
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY);
        if due {
            self.last_sweep = Some(now);
            self.clients.retain(|_, b| {
                let mut b2 = *b;
                b2.refill(rule.rate, rule.capacity, now);
                b2.tokens < rule.capacity
            });
        }
        if self.clients.len() < self.max_clients {
            self.overflow_logged = false;
            return key;
        }
        if !self.overflow_logged {
            log::warn!(
                "rate limiting: {} clients tracked; new clients share one bucket until entries expire",
                self.clients.len()
            );
            self.overflow_logged = true;
        }
        Key::Overflow
    }
}

fn limited(scope: &'static str, rule: &Rule, b: &Bucket) -> Limited {
    Limited {
        scope,
        limit: rule.limit,
        window: rule.window,
        retry_after: (rule.wait(b, 1.0).ceil() as u64).max(1),
        reset: rule.wait(b, rule.capacity).ceil() as u64,
    }
}

/// IPv4 addresses (also IPv4-mapped IPv6) as they are; IPv6 by /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(global: Option<f64>, per_ip: Option<f64>) -> RateLimiting {
        RateLimiting {
            global_rps: global,
            per_ip_rpm: per_ip,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn unset_means_no_limiter() {
        assert!(RateLimiter::new(&cfg(None, None), Instant::now()).is_none());
        assert!(RateLimiter::new(&cfg(Some(0.0), Some(-1.0)), Instant::now()).is_none());
    }

    #[test]
    fn first_request_of_a_new_client_passes_and_budget_is_per_client() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&cfg(None, Some(5.0)), t0).unwrap();
        for _ in 0..5 {
            assert!(rl.check(ip("10.0.0.1"), t0).is_ok());
        }
        let e = rl.check(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!(e.scope, "client");
        assert_eq!((e.limit, e.window), (5, 60));
        // One token comes back every 12 s; the bucket is full again after 60 s.
        assert_eq!(e.retry_after, 12);
        assert_eq!(e.reset, 60);
        assert!(e.headers().contains("Retry-After: 12\r\n"));
        assert!(e.headers().contains("RateLimit-Policy: 5;w=60\r\n"));
        // Another client is not affected.
        assert!(rl.check(ip("10.0.0.2"), t0).is_ok());
        // After 12 s, one more.
        let t1 = t0 + Duration::from_secs(12);
        assert!(rl.check(ip("10.0.0.1"), t1).is_ok());
        assert!(rl.check(ip("10.0.0.1"), t1).is_err());
    }

    #[test]
    fn global_limit_and_refusals_take_nothing() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&cfg(Some(2.0), Some(60.0)), t0).unwrap();
        assert!(rl.check(ip("10.0.0.1"), t0).is_ok());
        assert!(rl.check(ip("10.0.0.2"), t0).is_ok());
        let e = rl.check(ip("10.0.0.3"), t0).unwrap_err();
        assert_eq!(e.scope, "global");
        assert_eq!((e.retry_after, e.limit, e.window), (1, 2, 1));
        // Half a second gives one token back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(rl.check(None, t1).is_ok());
        assert!(rl.check(ip("10.0.0.1"), t1).is_err());
        // The refused requests of 10.0.0.3 cost it nothing: 60 per minute still available.
        let mut t = t1;
        for _ in 0..60 {
            t += Duration::from_millis(500);
            assert!(rl.check(ip("10.0.0.3"), t).is_ok());
        }
    }

    #[test]
    fn fractional_rates_give_whole_header_values() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&cfg(Some(0.5), None), t0).unwrap();
        assert!(rl.check(None, t0).is_ok());
        let e = rl.check(None, t0).unwrap_err();
        // Half a request per second: one every 2 s.
        assert_eq!((e.limit, e.window, e.retry_after, e.reset), (1, 2, 2, 2));
        let mut rl = RateLimiter::new(&cfg(None, Some(0.5)), t0).unwrap();
        assert!(rl.check(ip("10.0.0.1"), t0).is_ok());
        let e = rl.check(ip("10.0.0.1"), t0).unwrap_err();
        assert_eq!((e.limit, e.window, e.retry_after), (1, 120, 120));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&cfg(None, Some(1.0)), t0).unwrap();
        assert!(rl.check(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(rl.check(ip("2001:db8:1:2::ffff"), t0).is_err());
        assert!(rl.check(ip("2001:db8:1:3::1"), t0).is_ok());
        // IPv4-mapped is the IPv4 client.
        assert!(rl.check(ip("192.0.2.1"), t0).is_ok());
        assert!(rl.check(ip("::ffff:192.0.2.1"), t0).is_err());
    }

    #[test]
    fn table_is_bounded() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(&cfg(None, Some(2.0)), t0)
            .unwrap()
            .with_max_clients(3);
        for i in 1..=3 {
            assert!(rl.check(ip(&format!("10.0.0.{i}")), t0).is_ok());
        }
        // Full with active clients: newcomers share the overflow bucket (2 per minute).
        assert!(rl.check(ip("10.0.1.1"), t0).is_ok());
        assert!(rl.check(ip("10.0.1.2"), t0).is_ok());
        assert!(rl.check(ip("10.0.1.3"), t0).is_err());
        assert_eq!(rl.tracked(), 4);
        // A minute later every bucket is full again: the sweep frees the table.
        let t1 = t0 + Duration::from_secs(61);
        assert!(rl.check(ip("10.0.2.1"), t1).is_ok());
        assert_eq!(rl.tracked(), 1);
    }
}
