//! Connection buffers, lent while a connection moves data and taken back when it idles.
//!
//! A client connection or upstream holds a read and a write buffer of up to [`BUF`]
//! bytes (more while a head is written) while an exchange is in flight. Between requests
//! (a keep-alive client waiting for its next request, an upstream in the pool) its empty
//! buffers come back here, so that thousands of idle connections that once moved a body
//! hold no buffer at all. The pool keeps up to `max` of them for the next connection that
//! needs one and frees the rest.

/// The most a connection reads ahead into one buffer.
pub const BUF: usize = 64 << 10;

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
    pub fn lend(&mut self, buf: &mut Vec<u8>) {
        if buf.capacity() == 0 {
            *buf = self.free.pop().unwrap_or_else(|| Vec::with_capacity(BUF));
        }
    }

    /// Takes `buf` back if it is empty (a buffer with bytes still to move is left alone).
    /// Small buffers are simply freed, and so is anything beyond the pool's size.
    pub fn take_back(&mut self, buf: &mut Vec<u8>) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        let b = std::mem::take(buf);
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
        let mut a = Vec::new();
        pool.lend(&mut a);
        assert!(a.capacity() >= BUF && a.is_empty());
        a.extend_from_slice(b"abc");
        // Not empty: still the connection's.
        pool.take_back(&mut a);
        assert_eq!(a, b"abc");
        a.clear();
        pool.take_back(&mut a);
        assert_eq!((a.capacity(), pool.pooled()), (0, 1));
        // What is lent next is that buffer again.
        let mut b = Vec::new();
        pool.lend(&mut b);
        assert!(b.capacity() >= BUF);
        assert_eq!(pool.pooled(), 0);
        // A buffer that already has room keeps it.
        let cap = b.capacity();
        pool.lend(&mut b);
        assert_eq!(b.capacity(), cap);
        // Small buffers are freed, and the pool holds at most `max`.
        let mut small = Vec::with_capacity(100);
        pool.take_back(&mut small);
        assert_eq!((small.capacity(), pool.pooled()), (0, 0));
        for _ in 0..3 {
            let mut v = Vec::with_capacity(BUF);
            pool.take_back(&mut v);
            assert_eq!(v.capacity(), 0);
        }
        assert_eq!(pool.pooled(), 2);
    }
}
