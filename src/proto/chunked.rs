//! Streaming validation (and decoding) of `Transfer-Encoding: chunked` bodies. The decoder
//! consumes exactly the bytes of one message body, trailers included, so a proxy can pass
//! them on and know where the next message starts. Strict: CRLF only, hex sizes without
//! padding or signs, bounded extensions and trailers. Trailer lines are checked like header
//! lines, and [`ChunkedDecoder::forward`] passes the body on with the trailer fields that
//! may not be trailers (RFC 9110 6.5.1: framing, routing, controls, authentication,
//! content metadata) removed.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeTooLarge,
    BadLineEnding,
    ExtensionTooLong,
    TrailersTooLarge,
    /// A trailer line that is not `name: value` with a token name and no control bytes,
    /// or an obs-fold.
    BadTrailer,
}

/// Longest chunk extension accepted (bytes after `;` up to CRLF).
const MAX_EXTENSION: usize = 1024;
/// Most trailer bytes accepted.
const MAX_TRAILERS: usize = 16 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    /// Reading hex digits of a chunk size (`digits` read so far).
    Size {
        digits: u8,
    },
    /// In a chunk extension.
    Ext {
        len: usize,
    },
    /// Saw CR after the size line; expecting LF.
    SizeLf,
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf {
        last: bool,
    },
    Done,
}

#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    st: St,
    size: u64,
    trailer_bytes: usize,
    /// The trailer section as received (bounded by `MAX_TRAILERS`), then, once the body
    /// is done, the part of it that may be passed on.
    trailers: Vec<u8>,
    /// In the last `feed`, the bytes before the trailer section.
    plain: usize,
    /// Total payload bytes seen (without framing).
    pub payload: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            st: St::Size { digits: 0 },
            size: 0,
            trailer_bytes: 0,
            trailers: Vec::new(),
            plain: 0,
            payload: 0,
        }
    }
}

