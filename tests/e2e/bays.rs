//! Bays (issue 16): a Python bay speaking docking versions 1 and 3 (tests/e2e/bay.py),
//! driven by real WebSocket clients: the `websockets` Python library
//! (tests/e2e/ws_client.py) and, for the frame-level conformance table, raw frames
//! written here on a TCP socket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use mothership::proto::json::{self, Value};

use crate::cli::secs;
use crate::proxy::curl;
use crate::support::*;

const BAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/bay.py");
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ws_client.py");

/// A bay table: `name` speaking docking `proto`, routed from `^/name`, with `extra` keys
/// and `args` appended to the bay's command line.
pub(crate) fn bay(d: &Dir, name: &str, proto: u32, args: &str, extra: &str, m: &str) -> String {
    format!(
        "[[bays.chat]]\nname = \"{name}\"\ncommand = \"python3\"\nargs = [\"{BAY}\", \"--proto\", \"{proto}\", \"--log\", \"{}\"{args}, \"{m}\"]\nroutes = [{{ bind = \"ws\", pattern = \"^/{name}\" }}]\n{extra}\n",
        d.join(&format!("{name}.log")).display()
    )
}

/// Starts a fleet of `bays` behind a bind on `port`, with `http` keys; waits until every
/// bay named in `docked` has been moored.
pub(crate) fn start(d: &Dir, port: u16, http: &str, bays: &str, docked: &[&str]) -> Fleet {
    d.write(
        "ship-manifest.toml",
        &format!("[mothership.bind]\nws = \"127.0.0.1:{port}\"\n[mothership.http]\n{http}\n{bays}"),
    );
    let sock = d.join("sock");
    let f = Fleet::start_with(d, &[], |c| {
        c.env("MS_SOCKET_DIR", &sock);
    });
    for name in docked {
        assert!(
            wait_for(secs(15), || !events(d, name, "moored").is_empty()),
            "{name} did not dock\n{}",
            f.stderr()
        );
    }
    f
}

