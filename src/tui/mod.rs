//! The dashboard: `mothership --tui` (in the fleet's own loop) and `mothership top` (a
//! client of the control socket). Both feed the same [`Model`] (the status answer of the
//! control socket, and log lines as they come), draw it with [`render`] and act on keys
//! with [`Model::key`]; only their sources and their terminal loop differ. No terminal
//! crate: [`term`] is raw mode, the alternate screen and ANSI sequences, which is all a
//! table and a log view need (see the README for the size this saves).

pub mod keys;
pub mod local;
pub mod render;
pub mod term;
pub mod top;

use std::collections::VecDeque;

use crate::proto::json::Value;
use keys::Key;

/// Log lines the dashboard keeps.
pub const LOG_LINES: usize = 5000;
/// Characters of a log line it keeps.
pub const LINE_CHARS: usize = 512;

/// One program's row in the overview.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub name: String,
    pub group: String,
    pub state: String,
    pub pid: Option<u64>,
    pub uptime: Option<u64>,
    pub restarts: u64,
    pub cpu: Option<f64>,
    pub rss: Option<u64>,
    pub health: String,
    pub routes: String,
}

/// One WASM module's row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModRow {
    pub name: String,
    pub phase: String,
    pub calls: u64,
    pub blocks: u64,
    pub errors: u64,
    pub resets: u64,
}

/// One line of the logs pane.
#[derive(Clone, Debug, PartialEq)]
pub struct LogLine {
    pub name: String,
    /// `HH:MM:SS` of the time it was read (UTC).
    pub time: String,
    pub err: bool,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Overview,
    Logs,
    Modules,
}

/// What the operator may do to the selected program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Restart,
}

impl Op {
    pub fn cmd(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Restart => "restart",
        }
    }
}

/// What a key asks of the dashboard's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Quit,
    Operate(Op, String),
}

/// What the dashboard shows, and where the operator stands in it.
#[derive(Debug)]
pub struct Model {
    pub state: String,
    pub uptime: Option<u64>,
    pub programs: Vec<Row>,
    pub modules: Vec<ModRow>,
    pub logs: VecDeque<LogLine>,
    pub pane: Pane,
    /// The selected program (overview) or module.
    pub selected: usize,
    /// Lines up from the newest in the logs pane; 0 follows new lines.
    pub scroll: usize,
    /// The logs pane shows only this program's lines.
    pub only: Option<String>,
    /// Asked and waiting for y or n.
    pub confirm: Option<(Op, String)>,
    /// A passing message for the help line.
    pub note: Option<String>,
    /// Lines a page of the logs pane holds (set by the last draw).
    pub page: usize,
}

impl Default for Model {
    fn default() -> Model {
        Model {
            state: "connecting".into(),
            uptime: None,
            programs: Vec::new(),
            modules: Vec::new(),
            logs: VecDeque::new(),
            pane: Pane::Overview,
            selected: 0,
            scroll: 0,
            only: None,
            confirm: None,
            note: None,
            page: 10,
        }
    }
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.parse().ok(),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> String {
    v.and_then(Value::as_str).unwrap_or("").to_string()
}

impl Model {
    /// Takes in a status answer (`/status.json`, or the control socket's `status`).
    pub fn set_status(&mut self, v: &Value) {
        self.state = string(v.get("state"));
        self.uptime = num(v.get("uptime_seconds")).map(|s| s as u64);
        if let Some(Value::Array(ps)) = v.get("programs") {
            self.programs = ps
                .iter()
                .map(|p| Row {
                    name: string(p.get("name")),
                    group: string(p.get("group")),
                    state: string(p.get("state")),
                    pid: p.get("pid").and_then(Value::as_u64),
                    uptime: num(p.get("uptime_seconds")).map(|s| s as u64),
                    restarts: p.get("restarts").and_then(Value::as_u64).unwrap_or(0),
                    cpu: num(p.get("cpu_seconds")),
                    rss: p.get("rss_bytes").and_then(Value::as_u64),
                    health: string(p.get("health")),
                    routes: match p.get("routes") {
                        Some(Value::Array(r)) => r
                            .iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                        _ => String::new(),
                    },
                })
                .collect();
        }
        if let Some(Value::Array(ms)) = v.get("modules") {
            self.modules = ms
                .iter()
                .map(|m| ModRow {
                    name: string(m.get("name")),
                    phase: string(m.get("phase")),
                    calls: m.get("calls").and_then(Value::as_u64).unwrap_or(0),
                    blocks: m.get("blocks").and_then(Value::as_u64).unwrap_or(0),
                    errors: m.get("errors").and_then(Value::as_u64).unwrap_or(0),
                    resets: m.get("resets").and_then(Value::as_u64).unwrap_or(0),
                })
                .collect();
        }
        let n = self.rows();
        self.selected = self.selected.min(n.saturating_sub(1));
    }

