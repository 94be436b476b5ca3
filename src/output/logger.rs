//! Mothership's own log lines (through `log` and `env_logger`, filtered by `RUST_LOG`):
//! human-readable and aligned with child output by default, one JSON object per line with
//! `--log-format json`. Lines go through the output queue so they keep their order with
//! child output and never block the loop.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Output, Stream};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Width the `mothership` prefix is padded to (the widest child name).
static WIDTH: AtomicUsize = AtomicUsize::new(10);

pub fn set_width(w: usize) {
    WIDTH.store(w.max("mothership".len()), Ordering::Relaxed);
}

pub fn width() -> usize {
    WIDTH.load(Ordering::Relaxed)
}

/// Own log lines dropped because the output queue was full (see `Output::push_own`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Where formatted log lines go: the output queue when it runs, else stderr directly.
struct Sink(Option<Output>, LogFormat);

/// While the dashboard owns the terminal: mothership's own lines, kept for it to show.
static DIVERTED: Mutex<Option<VecDeque<Vec<u8>>>> = Mutex::new(None);
/// Lines kept for the dashboard between two of its turns.
const DIVERT_MAX: usize = 1000;

/// Lines the dashboard did not take in time (past [`DIVERT_MAX`] between two turns).
static DIVERT_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Sends mothership's own log lines to the dashboard ([`take_diverted`]) instead of
/// stderr, or (false) back to stderr; then returns the lines the dashboard has not
/// taken, for the caller to write once the terminal is its own again.
pub fn divert(on: bool) -> Vec<Vec<u8>> {
    let Ok(mut d) = DIVERTED.lock() else {
        return Vec::new();
    };
    let left = std::mem::replace(&mut *d, on.then(VecDeque::new));
    let mut left: Vec<Vec<u8>> = left.map(Vec::from).unwrap_or_default();
    let dropped = DIVERT_DROPPED.swap(0, Ordering::Relaxed);
    if !on && dropped > 0 {
        left.push(
            format!("({dropped} of mothership's own lines were dropped while the dashboard ran)")
                .into_bytes(),
        );
    }
    left
}

/// The lines logged since the last call, while diverted (without their line feed).
pub fn take_diverted() -> Vec<Vec<u8>> {
    DIVERTED
        .lock()
        .ok()
        .and_then(|mut d| d.as_mut().map(|q| q.drain(..).collect()))
        .unwrap_or_default()
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Ok(mut d) = DIVERTED.lock() {
            if let Some(q) = d.as_mut() {
                if q.len() < DIVERT_MAX {
                    q.push_back(buf.strip_suffix(b"\n").unwrap_or(buf).to_vec());
                } else {
                    DIVERT_DROPPED.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(buf.len());
            }
        }
        match &self.0 {
            Some(o) => {
                let dropped = DROPPED.load(Ordering::Relaxed);
                if dropped > 0 {
                    // Room again: say how many lines were lost first.
                    let note = dropped_note(self.1, dropped);
                    if !o.push_own(Stream::Stderr, note.into_bytes()) {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                        return Ok(buf.len());
                    }
                    DROPPED.fetch_sub(dropped, Ordering::Relaxed);
                }
                if !o.push_own(Stream::Stderr, buf.to_vec()) {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs the logger. Safe to call once per process; later calls are ignored.
pub fn init(format: LogFormat, output: Option<Output>, colour: bool) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Info);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        b.parse_filters(&spec);
    }
    b.target(env_logger::Target::Pipe(Box::new(Sink(output, format))));
    match format {
        LogFormat::Text => {
            b.format(move |buf, record| {
                let w = width();
                let level = match record.level() {
                    log::Level::Error => "error: ",
                    log::Level::Warn => "warning: ",
                    log::Level::Info => "",
                    log::Level::Debug => "debug: ",
                    log::Level::Trace => "trace: ",
                };
                if colour {
                    let lc = match record.level() {
                        log::Level::Error => "\x1b[1;31m",
                        log::Level::Warn => "\x1b[1;33m",
                        _ => "",
                    };
                    let reset = if lc.is_empty() { "" } else { "\x1b[0m" };
                    writeln!(
                        buf,
                        "\x1b[1m{:<w$} |\x1b[0m {lc}{level}{reset}{}",
                        "mothership",
                        record.args()
                    )
                } else {
                    writeln!(buf, "{:<w$} | {level}{}", "mothership", record.args())
                }
            });
        }
        LogFormat::Json => {
            b.format(|buf, record| {
                let msg = record.args().to_string();
                writeln!(
                    buf,
                    "{{\"ts\":\"{}\",\"level\":\"{}\",\"target\":{},\"msg\":{}}}",
                    rfc3339_now(),
                    record.level().as_str().to_ascii_lowercase(),
                    json_string(record.target()),
                    json_string(&msg)
                )
            });
        }
    }
    let _ = b.try_init();
}

/// The line that reports `n` of our own lines dropped while the output was stuck.
fn dropped_note(format: LogFormat, n: u64) -> String {
    let msg = format!("{n} log line(s) of mothership dropped while its output was blocked (child output is never dropped)");
    match format {
        LogFormat::Text => format!("{:<w$} | warning: {msg}\n", "mothership", w = width()),
        LogFormat::Json => format!(
            "{{\"ts\":\"{}\",\"level\":\"warn\",\"target\":\"mothership\",\"msg\":{}}}\n",
            rfc3339_now(),
            json_string(&msg)
        ),
    }
}

/// A JSON string literal for `s`.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::proto::json::write_str(&mut out, s);
    out
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

/// `ms` milliseconds after the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_ms(ms: u64) -> String {
    rfc3339((ms / 1000) as i64, (ms % 1000) as u32)
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (year, month, day) = crate::proto::httpdate::civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_435_261, 999), "2026-11-23T12:01:01.999Z");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
