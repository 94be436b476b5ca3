//! Response compression (`compression = true`): streaming gzip, deflate (zlib format, as
//! the `deflate` content coding is defined) and brotli encoders whose output the edge sends
//! as chunks.
//!
//! Levels are chosen for speed (figures from `bench/compress.sh`, flate2 on its zlib-rs
//! backend, the fastest measured): gzip and deflate at level 4 (about 1.4 times the speed of
//! level 6 for a 4 % larger output), brotli at quality 3 with a 256 KiB window (faster than
//! gzip level 4 with a smaller output; the window bounds memory per response).

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;

use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;

use crate::proto::coding;

/// Codings offered, in order of preference.
#[cfg(feature = "brotli")]
pub const OFFERED: &[&str] = &["br", "gzip", "deflate"];
/// Without the `brotli` feature (the minimal build) br is not offered.
#[cfg(not(feature = "brotli"))]
pub const OFFERED: &[&str] = &["gzip", "deflate"];
/// Bodies smaller than this (when their length is known) are sent as they are.
pub const MIN_SIZE: u64 = 1024;
pub const GZIP_LEVEL: u32 = 4;
pub const BROTLI_QUALITY: u32 = 3;
pub const BROTLI_LGWIN: u32 = 18;

/// Encoders alive at once, all responses together: each holds a few hundred KiB (a
/// deflate state and window, or a brotli window of 256 KiB and its tables), so the budget
/// bounds their memory to some tens of MiB. Above it responses are sent as they are.
pub const MAX_ENCODERS: usize = 128;

/// The budget of encoders at once; each encoder it hands out gives its share back when it
/// is dropped.
#[derive(Clone)]
pub struct Budget {
    live: Rc<Cell<usize>>,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        Budget {
            live: Rc::new(Cell::new(0)),
            max,
        }
    }

    /// Encoders alive now.
    pub fn live(&self) -> usize {
        self.live.get()
    }

    /// Whether [`encoder`](Self::encoder) would hand one out now.
    pub fn available(&self) -> bool {
        self.live.get() < self.max
    }

    /// An encoder for `coding`, or None when the coding is unknown or the budget is spent.
    pub fn encoder(&self, coding: &str) -> Option<Encoder> {
        if self.live.get() >= self.max {
            return None;
        }
        let mut e = Encoder::new(coding)?;
        self.live.set(self.live.get() + 1);
        e.ticket = Some(Ticket(Rc::clone(&self.live)));
        Some(e)
    }
}

/// One encoder's share of a [`Budget`].
struct Ticket(Rc<Cell<usize>>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

pub struct Encoder {
    inner: Inner,
    ticket: Option<Ticket>,
}

enum Inner {
    Gzip(GzEncoder<Vec<u8>>),
    Deflate(ZlibEncoder<Vec<u8>>),
    #[cfg(feature = "brotli")]
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    /// An encoder outside any budget (see [`Budget::encoder`]).
    pub fn new(coding: &str) -> Option<Encoder> {
        let inner = match coding {
            "gzip" => Inner::Gzip(GzEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL))),
            "deflate" => Inner::Deflate(ZlibEncoder::new(Vec::new(), Compression::new(GZIP_LEVEL))),
            #[cfg(feature = "brotli")]
            "br" => Inner::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 << 10,
                BROTLI_QUALITY,
                BROTLI_LGWIN,
            ))),
            _ => return None,
        };
        Some(Encoder {
            inner,
            ticket: None,
        })
    }

    fn out(&mut self) -> &mut Vec<u8> {
        match &mut self.inner {
            Inner::Gzip(e) => e.get_mut(),
            Inner::Deflate(e) => e.get_mut(),
            #[cfg(feature = "brotli")]
            Inner::Br(e) => e.get_mut(),
        }
    }

    /// Compresses `data`; `flush` pushes out everything so far (when no more input is at
    /// hand, so that a slow stream is not held back). Appends what is ready to `dst` as one
    /// HTTP chunk.
    pub fn feed(&mut self, data: &[u8], flush: bool, dst: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = match &mut self.inner {
            Inner::Gzip(e) => e.write_all(data),
            Inner::Deflate(e) => e.write_all(data),
            #[cfg(feature = "brotli")]
            Inner::Br(e) => e.write_all(data),
        };
        if flush {
            let _ = match &mut self.inner {
                Inner::Gzip(e) => e.flush(),
                Inner::Deflate(e) => e.flush(),
                #[cfg(feature = "brotli")]
                Inner::Br(e) => e.flush(),
            };
        }
        let out = self.out();
        chunk(out, dst);
        out.clear();
    }

    /// Ends the stream: the last data chunk and the terminating zero-size chunk.
    pub fn finish(self, dst: &mut Vec<u8>) {
        let rest = match self.inner {
            Inner::Gzip(e) => e.finish().unwrap_or_default(),
            Inner::Deflate(e) => e.finish().unwrap_or_default(),
            #[cfg(feature = "brotli")]
            Inner::Br(mut e) => {
                let _ = e.flush();
                e.into_inner()
            }
        };
        chunk(&rest, dst);
        dst.extend_from_slice(b"0\r\n\r\n");
    }
}

