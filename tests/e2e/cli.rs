//! The command line: clearance diagnostics, init, chart, version and usage errors.

use crate::support::*;

/// (name, manifest, expected fragments of the diagnostics including `:line:col:`)
const INVALID: &[(&str, &str, &[&str])] = &[
    (
        "unknown key with suggestion",
        "[mothership]\nmetric_port = 9090\n",
        &[":2:1: error: unknown key `metric_port` in `mothership`; did you mean `metrics_port`?"],
    ),
    (
        "unknown key in a ship",
        "[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\ncritcal = false\n",
        &[":4:1: error: unknown key `critcal`", "did you mean `critical`?"],
    ),
    (
        "missing command",
        "[[fleet.web]]\nname = \"a\"\n",
        &[":1:1: error: `fleet.web[0]` is missing the required key `command`"],
    ),
    (
        "wrong type",
        "[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\ncritical = \"yes\"\n",
        &[":4:12: error: `fleet.web[0].critical` must be a boolean"],
    ),
    (
        "bad name",
        "[[fleet.web]]\nname = \"my app\"\ncommand = \"true\"\n",
        &[":2:8: error: name \"my app\" contains ' '"],
    ),
    (
        "duplicate names ignoring case across ships and bays",
        "[[fleet.web]]\nname = \"App\"\ncommand = \"true\"\n[[bays.chat]]\nname = \"app\"\ncommand = \"true\"\n",
        &[":5:8: error: duplicate name `app`: a ship named `App` is already declared"],
    ),
    (
        "unknown dependency",
        "[[fleet.web]]\nname = \"web\"\ncommand = \"true\"\ndepends_on = [\"dbb\"]\n[[fleet.data]]\nname = \"db\"\ncommand = \"true\"\n",
        &[":4:15: error: `web` depends on `dbb`, which is not a ship or bay; did you mean `db`?"],
    ),
    (
        "dependency cycle printed",
        "[[fleet.x]]\nname = \"a\"\ncommand = \"true\"\ndepends_on = [\"b\"]\n[[fleet.x]]\nname = \"b\"\ncommand = \"true\"\ndepends_on = [\"c\"]\n[[fleet.x]]\nname = \"c\"\ncommand = \"true\"\ndepends_on = [\"a\"]\n",
        &["error: dependency cycle: a -> b -> c -> a"],
    ),
    (
        "prelaunch cycle",
        "[[mothership.prelaunch]]\nname = \"m1\"\ncommand = \"true\"\ndepends_on = [\"m2\"]\n[[mothership.prelaunch]]\nname = \"m2\"\ncommand = \"true\"\ndepends_on = [\"m1\"]\n",
        &["error: dependency cycle: m1 -> m2 -> m1"],
    ),
    (
        "invalid bind string",
        "[mothership]\nbind = { http = \"example.com:80\" }\n",
        &[":2:17: error: invalid bind \"example.com:80\""],
    ),
    (
        "route to a bind that does not exist",
        "[mothership]\nbind = { http = \"8080\" }\n[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\nroutes = [\"htp:/.*\"]\n",
        &[":6:11: error: a route of `a` names bind `htp`, which is not in [mothership.bind]; did you mean `http`?"],
    ),
    (
        "invalid route regex",
        "[mothership]\nbind = { http = \"8080\" }\n[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\nroutes = [{ bind = \"http\", pattern = \"/api/(\" }]\n",
        &[":6:38: error: invalid regex \"/api/(\""],
    ),
    (
        "invalid ua_filter",
        "[mothership]\nbind = { http = \"8080\" }\n[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\nroutes = [{ bind = \"http\", pattern = \"/\", ua_filter = \"robot\" }]\n",
        &["error: unknown ua_filter \"robot\""],
    ),
    (
        "invalid ua_filter regex",
        "[mothership]\nbind = { http = \"8080\" }\n[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\nroutes = [{ bind = \"http\", pattern = \"/\", ua_filter = \"~[bot\" }]\n",
        &["error: invalid regex"],
    ),
    (
        "metrics port clashing with a bind",
        "[mothership]\nmetrics_port = 8080\nbind = { http = \"0.0.0.0:8080\" }\n",
        &[":2:16: error: metrics_port 8080 clashes with bind `http`"],
    ),
    (
        "static dir on an unknown bind",
        "[mothership]\nbind = { http = \"8080\" }\n[[mothership.static_dirs]]\npath = \".\"\nprefix = \"/s\"\nbind = \"web\"\n",
        &[":6:8: error: a static dir names bind `web`"],
    ),
    (
        "bad duration and signal",
        "[[fleet.web]]\nname = \"a\"\ncommand = \"true\"\ngrace_period = \"10 parsecs\"\nstop_signal = \"TERMINATE\"\n",
        &[":4:16: error: `fleet.web[0].grace_period`: invalid duration", ":5:15: error: unknown signal \"TERMINATE\""],
    ),
    (
        "shell command in expansion is refused",
        "[mothership]\nenv = { X = \"${echo hi}\" }\n",
        &[":2:13: error: `${echo hi}` is not a variable name", "never run"],
    ),
    (
        "TOML syntax error",
        "[mothership\n",
        &[":1:", "error: TOML syntax"],
    ),
    (
        "unterminated quote in command",
        "[[fleet.web]]\nname = \"a\"\ncommand = \"sh -c 'oops\"\n",
        &[":3:11: error: cannot split `command`: unterminated single quote"],
    ),
];

