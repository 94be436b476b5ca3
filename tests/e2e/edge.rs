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

pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
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
    assert_eq!(metric(&text, "mothership_compression_encoders"), Some(0.0));
    assert!(metric(&text, "mothership_cors_cache_bytes").is_some());

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

/// A fleet with static mounts over `public/` (see the test for the layout) and the echo
/// backend behind everything else.
fn static_fleet(tag: &str) -> (Dir, Fleet, u16, u16) {
    static_fleet_with(tag, "")
}

/// [`static_fleet`] with more `[mothership]` keys.
fn static_fleet_with(tag: &str, mothership: &str) -> (Dir, Fleet, u16, u16) {
    let d = Dir::new(tag);
    let p = d.join("public");
    for sub in [
        "public/docs",
        "public/deep/inner",
        "public/.hidden",
        "other",
        "dots",
    ] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let js = "function hello() { return 42; }\n".repeat(1000);
    d.write("public/app.js", &js);
    d.write("public/docs/index.html", "<h1>docs</h1>\n");
    d.write("public/deep/inner/x.txt", "deep\n");
    d.write("public/.env", "SECRET=1\n");
    d.write("secret.txt", "top secret\n");
    d.write("other/x.txt", "from the longer prefix\n");
    d.write("dots/.well-known", "dotfile served\n");
    d.write("public/100.txt", &"0123456789".repeat(10));
    std::os::unix::fs::symlink("../secret.txt", p.join("out.txt")).unwrap();
    std::os::unix::fs::symlink("docs/index.html", p.join("in.html")).unwrap();
    let (http, admin, a) = (free_port(), free_port(), free_port());
    let root = d.join("").display().to_string();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership]
{mothership}
[mothership.bind]
http = "127.0.0.1:{http}"
admin = "127.0.0.1:{admin}"
[[mothership.static_dirs]]
path = "{root}public"
prefix = "/static"
[[mothership.static_dirs]]
path = "{root}other"
prefix = "/static/deep/"
[[mothership.static_dirs]]
path = "{root}dots"
prefix = "/dots"
dotfiles = true
[[mothership.static_dirs]]
path = "{root}other"
prefix = "/adminonly"
bind = "admin"
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = ["http:/.*", "admin:/.*"]
"#
        ),
    );
    let fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || fleet.stderr().contains("echo: up")),
        "{}",
        fleet.stderr()
    );
    (d, fleet, http, admin)
}

fn status_of(r: &str) -> &str {
    r.get(9..12).unwrap_or("")
}

#[test]
fn static_mounts_prefixes_fallthrough_and_binds() {
    let (d, _fleet, h, admin) = static_fleet("static-mounts");
    let u = format!("http://127.0.0.1:{h}");
    let r = curl(&["-i", &format!("{u}/static/app.js")]);
    assert_eq!(status_of(&r), "200", "{r}");
    assert!(head_of(&r).contains("content-type: text/javascript"), "{r}");
    assert_eq!(r.split("\r\n\r\n").nth(1).unwrap(), d.read("public/app.js"));
    // Misses, other segments and other methods go to the routes.
    for (path, method) in [
        ("/static/missing.js", "GET"),
        ("/staticfoo", "GET"),
        ("/static/app.js", "POST"),
    ] {
        let j = curl(&["-X", method, &format!("{u}{path}")]);
        assert_eq!(json_field(&j, "name"), Some("echo"), "{method} {path}: {j}");
    }
    // Longest prefix wins.
    assert_eq!(
        curl(&[&format!("{u}/static/deep/x.txt")]),
        "from the longer prefix\n"
    );
    // A mount restricted to one bind.
    assert_eq!(
        curl(&[&format!("http://127.0.0.1:{admin}/adminonly/x.txt")]),
        "from the longer prefix\n"
    );
    let j = curl(&[&format!("{u}/adminonly/x.txt")]);
    assert_eq!(json_field(&j, "name"), Some("echo"), "{j}");
    // Directory: index.html with a slash, a redirect keeping the mount prefix without.
    assert_eq!(curl(&[&format!("{u}/static/docs/")]), "<h1>docs</h1>\n");
    let r = curl(&["-i", &format!("{u}/static/docs?x=1")]);
    assert_eq!(status_of(&r), "301", "{r}");
    assert!(
        head_of(&r).contains("location: /static/docs/?x=1\r\n"),
        "{r}"
    );
    // HEAD: the headers of GET, no body.
    let r = curl(&["-I", &format!("{u}/static/app.js")]);
    assert!(head_of(&r).contains("content-length: 32000\r\n"), "{r}");
}

