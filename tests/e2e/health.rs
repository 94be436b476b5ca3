//! Health checks and readiness (issue 15) with real ships: a Python server whose health
//! answer is steered through a file (tests/e2e/health_ship.py).

use crate::cli::secs;
use crate::edge::metric;
use crate::proxy::curl;
use crate::support::*;

const SHIP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/health_ship.py");

/// A ship `name` on `port` behind health checks with `keys`, its state in `dir/name`.
fn ship(d: &Dir, name: &str, port: u16, extra_args: &str, keys: &str, m: &str) -> String {
    format!(
        "[[fleet.web]]\nname = \"{name}\"\ncommand = \"python3\"\nargs = [\"{SHIP}\", \"{port}\", \"{}\"{extra_args}, \"{m}\"]\nbind = \"127.0.0.1:{port}\"\n{keys}\n",
        d.join(name).display()
    )
}

fn lines(d: &Dir, file: &str) -> usize {
    std::fs::read_to_string(d.join(file))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn scrape(mp: u16) -> String {
    curl(&[&format!("http://127.0.0.1:{mp}/metrics")])
}

#[test]
fn an_unhealthy_ship_is_not_routed_to_until_it_passes_again() {
    let d = Dir::new("health-flip");
    let m = marker("health-flip");
    let (http, mp, port) = (free_port(), free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nmetrics_port = {mp}\n[mothership.bind]\nhttp = \"127.0.0.1:{http}\"\n{}",
            ship(
                &d,
                "app",
                port,
                "",
                "healthcheck = \"/health\"\nhealth_interval = \"200ms\"\nhealth_fails = 2\nunhealthy_restart = \"never\"\nroutes = [\"http:/.*\"]",
                &m
            )
        ),
    );
    let mut fleet = Fleet::start(&d, &[]);
    let healthy = |v: f64| {
        let text = scrape(mp);
        metric(&text, "mothership_ship_healthy{ship=\"app\",group=\"web\"}") == Some(v)
    };
    let url = format!("http://127.0.0.1:{http}/x");
    assert!(wait_for(secs(10), || healthy(1.0)), "{}", fleet.stderr());
    assert_eq!(curl(&[&url]), "ok\n");

    d.write("app/health", "500");
    assert!(wait_for(secs(5), || healthy(0.0)), "{}", fleet.stderr());
    let before = lines(&d, "app/requests");
    let r = curl(&["-i", &url]);
    assert!(r.starts_with("HTTP/1.1 503"), "{r}");
    assert_eq!(
        lines(&d, "app/requests"),
        before,
        "the unhealthy ship got it"
    );
    let text = scrape(mp);
    let failed = metric(
        &text,
        "mothership_health_check_failures_total{ship=\"app\",group=\"web\",reason=\"status\"}",
    );
    assert!(failed.is_some_and(|n| n >= 2.0), "{text}");
    assert!(text.contains("mothership_health_check_duration_seconds_count{ship=\"app\""));
    // A critical ship unhealthy: the fleet is in mayday until it recovers.
    assert_eq!(
        metric(&text, "mothership_fleet_state{state=\"mayday\"}"),
        Some(1.0),
        "{text}"
    );

    d.write("app/health", "200");
    assert!(wait_for(secs(5), || healthy(1.0)), "{}", fleet.stderr());
    assert!(wait_for(secs(5), || curl(&[&url]) == "ok\n"));
    let text = scrape(mp);
    assert_eq!(
        metric(&text, "mothership_fleet_state{state=\"running\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(lines(&d, "app/pid"), 1, "unhealthy_restart = never");
    fleet.stop(secs(10));
    let log = fleet.stderr();
    assert!(log.contains("app: unhealthy: GET /health at "), "{log}");
    assert!(
        log.contains("app: healthy (1 check(s) passed in a row)"),
        "{log}"
    );
    assert!(
        log.contains("fleet state: mayday (critical app is unhealthy)"),
        "{log}"
    );
    assert!(
        log.contains("fleet state: running (every critical program is up and healthy)"),
        "{log}"
    );
}

#[test]
fn dependents_wait_for_the_first_passing_check() {
    let d = Dir::new("health-deps");
    let m = marker("health-deps");
    let port = free_port();
    let after = d.join("after");
    d.write(
        "ship-manifest.toml",
        &format!(
            "{}[[fleet.jobs]]\nname = \"after\"\ncommand = \"sh\"\nargs = [\"-c\", \"python3 -c 'import time; print(time.time_ns())' > {}; sleep 100 # {m}\"]\ndepends_on = [\"slow\"]\n",
            ship(&d, "slow", port, ", \"1.0\"", "healthcheck = \"/health\"\nhealth_interval = \"200ms\"", &m),
            after.display()
        ),
    );
    let _fleet = Fleet::start(&d, &[]);
    assert!(wait_for(secs(15), || d.read("after").trim().len() > 5));
    let first: u128 = d
        .read("slow/first-pass")
        .trim()
        .parse()
        .expect("first pass");
    let started: u128 = d.read("after").trim().parse().expect("after");
    assert!(
        started >= first,
        "the dependent started {} ms before the first passing check",
        (first - started) / 1_000_000
    );
}

#[test]
fn a_ship_never_ready_fails_its_start_and_one_unhealthy_too_long_is_restarted() {
    let d = Dir::new("health-restart");
    let m = marker("health-restart");
    let (p1, p2) = (free_port(), free_port());
    std::fs::create_dir_all(d.join("never")).expect("state folder");
    d.write("never/health", "500");
    d.write(
        "ship-manifest.toml",
        &format!(
            "{}{}",
            ship(&d, "never", p1, "", "healthcheck = \"/health\"\nhealth_interval = \"100ms\"\nready_timeout = \"1s\"\ncritical = false", &m),
            ship(&d, "sick", p2, "", "healthcheck = \"/health\"\nhealth_interval = \"100ms\"\nhealth_fails = 1\nunhealthy_restart = \"500ms\"\ncritical = false", &m),
        ),
    );
    let mut fleet = Fleet::start(&d, &[]);
    // Not ready within a second: stopped and started again, as after a crash.
    assert!(
        wait_for(secs(15), || lines(&d, "never/pid") >= 2),
        "{}",
        fleet.stderr()
    );
    assert!(wait_for(secs(10), || lines(&d, "sick/pid") == 1));
    assert!(wait_for(secs(10), || fleet
        .stderr()
        .contains("sick: up (ready after")));
    d.write("sick/health", "503");
    assert!(
        wait_for(secs(10), || lines(&d, "sick/pid") >= 2),
        "{}",
        fleet.stderr()
    );
    fleet.stop(secs(10));
    let log = fleet.stderr();
    assert!(
        log.contains("never: not ready within its ready_timeout (1s)"),
        "{log}"
    );
    assert!(
        log.contains("sick: unhealthy for longer than unhealthy_restart"),
        "{log}"
    );
    assert!(log.contains("sick: restarting in"), "{log}");
}

/// A minimal HTTP server on `port` in a thread of the test: answers `200 ok` to every
/// connection and counts them, until `stop` is set.
fn counting_server(
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
    l.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    hits.fetch_add(1, Ordering::Relaxed);
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(2)));
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    );
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    })
}

