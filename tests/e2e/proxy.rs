//! The HTTP edge with real clients (curl, raw sockets) and real backends (the Python echo
//! backend in tests/e2e/echo_backend.py, started by mothership as ships).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::cli::secs;
use crate::support::*;

pub(crate) const BACKEND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/echo_backend.py");

struct Edge {
    _dir: Dir,
    fleet: Fleet,
    http: u16,
    admin: u16,
    pp: u16,
    sock: String,
}

fn edge() -> Edge {
    let d = Dir::new("edge");
    let (http, admin, a, b, pp) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let sock = d.join("edge.sock").display().to_string();
    let usock = d.join("upstream.sock").display().to_string();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.bind]
http = "127.0.0.1:{http}"
admin = "127.0.0.1:{admin}"
sock = "unix://{sock}"
pp = {{ addr = "127.0.0.1:{pp}", proxy_protocol = true }}
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = [{{ bind = "http", pattern = "^/echo", strip_prefix = "/echo" }}, "sock:/.*", "admin:^/admin", "pp:/.*"]
[[fleet.web]]
name = "robots"
command = "python3"
args = ["{BACKEND}", "{b}", "robots"]
bind = "127.0.0.1:{b}"
routes = [{{ bind = "http", pattern = "/", ua_filter = "llm" }}]
[[fleet.web]]
name = "unixy"
command = "python3"
args = ["{BACKEND}", "unix:{usock}", "unixy"]
bind = "unix://{usock}"
routes = ["http:^/unixy"]
[[fleet.web]]
name = "asleep"
command = "sleep"
args = ["1000"]
bind = "127.0.0.1:1"
critical = false
routes = ["http:^/asleep"]
"#
        ),
    );
    let fleet = Fleet::start(&d, &[]);
    let ok = wait_for(secs(15), || {
        let e = fleet.stderr();
        e.contains("echo: up") && e.contains("robots: up") && e.contains("unixy: up")
    });
    assert!(ok, "{}", fleet.stderr());
    Edge {
        _dir: d,
        fleet,
        http,
        admin,
        pp,
        sock,
    }
}

pub(crate) fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sends raw bytes and reads until the peer closes (or 5 s pass).
pub(crate) fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn json_field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("\"{key}\": ");
    let start = body.find(&k)? + k.len();
    let rest = &body[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.find('"').map(|end| &quoted[..end]);
    }
    let end = rest.find([',', '\n']).unwrap_or(rest.len());
    Some(rest[..end].trim())
}

#[test]
fn routing_by_bind_path_strip_prefix_and_user_agent() {
    let e = edge();
    let h = e.http;
    let j = curl(&[&format!("http://127.0.0.1:{h}/echo/hello?x=1")]);
    assert_eq!(json_field(&j, "name"), Some("echo"), "{j}");
    assert_eq!(json_field(&j, "path"), Some("/hello?x=1"), "{j}");
    let j = curl(&[
        "-A",
        "Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)",
        &format!("http://127.0.0.1:{h}/anything"),
    ]);
    assert_eq!(json_field(&j, "name"), Some("robots"), "{j}");
    assert_eq!(
        json_field(&j, "path"),
        Some("/anything"),
        "no strip_prefix on this route: {j}"
    );
    let code =
        |url: String, ua: &str| curl(&["-o", "/dev/null", "-w", "%{http_code}", "-A", ua, &url]);
    assert_eq!(
        code(
            format!("http://127.0.0.1:{h}/anything"),
            "Mozilla/5.0 Firefox/133.0"
        ),
        "404"
    );
    assert_eq!(
        code(format!("http://127.0.0.1:{}/admin/x", e.admin), "curl"),
        "200"
    );
    assert_eq!(
        code(format!("http://127.0.0.1:{}/echo/x", e.admin), "curl"),
        "404",
        "routes belong to their bind"
    );
    assert_eq!(
        code(format!("http://127.0.0.1:{h}/asleep"), "curl"),
        "503",
        "a ship that is not up answers 503"
    );
    let j = curl(&[&format!("http://127.0.0.1:{h}/unixy/p")]);
    assert_eq!(
        json_field(&j, "name"),
        Some("unixy"),
        "Unix-socket backend: {j}"
    );
    let j = curl(&["--unix-socket", &e.sock, "http://x/via-unix"]);
    assert_eq!(
        json_field(&j, "name"),
        Some("echo"),
        "Unix-socket bind: {j}"
    );
    assert_eq!(json_field(&j, "path"), Some("/via-unix"), "{j}");
}