#[test]
fn static_paths_cannot_leave_the_folder() {
    let (_d, _fleet, h, _) = static_fleet("static-safe");
    let u = format!("http://127.0.0.1:{h}");
    // Dot-segments, encoded or not, are removed before anything else looks at the path
    // (issue 12): these are `/secret.txt`, outside the mount, so they go to the routes.
    for path in [
        "/static/../secret.txt",
        "/static/%2e%2e/secret.txt",
        "/static/docs/%2E%2E/%2e%2e/secret.txt",
    ] {
        let r = curl(&["-i", "--path-as-is", &format!("{u}{path}")]);
        assert!(!r.contains("top secret"), "{path}: {r}");
        assert!(
            r.contains("\"name\": \"echo\"") && r.contains("/secret.txt"),
            "{path}: {r}"
        );
    }
    let r = curl(&["-i", "--path-as-is", &format!("{u}/static/a%00b")]);
    assert_eq!(status_of(&r), "400", "{r}");
    // Double-encoded is a literal `%2e%2e` name: not found here, so the backend gets it.
    let r = curl(&["--path-as-is", &format!("{u}/static/%252e%252e/secret.txt")]);
    assert!(
        !r.contains("top secret") && r.contains("\"name\": \"echo\""),
        "{r}"
    );
    // A symlink out of the folder is refused; one inside is followed.
    let r = curl(&["-i", &format!("{u}/static/out.txt")]);
    assert_eq!(status_of(&r), "404", "{r}");
    assert!(!r.contains("top secret"));
    assert_eq!(curl(&[&format!("{u}/static/in.html")]), "<h1>docs</h1>\n");
    // Dotfiles are hidden (the request goes on to the routes) unless the mount allows them.
    let j = curl(&[&format!("{u}/static/.env")]);
    assert!(
        !j.contains("SECRET") && j.contains("\"name\": \"echo\""),
        "{j}"
    );
    assert_eq!(
        curl(&[&format!("{u}/dots/.well-known")]),
        "dotfile served\n"
    );
}

#[test]
fn static_conditional_requests_and_ranges() {
    let (_d, _fleet, h, _) = static_fleet("static-cond");
    let url = format!("http://127.0.0.1:{h}/static/100.txt");
    let r = curl(&["-i", &url]);
    let head = head_of(&r);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    let lm = r
        .lines()
        .find_map(|l| {
            l.strip_prefix("last-modified: ")
                .or_else(|| l.strip_prefix("Last-Modified: "))
        })
        .unwrap()
        .trim()
        .to_string();
    assert!(head.contains("accept-ranges: bytes\r\n"));
    let code = |args: &[&str]| -> String {
        let mut a = vec!["-o", "/dev/null", "-w", "%{http_code}"];
        a.extend_from_slice(args);
        a.push(&url);
        curl(&a)
    };
    assert_eq!(code(&["-H", &format!("If-None-Match: {etag}")]), "304");
    assert_eq!(code(&["-H", "If-None-Match: \"other\", *"]), "304");
    assert_eq!(code(&["-H", "If-None-Match: \"other\""]), "200");
    assert_eq!(code(&["-H", &format!("If-Modified-Since: {lm}")]), "304");
    assert_eq!(
        code(&["-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"]),
        "200"
    );
    // Ranges.
    let r = curl(&["-i", "-r", "10-19", &url]);
    assert_eq!(status_of(&r), "206", "{r}");
    assert!(
        head_of(&r).contains("content-range: bytes 10-19/100\r\n"),
        "{r}"
    );
    assert!(r.ends_with("\r\n\r\n0123456789"), "{r}");
    assert!(curl(&["-r", "-5", &url]).ends_with("56789"));
    let r = curl(&["-i", "-r", "100-", &url]);
    assert_eq!(status_of(&r), "416", "{r}");
    assert!(head_of(&r).contains("content-range: bytes */100\r\n"));
    // Several ranges: the whole file. If-Range naming another version: the whole file.
    assert_eq!(code(&["-r", "0-1,5-6"]), "200");
    assert_eq!(code(&["-r", "0-1", "-H", "If-Range: \"old\""]), "200");
    assert_eq!(
        code(&["-r", "0-1", "-H", &format!("If-Range: {etag}")]),
        "206"
    );
}

