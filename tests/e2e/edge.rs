//! Edge features (issue 5) with real clients and backends: metrics and health, rate limits.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::cli::secs;
use crate::proxy::{curl, json_field, raw, BACKEND};
use crate::support::*;

/// A fleet with an echo ship behind `http` and the given extra manifest text.
fn fleet_with(tag: &str, extra: &str) -> (Dir, Fleet, u16, u16) {
    let d = Dir::new(tag);
    let (http, pp, a) = (free_port(), free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.bind]
http = "127.0.0.1:{http}"
pp = {{ addr = "127.0.0.1:{pp}", proxy_protocol = true }}
{extra}
[[fleet.web]]
name = "down"
command = "false"
critical = false
restart = "never"
bind = "127.0.0.1:1"
routes = ["http:^/down"]
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = ["http:/.*", "pp:/.*"]
"#
        ),
    );
    let fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || fleet.stderr().contains("echo: up")),
        "{}",
        fleet.stderr()
    );
    (d, fleet, http, pp)
}

/// `curl -i`: status line and headers, lowercased names.
fn head_of(out: &str) -> String {
    format!("{}\r\n", out.split("\r\n\r\n").next().unwrap_or("")).to_ascii_lowercase()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_and_health_on_the_metrics_port() {
    let mp = free_port();
    let (_d, fleet, h, _) = fleet_with("metrics", &format!("[mothership]\nmetrics_port = {mp}"));
    for _ in 0..3 {
        let j = curl(&[&format!("http://127.0.0.1:{h}/hello")]);
        assert_eq!(json_field(&j, "name"), Some("echo"), "{j}");
    }
    assert!(curl(&["-i", &format!("http://127.0.0.1:{h}/down")]).starts_with("HTTP/1.1 503"));
    assert!(raw(h, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 400"));

    let m = format!("http://127.0.0.1:{mp}");
    assert_eq!(curl(&[&format!("{m}/health")]), "ok\n");
    let r = curl(&["-i", &format!("{m}/metrics")]);
    assert!(
        head_of(&r).contains("content-type: text/plain; version=0.0.4"),
        "{r}"
    );
    let text = r.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    let ship = "ship=\"echo\",group=\"web\"";
    assert_eq!(
        metric(&text, &format!("mothership_ship_status{{{ship}}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("mothership_ship_state{{{ship},state=\"running\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, "mothership_ship_status{ship=\"down\",group=\"web\"}"),
        Some(0.0)
    );
    let rss = metric(
        &text,
        &format!("mothership_ship_memory_rss_bytes{{{ship}}}"),
    )
    .unwrap();
    assert!(rss > 1_000_000.0, "python's RSS is megabytes: {rss}");
    let vsz = metric(
        &text,
        &format!("mothership_ship_memory_virtual_bytes{{{ship}}}"),
    )
    .unwrap();
    assert!(vsz >= rss);
    assert!(metric(
        &text,
        &format!("mothership_ship_cpu_seconds_total{{{ship}}}")
    )
    .is_some());
    assert_eq!(metric(&text, "mothership_fleet_ships_total"), Some(2.0));
    let ok = "mothership_requests_total{route=\"http:/.*\",ship=\"echo\",code=\"2xx\"}";
    assert_eq!(metric(&text, ok), Some(3.0), "{text}");
    let down = "mothership_requests_total{route=\"http:^/down\",ship=\"down\",code=\"5xx\"}";
    assert_eq!(metric(&text, down), Some(1.0));
    let bad = "mothership_requests_total{route=\"none\",ship=\"\",code=\"4xx\"}";
    assert_eq!(metric(&text, bad), Some(1.0));
    let count = "mothership_request_duration_seconds_count{route=\"http:/.*\"}";
    assert_eq!(metric(&text, count), Some(3.0));
    let out = "mothership_response_body_bytes_total{route=\"http:/.*\"}";
    assert!(metric(&text, out).unwrap() > 100.0);
    assert!(metric(&text, "mothership_connections_total").unwrap() >= 5.0);

    // promtool (Debian's prometheus package) accepts the whole text.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = p.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // Only GET and HEAD, only the two paths.
    assert!(curl(&["-i", "-X", "POST", &format!("{m}/metrics")]).starts_with("HTTP/1.1 405"));
    assert!(curl(&["-i", &format!("{m}/other")]).starts_with("HTTP/1.1 404"));
    let head = curl(&["-I", &format!("{m}/health")]);
    assert!(
        head.starts_with("HTTP/1.1 200") && head.to_ascii_lowercase().contains("content-length: 3")
    );
    drop(fleet);
}

#[test]
fn metrics_port_alone_starts_the_listener() {
    let d = Dir::new("metrics-only");
    let mp = free_port();
    d.write(
        "ship-manifest.toml",
        &format!("[mothership]\nmetrics_port = {mp}\n[[fleet.w]]\nname = \"w\"\ncommand = \"sleep\"\nargs = [\"100\"]\n"),
    );
    let fleet = Fleet::start(&d, &[]);
    let url = format!("http://127.0.0.1:{mp}/metrics");
    assert!(
        wait_for(secs(10), || curl(&[&url])
            .contains("mothership_ship_status{ship=\"w\",group=\"w\"} 1")),
        "{}",
        fleet.stderr()
    );
}

#[test]
fn per_client_rate_limit_answers_429_with_headers_and_uses_the_proxy_protocol_address() {
    let (_d, _fleet, h, pp) =
        fleet_with("ratelimit", "[mothership.rate_limiting]\nper_ip_rpm = 3.0");
    let url = format!("http://127.0.0.1:{h}/r");
    for i in 0..3 {
        let r = curl(&["-i", &url]);
        assert!(r.starts_with("HTTP/1.1 200"), "request {i}: {r}");
    }
    let r = curl(&["-i", &url]);
    let head = head_of(&r);
    assert!(head.starts_with("http/1.1 429"), "{r}");
    // 3 per minute: one more every 20 s, the whole budget back within 60 s.
    assert!(head.contains("\r\nretry-after: 20\r\n"), "{head}");
    assert!(head.contains("\r\nratelimit-limit: 3\r\n"), "{head}");
    assert!(head.contains("\r\nratelimit-remaining: 0\r\n"), "{head}");
    assert!(head.contains("\r\nratelimit-reset: "), "{head}");
    assert!(head.contains("\r\nratelimit-policy: 3;w=60\r\n"), "{head}");
    // Clients behind a PROXY-protocol front are told apart by the address it carries.
    let via = |src: &str| {
        raw(
            pp,
            format!("PROXY TCP4 {src} 127.0.0.1 5000 80\r\nGET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    };
    for _ in 0..3 {
        assert!(via("198.51.100.7").starts_with("HTTP/1.1 200"));
    }
    assert!(via("198.51.100.7").starts_with("HTTP/1.1 429"));
    assert!(via("198.51.100.8").starts_with("HTTP/1.1 200"));
}

#[test]
fn global_rate_limit_applies_to_every_client() {
    let mp = free_port();
    let extra =
        format!("[mothership]\nmetrics_port = {mp}\n[mothership.rate_limiting]\nglobal_rps = 0.5");
    let (_d, _fleet, h, pp) = fleet_with("global-rl", &extra);
    // A bucket of one request, refilled every 2 s: of two requests in a row, one passes.
    let first = curl(&["-i", &format!("http://127.0.0.1:{h}/g")]);
    let second = raw(
        pp,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 5000 80\r\nGET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let codes = [&first[..12], &second[..12]];
    assert!(codes.contains(&"HTTP/1.1 429"), "{codes:?}");
    assert!(
        second
            .to_ascii_lowercase()
            .contains("ratelimit-policy: 1;w=2")
            || first
                .to_ascii_lowercase()
                .contains("ratelimit-policy: 1;w=2")
    );
    let text = curl(&[&format!("http://127.0.0.1:{mp}/metrics")]);
    assert!(metric(&text, "mothership_rate_limited_total{scope=\"global\"}").unwrap() >= 1.0);
}

fn preflight(h: u16, path: &str, origin: &str, headers: &str) -> String {
    curl(&[
        "-i",
        "-X",
        "OPTIONS",
        "-H",
        &format!("Origin: {origin}"),
        "-H",
        "Access-Control-Request-Method: PUT",
        "-H",
        &format!("Access-Control-Request-Headers: {headers}"),
        &format!("http://127.0.0.1:{h}{path}"),
    ])
}

fn preflights_seen(h: u16) -> u32 {
    curl(&[&format!("http://127.0.0.1:{h}/__preflights")])
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cors_preflights_are_cached_by_key_with_ttl_and_eviction() {
    let mp = free_port();
    let extra = format!(
        "[mothership]\nmetrics_port = {mp}\ncors_cache = {{ enabled = true, default_ttl = \"1h\", max_entries = 2 }}"
    );
    let (_d, _fleet, h, _) = fleet_with("cors", &extra);
    let first = preflight(
        h,
        "/api/login",
        "https://a.example",
        "X-Token, Content-Type",
    );
    assert!(first.starts_with("HTTP/1.1 204"), "{first}");
    // Same key, header list spelled differently: answered from the cache.
    let again = preflight(h, "/api/login", "https://a.example", "content-type,x-token");
    assert!(again.starts_with("HTTP/1.1 204"), "{again}");
    let head = head_of(&again);
    assert!(
        head.contains("access-control-allow-origin: https://a.example\r\n"),
        "{head}"
    );
    assert!(
        head.contains("x-preflight-count: 1\r\n"),
        "replayed: {head}"
    );
    assert!(head.contains("\r\nage: "), "{head}");
    assert_eq!(preflights_seen(h), 1);
    // Another origin, path or method is another key.
    preflight(h, "/api/login", "https://b.example", "content-type,x-token");
    assert_eq!(preflights_seen(h), 2);
    // max_entries = 2: a third key evicts the least recently used (b, since a was just
    // used again).
    preflight(h, "/api/login", "https://a.example", "content-type,x-token");
    preflight(h, "/api/other", "https://a.example", "");
    assert_eq!(preflights_seen(h), 3);
    preflight(h, "/api/login", "https://a.example", "content-type,x-token");
    assert_eq!(preflights_seen(h), 3, "a stayed");
    preflight(h, "/api/login", "https://b.example", "content-type,x-token");
    assert_eq!(preflights_seen(h), 4, "b was evicted");
    // Max-Age gives the TTL.
    preflight(h, "/ttl?max_age=1", "https://a.example", "");
    preflight(h, "/ttl?max_age=1", "https://a.example", "");
    assert_eq!(preflights_seen(h), 5);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    preflight(h, "/ttl?max_age=1", "https://a.example", "");
    assert_eq!(preflights_seen(h), 6, "expired after 1 s");
    // Refusals are not cached; OPTIONS without the preflight headers is not either.
    for _ in 0..2 {
        assert!(preflight(h, "/deny?deny=1", "https://a.example", "").starts_with("HTTP/1.1 403"));
    }
    assert_eq!(preflights_seen(h), 8);
    let text = curl(&[&format!("http://127.0.0.1:{mp}/metrics")]);
    assert_eq!(
        metric(&text, "mothership_cors_cache_hits_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "mothership_cors_cache_misses_total"),
        Some(8.0)
    );
}

#[test]
fn cors_cache_can_be_turned_off() {
    let (_d, _fleet, h, _) = fleet_with("cors-off", "[mothership]\ncors_cache = false");
    for _ in 0..3 {
        preflight(h, "/x", "https://a.example", "");
    }
    assert_eq!(preflights_seen(h), 3);
}
