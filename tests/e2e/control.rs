//! The control socket and `mothership status` (issue 18) against a live fleet.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use crate::cli::secs;
use crate::support::*;
use mothership::proto::json::{self, Value};

fn fleet(tag: &str, m: &str) -> (Dir, Fleet) {
    let d = Dir::new(tag);
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n[[fleet.app]]\nname = \"worker\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 1000; : {m}\"]\n[[fleet.jobs]]\nname = \"once\"\ncommand = \"true\"\noneshot = true\n"
        ),
    );
    let f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || d.join("sock/control.sock").exists()
            && f.stderr().contains("worker: up")),
        "{}",
        f.stderr()
    );
    (d, f)
}

#[test]
fn status_through_the_control_socket_as_a_table_and_as_json() {
    let m = marker("control-status");
    let (d, mut f) = fleet("control-status", &m);
    let sock = d.join("sock/control.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let (code, out, err) = run_in(&d.path, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json::parse(out.trim().as_bytes()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(
        v.get("state").and_then(Value::as_str),
        Some("running"),
        "{out}"
    );
    let Some(Value::Array(ps)) = v.get("programs") else {
        panic!("{out}")
    };
    let find = |n: &str| {
        ps.iter()
            .find(|p| p.get("name").and_then(Value::as_str) == Some(n))
            .unwrap_or_else(|| panic!("{n} in {out}"))
    };
    let worker = find("worker");
    assert_eq!(worker.get("state").and_then(Value::as_str), Some("running"));
    let pid = worker.get("pid").and_then(Value::as_u64).unwrap_or(0);
    assert!(
        pids_with(&m).contains(&(pid as i32)),
        "{pid} is the worker's"
    );
    assert_eq!(worker.get("restarts").and_then(Value::as_u64), Some(0));
    assert_eq!(
        find("once").get("state").and_then(Value::as_str),
        Some("done")
    );
    assert_eq!(
        find("once").get("last_exit").and_then(Value::as_str),
        Some("exit code 0"),
        "{out}"
    );
    assert_eq!(worker.get("last_exit"), Some(&Value::Null), "{out}");

    let (code, table, err) = run_in(&d.path, &["status"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("fleet running, up "), "{table}");
    assert!(
        lines[1].starts_with("NAME") && lines[1].ends_with("LAST EXIT"),
        "{table}"
    );
    let once = lines
        .iter()
        .find(|l| l.starts_with("once "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(once.ends_with("exit code 0"), "{once}");
    let row = lines
        .iter()
        .find(|l| l.starts_with("worker "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(&pid.to_string()) && row.contains("running"),
        "{row}"
    );
    // Its CPU time and resident memory, as `ps` would show them; none for a job done.
    let cell = |l: &str, col: &str| {
        let at = lines[1].find(col).unwrap_or(0);
        l[at..].split_whitespace().next().unwrap_or("").to_string()
    };
    let (cpu, rss) = (cell(row, "CPU"), cell(row, "MEM"));
    assert!(
        cpu.ends_with('s') && cpu[..cpu.len() - 1].parse::<f64>().is_ok(),
        "{table}"
    );
    assert!(
        rss.ends_with(['K', 'M']) && rss[..rss.len() - 1].parse::<f64>().is_ok_and(|n| n > 0.0),
        "{table}"
    );
    assert_eq!(
        (cell(once, "CPU"), cell(once, "MEM")),
        ("-".into(), "-".into())
    );
    // Columns line up: STATE begins at the same place on every line.
    let at = lines[1].find("STATE").unwrap_or(0);
    assert!(
        lines[2..]
            .iter()
            .all(|l| l[at..].starts_with(|c: char| c.is_ascii_lowercase())),
        "{table}"
    );

    // On a terminal (script(1) gives it one) the state is coloured, unless NO_COLOR.
    let on_tty = |no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &format!("{BIN} status"), "/dev/null"])
            .current_dir(&d.path)
            .env("MS_SOCKET_DIR", d.join("sock"))
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        let out = c.output().expect("script (util-linux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_tty(false);
    assert!(coloured.contains("\x1b[32mrunning\x1b[0m"), "{coloured:?}");
    let plain = on_tty(true);
    assert!(
        plain.contains("running") && !plain.contains('\x1b'),
        "{plain:?}"
    );

    // The protocol by hand: several requests on one connection, each answered by one
    // line; a bad request gets an error object and the connection goes on.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    s.write_all(b"{\"v\":1,\"cmd\":\"version\"}\nnot json\n{\"cmd\":\"fly\"}\n{\"v\":1,\"cmd\":\"status\"}\n").unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut answers = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        answers.push(
            json::parse(line.trim_end().as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}")),
        );
    }
    let ok: Vec<Option<&Value>> = answers.iter().map(|a| a.get("ok")).collect();
    let t = Some(&Value::Bool(true));
    let no = Some(&Value::Bool(false));
    assert_eq!(ok, vec![t, no, no, t]);
    assert!(answers[2]
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("")
        .contains("unknown command"));
    // A request line past the bound: an error, then the connection is closed.
    let mut s2 = UnixStream::connect(&sock).unwrap();
    s2.set_read_timeout(Some(secs(5))).unwrap();
    let _ = s2.write_all(&vec![b'x'; 70 << 10]);
    let mut got = String::new();
    let _ = BufReader::new(&s2).read_line(&mut got);
    assert!(got.contains("request over 64 KiB"), "{got}");

    // A second fleet with the same socket folder refuses to start.
    let d2 = Dir::new("control-second");
    d2.write(
        "ship-manifest.toml",
        "[[fleet.app]]\nname = \"x\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let mut second = Fleet::start_with(&d2, &[], |c| {
        c.env("MS_SOCKET_DIR", d.join("sock"));
    });
    assert_eq!(second.wait(secs(10)), Some(1), "{}", second.stderr());
    assert!(
        second.logged("another mothership is running"),
        "{}",
        second.stderr()
    );

    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(!sock.exists(), "the socket is removed at landing");
    // No fleet: exit status 4.
    let (code, _, err) = run_in(&d.path, &["status"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no fleet is running"), "{err}");
}

#[test]
fn a_stale_control_socket_is_replaced() {
    let d = Dir::new("control-stale");
    std::fs::create_dir(d.join("sock")).unwrap();
    std::fs::set_permissions(d.join("sock"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // A socket file whose listener is gone, as a killed mothership leaves it.
    drop(std::os::unix::net::UnixListener::bind(d.join("sock/control.sock")).unwrap());
    d.write(
        "ship-manifest.toml",
        "[[fleet.app]]\nname = \"x\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("x: up")),
        "{}",
        f.stderr()
    );
    let (code, out, err) = run_in(&d.path, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"name\":\"x\""), "{out}");
    assert_eq!(f.stop(secs(10)), Some(0));
}

#[test]
fn a_client_that_ends_its_side_still_gets_its_answers() {
    let m = marker("control-halfclose");
    let (d, mut f) = fleet("control-halfclose", &m);
    let mut s = UnixStream::connect(d.join("sock/control.sock")).unwrap();
    s.set_read_timeout(Some(secs(5))).unwrap();
    // Two requests, the last without its line feed, then the write side closed (as
    // `nc -N` and socat do).
    s.write_all(b"{\"cmd\":\"version\"}\n{\"cmd\":\"status\"}")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut s, &mut all).unwrap();
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 2, "{all}");
    assert!(
        lines[0].contains("\"version\"") && lines[1].contains("\"programs\""),
        "{all}"
    );
    // Many requests at once, read after they are all sent: every one is answered.
    let mut s = UnixStream::connect(d.join("sock/control.sock")).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    let burst = b"{\"cmd\":\"status\"}\n".repeat(2000);
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            w.write_all(&burst).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut all = String::new();
    std::io::Read::read_to_string(&mut s, &mut all).unwrap();
    writer.join().unwrap();
    assert_eq!(
        all.lines().filter(|l| l.contains("\"ok\":true")).count(),
        2000
    );
    assert_eq!(f.stop(secs(10)), Some(0));
}

/// Field `field` of program `name` in `status --json` (Null when missing).
fn field_of(d: &Dir, name: &str, field: &str) -> Value {
    let (_, out, _) = run_in(&d.path, &["status", "--json"]);
    let v = json::parse(out.trim().as_bytes()).unwrap_or(Value::Null);
    let Some(Value::Array(ps)) = v.get("programs") else {
        return Value::Null;
    };
    ps.iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get(field))
        .cloned()
        .unwrap_or(Value::Null)
}