#[test]
fn precompressed_siblings_are_served_when_accepted() {
    let (d, _fleet, h, _) = static_fleet("static-pre");
    let js = d.read("public/app.js");
    let gz = Command::new("gzip")
        .args(["-9", "-k", "-f"])
        .arg(d.join("public/app.js"))
        .status()
        .unwrap();
    assert!(gz.success());
    // A stand-in "br" file: the edge serves siblings as they are, it does not check them.
    d.write("public/app.js.br", "pretend brotli");
    let url = format!("http://127.0.0.1:{h}/static/app.js");
    let r = curl(&["-i", "-H", "Accept-Encoding: br, gzip", &url]);
    let head = head_of(&r);
    assert!(
        head.contains("content-encoding: br\r\n") && head.contains("vary: accept-encoding\r\n"),
        "{r}"
    );
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(r.ends_with("pretend brotli"));
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl -s -H 'Accept-Encoding: gzip' {url} | gzip -dc"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), js);
    let r = curl(&["-i", &url]);
    assert!(!head_of(&r).contains("content-encoding"), "{r}");
    // Identity to a client that takes no coding: safe for any cache to reuse, no Vary.
    assert!(!head_of(&r).contains("vary:"), "{r}");
    assert!(r.ends_with(&js));
}

#[test]
fn a_1_gib_file_is_sent_while_other_requests_are_answered() {
    use std::io::{Read, Write};
    let (d, _fleet, h, _) = static_fleet("static-big");
    let f = std::fs::File::create(d.join("public/big.bin")).unwrap();
    f.set_len(1 << 30).unwrap(); // sparse: no disk used
    let mut s = std::net::TcpStream::connect(("127.0.0.1", h)).unwrap();
    s.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // The big answer waits on a client that does not read; others are served meanwhile.
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(
            curl(&[&format!("http://127.0.0.1:{h}/static/docs/")]),
            "<h1>docs</h1>\n"
        );
    }
    let mut total = 0u64;
    let mut head = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut body_started = false;
    while total < 1 << 30 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total} bytes");
        if body_started {
            assert!(buf[..n].iter().all(|&b| b == 0));
            total += n as u64;
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&head[..p]).to_ascii_lowercase();
                assert!(text.contains("content-length: 1073741824"), "{text}");
                total = (head.len() - p - 4) as u64;
                body_started = true;
            }
        }
    }
    assert_eq!(total, 1 << 30);
    // The connection is still usable.
    s.write_all(b"GET /static/100.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// The text the echo backend's `/text?bytes=n` sends.
fn backend_text(n: usize) -> Vec<u8> {
    let line = b"the quick brown fox jumps over the lazy dog 0123456789\n";
    line.iter().copied().cycle().take(n).collect()
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body).read_to_end(&mut out),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out),
        _ => {
            out.extend_from_slice(body);
            Ok(0)
        }
    }
    .unwrap_or_else(|e| panic!("{coding}: {e}"));
    out
}

/// One request with curl; returns the lowercased head and the raw (still encoded) body.
fn fetch(args: &[&str]) -> (String, Vec<u8>) {
    let d = std::env::temp_dir().join(format!("ms-fetch-{}-{}", std::process::id(), rand_id()));
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-D", "-", "-o"])
        .arg(&d)
        .args(args)
        .output()
        .unwrap();
    let body = std::fs::read(&d).unwrap_or_default();
    let _ = std::fs::remove_file(&d);
    (
        String::from_utf8_lossy(&out.stdout).to_ascii_lowercase(),
        body,
    )
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn encoding_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("content-encoding: "))
        .unwrap_or("identity")
        .trim()
        .to_string()
}