#[test]
fn forwarded_headers_and_hop_by_hop() {
    let e = edge();
    let url = format!("http://127.0.0.1:{}/echo/h", e.http);
    let j = curl(&[
        "-H",
        "X-Real-IP: 6.6.6.6",
        "-H",
        "X-Forwarded-For: 10.0.0.1",
        "-H",
        "Connection: keep-alive, X-Secret",
        "-H",
        "X-Secret: s",
        "-H",
        "Keep-Alive: 5",
        &url,
    ]);
    assert_eq!(json_field(&j, "x-real-ip"), Some("127.0.0.1"), "{j}");
    assert_eq!(
        json_field(&j, "x-forwarded-for"),
        Some("10.0.0.1, 127.0.0.1"),
        "{j}"
    );
    assert_eq!(json_field(&j, "x-forwarded-proto"), Some("http"), "{j}");
    assert_eq!(
        json_field(&j, "x-forwarded-host"),
        Some(&*format!("127.0.0.1:{}", e.http)),
        "{j}"
    );
    assert_eq!(
        json_field(&j, "host"),
        Some(&*format!("127.0.0.1:{}", e.http)),
        "Host is kept: {j}"
    );
    assert!(
        !j.contains("x-secret") && !j.contains("keep-alive\": \"5"),
        "hop-by-hop headers leaked: {j}"
    );
    let head = curl(&["-D", "-", "-o", "/dev/null", &url]);
    assert!(
        !head.to_ascii_lowercase().contains("x-hop"),
        "a header named in the backend's Connection reached the client: {head}"
    );
}

