//! WASM payloads (issue 17) with the real binary, real backends and modules written in WAT
//! here (compiled by the `wat` crate): blocks, changes to requests and responses, config,
//! log, the limits (fuel, memory, traps) and the module being instantiated again, selection
//! and chaining, and modules refused at start.

use crate::cli::secs;
use crate::edge::metric;
use crate::proxy::{curl, json_field, raw, BACKEND};
use crate::support::*;

/// Blocks every request it sees (set_action(1)).
const BLOCK: &str = r#"(module
  (import "env" "set_action" (func $a (param i32)))
  (func (export "on_request") (call $a (i32.const 1))))"#;

/// Blocks with 451, a body and two headers.
const BLOCK_HEADERS: &str = r#"(module
  (import "env" "set_block_with_headers" (func $b (param i32 i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "gone for legal reasons")
  (data (i32.const 64) "{\"X-Why\":\"wasm\",\"Content-Type\":\"text/x-test\"}")
  (func (export "on_request")
    (call $b (i32.const 451) (i32.const 16) (i32.const 22) (i32.const 64) (i32.const 45))))"#;

/// Sets x-module, removes x-drop, and sends the request to /other/<...> (the query kept).
const REWRITE: &str = r#"(module
  (import "env" "set_request_header" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "remove_request_header" (func $rm (param i32 i32) (result i32)))
  (import "env" "set_path" (func $path (param i32 i32) (result i32)))
  (import "env" "set_block" (func $b (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-moduleyesx-drop/other/rewritten")
  (data (i32.const 100) "x-forwarded-for")
  (func (export "on_request")
    (local $r i32)
    (local.set $r (i32.or (i32.or
      (call $set (i32.const 0) (i32.const 8) (i32.const 8) (i32.const 3))
      (call $rm (i32.const 11) (i32.const 6)))
      (call $path (i32.const 17) (i32.const 16))))
    ;; a forwarding field cannot be set: -1
    (if (i32.ne (call $set (i32.const 100) (i32.const 15) (i32.const 0) (i32.const 3)) (i32.const -1))
      (then (local.set $r (i32.const 1))))
    (if (i32.ne (local.get $r) (i32.const 0))
      (then (call $b (i32.const 500) (i32.const 0) (i32.const 0))))))"#;

/// Response phase: 203 instead of 200, x-resp set, content-type removed.
const RESPONSE_EDIT: &str = r#"(module
  (import "env" "set_response_header" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "env" "remove_response_header" (func $rm (param i32 i32) (result i32)))
  (import "env" "set_status" (func $st (param i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "x-respsetcontent-type")
  (func (export "on_response")
    (drop (call $set (i32.const 0) (i32.const 6) (i32.const 6) (i32.const 3)))
    (drop (call $rm (i32.const 9) (i32.const 12)))
    (drop (call $st (i32.const 203)))))"#;

/// Response phase: replaces a 2xx answer with a 502 of its own when the backend's status is
/// in its JSON as 200 (reads the response; no request there).
const RESPONSE_BLOCK: &str = r#"(module
  (import "env" "get_request" (func $gr (result i32)))
  (import "env" "get_response" (func $g (result i32)))
  (import "env" "read_response" (func $r (param i32 i32) (result i32)))
  (import "env" "set_block" (func $b (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 4000) "replaced")
  (func (export "on_response")
    (if (i32.and
          (i32.eqz (call $gr))
          (i32.and (i32.gt_s (call $g) (i32.const 0))
                   (i32.eq (call $r (i32.const 0) (i32.const 13)) (i32.const 13))))
      (then
        ;; {"status":200 : bytes 10..12 are "200"
        (if (i32.and (i32.eq (i32.load8_u (i32.const 10)) (i32.const 50))
                     (i32.eq (i32.load8_u (i32.const 12)) (i32.const 48)))
          (then (call $b (i32.const 502) (i32.const 4000) (i32.const 8))))))))"#;

/// Answers 299 with its config JSON as the body.
const CONFIG: &str = r#"(module
  (import "env" "get_config" (func $g (result i32)))
  (import "env" "read_config" (func $r (param i32 i32) (result i32)))
  (import "env" "set_block" (func $b (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "on_request")
    (call $b (i32.const 299) (i32.const 16) (call $r (i32.const 16) (call $g)))))"#;

/// Logs the request JSON (level 2, info) and a warning, and lets the request through.
const LOG: &str = r#"(module
  (import "env" "get_request" (func $g (result i32)))
  (import "env" "read_request" (func $r (param i32 i32) (result i32)))
  (import "env" "log" (func $log (param i32 i32 i32)))
  (import "mothership" "host_log" (func $hl (param i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 60000) "wasm-log-marker")
  (func (export "on_request")
    (call $log (i32.const 2) (i32.const 0) (call $r (i32.const 0) (i32.const 59999)))
    (drop (call $hl (i32.const 1) (i32.const 60000) (i32.const 15)))
    ;; unreadable text is ignored by log, logged as <invalid utf-8> by host_log
    (call $log (i32.const 1) (i32.const 70000) (i32.const 5))
    (drop (call $hl (i32.const 1) (i32.const 70000) (i32.const 5)))))"#;

/// Never returns: only fuel stops it.
const SPIN: &str = r#"(module
  (func (export "on_request") (loop $l (br $l))))"#;

/// Grows its memory by 20 pages: refused (-1) under a 1 MiB cap, then answers 507; grows
/// by one page otherwise and lets the request through.
const GROW: &str = r#"(module
  (import "env" "set_block" (func $b (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "on_request")
    (if (i32.eq (memory.grow (i32.const 20)) (i32.const -1))
      (then
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1))
          (then (call $b (i32.const 500) (i32.const 0) (i32.const 0)))
          (else (call $b (i32.const 507) (i32.const 0) (i32.const 0))))))))"#;

/// Breaks itself for good on a long request (its JSON over 300 bytes): every later call
/// traps until the instance is made again.
const BREAKS: &str = r#"(module
  (import "env" "get_request" (func $g (result i32)))
  (global $broken (mut i32) (i32.const 0))
  (func (export "on_request")
    (if (i32.gt_s (call $g) (i32.const 300)) (then (global.set $broken (i32.const 1))))
    (if (global.get $broken) (then unreachable))))"#;

