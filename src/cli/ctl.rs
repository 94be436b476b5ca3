//! Client commands of the control socket: `mothership status`, `start`, `stop`,
//! `restart`, `signal` and `logs`. They find the socket as the
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

pub fn socket(given: Option<&Path>) -> PathBuf {
    given.map_or_else(
        || super::run::socket_dir().join(crate::control::SOCKET),
        Path::to_path_buf,
    )
}

/// The program named is not in the fleet.
pub const EXIT_NO_PROGRAM: i32 = 3;

/// Connects to the control socket, or prints why not and gives the exit status.
fn connect(path: &Path) -> Result<UnixStream, i32> {
    match UnixStream::connect(path) {
        Ok(s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            Ok(s)
        }
        Err(e) => {
            eprintln!(
                "mothership: no fleet is running here ({}: {e})",
                path.display()
            );
            Err(EXIT_NO_FLEET)
        }
    }
}

/// A request line for `cmd` with these further members (already JSON).
fn request_line(cmd: &str, members: &[(&str, String)]) -> String {
    let mut line = String::from("{\"v\":1,\"cmd\":");
    json::write_str(&mut line, cmd);
    for (k, v) in members {
        line.push(',');
        json::write_str(&mut line, k);
        line.push(':');
        line.push_str(v);
    }
    line.push_str("}\n");
    line
}

/// Reads one answer line: the object when it says `ok`, or the exit status with its
/// error printed.
fn read_answer(r: &mut impl BufRead, path: &Path) -> Result<Value, i32> {
    let mut answer = String::new();
    match r.read_line(&mut answer) {
        Ok(0) => {
            eprintln!(
                "mothership: {}: the fleet closed the connection",
                path.display()
            );
            return Err(EXIT_FAILED);
        }
        Ok(_) => {}
        Err(e) => {
            eprintln!("mothership: {}: {e}", path.display());
            return Err(EXIT_FAILED);
        }
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
        return Err(exit_for(v.get("code").and_then(Value::as_str)));
    }
    Ok(v)
}

