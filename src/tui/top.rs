//! `mothership top`: the dashboard attached to a running fleet through its control
//! socket. One connection carries a subscription (log lines and changes of state), a
//! `status` request once a second or after a change, and the operator's commands; a
//! `poll` on the terminal, the socket and the signals it catches drives it. It redraws
//! only when the frame changed. TERM, INT and HUP end it with the terminal restored; the
//! fleet's landing ends it too.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::keys;
use super::render::frame;
use super::term::Terminal;
use super::{clock, Command, LogLine, Model};
use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::proto::json::{self, Value};

/// How often the status is asked for.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs the dashboard against the control socket at `path`; the exit status.
pub fn top(path: &Path) -> i32 {
    let mut sock = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "mothership: no fleet is running here ({}: {e})",
                path.display()
            );
            return crate::cli::ctl::EXIT_NO_FLEET;
        }
    };
    // Signals become bytes on pipes the poll watches: one for those that end it, one for
    // a resize.
    let mut ids = Vec::new();
    let mut pipe = |sigs: &[i32]| -> std::io::Result<UnixStream> {
        let (r, w) = UnixStream::pair()?;
        r.set_nonblocking(true)?;
        for &sig in sigs {
            ids.push(signal_hook::low_level::pipe::register(sig, w.try_clone()?)?);
        }
        Ok(r)
    };
    let stops = pipe(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT]);
    let winch = pipe(&[libc::SIGWINCH]);
    let (stops, winch) = match (stops, winch) {
        (Ok(s), Ok(w)) => (s, w),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("mothership: {e}");
            return EXIT_FAILED;
        }
    };
    let hello = b"{\"v\":1,\"cmd\":\"status\"}\n";
    let _ = sock.write_all(hello);
    // The first answer before the terminal is taken: a fleet that refuses (not in its
    // group, too many clients) is told on the plain terminal, with its exit status.
    let mut inbuf: Vec<u8> = Vec::new();
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    while !inbuf.contains(&b'\n') && inbuf.len() < 4 << 20 {
        let mut b = [0u8; 16384];
        match sock.read(&mut b) {
            Ok(0) => break,
            Ok(k) => inbuf.extend_from_slice(&b[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("mothership: {}: {e}", path.display());
                return EXIT_FAILED;
            }
        }
    }
    let Some(nl) = inbuf.iter().position(|&c| c == b'\n') else {
        eprintln!(
            "mothership: {}: the fleet closed the connection",
            path.display()
        );
        return EXIT_FAILED;
    };
    if let Ok(v) = json::parse(&inbuf[..nl]) {
        if v.get("ok") == Some(&Value::Bool(false)) {
            let why = v.get("error").and_then(Value::as_str).unwrap_or("refused");
            eprintln!("mothership: {why}");
            return crate::cli::ctl::exit_for(v.get("code").and_then(Value::as_str));
        }
    }
    let _ = sock.set_nonblocking(true);
    let mut term = match Terminal::enter(1) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mothership: cannot set up the terminal: {e}");
            return EXIT_FAILED;
        }
    };
    let mut m = Model::default();
    let mut failed = false;
    let mut last = String::new();
    let mut next_status = Instant::now() + REFRESH;
    let mut status_soon = false;
    let mut subscribed = false;
    // The history asked for: answers still to come, and where each program's left off.
    let mut history: Option<(usize, String)> = None;
    let end = loop {
        let (w, h) = term.size();
        let f = frame(&mut m, w, h);
        if f != last {
            term.draw(&f);
            last = f;
        }
        let now = Instant::now();
        if now >= next_status || status_soon {
            if sock.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n").is_err() {
                break "the fleet has gone";
            }
            next_status = now + REFRESH;
            status_soon = false;
        }
        // (The first answer, read before the loop, is taken in at once.)
        let wait = if inbuf.contains(&b'\n') {
            Duration::ZERO
        } else {
            next_status.saturating_duration_since(Instant::now())
        };
        let mut fds = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stops.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: winch.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on pollfds that live through the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 4, wait.as_millis().min(1000) as i32 + 1) };
        if n < 0 {
            continue; // interrupted: the signal is on its pipe
        }
        if fds[2].revents != 0 {
            break "";
        }
        if fds[3].revents != 0 {
            let mut b = [0u8; 64];
            while matches!((&winch).read(&mut b), Ok(k) if k > 0) {}
            last.clear(); // redraw whole at the new size
            term.draw("\x1b[2J");
        }
        if fds[0].revents != 0 {
            let mut b = [0u8; 256];
            // SAFETY: read into a live buffer.
            let k = unsafe { libc::read(0, b.as_mut_ptr().cast(), b.len()) };
            if k <= 0 {
                break "";
            }
            let mut quit = false;
            for key in keys::parse(&b[..k as usize]) {
                match m.key(key) {
                    Some(Command::Quit) => quit = true,
                    Some(Command::Operate(op, name)) => {
                        let mut req = String::from("{\"v\":1,\"cmd\":\"");
                        req.push_str(op.cmd());
                        req.push_str("\",\"targets\":[");
                        json::write_str(&mut req, &name);
                        req.push_str("]}\n");
                        let _ = sock.write_all(req.as_bytes());
                        m.note = Some(format!("{} {name}: asked", op.cmd()));
                        status_soon = true;
                    }
                    None => {}
                }
            }
            if quit {
                break "";
            }
        }
        if fds[1].revents != 0 || inbuf.contains(&b'\n') {
            let mut b = [0u8; 16384];
            loop {
                match sock.read(&mut b) {
                    Ok(0) => {
                        inbuf.clear();
                        break;
                    }
                    Ok(k) => inbuf.extend_from_slice(&b[..k]),
                    Err(_) => break,
                }
            }
            if fds[1].revents & (libc::POLLHUP | libc::POLLERR) != 0 && !inbuf.contains(&b'\n') {
                break "the fleet has landed";
            }
            while let Some(nl) = inbuf.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = inbuf.drain(..=nl).collect();
                if let Ok(v) = json::parse(&line[..nl]) {
                    status_soon |= take(&mut m, &v);
                    // The lines from before it attached, each program's last ones; then
                    // the new ones, each program's from the line after the last it got,
                    // so that none is missed or shown twice.
                    if history.is_none() && v.get("programs").is_some() {
                        let mut req = String::new();
                        for p in &m.programs {
                            req.push_str("{\"v\":1,\"cmd\":\"logs\",\"lines\":50,\"name\":");
                            json::write_str(&mut req, &p.name);
                            req.push_str("}\n");
                        }
                        history = Some((m.programs.len(), String::new()));
                        let _ = sock.write_all(req.as_bytes());
                    }
                    if let (Some((left, from)), Some(name), Some(next)) = (
                        history.as_mut(),
                        v.get("name").and_then(Value::as_str),
                        v.get("next").and_then(Value::as_u64),
                    ) {
                        if !from.is_empty() {
                            from.push(',');
                        }
                        json::write_str(from, name);
                        from.push_str(&format!(":{next}"));
                        *left = left.saturating_sub(1);
                    }
                    if let Some((0, from)) = &history {
                        if !subscribed {
                            subscribed = true;
                            let req = format!("{{\"v\":1,\"cmd\":\"subscribe\",\"events\":[\"state\",\"log\"],\"from\":{{{from}}}}}\n");
                            let _ = sock.write_all(req.as_bytes());
                        }
                    }
                }
            }
            if inbuf.len() > 4 << 20 {
                failed = true;
                break "the fleet's answer is too long";
            }
        }
    };
    term.restore();
    for id in ids {
        signal_hook::low_level::unregister(id);
    }
    if !end.is_empty() {
        eprintln!("mothership: {end}");
    }
    if failed {
        EXIT_FAILED
    } else {
        EXIT_OK
    }
}

