//! Draws the [`Model`] as one frame of ANSI text: a title bar with the panes, the pane,
//! and a help line. Every line is cut to the width (so nothing wraps) and the text that
//! came from programs has its control characters replaced, so that nothing a program
//! writes can move the cursor or change the terminal.

use std::fmt::Write;

use super::{Model, Pane};

const REVERSE: &str = "\x1b[7m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// `s` with control characters shown as `?`, cut or padded to `w` columns (one column
/// per character).
fn fit(s: &str, w: usize) -> String {
    let mut o = String::with_capacity(w);
    let mut n = 0;
    for c in s.chars() {
        if n == w {
            break;
        }
        o.push(if c.is_control() { '?' } else { c });
        n += 1;
    }
    o.extend(std::iter::repeat_n(' ', w - n));
    o
}

fn state_colour(s: &str) -> Option<&'static str> {
    match s {
        "running" | "done" | "healthy" => Some("32"),
        "failed" | "backoff" | "unhealthy" => Some("31"),
        "starting" | "stopping" | "waiting" => Some("33"),
        "stopped" => Some("2"),
        _ => None,
    }
}

fn age(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(s @ 0..=59) => format!("{s}s"),
        Some(s @ 60..=3599) => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "-".into(),
        Some(b) if b >= 1 << 30 => format!("{:.1}G", b as f64 / (1u64 << 30) as f64),
        Some(b) if b >= 1 << 20 => format!("{:.1}M", b as f64 / (1u64 << 20) as f64),
        Some(b) => format!("{}K", b >> 10),
    }
}

/// A table line from cells and their widths (the last cell takes what is left).
fn cells(values: &[String], widths: &[usize], total: usize, colour: &[Option<&str>]) -> String {
    let mut o = String::new();
    let mut used = 0;
    for (i, v) in values.iter().enumerate() {
        let last = i + 1 == values.len();
        let w = if last {
            total.saturating_sub(used)
        } else {
            widths[i].min(total.saturating_sub(used))
        };
        let cell = fit(v, w);
        match colour.get(i).copied().flatten() {
            Some(c) => {
                let _ = write!(o, "\x1b[{c}m{cell}{RESET}");
            }
            None => o.push_str(&cell),
        }
        used += w;
        if !last && used < total {
            o.push(' ');
            used += 1;
        }
    }
    o
}

/// The frame for a `width` x `height` terminal: the lines, each ending with "erase to
/// the end of the line", from the top left corner. Sets the logs pane's page size.
pub fn frame(m: &mut Model, width: usize, height: usize) -> String {
    let (w, h) = (width.max(20), height.max(4));
    let mut lines: Vec<String> = Vec::with_capacity(h);
    // Title bar.
    let mut title = format!(
        " mothership  fleet {}  up {}  {} programs ",
        m.state,
        age(m.uptime),
        m.programs.len()
    );
    for (p, name) in [
        (Pane::Overview, "Overview"),
        (Pane::Logs, "Logs"),
        (Pane::Modules, "Modules"),
    ] {
        if p == m.pane {
            let _ = write!(title, " [{name}]");
        } else {
            let _ = write!(title, "  {name} ");
        }
    }
    lines.push(format!("{REVERSE}{}{RESET}", fit(&title, w)));
    let body = h - 2;
    match m.pane {
        Pane::Overview => overview(m, w, body, &mut lines),
        Pane::Logs => logs(m, w, body, &mut lines),
        Pane::Modules => modules(m, w, body, &mut lines),
    }
    while lines.len() < h - 1 {
        lines.push(String::new());
    }
    // The help line, a question, or a note.
    let help = if let Some((op, name)) = &m.confirm {
        format!(
            "{BOLD}{}{RESET}",
            fit(&format!(" {} {name}? y/n", op.cmd()), w)
        )
    } else if let Some(n) = &m.note {
        fit(&format!(" {n}"), w)
    } else {
        let keys = match m.pane {
            Pane::Logs => " Tab pane  Up/Down PgUp/PgDn Home/End scroll  a all programs  r restart  s stop  u start  q quit",
            _ => " Tab pane  Up/Down move  Enter logs  PgUp/PgDn logs  r restart  s stop  u start  q quit",
        };
        format!("{REVERSE}{}{RESET}", fit(keys, w))
    };
    lines.push(help);
    let mut o = String::from("\x1b[H");
    for (i, l) in lines.iter().take(h).enumerate() {
        o.push_str(l);
        o.push_str("\x1b[K");
        if i + 1 < h {
            o.push_str("\r\n");
        }
    }
    o
}

fn overview(m: &Model, w: usize, body: usize, lines: &mut Vec<String>) {
    let head = [
        "NAME", "GROUP", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "RSS", "HEALTH", "ROUTES",
    ];
    let name_w = m
        .programs
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 24);
    let group_w = m
        .programs
        .iter()
        .map(|r| r.group.chars().count())
        .max()
        .unwrap_or(5)
        .clamp(5, 16);
    let widths = [name_w, group_w, 8, 7, 7, 8, 7, 7, 9, 0];
    let head: Vec<String> = head.iter().map(|s| s.to_string()).collect();
    lines.push(format!("{BOLD}{}{RESET}", cells(&head, &widths, w, &[])));
    // Rows scroll to keep the selected one in view.
    let room = body.saturating_sub(1);
    let first = (m.selected + 1).saturating_sub(room);
    for (i, r) in m.programs.iter().enumerate().skip(first).take(room) {
        let v = vec![
            r.name.clone(),
            r.group.clone(),
            r.state.clone(),
            r.pid.map_or("-".into(), |p| p.to_string()),
            age(r.uptime),
            r.restarts.to_string(),
            r.cpu.map_or("-".into(), |c| format!("{c:.1}s")),
            bytes(r.rss),
            if r.health.is_empty() {
                "-".into()
            } else {
                r.health.clone()
            },
            r.routes.clone(),
        ];
        let colour = [
            None,
            None,
            state_colour(&r.state),
            None,
            None,
            None,
            None,
            None,
            state_colour(&r.health),
        ];
        let line = if i == m.selected {
            format!("{REVERSE}{}{RESET}", cells(&v, &widths, w, &[]))
        } else {
            cells(&v, &widths, w, &colour)
        };
        lines.push(line);
    }
}