#[test]
fn proxied_responses_are_compressed_by_negotiation() {
    let (_d, _fleet, h, _) = fleet_with("compress", "[mothership]\ncompression = true");
    let u = format!("http://127.0.0.1:{h}");
    let text = backend_text(200_000);
    // Negotiation matrix: Accept-Encoding -> expected coding.
    for (accept, want) in [
        ("", "identity"),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("br", "br"),
        ("gzip, deflate, br", "br"),
        ("gzip;q=1, br;q=0.5", "gzip"),
        ("br;q=0, gzip;q=0.2", "gzip"),
        ("*", "br"),
        ("identity", "identity"),
        ("gzip;q=0", "identity"),
    ] {
        for chunked in ["0", "1"] {
            let mut args = vec!["-H".to_string(), format!("Accept-Encoding: {accept}")];
            if accept.is_empty() {
                args.clear();
            }
            args.push(format!("{u}/text?bytes=200000&chunked={chunked}"));
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let (head, body) = fetch(&a);
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert_eq!(
                encoding_of(&head),
                want,
                "{accept:?} chunked={chunked}: {head}"
            );
            assert_eq!(decode(want, &body), text, "{accept:?} chunked={chunked}");
            if want != "identity" {
                assert!(body.len() < text.len() / 10, "{want}: {}", body.len());
                assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
                assert!(!head.contains("content-length"), "{head}");
                assert!(head.contains("vary: origin, accept-encoding\r\n"), "{head}");
                assert!(head.contains("etag: w/\"t1\"\r\n"), "{head}");
            } else if chunked == "0" {
                assert!(head.contains("content-length: 200000\r\n"), "{head}");
                assert!(head.contains("etag: \"t1\"\r\n"), "{head}");
            }
        }
    }
    // Not compressed: small bodies, incompressible types, already encoded, no-transform,
    // HEAD, HTTP/1.0 clients.
    for (path, extra) in [
        ("/text?bytes=500", ""),
        ("/text?bytes=50000&ct=image/png", ""),
        ("/text?bytes=50000&ce=x-custom", ""),
        ("/text?bytes=50000&cc=no-transform", ""),
        ("/text?bytes=50000&ct=text/event-stream", ""),
        ("/text?bytes=50000", "-I"),
        ("/text?bytes=50000", "-0"),
    ] {
        let mut a = vec!["-H", "Accept-Encoding: gzip, br"];
        if !extra.is_empty() {
            a.push(extra);
        }
        let url = format!("{u}{path}");
        a.push(&url);
        let (head, _) = fetch(&a);
        let enc = encoding_of(&head);
        assert!(
            enc == "identity" || enc == "x-custom",
            "{path} {extra}: {head}"
        );
    }
    // Keep-alive goes on after a compressed response.
    let out = curl(&[
        "-H",
        "Accept-Encoding: gzip",
        "--compressed",
        "-w",
        "[%{num_connects}]",
        &format!("{u}/text?bytes=5000"),
        &format!("{u}/text?bytes=5000&chunked=1"),
    ]);
    let expected = String::from_utf8(backend_text(5000)).unwrap();
    assert_eq!(out, format!("{expected}[1]{expected}[0]"));
}