#[test]
fn keep_alive_on_both_sides() {
    let e = edge();
    let url = format!("http://127.0.0.1:{}/echo/k", e.http);
    // One curl, five requests: one client connection, and the proxy reuses one upstream
    // connection for all of them.
    let out = Command::new("curl")
        .args(["-sv", &url, &url, &url, &url, &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("Connected to").count(), 1, "{err}");
    let body = String::from_utf8_lossy(&out.stdout);
    let conns: Vec<&str> = body.lines().filter(|l| l.contains("\"conn\"")).collect();
    assert_eq!(conns.len(), 5, "{body}");
    assert!(
        conns.windows(2).all(|w| w[0] == w[1]),
        "upstream connection not reused: {conns:?}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let e = edge();
    let mut req = Vec::new();
    for i in 0..5 {
        req.extend_from_slice(format!("GET /echo/p{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    req.extend_from_slice(b"GET /echo/last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let out = raw(e.http, &req);
    let paths: Vec<&str> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"path\": \""))
        .collect();
    assert_eq!(
        paths,
        ["/p0\",", "/p1\",", "/p2\",", "/p3\",", "/p4\",", "/last\","],
        "{out}"
    );
    assert!(out.contains("connection: close"), "{out}");
}

#[test]
fn large_bodies_stream_both_ways_with_checksums() {
    let e = edge();
    let d = Dir::new("bodies");
    let data: Vec<u8> = (0..(100u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let file = d.join("up.bin");
    std::fs::write(&file, &data).unwrap();
    let sha = |b: &[u8]| {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = out;
        out.stdin.take().unwrap().write_all(b).unwrap();
        let o = out.wait_with_output().unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let want = sha(&data);
    let url = format!("http://127.0.0.1:{}/echo/upload", e.http);
    let upload = format!("@{}", file.display());
    // chunked upload
    let j = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &upload,
        &url,
    ]);
    assert_eq!(json_field(&j, "body_bytes"), Some("104857600"), "{j}");
    assert_eq!(json_field(&j, "body_sha256"), Some(want.as_str()), "{j}");
    // Content-Length upload
    let j = curl(&["--data-binary", &upload, &url]);
    assert_eq!(json_field(&j, "body_sha256"), Some(want.as_str()), "{j}");
    // chunked and sized downloads
    for path in ["chunked", "big"] {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "60",
                &format!("http://127.0.0.1:{}/echo/{path}?bytes=104857600", e.http),
            ])
            .output()
            .unwrap();
        assert_eq!(out.stdout.len(), 100 << 20, "{path}");
        let mut expect = Vec::with_capacity(100 << 20);
        while expect.len() < 100 << 20 {
            expect.extend(0..=255u8);
        }
        assert!(out.stdout == expect, "{path}: body differs");
    }
}

#[test]
fn strictness_rules_answer_400_and_close() {
    let e = edge();
    for (name, req, status) in [
        ("CL and TE", "POST /echo/s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("differing CL", "POST /echo/s HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
        ("TE not chunked", "POST /echo/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        ("bad chunk size", "POST /echo/s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
        ("obs-fold", "GET /echo/s HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400),
        ("space before colon", "GET /echo/s HTTP/1.1\r\nHost: a\r\nX : a\r\n\r\n", 400),
        ("control character", "GET /echo/s HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n", 400),
        ("no Host", "GET /echo/s HTTP/1.1\r\n\r\n", 400),
        ("bare LF", "GET /echo/s HTTP/1.1\nHost: a\n\n", 400),
    ] {
        let out = raw(e.http, req.as_bytes());
        assert!(out.starts_with(&format!("HTTP/1.1 {status} ")), "{name}: {out:?}");
        assert!(out.contains("connection: close"), "{name}: {out:?}");
    }
    let huge = format!(
        "GET /echo/s HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(raw(e.http, huge.as_bytes()).starts_with("HTTP/1.1 431 "));
}

#[test]
fn websocket_upgrade_becomes_a_tunnel() {
    let e = edge();
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /echo/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for msg in [
        &b"first frame bytes"[..],
        &[0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0][..],
        &vec![7u8; 200_000],
    ] {
        s.write_all(msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert!(back == msg, "tunnel altered {} bytes", msg.len());
    }
}

#[test]
fn backend_killed_mid_response_closes_the_client_instead_of_hanging() {
    let e = edge();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &format!("http://127.0.0.1:{}/echo/die?bytes=100000", e.http),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(18),
        "curl must see a truncated body (exit 18), got {:?}: {text}",
        out.status.code()
    );
    assert!(text.starts_with("200 100000"), "{text}");
    // The ship is restarted and the edge keeps serving.
    let url = format!("http://127.0.0.1:{}/echo/again", e.http);
    assert!(
        wait_for(secs(10), || json_field(&curl(&[&url]), "name")
            == Some("echo")),
        "{}",
        e.fleet.stderr()
    );
}

#[test]
fn proxy_protocol_v1_and_v2_set_the_client_address() {
    let e = edge();
    let v1 = raw(e.pp, b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\nGET /v1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(json_field(&v1, "x-real-ip"), Some("203.0.113.7"), "{v1}");
    assert_eq!(
        json_field(&v1, "x-forwarded-for"),
        Some("203.0.113.7"),
        "{v1}"
    );
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    src[15] = 9;
    v2.extend_from_slice(&src);
    v2.extend_from_slice(&[0u8; 15]);
    v2.push(1);
    v2.extend_from_slice(&5555u16.to_be_bytes());
    v2.extend_from_slice(&443u16.to_be_bytes());
    v2.extend_from_slice(b"GET /v2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let out = raw(e.pp, &v2);
    assert_eq!(json_field(&out, "x-real-ip"), Some("2001:db8::9"), "{out}");
    // Without a header the socket's own address is used.
    let plain = raw(
        e.pp,
        b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        json_field(&plain, "x-real-ip"),
        Some("127.0.0.1"),
        "{plain}"
    );
    // A PROXY header on a bind without proxy_protocol is not trusted: it is a bad request.
    let spoof = raw(
        e.http,
        b"PROXY TCP4 6.6.6.6 127.0.0.1 1 2\r\nGET /echo/x HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    assert!(spoof.starts_with("HTTP/1.1 400 "), "{spoof}");
}

/// A fleet with small limits and short timeouts.
fn strict_edge() -> (Dir, Fleet, u16) {
    strict_edge_with(
        r#"header_timeout = "700ms", keepalive_timeout = "1s", response_timeout = "700ms", max_body_size = "1KiB", max_connections = 4"#,
    )
}

/// A fleet whose edge has these `[mothership.http]` settings.
fn strict_edge_with(http_settings: &str) -> (Dir, Fleet, u16) {
    let d = Dir::new("strict-edge");
    let (http, a) = (free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership]
bind = {{ http = "127.0.0.1:{http}" }}
http = {{ {http_settings} }}
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = ["http:/"]
"#
        ),
    );
    let f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || f.stderr().contains("echo: up")),
        "{}",
        f.stderr()
    );
    (d, f, http)
}

#[test]
fn timeouts_answer_408_and_504_and_close_idle_connections() {
    let (_d, f, http) = strict_edge();
    // Slowloris: a head that never ends gets 408 once header_timeout has passed.
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = std::time::Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(200));
        let _ = s.write_all(b"X-Slow: 1\r\n");
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out:?}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // A backend that does not answer in time: 504.
    let out = raw(http, b"GET /sleep?s=3 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 504 "), "{out:?}");
    // An idle keep-alive connection is closed after keepalive_timeout.
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let t0 = std::time::Instant::now();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let waited = t0.elapsed();
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200 "));
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );
    drop(f);
}

#[test]
fn body_limit_answers_413() {
    let (_d, _f, http) = strict_edge();
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n".to_vec();
    req.extend(vec![b'x'; 2000]);
    assert!(raw(http, &req).starts_with("HTTP/1.1 413 "));
    let mut req = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"200\r\n");
        req.extend(vec![b'y'; 512]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert!(raw(http, &req).starts_with("HTTP/1.1 413 "));
    // A client still uploading when the 413 is sent sees the 413, not a reset.
    let big = vec![b'q'; 4 << 20];
    let d = Dir::new("big-upload");
    std::fs::write(d.join("big"), &big).unwrap();
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", d.join("big").display()),
        &format!("http://127.0.0.1:{http}/"),
    ]);
    assert_eq!(code, "413");
    // At the limit it goes through.
    let mut req =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n".to_vec();
    req.extend(vec![b'z'; 1024]);
    let out = raw(http, &req);
    assert_eq!(json_field(&out, "body_bytes"), Some("1024"), "{out}");
}