/// The pid `status --json` gives `name` (0 when it has none).
fn pid_of(d: &Dir, name: &str) -> i64 {
    field_of(d, name, "pid").as_u64().map_or(0, |p| p as i64)
}

fn state_of(d: &Dir, name: &str) -> String {
    field_of(d, name, "state")
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn start_stop_restart_and_signal_through_the_socket() {
    let m = marker("control-verbs");
    let d = Dir::new("control-verbs");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[[fleet.app]]
name = "db"
command = "sh"
args = ["-c", "trap 'echo usr1 >> usr1' USR1; while :; do sleep 0.1; done; : {m}"]
[[fleet.app]]
name = "web"
command = "sh"
args = ["-c", "while :; do sleep 0.1; done; : {m}"]
depends_on = ["db"]
tags = ["front"]
[[fleet.other]]
name = "crashy"
command = "sh"
args = ["-c", "echo start >> crashy.starts; while [ ! -e crash-now ]; do sleep 0.1; done; rm -f crash-now; exit 1; : {m}"]
critical = false
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("web: up")
            && f.stderr().contains("crashy: up")),
        "{}",
        f.stderr()
    );

    // A subscriber to states sees what the restart below does.
    let sub = UnixStream::connect(d.join("sock/control.sock")).unwrap();
    sub.set_read_timeout(Some(secs(10))).unwrap();
    (&sub)
        .write_all(b"{\"cmd\":\"subscribe\",\"events\":[\"state\"]}\n")
        .unwrap();
    let mut events = BufReader::new(sub);
    let mut line = String::new();
    events.read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");

    // Restart everything: dependents stop before what they depend on, and start after.
    let (db0, web0) = (pid_of(&d, "db"), pid_of(&d, "web"));
    let (code, out, err) = run_in(&d.path, &["restart", "all"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "restarting: db, web, crashy");
    assert!(
        wait_for(secs(10), || {
            let (db, web) = (pid_of(&d, "db"), pid_of(&d, "web"));
            db > 0 && web > 0 && db != db0 && web != web0 && state_of(&d, "web") == "running"
        }),
        "{}",
        f.stderr()
    );
    // (Log lines reach the file through the output writer, a moment after.)
    let restarted = || {
        let log = f.stderr();
        log[log.find("restart asked").unwrap_or(0)..].contains("web: started")
    };
    assert!(wait_for(secs(5), restarted), "{}", f.stderr());
    let log = f.stderr();
    let after = &log[log.find("restart asked").unwrap_or(0)..];
    let at = |s: &str| after.find(s).unwrap_or_else(|| panic!("{s} in {after}"));
    assert!(at("web: stopping") < at("db: stopping"), "{after}");
    assert!(at("db: started") < at("web: started"), "{after}");

    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("\"name\":\"web\",\"state\":\"running\""))
    {
        line.clear();
        if events.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push(line.trim().to_string());
    }
    let pos = |s: &str| seen.iter().position(|l| l.contains(s));
    let web_stopping = pos("\"name\":\"web\",\"state\":\"stopping\"");
    let db_stopping = pos("\"name\":\"db\",\"state\":\"stopping\"");
    let web_running = pos("\"name\":\"web\",\"state\":\"running\"");
    assert!(
        web_stopping.is_some() && web_stopping < db_stopping && db_stopping < web_running,
        "{seen:#?}"
    );

    // A stopped program stays stopped across another's crash, and is not failed; a
    // critical program stopped does not land the fleet.
    let web = pid_of(&d, "web");
    let (code, out, err) = run_in(&d.path, &["stop", "tag:front"]);
    assert_eq!((code, out.trim()), (0, "stopping: web"), "{err}");
    assert!(wait_for(secs(10), || state_of(&d, "web") == "stopped"));
    assert!(!pids_with(&m).contains(&(web as i32)));
    let starts = d.read("crashy.starts").lines().count();
    d.write("crash-now", "");
    assert!(
        wait_for(secs(10), || d.read("crashy.starts").lines().count()
            > starts),
        "{}",
        f.stderr()
    );
    assert_eq!(state_of(&d, "web"), "stopped");
    assert_eq!(pid_of(&d, "web"), 0);
    let (_, table, _) = run_in(&d.path, &["status"]);
    assert!(table.starts_with("fleet running"), "{table}");

    // Start it again, waiting until it runs.
    let (code, out, err) = run_in(&d.path, &["start", "--wait", "web"]);
    assert_eq!((code, out.trim()), (0, "started: web"), "{err}");
    assert_eq!(state_of(&d, "web"), "running");
    assert!(pid_of(&d, "web") > 0);
    // --wait for a restart: a new process runs when it returns; for a stop: stopped.
    let before = pid_of(&d, "web");
    let (code, out, err) = run_in(&d.path, &["restart", "-w", "web"]);
    assert_eq!((code, out.trim()), (0, "restarted: web"), "{err}");
    let after = pid_of(&d, "web");
    assert!(after > 0 && after != before, "{before} -> {after}");
    let (code, out, err) = run_in(&d.path, &["stop", "-w", "web"]);
    assert_eq!((code, out.trim()), (0, "stopped: web"), "{err}");
    assert_eq!(state_of(&d, "web"), "stopped");
    let (code, _, err) = run_in(&d.path, &["restart", "-w", "--timeout", "10s", "web"]);
    assert_eq!(code, 0, "a stopped program restarted runs: {err}");
    assert_eq!(state_of(&d, "web"), "running");

    // A signal to a program's main process.
    let (code, out, err) = run_in(&d.path, &["signal", "db", "USR1"]);
    assert_eq!((code, out.trim()), (0, "signalled: db"), "{err}");
    assert!(wait_for(secs(5), || d.read("usr1").contains("usr1")));
    assert!(
        state_of(&d, "db") == "running",
        "USR1 is trapped: db runs on"
    );

    // Exit statuses: 3 for a name nothing has, 2 for a bad command line, 1 for a
    // signal nothing can receive or a bad signal.
    assert_eq!(run_in(&d.path, &["restart", "nope"]).0, 3);
    assert_eq!(run_in(&d.path, &["stop", "web", "nope"]).0, 3);
    assert_eq!(
        state_of(&d, "web"),
        "running",
        "nothing done when a name is wrong"
    );
    assert_eq!(run_in(&d.path, &["restart"]).0, 2);
    // A bad signal name is a usage error, as the fleet finds it.
    assert_eq!(run_in(&d.path, &["signal", "db", "NOSUCH"]).0, 2);
    // A signal by number.
    let (code, _, err) = run_in(&d.path, &["signal", "db", "10"]);
    assert_eq!(code, 0, "{err}");
    assert!(wait_for(secs(5), || d.read("usr1").lines().count() == 2));
    run_in(&d.path, &["stop", "crashy"]);
    assert!(wait_for(secs(10), || state_of(&d, "crashy") == "stopped"));
    let (code, _, err) = run_in(&d.path, &["signal", "crashy", "HUP"]);
    assert_eq!(code, 1);
    assert!(err.contains("none of them is running"), "{err}");

    assert_eq!(f.stop(secs(10)), Some(0), "{}", f.stderr());
    assert!(pids_with(&m).is_empty());
}

