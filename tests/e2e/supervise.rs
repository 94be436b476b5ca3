//! Supervision with real processes: order, restarts, failures, signals, landing.

use std::time::{Duration, Instant};

use crate::cli::secs;
use crate::support::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn dependencies_start_in_order_and_wait_for_the_bind() {
    let d = Dir::new("order");
    let port = free_port();
    let log = d.join("log");
    let log = log.display();
    // db only listens after 1 s; web must not start before that.
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[fleet.web]]
name = "web"
command = "sh"
args = ["-c", "echo web $(date +%s%N) >> {log}; exec sleep 1000"]
depends_on = ["db", "cache"]
[[fleet.data]]
name = "db"
command = "python3"
args = ["-c", "import socket,time,os; time.sleep(1); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',{port})); s.listen(); open('{log}','a').write('db-listening %d\\n' % time.time_ns()); time.sleep(1000)"]
bind = "127.0.0.1:{port}"
[[fleet.data]]
name = "cache"
command = "sh"
args = ["-c", "echo cache $(date +%s%N) >> {log}; exec sleep 1000"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || d.read("log").contains("web ")),
        "{}",
        f.stderr()
    );
    let text = d.read("log");
    let time_of = |what: &str| -> u128 {
        text.lines()
            .find(|l| l.starts_with(what))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(time_of("web") > time_of("db-listening"), "{text}");
    assert!(time_of("web") > time_of("cache"), "{text}");
    assert!(f.logged("web: waiting for db, cache"), "{}", f.stderr());
    assert!(f.logged("db: up (accepting connections"), "{}", f.stderr());
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));
    // Landing goes in reverse: web is stopped before db and cache.
    let err = f.stderr();
    let pos = |s: &str| {
        err.find(s)
            .unwrap_or_else(|| panic!("{s} missing in {err}"))
    };
    assert!(pos("web: stopped") < pos("db: stopping"), "{err}");
    assert!(pos("web: stopped") < pos("cache: stopping"), "{err}");
}

#[test]
fn crashing_worker_is_restarted_with_backoff() {
    let d = Dir::new("backoff");
    let starts = d.join("starts");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.w]]\nname = \"crasher\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo x >> {}; exit 1\"]\ncritical = false\n[[fleet.w]]\nname = \"steady\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
            starts.display()
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    std::thread::sleep(ms(3000));
    let n = d.read("starts").lines().count();
    // 0, ~0.1, ~0.3, ~0.7, ~1.5, ~3.1 s: about 6 starts; jitter allows 4..8.
    assert!((4..=8).contains(&n), "{n} starts in 3 s\n{}", f.stderr());
    assert!(
        f.wait(ms(10)).is_none(),
        "a non-critical crash loop must not land the fleet"
    );
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));
    assert!(f.logged("crasher: restarting in"), "{}", f.stderr());
}

#[test]
fn critical_crash_loop_lands_with_exit_1() {
    let d = Dir::new("critical");
    d.write(
        "ship-manifest.toml",
        "[[fleet.w]]\nname = \"doomed\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 3\"]\ncrash_limit = 3\n[[fleet.w]]\nname = \"bystander\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(20)), Some(1), "{}", f.stderr());
    let err = f.stderr();
    assert!(
        err.contains("doomed: crashed 3 times within 60s; giving up"),
        "{err}"
    );
    assert!(err.contains("bystander: stopping"), "{err}");
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("failed: critical ship `doomed` crashed 3 times"),
        "{err}"
    );
}

#[test]
fn oneshot_jobs_critical_and_not() {
    let d = Dir::new("oneshot");
    d.write(
        "ship-manifest.toml",
        r#"
[[fleet.jobs]]
name = "soft"
command = "sh -c 'exit 5'"
oneshot = true
critical = false
[[fleet.jobs]]
name = "ok"
command = "true"
oneshot = true
[[fleet.web]]
name = "after-ok"
command = "sleep 1000"
depends_on = ["ok"]
"#,
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(5), || f.stderr().contains("after-ok: started")),
        "{}",
        f.stderr()
    );
    assert!(
        f.wait(ms(600)).is_none(),
        "a non-critical job failure must not land the fleet"
    );
    assert!(f.logged("soft: failed (exit code 5)"));
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));

    let d = Dir::new("oneshot-crit");
    d.write(
        "ship-manifest.toml",
        "[[fleet.jobs]]\nname = \"must\"\ncommand = \"sh -c 'exit 7'\"\noneshot = true\n[[fleet.web]]\nname = \"app\"\ncommand = \"sleep 1000\"\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(1), "{}", f.stderr());
    assert!(
        f.logged("failed: critical job `must` failed (exit code 7)"),
        "{}",
        f.stderr()
    );
}

