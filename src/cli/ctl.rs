//! Client commands of the control socket: `mothership status`. They find the socket as the
//! server does (`MS_SOCKET_DIR`, `$XDG_RUNTIME_DIR/mothership`, `/tmp/mothership`) or take
//! `--socket PATH`, send one request and print its answer as a table or, with `--json`, as
//! the JSON the socket gave.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{EXIT_FAILED, EXIT_OK};
use crate::proto::json::{self, Value};

/// No fleet answers on the socket.
pub const EXIT_NO_FLEET: i32 = 4;

fn socket(given: Option<&Path>) -> PathBuf {
    given.map_or_else(
        || super::run::socket_dir().join(crate::control::SOCKET),
        Path::to_path_buf,
    )
}

/// Sends `cmd` and returns the answer object, or the exit status with its message printed.
fn request(path: &Path, cmd: &str) -> Result<Value, i32> {
    let mut s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "mothership: no fleet is running here ({}: {e})",
                path.display()
            );
            return Err(EXIT_NO_FLEET);
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::from("{\"v\":1,\"cmd\":");
    json::write_str(&mut line, cmd);
    line.push_str("}\n");
    if let Err(e) = s.write_all(line.as_bytes()) {
        eprintln!("mothership: {}: {e}", path.display());
        return Err(EXIT_FAILED);
    }
    let mut answer = String::new();
    if let Err(e) = BufReader::new(&s).read_line(&mut answer) {
        eprintln!("mothership: {}: {e}", path.display());
        return Err(EXIT_FAILED);
    }
    let v = match json::parse(answer.trim_end().as_bytes()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mothership: the fleet's answer is not JSON ({e})");
            return Err(EXIT_FAILED);
        }
    };
    if v.get("ok") != Some(&Value::Bool(true)) {
        let why = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        eprintln!("mothership: {why}");
        return Err(EXIT_FAILED);
    }
    Ok(v)
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => "-".into(),
    }
}

fn uptime(v: Option<&Value>) -> String {
    let Some(s) = v.and_then(|x| match x {
        Value::Number(n) => n.parse::<f64>().ok(),
        _ => None,
    }) else {
        return "-".into();
    };
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// `mothership status [--json]`.
pub fn status(socket_path: Option<&Path>, as_json: bool) -> i32 {
    let path = socket(socket_path);
    let v = match request(&path, "status") {
        Ok(v) => v,
        Err(code) => return code,
    };
    if as_json {
        // The answer as it came, without the protocol's own fields.
        let mut o = String::from("{");
        if let Value::Object(members) = &v {
            let mut first = true;
            for (k, val) in members.iter().filter(|(k, _)| k != "ok" && k != "v") {
                if !first {
                    o.push(',');
                }
                first = false;
                json::write_str(&mut o, k);
                o.push(':');
                write_value(&mut o, val);
            }
        }
        o.push('}');
        println!("{o}");
        return EXIT_OK;
    }
    let programs = match v.get("programs") {
        Some(Value::Array(p)) => p.clone(),
        _ => Vec::new(),
    };
    let head = [
        "NAME",
        "GROUP",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ];
    let rows: Vec<[String; 8]> = programs
        .iter()
        .map(|p| {
            [
                text(p.get("name")),
                text(p.get("group")),
                text(p.get("state")),
                text(p.get("pid")),
                uptime(p.get("uptime_seconds")),
                text(p.get("restarts")),
                text(p.get("health")),
                text(p.get("last_exit")),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    println!(
        "fleet {}, up {}",
        text(v.get("state")),
        uptime(v.get("uptime_seconds"))
    );
    // Colour on a terminal unless NO_COLOR is set: the state, and health gone bad.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let paint = |i: usize, c: &str| -> Option<&'static str> {
        if !colour {
            return None;
        }
        match (i, c) {
            (2, "running" | "done") | (6, "healthy") => Some("32"),
            (2, "failed" | "backoff") | (6, "unhealthy") => Some("31"),
            (2, "starting" | "stopping" | "waiting") => Some("33"),
            _ => None,
        }
    };
    let line = |cells: &[String], header: bool| {
        let mut o = String::new();
        for (i, (c, w)) in cells.iter().zip(width).enumerate() {
            // Padded first, so that colour codes do not upset the columns.
            let cell = if i + 1 == cells.len() {
                c.clone()
            } else {
                format!("{c:<w$}")
            };
            match paint(i, c).filter(|_| !header) {
                Some(code) => o.push_str(&format!(
                    "\x1b[{code}m{c}\x1b[0m{}",
                    &cell[c.len().min(cell.len())..]
                )),
                None => o.push_str(&cell),
            }
            if i + 1 < cells.len() {
                o.push_str("  ");
            }
        }
        o
    };
    println!("{}", line(&head.map(String::from), true));
    for r in &rows {
        println!("{}", line(r, false));
    }
    EXIT_OK
}

fn write_value(o: &mut String, v: &Value) {
    match v {
        Value::Null => o.push_str("null"),
        Value::Bool(b) => o.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => o.push_str(n),
        Value::String(s) => json::write_str(o, s),
        Value::Array(a) => {
            o.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                write_value(o, x);
            }
            o.push(']');
        }
        Value::Object(m) => {
            o.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    o.push(',');
                }
                json::write_str(o, k);
                o.push(':');
                write_value(o, x);
            }
            o.push('}');
        }
    }
}