#[test]
fn connection_limit_pauses_accepting() {
    // Connections that send nothing are held for header_timeout: long enough here.
    let (_d, _f, http) = strict_edge_with(r#"header_timeout = "30s", max_connections = 4"#);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", http)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(("127.0.0.1", http)).unwrap(); // sits in the backlog
    extra
        .set_read_timeout(Some(Duration::from_millis(600)))
        .unwrap();
    extra
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        extra.read(&mut buf).is_err(),
        "a fifth connection was served past max_connections"
    );
    drop(held);
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = Vec::new();
    let _ = extra.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 "),
        "not served after the others closed"
    );
}

#[test]
fn a_connection_that_never_sends_a_byte_is_closed_at_header_timeout() {
    // Issue 12: it was held for keepalive_timeout (60 s by default).
    let (_d, _f, http) = strict_edge_with(r#"header_timeout = "500ms", keepalive_timeout = "60s""#);
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("still open after 20 s (header_timeout is 500 ms): {e}"),
    }
    // A connection that was served waits for keepalive_timeout instead.
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    s.set_nonblocking(true).unwrap();
    let still_open = matches!(s.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        still_open,
        "a served keep-alive connection was closed at header_timeout"
    );
}

#[test]
fn expect_100_continue_goes_through() {
    let e = edge();
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /echo/e HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n").unwrap();
    let mut first = [0u8; 25];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(json_field(&out, "body_bytes"), Some("5"), "{out}");
}

#[test]
fn idempotent_request_is_retried_once_when_a_reused_connection_was_closed() {
    let e = edge();
    let url = format!("http://127.0.0.1:{}/echo/flaky", e.http);
    let first = curl(&[&url]);
    assert_eq!(json_field(&first, "name"), Some("echo"), "{first}");
    // The pooled connection is reused, the backend drops it without answering: the GET is
    // sent again on a fresh connection.
    let second = curl(&["-w", "%{http_code}", &url]);
    assert!(second.ends_with("200"), "{second}");
    assert_ne!(
        json_field(&second, "conn"),
        json_field(&first, "conn"),
        "{second}"
    );
    // A POST is not retried: the client gets 502.
    let _ = curl(&[&url]);
    let post = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--data",
        "x=1",
        &url,
    ]);
    assert_eq!(post, "502");
}

/// Raises this process's open-files limit (children, mothership among them, inherit it):
/// to 65536 when allowed (root may raise the hard limit), else to the hard limit.
fn raise_nofile() -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        let want = lim.rlim_max.max(65536);
        let big = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &big) != 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}