#[test]
fn logs_from_the_ring_with_grep_since_and_follow() {
    let m = marker("control-logs");
    let d = Dir::new("control-logs");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[[fleet.app]]
name = "gamma"
command = "sh"
args = ["-c", "echo gamma-stderr-line >&2; sleep 0.3; i=1; while [ $i -le 20 ]; do printf 'out-%03d\n' $i; i=$((i+1)); done; exec sleep 1000; : {m}"]
[[fleet.app]]
name = "delta"
command = "sh"
args = ["-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done; : {m}"]
[[fleet.app]]
name = "chatty"
command = "sh"
args = ["-c", "while [ ! -e go ]; do sleep 0.05; done; seq 1 300000; exec sleep 1000; : {m}"]
critical = false
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || run_in(&d.path, &["logs", "gamma", "-n", "1"])
            .1
            .contains("out-020")),
        "{}",
        f.stderr()
    );
    // The last lines, each with its time and stream; both streams by default.
    let (code, out, err) = run_in(&d.path, &["logs", "gamma", "-n", "5"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    for (k, l) in lines.iter().enumerate() {
        let want = format!(" out out-{:03}", 16 + k);
        assert!(l.ends_with(&want), "{l}");
        // 2026-12-02T14:26:42.552Z
        let t = l.split(' ').next().unwrap_or("");
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{l}"
        );
    }
    let (_, out, _) = run_in(&d.path, &["logs", "gamma"]);
    assert_eq!(out.lines().count(), 21, "{out}");
    assert!(out
        .lines()
        .next()
        .unwrap_or("")
        .ends_with(" err gamma-stderr-line"));
    let (_, out, _) = run_in(&d.path, &["logs", "gamma", "--grep", "out-01[0-2]"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    let (_, out, _) = run_in(&d.path, &["logs", "gamma", "--json", "-n", "1"]);
    let v = json::parse(out.trim().as_bytes()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v.get("text").and_then(Value::as_str), Some("out-020"));
    assert_eq!(v.get("stream").and_then(Value::as_str), Some("stdout"));
    assert_eq!(v.get("seq").and_then(Value::as_u64), Some(20));
    // --since: gamma has written nothing for a while.
    std::thread::sleep(secs(1));
    let (code, out, _) = run_in(&d.path, &["logs", "gamma", "--since", "500ms"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = run_in(&d.path, &["logs", "nope"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, _) = run_in(&d.path, &["logs", "gamma", "--since", "soon"]);
    assert_eq!(code, 2);
    let (code, _, err) = run_in(&d.path, &["logs", "gamma", "--grep", "("]);
    assert_eq!(code, 2);
    assert!(err.contains("grep"), "{err}");

    // -f follows: lines written after it began come, without a line twice.
    let follow = d.join("follow.out");
    let mut c = std::process::Command::new(BIN)
        .args(["logs", "delta", "-n", "1", "-f"])
        .current_dir(&d.path)
        .env("MS_SOCKET_DIR", d.join("sock"))
        .stdout(std::fs::File::create(&follow).unwrap())
        .spawn()
        .unwrap();
    let ticks = || -> Vec<u64> {
        std::fs::read_to_string(&follow)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit("tick-").next()?.parse().ok())
            .collect()
    };
    assert!(wait_for(secs(10), || ticks().len() >= 6), "{:?}", ticks());
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
    let t = ticks();
    assert!(t.windows(2).all(|w| w[1] == w[0] + 1), "{t:?}");

    // A follower that does not read is not buffered without bound: it is sent what fits,
    // then told how many lines it missed.
    let mut s = UnixStream::connect(d.join("sock/control.sock")).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    s.write_all(b"{\"v\":1,\"cmd\":\"subscribe\",\"events\":[\"log\"],\"names\":[\"chatty\"]}\n")
        .unwrap();
    let mut first = String::new();
    let mut r = BufReader::new(s.try_clone().unwrap());
    r.read_line(&mut first).unwrap();
    assert!(first.contains("\"ok\":true"), "{first}");
    d.write("go", "");
    assert!(wait_for(secs(20), || run_in(
        &d.path,
        &["logs", "chatty", "-n", "1"]
    )
    .1
    .contains("300000")));
    drop(s);
    let mut line = String::new();
    let mut gap = false;
    let mut read = 0usize;
    while read < (64 << 20) && !gap {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        read += line.len();
        gap = line.contains("\"event\":\"gap\"");
    }
    assert!(gap, "no gap reported after {read} bytes");
    let rss = proc_status_kib(f.pid(), "VmRSS:").unwrap_or(0);
    assert!(rss < 64 << 10, "{rss} KiB");
    drop(r);

    // A follower that ends its side after its request (as socat and nc -N do) still
    // gets the new lines.
    let mut s = UnixStream::connect(d.join("sock/control.sock")).unwrap();
    s.set_read_timeout(Some(secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"logs\",\"name\":\"delta\",\"lines\":0,\"follow\":true}\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut r = BufReader::new(s);
    let mut events = 0;
    let mut line = String::new();
    while events < 2 {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.contains("\"event\":\"log\"") && line.contains("tick-") {
            events += 1;
        }
    }
    assert_eq!(events, 2, "{line}");
    drop(r);

    // The fleet's landing ends a follower's command with status 0.
    let mut c = std::process::Command::new(BIN)
        .args(["logs", "delta", "-n", "0", "-f"])
        .current_dir(&d.path)
        .env("MS_SOCKET_DIR", d.join("sock"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(f.stop(secs(10)), Some(0));
    let status = c.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(pids_with(&m).is_empty());
}

/// Runs this build as the user nobody (group nogroup) with `args`, from a copy it may
/// execute; its exit status and output.
fn as_nobody(d: &Dir, args: &[&str]) -> (i32, String) {
    let bin = d.join("ms-other");
    if !bin.exists() {
        std::fs::copy(BIN, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    as_nobody_in(d, &bin.to_string_lossy(), args)
}

/// Runs `program` as the user nobody (group nogroup); its exit status and output.
fn as_nobody_in(d: &Dir, program: &str, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(program)
        .current_dir(&d.path)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("runuser (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Connections to the control socket held by the user nobody until dropped; `counts`
/// says how many were let in (`ok`) and how many refused as too many (`busy`).
struct Holder {
    child: std::process::Child,
    counts: String,
}

impl Holder {
    fn start(sock: &str, n: usize) -> Holder {
        use std::os::unix::process::CommandExt;
        const HOLD: &str = r#"
import json, socket, sys
ok = busy = 0
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sys.argv[1])
    try:
        s.sendall(b'{"cmd":"version"}\n')
    except OSError:
        pass  # refused: the reason is there to read all the same
    v = json.loads(s.makefile("rb").readline())
    if v.get("ok"):
        ok += 1
    elif v.get("code") == "busy":
        busy += 1
    held.append(s)
print(f"ok={ok} busy={busy}", flush=True)
sys.stdin.read()
"#;
        let mut child = std::process::Command::new("runuser")
            .args([
                "-u",
                "nobody",
                "--",
                "python3",
                "-c",
                HOLD,
                sock,
                &n.to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("runuser (util-linux)");
        let mut counts = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut counts);
        }
        Holder {
            child,
            counts: counts.trim().to_string(),
        }
    }
}

impl Drop for Holder {
    /// Its standard input closes: it lets the connections go and ends; killed with its
    /// group if it has not within 5 s.
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let ended = wait_for(secs(5), || matches!(self.child.try_wait(), Ok(Some(_))));
        if !ended {
            // SAFETY: kill of the helper's own process group.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

#[test]
fn another_user_is_refused_unless_in_the_control_group_and_then_as_it_allows() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs as root (it uses another uid through runuser), as CI does"
    );
    let m = marker("control-group");
    for (access, can_act) in [(None, false), (Some("read"), false), (Some("full"), true)] {
        let d = Dir::new("control-group");
        std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let group = match access {
            Some(a) => format!(
                "[mothership]\ncontrol_group = \"nogroup\"\ncontrol_group_access = \"{a}\"\n"
            ),
            None => String::new(),
        };
        d.write(
            "ship-manifest.toml",
            &format!("{group}[[fleet.app]]\nname = \"web\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo hi; exec sleep 1000; : {m}\"]\n"),
        );
        let mut f = Fleet::start(&d, &[]);
        assert!(
            wait_for(secs(10), || f.stderr().contains("web: up")),
            "{}",
            f.stderr()
        );
        let sock = d.join("sock/control.sock");
        let sock_s = sock.to_string_lossy().into_owned();
        let meta = std::fs::metadata(&sock).unwrap();
        if access.is_none() {
            assert_eq!(meta.permissions().mode() & 0o777, 0o600);
            // Even with the folder and the socket opened to all, the kernel's word on
            // the peer decides.
            std::fs::set_permissions(d.join("sock"), std::fs::Permissions::from_mode(0o711))
                .unwrap();
            std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
            let (code, out) = as_nobody(&d, &["status", "--socket", &sock_s]);
            assert!(
                code != 0 && out.contains("permission denied") && !out.contains("web"),
                "{code} {out}"
            );
            // The dashboard says so on the plain terminal, before it takes it (`script`
            // gives it one).
            let top = format!("{} top --socket {sock_s}", d.join("ms-other").display());
            let (code, out) = as_nobody_in(&d, "script", &["-qec", &top, "/dev/null"]);
            assert!(
                code == 1 && out.contains("permission denied") && !out.contains('\x1b'),
                "{code} {out:?}"
            );
        } else {
            // 0660, the group's; the folder 0710, the group's.
            assert_eq!(meta.permissions().mode() & 0o777, 0o660);
            assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), 65534);
            let dir = std::fs::metadata(d.join("sock")).unwrap();
            assert_eq!(dir.permissions().mode() & 0o777, 0o710);
            let (code, out) = as_nobody(&d, &["status", "--socket", &sock_s]);
            assert!(code == 0 && out.contains("web"), "{code} {out}");
            let (code, out) = as_nobody(&d, &["logs", "web", "--socket", &sock_s]);
            assert!(code == 0 && out.contains(" out hi"), "{code} {out}");
            let (code, out) = as_nobody(&d, &["restart", "web", "--socket", &sock_s]);
            if can_act {
                assert!(code == 0 && out.contains("restarting: web"), "{code} {out}");
            } else {
                assert!(code == 1 && out.contains("may only look"), "{code} {out}");
                // The group's members take at most 48 of the 64 places: the owner
                // still gets in while they hold all theirs.
                let hog = Holder::start(&sock_s, 60);
                assert_eq!(hog.counts, "ok=48 busy=12", "{}", f.stderr());
                let (code, out, err) = run_in(&d.path, &["status", "--socket", &sock_s]);
                assert!(code == 0 && out.contains("web"), "{code} {out} {err}");
            }
        }
        assert_eq!(f.stop(secs(10)), Some(0));
    }
    assert!(pids_with(&m).is_empty());
}

#[test]
fn a_control_group_that_cannot_be_given_the_socket_stops_the_launch() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs as root (it uses another uid through runuser), as CI does"
    );
    // nobody is not in the group root: it cannot give its socket folder to it.
    let m = marker("control-group-eperm");
    let d = Dir::new("control-group-eperm");
    std::fs::set_permissions(&d.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = d.join("nobody");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    d.write(
        "ship-manifest.toml",
        &format!("[mothership]\ncontrol_group = \"root\"\n[[fleet.app]]\nname = \"web\"\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000; : {m}\"]\n"),
    );
    let bin = d.join("ms-other");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .args(["-c", "ship-manifest.toml"])
        .current_dir(&d.path)
        .env("MS_SOCKET_DIR", home.join("sock"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("err")).unwrap())
        .spawn()
        .expect("runuser (util-linux)");
    let mut code = None;
    let ended = wait_for(secs(20), || {
        code = child.try_wait().ok().flatten().map(|s| s.code());
        code.is_some()
    });
    if !ended {
        // It launched after all: land it (TERM reaches mothership through runuser).
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let err = d.read("err");
    assert_eq!(code, Some(Some(1)), "{err}");
    assert!(
        err.contains("cannot give it to the control_group") && !err.contains("web: started"),
        "{err}"
    );
    assert!(pids_with(&m).is_empty());
}

#[test]
fn a_program_whose_dependency_failed_is_not_started_alone() {
    let m = marker("control-failed-dep");
    let d = Dir::new("control-failed-dep");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[[fleet.app]]
name = "db"
command = "sh"
args = ["-c", "[ -e fixed ] && exec sleep 1000; exit 3; : {m}"]
restart = "never"
critical = false
[[fleet.app]]
name = "web"
command = "sh"
args = ["-c", "exec sleep 1000; : {m}"]
depends_on = ["db"]
critical = false
[[fleet.other]]
name = "keep"
command = "sh"
args = ["-c", "exec sleep 1000; : {m}"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || state_of(&d, "web") == "failed"),
        "{}",
        f.stderr()
    );
    let (code, _, err) = run_in(&d.path, &["restart", "web"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("web depends on db, which has failed"), "{err}");
    // Both at once: db first, then web.
    d.write("fixed", "");
    let (code, _, err) = run_in(&d.path, &["restart", "db", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        wait_for(secs(10), || state_of(&d, "web") == "running"),
        "{}",
        f.stderr()
    );
    // A dependency the operator stopped: web would wait for it for ever.
    let (code, _, err) = run_in(&d.path, &["stop", "--wait", "db", "web"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run_in(&d.path, &["start", "web"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("web depends on db, which is stopped"), "{err}");
    assert_eq!(state_of(&d, "web"), "stopped");
    let (code, _, err) = run_in(&d.path, &["start", "--wait", "web", "db"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(state_of(&d, "web"), "running");
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(pids_with(&m).is_empty());
}