#[test]
fn a_breaker_opens_on_a_refusing_backend_answers_503_without_it_and_closes_again() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let d = Dir::new("breaker");
    let m = marker("breaker");
    let (http, mp, port) = (free_port(), free_port(), free_port());
    // The ship runs but does not listen: its port refuses until the test listens there.
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nmetrics_port = {mp}\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ breaker_failures = 3, breaker_window = \"30s\", breaker_cooldown = \"2s\" }}\n[[fleet.web]]\nname = \"b\"\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000 # {m}\"]\nbind = \"127.0.0.1:{port}\"\nready = \"100ms\"\nroutes = [\"http:/\"]\n"
        ),
    );
    let mut fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || fleet.stderr().contains("b: up")),
        "{}",
        fleet.stderr()
    );
    let url = format!("http://127.0.0.1:{http}/");
    let status = |r: &str| r.split(' ').nth(1).unwrap_or("").to_string();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = curl(&["-i", &url]);
        let open = r.starts_with("HTTP/1.1 503") && r.to_ascii_lowercase().contains("retry-after:");
        seen.push(status(&r));
        if open {
            break;
        }
    }
    assert_eq!(seen, ["502", "502", "502", "503"], "{}", fleet.stderr());

    // The backend listens again: while the breaker is open, it is not asked.
    let (hits, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let server = counting_server(port, hits.clone(), stop.clone());
    let mut refused = 0;
    for _ in 0..3 {
        let r = curl(&["-i", &url]);
        if r.starts_with("HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        3 - refused,
        "only requests not refused reached the backend"
    );
    // After the cool-down a trial goes through and closes it.
    assert!(
        wait_for(secs(15), || curl(&[&url]) == "ok\n"),
        "{}",
        fleet.stderr()
    );
    for _ in 0..5 {
        assert_eq!(curl(&[&url]), "ok\n");
    }
    let text = scrape(mp);
    assert_eq!(
        metric(
            &text,
            "mothership_breaker_state{ship=\"b\",state=\"closed\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "mothership_breaker_transitions_total{ship=\"b\",to=\"open\"}"
        ),
        Some(1.0),
        "{text}"
    );
    fleet.stop(secs(10));
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let log = fleet.stderr();
    assert!(log.contains("b: circuit breaker open ("), "{log}");
    assert!(log.contains("b: circuit breaker half-open"), "{log}");
    assert!(
        log.contains("b: circuit breaker closed (the trial request was answered)"),
        "{log}"
    );
}

/// A line of `d/file`: a time in nanoseconds.
fn stamp(d: &Dir, file: &str) -> u128 {
    d.read(file)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{file}: no time"))
}

#[test]
fn readiness_from_a_descriptor_and_from_a_log_line_and_mothership_tells_its_own_supervisor() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;
    use std::os::unix::process::CommandExt;
    let d = Dir::new("ready");
    let m = marker("ready");
    let t = |f: &str| d.join(f).display().to_string();
    let job = |name: &str, script: &str, ready: &str| {
        format!("[[fleet.r]]\nname = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", \"{script} # {m}\"]\nready = \"{ready}\"\n")
    };
    let after = |name: &str, dep: &str| {
        format!(
            "[[fleet.r]]\nname = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", \"date +%s%N > {}; exec sleep 1000 # {m}\"]\ndepends_on = [\"{dep}\"]\n",
            t(name)
        )
    };
    d.write(
        "ship-manifest.toml",
        &format!(
            "{}{}{}{}",
            job(
                "fd3",
                &format!(
                    "sleep 0.5; date +%s%N > {}; echo >&3; exec sleep 1000",
                    t("fd3")
                ),
                "fd:3"
            ),
            after("after-fd3", "fd3"),
            job(
                "logger",
                &format!(
                    "sleep 0.5; date +%s%N > {}; echo listening on port 4242; exec sleep 1000",
                    t("logger")
                ),
                "log:listening on port [0-9]+"
            ),
            after("after-log", "logger"),
        ),
    );
    let sock_path = d.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(secs(20))).expect("timeout");
    let (r, w) = mothership::supervisor::spawn::cloexec_pipe().expect("pipe");
    let mut r = std::fs::File::from(r);
    let w_fd = w.as_raw_fd();
    let mut fleet = Fleet::start_with(&d, &["--notify-fd", "5"], |c| {
        c.env("NOTIFY_SOCKET", &sock_path);
        // SAFETY: dup2 or fcntl only, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                // (dup2 onto itself would leave close-on-exec set.)
                let r = if w_fd == 5 {
                    libc::fcntl(5, libc::F_SETFD, 0)
                } else {
                    libc::dup2(w_fd, 5)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    drop(w);
    let mut buf = [0u8; 512];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("READY=1: {e}\n{}", fleet.stderr()));
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        ready.starts_with("READY=1\nSTATUS=running: 4 up"),
        "{ready}\n{}",
        fleet.stderr()
    );
    let mut fd_text = String::new();
    r.read_to_string(&mut fd_text).expect("notify fd");
    assert_eq!(fd_text, "\n", "one newline, then closed");
    assert!(
        stamp(&d, "after-fd3") >= stamp(&d, "fd3"),
        "{}",
        fleet.stderr()
    );
    assert!(
        stamp(&d, "after-log") >= stamp(&d, "logger"),
        "{}",
        fleet.stderr()
    );
    fleet.stop(secs(10));
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    let stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=landing: "),
        "{stopping}"
    );
    let log = fleet.stderr();
    assert!(log.contains("fd3: up (ready after"), "{log}");
    assert!(log.contains("logger: up (ready after"), "{log}");
}