/// Takes in one line from the fleet; true when the status should be asked again soon.
fn take(m: &mut Model, v: &Value) -> bool {
    match v.get("event").and_then(Value::as_str) {
        Some("log") => {
            m.push_log(LogLine {
                name: v.get("name").and_then(Value::as_str).unwrap_or("").into(),
                time: clock(v.get("time").and_then(Value::as_str).unwrap_or("")),
                err: v.get("stream").and_then(Value::as_str) == Some("stderr"),
                text: v.get("text").and_then(Value::as_str).unwrap_or("").into(),
            });
            false
        }
        Some("program" | "fleet" | "health") => true,
        Some(_) => false,
        None => {
            if v.get("programs").is_some() {
                m.set_status(v);
            } else if let (Some(Value::Array(lines)), Some(name)) =
                (v.get("lines"), v.get("name").and_then(Value::as_str))
            {
                for l in lines {
                    m.push_log(LogLine {
                        name: name.into(),
                        time: clock(l.get("time").and_then(Value::as_str).unwrap_or("")),
                        err: l.get("stream").and_then(Value::as_str) == Some("stderr"),
                        text: l.get("text").and_then(Value::as_str).unwrap_or("").into(),
                    });
                }
            } else if v.get("ok") == Some(&Value::Bool(false)) {
                m.note = v.get("error").and_then(Value::as_str).map(String::from);
            }
            false
        }
    }
}