/// A fleet of two echo ships ("echo" on everything, "other" on ^/other) and the given
/// modules (name, WAT, extra keys).
fn fleet(tag: &str, modules: &[(&str, &str, &str)]) -> (Dir, Fleet, u16, u16, u16) {
    let d = Dir::new(tag);
    let (http, pp, mp, a, b) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let mut text = format!(
        r#"
[mothership]
metrics_port = {mp}
[mothership.bind]
http = "127.0.0.1:{http}"
pp = {{ addr = "127.0.0.1:{pp}", proxy_protocol = true }}
[[fleet.web]]
name = "other"
command = "python3"
args = ["{BACKEND}", "{b}", "other"]
bind = "127.0.0.1:{b}"
routes = ["http:^/other"]
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = ["http:^/(public|mod|chain|resp|cfg|log|spin|grow|break|block)", "pp:/.*"]
"#
    );
    for (name, wat, extra) in modules {
        let bin = wat::parse_str(wat).unwrap_or_else(|e| panic!("{name}: {e}"));
        let path = d.join(&format!("{name}.wasm"));
        std::fs::write(&path, bin).unwrap();
        text.push_str(&format!(
            "[[modules]]\nname = \"{name}\"\nwasm = \"{}\"\n{extra}\n",
            path.display()
        ));
    }
    d.write("ship-manifest.toml", &text);
    let fleet = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || {
            let e = fleet.stderr();
            e.contains("echo: up") && e.contains("other: up")
        }),
        "{}",
        fleet.stderr()
    );
    (d, fleet, http, pp, mp)
}

fn status(url: &str) -> String {
    curl(&["-o", "/dev/null", "-w", "%{http_code}", url])
}