#[test]
fn only_jobs_fleet_lands_when_everything_ended() {
    let d = Dir::new("alldone");
    d.write("ship-manifest.toml", "[[fleet.j]]\nname = \"a\"\ncommand = \"true\"\noneshot = true\n[[fleet.j]]\nname = \"b\"\ncommand = \"echo b\"\noneshot = true\n");
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
    assert!(
        f.logged("landed: every program has ended"),
        "{}",
        f.stderr()
    );
    assert!(f.stdout().contains("b          | b"), "{}", f.stdout());
}

#[test]
fn prelaunch_runs_in_order_and_failure_aborts_the_launch() {
    let d = Dir::new("prelaunch");
    let log = d.join("log");
    let log = log.display();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[mothership.prelaunch]]
name = "second"
command = "sh"
args = ["-c", "echo second >> {log}"]
depends_on = ["first"]
[[mothership.prelaunch]]
name = "first"
command = "sh"
args = ["-c", "sleep 0.3; echo first >> {log}"]
[[fleet.web]]
name = "app"
command = "sh"
args = ["-c", "echo app >> {log}; exec sleep 1000"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || d.read("log").contains("app")),
        "{}",
        f.stderr()
    );
    assert_eq!(d.read("log"), "first\nsecond\napp\n");
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));

    let d = Dir::new("prelaunch-fail");
    let marker = d.join("app-started");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[mothership.prelaunch]]\nname = \"migrate\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo migrating; exit 4\"]\n[[fleet.web]]\nname = \"app\"\ncommand = \"touch\"\nargs = [\"{}\"]\n",
            marker.display()
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(1), "{}", f.stderr());
    std::thread::sleep(ms(300));
    assert!(
        !marker.exists(),
        "no ship may start after a prelaunch failure"
    );
    assert!(
        f.stdout().contains("migrate    | migrating"),
        "{}",
        f.stdout()
    );
    assert!(
        f.logged("failed: critical job `migrate` failed (exit code 4)"),
        "{}",
        f.stderr()
    );
}

#[test]
fn signal_during_prelaunch_is_honoured_at_once() {
    let d = Dir::new("pre-signal");
    let m = marker("pre");
    d.write(
        "ship-manifest.toml",
        &format!("[[mothership.prelaunch]]\nname = \"slow\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 30 # {m}\"]\n[[fleet.web]]\nname = \"app\"\ncommand = \"sleep 1000\"\n"),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(5), || !pids_with(&m).is_empty()));
    let t0 = Instant::now();
    f.signal(libc::SIGINT);
    assert_eq!(f.wait(secs(5)), Some(0), "{}", f.stderr());
    assert!(t0.elapsed() < secs(3));
    assert!(!f.stderr().contains("app: started"), "{}", f.stderr());
    assert!(wait_for(secs(2), || pids_with(&m).is_empty()));
}

#[test]
fn term_reaches_children_and_grandchildren_and_landing_is_immediate() {
    let d = Dir::new("term");
    let m = marker("term");
    let out = d.join("term");
    let out = out.display();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[fleet.web]]
name = "web"
command = "sh"
args = ["-c", "trap 'echo web >> {out}; exit 0' TERM; sh -c 'trap \"echo grandchild >> {out}; exit 0\" TERM; while :; do sleep 0.05; done # {m}' & while :; do sleep 0.05; done # {m}"]
[[fleet.web]]
name = "db"
command = "sh"
args = ["-c", "trap 'echo db >> {out}; exit 0' TERM; while :; do sleep 0.05; done # {m}"]
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(5), || pids_with(&m).len() >= 3),
        "{}",
        f.stderr()
    );
    std::thread::sleep(ms(700));
    let t0 = Instant::now();
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
    let took = t0.elapsed();
    assert!(
        took < secs(2),
        "landing took {took:?} although every child exits at once"
    );
    let got = d.read("term");
    for who in ["web", "grandchild", "db"] {
        assert!(
            got.lines().any(|l| l == who),
            "{who} did not get TERM: {got:?}"
        );
    }
    assert!(pids_with(&m).is_empty(), "left behind: {:?}", pids_with(&m));
}

#[test]
fn child_ignoring_term_is_killed_after_grace_period() {
    let d = Dir::new("grace");
    let m = marker("grace");
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.web]]\nname = \"stubborn\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap '' TERM; while :; do sleep 0.05; done # {m}\"]\ngrace_period = \"800ms\"\nstop_signal = \"SIGTERM\"\n"),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(5), || !pids_with(&m).is_empty()));
    std::thread::sleep(ms(300));
    let t0 = Instant::now();
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
    let took = t0.elapsed();
    assert!(took >= ms(750), "killed before the grace period: {took:?}");
    assert!(pids_with(&m).is_empty(), "left behind: {:?}", pids_with(&m));
    assert!(
        f.logged("still running after the 800ms grace period; sending SIGKILL"),
        "{}",
        f.stderr()
    );
}