#[test]
fn a_notify_program_is_ready_on_ready_1_and_restarted_when_its_watchdog_stops() {
    const CHILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/notify_child.py");
    let d = Dir::new("notify");
    let m = marker("notify");
    let t = |f: &str| d.join(f).display().to_string();
    let sockets = d.join("sockets");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.n]]\nname = \"notifier\"\ncommand = \"python3\"\nargs = [\"{CHILD}\", \"{}\", \"0.5\", \"{m}\"]\nready = \"notify\"\n\
             [[fleet.n]]\nname = \"after\"\ncommand = \"sh\"\nargs = [\"-c\", \"date +%s%N > {}; exec sleep 1000 # {m}\"]\ndepends_on = [\"notifier\"]\n\
             [[fleet.n]]\nname = \"hangs\"\ncommand = \"python3\"\nargs = [\"{CHILD}\", \"{}\", \"0\", \"3\", \"{m}\"]\nready = \"notify\"\nwatchdog = \"1s\"\ncritical = false\n",
            t("notifier"),
            t("after"),
            t("hangs"),
        ),
    );
    let mut fleet = Fleet::start_with(&d, &[], |c| {
        c.env("MS_SOCKET_DIR", &sockets);
    });
    assert!(
        wait_for(secs(15), || d.read("after").trim().len() > 5),
        "{}",
        fleet.stderr()
    );
    assert!(
        stamp(&d, "after") >= stamp(&d, "notifier"),
        "{}",
        fleet.stderr()
    );
    // Three pings, then silence: restarted a second after the last.
    assert!(
        wait_for(secs(15), || d.read("hangs.pid").lines().count() >= 2),
        "{}",
        fleet.stderr()
    );
    fleet.stop(secs(10));
    let log = fleet.stderr();
    assert!(log.contains("notifier: up (ready after"), "{log}");
    assert!(
        log.contains("hangs: no WATCHDOG=1 within 1s; restarting it, counted as a crash"),
        "{log}"
    );
    assert!(
        !sockets.join("notifier.notify").exists(),
        "the socket is removed"
    );
}

