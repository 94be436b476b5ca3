//! Turns the raw output of a child into prefixed lines: bytes are split at `\n`, lines
//! longer than the limit are cut into pieces (never dropped), and bytes that are not UTF-8
//! pass through untouched. Also keeps the last output of each child in a byte ring.

/// Longest line written as one piece; longer ones continue on the next line.
pub const MAX_LINE: usize = 16 << 10;

/// Prefix style for one child: its name padded to the fleet's widest name, optionally
/// coloured.
#[derive(Clone, Debug)]
pub struct Prefix {
    bytes: Vec<u8>,
}

const COLOURS: [u8; 6] = [36, 33, 32, 35, 34, 31];

impl Prefix {
    pub fn new(name: &str, width: usize, colour: Option<usize>) -> Prefix {
        let padded = format!("{name:<width$} | ");
        let bytes = match colour {
            Some(i) => format!("\x1b[{}m{padded}\x1b[0m", COLOURS[i % COLOURS.len()]).into_bytes(),
            None => padded.into_bytes(),
        };
        Prefix { bytes }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Assembles lines of one stream of one child.
#[derive(Default, Debug)]
pub struct LineAssembler {
    partial: Vec<u8>,
    /// The last piece written was cut at MAX_LINE: a newline right after it ends that
    /// line rather than starting an empty one.
    cut: bool,
}

impl LineAssembler {
    /// Appends every complete line of `data` to `out`, each with `prefix` and a final `\n`.
    pub fn feed(&mut self, data: &[u8], prefix: &Prefix, out: &mut Vec<u8>) {
        let mut start = 0;
        // Room for the lines plus a prefix each, estimated from 64-byte lines.
        out.reserve(data.len() + data.len() / 64 * prefix.bytes.len() + prefix.bytes.len());
        for nl in memchr::memchr_iter(b'\n', data) {
            let line = &data[start..nl];
            start = nl + 1;
            let cut = std::mem::take(&mut self.cut);
            if self.partial.is_empty() {
                if !(cut && line.is_empty()) {
                    emit(line, prefix, out);
                }
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial, prefix, out);
                self.partial.clear();
            }
        }
        self.partial.extend_from_slice(&data[start..]);
        while self.partial.len() >= MAX_LINE {
            emit_piece(&self.partial[..MAX_LINE], prefix, out);
            self.partial.drain(..MAX_LINE);
            self.cut = true;
        }
    }

    /// Writes out an unterminated last line (at end of stream).
    pub fn flush(&mut self, prefix: &Prefix, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            emit(&whole, prefix, out);
        }
    }
}

#[inline]
fn emit(line: &[u8], prefix: &Prefix, out: &mut Vec<u8>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() <= MAX_LINE {
        emit_piece(line, prefix, out);
    } else {
        for piece in line.chunks(MAX_LINE) {
            emit_piece(piece, prefix, out);
        }
    }
}

#[inline]
fn emit_piece(piece: &[u8], prefix: &Prefix, out: &mut Vec<u8>) {
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(piece);
    out.push(b'\n');
}

/// The last `capacity` bytes a child wrote, for status views and the control socket.
/// Memory grows with what the child writes, up to `capacity`.
#[derive(Debug)]
pub struct Ring {
    buf: Vec<u8>,
    cap: usize,
    start: usize,
    len: usize,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            buf: Vec::new(),
            cap: capacity.max(1),
            start: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        let cap = self.cap;
        let mut data = if data.len() > cap {
            &data[data.len() - cap..]
        } else {
            data
        };
        if self.buf.len() < cap {
            let n = (cap - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            self.len = self.buf.len();
            data = &data[n..];
            if data.is_empty() {
                return;
            }
        }
        // Full: overwrite the oldest bytes.
        let first = (cap - self.start).min(data.len());
        self.buf[self.start..self.start + first].copy_from_slice(&data[..first]);
        self.buf[..data.len() - first].copy_from_slice(&data[first..]);
        self.start = (self.start + data.len()) % cap;
    }

    /// The retained bytes, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        let cap = self.buf.len().max(1);
        let mut v = Vec::with_capacity(self.len);
        let first = (cap - self.start).min(self.len);
        v.extend_from_slice(&self.buf[self.start..self.start + first]);
        v.extend_from_slice(&self.buf[..self.len - first]);
        v
    }

    /// The last `n` complete or partial lines.
    pub fn last_lines(&self, n: usize) -> Vec<Vec<u8>> {
        let all = self.contents();
        let mut lines: Vec<Vec<u8>> = all.split(|&b| b == b'\n').map(|l| l.to_vec()).collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let skip = lines.len().saturating_sub(n);
        lines.split_off(skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let p = Prefix::new("w", 3, None);
        let mut a = LineAssembler::default();
        let mut out = Vec::new();
        for c in chunks {
            a.feed(c, &p, &mut out);
        }
        a.flush(&p, &mut out);
        out
    }

    #[test]
    fn splits_and_prefixes() {
        assert_eq!(
            run(&[b"a\nb", b"c\n", b"\n", b"tail"]),
            b"w   | a\nw   | bc\nw   | \nw   | tail\n"
        );
        assert_eq!(run(&[b"crlf\r\n"]), b"w   | crlf\n");
    }

    #[test]
    fn non_utf8_passes_through() {
        assert_eq!(run(&[b"\xff\xfe ok\n"]), b"w   | \xff\xfe ok\n");
    }

    #[test]
    fn long_lines_are_split_not_dropped() {
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        let mut input = long.clone();
        input.push(b'\n');
        let out = run(&[&input[..1000], &input[1000..]]);
        let pieces: Vec<&[u8]> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(pieces.len(), 3);
        let body: usize = pieces.iter().map(|p| p.len() - b"w   | ".len()).sum();
        assert_eq!(body, long.len());
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_not_followed_by_an_empty_one() {
        let line = vec![b'z'; MAX_LINE];
        let out = run(&[&line, b"\nnext\n"]);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        assert_eq!(
            lines.len(),
            3,
            "{}",
            String::from_utf8_lossy(&out[out.len() - 40..])
        );
        assert_eq!(lines[1], b"w   | next");
    }

    #[test]
    fn coloured_prefix() {
        let p = Prefix::new("db", 4, Some(0));
        assert_eq!(p.as_bytes(), b"\x1b[36mdb   | \x1b[0m");
    }

    #[test]
    fn ring_keeps_the_tail() {
        let mut r = Ring::new(8);
        r.push(b"abc\n");
        assert_eq!(r.contents(), b"abc\n");
        r.push(b"defg\nhi\n");
        assert_eq!(r.contents(), b"defg\nhi\n");
        r.push(b"0123456789\n");
        assert_eq!(r.contents(), b"3456789\n");
        r.push(b"x\ny\n");
        assert_eq!(r.last_lines(2), vec![b"x".to_vec(), b"y".to_vec()]);
    }
}
