//! A deadline queue: every timer of the process in one binary heap, with cancellation.
//! Cancelled entries are dropped lazily but never reported as the next deadline, so a
//! cancelled timer never causes a wake-up. Time is an argument; there is no clock here.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// `now + d`, saturating at a year from now instead of overflowing.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(Duration::from_secs(366 * 86400)))
        .unwrap_or(now)
}

/// Identifies one armed timer, for cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

impl TimerId {
    /// Never armed: cancelling it does nothing.
    pub const NONE: TimerId = TimerId(u64::MAX);
}

pub struct DeadlineQueue<T> {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    live: HashMap<TimerId, T>,
    next_id: u64,
}

impl<T> Default for DeadlineQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> DeadlineQueue<T> {
    pub fn new() -> Self {
        DeadlineQueue {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_id: 0,
        }
    }

    /// Arms a timer that fires at `at` carrying `value`.
    pub fn insert(&mut self, at: Instant, value: T) -> TimerId {
        let id = TimerId(self.next_id);
        self.next_id += 1;
        self.heap.push(Reverse((at, id)));
        self.live.insert(id, value);
        id
    }

    /// Disarms a timer; returns its value if it was still armed.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let v = self.live.remove(&id);
        self.purge_top();
        v
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        self.purge_top();
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Removes and returns one timer due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<(TimerId, T)> {
        loop {
            let Reverse((at, id)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(v) = self.live.remove(&id) {
                return Some((id, v));
            }
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    fn purge_top(&mut self) {
        while let Some(Reverse((_, id))) = self.heap.peek() {
            if self.live.contains_key(id) {
                break;
            }
            self.heap.pop();
        }
        // Keep the heap from filling up with cancelled entries buried below live ones.
        if self.heap.len() > 64 && self.heap.len() > 4 * self.live.len() {
            let live = &self.live;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_order_and_cancels() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = DeadlineQueue::new();
        let a = q.insert(ms(30), "a");
        q.insert(ms(10), "b");
        let c = q.insert(ms(20), "c");
        assert_eq!(q.next_deadline(), Some(ms(10)));
        assert_eq!(q.cancel(c), Some("c"));
        assert_eq!(q.cancel(c), None);
        assert_eq!(q.pop_due(ms(5)), None);
        assert_eq!(q.pop_due(ms(100)).map(|x| x.1), Some("b"));
        // the cancelled "c" is never the next deadline
        assert_eq!(q.next_deadline(), Some(ms(30)));
        assert_eq!(q.pop_due(ms(100)), Some((a, "a")));
        assert_eq!(q.pop_due(ms(100)), None);
        assert_eq!(q.next_deadline(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn cancelling_the_earliest_moves_the_deadline() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::new();
        let first = q.insert(t0 + Duration::from_secs(1), 1);
        q.insert(t0 + Duration::from_secs(2), 2);
        q.cancel(first);
        assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn many_cancellations_stay_bounded() {
        let t0 = Instant::now();
        let mut q = DeadlineQueue::new();
        let keep = q.insert(t0, 0);
        for i in 0..10_000u64 {
            let id = q.insert(t0 + Duration::from_secs(i + 1), i);
            q.cancel(id);
        }
        assert!(q.heap.len() <= 65, "{}", q.heap.len());
        assert_eq!(q.pop_due(t0), Some((keep, 0)));
    }
}