#[test]
fn exec_checks_decide_by_exit_status_and_one_that_hangs_is_killed_at_its_timeout() {
    let d = Dir::new("exec-check");
    let m = marker("exec-check");
    let hang = format!("{m}-hang");
    let flag = d.join("ok");
    d.write("ok", "");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nmetrics_port = {mp}\n\
             [[fleet.w]]\nname = \"ex\"\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000 # {m}\"]\nhealthcheck = \"exec:test -e {flag}\"\nhealth_interval = \"100ms\"\nhealth_fails = 1\nunhealthy_restart = \"never\"\n\
             [[fleet.w]]\nname = \"hangs\"\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000 # {m}\"]\nhealthcheck = \"exec:sh -c 'sleep 30 # {hang}'\"\nhealth_interval = \"100ms\"\nhealth_timeout = \"300ms\"\ncritical = false\n",
            mp = free_port(),
            flag = flag.display(),
        ),
    );
    let mut fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || fleet.stderr().contains("ex: up (ready after")),
        "{}",
        fleet.stderr()
    );
    std::fs::remove_file(&flag).expect("rm");
    assert!(
        wait_for(secs(10), || fleet
            .stderr()
            .contains("ex: unhealthy: run test -e")),
        "{}",
        fleet.stderr()
    );
    // The hanging check is killed at each timeout: never more than one at a time.
    assert!(wait_for(secs(10), || !pids_with(&hang).is_empty()));
    for _ in 0..20 {
        assert!(pids_with(&hang).len() <= 1, "{:?}", pids_with(&hang));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fleet.stop(secs(10));
    assert!(
        wait_for(secs(5), || pids_with(&hang).is_empty()),
        "a check command is left"
    );
    let log = fleet.stderr();
    assert!(log.contains("ex: unhealthy: run test -e"), "{log}");
    assert!(log.contains("exit code 1"), "{log}");
}