    /// Keeps one log line (the oldest go past [`LOG_LINES`]); a scrolled view stays on
    /// the lines it shows.
    pub fn push_log(&mut self, mut line: LogLine) {
        // Wider than any terminal: the rest is not kept.
        if let Some((cut, _)) = line.text.char_indices().nth(LINE_CHARS) {
            line.text.truncate(cut);
        }
        if self.logs.len() >= LOG_LINES {
            self.logs.pop_front();
        }
        if self.scroll > 0 && self.only.as_ref().is_none_or(|o| *o == line.name) {
            self.scroll += 1;
        }
        self.logs.push_back(line);
    }

    /// Rows of the pane that selects (programs or modules).
    fn rows(&self) -> usize {
        match self.pane {
            Pane::Modules => self.modules.len(),
            _ => self.programs.len(),
        }
    }

    /// Log lines the logs pane shows (all, or one program's).
    pub fn shown_logs(&self) -> impl Iterator<Item = &LogLine> {
        self.logs
            .iter()
            .filter(move |l| self.only.as_ref().is_none_or(|o| *o == l.name))
    }

    /// Acts on a key; what it asks of the owner, if anything.
    pub fn key(&mut self, k: Key) -> Option<Command> {
        self.note = None;
        if let Some((op, name)) = self.confirm.take() {
            return match k {
                Key::Char('y' | 'Y') | Key::Enter => Some(Command::Operate(op, name)),
                _ => {
                    self.note = Some(format!("{} of {name} cancelled", op.cmd()));
                    None
                }
            };
        }
        match k {
            Key::Char('q') | Key::Ctrl('c') => return Some(Command::Quit),
            Key::Tab => {
                self.pane = match self.pane {
                    Pane::Overview => Pane::Logs,
                    Pane::Logs => Pane::Modules,
                    Pane::Modules => Pane::Overview,
                };
                self.selected = 0;
            }
            Key::BackTab => {
                self.pane = match self.pane {
                    Pane::Overview => Pane::Modules,
                    Pane::Logs => Pane::Overview,
                    Pane::Modules => Pane::Logs,
                };
                self.selected = 0;
            }
            Key::Up if self.pane == Pane::Logs => self.scroll_by(1),
            Key::Down if self.pane == Pane::Logs => self.scroll = self.scroll.saturating_sub(1),
            Key::Up => self.selected = self.selected.saturating_sub(1),
            Key::Down => self.selected = (self.selected + 1).min(self.rows().saturating_sub(1)),
            Key::PageUp => {
                self.pane = Pane::Logs;
                self.scroll_by(self.page.max(1));
            }
            Key::PageDown => self.scroll = self.scroll.saturating_sub(self.page.max(1)),
            Key::End => self.scroll = 0,
            Key::Home => self.scroll_by(usize::MAX),
            Key::Enter if self.pane == Pane::Overview => {
                if let Some(r) = self.programs.get(self.selected) {
                    self.only = Some(r.name.clone());
                    self.pane = Pane::Logs;
                    self.scroll = 0;
                }
            }
            Key::Char('a') if self.pane == Pane::Logs => {
                self.only = None;
                self.scroll = 0;
            }
            Key::Char(c @ ('r' | 's' | 'u')) if self.pane != Pane::Modules => {
                let op = match c {
                    'r' => Op::Restart,
                    's' => Op::Stop,
                    _ => Op::Start,
                };
                let name = match (&self.only, self.pane) {
                    (Some(o), Pane::Logs) => Some(o.clone()),
                    _ => self.programs.get(self.selected).map(|r| r.name.clone()),
                };
                if let Some(name) = name {
                    self.confirm = Some((op, name));
                }
            }
            _ => {}
        }
        None
    }