impl ChunkedDecoder {
    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Consumes framing and payload from `input` until the body ends or the input runs out.
    /// Payload bytes are handed to `on_data`. Returns the number of bytes consumed; bytes
    /// after the end of the body are not consumed.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        let mut i = 0;
        self.plain = if self.in_trailers() { 0 } else { input.len() };
        while i < input.len() {
            let b = input[i];
            if self.in_trailers() {
                self.trailers.push(b);
            }
            match self.st {
                St::Done => return Ok(i),
                St::Size { digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 16 {
                            return Err(ChunkError::SizeTooLarge);
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.size = (self.size << 4) | v;
                        self.st = St::Size { digits: digits + 1 };
                    }
                    b';' if digits > 0 => self.st = St::Ext { len: 0 },
                    b'\r' if digits > 0 => self.st = St::SizeLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => return Err(ChunkError::BadSize),
                },
                St::Ext { len } => match b {
                    b'\r' => self.st = St::SizeLf,
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    // Extensions are tokens, quoted strings, `=`, `;` and whitespace.
                    0x00..=0x08 | 0x0a..=0x1f | 0x7f => return Err(ChunkError::BadSize),
                    _ if len >= MAX_EXTENSION => return Err(ChunkError::ExtensionTooLong),
                    _ => self.st = St::Ext { len: len + 1 },
                },
                St::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    if self.size > i64::MAX as u64 {
                        return Err(ChunkError::SizeTooLarge);
                    }
                    self.st = if self.size == 0 {
                        self.plain = i + 1;
                        St::TrailerStart
                    } else {
                        St::Data { left: self.size }
                    };
                    self.size = 0;
                }
                St::Data { left } => {
                    let n = data_step(left, input.len() - i);
                    on_data(&input[i..i + n]);
                    self.payload += n as u64;
                    i += n;
                    let left = left - n as u64;
                    self.st = if left == 0 {
                        St::DataCr
                    } else {
                        St::Data { left }
                    };
                    continue;
                }
                St::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.st = St::DataLf;
                }
                St::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    self.st = St::Size { digits: 0 };
                }
                St::TrailerStart => match b {
                    b'\r' => self.st = St::TrailerLf { last: true },
                    b'\n' => return Err(ChunkError::BadLineEnding),
                    _ => {
                        self.count_trailer()?;
                        self.st = St::Trailer;
                    }
                },
                St::Trailer => {
                    self.count_trailer()?;
                    match b {
                        b'\r' => self.st = St::TrailerLf { last: false },
                        b'\n' => return Err(ChunkError::BadLineEnding),
                        _ => {}
                    }
                }
                St::TrailerLf { last } => {
                    if b != b'\n' {
                        return Err(ChunkError::BadLineEnding);
                    }
                    if last {
                        self.st = St::Done;
                        self.trailers = keep_trailers(&self.trailers)?;
                    } else {
                        self.st = St::TrailerStart;
                    }
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn in_trailers(&self) -> bool {
        matches!(
            self.st,
            St::TrailerStart | St::Trailer | St::TrailerLf { .. }
        )
    }

    /// [`feed`](Self::feed) for a proxy passing the body on still chunked: appends to
    /// `out` what to forward of the consumed bytes (chunks as they came; once the body is
    /// done, the trailer fields that may be trailers, and the final CRLF).
    pub fn forward(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let was_done = self.is_done();
        let used = self.feed(input, |_| {})?;
        out.extend_from_slice(&input[..self.plain.min(used)]);
        if self.is_done() && !was_done {
            out.extend_from_slice(&self.trailers);
            out.extend_from_slice(b"\r\n");
            self.trailers = Vec::new();
        }
        Ok(used)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
}

/// Bytes of a chunk's data to take now: `left` bytes remain in the chunk and `avail` are
/// at hand. Compared in 64 bits: narrowing `left` first would turn a size of 2^32 into 0
/// on a 32-bit target (a zero-length step, so a loop that never ends).
fn data_step<U: Copy + TryFrom<u64> + TryInto<u64>>(left: u64, avail: U) -> U {
    match avail.try_into() {
        Ok(a) if left < a => U::try_from(left).unwrap_or(avail),
        _ => avail,
    }
}

/// Trailer fields that must not be trailers (RFC 9110 6.5.1) or that a backend could take
/// for a field mothership sets: never passed on.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "trailer",
    "host",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "te",
    "cache-control",
    "expect",
    "max-forwards",
    "pragma",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "cookie",
    "set-cookie",
    "age",
    "expires",
    "date",
    "location",
    "retry-after",
    "vary",
    "warning",
    "content-encoding",
    "content-type",
    "content-range",
    "content-location",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks the trailer section (every line with its CRLF, the final empty line excluded)
/// and returns the lines that may be passed on.
fn keep_trailers(section: &[u8]) -> Result<Vec<u8>, ChunkError> {
    let body = section.strip_suffix(b"\r\n").unwrap_or(section);
    let mut kept = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Err(ChunkError::BadTrailer);
        };
        let colon = text
            .iter()
            .position(|&b| b == b':')
            .ok_or(ChunkError::BadTrailer)?;
        let (name, value) = (&text[..colon], &text[colon + 1..]);
        // An empty name or one that is not a token (a leading space: obs-fold).
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            return Err(ChunkError::BadTrailer);
        }
        if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Err(ChunkError::BadTrailer);
        }
        let name = std::str::from_utf8(name).map_err(|_| ChunkError::BadTrailer)?;
        let unders = name.replace('_', "-");
        if !FORBIDDEN_TRAILERS
            .iter()
            .any(|f| f.eq_ignore_ascii_case(name) || f.eq_ignore_ascii_case(&unders))
        {
            kept.extend_from_slice(line);
        }
    }
    Ok(kept)
}

