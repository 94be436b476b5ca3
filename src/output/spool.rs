//! The bounded queue between the loop and a writer thread, shared by mothership's own
//! output (keyed by stream) and the log files (keyed by program). The loop pushes chunks
//! and never waits; above the high-water mark it stops reading the children's pipes
//! (`congested`), and the writer wakes it through the waker once the queue is back under
//! the low-water mark: child output is never dropped, the pressure goes back to the
//! children. (Only what is pushed after `close` is handed back to the caller.)

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Chunks for the same key that follow each other are joined up to this size.
const JOIN_UP_TO: usize = 64 << 10;

struct State<K> {
    chunks: VecDeque<(K, Vec<u8>)>,
    bytes: usize,
    closed: bool,
    /// Something the writer is asked to do besides writing (the log files: reopen).
    flagged: bool,
    /// The loop is paused and waits for room.
    wake_wanted: bool,
    waker: Option<Arc<mio::Waker>>,
}

/// What the writer takes in one go.
pub struct Batch<K> {
    pub chunks: Vec<(K, Vec<u8>)>,
    pub flagged: bool,
}

pub struct Spool<K> {
    state: Mutex<State<K>>,
    ready: Condvar,
    high: usize,
    low: usize,
}

impl<K: Copy + PartialEq> Spool<K> {
    pub fn new(high: usize, low: usize) -> Spool<K> {
        Spool {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                bytes: 0,
                closed: false,
                flagged: false,
                wake_wanted: false,
                waker: None,
            }),
            ready: Condvar::new(),
            high,
            low,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<K>> {
        // A poisoned lock only means the writer panicked; the data is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The waker the writer uses to resume a paused loop.
    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        self.lock().waker = Some(waker);
    }

    /// Queues `data` for `key`; once the spool is closed the data is handed back.
    pub fn push(&self, key: K, data: Vec<u8>) -> Result<(), Vec<u8>> {
        if data.is_empty() {
            return Ok(());
        }
        let mut q = self.lock();
        if q.closed {
            return Err(data);
        }
        q.bytes += data.len();
        let was_empty = q.chunks.is_empty();
        match q.chunks.back_mut() {
            Some((k, last)) if *k == key && last.len() + data.len() <= JOIN_UP_TO => {
                last.extend_from_slice(&data)
            }
            _ => q.chunks.push_back((key, data)),
        }
        drop(q);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// At or over the high-water mark (and still open).
    pub fn full(&self) -> bool {
        let q = self.lock();
        !q.closed && q.bytes >= self.high
    }

    /// True when the loop should stop reading child output; if so, the writer will wake
    /// the loop when there is room again.
    pub fn congested(&self) -> bool {
        let mut q = self.lock();
        if q.bytes >= self.high {
            q.wake_wanted = true;
            true
        } else {
            false
        }
    }

    /// Asks the writer for its out-of-band work with its next batch.
    pub fn flag(&self) {
        self.lock().flagged = true;
        self.ready.notify_one();
    }

    /// No more pushes; the writer ends once it has written what is queued.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    /// For the writer: waits for work. None once the spool is closed and empty.
    pub fn take(&self) -> Option<Batch<K>> {
        let mut q = self.lock();
        while q.chunks.is_empty() && !q.closed && !q.flagged {
            q = self.ready.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        if q.chunks.is_empty() && q.closed && !q.flagged {
            return None;
        }
        Some(Batch {
            chunks: q.chunks.drain(..).collect(),
            flagged: std::mem::take(&mut q.flagged),
        })
    }

    /// For the writer: `n` bytes of what it took are written (or given up on).
    pub fn done(&self, n: usize) {
        let mut q = self.lock();
        q.bytes = q.bytes.saturating_sub(n);
        if q.wake_wanted && q.bytes <= self.low {
            q.wake_wanted = false;
            if let Some(w) = &q.waker {
                let _ = w.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_runs_of_one_key_and_ends_after_the_last_chunk() {
        let s: Spool<u8> = Spool::new(10, 4);
        s.push(1, b"ab".to_vec()).unwrap();
        s.push(1, b"cd".to_vec()).unwrap();
        s.push(2, b"ef".to_vec()).unwrap();
        s.push(1, Vec::new()).unwrap();
        assert!(!s.congested());
        s.push(2, vec![b'x'; 5]).unwrap();
        // 11 bytes queued: over the high-water mark.
        assert!(s.full() && s.congested());
        s.close();
        assert_eq!(s.push(1, b"late".to_vec()), Err(b"late".to_vec()));
        assert!(
            !s.full(),
            "a closed spool takes no more, so it is never full"
        );
        let b = s.take().unwrap();
        assert_eq!(b.chunks.len(), 2);
        assert_eq!(b.chunks[0], (1, b"abcd".to_vec()));
        assert_eq!(b.chunks[1].1.len(), 7);
        assert!(!b.flagged);
        s.done(11);
        assert!(!s.congested());
        assert!(s.take().is_none());
    }

    #[test]
    fn a_flag_wakes_the_writer_without_chunks() {
        let s: Arc<Spool<u8>> = Arc::new(Spool::new(10, 4));
        let w = s.clone();
        let t = std::thread::spawn(move || w.take().map(|b| (b.chunks.len(), b.flagged)));
        s.flag();
        assert_eq!(t.join().unwrap(), Some((0, true)));
    }
}
