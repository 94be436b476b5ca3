//! `mothership --tui`: the dashboard inside the fleet's own loop, a subsystem like the
//! others. Keys come from stdin (registered with the loop), the programs' lines from the
//! supervisor's journal and mothership's own lines from the logger (diverted while the
//! dashboard owns the terminal), the status from the fleet view. Frames are written to
//! the terminal through a descriptor of its own opened non-blocking (the loop never waits
//! on the terminal; a frame it cannot take now is finished later), only when they change,
//! and at most once per turn; the status is refreshed once a second. `q` lands the fleet.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use signal_hook_mio::v1_0::Signals;

use super::keys;
use super::render::frame;
use super::{Command, LogLine, Model};
use crate::fleet::resources::Cached;
use crate::fleet::{FleetView, Message, Operation};
use crate::output::journal::Journal;
use crate::output::logger::{rfc3339_ms, take_diverted};
use crate::proto::json;
use crate::reactor::TUI_TOKENS;

const STDIN: Token = Token(TUI_TOKENS);
const WINCH: Token = Token(TUI_TOKENS + 1);
const REFRESH: Duration = Duration::from_secs(1);
/// Frames drawn at most this often (a busy loop turns far more often).
const FRAME_EVERY: Duration = Duration::from_millis(50);

pub struct Local {
    model: Model,
    /// The terminal, opened again (keys and frames) without blocking: a description of
    /// its own, so that the shell's is left as it was.
    tty: File,
    journal: Rc<RefCell<Journal>>,
    /// The next line of each program's log to show.
    cursors: Vec<u64>,
    signals: Signals,
    /// The last frame drawn, and what of the current one the terminal has not taken.
    last: String,
    pending: Vec<u8>,
    next_status: Instant,
    status_due: bool,
    outbox: Vec<Message>,
    sample: Cached,
    stdin_open: bool,
    extras: Option<crate::proxy::status::SharedExtras>,
    /// Something it shows changed since the last frame, and when that frame was drawn.
    dirty: bool,
    drawn_at: Instant,
    /// With `log_dir`: mothership's own lines are written to `mothership.log` there too
    /// (the dashboard has the terminal they would have gone to).
    own_file: Option<crate::output::files::Files>,
}

impl Local {
    pub fn new(journal: Rc<RefCell<Journal>>) -> io::Result<Local> {
        // SAFETY: ttyname returns a pointer to a static buffer or null.
        let name = unsafe { libc::ttyname(1) };
        if name.is_null() {
            return Err(io::Error::other("stdout is not a terminal"));
        }
        // SAFETY: a NUL-terminated string from ttyname.
        let path = unsafe { std::ffi::CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)?;
        let n = journal.borrow().len();
        Ok(Local {
            model: Model::default(),
            tty,
            journal,
            cursors: vec![0; n],
            signals: Signals::new([libc::SIGWINCH])?,
            last: String::new(),
            pending: Vec::new(),
            next_status: Instant::now(),
            status_due: true,
            outbox: Vec::new(),
            sample: Cached::default(),
            stdin_open: true,
            extras: None,
            dirty: true,
            drawn_at: Instant::now(),
            own_file: None,
        })
    }

    /// Writes mothership's own lines to `path` as well, rotated as `settings` say.
    pub fn own_lines_to(&mut self, path: std::path::PathBuf, settings: &crate::manifest::LogFiles) {
        match crate::output::files::Files::start(vec![Some(path)], settings) {
            Ok(f) => self.own_file = Some(f),
            Err(e) => log::warn!("mothership's own log file: {e}"),
        }
    }

    /// Shows the edge's routes and modules.
    pub fn attach_extras(&mut self, extras: crate::proxy::status::SharedExtras) {
        self.extras = Some(extras);
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(
            &mut SourceFd(&self.tty.as_raw_fd()),
            STDIN,
            Interest::READABLE,
        )?;
        registry.register(&mut self.signals, WINCH, Interest::READABLE)
    }

    pub fn take_messages(&mut self, out: &mut Vec<Message>) {
        out.append(&mut self.outbox);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        if self.dirty || !self.pending.is_empty() {
            return Some(self.next_status.min(self.drawn_at + FRAME_EVERY));
        }
        Some(self.next_status)
    }

    pub fn hear(&mut self, msg: &Message) {
        if matches!(
            msg,
            Message::Program { .. } | Message::Fleet { .. } | Message::Health { .. }
        ) {
            self.status_due = true;
        }
    }

    pub fn ready(&mut self, token: Token, registry: &Registry, fleet: &FleetView) {
        match token {
            WINCH => {
                for _ in self.signals.pending() {}
                self.last.clear();
                self.pending = b"\x1b[2J".to_vec();
                self.dirty = true;
            }
            STDIN => {
                self.read_keys(registry, fleet);
                self.dirty = true;
            }
            _ => {}
        }
    }