#[test]
fn custom_stop_signal_is_used() {
    let d = Dir::new("stopsig");
    let out = d.join("got");
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.web]]\nname = \"w\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap 'echo INT > {}; exit 0' INT; while :; do sleep 0.05; done\"]\nstop_signal = \"INT\"\n", out.display()),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(5), || f.stderr().contains("w: up")));
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));
    assert_eq!(d.read("got"), "INT\n");
}

#[test]
fn second_signal_kills_everything_at_once() {
    let d = Dir::new("second");
    let m = marker("second");
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.web]]\nname = \"stubborn\"\ncommand = \"sh\"\nargs = [\"-c\", \"trap '' TERM INT; while :; do sleep 0.05; done # {m}\"]\ngrace_period = \"60s\"\n"),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(5), || f.stderr().contains("stubborn: up")));
    f.signal(libc::SIGTERM);
    assert!(wait_for(secs(5), || f
        .stderr()
        .contains("stubborn: stopping")));
    let t0 = Instant::now();
    f.signal(libc::SIGINT);
    assert_eq!(f.wait(secs(5)), Some(0), "{}", f.stderr());
    assert!(t0.elapsed() < secs(2));
    assert!(
        f.logged("received SIGINT again: killing every process now"),
        "{}",
        f.stderr()
    );
    assert!(pids_with(&m).is_empty());
}

#[test]
fn sighup_and_usr1_change_nothing() {
    let d = Dir::new("hup");
    let starts = d.join("starts");
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.web]]\nname = \"w\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo x >> {}; exec sleep 1000\"]\n", starts.display()),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(5), || f.stderr().contains("w: up")));
    f.signal(libc::SIGHUP);
    f.signal(libc::SIGUSR1);
    // USR1 reopens the log files (this fleet has none); the status is `mothership status`.
    assert!(
        wait_for(secs(5), || f
            .stderr()
            .contains("asked to reopen the log files: this fleet has none")),
        "{}",
        f.stderr()
    );
    assert!(f.wait(ms(500)).is_none(), "SIGHUP must not kill mothership");
    assert!(f.logged("received SIGHUP: reloading the manifest is not available yet"));
    assert_eq!(
        d.read("starts").lines().count(),
        1,
        "nothing may restart on SIGHUP"
    );
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));
}

#[test]
fn children_get_the_documented_environment() {
    let d = Dir::new("env");
    let out = d.join("env");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership]
env = {{ SHARED = "from-mothership", OVERRIDE = "mothership", EXPANDED = "${{MS_E2E_VAR:-fallback}}-$MS_E2E_SET" }}
[base.bay]
env = {{ FROM_BASE = "base" }}
[[bays.chat]]
name = "chatbay"
command = "sh"
args = ["-c", "env | sort > {out}; exec sleep 1000"]
env = {{ OVERRIDE = "ship" }}
cwd = "sub"
"#,
            out = out.display()
        ),
    );
    std::fs::create_dir(d.join("sub")).unwrap();
    let sock = d.join("sockets");
    let mut f = Fleet::start_with(&d, &[], |c| {
        c.env("MS_E2E_SET", "yes")
            .env("MS_SOCKET_DIR", &sock)
            .env("INHERITED", "1");
    });
    assert!(
        wait_for(secs(5), || d.read("env").contains("MS_SHIP")),
        "{}",
        f.stderr()
    );
    let env = d.read("env");
    for want in [
        "SHARED=from-mothership".to_string(),
        "OVERRIDE=ship".into(),
        "EXPANDED=fallback-yes".into(),
        "FROM_BASE=base".into(),
        "INHERITED=1".into(),
        format!("MS_PID={}", f.pid()),
        "MS_SHIP=chatbay".into(),
        format!("MS_SOCKET_DIR={}", sock.display()),
        format!("MS_SOCKET_PATH={}/chatbay.sock", sock.display()),
        "MS_BAY_TYPE=chat".into(),
        format!(
            "PWD={}",
            std::fs::canonicalize(d.join("sub")).unwrap().display()
        ),
    ] {
        assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0));
}

