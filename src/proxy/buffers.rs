//! Connection buffers, lent while a connection moves data and taken back when it idles,
//! with a read cursor: consuming bytes from the front moves the cursor, not the bytes.
//!
//! A client connection or upstream holds a read and a write buffer of up to [`BUF`]
//! bytes (more while a head is written) while an exchange is in flight. Between requests
//! (a keep-alive client waiting for its next request, an upstream in the pool) its empty
//! buffers come back here, so that thousands of idle connections that once moved a body
//! hold no buffer at all. The pool keeps up to `max` of them for the next connection that
//! needs one and frees the rest.

/// The most a connection reads ahead into one buffer.
pub const BUF: usize = 64 << 10;

/// A byte queue: bytes are appended at the end and consumed from the front. Consuming
/// only moves a cursor; the bytes left are moved to the front at most once per append
/// that needs the room (or when a writer needs the whole `Vec`), instead of on every
/// partial write. Derefs to the bytes not consumed yet.
#[derive(Debug, Default)]
pub struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    pub fn new() -> Buf {
        Buf::default()
    }

    /// Drops the first `n` bytes.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
    }

    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    pub fn extend_from_slice(&mut self, b: &[u8]) {
        if self.start > 0 && self.data.len() + b.len() > self.data.capacity() {
            self.compact();
        }
        self.data.extend_from_slice(b);
    }

    /// Sets the number of bytes not consumed, as `Vec::resize`.
    pub fn resize(&mut self, len: usize, value: u8) {
        self.data.resize(self.start + len, value);
    }

    pub fn truncate(&mut self, len: usize) {
        self.data.truncate(self.start + len);
    }

    /// The bytes from `at` (of those not consumed) on, taken out.
    pub fn split_off(&mut self, at: usize) -> Vec<u8> {
        self.data.split_off(self.start + at)
    }

    /// The bytes not consumed, as a `Vec` to append to (for encoders and decoders that
    /// write into one).
    pub fn vec(&mut self) -> &mut Vec<u8> {
        self.compact();
        &mut self.data
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    fn take_storage(&mut self) -> Vec<u8> {
        self.start = 0;
        std::mem::take(&mut self.data)
    }
}

impl From<Vec<u8>> for Buf {
    fn from(data: Vec<u8>) -> Buf {
        Buf { data, start: 0 }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data[self.start..]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..]
    }
}

pub struct BufPool {
    free: Vec<Vec<u8>>,
    max: usize,
}

impl BufPool {
    pub fn new(max: usize) -> BufPool {
        BufPool {
            free: Vec::new(),
            max,
        }
    }

    /// Gives `buf` room to read into when it has none: a pooled buffer, else a new one.
    pub fn lend(&mut self, buf: &mut Buf) {
        if buf.capacity() == 0 {
            *buf = Buf::from(self.free.pop().unwrap_or_else(|| Vec::with_capacity(BUF)));
        }
    }

    /// Takes `buf` back if it is empty (a buffer with bytes still to move is left alone).
    /// Small buffers are simply freed, and so is anything beyond the pool's size.
    pub fn take_back(&mut self, buf: &mut Buf) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        let b = buf.take_storage();
        if self.free.len() < self.max && (BUF..=2 * BUF).contains(&b.capacity()) {
            self.free.push(b);
        }
    }

    /// Buffers waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_takes_back_and_stays_bounded() {
        let mut pool = BufPool::new(2);
        let mut a = Buf::new();
        pool.lend(&mut a);
        assert!(a.capacity() >= BUF && a.is_empty());
        a.extend_from_slice(b"abc");
        // Not empty: still the connection's.
        pool.take_back(&mut a);
        assert_eq!(&a[..], b"abc");
        a.clear();
        pool.take_back(&mut a);
        assert_eq!((a.capacity(), pool.pooled()), (0, 1));
        // What is lent next is that buffer again.
        let mut b = Buf::new();
        pool.lend(&mut b);
        assert!(b.capacity() >= BUF);
        assert_eq!(pool.pooled(), 0);
        // A buffer that already has room keeps it.
        let cap = b.capacity();
        pool.lend(&mut b);
        assert_eq!(b.capacity(), cap);
        // Small buffers are freed, and the pool holds at most `max`.
        let mut small = Buf::from(Vec::with_capacity(100));
        pool.take_back(&mut small);
        assert_eq!((small.capacity(), pool.pooled()), (0, 0));
        for _ in 0..3 {
            let mut v = Buf::from(Vec::with_capacity(BUF));
            pool.take_back(&mut v);
            assert_eq!(v.capacity(), 0);
        }
        assert_eq!(pool.pooled(), 2);
    }

    #[test]
    fn consuming_moves_a_cursor_not_the_bytes() {
        let mut b = Buf::from(Vec::with_capacity(16));
        b.extend_from_slice(b"0123456789");
        let at = b.as_ptr();
        b.consume(4);
        assert_eq!(&b[..], b"456789");
        // The bytes stayed where they were.
        assert_eq!(b.as_ptr(), at.wrapping_add(4));
        // An append that fits needs no move either; one that does not fit compacts first.
        b.extend_from_slice(b"ab");
        assert_eq!(&b[..], b"456789ab");
        b.extend_from_slice(b"cdefghij");
        assert_eq!(&b[..], b"456789abcdefghij");
        assert_eq!(b.capacity(), 16, "compacted instead of growing");
        b.resize(3, 0);
        assert_eq!(&b[..], b"456");
        b.consume(1);
        assert_eq!(b.split_off(1), b"6");
        assert_eq!(&b[..], b"5");
        b.vec().push(b'x');
        assert_eq!(&b[..], b"5x");
        b.consume(5);
        assert!(b.is_empty());
    }
}