/// The bay's events of type `ev`, in order.
fn events(d: &Dir, bay: &str, ev: &str) -> Vec<Value> {
    std::fs::read_to_string(d.join(&format!("{bay}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| json::parse(l.as_bytes()).ok())
        .filter(|v| v.get("ev").and_then(Value::as_str) == Some(ev))
        .collect()
}

/// Runs a client scenario; its JSON answer (the last line it printed).
fn client(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(CLIENT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    json::parse(last.as_bytes()).unwrap_or_else(|_| {
        panic!(
            "client {args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A `hold` client: boarded, it waits for its go file, then checks it is still served.
struct Holder {
    child: std::process::Child,
    out: std::process::ChildStdout,
    go: std::path::PathBuf,
}

impl Holder {
    /// Starts one and waits until it is boarded.
    fn start(url: &str, go: std::path::PathBuf, secs: u32) -> Holder {
        let mut child = Command::new("python3")
            .arg(CLIENT)
            .args(["hold", url, go.to_str().unwrap(), &secs.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        assert!(
            String::from_utf8_lossy(&line).contains("ready"),
            "hold client not boarded: {}",
            String::from_utf8_lossy(&line)
        );
        Holder { child, out, go }
    }

    /// Lets it go on; what it found.
    fn finish(mut self) -> Value {
        std::fs::write(&self.go, "").unwrap();
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).unwrap();
        let _ = self.child.wait();
        json::parse(rest.trim().as_bytes()).unwrap_or_else(|_| panic!("hold: {rest}"))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILLs the process of bay `name` that docked `nth` (from 0).
fn kill_bay(d: &Dir, name: &str, nth: usize) {
    let pid = num(&events(d, name, "moored")[nth], "pid");
    assert!(pid > 1 && pid < i32::MAX as u64, "pid {pid}");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(u64::MAX)
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn yes(v: &Value, k: &str) -> bool {
    v.get(k) == Some(&Value::Bool(true))
}

#[test]
fn both_docking_versions_carry_text_and_binary_and_boarding_has_what_the_bay_needs() {
    let d = Dir::new("bays-echo");
    let m = marker("bays-echo");
    let port = free_port();
    let bays =
        format!(
        "{}{}",
        bay(&d, "one", 1, "", "config = { greeting = \"a\\\"b\", n = \"1\" }", &m),
        bay(
            &d,
            "three",
            3,
            "",
            "config = { only = \"this\" }\nsubprotocols = [\"chat.v2\", \"actioncable-v1-json\"]",
            &m
        )
    );
    let f = start(&d, port, "", &bays, &["one", "three"]);
    // Moored: the version the bay docked with, and the config exactly.
    let one = &events(&d, "one", "moored")[0];
    assert_eq!(num(one, "version"), 1);
    assert_eq!(
        text(one, "raw"),
        r#"{"version":1,"config":{"greeting":"a\"b","n":"1"}}"#
    );
    let three = &events(&d, "three", "moored")[0];
    assert_eq!(
        text(three, "raw"),
        r#"{"version":3,"config":{"only":"this"}}"#
    );

    for (name, protos, want) in [
        (
            "one",
            vec!["actioncable-v1-json", "x"],
            "actioncable-v1-json",
        ),
        (
            "three",
            vec!["x", "actioncable-v1-json"],
            "actioncable-v1-json",
        ),
    ] {
        let url = format!("ws://127.0.0.1:{port}/{name}/room?id=7");
        let mut args = vec!["echo", url.as_str()];
        args.extend(protos.iter().copied());
        let r = client(&args);
        assert_eq!(text(&r, "subprotocol"), want, "{name}: {r:?}");
        assert_eq!(text(&r, "text_kind"), "text", "{name}: {r:?}");
        assert!(yes(&r, "text_ok"), "{name}: {r:?}");
        assert_eq!(text(&r, "binary_kind"), "binary", "{name}: {r:?}");
        assert!(yes(&r, "binary_ok"), "{name}: {r:?}");
        let b = events(&d, name, "boarding");
        let b = b.last().expect("boarding");
        assert_eq!(num(b, "conn_id"), num(&r, "conn_id"));
        assert_eq!(text(b, "path"), format!("/{name}/room?id=7"));
        assert!(text(b, "remote_addr").starts_with("127.0.0.1:"), "{b:?}");
        assert_eq!(text(b, "protocol"), want);
        assert!(b.get("resumed").is_none(), "{b:?}");
        let h = b.get("headers").expect("headers");
        assert_eq!(h.get("x-probe").and_then(Value::as_str), Some("Yes"));
        let Value::Object(all) = h else {
            panic!("headers: {h:?}")
        };
        assert!(all.len() >= 5, "{h:?}");
        assert!(all.iter().all(|(k, _)| *k == k.to_lowercase()), "{h:?}");
    }
    // Version 3 Cargo carries its kind; version 1 Cargo has the v1 shape.
    let (c3, c1) = (events(&d, "three", "cargo"), events(&d, "one", "cargo"));
    assert!(c3.len() >= 2 && c1.len() >= 2, "{c3:?} {c1:?}");
    assert!(c3.iter().all(|c| num(c, "shape") == 3), "{c3:?}");
    assert!(c1.iter().all(|c| num(c, "shape") == 1), "{c1:?}");
    // A bay with subprotocols selects none the client offers unless it speaks it.
    let r = client(&["echo", &format!("ws://127.0.0.1:{port}/three"), "nope"]);
    assert_eq!(r.get("subprotocol"), Some(&Value::Null), "{r:?}");
    // Not a WebSocket handshake, to a version-1 bay: 426.
    let head = curl(&["-s", "-i", &format!("http://127.0.0.1:{port}/one")]);
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
    assert!(head.to_lowercase().contains("upgrade: websocket"), "{head}");
    drop(f);
}

#[test]
fn disembark_goes_both_ways_with_the_real_codes_and_stray_frames_are_ignored() {
    let d = Dir::new("bays-disembark");
    let m = marker("bays-disembark");
    let port = free_port();
    let f = start(&d, port, "", &bay(&d, "b", 1, "", "", &m), &["b"]);
    let url = format!("ws://127.0.0.1:{port}/b");
    let r = client(&["close", &url, "4001"]);
    let cid = num(&r, "conn_id");
    assert!(wait_for(secs(5), || events(&d, "b", "disembark")
        .iter()
        .any(|e| num(e, "conn_id") == cid)));
    let e = events(&d, "b", "disembark");
    let e = e
        .iter()
        .find(|e| num(e, "conn_id") == cid)
        .expect("disembark");
    assert_eq!((num(e, "code"), text(e, "reason")), (4001, "leaving"));

    // The bay closes a client: the client sees the bay's code; the bay's repeated
    // Disembark and its Cargo for the gone client are ignored.
    let r = client(&["send", &url, "close 4003"]);
    assert_eq!(num(&r, "code"), 4003, "{r:?}");
    assert_eq!(text(&r, "reason"), "bye");
    // Frames for a conn_id nobody has are ignored: the link stays, the client is served.
    let r = client(&["send", &url, "ghost"]);
    let got = format!("{:?}", r.get("got"));
    assert!(got.contains("ghosted"), "{r:?}");
    assert_eq!(events(&d, "b", "moored").len(), 1, "{}", f.stderr());
    assert!(!f.stderr().contains("restarting the bay"), "{}", f.stderr());
}

#[test]
fn a_bad_docking_frame_restarts_the_bay_and_its_clients_are_boarded_again() {
    let d = Dir::new("bays-fault");
    let m = marker("bays-fault");
    let port = free_port();
    let f = start(&d, port, "", &bay(&d, "b", 3, "", "", &m), &["b"]);
    let url = format!("ws://127.0.0.1:{port}/b");
    for (n, cmd, why) in [
        (2, "junk", "unknown docking frame type 0x7f"),
        (3, "huge", "over the 16777216-byte bound"),
        (4, "badjson", "malformed docking frame 0x11"),
    ] {
        let holder = Holder::start(&url, d.join(&format!("go-{cmd}")), 15);
        client(&["fire", &url, cmd]);
        assert!(
            wait_for(secs(15), || events(&d, "b", "moored").len() >= n),
            "{cmd}: not docked again\n{}",
            f.stderr()
        );
        assert!(f.logged(why), "{cmd}: {}", f.stderr());
        // One restart per fault so far.
        assert!(
            wait_for(secs(10), || f
                .stderr()
                .matches("restarting the bay")
                .count()
                >= n - 1),
            "{}",
            f.stderr()
        );
        // A client boarded before the fault is kept, boarded again and served.
        let v = holder.finish();
        assert!(yes(&v, "echo_after"), "{cmd}: {v:?}\n{}", f.stderr());
        let resumed: Vec<_> = events(&d, "b", "boarding")
            .into_iter()
            .filter(|b| yes(b, "resumed") && num(b, "conn_id") == num(&v, "conn_id"))
            .collect();
        assert_eq!(resumed.len(), 1, "{cmd}");
    }
}

#[test]
fn clients_outlive_a_killed_bay_and_are_closed_1012_past_the_resume_bound() {
    let d = Dir::new("bays-resume");
    let m = marker("bays-resume");
    let port = free_port();
    let gate = d.join("nodock");
    let args = format!(", \"--nodock-if\", \"{}\"", gate.display());
    let f = start(
        &d,
        port,
        "websocket_resume_timeout = \"5s\"",
        &bay(&d, "b", 1, &args, "", &m),
        &["b"],
    );
    let url = format!("ws://127.0.0.1:{port}/b");
    let holder = Holder::start(&url, d.join("go"), 20);
    // Killed: restarted, docked, the client boarded again and served.
    kill_bay(&d, "b", 0);
    assert!(wait_for(secs(15), || events(&d, "b", "moored").len() >= 2));
    let v = holder.finish();
    assert!(yes(&v, "echo_after"), "{v:?}\n{}", f.stderr());

    // Killed again, and the new run never docks: past 5 s, the client is closed 1012.
    let holder = Holder::start(&url, d.join("go2"), 20);
    std::fs::write(&gate, "").unwrap();
    kill_bay(&d, "b", 1);
    let v = holder.finish();
    assert!(!yes(&v, "echo_after"), "{v:?}");
    assert_eq!(num(&v, "code"), 1012, "{v:?}\n{}", f.stderr());
    assert!(f.logged("did not dock again within 5s"));
    // A version-1 bay loses what comes in the same read as Moored: nothing did.
    assert!(events(&d, "b", "lost-after-moored").is_empty());
}

#[test]
fn a_thousand_clients_on_one_bay_and_a_broadcast_reaches_them_all() {
    let d = Dir::new("bays-many");
    let m = marker("bays-many");
    let port = free_port();
    let f = start(
        &d,
        port,
        "",
        &bay(&d, "b", 3, ", \"--broadcast\"", "", &m),
        &["b"],
    );
    let url = format!("ws://127.0.0.1:{port}/b");
    let r = client(&["many", &url, "1000"]);
    assert_eq!(num(&r, "ok"), 1000, "{r:?}\n{}", f.stderr());
    // One Broadcast frame with no conn_ids, and one Cargo per client: every client of
    // the bay gets it either way.
    for cmd in ["bcast everyone", "all everyone"] {
        let r = client(&["fanout", &url, "300", cmd, "everyone"]);
        assert_eq!(num(&r, "received"), 300, "{cmd}: {r:?}");
    }
    // From a bay that did not announce it, Broadcast is a protocol error.
    let d2 = Dir::new("bays-nobcast");
    let port2 = free_port();
    let f2 = start(&d2, port2, "", &bay(&d2, "c", 3, "", "", &m), &["c"]);
    client(&["fire", &format!("ws://127.0.0.1:{port2}/c"), "bcast x"]);
    assert!(
        wait_for(secs(10), || f2.stderr().contains("did not say")),
        "{}",
        f2.stderr()
    );
}

#[test]
fn a_slow_client_is_closed_1008_and_its_bay_told() {
    let d = Dir::new("bays-slow");
    let m = marker("bays-slow");
    let port = free_port();
    let f = start(
        &d,
        port,
        "websocket_send_queue = \"256KiB\"",
        &bay(&d, "b", 3, "", "", &m),
        &["b"],
    );
    let r = client(&["slow", &format!("ws://127.0.0.1:{port}/b")]);
    assert_eq!(num(&r, "code"), 1008, "{r:?}\n{}", f.stderr());
    assert!(num(&r, "received") < 400, "{r:?}");
    assert!(wait_for(secs(5), || events(&d, "b", "disembark")
        .iter()
        .any(|e| num(e, "code") == 1008)));
    // The bay and its other clients are not held up; a client that reads is not closed
    // for a burst three times the bound that comes in one go (its queue is written as
    // the bay's frames are read, not after).
    let r = client(&["echo", &format!("ws://127.0.0.1:{port}/b")]);
    assert!(yes(&r, "text_ok"), "{r:?}");
    let r = client(&["flood", &format!("ws://127.0.0.1:{port}/b"), "12"]);
    assert_eq!(num(&r, "received"), 12, "{r:?}\n{}", f.stderr());
}

#[test]
fn a_bay_that_stops_reading_stalls_its_clients_then_serves_them_all() {
    let d = Dir::new("bays-stall");
    let m = marker("bays-stall");
    let port = free_port();
    let f = start(&d, port, "", &bay(&d, "b", 3, "", "", &m), &["b"]);
    let r = client(&["stall", &format!("ws://127.0.0.1:{port}/b")]);
    assert_eq!(num(&r, "echoed"), num(&r, "of"), "{r:?}\n{}", f.stderr());
    assert!(!f.stderr().contains("restarting"), "{}", f.stderr());
}

#[test]
fn landing_closes_bay_clients_with_1001_and_tells_the_bay() {
    let d = Dir::new("bays-land");
    let m = marker("bays-land");
    let port = free_port();
    let mut f = start(&d, port, "", &bay(&d, "b", 1, "", "", &m), &["b"]);
    let holder = Holder::start(&format!("ws://127.0.0.1:{port}/b"), d.join("go"), 5);
    assert_eq!(f.stop(secs(15)), Some(0), "{}", f.stderr());
    let v = holder.finish();
    assert_eq!(num(&v, "code"), 1001, "{v:?}");
    let gone = events(&d, "b", "disembark");
    assert!(gone.iter().any(|e| num(e, "code") == 1001), "{gone:?}");
}

#[test]
fn a_bay_that_never_docks_fails_its_start_after_ready_timeout() {
    let d = Dir::new("bays-nodock");
    let m = marker("bays-nodock");
    let port = free_port();
    let gate = d.write("nodock", "");
    let args = format!(", \"--nodock-if\", \"{}\"", gate.display());
    let f = start(
        &d,
        port,
        "hold_timeout = \"0s\"",
        &bay(&d, "b", 1, &args, "ready_timeout = \"1s\"", &m),
        &[],
    );
    assert!(
        wait_for(secs(10), || f
            .stderr()
            .contains("not ready within its ready_timeout (1s)")),
        "{}",
        f.stderr()
    );
    let head = curl(&[
        "-s",
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
        "-H",
        "Sec-WebSocket-Version: 13",
        "-H",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        &format!("http://127.0.0.1:{port}/b"),
    ]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
}

#[test]
fn restart_other_than_always_is_refused_for_a_bay() {
    let d = Dir::new("bays-restart-key");
    d.write(
        "ship-manifest.toml",
        "[[bays.chat]]\nname = \"b\"\ncommand = \"x\"\nrestart = \"never\"\n",
    );
    let (code, _, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("not available for bays"), "{err}");
}

/// A raw WebSocket client: frames written here, masked, on a plain TCP socket.
struct Raw(TcpStream);

impl Raw {
    fn open(port: u16, path: &str) -> Raw {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{head}"
        );
        let mut r = Raw(s);
        let (op, hi) = r.frame().expect("hi");
        assert_eq!(op, 1);
        assert!(hi.starts_with(b"hi "));
        r
    }

    fn frame_bytes(fin: bool, op: u8, payload: &[u8], rsv: u8) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | rsv | op];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    fn send(&mut self, fin: bool, op: u8, payload: &[u8]) {
        let f = Self::frame_bytes(fin, op, payload, 0);
        self.0.write_all(&f).unwrap();
    }

    /// The next server frame (opcode, payload); None when the connection ends.
    fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 2];
        self.0.read_exact(&mut h).ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        assert_ne!(h[0] & 0x80, 0, "server frames are whole");
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                self.0.read_exact(&mut b).ok()?;
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                self.0.read_exact(&mut b).ok()?;
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0; len];
        self.0.read_exact(&mut p).ok()?;
        Some((h[0] & 0x0f, p))
    }

    /// Reads until a close frame: its code.
    fn close_code(&mut self) -> Option<u16> {
        while let Some((op, p)) = self.frame() {
            if op == 8 {
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
        }
        None
    }
}

#[test]
fn websocket_conformance_table() {
    let d = Dir::new("bays-conformance");
    let m = marker("bays-conformance");
    let port = free_port();
    let _f = start(
        &d,
        port,
        "websocket_max_message = \"70000\"",
        &bay(&d, "b", 3, "", "", &m),
        &["b"],
    );
    // Frame lengths at each boundary of the length encoding, text and binary.
    let mut c = Raw::open(port, "/b");
    for n in [0usize, 1, 125, 126, 127, 65535, 65536] {
        let t: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
        c.send(true, 1, &t);
        assert_eq!(c.frame(), Some((1, t)), "text of {n}");
        let b: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        c.send(true, 2, &b);
        assert_eq!(c.frame(), Some((2, b)), "binary of {n}");
    }
    // Fragmented, with a ping between the fragments: the pong first, then the message.
    c.send(false, 1, b"ab");
    c.send(true, 9, b"p!");
    c.send(false, 0, b"cd");
    c.send(true, 0, "\u{e9}f".as_bytes());
    assert_eq!(c.frame(), Some((10, b"p!".to_vec())));
    assert_eq!(c.frame(), Some((1, "abcd\u{e9}f".as_bytes().to_vec())));
    // A UTF-8 character split across fragments is fine.
    let e = "\u{20ac}".as_bytes();
    c.send(false, 1, &e[..1]);
    c.send(true, 0, &e[1..]);
    assert_eq!(c.frame(), Some((1, e.to_vec())));
    // One byte at a time.
    for b in Raw::frame_bytes(true, 1, b"slowly", 0) {
        c.0.write_all(&[b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.frame(), Some((1, b"slowly".to_vec())));
    // A normal close is answered with the same code; the bay hears it.
    c.send(true, 8, &1000u16.to_be_bytes());
    assert_eq!(c.close_code(), Some(1000));

    // Violations and the codes they close with.
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid UTF-8 text",
            Raw::frame_bytes(true, 1, &[0xc3, 0x28], 0),
            1007,
        ),
        ("reserved bit", Raw::frame_bytes(true, 1, b"x", 0x40), 1002),
        ("reserved opcode", Raw::frame_bytes(true, 3, b"x", 0), 1002),
        (
            "close code 1005 on the wire",
            Raw::frame_bytes(true, 8, &1005u16.to_be_bytes(), 0),
            1002,
        ),
        (
            "close code 999",
            Raw::frame_bytes(true, 8, &999u16.to_be_bytes(), 0),
            1002,
        ),
        ("fragmented ping", Raw::frame_bytes(false, 9, b"x", 0), 1002),
        (
            "continuation with no message",
            Raw::frame_bytes(true, 0, b"x", 0),
            1002,
        ),
        ("unmasked frame", vec![0x81, 0x01, b'x'], 1002),
        (
            "message over websocket_max_message",
            Raw::frame_bytes(true, 2, &vec![0; 70001], 0),
            1009,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = Raw::open(port, "/b");
        c.0.write_all(&bytes).unwrap();
        assert_eq!(c.close_code(), Some(code), "{what}");
    }
    // A fragmented message over the bound, split so that no one frame is.
    let mut c = Raw::open(port, "/b");
    c.send(false, 2, &vec![0; 40000]);
    c.send(true, 0, &vec![0; 40000]);
    assert_eq!(c.close_code(), Some(1009));
    // The bay heard each client leave with its code.
    assert!(wait_for(secs(5), || events(&d, "b", "disembark")
        .iter()
        .any(|e| num(e, "code") == 1007)));
    let codes: Vec<u64> = events(&d, "b", "disembark")
        .iter()
        .map(|e| num(e, "code"))
        .collect();
    for want in [1000, 1002, 1007, 1009] {
        assert!(codes.contains(&want), "{codes:?}");
    }
}

#[test]
fn an_http_bay_answers_empty_streamed_sized_and_file_replies_over_reused_links() {
    let d = Dir::new("bays-http");
    let m = marker("bays-http");
    let port = free_port();
    std::fs::create_dir(d.join("www")).unwrap();
    d.write("www/file.txt", "from a file\n");
    let f = start(
        &d,
        port,
        "response_timeout = \"1s\"",
        &bay(&d, "h", 3, "", "", &m),
        &["h"],
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}/h/{p}");
    let head = curl(&["-i", &url("empty")]);
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(head.to_lowercase().contains("x-empty: yes"), "{head}");
    let r = curl(&["-i", &url("stream")]);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("transfer-encoding: chunked"), "{r}");
    assert!(r.contains("set-cookie: a=1\r\nset-cookie: b=2\r\n"), "{r}");
    assert!(r.ends_with("\r\n\r\none two three"), "{r}");
    let r = curl(&["-i", "--http1.0", &url("stream")]);
    assert!(
        r.ends_with("one two three") && r.contains("connection: close"),
        "{r}"
    );
    let r = curl(&["-i", &url("length")]);
    assert!(
        r.contains("content-length: 5") && r.ends_with("hello"),
        "{r}"
    );
    let r = curl(&["-i", &url("file")]);
    assert!(
        r.contains("content-length: 12") && r.ends_with("from a file\n"),
        "{r}"
    );
    let r = curl(&["-i", &url("outside")]);
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    // File replies stay beneath the bay's folder, symlinks included.
    std::os::unix::fs::symlink("/etc/passwd", d.join("www/out")).unwrap();
    std::os::unix::fs::symlink("file.txt", d.join("www/in")).unwrap();
    for (path, ok) in [
        ("www/file.txt", true),
        ("www/in", true),
        ("www/out", false),
        ("www/../../x", false),
        ("www", false),
        ("www/missing", false),
    ] {
        let r = curl(&["-i", &format!("{}?{path}", url("fileat"))]);
        let want = if ok { "HTTP/1.1 200" } else { "HTTP/1.1 502" };
        assert!(r.starts_with(want), "{path}: {r}");
        assert!(!r.contains("root:"), "{path}: {r}");
    }
    // A body in several Haul frames, and back.
    let body: String = (0..300_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    d.write("body", &body);
    let r = curl(&[
        "--data-binary",
        &format!("@{}", d.join("body").display()),
        &url("echo"),
    ]);
    assert!(r == body, "echo of {} bytes: {} back", body.len(), r.len());
    // CGI parameters.
    let r = curl(&[
        "-H",
        "X-Thing: 1",
        "-H",
        "X-Thing: 2",
        &format!("{}?q=1", url("params")),
    ]);
    let v = json::parse(r.as_bytes()).expect(&r);
    assert_eq!(text(&v, "REQUEST_METHOD"), "GET");
    assert_eq!(text(&v, "PATH_INFO"), "/h/params");
    assert_eq!(text(&v, "QUERY_STRING"), "q=1");
    assert_eq!(text(&v, "REMOTE_ADDR"), "127.0.0.1");
    assert_eq!(text(&v, "HTTP_X_THING"), "1, 2");
    assert_eq!(text(&v, "SERVER_PORT"), port.to_string());
    // Ten requests on one keep-alive connection: the two links are reused.
    let many: Vec<String> = (0..10).map(|_| url("length")).collect();
    let mut args = vec!["-s"];
    args.extend(many.iter().map(String::as_str));
    assert_eq!(curl(&args), "hello".repeat(10));
    let hails = events(&d, "h", "hail");
    assert_eq!(hails.len(), 24);
    assert_eq!(
        events(&d, "h", "moored").len(),
        2,
        "one docking link, one HTTP link"
    );
    // Six at once: a second link is opened (the bay said "threads": 2), no third; the
    // requests past two wait for a free link.
    let at_once: Vec<_> = (0..6)
        .map(|_| {
            let u = url("stream");
            std::thread::spawn(move || curl(&[&u]))
        })
        .collect();
    for t in at_once {
        assert_eq!(t.join().unwrap(), "one two three");
    }
    assert_eq!(
        events(&d, "h", "moored").len(),
        3,
        "one docking link, two HTTP links"
    );
    // No answer within response_timeout: 504, and the link is not reused.
    let r = curl(&["-i", &url("slow")]);
    assert!(r.starts_with("HTTP/1.1 504"), "{r}");
    assert_eq!(curl(&[&url("length")]), "hello");
    // A Reply for another request: a protocol error, the bay restarts.
    let r = curl(&["-i", &url("desync")]);
    assert!(r.starts_with("HTTP/1.1 502"), "{r}");
    assert!(
        wait_for(secs(15), || f.stderr().contains("restarting the bay")),
        "{}",
        f.stderr()
    );
    assert!(wait_for(secs(15), || curl(&[&url("length")]) == "hello"));
}

#[test]
fn an_http_bay_with_one_link_recovers_from_timeouts_early_answers_and_big_uploads() {
    let d = Dir::new("bays-http1");
    let m = marker("bays-http1");
    let port = free_port();
    let f = start(
        &d,
        port,
        "response_timeout = \"1s\"",
        &bay(&d, "h", 3, ", \"--threads\", \"1\"", "", &m),
        &["h"],
    );
    let url = |p: &str| format!("http://127.0.0.1:{port}/h/{p}");
    // The only link times out (504, closed) while another request waits for it: the
    // waiting one is served on a new link.
    let slow = {
        let u = url("slow");
        std::thread::spawn(move || curl(&["-i", &u]))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(curl(&[&url("length")]), "hello");
    assert!(slow.join().unwrap().starts_with("HTTP/1.1 504"));
    assert_eq!(curl(&[&url("length")]), "hello");
    // An answer before the request body was sent: passed on, the link is not reused.
    let big = "z".repeat(3 << 20);
    d.write("big", &big);
    let body = format!("@{}", d.join("big").display());
    let r = curl(&["-i", "--data-binary", &body, &url("early")]);
    assert!(r.contains("HTTP/1.1 413"), "{r}");
    assert_eq!(curl(&[&url("length")]), "hello");
    // A body larger than the link's bound, with Expect: 100-continue.
    let out = Command::new("curl")
        .args([
            "-s",
            "-v",
            "--max-time",
            "30",
            "--data-binary",
            &body,
            &url("echo"),
        ])
        .output()
        .unwrap();
    assert_eq!(out.stdout.len(), big.len());
    assert!(out.stdout == big.as_bytes());
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(verbose.contains("HTTP/1.1 100 Continue"), "{verbose}");
    assert!(events(&d, "h", "bad-body").is_empty());
    // HEAD gets the length GET would; HTTP/1.0 keep-alive is kept and said so.
    let r = curl(&["-I", &url("length")]);
    assert!(r.contains("content-length: 5"), "{r}");
    let r = curl(&[
        "-i",
        "--http1.0",
        "-H",
        "Connection: keep-alive",
        "-w",
        "%{num_connects}",
        &url("length"),
        &url("length"),
    ]);
    assert!(r.contains("connection: keep-alive"), "{r}");
    assert!(r.ends_with("hello0"), "one connection for both: {r}");
    // An Upgrade that is not WebSocket is plain HTTP.
    let r = curl(&[
        "-i",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: h2c",
        &url("length"),
    ]);
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A body longer than the bay's Content-Length: never passed on; the bay restarts.
    let r = curl(&[&url("liar")]);
    assert!(!r.contains("56789"), "{r}");
    assert!(
        wait_for(secs(15), || f.stderr().contains("not its Content-Length")),
        "{}",
        f.stderr()
    );
}

#[test]
fn a_bay_with_websocket_app_takes_the_upgraded_connection_over() {
    let d = Dir::new("bays-tunnel");
    let m = marker("bays-tunnel");
    let port = free_port();
    let f = start(
        &d,
        port,
        "",
        &bay(&d, "t", 3, "", "websocket = \"app\"", &m),
        &["t"],
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /t/cable HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}\n{}",
        f.stderr()
    );
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        head.contains("connection: upgrade\r\nupgrade: websocket\r\n"),
        "{head}"
    );
    // Raw bytes both ways through the app, then each end in turn.
    s.write_all(b"raw bytes").unwrap();
    let mut echo = [0u8; 9];
    s.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"RAW BYTES");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(s.read(&mut b).unwrap(), 0, "closed after both ends");
    assert!(wait_for(secs(5), || !events(&d, "t", "tunnel-end").is_empty()));
    let t = &events(&d, "t", "tunnel")[0];
    assert_eq!(text(t, "connection"), "Upgrade");
    assert!(events(&d, "t", "boarding").is_empty(), "not boarded");
    // The app ends first and closes its link: its last bytes reach the client, then
    // the end.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /t/cable HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\nbye").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(
        all.starts_with("HTTP/1.1 101") && all.ends_with("\r\n\r\nBYE"),
        "{all}"
    );
}

#[test]
fn bay_answers_are_compressed_as_proxied_ones_are() {
    let d = Dir::new("bays-gzip");
    let m = marker("bays-gzip");
    let port = free_port();
    std::fs::create_dir(d.join("www")).unwrap();
    let text = "a line of text that compresses well\n".repeat(200);
    d.write("www/big.txt", &text);
    let bays = format!(
        "[mothership]\ncompression = true\n{}",
        bay(&d, "h", 3, "", "", &m)
    );
    let _f = start(&d, port, "", &bays, &["h"]);
    let url = |p: &str| format!("http://127.0.0.1:{port}/h/{p}");
    let want: String = (0..3)
        .map(|i| format!("line {i} of some compressible text\n").repeat(60))
        .collect();
    let r = curl(&["-i", "-H", "Accept-Encoding: gzip", &url("text")]);
    assert!(r.contains("content-encoding: gzip"), "{r}");
    assert!(r.contains("vary: Cookie, Origin, Accept-Encoding"), "{r}");
    assert!(r.contains("etag: W/\"v1\""), "{r}");
    assert_eq!(curl(&["--compressed", &url("text")]), want);
    // Not asked for: as it came.
    let r = curl(&["-i", &url("text")]);
    assert!(!r.contains("content-encoding") && r.ends_with(&want), "{r}");
    assert!(
        r.contains("etag: \"v1\"") && r.contains("vary: Cookie, Origin\r\n"),
        "{r}"
    );
    // A file reply too.
    let r = curl(&[
        "-i",
        "-H",
        "Accept-Encoding: gzip",
        &format!("{}?www/big.txt", url("fileat")),
    ]);
    assert!(r.contains("content-encoding: gzip"), "{r}");
    assert_eq!(
        curl(&["--compressed", &format!("{}?www/big.txt", url("fileat"))]),
        text
    );
}

#[test]
fn a_version_1_bay_answers_plain_http_with_426() {
    let d = Dir::new("bays-426");
    let m = marker("bays-426");
    let port = free_port();
    let _f = start(&d, port, "", &bay(&d, "b", 1, "", "", &m), &["b"]);
    let head = curl(&["-s", "-i", &format!("http://127.0.0.1:{port}/b")]);
    assert!(head.starts_with("HTTP/1.1 426"), "{head}");
}