#[test]
fn ten_thousand_keep_alive_connections_are_held_and_each_answered() {
    const N: usize = 10_000;
    let limit = raise_nofile();
    assert!(
        limit >= N as u64 + 500,
        "the open-files hard limit ({limit}) is too low for this test"
    );
    let d = Dir::new("c10k");
    let (http, b) = (free_port(), free_port());
    d.write(
        "nginx.conf",
        &format!(
            "worker_processes 1; daemon off; pid {dir}/ng.pid; error_log {dir}/ng.err warn;\nevents {{ worker_connections 4096; }}\nhttp {{ access_log off; keepalive_requests 1000000; server {{ listen 127.0.0.1:{b} backlog=4096; location / {{ return 200 \"ok $request_uri\\n\"; }} }} }}\n",
            dir = d.path.display()
        ),
    );
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ header_timeout = \"300s\" }}\n[[fleet.web]]\nname = \"nginx\"\ncommand = \"nginx\"\nargs = [\"-c\", \"{}/nginx.conf\"]\nbind = \"127.0.0.1:{b}\"\nroutes = [\"http:/\"]\n",
            d.path.display()
        ),
    );
    let f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || f.stderr().contains("nginx: up")),
        "{}",
        f.stderr()
    );
    let mut conns: Vec<TcpStream> = Vec::with_capacity(N);
    for _ in 0..N {
        let s = TcpStream::connect(("127.0.0.1", http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        conns.push(s);
    }
    // Every connection is held open the whole time; each one gets a request and its answer
    // (one at a time, so the backend sees one upstream connection, not ten thousand).
    for round in 0..2 {
        for (i, s) in conns.iter_mut().enumerate() {
            s.write_all(format!("GET /r{round}/c{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
                .unwrap();
            let want = format!("ok /r{round}/c{i}\n");
            let mut got = Vec::new();
            let mut b = [0u8; 512];
            while !got.ends_with(want.as_bytes()) {
                let n = s
                    .read(&mut b)
                    .unwrap_or_else(|e| panic!("connection {i}, round {round}: {e}"));
                assert!(n > 0, "connection {i} closed in round {round}");
                got.extend_from_slice(&b[..n]);
            }
            assert!(
                got.starts_with(b"HTTP/1.1 200 "),
                "connection {i}: {}",
                String::from_utf8_lossy(&got)
            );
        }
    }
    // All 10,000 are still open and idle: the supervisor's memory stays small.
    let rss = proc_status_kib(f.pid(), "VmRSS:").unwrap();
    assert!(
        rss < 64 * 1024,
        "RSS {rss} KiB with {N} idle keep-alive connections"
    );
    eprintln!("RSS with {N} idle keep-alive connections: {rss} KiB");
}

#[test]
fn access_log_and_debug_request_log_with_ja4h() {
    let d = Dir::new("accesslog");
    let (http, a) = (free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ access_log = true }}\n[[fleet.web]]\nname = \"echo\"\ncommand = \"python3\"\nargs = [\"{BACKEND}\", \"{a}\", \"echo\"]\nbind = \"127.0.0.1:{a}\"\nroutes = [\"http:^/e\"]\n"
        ),
    );
    let f = Fleet::start_with(&d, &[], |c| {
        c.env("RUST_LOG", "info,request=debug");
    });
    assert!(
        wait_for(secs(15), || f.stderr().contains("echo: up")),
        "{}",
        f.stderr()
    );
    let _ = curl(&[
        "-A",
        "curl/8.0",
        "-H",
        "Accept-Language: de-DE",
        &format!("http://127.0.0.1:{http}/e/x?q=1"),
    ]);
    let _ = curl(&[&format!("http://127.0.0.1:{http}/missing")]);
    assert!(
        wait_for(secs(5), || f
            .stderr()
            .contains("\"GET /missing HTTP/1.1\" 404")),
        "{}",
        f.stderr()
    );
    let err = f.stderr();
    let line = err
        .lines()
        .find(|l| l.contains("\"GET /e/x?q=1 HTTP/1.1\" 200") && !l.contains("ja4h"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("127.0.0.1:") && line.contains(" echo ua=bot"),
        "{line}"
    );
    let dbg = err
        .lines()
        .find(|l| l.contains("\"GET /e/x?q=1 HTTP/1.1\" 200") && l.contains("ja4h="))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(dbg.contains("ja4h=ge11nn04dede_"), "{dbg}");
    assert!(
        err.contains("\"GET /missing HTTP/1.1\" 404 9") && err.contains(" - ua="),
        "{err}"
    );
}

#[test]
fn a_slow_client_does_not_make_the_proxy_buffer_the_response() {
    let e = edge();
    let total: usize = 200 << 20;
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).unwrap();
    s.write_all(
        format!("GET /echo/big?bytes={total} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    // Read nothing for a while: the backend, not mothership, has to wait.
    std::thread::sleep(Duration::from_millis(1500));
    let rss = proc_status_kib(e.fleet.pid(), "VmRSS:").unwrap();
    assert!(
        rss < 32 * 1024,
        "mothership RSS {rss} KiB while a client does not read a 200 MiB response"
    );
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(err) => panic!("after {got} bytes: {err}"),
        }
    }
    assert!(
        got > total && got < total + 1024,
        "received {got} bytes for a {total}-byte body"
    );
}