/// Writes `data` as one chunk (nothing for empty data: an empty chunk ends the body).
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.feed(piece, |b| out.extend_from_slice(b))?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((used, out, d.is_done()))
    }

    #[test]
    fn valid_bodies_byte_by_byte_and_whole() {
        for (name, input, payload, consumed) in [
            ("simple", &b"5\r\nhello\r\n0\r\n\r\n"[..], &b"hello"[..], 15),
            (
                "two chunks",
                b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n",
                b"abcde",
                20,
            ),
            (
                "upper hex",
                b"A\r\n0123456789\r\n0\r\n\r\n",
                b"0123456789",
                20,
            ),
            (
                "extension",
                b"3;name=\"v\";x\r\nabc\r\n0;end\r\n\r\n",
                b"abc",
                28,
            ),
            (
                "trailers",
                b"1\r\nx\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n",
                b"x",
                27,
            ),
            (
                "pipelined tail not consumed",
                b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
                b"x",
                11,
            ),
            ("empty body", b"0\r\n\r\n", b"", 5),
        ] {
            for step in [1, 2, 7, 1000] {
                let (used, out, done) =
                    decode_all(input, step).unwrap_or_else(|e| panic!("{name}: {e:?}"));
                assert!(done, "{name} step {step}");
                assert_eq!(out, payload, "{name} step {step}");
                assert_eq!(used, consumed, "{name} step {step}");
            }
        }
    }

    #[test]
    fn invalid_bodies() {
        for (name, input, err) in [
            ("no size", &b"\r\n"[..], ChunkError::BadSize),
            ("space before size", b" 5\r\nhello\r\n", ChunkError::BadSize),
            ("sign", b"+5\r\nhello\r\n", ChunkError::BadSize),
            ("0x prefix", b"0x5\r\nhello\r\n", ChunkError::BadSize),
            (
                "bare LF after size",
                b"5\nhello\r\n",
                ChunkError::BadLineEnding,
            ),
            (
                "bare LF after data",
                b"5\r\nhello\n0\r\n\r\n",
                ChunkError::BadLineEnding,
            ),
            (
                "data longer than size",
                b"3\r\nhello\r\n",
                ChunkError::BadLineEnding,
            ),
            (
                "overflow",
                b"10000000000000000\r\n",
                ChunkError::SizeTooLarge,
            ),
            ("huge", b"ffffffffffffffff\r\n", ChunkError::SizeTooLarge),
            (
                "control char in extension",
                b"1;\x01\r\n",
                ChunkError::BadSize,
            ),
            (
                "bare LF ending trailers",
                b"0\r\nX: 1\r\n\n",
                ChunkError::BadLineEnding,
            ),
        ] {
            assert_eq!(decode_all(input, 1000).map(|_| ()), Err(err), "{name}");
        }
        let long_ext = [&b"1;"[..], &vec![b'a'; 2000]].concat();
        assert_eq!(
            decode_all(&long_ext, 1000).map(|_| ()),
            Err(ChunkError::ExtensionTooLong)
        );
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Pad: 0123456789\r\n");
        }
        assert_eq!(
            decode_all(&trailers, 1000).map(|_| ()),
            Err(ChunkError::TrailersTooLarge)
        );
    }

    #[test]
    fn a_chunk_of_4_gib_is_not_a_zero_step_on_32_bits() {
        // The arithmetic as a 32-bit usize runs it: 0x1_0000_0000 as u32 would be 0.
        assert_eq!(data_step::<u32>(0x1_0000_0000, 10), 10);
        assert_eq!(data_step::<u32>(u64::MAX, u32::MAX), u32::MAX);
        assert_eq!(data_step::<u32>(5, 10), 5);
        assert_eq!(data_step::<usize>(0x1_0000_0000, 7), 7);
        assert_eq!(data_step::<usize>(3, 7), 3);
        let mut d = ChunkedDecoder::default();
        let mut got = 0;
        let used = d.feed(b"100000000\r\nabc", |b| got += b.len()).unwrap();
        assert_eq!((used, got), (14, 3));
    }

    #[test]
    fn trailers_are_checked_and_filtered_when_forwarded() {
        let body = b"1\r\nx\r\n0\r\nX-Sum: 1\r\nContent-Length: 5\r\nhost: evil\r\nX_Forwarded_For: 6.6.6.6\r\nY: 2\r\n\r\nNEXT";
        for step in [1, 3, 1000] {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let mut used = 0;
            for piece in body.chunks(step) {
                let n = d.forward(piece, &mut out).unwrap();
                used += n;
                if n < piece.len() {
                    break;
                }
            }
            assert!(d.is_done());
            assert_eq!(used, body.len() - 4, "step {step}");
            assert_eq!(
                String::from_utf8_lossy(&out),
                "1\r\nx\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n",
                "step {step}"
            );
        }
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        d.forward(b"2\r\nab\r\n0\r\n\r\n", &mut out).unwrap();
        assert_eq!(out, b"2\r\nab\r\n0\r\n\r\n");
        for (name, input) in [
            ("NUL", &b"0\r\nX: a\x00b\r\n\r\n"[..]),
            ("control", b"0\r\nX: a\x01b\r\n\r\n"),
            ("obs-fold", b"0\r\nX: a\r\n  b\r\n\r\n"),
            ("no colon", b"0\r\nX\r\n\r\n"),
            ("space in name", b"0\r\nX Y: 1\r\n\r\n"),
            ("empty name", b"0\r\n: 1\r\n\r\n"),
        ] {
            let mut d = ChunkedDecoder::default();
            assert_eq!(
                d.forward(input, &mut Vec::new()).map(|_| ()),
                Err(ChunkError::BadTrailer),
                "{name}"
            );
        }
    }

    #[test]
    fn encode_round_trip() {
        let mut out = Vec::new();
        encode_chunk(b"hello world", &mut out);
        encode_chunk(b"", &mut out);
        out.extend_from_slice(LAST_CHUNK);
        let (_, payload, done) = decode_all(&out, 3).unwrap();
        assert!(done);
        assert_eq!(payload, b"hello world");
    }
}
