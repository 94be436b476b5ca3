//! The event loop's building blocks: token allocation for `mio` sources and the deadline
//! queue. Knows nothing about ships or routes.

pub mod deadline;
pub mod peer;

pub use deadline::{DeadlineQueue, TimerId};

use mio::Token;

/// Fixed tokens; everything else comes from a [`Slab`].
pub const SIGNALS: Token = Token(0);

/// Puts TERM, INT, QUIT (and PWR) back to their default action (ending the process). Needed once
/// a loop stops watching them: signal-hook leaves its own handler installed when its
/// `Signals` goes away, and a signal would then be swallowed.
pub fn default_stop_signals() {
    #[cfg(target_os = "linux")]
    let stop = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT, libc::SIGPWR];
    #[cfg(not(target_os = "linux"))]
    let stop = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];
    for sig in stop {
        // SAFETY: restoring a default disposition.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}
pub const WAKER: Token = Token(1);
/// Tokens from here up to [`HOOK_TOKENS`] belong to the dashboard (`--tui`); those below,
/// to the supervisor.
pub const TUI_TOKENS: usize = 1 << 20;
/// Tokens from here up to [`CONTROL_TOKENS`] belong to the operator's hooks.
pub const HOOK_TOKENS: usize = 1 << 21;
/// Tokens from here up to [`HEALTH_TOKENS`] belong to the control socket.
pub const CONTROL_TOKENS: usize = 1 << 22;
/// Tokens from here up to [`EDGE_TOKENS`] belong to the health checks.
pub const HEALTH_TOKENS: usize = 1 << 23;
/// Tokens from here on belong to the HTTP edge.
pub const EDGE_TOKENS: usize = 1 << 24;
const FIRST_DYNAMIC: usize = 2;

/// Values keyed by `mio::Token`, with slot reuse.
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slab<T> {
    pub fn insert(&mut self, v: T) -> Token {
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(v);
                i
            }
            None => {
                self.slots.push(Some(v));
                self.slots.len() - 1
            }
        };
        Token(idx + FIRST_DYNAMIC)
    }

    fn index(t: Token) -> Option<usize> {
        t.0.checked_sub(FIRST_DYNAMIC)
    }

    pub fn get(&self, t: Token) -> Option<&T> {
        self.slots.get(Self::index(t)?)?.as_ref()
    }

    pub fn get_mut(&mut self, t: Token) -> Option<&mut T> {
        self.slots.get_mut(Self::index(t)?)?.as_mut()
    }

    pub fn remove(&mut self, t: Token) -> Option<T> {
        let i = Self::index(t)?;
        let v = self.slots.get_mut(i)?.take();
        if v.is_some() {
            self.free.push(i);
        }
        v
    }

    /// Tokens of every occupied slot.
    pub fn tokens(&self) -> Vec<Token> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(i, _)| Token(i + FIRST_DYNAMIC))
            .collect()
    }

    /// True if any value satisfies `f` (no allocation).
    pub fn any(&self, f: impl Fn(&T) -> bool) -> bool {
        self.slots.iter().flatten().any(f)
    }

    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slab_reuses_slots_and_never_hands_out_fixed_tokens() {
        let mut s = Slab::default();
        let a = s.insert("a");
        let b = s.insert("b");
        assert!(a != SIGNALS && a != WAKER && b != a);
        assert_eq!(s.remove(a), Some("a"));
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(a), None);
        let c = s.insert("c");
        assert_eq!(c, a);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(SIGNALS), None);
    }
}
