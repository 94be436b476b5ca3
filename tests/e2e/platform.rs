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
    assert!(
        f.stderr().contains(&format!("127.0.0.1:{port}")),
        "{}",
        f.stderr()
    );
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
