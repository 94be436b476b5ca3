//! The recent output of every program, line by line with the time it was read and its
//! stream, for `mothership logs`, its follow mode and the TUI. Each program's log is
//! bounded in bytes and in lines; the oldest lines go first. Lines are numbered from the
//! start of the run (a sequence per program), so a follower knows where it stands and
//! how many lines it missed if it fell behind. No allocation per line: the texts of one
//! program share one byte ring.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Stream;

/// Bytes of text kept per program.
pub const LOG_BYTES: usize = 64 << 10;
/// Lines kept per program.
pub const LOG_LINES: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Meta {
    at_ms: u64,
    stream: Stream,
    len: u32,
}

/// One line as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    /// Milliseconds since the Unix epoch when mothership read it.
    pub at_ms: u64,
    pub stream: Stream,
    pub text: Vec<u8>,
}

/// One program's recent lines.
#[derive(Debug)]
pub struct Log {
    pub name: String,
    meta: VecDeque<Meta>,
    bytes: VecDeque<u8>,
    /// The number of the oldest line kept.
    first: u64,
}

impl Log {
    fn new(name: String) -> Log {
        Log {
            name,
            meta: VecDeque::new(),
            bytes: VecDeque::new(),
            first: 0,
        }
    }

    fn push(&mut self, at_ms: u64, stream: Stream, text: &[u8]) {
        let text = &text[..text.len().min(LOG_BYTES)];
        while self.meta.len() >= LOG_LINES || self.bytes.len() + text.len() > LOG_BYTES {
            let Some(m) = self.meta.pop_front() else {
                break;
            };
            self.bytes.drain(..m.len as usize);
            self.first += 1;
        }
        self.bytes.extend(text);
        self.meta.push_back(Meta {
            at_ms,
            stream,
            len: text.len() as u32,
        });
    }

    /// The number the next line will get.
    pub fn next_seq(&self) -> u64 {
        self.first + self.meta.len() as u64
    }

    /// The number of the oldest line kept.
    pub fn first_seq(&self) -> u64 {
        self.first
    }

    /// The lines numbered `from` or later that are still kept, oldest first.
    pub fn since(&self, from: u64) -> impl Iterator<Item = Line> + '_ {
        let skip = from.saturating_sub(self.first) as usize;
        let offset: usize = self.meta.iter().take(skip).map(|m| m.len as usize).sum();
        let mut at = offset;
        self.meta.iter().enumerate().skip(skip).map(move |(i, m)| {
            let len = m.len as usize;
            let text: Vec<u8> = self.bytes.range(at..at + len).copied().collect();
            at += len;
            Line {
                seq: self.first + i as u64,
                at_ms: m.at_ms,
                stream: m.stream,
                text,
            }
        })
    }

    /// Up to `n` of the last lines that pass `keep`, oldest first.
    pub fn tail(&self, n: usize, keep: impl Fn(&Line) -> bool) -> Vec<Line> {
        let mut v: Vec<Line> = self.since(self.first).filter(|l| keep(l)).collect();
        let skip = v.len().saturating_sub(n);
        v.drain(..skip);
        v
    }
}

/// The logs of the fleet's programs, in the supervisor's order (prelaunch jobs first).
#[derive(Debug, Default)]
pub struct Journal {
    logs: Vec<Log>,
}

impl Journal {
    pub fn new(names: impl IntoIterator<Item = String>) -> Journal {
        Journal {
            logs: names.into_iter().map(Log::new).collect(),
        }
    }

    /// Keeps one line of program `i` (without its line feed).
    pub fn push(&mut self, i: usize, at_ms: u64, stream: Stream, text: &[u8]) {
        if let Some(l) = self.logs.get_mut(i) {
            l.push(at_ms, stream, text);
        }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.logs.iter().position(|l| l.name == name)
    }

    pub fn get(&self, i: usize) -> Option<&Log> {
        self.logs.get(i)
    }

    pub fn len(&self) -> usize {
        self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(v: &[Line]) -> Vec<String> {
        v.iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn keeps_the_last_lines_numbered_with_time_and_stream() {
        let mut j = Journal::new(["a".to_string(), "b".to_string()]);
        j.push(0, 10, Stream::Stdout, b"one");
        j.push(0, 11, Stream::Stderr, b"two");
        j.push(1, 12, Stream::Stdout, b"other");
        j.push(0, 13, Stream::Stdout, b"three");
        let a = j.get(j.find("a").unwrap()).unwrap();
        assert_eq!(texts(&a.tail(2, |_| true)), ["two", "three"]);
        let all = a.tail(100, |_| true);
        assert_eq!(all[1].stream, Stream::Stderr);
        assert_eq!((all[1].seq, all[1].at_ms), (1, 11));
        assert_eq!(
            texts(&a.tail(9, |l| l.text.starts_with(b"t"))),
            ["two", "three"]
        );
        assert_eq!(texts(&a.since(2).collect::<Vec<_>>()), ["three"]);
        assert_eq!(a.next_seq(), 3);
        assert!(j.find("c").is_none());
        // An index nothing has is ignored.
        j.push(7, 0, Stream::Stdout, b"x");
    }

    #[test]
    fn bounded_in_bytes_and_lines_oldest_first() {
        let mut j = Journal::new(["a".to_string()]);
        let line = vec![b'x'; 1000];
        for i in 0..200u64 {
            j.push(0, i, Stream::Stdout, &line);
        }
        let a = j.get(0).unwrap();
        let kept = a.tail(usize::MAX, |_| true);
        assert_eq!(kept.len(), LOG_BYTES / 1000);
        assert_eq!(a.first_seq(), 200 - kept.len() as u64);
        assert_eq!(kept.last().map(|l| l.seq), Some(199));
        // Lines asked for from before the oldest kept start at the oldest.
        assert_eq!(a.since(0).next().map(|l| l.seq), Some(a.first_seq()));
        for i in 0..(LOG_LINES as u64 + 10) {
            j.push(0, i, Stream::Stdout, b"");
        }
        let a = j.get(0).unwrap();
        assert_eq!(a.since(0).count(), LOG_LINES);
        assert!(a.since(0).all(|l| l.text.is_empty()));
        // A line longer than the whole log is cut, not lost.
        j.push(0, 1, Stream::Stdout, &vec![b'y'; LOG_BYTES + 5]);
        assert_eq!(j.get(0).unwrap().tail(1, |_| true)[0].text.len(), LOG_BYTES);
    }
}