#[test]
fn static_files_are_compressed_unless_ranged_or_precompressed() {
    let (d, _fleet, h, _) = {
        let (d, f, h, a) = static_fleet_with("static-compress", "compression = true");
        (d, f, h, a)
    };
    let js = std::fs::read(d.join("public/app.js")).unwrap();
    let url = format!("http://127.0.0.1:{h}/static/app.js");
    for coding in ["gzip", "deflate", "br"] {
        let (head, body) = fetch(&["-H", &format!("Accept-Encoding: {coding}"), &url]);
        assert_eq!(encoding_of(&head), coding, "{head}");
        assert!(
            head.contains("vary: accept-encoding\r\n") && head.contains("etag: w/\""),
            "{head}"
        );
        assert_eq!(decode(coding, &body), js, "{coding}");
    }
    // A 304 carries the validators and Vary of the compressed 200 it stands for.
    let (head, _) = fetch(&["-H", "Accept-Encoding: gzip", &url]);
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .unwrap()
        .trim()
        .to_string();
    assert!(etag.starts_with("w/\""), "{head}");
    let (head304, _) = fetch(&[
        "-H",
        "Accept-Encoding: gzip",
        "-H",
        &format!("If-None-Match: W/{}", &etag[2..]),
        &url,
    ]);
    assert!(head304.starts_with("http/1.1 304"), "{head304}");
    assert!(head304.contains(&format!("etag: {etag}\r\n")), "{head304}");
    assert!(head304.contains("vary: accept-encoding\r\n"), "{head304}");
    let (head, body) = fetch(&["-H", "Accept-Encoding: gzip", "-r", "0-9", &url]);
    assert!(
        head.starts_with("http/1.1 206") && encoding_of(&head) == "identity",
        "{head}"
    );
    assert_eq!(body, &js[..10]);
    let (head, body) = fetch(&[&url]);
    assert_eq!(encoding_of(&head), "identity");
    assert_eq!(body, js);
    // Too small to be worth it.
    let (head, _) = fetch(&[
        "-H",
        "Accept-Encoding: gzip",
        &format!("http://127.0.0.1:{h}/static/100.txt"),
    ]);
    assert_eq!(encoding_of(&head), "identity", "{head}");
}

#[test]
fn a_ship_over_max_memory_is_restarted_gracefully() {
    let d = Dir::new("maxmem");
    let mp = free_port();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership]
