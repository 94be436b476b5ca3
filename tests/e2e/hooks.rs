//! The operator's hooks (issue 18): the `on_event` command and the signed webhook.

use std::process::{Command, Stdio};

use crate::cli::secs;
use crate::support::*;
use mothership::proto::json::{self, Value};

/// A webhook receiver: answers 500 to its first `fail_first` posts and 204 to the rest,
/// and writes one JSON line per post to `log` with whether its signature is right.
const RECEIVER: &str = r#"
import hashlib, hmac, http.server, json, sys
port, secret, log, fail_first = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3], int(sys.argv[4])
count = [0]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        count[0] += 1
        good = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        sig = self.headers.get("X-Mothership-Signature-256", "")
        with open(log, "a") as f:
            f.write(json.dumps({"n": count[0], "valid": hmac.compare_digest(sig, good),
                                "event": self.headers.get("X-Mothership-Event"),
                                "body": json.loads(body)}) + "\n")
        self.send_response(500 if count[0] <= fail_first else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

/// A helper process, killed and reaped when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn posts(d: &Dir) -> Vec<Value> {
    d.read("posts.log")
        .lines()
        .filter_map(|l| json::parse(l.as_bytes()).ok())
        .collect()
}

#[test]
fn on_event_and_a_signed_webhook_hear_a_crash_and_the_landing() {
    let m = marker("hooks");
    let d = Dir::new("hooks");
    let port = free_port();
    d.write("receiver.py", RECEIVER);
    // Killed when the test ends, however it ends.
    let receiver = Killed(
        Command::new("python3")
            .args([
                "receiver.py",
                &port.to_string(),
                "s3cret",
                "posts.log",
                "1",
                &m,
            ])
            .current_dir(&d.path)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_for(secs(10), || std::net::TcpStream::connect((
        "127.0.0.1",
        port
    ))
    .is_ok()));
    d.write(
        "hook.sh",
        "{ env | grep '^MS_EVENT_' | sort; echo ---; } >> events\necho \"heard $MS_EVENT_KIND\"\n",
    );
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
on_event = ["sh", "hook.sh", "{m}"]
webhook = "http://127.0.0.1:{port}/hook"
webhook_secret = "s3cret"
[[fleet.c]]
name = "crashy"
command = "sh"
args = ["-c", "[ -e crashed ] && exec sleep 1000; touch crashed; sleep 0.3; exit 1; : {m}"]
critical = false
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    let crash_heard = || d.read("events").contains("MS_EVENT_KIND=crash");
    assert!(wait_for(secs(10), crash_heard), "{}", f.stderr());
    let events = d.read("events");
    let crash = events
        .split("---")
        .find(|e| e.contains("MS_EVENT_KIND=crash"))
        .unwrap_or("");
    assert!(crash.contains("MS_EVENT_PROGRAM=crashy"), "{crash}");
    assert!(
        crash.contains("MS_EVENT_DETAIL=exited unexpectedly (exit code 1)"),
        "{crash}"
    );
    assert!(crash.contains("MS_EVENT_TIME=20"), "{crash}");
    assert!(
        wait_for(secs(10), || f
            .stderr()
            .contains("on_event (crash): heard crash")),
        "the hook's output is logged: {}",
        f.stderr()
    );
    // The webhook gets the same events, signed, in order; the first post was answered
    // 500 and is delivered again.
    assert!(
        wait_for(secs(15), || {
            let p = posts(&d);
            p.len() >= 2
                && p.iter()
                    .any(|p| p.get("event").and_then(Value::as_str) == Some("crash"))
        }),
        "{}\n{}",
        d.read("posts.log"),
        f.stderr()
    );
    let p = posts(&d);
    assert!(
        p.iter().all(|p| p.get("valid") == Some(&Value::Bool(true))),
        "{p:?}"
    );
    let seq = |p: &Value| {
        p.get("body")
            .and_then(|b| b.get("seq"))
            .and_then(Value::as_u64)
    };
    assert_eq!(seq(&p[0]), seq(&p[1]), "retried after the 500: {p:?}");
    let seqs: Vec<u64> = p[1..].iter().filter_map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    let crash = p
        .iter()
        .find(|p| p.get("event").and_then(Value::as_str) == Some("crash"))
        .and_then(|p| p.get("body"))
        .unwrap_or(&Value::Null);
    assert_eq!(crash.get("program").and_then(Value::as_str), Some("crashy"));

    // The landing is told to both before mothership ends.
    assert_eq!(f.stop(secs(20)), Some(0), "{}", f.stderr());
    assert!(d.read("events").contains("MS_EVENT_KIND=landing"));
    assert!(posts(&d)
        .iter()
        .any(|p| p.get("event").and_then(Value::as_str) == Some("landing")));
    drop(receiver);
    assert!(pids_with(&m).is_empty());
}

#[test]
fn a_hook_past_its_time_is_killed_with_its_group() {
    let m = marker("hooks-timeout");
    let d = Dir::new("hooks-timeout");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
on_event = ["sh", "-c", "sleep 1000 & sleep 1000; : {m}"]
on_event_timeout = "300ms"
[[fleet.a]]
name = "a"
command = "sh"
args = ["-c", "exec sleep 1000; : {m}"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("still runs after 300ms")),
        "{}",
        f.stderr()
    );
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(
        wait_for(secs(5), || pids_with(&m).is_empty()),
        "{:?}",
        pids_with(&m)
    );
}

#[test]
fn hook_settings_are_checked() {
    let d = Dir::new("hooks-bad");
    for (text, want) in [
        ("on_event = []", "`on_event` needs a command"),
        (
            "webhook = \"https://example.com/x\"",
            "must be an http:// URL",
        ),
        ("webhook_secret = \"x\"", "without a `webhook`"),
        ("on_event_timeout = \"soon\"", "on_event_timeout"),
    ] {
        d.write(
            "ship-manifest.toml",
            &format!("[mothership]\n{text}\n[[fleet.a]]\nname = \"a\"\ncommand = \"true\"\n"),
        );
        let (code, _, err) = run_in(&d.path, &["clearance"]);
        assert_eq!(code, 78, "{text}: {err}");
        assert!(
            err.contains(want) && err.contains("ship-manifest.toml:2:"),
            "{text}: {err}"
        );
    }
}

#[test]
fn a_chatty_hook_does_not_hold_the_loop() {
    let m = marker("hooks-chatty");
    let d = Dir::new("hooks-chatty");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
on_event = ["sh", "-c", "exec yes hook-says-yes; : {m}"]
on_event_timeout = "2s"
[[fleet.a]]
name = "a"
command = "sh"
args = ["-c", "exec sleep 1000; : {m}"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("hook-says-yes")),
        "{}",
        f.stderr()
    );
    // While it floods its pipe, the control socket answers and timers run: it is
    // killed at its timeout.
    let (code, out, err) = run_in(&d.path, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("running"), "{out}");
    assert!(
        wait_for(secs(10), || f.stderr().contains("still runs after 2s")),
        "{}",
        f.stderr().len()
    );
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(wait_for(secs(5), || pids_with(&m).is_empty()));
}
