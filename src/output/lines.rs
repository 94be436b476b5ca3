//! Turns the raw output of a child into prefixed lines: bytes are split at `\n`, lines
//! longer than the limit are cut into pieces (never dropped), and bytes that are not UTF-8
//! pass through untouched. Each line also goes to a sink (the journal).

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
    /// Appends every complete line of `data` to `out`, each with `prefix` and a final `\n`,
    /// and hands each to `sink` as well (without prefix or line feed).
    pub fn feed(
        &mut self,
        data: &[u8],
        prefix: &Prefix,
        out: &mut Vec<u8>,
        sink: &mut impl FnMut(&[u8]),
    ) {
        let mut start = 0;
        // Room for the lines plus a prefix each, estimated from 64-byte lines.
        out.reserve(data.len() + data.len() / 64 * prefix.bytes.len() + prefix.bytes.len());
        for nl in memchr::memchr_iter(b'\n', data) {
            let line = &data[start..nl];
            start = nl + 1;
            let cut = std::mem::take(&mut self.cut);
            if self.partial.is_empty() {
                if !(cut && line.is_empty()) {
                    emit(line, prefix, out, sink);
                }
            } else {
                self.partial.extend_from_slice(line);
                emit(&self.partial, prefix, out, sink);
                self.partial.clear();
            }
        }
        self.partial.extend_from_slice(&data[start..]);
        while self.partial.len() >= MAX_LINE {
            emit_piece(&self.partial[..MAX_LINE], prefix, out, sink);
            self.partial.drain(..MAX_LINE);
            self.cut = true;
        }
    }

    /// Writes out an unterminated last line (at end of stream).
    pub fn flush(&mut self, prefix: &Prefix, out: &mut Vec<u8>, sink: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let whole = std::mem::take(&mut self.partial);
            emit(&whole, prefix, out, sink);
        }
    }
}

#[inline]
fn emit(line: &[u8], prefix: &Prefix, out: &mut Vec<u8>, sink: &mut impl FnMut(&[u8])) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() <= MAX_LINE {
        emit_piece(line, prefix, out, sink);
    } else {
        for piece in line.chunks(MAX_LINE) {
            emit_piece(piece, prefix, out, sink);
        }
    }
}

#[inline]
fn emit_piece(piece: &[u8], prefix: &Prefix, out: &mut Vec<u8>, sink: &mut impl FnMut(&[u8])) {
    sink(piece);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(piece);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let p = Prefix::new("w", 3, None);
        let mut a = LineAssembler::default();
        let mut out = Vec::new();
        let mut lines = Vec::new();
        let mut sink = |l: &[u8]| lines.push(l.to_vec());
        for c in chunks {
            a.feed(c, &p, &mut out, &mut sink);
        }
        a.flush(&p, &mut out, &mut sink);
        // The sink had the same lines, without prefix and line feed.
        let mut again = Vec::new();
        for l in &lines {
            again.extend_from_slice(p.as_bytes());
            again.extend_from_slice(l);
            again.push(b'\n');
        }
        assert_eq!(again, out);
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
}