/// The exit status for an error answer's `code`: 3 for an unknown program, 2 for a
/// request the fleet found wrong (a bad pattern or signal name: a usage error), else 1.
pub fn exit_for(code: Option<&str>) -> i32 {
    match code {
        Some("no_such_program") => EXIT_NO_PROGRAM,
        Some("bad_request") => super::EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

/// Sends one request and returns the answer object, or the exit status with its message
/// printed.
fn request(path: &Path, cmd: &str, members: &[(&str, String)]) -> Result<Value, i32> {
    let mut s = connect(path)?;
    send(&mut s, &request_line(cmd, members), path)?;
    read_answer(&mut BufReader::new(&s), path)
}

/// Writes a request. When that fails, the fleet may have said why before it closed the
/// connection (a peer it refuses): that reason is printed rather than the broken pipe.
fn send(s: &mut UnixStream, line: &str, path: &Path) -> Result<(), i32> {
    if let Err(e) = s.write_all(line.as_bytes()) {
        let mut said = String::new();
        let _ = BufReader::new(&*s).read_line(&mut said);
        if let Ok(v) = json::parse(said.trim_end().as_bytes()) {
            if let Some(why) = v.get("error").and_then(Value::as_str) {
                eprintln!("mothership: {why}");
                return Err(EXIT_FAILED);
            }
        }
        eprintln!("mothership: {}: {e}", path.display());
        return Err(EXIT_FAILED);
    }
    Ok(())
}

fn json_strings(items: &[String]) -> String {
    let mut o = String::from("[");
    for (i, t) in items.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        json::write_str(&mut o, t);
    }
    o.push(']');
    o
}

/// `mothership start|stop|restart TARGET...` and `mothership signal TARGET SIG`.
pub fn operate(
    socket_path: Option<&Path>,
    cmd: &str,
    targets: &[String],
    signal: Option<&str>,
    as_json: bool,
    wait: Option<Duration>,
) -> i32 {
    let path = socket(socket_path);
    // For a restart to wait for: each program's pid and restarts before it.
    let before = match wait {
        Some(_) if cmd == "restart" => match request(&path, "status", &[]) {
            Ok(v) => programs_of(&v),
            Err(code) => return code,
        },
        _ => Vec::new(),
    };
    let mut members = vec![("targets", json_strings(targets))];
    if let Some(sig) = signal {
        let mut v = String::new();
        json::write_str(&mut v, sig);
        members.push(("signal", v));
    }
    let v = match request(&path, cmd, &members) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if as_json {
        println!("{}", without_protocol(&v));
        return EXIT_OK;
    }
    let names: Vec<String> = match v.get("programs") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    };
    let verb = match cmd {
        "start" => "starting",
        "stop" => "stopping",
        "restart" => "restarting",
        _ => "signalled",
    };
    let Some(limit) = wait else {
        println!("{verb}: {}", names.join(", "));
        return EXIT_OK;
    };
    // --wait: the status, ten times a second, until each is where it was sent.
    let end = std::time::Instant::now() + limit;
    loop {
        let now = match request(&path, "status", &[]) {
            Ok(v) => programs_of(&v),
            Err(code) => return code,
        };
        let pending: Vec<&(String, String, Option<u64>, u64)> = now
            .iter()
            .filter(|p| names.contains(&p.0))
            .filter(|p| !arrived(cmd, p, before.iter().find(|b| b.0 == p.0)))
            .collect();
        if let Some(failed) = pending.iter().find(|p| p.1 == "failed") {
            eprintln!("mothership: {} has failed", failed.0);
            return EXIT_FAILED;
        }
        if pending.is_empty() {
            let done = match cmd {
                "start" => "started",
                "stop" => "stopped",
                _ => "restarted",
            };
            println!("{done}: {}", names.join(", "));
            return EXIT_OK;
        }
        if std::time::Instant::now() >= end {
            let left: Vec<String> = pending
                .iter()
                .map(|p| format!("{} ({})", p.0, p.1))
                .collect();
            eprintln!(
                "mothership: not {} within {limit:?}: {}",
                if cmd == "stop" { "stopped" } else { "running" },
                left.join(", ")
            );
            return EXIT_FAILED;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each program's name, state, pid and restarts in a status answer.
fn programs_of(v: &Value) -> Vec<(String, String, Option<u64>, u64)> {
    match v.get("programs") {
        Some(Value::Array(ps)) => ps
            .iter()
            .map(|p| {
                (
                    p.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    p.get("state")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    p.get("pid").and_then(Value::as_u64),
                    p.get("restarts").and_then(Value::as_u64).unwrap_or(0),
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a program is where `cmd` sent it: stopped; running (or a job done); and for
/// a restart, running as a new process.
fn arrived(
    cmd: &str,
    p: &(String, String, Option<u64>, u64),
    before: Option<&(String, String, Option<u64>, u64)>,
) -> bool {
    let up = p.1 == "running" || p.1 == "done";
    match cmd {
        "stop" => p.1 == "stopped",
        // One that ran before runs as a new process now; one that did not, runs.
        "restart" => up && before.is_none_or(|b| b.2.is_none() || b.2 != p.2 || b.3 < p.3),
        _ => up,
    }
}

/// The answer as it came, without the protocol's own members.
fn without_protocol(v: &Value) -> String {
    let mut o = String::from("{");
    if let Value::Object(members) = v {
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
    o
}

/// What `mothership logs` asks for.
pub struct LogsAsk {
    pub name: String,
    pub lines: u64,
    pub follow: bool,
    pub grep: Option<String>,
    pub since: Option<Duration>,
}

/// Prints one log line object: `TIME out|err TEXT`, or the object itself as JSON. `Err`
/// when stdout is gone (`logs -f | head`): time to stop.
fn print_line(l: &Value, as_json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let mut o = String::new();
        write_value(&mut o, l);
        return writeln!(out, "{o}");
    }
    let stream = match l.get("stream").and_then(Value::as_str) {
        Some("stderr") => "err",
        _ => "out",
    };
    writeln!(
        out,
        "{} {stream} {}",
        l.get("time").and_then(Value::as_str).unwrap_or("-"),
        l.get("text").and_then(Value::as_str).unwrap_or("")
    )
}

/// The last `n` lines that pass `keep_line(time, text)` in a program's log file and its
/// archives (`FILE.K` or `FILE.K.gz`, oldest first), as line objects: those older than
/// what the fleet has in memory, which begins at `before` (a time, and how many of its
/// lines of that very millisecond it has).
fn from_files(
    file: &Path,
    keep: u32,
    n: usize,
    before: Option<(&str, usize)>,
    keep_line: &dyn Fn(&str, &str) -> bool,
) -> Vec<Value> {
    // Each archive as written, or compressed: while it is being compressed both are
    // there, with the same lines, and only one is read (the plain one, unless it went in
    // the meantime).
    let mut names: Vec<[PathBuf; 2]> = Vec::new();
    for k in (1..=keep).rev() {
        let with = |ext: &str| {
            let mut p = file.as_os_str().to_owned();
            p.push(format!(".{k}{ext}"));
            PathBuf::from(p)
        };
        names.push([with(""), with(".gz")]);
    }
    names.push([file.to_path_buf(), PathBuf::new()]);
    let mut last: std::collections::VecDeque<Value> = std::collections::VecDeque::new();
    let mut push = |time: &str, stream: &str, text: &str| {
        if n == 0 || !keep_line(time, text) {
            return;
        }
        if last.len() == n {
            last.pop_front();
        }
        last.push_back(Value::Object(vec![
            ("time".into(), Value::String(time.into())),
            (
                "stream".into(),
                Value::String(if stream == "err" { "stderr" } else { "stdout" }.into()),
            ),
            ("text".into(), Value::String(text.into())),
        ]));
    };
    // The file's lines of the millisecond memory begins with: the first of them are older.
    let mut boundary: Vec<(String, String, String)> = Vec::new();
    for alternatives in &names {
        let mut opened = None;
        for p in alternatives.iter().filter(|p| !p.as_os_str().is_empty()) {
            match std::fs::File::open(p) {
                Ok(f) => {
                    opened = Some((f, p));
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    eprintln!("mothership: {} not read: {e}", p.display());
                    break;
                }
            }
        }
        let Some((f, p)) = opened else { continue };
        let reader: Box<dyn BufRead> = if p.extension().is_some_and(|e| e == "gz") {
            Box::new(BufReader::new(flate2::read::GzDecoder::new(f)))
        } else {
            Box::new(BufReader::new(f))
        };
        for line in reader.split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line);
            let Some((time, rest)) = line.split_once(' ') else {
                continue;
            };
            let (stream, text) = rest.split_once(' ').unwrap_or((rest, ""));
            match before {
                Some((b, _)) if time > b => {}
                Some((b, _)) if time == b => {
                    boundary.push((time.into(), stream.into(), text.into()));
                }
                _ => push(time, stream, text),
            }
        }
    }
    let older = boundary.len().saturating_sub(before.map_or(0, |b| b.1));
    for (time, stream, text) in &boundary[..older] {
        push(time, stream, text);
    }
    last.into()
}

/// `mothership reopen`: the fleet reopens its log files.
pub fn reopen(socket_path: Option<&Path>) -> i32 {
    match request(&socket(socket_path), "reopen", &[]) {
        Ok(_) => EXIT_OK,
        Err(code) => code,
    }
}

/// `mothership logs NAME [-n N] [-f] [--grep RE] [--since D] [--json]`.
pub fn logs(socket_path: Option<&Path>, ask: &LogsAsk, as_json: bool) -> i32 {
    let path = socket(socket_path);
    let mut name = String::new();
    json::write_str(&mut name, &ask.name);
    let mut members = vec![("name", name), ("lines", ask.lines.to_string())];
    if let Some(g) = &ask.grep {
        let mut v = String::new();
        json::write_str(&mut v, g);
        members.push(("grep", v));
    }
    if let Some(d) = ask.since {
        members.push(("since", format!("{:.3}", d.as_secs_f64())));
    }
    if ask.follow {
        members.push(("follow", "true".into()));
    }
    let mut s = match connect(&path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Err(code) = send(&mut s, &request_line("logs", &members), &path) {
        return code;
    }
    let mut r = BufReader::new(&s);
    let v = match read_answer(&mut r, &path) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let ring: Vec<Value> = match v.get("lines") {
        Some(Value::Array(l)) => l.clone(),
        _ => Vec::new(),
    };
    // Fewer lines in memory than asked for: the older ones come from the log files.
    let want = usize::try_from(ask.lines).unwrap_or(usize::MAX);
    if ring.len() < want {
        if let Some(file) = v.get("file").and_then(Value::as_str) {
            let keep = v.get("keep").and_then(Value::as_u64).unwrap_or(0) as u32;
            let before = v.get("kept_since").and_then(Value::as_str);
            let grep = match &ask.grep {
                Some(g) => match regex::Regex::new(g) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        eprintln!("mothership: --grep: {e}");
                        return EXIT_FAILED;
                    }
                },
                None => None,
            };
            let since = ask.since.map(|d| {
                let now = crate::output::journal::now_ms();
                crate::output::logger::rfc3339_ms(now.saturating_sub(d.as_millis() as u64))
            });
            let at_before = v.get("kept_at_since").and_then(Value::as_u64).unwrap_or(0);
            let older = from_files(
                Path::new(file),
                keep,
                want - ring.len(),
                before.map(|b| (b, at_before as usize)),
                &|time: &str, text: &str| {
                    since.as_deref().is_none_or(|s| time >= s)
                        && grep.as_ref().is_none_or(|re| re.is_match(text))
                },
            );
            for l in &older {
                if print_line(l, as_json).is_err() {
                    return EXIT_OK;
                }
            }
        }
    }
    for l in &ring {
        if print_line(l, as_json).is_err() {
            return EXIT_OK;
        }
    }
    if !ask.follow {
        return EXIT_OK;
    }
    // From here on the fleet sends the new lines as they come.
    let _ = s.set_read_timeout(None);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return EXIT_OK, // the fleet has landed
            Ok(_) => {}
            Err(e) => {
                eprintln!("mothership: {}: {e}", path.display());
                return EXIT_FAILED;
            }
        }
        let Ok(ev) = json::parse(line.trim_end().as_bytes()) else {
            continue;
        };
        match ev.get("event").and_then(Value::as_str) {
            Some("log") if print_line(&ev, as_json).is_err() => return EXIT_OK,
            Some("gap") => eprintln!(
                "mothership: {} line(s) not shown: they were read faster than shown",
                text(ev.get("lost"))
            ),
            _ => {}
        }
    }
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
    let Some(s) = number(v) else {
        return "-".into();
    };
    let s = s as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.parse::<f64>().ok(),
        _ => None,
    }
}

/// CPU time of a program's processes, as `ps` shows it: `0.42s`, `3m07s`, `2h05m`.
fn cpu_time(v: Option<&Value>) -> String {
    let Some(s) = number(v) else {
        return "-".into();
    };
    if s < 60.0 {
        format!("{s:.2}s")
    } else {
        uptime(v)
    }
}

/// Resident memory: `512K`, `1.5M`, `2.0G`.
fn mem(v: Option<&Value>) -> String {
    let Some(b) = number(v) else {
        return "-".into();
    };
    let k = b / 1024.0;
    if k < 1024.0 {
        format!("{k:.0}K")
    } else if k < 1024.0 * 1024.0 {
        format!("{:.1}M", k / 1024.0)
    } else {
        format!("{:.1}G", k / 1024.0 / 1024.0)
    }
}

/// `mothership status [--json]`.
pub fn status(socket_path: Option<&Path>, as_json: bool) -> i32 {
    let path = socket(socket_path);
    let v = match request(&path, "status", &[]) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if as_json {
        println!("{}", without_protocol(&v));
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
        "CPU",
        "MEM",
        "HEALTH",
        "LAST EXIT",
    ];
    let rows: Vec<[String; 10]> = programs
        .iter()
        .map(|p| {
            [
                text(p.get("name")),
                text(p.get("group")),
                text(p.get("state")),
                text(p.get("pid")),
                uptime(p.get("uptime_seconds")),
                text(p.get("restarts")),
                cpu_time(p.get("cpu_seconds")),
                mem(p.get("rss_bytes")),
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
            (2, "running" | "done") | (8, "healthy") => Some("32"),
            (2, "failed" | "backoff") | (8, "unhealthy") => Some("31"),
            (2, "stopped") => Some("2"),
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