fn head_and_body(url: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["-i"];
    args.extend_from_slice(extra);
    args.push(url);
    let out = curl(&args);
    let (h, b) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (h.to_ascii_lowercase(), b.to_string())
}

#[test]
fn modules_block_change_requests_and_responses_and_chain() {
    let (d, mut f, h, _, mp) = fleet(
        "wasm-change",
        &[
            ("blocker", BLOCK, r#"routes = ["^/block", "^/chain/first"]"#),
            ("legal", BLOCK_HEADERS, r#"routes = ["^/mod/legal"]"#),
            ("rewrite", REWRITE, r#"routes = ["^/mod/rewrite"]"#),
            // Chosen by the path as it is when its turn comes: after the rewrite.
            ("after-rewrite", LOG, r#"routes = ["^/other/rewritten"]"#),
            (
                "cfg",
                CONFIG,
                "routes = [\"^/cfg\"]\nconfig = { k = \"v\", home = \"$HOME\" }",
            ),
            ("chain-log", LOG, r#"routes = ["^/chain/"]"#),
            (
                "resp-edit",
                RESPONSE_EDIT,
                "routes = [\"^/resp/edit\"]\nphase = \"response\"",
            ),
            (
                "resp-block",
                RESPONSE_BLOCK,
                "routes = [\"^/resp/block\"]\nphase = \"response\"",
            ),
        ],
    );
    let u = format!("http://127.0.0.1:{h}");
    // No module on this path.
    assert_eq!(status(&format!("{u}/public/x")), "200");

    // set_action(1): 403 with upstream's body, on a path with a route and one without.
    let (head, body) = head_and_body(&format!("{u}/block/x"), &[]);
    assert!(head.starts_with("http/1.1 403"), "{head}");
    assert_eq!(body, "Blocked by module");
    assert_eq!(status(&format!("{u}/chain/first")), "403");

    // set_block_with_headers: its status, body and headers.
    let (head, body) = head_and_body(&format!("{u}/mod/legal"), &[]);
    assert!(head.starts_with("http/1.1 451"), "{head}");
    assert!(head.contains("\r\nx-why: wasm"), "{head}");
    assert!(head.contains("\r\ncontent-type: text/x-test"), "{head}");
    assert_eq!(body, "gone for legal reasons");

    // The backend sees the changed request: routed again to `other`, query kept, header
    // set and removed.
    let j = curl(&["-H", "X-Drop: 1", &format!("{u}/mod/rewrite?q=1")]);
    assert_eq!(json_field(&j, "name"), Some("other"), "{j}");
    assert_eq!(json_field(&j, "path"), Some("/other/rewritten?q=1"), "{j}");
    assert_eq!(json_field(&j, "x-module"), Some("yes"), "{j}");
    assert!(!j.contains("x-drop"), "{j}");
    assert!(
        wait_for(secs(5), || f
            .stderr()
            .contains("module after-rewrite: wasm-log-marker")),
        "{}",
        f.stderr()
    );

    // Config, with $VAR expanded.
    let (head, body) = head_and_body(&format!("{u}/cfg"), &[]);
    assert!(head.starts_with("http/1.1 299"), "{head}");
    let home = std::env::var("HOME").unwrap_or_default();
    assert_eq!(body, format!("{{\"k\":\"v\",\"home\":\"{home}\"}}"));

    // Response phase: status and headers changed; a block replaces the whole answer.
    let (head, body) = head_and_body(&format!("{u}/resp/edit/x"), &[]);
    assert!(head.starts_with("http/1.1 203"), "{head}");
    assert!(head.contains("\r\nx-resp: set"), "{head}");
    assert!(!head.contains("content-type"), "{head}");
    assert_eq!(json_field(&body, "name"), Some("echo"), "{body}");
    let (head, body) = head_and_body(&format!("{u}/resp/block/x"), &[]);
    assert!(head.starts_with("http/1.1 502"), "{head}");
    assert_eq!(body, "replaced");
    // ... and the connection goes on: two requests on one connection.
    let two = raw(
        h,
        b"GET /resp/block/a HTTP/1.1\r\nHost: x\r\n\r\nGET /public/b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(two.starts_with("HTTP/1.1 502"), "{two}");
    assert!(
        two.contains("replaced") && two.contains("\"name\": \"echo\""),
        "{two}"
    );

    // Chained: the first blocks and the second never runs; alone the second logs.
    assert_eq!(status(&format!("{u}/chain/open")), "200");
    let runs = || {
        f.stderr()
            .matches("module chain-log: wasm-log-marker")
            .count()
    };
    assert!(wait_for(secs(5), || runs() > 0));
    let before = runs();
    assert_eq!(status(&format!("{u}/chain/first")), "403");
    assert_eq!(status(&format!("{u}/chain/open")), "200");
    assert!(wait_for(secs(5), || runs() == before + 1));
    assert_eq!(runs(), before + 1, "{}", f.stderr());

    let m = curl(&[&format!("http://127.0.0.1:{mp}/metrics")]);
    let calls = |name: &str| {
        metric(
            &m,
            &format!("mothership_module_calls_total{{module=\"{name}\"}}"),
        )
    };
    assert_eq!(calls("blocker"), Some(3.0), "{m}");
    assert_eq!(
        metric(&m, "mothership_module_blocks_total{module=\"blocker\"}"),
        Some(3.0)
    );
    assert_eq!(calls("resp-edit"), Some(1.0));
    assert_eq!(
        metric(
            &m,
            "mothership_module_duration_seconds_count{module=\"legal\"}"
        ),
        Some(1.0)
    );
    // The control socket's status carries the modules' counts too (for `top`), at most a
    // second behind the edge's.
    let blocker_blocks = || {
        let (_, out, _) = run_in(&d.path, &["status", "--json"]);
        let v = mothership::proto::json::parse(out.trim().as_bytes()).ok()?;
        let Some(mothership::proto::json::Value::Array(ms)) = v.get("modules") else {
            return None;
        };
        ms.iter()
            .find(|m| m.get("name").and_then(|n| n.as_str()) == Some("blocker"))?
            .get("blocks")?
            .as_u64()
    };
    assert!(
        wait_for(secs(5), || {
            // A request to the metrics port makes a turn of the loop, which refreshes them.
            let _ = status(&format!("http://127.0.0.1:{mp}/health"));
            blocker_blocks() == Some(3)
        }),
        "{:?}",
        blocker_blocks()
    );
    assert_eq!(f.stop(secs(10)), Some(0));
}

#[test]
fn log_text_and_the_client_address_behind_the_proxy_protocol() {
    let (_d, mut f, _, pp, _) = fleet("wasm-log", &[("logger", LOG, "")]);
    let out = raw(
        pp,
        b"PROXY TCP4 203.0.113.9 127.0.0.1 4000 80\r\nGET /log?a=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    // The module's last line; the earlier ones are in the file before it.
    assert!(f.logged("module logger: <invalid utf-8>"), "{}", f.stderr());
    assert!(f.stderr().contains("wasm-log-marker"));
    let e = f.stderr();
    let line = e
        .lines()
        .find(|l| l.contains("\"method\":\"GET\""))
        .unwrap_or_else(|| panic!("{e}"));
    assert!(line.contains("module logger: "), "{line}");
    assert!(
        line.contains(r#"{"method":"GET","path":"/log","query":"a=1","headers":{"host":"h","connection":"close"},"client_ip":"203.0.113.9"}"#),
        "{line}"
    );
    assert_eq!(f.stop(secs(10)), Some(0));
}

#[test]
fn limits_fail_closed_while_the_edge_serves_and_a_broken_module_is_made_again() {
    let (_d, mut f, h, _, mp) = fleet(
        "wasm-limits",
        &[
            ("spin", SPIN, "routes = [\"^/spin\"]"),
            ("grow", GROW, "routes = [\"^/grow\"]\nmemory = \"1MiB\""),
            ("breaks", BREAKS, "routes = [\"^/break\"]"),
            (
                "trap",
                "(module (func (export \"on_request\") unreachable))",
                "routes = [\"^/public/trap\"]",
            ),
        ],
    );
    let u = format!("http://127.0.0.1:{h}");
    // Endless loops on two connections while another is served.
    let spins: Vec<_> = (0..2)
        .map(|i| {
            let url = format!("{u}/spin/{i}");
            std::thread::spawn(move || status(&url))
        })
        .collect();
    assert_eq!(status(&format!("{u}/public/meanwhile")), "200");
    for s in spins {
        assert_eq!(s.join().unwrap(), "503");
    }
    let (head, body) = head_and_body(&format!("{u}/spin/x"), &[]);
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert_eq!(body, "Module processing failure");
    // (The log line goes through the output writer: it may come a moment after.)
    assert!(wait_for(secs(5), || f
        .stderr()
        .contains("module spin: ran out of fuel (1000000 per call)")));

    // Memory: a grow past the cap gives -1 and the module goes on (and answers 507).
    assert_eq!(status(&format!("{u}/grow")), "507");
    assert_eq!(status(&format!("{u}/grow")), "507");

    // A trap: 503, logged.
    assert_eq!(status(&format!("{u}/public/trap")), "503");
    assert!(wait_for(secs(5), || f
        .stderr()
        .contains("module trap: trapped:")));

    // Broken by a long request, it traps on every call; the third failure in a row makes
    // it again, and the next call passes.
    let long = format!("{u}/break/{}", "x".repeat(400));
    assert_eq!(status(&long), "503");
    assert_eq!(status(&format!("{u}/break/ok")), "503");
    assert_eq!(status(&format!("{u}/break/ok")), "503");
    assert_eq!(status(&format!("{u}/break/ok")), "200");
    assert!(wait_for(secs(5), || f.stderr().contains(
        "module breaks: 3 traps in a row; instantiated again"
    )));
    let m = curl(&[&format!("http://127.0.0.1:{mp}/metrics")]);
    assert_eq!(
        metric(&m, "mothership_module_resets_total{module=\"breaks\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        metric(&m, "mothership_module_errors_total{module=\"spin\"}"),
        Some(3.0)
    );
    // Running out of fuel is no reason to make the instance again.
    assert_eq!(
        metric(&m, "mothership_module_resets_total{module=\"spin\"}"),
        Some(0.0)
    );
    assert_eq!(status(&format!("{u}/public/after")), "200");
    assert_eq!(f.stop(secs(10)), Some(0));
}

#[test]
fn modules_that_cannot_run_stop_the_launch() {
    for (tag, wat, want) in [
        (
            "noexp",
            r#"(module (memory (export "memory") 1) (func (export "handler")))"#,
            "exports neither on_request nor on_response",
        ),
        (
            "noimp",
            r#"(module (import "env" "fetch" (func (param i32))) (func (export "on_request")))"#,
            "env.fetch, a function the host does not provide",
        ),
    ] {
        let d = Dir::new(&format!("wasm-refused-{tag}"));
        let wasm = d.join("m.wasm");
        std::fs::write(&wasm, wat::parse_str(wat).unwrap()).unwrap();
        let m = marker(tag);
        d.write(
            "ship-manifest.toml",
            &format!(
                "[[fleet.w]]\nname = \"idle\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 30; : {m}\"]\n[[modules]]\nname = \"guard-{tag}\"\nwasm = \"{}\"\n",
                wasm.display()
            ),
        );
        let (code, _, err) = run_in(&d.path, &["clearance"]);
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains(&format!("guard-{tag}")) && err.contains(want),
            "{err}"
        );
        let (code, _, err) = run_in(&d.path, &["run"]);
        assert_eq!(code, 78, "{err}");
        assert!(
            err.contains(&format!("guard-{tag}")) && err.contains(want),
            "{err}"
        );
        assert!(pids_with(&m).is_empty(), "nothing was started");
    }
    // An invalid route regex is a located manifest error.
    let d = Dir::new("wasm-refused-regex");
    let wasm = d.join("m.wasm");
    std::fs::write(&wasm, wat::parse_str(BLOCK).unwrap()).unwrap();
    d.write(
        "ship-manifest.toml",
        &format!(
            "[[fleet.w]]\nname = \"idle\"\ncommand = \"true\"\n[[modules]]\nname = \"m\"\nwasm = \"{}\"\nroutes = [\"(\"]\n",
            wasm.display()
        ),
    );
    let (code, _, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("ship-manifest.toml:7:"), "{err}");
}

/// The Rust module of `tests/wasm-guest/` (built for wasm32 with Debian's Rust): an API-key
/// check that parses the request JSON and its config, blocks with 401, or marks the request.
#[test]
fn a_module_built_from_rust_checks_an_api_key() {
    let guest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wasm-guest/build.sh");
    let out = std::process::Command::new("bash")
        .arg(guest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the Rust module: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wasm = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let d = Dir::new("wasm-rust");
    let (http, a) = (free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[mothership.bind]
http = "127.0.0.1:{http}"
[[fleet.web]]
name = "echo"
command = "python3"
args = ["{BACKEND}", "{a}", "echo"]
bind = "127.0.0.1:{a}"
routes = ["http:/.*"]
[[modules]]
name = "api-key"
wasm = "{wasm}"
routes = ["^/api/"]
config = {{ key = "s3cret" }}
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(15), || f.stderr().contains("echo: up")),
        "{}",
        f.stderr()
    );
    let u = format!("http://127.0.0.1:{http}");
    let (head, body) = head_and_body(&format!("{u}/api/x"), &[]);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert_eq!(body, "missing or wrong api key");
    let (head, _) = head_and_body(&format!("{u}/api/x"), &["-H", "X-Api-Key: nope"]);
    assert!(head.starts_with("http/1.1 401"), "{head}");
    let j = curl(&["-H", "X-Api-Key: s3cret", &format!("{u}/api/x")]);
    assert_eq!(json_field(&j, "x-authenticated"), Some("rust-guest"), "{j}");
    assert_eq!(status(&format!("{u}/open")), "200");
    assert_eq!(f.stop(secs(10)), Some(0));
}

/// Modules see requests to an HTTP bay and its answers as they see a ship's.
#[test]
fn modules_run_on_http_bays_both_ways() {
    let d = Dir::new("wasm-bay");
    let m = marker("wasm-bay");
    let port = free_port();
    let mut text = crate::bays::bay(&d, "h", 3, "", "", &m);
    for (name, wat, extra) in [
        ("req-block", BLOCK, "routes = [\"^/h/blocked\"]"),
        (
            "resp-edit",
            RESPONSE_EDIT,
            "routes = [\"^/h/length\"]\nphase = \"response\"",
        ),
        (
            "resp-block",
            RESPONSE_BLOCK,
            "routes = [\"^/h/stream\"]\nphase = \"response\"",
        ),
    ] {
        let path = d.join(&format!("{name}.wasm"));
        std::fs::write(&path, wat::parse_str(wat).unwrap()).unwrap();
        text.push_str(&format!(
            "[[modules]]\nname = \"{name}\"\nwasm = \"{}\"\n{extra}\n",
            path.display()
        ));
    }
    let mut f = crate::bays::start(&d, port, "", &text, &["h"]);
    let url = |p: &str| format!("http://127.0.0.1:{port}/h/{p}");
    assert_eq!(status(&url("blocked")), "403");
    let (head, body) = head_and_body(&url("length"), &[]);
    assert!(head.starts_with("http/1.1 203"), "{head}");
    assert!(head.contains("\r\nx-resp: set"), "{head}");
    assert_eq!(body, "hello");
    // The bay's streamed answer is replaced and dropped; the connection goes on.
    let two = raw(
        port,
        b"GET /h/stream HTTP/1.1\r\nHost: x\r\n\r\nGET /h/length HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(two.starts_with("HTTP/1.1 502"), "{two}");
    assert!(!two.contains("one two three"), "{two}");
    assert!(two.contains("replaced") && two.ends_with("hello"), "{two}");
    assert_eq!(f.stop(secs(10)), Some(0));
}