#[test]
fn tags_select_ships() {
    let d = Dir::new("tags");
    let log = d.join("log");
    let log = log.display();
    let ship = |name: &str, tags: &str, deps: &str| {
        format!("[[fleet.x]]\nname = \"{name}\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo {name} >> {log}; exec sleep 1000\"]\ntags = [{tags}]\ndepends_on = [{deps}]\n")
    };
    let text = [
        ship("a", "\"web\"", ""),
        ship("b", "\"web\", \"slow\"", ""),
        ship("c", "\"worker\"", "\"a\""),
        ship("d", "", ""),
    ]
    .concat();
    d.write("ship-manifest.toml", &text);
    let check = |args: &[&str], want: &[&str]| {
        let _ = std::fs::remove_file(d.join("log"));
        let mut f = Fleet::start(&d, args);
        assert!(
            wait_for(secs(5), || f.stderr().contains("running:")),
            "{args:?}: {}",
            f.stderr()
        );
        std::thread::sleep(ms(200));
        let mut got: Vec<String> = d.read("log").lines().map(String::from).collect();
        got.sort();
        assert_eq!(got, want, "{args:?}");
        f.signal(libc::SIGTERM);
        assert_eq!(f.wait(secs(10)), Some(0));
        f.stderr()
    };
    check(&["--only", "web"], &["a", "b"]);
    check(&["--except=slow"], &["a", "c", "d"]);
    check(&["--only", "web,worker", "--except", "slow"], &["a", "c"]);
    let err = check(&["run", "--only", "worker"], &["c"]);
    assert!(
        err.contains("c depends on a, which the tag filter leaves out"),
        "{err}"
    );
}

#[test]
fn spawn_failure_of_a_critical_ship_fails_the_fleet() {
    let d = Dir::new("nospawn");
    d.write(
        "ship-manifest.toml",
        "[[fleet.x]]\nname = \"ghost\"\ncommand = \"/nonexistent/program\"\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(1));
    assert!(
        f.logged("ghost: cannot start: /nonexistent/program: command not found"),
        "{}",
        f.stderr()
    );
}

#[test]
fn json_log_format() {
    let d = Dir::new("json");
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"a\"\ncommand = \"true\"\noneshot = true\n",
    );
    let mut f = Fleet::start(&d, &["--log-format", "json"]);
    assert_eq!(f.wait(secs(10)), Some(0));
    let err = f.stderr();
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 3, "{err}");
    for l in &lines {
        assert!(
            l.starts_with("{\"ts\":\"20") && l.ends_with('}') && l.contains("\"level\":\"info\""),
            "{l}"
        );
    }
    assert!(
        lines
            .last()
            .unwrap()
            .contains("\"msg\":\"landed: every program has ended\""),
        "{err}"
    );
}

#[test]
fn a_failed_dependency_fails_its_dependents() {
    let d = Dir::new("depfail");
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"migrate\"\ncommand = \"sh -c 'exit 2'\"\noneshot = true\ncritical = false\n[[fleet.w]]\nname = \"optional\"\ncommand = \"sleep 1000\"\ndepends_on = [\"migrate\"]\ncritical = false\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
    assert!(
        f.logged("optional: will not start: its dependency `migrate` has failed"),
        "{}",
        f.stderr()
    );
    assert!(
        f.logged("landed: every program has ended"),
        "{}",
        f.stderr()
    );

    let d = Dir::new("depfail-crit");
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"migrate\"\ncommand = \"sh -c 'exit 2'\"\noneshot = true\ncritical = false\n[[fleet.w]]\nname = \"web\"\ncommand = \"sleep 1000\"\ndepends_on = [\"migrate\"]\n[[fleet.w]]\nname = \"other\"\ncommand = \"sleep 1000\"\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(10)), Some(1), "{}", f.stderr());
    assert!(
        f.logged("failed: critical ship `web` cannot start: its dependency `migrate` has failed"),
        "{}",
        f.stderr()
    );
}

#[test]
fn a_flood_of_output_from_a_crashing_group_does_not_stall_the_loop() {
    let d = Dir::new("flood");
    let m = marker("flood");
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.w]]\nname = \"flood\"\ncommand = \"sh\"\nargs = [\"-c\", \"yes {m} & sleep 0.3; exit 1\"]\ncritical = false\n"),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("flood: restarting in")),
        "{}",
        f.stderr()
    );
    std::thread::sleep(ms(500));
    let t0 = Instant::now();
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
    assert!(t0.elapsed() < secs(3), "landing took {:?}", t0.elapsed());
    assert!(
        wait_for(secs(2), || pids_with(&m).is_empty()),
        "left behind: {:?}",
        pids_with(&m)
    );
}

#[test]
fn a_ship_that_never_opens_its_bind_keeps_its_dependents_waiting_and_lands() {
    let d = Dir::new("nobind");
    let port = free_port();
    d.write(
        "ship-manifest.toml",
        &format!("[[fleet.w]]\nname = \"mute\"\ncommand = \"sleep 1000\"\nbind = \"127.0.0.1:{port}\"\n[[fleet.w]]\nname = \"dependent\"\ncommand = \"sleep 1000\"\ndepends_on = [\"mute\"]\n"),
    );
    let mut f = Fleet::start(&d, &[]);
    std::thread::sleep(ms(1500));
    assert!(!f.stderr().contains("dependent: started"), "{}", f.stderr());
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
}
