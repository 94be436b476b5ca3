//! Uplinks and `mothership preflight` (issue 6) against real listeners and an HTTP server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::secs;
use crate::proxy::BACKEND;
use crate::support::*;

/// A listener that accepts and counts connections (and closes them).
fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = Arc::clone(&n);
    std::thread::spawn(move || {
        for s in l.incoming() {
            if s.is_ok() {
                n2.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    (port, n)
}

/// The echo backend as a plain HTTP server for the checks.
struct Http {
    child: Child,
    port: u16,
}

impl Http {
    fn start() -> Http {
        let port = free_port();
        let child = Command::new("python3")
            .args([BACKEND, &port.to_string(), "uplink"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ok = wait_for(secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(ok, "echo backend did not start");
        Http { child, port }
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

#[test]
fn preflight_reports_each_uplink_with_masked_credentials_and_dedups() {
    let d = Dir::new("preflight");
    let (tcp, seen) = counting_listener();
    let http = Http::start();
    let hp = http.port;
    let closed = closed_port();
    // A listener that never accepts: connects succeed (the kernel queues them) but an
    // HTTP request is never answered.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let sp = silent.local_addr().unwrap().port();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[mothership.uplinks]]
name = "db"
url = "postgres://app:s3cret@127.0.0.1:{tcp}/app?sslmode=require&password=hunter2"
[[mothership.uplinks]]
name = "db-again"
url = "tcp://127.0.0.1:{tcp}"
[[mothership.uplinks]]
name = "api"
url = "http://127.0.0.1:{hp}/health?x=1"
[[mothership.uplinks]]
name = "api-broken"
url = "http://127.0.0.1:{hp}/broken?status=500"
[[mothership.uplinks]]
name = "gone"
url = "redis://127.0.0.1:{closed}"
timeout = "2s"
[[mothership.uplinks]]
name = "silent"
url = "http://127.0.0.1:{sp}/"
timeout = "300ms"
[[mothership.uplinks]]
name = "byname"
url = "tcp://localhost:{tcp}"
[[mothership.uplinks]]
name = "tls"
url = "https://127.0.0.1:{tcp}/"
[[fleet.web]]
name = "w"
command = "true"
"#
        ),
    );
    let (code, out, err) = run_in(&d.path, &["preflight"]);
    assert_eq!(code, 1, "{out}{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {out}"))
            .to_string()
    };
    assert!(line("db").contains("  ok  "), "{out}");
    assert!(line("db").contains("postgres://app:***@127.0.0.1"), "{out}");
    assert!(
        !out.contains("s3cret") && !err.contains("s3cret"),
        "{out}{err}"
    );
    assert!(!out.contains("hunter2"), "{out}");
    assert!(line("db-again").contains("  ok  "), "{out}");
    assert!(line("api").contains("ok (HTTP 200)"), "{out}");
    assert!(line("api-broken").contains("error: HTTP 500"), "{out}");
    assert!(line("gone").contains("error: cannot connect"), "{out}");
    assert!(
        line("silent").contains("error: timed out after 300ms"),
        "{out}"
    );
    assert!(line("byname").contains("  ok  "), "{out}");
    assert!(line("tls").contains("TCP connect only"), "{out}");
    assert!(line("db").ends_with(" ms"), "{out}");
    assert!(err.contains("3 of 8 uplink(s) failed"), "{err}");
    // db, db-again (same host and port), tls (another kind): two connections to `tcp`
    // from the 127.0.0.1 checks, plus the one by name.
    let n = seen.load(Ordering::SeqCst);
    assert!((2..=3).contains(&n), "{n} connections");
    drop(silent);
}

#[test]
fn preflight_without_uplinks_and_with_a_bad_manifest() {
    let d = Dir::new("preflight-none");
    d.write(
        "ship-manifest.toml",
        "[[fleet.web]]\nname = \"w\"\ncommand = \"true\"\n",
    );
    let (code, out, _) = run_in(&d.path, &["preflight"]);
    assert_eq!(code, 0);
    assert!(out.contains("no uplinks to check"), "{out}");
    d.write(
        "ship-manifest.toml",
        "[[mothership.uplinks]]\nurl = \"ftp://x\"\n[[fleet.web]]\nname = \"w\"\ncommand = \"true\"\n",
    );
    let (code, _, err) = run_in(&d.path, &["preflight"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("2:7") && err.contains("not supported"),
        "{err}"
    );
}

#[test]
fn run_stops_before_launching_when_an_uplink_fails() {
    let d = Dir::new("run-uplink");
    let closed = closed_port();
    let (tcp, _) = counting_listener();
    let marker = d.join("started");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[mothership.uplinks]]
name = "cache"
url = "redis://user:pw@127.0.0.1:{closed}"
[[mothership.uplinks]]
name = "db"
url = "tcp://127.0.0.1:{tcp}"
[[mothership.prelaunch]]
name = "migrate"
command = "touch"
args = ["{}"]
[[fleet.web]]
name = "w"
command = "sleep"
args = ["100"]
"#,
            marker.display()
        ),
    );
    let (code, _, err) = run_in(&d.path, &["run"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("uplink(s) unreachable: cache"), "{err}");
    assert!(err.contains("redis://user:***@127.0.0.1"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");
    assert!(!marker.exists(), "prelaunch ran");
    assert!(!err.contains("w: started"), "{err}");
}

#[test]
fn run_goes_on_when_uplinks_pass() {
    let d = Dir::new("run-uplink-ok");
    let (tcp, seen) = counting_listener();
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[mothership.uplinks]]\nurl = \"tcp://127.0.0.1:{tcp}\"\n[[fleet.web]]\nname = \"j\"\ncommand = \"true\"\noneshot = true\n"
        ),
    );
    let (code, _, err) = run_in(&d.path, &["run"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("uplink 127.0.0.1"), "{err}");
    assert!(err.contains("j: started"), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn a_signal_ends_preflight_while_a_check_hangs() {
    let d = Dir::new("preflight-signal");
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let sp = silent.local_addr().unwrap().port();
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[mothership.uplinks]]\nurl = \"http://127.0.0.1:{sp}/\"\ntimeout = \"5m\"\n[[fleet.web]]\nname = \"w\"\ncommand = \"true\"\n"
        ),
    );
    let mut f = Fleet::start(&d, &["preflight"]);
    std::thread::sleep(Duration::from_millis(500));
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(5)), Some(1), "{}", f.stderr());
    assert!(f.logged("interrupted"), "{}", f.stderr());
    drop(silent);
}