    fn read_keys(&mut self, registry: &Registry, fleet: &FleetView) {
        let mut buf = [0u8; 256];
        loop {
            match self.tty.read(&mut buf) {
                Ok(0) => return self.terminal_gone(registry),
                Ok(n) => {
                    for k in keys::parse(&buf[..n]) {
                        match self.model.key(k) {
                            Some(Command::Quit) => {
                                self.model.note = Some("landing the fleet".into());
                                self.outbox.push(Message::Land {
                                    reason: "quit from the dashboard".into(),
                                });
                            }
                            Some(Command::Operate(op, name)) => {
                                let op = match op {
                                    super::Op::Start => Operation::Start,
                                    super::Op::Stop => Operation::Stop,
                                    super::Op::Restart => Operation::Restart,
                                };
                                // The same checks as the control socket's.
                                let ids = crate::control::resolve(fleet, &[name.as_str()]);
                                self.model.note = Some(match ids {
                                    Err(_) => format!("no program {name}"),
                                    Ok(ids) => match crate::control::refusal(fleet, op, &ids) {
                                        Some(why) => why,
                                        None => {
                                            self.outbox.push(Message::Operate { ids, op });
                                            format!("{op:?} {name}: asked")
                                        }
                                    },
                                });
                            }
                            None => {}
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EIO: the terminal hung up.
                Err(_) => return self.terminal_gone(registry),
            }
        }
    }

    /// The terminal hung up (the window closed, the session ended): the fleet that ran
    /// in it lands, as a program in the foreground would end.
    fn terminal_gone(&mut self, registry: &Registry) {
        if !self.stdin_open {
            return;
        }
        let _ = registry.deregister(&mut SourceFd(&self.tty.as_raw_fd()));
        self.stdin_open = false;
        self.outbox.push(Message::Land {
            reason: "the dashboard's terminal closed".into(),
        });
    }

    /// The end of a turn: new lines, a fresh status when something changed, and a frame
    /// when it differs from the last.
    pub fn turn_end(&mut self, fleet: &FleetView, now: Instant) {
        self.pull_lines();
        if self.status_due || now >= self.next_status {
            self.refresh(fleet, now);
        }
        self.draw(now);
    }

    pub fn timers_due(&mut self, fleet: &FleetView, now: Instant) {
        if now >= self.next_status {
            self.refresh(fleet, now);
        }
        self.draw(now);
    }

    fn refresh(&mut self, fleet: &FleetView, now: Instant) {
        let pgids: Vec<i32> = fleet.ships.iter().filter_map(|s| s.pgid).collect();
        let usage = self.sample.get(&pgids, now, Duration::from_secs(2));
        let extras = self.extras.as_ref().map(|e| e.borrow());
        let body = crate::proxy::status::json_with(fleet, usage, extras.as_deref(), now);
        drop(extras);
        if let Ok(v) = json::parse(body.trim_end().as_bytes()) {
            self.model.set_status(&v);
        }
        self.status_due = false;
        self.next_status = now + REFRESH;
        self.dirty = true;
    }

    /// Takes the programs' new lines and mothership's own into the logs pane.
    fn pull_lines(&mut self) {
        let j = self.journal.borrow();
        for (i, next) in self.cursors.iter_mut().enumerate() {
            let Some(log) = j.get(i) else { continue };
            if log.next_seq() <= *next {
                continue;
            }
            for l in log.since(*next) {
                self.dirty = true;
                self.model.push_log(LogLine {
                    name: log.name.clone(),
                    time: super::clock(&rfc3339_ms(l.at_ms)),
                    err: l.stream == crate::output::Stream::Stderr,
                    text: String::from_utf8_lossy(&l.text).into_owned(),
                });
            }
            *next = log.next_seq();
        }
        drop(j);
        let now_text = crate::output::logger::rfc3339_now();
        let mut file_lines = Vec::new();
        for line in take_diverted() {
            self.dirty = true;
            let text = String::from_utf8_lossy(&line);
            let text = text.split_once(" | ").map_or(&*text, |(_, t)| t);
            if self.own_file.is_some() {
                file_lines.extend_from_slice(now_text.as_bytes());
                file_lines.extend_from_slice(b" err ");
                file_lines.extend_from_slice(text.as_bytes());
                file_lines.push(b'\n');
            }
            self.model.push_log(LogLine {
                name: "mothership".into(),
                time: super::clock(&now_text),
                err: text.starts_with("error:") || text.starts_with("warning:"),
                text: text.to_string(),
            });
        }
        if let Some(f) = &self.own_file {
            f.push(0, file_lines);
        }
    }

    fn draw(&mut self, now: Instant) {
        if self.pending.is_empty() {
            if !self.dirty || now < self.drawn_at + FRAME_EVERY {
                return;
            }
            self.dirty = false;
            self.drawn_at = now;
            let (w, h) = super::term::size(self.tty.as_raw_fd());
            let f = frame(&mut self.model, w, h);
            if f == self.last {
                return;
            }
            self.pending = f.clone().into_bytes();
            self.last = f;
        } else if now < self.drawn_at + FRAME_EVERY {
            return;
        }
        // A terminal that takes nothing (stopped, or its reader gone) is tried again
        // every FRAME_EVERY, not on every turn.
        self.drawn_at = now;
        while !self.pending.is_empty() {
            match self.tty.write(&self.pending) {
                Ok(0) => return,
                Ok(n) => {
                    self.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The terminal is slow: the rest goes at the end of a later turn.
                Err(_) => return,
            }
        }
    }
}