    fn scroll_by(&mut self, n: usize) {
        let max = self.shown_logs().count().saturating_sub(self.page.max(1));
        self.scroll = self.scroll.saturating_add(n).min(max);
    }
}

/// `HH:MM:SS` of an RFC 3339 time.
pub fn clock(rfc3339: &str) -> String {
    rfc3339.get(11..19).unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::json;

    fn model() -> Model {
        let mut m = Model::default();
        let v = json::parse(
            br#"{"state":"running","uptime_seconds":75,"programs":[
            {"name":"web","group":"app","state":"running","pid":42,"uptime_seconds":70,"restarts":1,"rss_bytes":1048576,"cpu_seconds":1.5,"health":"healthy","routes":["/api"]},
            {"name":"worker","group":"app","state":"stopped","pid":null,"restarts":0}],
            "modules":[{"name":"auth","phase":"request","calls":9,"blocks":2,"errors":0,"resets":0}]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        m.set_status(&v);
        m
    }

    #[test]
    fn status_becomes_rows() {
        let m = model();
        assert_eq!(m.state, "running");
        assert_eq!(m.programs.len(), 2);
        assert_eq!(m.programs[0].pid, Some(42));
        assert_eq!(m.programs[0].routes, "/api");
        assert_eq!(m.programs[0].cpu, Some(1.5));
        assert_eq!(m.programs[1].pid, None);
        assert_eq!(m.modules[0].blocks, 2);
    }

    #[test]
    fn keys_move_switch_panes_and_ask_before_acting() {
        let mut m = model();
        assert_eq!(m.key(Key::Down), None);
        assert_eq!(m.selected, 1);
        m.key(Key::Down);
        assert_eq!(m.selected, 1, "stops at the last row");
        // Restart asks first; n cancels, y confirms.
        assert_eq!(m.key(Key::Char('r')), None);
        assert_eq!(m.confirm, Some((Op::Restart, "worker".into())));
        assert_eq!(m.key(Key::Char('n')), None);
        assert!(m.note.as_deref().unwrap_or("").contains("cancelled"));
        m.key(Key::Char('u'));
        assert_eq!(
            m.key(Key::Char('y')),
            Some(Command::Operate(Op::Start, "worker".into()))
        );
        m.key(Key::Tab);
        assert_eq!(m.pane, Pane::Logs);
        m.key(Key::Tab);
        assert_eq!(m.pane, Pane::Modules);
        m.key(Key::BackTab);
        assert_eq!(m.pane, Pane::Logs);
        assert_eq!(m.key(Key::Char('q')), Some(Command::Quit));
        assert_eq!(m.key(Key::Ctrl('c')), Some(Command::Quit));
    }

    #[test]
    fn logs_scroll_follow_and_filter() {
        let mut m = model();
        m.page = 3;
        for i in 0..10 {
            m.push_log(LogLine {
                name: if i % 2 == 0 { "web" } else { "worker" }.into(),
                time: "12:00:00".into(),
                err: false,
                text: format!("line {i}"),
            });
        }
        m.key(Key::PageUp);
        assert_eq!((m.pane, m.scroll), (Pane::Logs, 3));
        // New lines keep a scrolled view where it is.
        m.push_log(LogLine {
            name: "web".into(),
            time: "12:00:01".into(),
            err: true,
            text: "new".into(),
        });
        assert_eq!(m.scroll, 4);
        m.key(Key::Home);
        assert_eq!(m.scroll, 8, "up to the oldest page");
        m.key(Key::End);
        assert_eq!(m.scroll, 0);
        // Enter on a program shows its lines only; `a` all again.
        m.key(Key::BackTab);
        m.key(Key::Enter);
        assert_eq!(m.only.as_deref(), Some("web"));
        assert_eq!(m.shown_logs().count(), 6);
        // `s` in its logs stops that program.
        m.key(Key::Char('s'));
        assert_eq!(m.confirm, Some((Op::Stop, "web".into())));
        m.key(Key::Escape);
        m.key(Key::Char('a'));
        assert_eq!(m.shown_logs().count(), 11);
        for _ in 0..LOG_LINES {
            m.push_log(LogLine {
                name: "web".into(),
                time: String::new(),
                err: false,
                text: String::new(),
            });
        }
        assert_eq!(m.logs.len(), LOG_LINES);
    }
}