#[test]
fn connection_header_cannot_strip_framing() {
    let e = edge();
    let smuggled = "GET /admin HTTP/1.1\r\nHost: a\r\nX-Smuggled: 1\r\n\r\n";
    let req = format!(
        "POST /echo/x HTTP/1.1\r\nHost: a\r\nConnection: close, content-length\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let out = raw(e.http, req.as_bytes());
    assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
    assert_eq!(
        json_field(&out, "body_bytes"),
        Some(&*smuggled.len().to_string()),
        "{out}"
    );
    assert!(!out.contains("/admin\""), "{out}");
}

#[test]
fn head_errors_have_no_body_and_keep_the_connection_in_step() {
    let e = edge();
    let out = raw(e.http, b"HEAD /nothing HTTP/1.1\r\nHost: a\r\n\r\nGET /echo/after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
    let second = out.find("HTTP/1.1 200 ").unwrap_or_else(|| panic!("{out}"));
    assert!(
        out[..second].ends_with("\r\n\r\n"),
        "a body followed the HEAD answer: {out:?}"
    );
    assert_eq!(json_field(&out[second..], "path"), Some("/after"), "{out}");
}

#[test]
fn a_client_that_pipelines_without_reading_is_pushed_back() {
    let e = edge();
    let mut s = TcpStream::connect(("127.0.0.1", e.http)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let req = b"GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n".repeat(1000);
    let mut sent = 0usize;
    // Write until the proxy stops taking requests (the socket buffers fill up).
    while sent < 200 << 20 {
        match s.write(&req) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 200 << 20,
        "the proxy kept accepting pipelined requests nobody read the answers to"
    );
    let rss = proc_status_kib(e.fleet.pid(), "VmRSS:").unwrap();
    assert!(rss < 32 * 1024, "mothership RSS {rss} KiB");
}

#[test]
fn http_1_0_without_host_reaches_the_backend_with_one() {
    let e = edge();
    let out = raw(e.http, b"GET /echo/old HTTP/1.0\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    let host = json_field(&out, "host").unwrap_or_else(|| panic!("{out}"));
    assert!(host.starts_with("127.0.0.1:"), "{out}");
    assert!(
        out.contains("connection: close"),
        "an HTTP/1.0 client without keep-alive is closed: {out}"
    );
}

#[test]
fn an_early_answer_from_the_backend_reaches_the_client() {
    let e = edge();
    let d = Dir::new("early");
    std::fs::write(d.join("big"), vec![b'u'; 8 << 20]).unwrap();
    let out = curl(&[
        "-w",
        "\n%{http_code}",
        "-H",
        "Expect:",
        "--data-binary",
        &format!("@{}", d.join("big").display()),
        &format!("http://127.0.0.1:{}/echo/reject", e.http),
    ]);
    assert!(out.ends_with("413"), "{out}");
    assert!(out.starts_with("too big"), "{out}");
}

/// Landing with a request in flight: the listeners close at once, the request is still
/// answered, and only then do the ships stop (the supervisor asks the edge to stop serving
/// and waits for it, through the loop's root).
#[test]
fn landing_drains_requests_in_flight_before_stopping_ships() {
    let d = Dir::new("drain");
    let (http, a) = (free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.bind]
http = "127.0.0.1:{http}"
[[fleet.web]]
name = "slow"
command = "python3"
args = ["{BACKEND}", "{a}", "slow"]
bind = "127.0.0.1:{a}"
routes = ["http:/.*"]
grace_period = "10s"
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || f.stderr().contains("slow: up")),
        "{}",
        f.stderr()
    );
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(secs(20))).unwrap();
    s.write_all(b"GET /sleep?s=1.5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    f.signal(libc::SIGTERM);
    assert!(
        wait_for(secs(5), || f
            .stderr()
            .contains("draining: listeners closed")),
        "{}",
        f.stderr()
    );
    // No new connections once draining.
    assert!(
        wait_for(secs(5), || TcpStream::connect(("127.0.0.1", http)).is_err()),
        "the listener is still open"
    );
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    let err = f.stderr();
    let drained = err.find("draining: listeners closed").unwrap();
    let stopping = err.find("slow: stopping").expect("the ship was stopped");
    assert!(drained < stopping, "ships stop after the drain: {err}");
    assert!(!err.contains("landing anyway"), "{err}");
}
