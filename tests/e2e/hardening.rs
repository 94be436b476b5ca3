//! Issue 12: a smuggling and strictness table of our own. Raw requests go through the real
//! binary to a backend that parses every byte it receives with h11 (a strict reference
//! parser, tests/e2e/strict_backend.py); raw responses come back from the same backend.
//! Each case either is refused by mothership itself or reaches the backend as what the
//! table says, and h11 never refuses what was forwarded.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::cli::secs;
use crate::proxy::raw;
use crate::support::*;

const STRICT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/strict_backend.py");

struct Strict {
    _dir: Dir,
    fleet: Fleet,
    http: u16,
    pp: u16,
}

fn strict() -> Strict {
    let d = Dir::new("strict");
    let (http, pp, a, b) = (free_port(), free_port(), free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.bind]
http = "127.0.0.1:{http}"
pp = {{ addr = "127.0.0.1:{pp}", proxy_protocol = "required", proxy_protocol_from = ["10.0.0.0/8"] }}
[[fleet.web]]
name = "admin"
command = "python3"
args = ["{STRICT}", "{a}", "admin"]
bind = "127.0.0.1:{a}"
routes = ["http:^/admin"]
[[fleet.web]]
name = "main"
command = "python3"
args = ["{STRICT}", "{b}", "main"]
bind = "127.0.0.1:{b}"
routes = ["http:^/", "pp:/"]
"#
        ),
    );
    let fleet = Fleet::start(&d, &[]);
    let ok = wait_for(secs(15), || {
        let e = fleet.stderr();
        e.contains("admin: up") && e.contains("main: up")
    });
    assert!(ok, "{}", fleet.stderr());
    Strict {
        _dir: d,
        fleet,
        http,
        pp,
    }
}

