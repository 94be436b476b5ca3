//! Issue 13: platforms that hand the process a port and an environment.

use crate::cli::secs;
use crate::proxy::raw;
use crate::support::*;

#[test]
fn the_edge_listens_on_the_port_the_platform_hands_out() {
    let d = Dir::new("port");
    let port = free_port();
    d.write(
        "ship-manifest.toml",
        "[mothership]\nbind = { http = \"127.0.0.1:${PORT:-1}\" }\n",
    );
    let f = Fleet::start_with(&d, &[], |c| {
        c.env("PORT", port.to_string());
    });
    assert!(
        wait_for(secs(10), || f.stderr().contains("listening on")),
        "{}",
        f.stderr()
    );
    assert!(f.logged(&format!("127.0.0.1:{port}")), "{}", f.stderr());
    let out = raw(
        port,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(out.starts_with("HTTP/1.1 404 "), "{out}");
}

#[test]
fn an_invalid_expanded_bind_is_reported_where_it_is_written() {
    let d = Dir::new("port-bad");
    d.write(
        "ship-manifest.toml",
        "# a platform port\n[mothership]\nbind = { http = \"127.0.0.1:${PORT}\" }\n",
    );
    let out = std::process::Command::new(BIN)
        .args(["clearance"])
        .current_dir(&d.path)
        .env("PORT", "notaport9")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("ship-manifest.toml:3:") && err.contains("notaport9"),
        "{err}"
    );
}

#[test]
fn env_files_take_their_place_in_the_precedence() {
    let d = Dir::new("env-file");
    let secret = marker("secret");
    d.write(
        "fleet.env",
        "# fleet\nP2=fleet-file\nP3=fleet-file\nP4=fleet-file\nP5=fleet-file\n",
    );
    d.write(
        "prog.env",
        &format!("export P4=prog-file\nP5='prog-file'\nREF=\"${{OUTER}}-ref\"\nSECRET={secret}\n"),
    );
    let out = d.join("order.env");
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nenv_file = \"fleet.env\"\nenv = {{ P3 = \"fleet-env\", P4 = \"fleet-env\", P5 = \"fleet-env\" }}\n[[fleet.jobs]]\nname = \"order\"\ncommand = \"sh\"\nargs = [\"-c\", \"env > {}\"]\nenv_file = \"prog.env\"\nenv = {{ P5 = \"prog-env\" }}\noneshot = true\n",
            out.display()
        ),
    );
    let mut f = Fleet::start_with(&d, &[], |c| {
        for p in ["P1", "P2", "P3", "P4", "P5"] {
            c.env(p, "inherited");
        }
        c.env("OUTER", "outer").env("RUST_LOG", "debug");
    });
    assert_eq!(f.wait(secs(20)), Some(0), "{}", f.stderr());
    let env = std::fs::read_to_string(&out).unwrap();
    let val = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        ["P1", "P2", "P3", "P4", "P5"].map(val),
        [
            "inherited",
            "fleet-file",
            "fleet-env",
            "prog-file",
            "prog-env"
        ]
    );
    assert_eq!(val("REF"), "outer-ref");
    assert_eq!(val("SECRET"), secret);
    assert!(
        !f.stderr().contains(&secret),
        "a value was logged: {}",
        f.stderr()
    );
    // A missing file is an error at its line.
    d.write(
        "missing.toml",
        "[[fleet.jobs]]\nname = \"x\"\ncommand = \"true\"\nenv_file = \"absent.env\"\n",
    );
    let (code, _, err) = run_in(&d.path, &["clearance", "-c", "missing.toml"]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("missing.toml:4:") && err.contains("absent.env"),
        "{err}"
    );
}

#[test]
fn a_procfile_becomes_a_fleet_whose_web_answers_on_port() {
    let d = Dir::new("procfile");
    let worker_out = d.join("worker.out");
    let m = marker("procfile");
    d.write(
        "Procfile",
        &format!(
            "web: python3 -m http.server $PORT --bind 127.0.0.1\nworker: python3 -c \"import time; open('{}', 'w').write('ran'); time.sleep(600)\" {m}\n",
            worker_out.display()
        ),
    );
    let (code, out, err) = run_in(&d.path, &["init", "--from", "Procfile"]);
    assert_eq!(code, 0, "{out}{err}");
    let port = free_port();
    let clearance = std::process::Command::new(BIN)
        .arg("clearance")
        .current_dir(&d.path)
        .env("PORT", port.to_string())
        .output()
        .unwrap();
    assert_eq!(
        clearance.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clearance.stderr)
    );
    let f = Fleet::start_with(&d, &[], |c| {
        c.env("PORT", port.to_string());
    });
    let mut got = String::new();
    let ok = wait_for(secs(20), || {
        got = crate::proxy::curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/"),
        ]);
        got == "200"
    });
    assert!(ok, "{got}\n{}", f.stderr());
    assert!(
        wait_for(secs(10), || std::fs::read_to_string(&worker_out)
            .is_ok_and(|s| s == "ran")),
        "{}",
        f.stderr()
    );
}

#[test]
fn a_ships_bind_and_arguments_expand_its_port() {
    let d = Dir::new("ship-port");
    let (http, ship) = (free_port(), free_port());
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nbind = {{ http = \"127.0.0.1:{http}\" }}\n[[fleet.web]]\nname = \"echo\"\ncommand = \"python3\"\nargs = [\"{}\", \"${{SHIP_PORT}}\", \"echo\"]\nbind = \"tcp://127.0.0.1:${{SHIP_PORT}}\"\nroutes = [\"http:/.*\"]\n",
            crate::proxy::BACKEND
        ),
    );
    let f = Fleet::start_with(&d, &[], |c| {
        c.env("SHIP_PORT", ship.to_string());
    });
    assert!(
        wait_for(secs(15), || f.stderr().contains("echo: up")),
        "{}",
        f.stderr()
    );
    let out = raw(
        http,
        b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.contains("\"name\": \"echo\""),
        "{out}"
    );
}