metrics_port = {mp}
[[fleet.web]]
name = "hog"
command = "python3"
args = ["-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: (print('bye', flush=True), sys.exit(0))); x = b'x' * (80 << 20); print('hogging', flush=True); time.sleep(1000)"]
max_memory = "40MB"
[[fleet.web]]
name = "calm"
command = "sleep"
args = ["1000"]
max_memory = "40MB"
"#
        ),
    );
    let fleet = Fleet::start(&d, &[]);
    // Checked every 5 s: the hog is stopped with its stop signal, then started again.
    let ok = wait_for(secs(20), || {
        let e = fleet.stderr();
        e.contains("hog: resident memory") && e.contains("hog: starting again")
    });
    assert!(ok, "{}", fleet.stderr());
    let err = fleet.stderr();
    assert!(
        err.contains("is over max_memory (40 MiB); restarting it"),
        "{err}"
    );
    assert!(
        wait_for(secs(5), || fleet.stdout().contains("bye")),
        "graceful: SIGTERM first"
    );
    assert!(!err.contains("calm: resident memory"), "{err}");
    let text = curl(&[&format!("http://127.0.0.1:{mp}/metrics")]);
    let r = metric(
        &text,
        "mothership_ship_restarts_total{ship=\"hog\",group=\"web\"}",
    )
    .unwrap();
    assert!(r >= 1.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "mothership_ship_restarts_total{ship=\"calm\",group=\"web\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn a_manifest_with_only_static_files_serves_until_told_to_land() {
    let d = Dir::new("static-only");
    std::fs::create_dir_all(d.join("www")).unwrap();
    d.write("www/index.html", "hello\n");
    let h = free_port();
    d.write(
        "ship-manifest.toml",
        &format!("[mothership]\nbind = {{ http = \"127.0.0.1:{h}\" }}\n[[mothership.static_dirs]]\npath = \"www\"\nprefix = \"/\"\n"),
    );
    let mut fleet = Fleet::start(&d, &[]);
    let url = format!("http://127.0.0.1:{h}/");
    assert!(
        wait_for(secs(10), || curl(&[&url]) == "hello\n"),
        "{}",
        fleet.stderr()
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(curl(&[&url]), "hello\n", "still serving");
    // An unknown path has no route: 404.
    assert!(curl(&["-i", &format!("{url}nope")]).starts_with("HTTP/1.1 404"));
    fleet.signal(libc::SIGTERM);
    assert_eq!(fleet.wait(secs(10)), Some(0), "{}", fleet.stderr());
}

#[test]
fn rate_limit_under_concurrent_load_refuses_the_excess_with_headers() {
    let (_d, fleet, h, _) = fleet_with("rl-load", "[mothership.rate_limiting]\nglobal_rps = 10.0");
    // 100 requests at once from 20 threads: the bucket holds 10, so most are refused, each
    // refusal complete with its headers, and nothing else goes wrong.
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                (0..5)
                    .map(|_| {
                        raw(
                            h,
                            b"GET /load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<String> = handles
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    let limited: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 429"))
        .collect();
    assert_eq!(ok + limited.len(), 100, "{answers:?}\n{}", fleet.stderr());
    // At least the bucket, at most the bucket plus what refilled while the burst ran (10
    // per second, however long it took).
    let refilled = (started.elapsed().as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        ok >= 10 && ok <= 10 + refilled,
        "{ok} passed, {refilled} refilled"
    );
    for a in limited {
        let a = a.to_ascii_lowercase();
        assert!(a.contains("\r\nretry-after: 1\r\n"), "{a}");
        assert!(a.contains("\r\nratelimit-limit: 10\r\n"), "{a}");
        assert!(a.contains("\r\nratelimit-remaining: 0\r\n"), "{a}");
        assert!(a.contains("\r\nratelimit-policy: 10;w=1\r\n"), "{a}");
        assert!(a.ends_with("too many requests\n"), "{a}");
    }
}

/// `GET /status` (HTML, rendered by headless Chromium) and `/status.json` on the metrics
/// listener.
#[test]
fn the_status_page_shows_the_fleet_in_a_browser_and_as_json() {
    let mp = free_port();
    let (d, mut fleet, h, _) = fleet_with("status", &format!("[mothership]\nmetrics_port = {mp}"));
    assert_eq!(
        curl(&[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{h}/x")
        ]),
        "200"
    );
    let m = format!("http://127.0.0.1:{mp}");
    let j = curl(&[&format!("{m}/status.json")]);
    let v = mothership::proto::json::parse(j.as_bytes()).unwrap_or_else(|e| panic!("{e}: {j}"));
    use mothership::proto::json::Value;
    assert_eq!(
        v.get("state").and_then(Value::as_str),
        Some("running"),
        "{j}"
    );
    let Some(Value::Array(ps)) = v.get("programs") else {
        panic!("{j}")
    };
    let echo = ps
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("echo"))
        .unwrap_or_else(|| panic!("{j}"));
    assert_eq!(echo.get("state").and_then(Value::as_str), Some("running"));
    assert!(
        echo.get("pid")
            .and_then(Value::as_u64)
            .is_some_and(|p| p > 1),
        "{j}"
    );
    assert!(
        echo.get("rss_bytes")
            .and_then(Value::as_u64)
            .is_some_and(|b| b > 0),
        "{j}"
    );
    let head = curl(&["-sI", &format!("{m}/status")]).to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );

    // Chromium renders the page: its DOM holds the table with the fleet, and a
    // screenshot is taken.
    let chromium = |extra: &[&str]| {
        let out = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", d.join("chromium").display()))
            .args(extra)
            .arg(format!("{m}/status"))
            .output()
            .expect("chromium (make test installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = chromium(&["--dump-dom"]);
    assert!(dom.contains("<table id=\"programs\">"), "{dom}");
    let row = dom
        .split("<tr>")
        .find(|r| r.starts_with("<td>echo</td>"))
        .unwrap_or_else(|| panic!("{dom}"));
    assert!(
        row.contains("<td>web</td><td>ship</td><td class=\"running\">running</td>"),
        "{row}"
    );
    assert!(row.contains("http:/.*"), "{row}");
    assert!(dom.contains("<td>down</td>"), "{dom}");
    let png = d.join("status.png");
    chromium(&[
        &format!("--screenshot={}", png.display()),
        "--window-size=1000,500",
    ]);
    let shot = std::fs::read(&png).unwrap_or_default();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 2000,
        "{} bytes",
        shot.len()
    );
    assert_eq!(fleet.stop(secs(10)), Some(0));
}