#[test]
fn maxconn_keeps_a_backend_to_its_limit_and_every_request_in_line_is_answered() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let d = Dir::new("maxconn");
    let m = marker("maxconn");
    let (http, mp, port) = (free_port(), free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nmetrics_port = {mp}\nbind = {{ http = \"127.0.0.1:{http}\" }}\nhttp = {{ request_start_header = true }}\n[[fleet.web]]\nname = \"slow\"\ncommand = \"sh\"\nargs = [\"-c\", \"exec sleep 1000 # {m}\"]\nbind = \"127.0.0.1:{port}\"\nready = \"100ms\"\nmaxconn = 2\nroutes = [\"http:/\"]\n"
        ),
    );
    // The backend: answers each request after 200 ms, counting requests at once.
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let starts = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("listen");
    l.set_nonblocking(true).expect("nonblocking");
    let server = {
        let (now, most, starts, stop) = (now.clone(), most.clone(), starts.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut workers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut s, _)) = l.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    continue;
                };
                let (now, most, starts) = (now.clone(), most.clone(), starts.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(at_once, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if let Some(l) = text.lines().find(|l| l.starts_with("x-request-start:")) {
                        starts.lock().expect("lock").push(l.to_string());
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                    );
                }));
            }
            for w in workers {
                let _ = w.join();
            }
        })
    };
    let fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || fleet.stderr().contains("slow: up")),
        "{}",
        fleet.stderr()
    );
    let clients: Vec<_> = (0..20)
        .map(|i| {
            std::thread::spawn(move || {
                crate::proxy::raw(
                    http,
                    format!("GET /r{i} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )
            })
        })
        .collect();
    let answers: Vec<String> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let ok = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    assert_eq!(ok, 20, "{answers:?}\n{}", fleet.stderr());
    assert!(
        most.load(Ordering::SeqCst) <= 2,
        "the backend saw {} at once",
        most.load(Ordering::SeqCst)
    );
    let text = scrape(mp);
    let waited = metric(
        &text,
        "mothership_backend_queue_wait_seconds_count{ship=\"slow\"}",
    );
    assert!(waited.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(
        metric(&text, "mothership_backend_queue_length{ship=\"slow\"}"),
        Some(0.0)
    );
    // Pipelined requests: each exchange gives its slot back, whatever follows it.
    for _ in 0..3 {
        let two = crate::proxy::raw(
            http,
            b"GET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(two.matches("HTTP/1.1 200").count(), 2, "{two}");
    }
    let active = || {
        metric(
            &scrape(mp),
            "mothership_backend_active_requests{ship=\"slow\"}",
        )
    };
    assert!(
        wait_for(secs(5), || active() == Some(0.0)),
        "{:?}",
        active()
    );
    stop.store(true, Ordering::Relaxed);
    let _ = server.join();
    let starts = starts.lock().expect("lock").clone();
    assert_eq!(starts.len(), 26, "{starts:?}");
    assert!(
        starts
            .iter()
            .all(|l| l.trim_start_matches("x-request-start: t=").trim().len() >= 16),
        "{starts:?}"
    );
}