#[test]
fn ipv6_literal_uplink() {
    let Ok(l) = TcpListener::bind("[::1]:0") else {
        panic!("this machine has no IPv6 loopback; the test needs ::1");
    };
    let port = l.local_addr().unwrap().port();
    let d = Dir::new("preflight-v6");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[mothership.uplinks]]\nname = \"v6\"\nurl = \"tcp://[::1]:{port}\"\n[[fleet.web]]\nname = \"w\"\ncommand = \"true\"\n"
        ),
    );
    let (code, out, err) = run_in(&d.path, &["preflight"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("tcp://[::1]:") && out.contains("  ok  "),
        "{out}"
    );
    let mut s = l.accept().unwrap().0;
    let _ = s.write_all(b"");
    let mut b = [0u8; 1];
    let _ = s.read(&mut b);
}

fn flagship_manifest(d: &Dir, flagship: &str) {
    let pre = d.join("prelaunch-ran");
    let ship = d.join("ship-ran");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.flagship]
enabled = true
election = "static"
{flagship}
[[mothership.prelaunch]]
name = "migrate"
command = "touch"
args = ["{}"]
[[fleet.web]]
name = "app"
command = "touch"
args = ["{}"]
oneshot = true
"#,
            pre.display(),
            ship.display()
        ),
    );
}

#[test]
fn static_flagship_runs_prelaunch_and_escorts_skip_it() {
    for (value, flagship) in [
        ("yes", true),
        ("TRUE", true),
        ("1", true),
        ("no", false),
        ("", false),
    ] {
        let d = Dir::new("flagship-static");
        flagship_manifest(&d, "static_flagship = \"$IS_FLAGSHIP\"");
        let out = Command::new(env!("CARGO_BIN_EXE_mothership"))
            .current_dir(&d.path)
            .env("IS_FLAGSHIP", value)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{value:?}: {err}");
        assert_eq!(
            d.join("prelaunch-ran").exists(),
            flagship,
            "{value:?}: {err}"
        );
        assert!(d.join("ship-ran").exists(), "{value:?}: {err}");
        let said = if flagship {
            "flagship: this instance runs"
        } else {
            "escort: skipping 1 prelaunch job(s)"
        };
        assert!(err.contains(said), "{value:?}: {err}");
    }
}

#[test]
fn static_flagship_by_command() {
    let d = Dir::new("flagship-cmd");
    flagship_manifest(
        &d,
        "static_flagship = { command = \"echo web-1\", equals = \"web-1\" }",
    );
    let (code, _, err) = run_in(&d.path, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(d.join("prelaunch-ran").exists(), "{err}");
    let d = Dir::new("flagship-cmd-escort");
    flagship_manifest(
        &d,
        "static_flagship = { command = \"echo web-2\", equals = \"web-1\" }",
    );
    let (code, _, err) = run_in(&d.path, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !d.join("prelaunch-ran").exists() && d.join("ship-ran").exists(),
        "{err}"
    );
    // A command that fails decides nothing: nothing starts, exit 1.
    let d = Dir::new("flagship-cmd-fails");
    flagship_manifest(
        &d,
        "static_flagship = { command = \"false\", equals = \"web-1\" }",
    );
    let (code, _, err) = run_in(&d.path, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("flagship election") && err.contains("failed"),
        "{err}"
    );
    assert!(!d.join("ship-ran").exists(), "{err}");
}