#[test]
fn invalid_manifests_exit_78_with_located_messages() {
    let d = Dir::new("invalid");
    for (name, text, want) in INVALID {
        let p = d.write("bad.toml", text);
        let (code, _, err) = run_in(&d.path, &["clearance", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 78, "{name}: exit code; stderr:\n{err}");
        for w in *want {
            assert!(err.contains(w), "{name}: expected {w:?} in:\n{err}");
        }
        assert!(
            err.contains("bad.toml:"),
            "{name}: file name missing:\n{err}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let d = Dir::new("many");
    d.write(
        "ship-manifest.toml",
        "[mothership]\nmetric_port = 1\n[[fleet.a]]\nname = \"x y\"\ncommand = \"true\"\nrestart = \"sometimes\"\n[[fleet.b]]\nname = \"z\"\n",
    );
    let (code, _, err) = run_in(&d.path, &["validate"]);
    assert_eq!(code, 78);
    for w in [":2:1:", ":4:8:", ":6:11:", ":7:1:", "is invalid (4 errors)"] {
        assert!(err.contains(w), "expected {w:?} in:\n{err}");
    }
}

#[test]
fn missing_manifest_is_a_config_error() {
    let d = Dir::new("missing");
    let (code, _, err) = run_in(&d.path, &[]);
    assert_eq!(code, 78);
    assert!(
        err.contains("cannot read manifest ship-manifest.toml"),
        "{err}"
    );
    assert!(err.contains("mothership init"), "{err}");
}

#[test]
fn usage_errors_exit_2_and_version_exits_0() {
    let d = Dir::new("usage");
    assert_eq!(run_in(&d.path, &["--bogus"]).0, 2);
    assert_eq!(run_in(&d.path, &["launch"]).0, 2);
    let (code, out, _) = run_in(&d.path, &["-v"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("mothership "), "{out}");
    let (code, out, _) = run_in(&d.path, &["clearance", "--version"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn init_writes_a_manifest_that_clears_and_runs() {
    let d = Dir::new("init");
    let (code, out, _) = run_in(&d.path, &["init"]);
    assert_eq!(code, 0);
    assert!(out.contains("wrote ship-manifest.toml"));
    let (code, _, err) = run_in(&d.path, &["init"]);
    assert_eq!(code, 1, "init must not overwrite");
    assert!(err.contains("already exists"));
    std::fs::write(d.join("ship-manifest.toml"), "garbage").unwrap();
    assert_eq!(run_in(&d.path, &["init", "--force"]).0, 0);
    let (code, out, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("cleared for launch"), "{out}");
    assert!(out.contains("2 ships, 0 bays, 1 job"), "{out}");

    let mut f = Fleet::start(&d, &[]);
    assert!(wait_for(secs(10), || f
        .stdout()
        .contains("hello from a one-shot job")
        && f.stdout().contains("working")));
    f.signal(libc::SIGTERM);
    assert_eq!(f.wait(secs(10)), Some(0), "{}", f.stderr());
}

#[test]
fn clearance_prints_a_summary_and_warnings() {
    let d = Dir::new("summary");
    d.write(
        "ship-manifest.toml",
        r#"
[mothership]
bind = { http = "8080", edge = { addr = "tcp://[::1]:8443", proxy_protocol = true } }
[[mothership.prelaunch]]
name = "migrate"
command = "true"
[[fleet.web]]
name = "web"
command = "true"
routes = ["http:/.*", { bind = "edge", pattern = "^/api", strip_prefix = "/api" }]
[[fleet.jobs]]
name = "once"
command = "echo a | wc"
oneshot = true
[[bays.chat]]
name = "chat"
command = "true"
env = { X = "$MS_E2E_SURELY_UNSET" }
"#,
    );
    let (code, out, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 ship, 1 bay, 1 job, 1 prelaunch job"),
        "{out}"
    );
    assert!(out.contains("2 binds, 2 routes"), "{out}");
    assert!(
        err.contains("warning: environment variable `MS_E2E_SURELY_UNSET` is not set"),
        "{err}"
    );
    assert!(
        err.contains("warning: this command uses shell syntax"),
        "{err}"
    );
}

#[test]
fn chart_shows_binds_routes_and_launch_order() {
    let d = Dir::new("chart");
    d.write(
        "ship-manifest.toml",
        r#"
[mothership]
bind = { http = "0.0.0.0:8080", sock = "unix://run/edge.sock" }
metrics_port = 9100
[[mothership.static_dirs]]
path = "public"
prefix = "/assets"
[[fleet.web]]
name = "web"
command = "true"
bind = "3000"
depends_on = ["db", "cache"]
routes = [{ bind = "http", pattern = "^/api", strip_prefix = "/api", ua_filter = "llm" }, "sock:/.*"]
[[fleet.data]]
name = "db"
command = "true"
[[fleet.data]]
name = "cache"
command = "true"
critical = false
[[fleet.workers]]
name = "worker"
command = "true"
depends_on = ["web"]
routes = ["http:/jobs"]
"#,
    );
    let (code, out, err) = run_in(&d.path, &["chart"]);
    assert_eq!(code, 0, "{err}");
    let sock = format!(
        "unix://{}/run/edge.sock",
        std::fs::canonicalize(&d.path).unwrap().display()
    );
    let expected = format!(
        "binds:
  http         tcp://0.0.0.0:8080
  sock         {sock}
  metrics      tcp://127.0.0.1:9100 (/metrics, /health)
routes (in match order):
    1. http:^/api -> web [tcp://127.0.0.1:3000] strip_prefix=/api ua_filter=llm
    2. sock:/.* -> web [tcp://127.0.0.1:3000]
    3. http:/jobs -> worker [(no bind: answers 503)]
static dirs:
  /assets -> {}/public (all binds)
launch order (each level in parallel; landing goes in reverse):
  1. db (ship), cache (ship, non-critical)
  2. web (ship)
  3. worker (ship)
",
        std::fs::canonicalize(&d.path).unwrap().display()
    );
    assert_eq!(out, expected);
}

#[test]
fn man_page_example_manifest_clears() {
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/ship-manifest.toml.5"
    ))
    .unwrap();
    let start = page
        .find("A complete manifest:")
        .expect("example in the man page");
    let body = &page[start..];
    let bd = body.find(".Bd -literal").unwrap();
    let body = &body[bd..];
    let text: String = body
        .lines()
        .skip(1)
        .take_while(|l| *l != ".Ed")
        .map(|l| format!("{l}\n"))
        .collect();
    let d = Dir::new("manex");
    d.write("ship-manifest.toml", &text);
    let (code, out, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("2 ships, 1 bay, 1 job, 1 prelaunch job"),
        "{out}"
    );
}

pub fn secs(n: u64) -> std::time::Duration {
    std::time::Duration::from_secs(n)
}

/// `make run`'s fleet, as shipped, in a network namespace of its own (its ports are fixed):
/// the worker reaches the perl server through the edge, and Ctrl-C lands it cleanly.
#[test]
fn example_fleet_runs_and_lands() {
    let d = Dir::new("example");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/ship-manifest.toml");
    let script = format!("ip link set lo up && exec {BIN} -c {manifest}");
    let mut f = Fleet::start_with(&d, &[], |c| {
        *c = std::process::Command::new("unshare");
        c.args(["--net", "sh", "-c", &script])
            .current_dir(&d.path)
            .env("NO_COLOR", "1")
            .env("GREETING", "ahoy")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(d.join("mothership.out")).unwrap())
            .stderr(std::fs::File::create(d.join("mothership.err")).unwrap());
    });
    assert!(
        wait_for(secs(20), || f
            .stdout()
            .contains("ahoy: 200 through the edge")),
        "{}{}",
        f.stdout(),
        f.stderr()
    );
    assert!(
        f.stdout().contains("fleet of report started by pid"),
        "{}",
        f.stdout()
    );
    // unshare execs sh, which execs mothership: the fleet's pid is the one started.
    f.signal(libc::SIGINT);
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    assert!(f.logged("landed: received SIGINT"), "{}", f.stderr());
}