/// What a raw request must come to.
enum Want {
    /// Mothership answers it itself with this status, and closes.
    Refused(u16),
    /// It reaches this backend; the body of the backend's JSON must contain each string.
    Reaches(&'static str, &'static [&'static str]),
}

fn status_of(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn request_smuggling_and_strictness_table() {
    let s = strict();
    let long_line = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
    let cases: Vec<(&str, Vec<u8>, Want)> = vec![
        ("plain GET", b"GET /x?q=1 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Reaches("main", &[r#""target": "/x?q=1""#])),
        ("CL and TE", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), Want::Refused(400)),
        ("TE obfuscated", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n".to_vec(), Want::Refused(400)),
        ("TE with a space before the colon", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n".to_vec(), Want::Refused(400)),
        ("TE in a list after chunked", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n".to_vec(), Want::Refused(400)),
        ("two different CL", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(), Want::Refused(400)),
        ("bare LF", b"GET / HTTP/1.1\nHost: a\n\n".to_vec(), Want::Refused(400)),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n".to_vec(), Want::Refused(400)),
        ("chunk size with garbage", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2 x\r\nab\r\n0\r\n\r\n".to_vec(), Want::Refused(400)),
        ("chunk size overflow", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n100000000000000001\r\nab\r\n0\r\n\r\n".to_vec(), Want::Refused(400)),
        ("NUL in a trailer", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX: a\x00b\r\n\r\n".to_vec(), Want::Refused(400)),
        ("obs-fold in a trailer", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX: a\r\n b\r\n\r\n".to_vec(), Want::Refused(400)),
        ("forbidden trailers are dropped", b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nContent-Length: 99\r\nHost: evil\r\nTransfer-Encoding: chunked\r\nX-Sum: 7\r\n\r\n".to_vec(), Want::Reaches("main", &[r#""trailers": [["x-sum", "7"]]"#, r#""body": "ab""#])),
        ("percent-encoded route bypass", b"GET /%61dmin/x HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Reaches("admin", &[r#""target": "/admin/x""#])),
        ("dot-segment route bypass", b"GET /x/../admin/y HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Reaches("admin", &[r#""target": "/admin/y""#])),
        ("double-slash route bypass", b"GET //admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Reaches("admin", &[r#""target": "/admin""#])),
        ("absolute-form route bypass", b"GET http://example.test/admin/z HTTP/1.1\r\nHost: other.test\r\n\r\n".to_vec(), Want::Reaches("admin", &[r#""target": "/admin/z""#, r#"["host", "example.test"]"#, r#"["x-forwarded-host", "example.test"]"#])),
        ("underscore twins of identity headers", b"GET / HTTP/1.1\r\nHost: a\r\nX_Real_IP: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded_Proto: https\r\n\r\n".to_vec(), Want::Reaches("main", &[r#"["x-real-ip", "127.0.0.1"]"#])),
        ("Upgrade h2c is not tunnelled", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n".to_vec(), Want::Reaches("main", &[r#""target": "/""#])),
        ("CONNECT", b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n".to_vec(), Want::Refused(501)),
        ("asterisk on GET", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Refused(400)),
        ("authority-form on GET", b"GET example.test:80 HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Refused(400)),
        ("space in the target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Want::Refused(400)),
        ("HTTP/1.2 served as 1.1", b"GET /v HTTP/1.2\r\nHost: a\r\n\r\n".to_vec(), Want::Reaches("main", &[r#""target": "/v""#, r#""version": "1.1""#])),
        ("request line over 8 KiB", long_line.into_bytes(), Want::Refused(414)),
        ("Host with userinfo", b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n".to_vec(), Want::Refused(400)),
        ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n".to_vec(), Want::Refused(400)),
        ("Host with a bad port", b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n".to_vec(), Want::Refused(400)),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), Want::Refused(400)),
    ];
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let mut req = bytes.clone();
        // Close after the answer, so that `raw` returns once it is read.
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            req.splice(i + 2..i + 2, b"Connection: close\r\n".iter().copied());
        }
        let resp = raw(s.http, &req);
        assert!(
            !resp.contains("h11_error"),
            "{name}: the backend's strict parser refused what was forwarded: {resp}"
        );
        let got = status_of(&resp);
        match want {
            Want::Refused(code) => {
                if got != Some(*code) || resp.contains("\"name\"") {
                    failures.push(format!("{name}: want {code} from mothership, got {resp:?}"));
                }
            }
            Want::Reaches(backend, needles) => {
                let to = format!(r#""name": "{backend}""#);
                if got != Some(200)
                    || !resp.contains(&to)
                    || needles.iter().any(|n| !resp.contains(n))
                {
                    failures.push(format!(
                        "{name}: want it at {backend} with {needles:?}, got {resp:?}"
                    ));
                }
                if name.contains("underscore") && resp.contains("6.6.6.6")
                    || name.contains("h2c") && resp.to_ascii_lowercase().contains("\"upgrade\"")
                {
                    failures.push(format!("{name}: forwarded what it must drop: {resp:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(s.fleet);
}

/// Sends `first`, reads its answer, then sends a plain GET on the same client connection
/// and returns both answers.
fn then_plain(port: u16, first: &[u8]) -> (String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(first).unwrap();
    let a = read_answer(&mut c);
    let mut c2 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c2.write_all(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut b = Vec::new();
    let _ = c2.read_to_end(&mut b);
    (a, String::from_utf8_lossy(&b).into_owned())
}

/// Reads one answer: its head, then Content-Length bytes (or until the close).
fn read_answer(c: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let bodiless = text.starts_with("HTTP/1.1 204 ") || text.starts_with("HTTP/1.1 304 ");
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if bodiless || got.len() >= end + 4 + len {
                return text;
            }
        }
        match c.read(&mut b) {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&b[..n]),
        }
    }
}

#[test]
fn broken_responses_are_not_passed_on_and_their_connections_are_not_reused() {
    let s = strict();
    for (name, want_first) in [
        // A 101 nobody asked for: 502, and the connection (now in another protocol) is
        // closed rather than pooled.
        ("unasked101", "HTTP/1.1 502 "),
        // A 204 announcing a body: passed on without one, and never reused.
        ("204cl", "HTTP/1.1 204 "),
        ("clte", "HTTP/1.1 200 "),
        ("nul", "HTTP/1.1 502 "),
        ("obsfold", "HTTP/1.1 502 "),
        ("twocl", "HTTP/1.1 502 "),
    ] {
        let (first, next) = then_plain(
            s.http,
            format!("GET /raw/{name} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        );
        assert!(first.starts_with(want_first), "{name}: {first:?}");
        assert!(!first.contains("SMUGG"), "{name}: {first:?}");
        assert!(
            next.starts_with("HTTP/1.1 200 ") && next.contains(r#""target": "/next""#),
            "{name}: the next request got {next:?}"
        );
        // What the backend saw on that connection after its raw answer: nothing (it was
        // closed), never the next client's request.
        let ask = format!("GET /__after/{name} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let mut after = String::new();
        wait_for(secs(10), || {
            after = raw(s.http, ask.as_bytes());
            !after.contains(r#""bytes": null"#)
        });
        assert!(
            after.contains(r#""eof": true"#) && !after.contains("/next"),
            "{name}: after the raw answer the backend saw {after:?}"
        );
    }
    // Trailers from a backend are checked and filtered like the client's.
    let out = raw(
        s.http,
        b"GET /raw/baretrailer HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.contains("X-T: 1") && !out.contains("Set-Cookie"),
        "{out:?}"
    );
    drop(s.fleet);
}

#[test]
fn proxy_protocol_is_honoured_only_from_trusted_peers_and_can_be_required() {
    let s = strict();
    // The `pp` bind requires a header and trusts only 10.0.0.0/8: this test's peer
    // (127.0.0.1) is refused with and without one.
    let with = raw(
        s.pp,
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 80\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        with.starts_with("HTTP/1.1 400 ") && !with.contains("1.2.3.4"),
        "{with:?}"
    );
    let without = raw(
        s.pp,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        without.starts_with("HTTP/1.1 400 ") && !without.contains("\"name\""),
        "{without:?}"
    );
    drop(s.fleet);
}

#[test]
fn descriptors_left_open_by_the_parent_do_not_reach_the_children() {
    use std::os::fd::AsRawFd;
    let d = Dir::new("fds");
    let out = d.join("fds.txt");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.jobs]]\nname = \"fds\"\ncommand = \"sh\"\nargs = [\"-c\", \"ls /proc/self/fd > {}\"]\noneshot = true\n",
            out.display()
        ),
    );
    let leak = std::fs::File::open(d.join("ship-manifest.toml")).unwrap();
    let from = leak.as_raw_fd();
    // A number `ls` does not use for itself; dup2 leaves it without close-on-exec, as a
    // shell's `57<file` would.
    let fd = 57;
    let mut f = Fleet::start_with(&d, &[], |c| {
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 between fork and exec, on descriptors of this process.
        unsafe {
            c.pre_exec(move || {
                libc::dup2(from, fd);
                Ok(())
            });
        }
    });
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    let listed = std::fs::read_to_string(&out).unwrap();
    assert!(
        !listed.lines().any(|l| l.trim() == fd.to_string()),
        "fd {fd} reached the child: {listed}"
    );
}

#[test]
fn inherited_variables_that_are_not_utf8_are_kept() {
    use std::os::unix::ffi::OsStrExt;
    let d = Dir::new("env-bytes");
    let out = d.join("env.txt");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.jobs]]\nname = \"env\"\ncommand = \"sh\"\nargs = [\"-c\", \"printf %s \\\"$MS_TEST_BYTES\\\" | od -An -tx1 > {}\"]\noneshot = true\n",
            out.display()
        ),
    );
    let mut f = Fleet::start_with(&d, &[], |c| {
        c.env(
            std::ffi::OsStr::from_bytes(b"MS_TEST_BYTES"),
            std::ffi::OsStr::from_bytes(b"a\xff\xfez"),
        );
    });
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    let got = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        got.split_whitespace().collect::<Vec<_>>(),
        ["61", "ff", "fe", "7a"]
    );
}

#[test]
fn the_same_term_twice_within_microseconds_still_lands_gracefully() {
    let d = Dir::new("term-twice");
    let out = d.join("polite.out");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.web]]\nname = \"polite\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap 'sleep 1; echo graceful > {}; exit 0' TERM; while :; do sleep 0.05; done\"]\n",
            out.display()
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("polite: started")),
        "{}",
        f.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    f.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(5));
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    assert_eq!(
        std::fs::read_to_string(&out).unwrap_or_default(),
        "graceful\n",
        "{}",
        f.stderr()
    );
    // A second TERM later than that still kills at once.
    let mut f = Fleet::start(&d, &[]);
    std::fs::remove_file(&out).unwrap_or_default();
    assert!(
        wait_for(secs(10), || f.stderr().contains("polite: started")),
        "{}",
        f.stderr()
    );
    std::thread::sleep(Duration::from_millis(300));
    f.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(400));
    f.signal(libc::SIGTERM);
    f.wait(secs(20));
    assert!(f.logged("killing every process now"), "{}", f.stderr());
}

#[test]
fn the_next_start_stops_what_a_killed_instance_left() {
    let d = Dir::new("leftovers");
    let pids = d.join("left.pids");
    let sock = d.join("sock");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.web]]\nname = \"parent\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 1000 & echo $! >> {}; wait\"]\ngrace_period = \"2s\"\n",
            pids.display()
        ),
    );
    let with_dir = |c: &mut std::process::Command| {
        c.env("MS_SOCKET_DIR", &sock);
    };
    let mut first = Fleet::start_with(&d, &[], with_dir);
    assert!(
        wait_for(secs(10), || std::fs::read_to_string(&pids)
            .is_ok_and(|p| p.ends_with('\n'))),
        "{}",
        first.stderr()
    );
    let old: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The case to handle: the supervisor killed outright, its grandchild left running.
    first.signal(libc::SIGKILL);
    first.wait(secs(10));
    // Running, not a zombie waiting for whoever it was reparented to.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .is_some_and(|zombie| !zombie)
    };
    assert!(
        alive(old),
        "precondition: the grandchild {old} survived the SIGKILL"
    );
    let mut second = Fleet::start_with(&d, &[], with_dir);
    let stopped = wait_for(secs(10), || !alive(old));
    if !stopped {
        unsafe { libc::kill(old, libc::SIGKILL) };
    }
    assert!(
        stopped,
        "the grandchild {old} is still running: {}",
        second.stderr()
    );
    assert!(
        second.logged("a previous instance of this manifest was killed and left parent"),
        "{}",
        second.stderr()
    );
    assert!(
        wait_for(secs(10), || second.stderr().contains("parent: started")),
        "{}",
        second.stderr()
    );
    assert_eq!(second.stop(secs(10)), Some(0), "{}", second.stderr());
    // A clean exit leaves no record behind.
    let records: Vec<_> = std::fs::read_dir(&sock).unwrap().flatten().collect();
    assert!(records.is_empty(), "{records:?}");
}

#[test]
fn own_log_lines_are_bounded_when_stderr_is_stuck() {
    use std::os::unix::ffi::OsStrExt;
    let d = Dir::new("stuck-log");
    let http = free_port();
    std::fs::create_dir_all(d.join("pub")).unwrap();
    d.write("pub/a.txt", "hello\n");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ access_log = true }}\n[[mothership.static_dirs]]\npath = \"pub\"\nprefix = \"/\"\n"
        ),
    );
    // A FIFO held open here and never read: once its buffer is full, writes to it block.
    let fifo = d.join("stuck");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let stuck = held.try_clone().unwrap();
    let mut f = Fleet::start_with(&d, &[], |cmd| {
        cmd.stderr(stuck);
    });
    let url = format!("http://127.0.0.1:{http}/a.txt");
    assert!(
        wait_for(secs(10), || crate::proxy::curl(&["-s", &url]) == "hello\n"),
        "not serving"
    );
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c20", "-d5s", &url])
        .output()
        .expect("wrk (make test installs it)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let requests: u64 = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    // Anonymous memory (heap and buffers): the executable's own pages, which a debug
    // build with the WASM interpreter makes large, are not what this bounds.
    let rss = proc_status_kib(f.pid(), "RssAnon:").unwrap_or(u64::MAX);
    // Far more access-log lines than the 1 MiB queue holds went by, and requests were
    // answered all along.
    assert!(requests > 20_000, "{report}");
    assert!(
        rss < 16 * 1024,
        "RSS {rss} KiB after {requests} access-log lines with stderr stuck"
    );
    // Landing is not held for ever by the stuck writer either.
    f.signal(libc::SIGTERM);
    let code = f.wait(secs(30));
    drop(held);
    assert!(
        code.is_some(),
        "still running 30 s after SIGTERM with stderr stuck"
    );
}

#[test]
fn a_request_to_a_ship_that_is_starting_waits_for_it() {
    let d = Dir::new("held");
    let (http, a, b, c) = (free_port(), free_port(), free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership]
bind = {{ http = "127.0.0.1:{http}" }}
http = {{ hold_timeout = "4s" }}
[[fleet.web]]
name = "slow"
command = "sh"
args = ["-c", "sleep 1; exec python3 {STRICT} {a} slow"]
bind = "127.0.0.1:{a}"
routes = ["http:^/slow"]
[[fleet.web]]
name = "late"
command = "sh"
args = ["-c", "sleep 2; exec python3 {STRICT} {c} late"]
bind = "127.0.0.1:{c}"
routes = ["http:^/late"]
[[fleet.web]]
name = "never"
command = "sleep"
args = ["1000"]
bind = "127.0.0.1:{b}"
critical = false
routes = ["http:^/never"]
"#
        ),
    );
    let f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("listening on")),
        "{}",
        f.stderr()
    );
    // The listener is up long before the ship is.
    assert!(
        wait_for(secs(10), || {
            let r = raw(
                http,
                b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            );
            r.starts_with("HTTP/1.1 404 ")
        }),
        "{}",
        f.stderr()
    );
    assert!(!f.stderr().contains("slow: up"), "{}", f.stderr());
    let r = raw(
        http,
        b"GET /slow/x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.contains(r#""target": "/slow/x""#),
        "{r}\n{}",
        f.stderr()
    );
    // A client that closes its side after a whole request still gets its answer.
    if !f.stderr().contains("late: up") {
        let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /late HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 200 "), "{out:?}\n{}", f.stderr());
    }
    // One that does not come up within hold_timeout gets 503, and when to come back.
    let r = raw(
        http,
        b"GET /never HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{r}"
    );
}

#[test]
fn holding_is_bounded_by_hold_queue_and_off_with_a_zero_hold_timeout() {
    // A ship that never comes up behind the edge, with the given [mothership.http].
    let fleet = |tag: &str, http_keys: &str| {
        let d = Dir::new(tag);
        let (http, a) = (free_port(), free_port());
        d.write(
            "ship-manifest.toml",
            &format!(
                "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ {http_keys} }}\n[[fleet.web]]\nname = \"q\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nbind = \"127.0.0.1:{a}\"\ncritical = false\nroutes = [\"http:/\"]\n"
            ),
        );
        // At debug level, a held request is logged.
        let f = Fleet::start_with(&d, &[], |c| {
            c.env("RUST_LOG", "debug");
        });
        assert!(wait_for(secs(10), || f.stderr().contains("listening on")));
        (d, f, http)
    };
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let (_d, f, http) = fleet("hold-queue", "hold_timeout = \"2s\", hold_queue = 1");
    // The first request waits (the ship never comes up); the second finds the queue full.
    let first = std::thread::spawn(move || raw(http, GET));
    assert!(wait_for(secs(5), || f
        .stderr()
        .contains("the request waits")));
    let r = raw(http, GET);
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{r}"
    );
    assert!(f.logged("hold_queue is full"), "{}", f.stderr());
    let r = first.join().expect("first");
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        f.logged("did not come up within 2s (hold_timeout)"),
        "{}",
        f.stderr()
    );

    let (_d, f, http) = fleet("hold-off", "hold_timeout = 0");
    let r = raw(http, GET);
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        r.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{r}"
    );
    assert!(
        f.logged("requests are not held (hold_timeout = 0)"),
        "{}",
        f.stderr()
    );
    assert!(!f.stderr().contains("the request waits"), "{}", f.stderr());
}

#[test]
fn a_connect_storm_is_accepted_over_several_turns_and_every_connection_served() {
    let d = Dir::new("storm");
    let http = free_port();
    std::fs::create_dir_all(d.join("pub")).unwrap();
    d.write("pub/a.txt", "hello\n");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\n[[mothership.static_dirs]]\npath = \"pub\"\nprefix = \"/\"\n"
        ),
    );
    let f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("listening on")),
        "{}",
        f.stderr()
    );
    // Far more connections than one turn accepts (64), all in the backlog at once.
    let mut conns: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(("127.0.0.1", http)).unwrap())
        .collect();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.write_all(b"GET /a.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.1 200 ") && out.ends_with("hello\n"),
            "connection {i}: {out:?}"
        );
    }
}
