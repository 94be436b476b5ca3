//! Streaming validation (and decoding) of `Transfer-Encoding: chunked` bodies. The decoder
//! consumes exactly the bytes of one message body, trailers included, so a proxy can pass
//! them on unchanged and know where the next message starts. Strict: CRLF only, hex sizes
//! without padding or signs, bounded extensions and trailers.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkError {
    BadSize,
    SizeTooLarge,
    BadLineEnding,
    ExtensionTooLong,
    TrailersTooLarge,
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
    /// Total payload bytes seen (without framing).
    pub payload: u64,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            st: St::Size { digits: 0 },
            size: 0,
            trailer_bytes: 0,
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
        while i < input.len() {
            let b = input[i];
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
                        St::TrailerStart
                    } else {
                        St::Data { left: self.size }
                    };
                    self.size = 0;
                }
                St::Data { left } => {
                    let n = (left as usize).min(input.len() - i);
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
                    self.st = if last { St::Done } else { St::TrailerStart };
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
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