fn chunk(data: &[u8], dst: &mut Vec<u8>) {
    if !data.is_empty() {
        dst.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        dst.extend_from_slice(data);
        dst.extend_from_slice(b"\r\n");
    }
}

/// The coding to compress a response with, if any: the client accepts one, the type is
/// worth it, the body is large enough (when its size is known) and not already encoded.
pub fn choose(
    accept: &[&str],
    content_type: Option<&str>,
    content_encoding: bool,
    len: Option<u64>,
    no_transform: bool,
) -> Option<&'static str> {
    if content_encoding || no_transform || len.is_some_and(|n| n < MIN_SIZE) {
        return None;
    }
    let t = content_type?;
    if !coding::compressible(t) {
        return None;
    }
    coding::negotiate(accept, OFFERED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Undoes the chunked framing written by `chunk`.
    fn dechunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap(), 16).unwrap();
            b = &b[eol + 2..];
            if n == 0 {
                assert_eq!(b, b"\r\n");
                return out;
            }
            out.extend_from_slice(&b[..n]);
            assert_eq!(&b[n..n + 2], b"\r\n");
            b = &b[n + 2..];
        }
    }

    #[test]
    fn each_coding_round_trips_through_chunks() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of some text\n").into_bytes())
            .collect();
        for &coding in OFFERED {
            let mut e = Encoder::new(coding).unwrap();
            let mut wire = Vec::new();
            for (i, part) in text.chunks(7000).enumerate() {
                e.feed(part, i % 5 == 0, &mut wire);
            }
            e.finish(&mut wire);
            let body = dechunk(&wire);
            assert!(body.len() < text.len() / 3, "{coding}: {}", body.len());
            let mut plain = Vec::new();
            match coding {
                "gzip" => flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain),
                "deflate" => flate2::read::ZlibDecoder::new(&body[..]).read_to_end(&mut plain),
                #[cfg(feature = "brotli")]
                "br" => brotli::Decompressor::new(&body[..], 4096).read_to_end(&mut plain),
                other => panic!("{other}"),
            }
            .unwrap();
            assert_eq!(plain, text, "{coding}");
        }
        assert!(Encoder::new("zstd").is_none());
    }

    #[test]
    fn the_budget_bounds_encoders_alive_at_once() {
        let b = Budget::new(2);
        let e1 = b.encoder("gzip").unwrap();
        let e2 = b.encoder("deflate").unwrap();
        assert!(b.encoder("gzip").is_none(), "over the budget: identity");
        assert_eq!(b.live(), 2);
        drop(e1);
        assert_eq!(b.live(), 1);
        let e3 = b.encoder("deflate").unwrap();
        let mut out = Vec::new();
        e2.finish(&mut out);
        assert_eq!(b.live(), 1);
        drop(e3);
        assert_eq!(b.live(), 0);
        assert!(b.encoder("zstd").is_none());
        assert_eq!(b.live(), 0);
    }

    #[test]
    fn choice() {
        let js = Some("text/javascript");
        let best = if cfg!(feature = "brotli") {
            "br"
        } else {
            "gzip"
        };
        assert_eq!(
            choose(&["gzip, br"], js, false, Some(5000), false),
            Some(best)
        );
        assert_eq!(choose(&["gzip"], js, false, None, false), Some("gzip"));
        assert_eq!(choose(&[], js, false, Some(5000), false), None);
        assert_eq!(choose(&["gzip"], js, false, Some(100), false), None);
        assert_eq!(choose(&["gzip"], js, true, Some(5000), false), None);
        assert_eq!(choose(&["gzip"], js, false, Some(5000), true), None);
        assert_eq!(
            choose(&["gzip"], Some("image/png"), false, Some(5000), false),
            None
        );
        assert_eq!(choose(&["gzip"], None, false, Some(5000), false), None);
    }
}