fn logs(m: &mut Model, w: usize, body: usize, lines: &mut Vec<String>) {
    let page = body.saturating_sub(1).max(1);
    m.page = page;
    let shown: Vec<&super::LogLine> = m.shown_logs().collect();
    let end = shown.len().saturating_sub(m.scroll);
    let start = end.saturating_sub(page);
    let whose = m.only.as_deref().unwrap_or("all programs");
    let at = if m.scroll == 0 {
        "following".to_string()
    } else {
        format!("{} lines up", m.scroll)
    };
    lines.push(format!(
        "{BOLD}{}{RESET}",
        fit(&format!("logs of {whose} ({at}; {} kept)", shown.len()), w)
    ));
    let name_w = shown[start..end]
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(20);
    for l in &shown[start..end] {
        let prefix: String = format!("{} {} | ", l.time, fit(&l.name, name_w))
            .chars()
            .take(w)
            .collect();
        let text = fit(&l.text, w.saturating_sub(prefix.chars().count()));
        let text = if l.err {
            format!("\x1b[31m{text}{RESET}")
        } else {
            text
        };
        lines.push(format!("\x1b[2m{prefix}{RESET}{text}"));
    }
}

fn modules(m: &Model, w: usize, body: usize, lines: &mut Vec<String>) {
    let head: Vec<String> = ["NAME", "PHASE", "CALLS", "BLOCKS", "ERRORS", "RESETS"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let widths = [24, 10, 10, 10, 10, 0];
    lines.push(format!("{BOLD}{}{RESET}", cells(&head, &widths, w, &[])));
    if m.modules.is_empty() {
        lines.push(fit("no WASM modules in this fleet (or none reported)", w));
    }
    for (i, r) in m.modules.iter().enumerate().take(body.saturating_sub(1)) {
        let v = vec![
            r.name.clone(),
            r.phase.clone(),
            r.calls.to_string(),
            r.blocks.to_string(),
            r.errors.to_string(),
            r.resets.to_string(),
        ];
        let line = cells(&v, &widths, w, &[]);
        lines.push(if i == m.selected {
            format!("{REVERSE}{line}{RESET}")
        } else {
            line
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::{LogLine, Row};

    /// The frame without its escape sequences, as lines.
    fn plain(f: &str) -> Vec<String> {
        let mut o = String::new();
        let mut chars = f.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                // CSI ... final byte
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
                continue;
            }
            if c != '\r' {
                o.push(c);
            }
        }
        o.split('\n').map(|l| l.trim_end().to_string()).collect()
    }

    #[test]
    fn every_line_fits_and_programs_cannot_inject_escapes() {
        let mut m = Model {
            state: "running".into(),
            uptime: Some(3661),
            ..Model::default()
        };
        m.programs = vec![
            Row {
                name: "web".into(),
                group: "app".into(),
                state: "running".into(),
                pid: Some(42),
                restarts: 2,
                rss: Some(3 << 20),
                ..Row::default()
            },
            Row {
                name: "a-very-long-program-name-indeed-longer".into(),
                state: "stopped".into(),
                ..Row::default()
            },
        ];
        m.push_log(LogLine {
            name: "web".into(),
            time: "12:00:00".into(),
            err: false,
            text: "evil \x1b[2J\x07 text".into(),
        });
        for pane in [Pane::Overview, Pane::Logs, Pane::Modules] {
            m.pane = pane;
            let f = frame(&mut m, 60, 12);
            let lines = plain(&f);
            assert_eq!(lines.len(), 12, "{lines:#?}");
            assert!(lines.iter().all(|l| l.chars().count() <= 60), "{lines:#?}");
            assert!(!f.contains("\x1b[2J") && !f.contains('\x07'));
        }
        m.pane = Pane::Overview;
        let lines = plain(&frame(&mut m, 100, 12));
        assert!(lines[0].contains("fleet running") && lines[0].contains("up 1h01m"));
        assert!(lines[1].starts_with("NAME") && lines[1].contains("ROUTES"));
        assert!(
            lines[2].starts_with("web ") && lines[2].contains("42") && lines[2].contains("3.0M")
        );
        assert!(lines[3].contains("stopped"));
        assert!(lines[11].contains("q quit"));
        m.pane = Pane::Logs;
        let lines = plain(&frame(&mut m, 100, 12));
        assert!(
            lines[2].starts_with("12:00:00 web | evil ?[2J? text"),
            "{lines:#?}"
        );
        assert_eq!(m.page, 9);
        m.confirm = Some((crate::tui::Op::Restart, "web".into()));
        let lines = plain(&frame(&mut m, 100, 12));
        assert_eq!(lines[11], " restart web? y/n");
    }
}
