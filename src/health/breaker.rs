//! A circuit breaker for one backend, as a pure machine over the clock. Closed, it lets
//! requests through and counts failures; `failures` of them within `window` open it.
//! Open, it refuses requests (the edge answers 503 at once) until `cooldown` has passed;
//! then it is half-open: one trial request goes through, and its outcome (or a passing
//! health check) closes it again or opens it for another cool-down.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::reactor::deadline::after;

/// The breaker's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Failures within `window` that open it (0: never opens).
    pub failures: u32,
    pub window: Duration,
    /// How long it stays open before a trial.
    pub cooldown: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed,
    /// Refusing until `until`.
    Open {
        until: Instant,
    },
    /// One trial at a time; `trial` is when the one in flight went out.
    HalfOpen {
        trial: Option<Instant>,
    },
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

/// What the breaker says of a request about to go to its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// The one request that decides whether the breaker closes.
    Trial,
    /// Refused: come back after this long.
    Refuse {
        retry_after: Duration,
    },
}

/// A change of state, for the log and the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

#[derive(Clone, Debug)]
pub struct Breaker {
    settings: Settings,
    state: State,
    /// Times of the recent failures while closed (at most `failures` kept).
    recent: VecDeque<Instant>,
}

impl Breaker {
    pub fn new(settings: Settings) -> Breaker {
        Breaker {
            settings,
            state: State::Closed,
            recent: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    fn go(&mut self, to: State) -> Option<Transition> {
        let from = self.state;
        self.state = to;
        self.recent.clear();
        Some(Transition { from, to })
    }

    fn open(&mut self, now: Instant) -> Option<Transition> {
        let until = after(now, self.settings.cooldown);
        self.go(State::Open { until })
    }

    /// May a request go to the backend now? A trial that has not come back within a
    /// cool-down is given up, and another is let through.
    pub fn admit(&mut self, now: Instant) -> (Admit, Option<Transition>) {
        match self.state {
            State::Closed => (Admit::Pass, None),
            State::Open { until } if now < until => (
                Admit::Refuse {
                    retry_after: until.saturating_duration_since(now),
                },
                None,
            ),
            State::Open { .. } => {
                let t = self.go(State::HalfOpen { trial: Some(now) });
                (Admit::Trial, t)
            }
            State::HalfOpen { trial: Some(at) } if now < after(at, self.settings.cooldown) => (
                Admit::Refuse {
                    retry_after: after(at, self.settings.cooldown).saturating_duration_since(now),
                },
                None,
            ),
            State::HalfOpen { .. } => {
                self.state = State::HalfOpen { trial: Some(now) };
                (Admit::Trial, None)
            }
        }
    }

    /// A request to the backend got an answer that counts as one.
    pub fn success(&mut self) -> Option<Transition> {
        match self.state {
            State::HalfOpen { .. } => self.go(State::Closed),
            _ => None,
        }
    }

    /// A request to the backend failed (refused, timed out, reset, or a status that
    /// counts as a failure).
    pub fn failure(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Closed if self.settings.failures > 0 => {
                self.recent.push_back(now);
                while self.recent.len() > self.settings.failures as usize {
                    self.recent.pop_front();
                }
                let within = self.recent.front().is_some_and(|&first| {
                    now.saturating_duration_since(first) <= self.settings.window
                });
                if self.recent.len() >= self.settings.failures as usize && within {
                    self.open(now)
                } else {
                    None
                }
            }
            State::HalfOpen { .. } => self.open(now),
            _ => None,
        }
    }

    /// A health check of the backend passed: after the cool-down, that closes it as a
    /// successful trial would.
    pub fn check_passed(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::HalfOpen { .. } => self.go(State::Closed),
            State::Open { until } if now >= until => self.go(State::Closed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            failures: 3,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
        }
    }

    #[test]
    fn opens_after_failures_in_the_window_then_half_opens_and_closes_on_a_good_trial() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Breaker::new(settings());
        assert_eq!(b.admit(t0), (Admit::Pass, None));
        assert_eq!(b.failure(s(0)), None);
        // Failures spread wider than the window do not open it.
        assert_eq!(b.failure(s(11_000)), None);
        assert_eq!(b.failure(s(12_000)), None);
        assert_eq!(b.state(), State::Closed, "the first fell out of the window");
        let t = b.failure(s(13_000)).expect("opens");
        assert_eq!(t.from, State::Closed);
        assert_eq!(t.to, State::Open { until: s(18_000) });
        // Open: refused at once, with the time left.
        assert_eq!(
            b.admit(s(14_000)).0,
            Admit::Refuse {
                retry_after: Duration::from_secs(4)
            }
        );
        // After the cool-down: one trial, others refused while it is out.
        let (a, t) = b.admit(s(18_000));
        assert_eq!(a, Admit::Trial);
        assert_eq!(t.map(|t| t.to.name()), Some("half-open"));
        assert!(matches!(b.admit(s(18_100)).0, Admit::Refuse { .. }));
        let t = b.success().expect("closes");
        assert_eq!(t.to, State::Closed);
        assert_eq!(b.admit(s(18_200)), (Admit::Pass, None));
        // It really closed: failures start counting from zero.
        assert_eq!(b.failure(s(18_300)), None);
        assert_eq!(b.failure(s(18_400)), None);
        assert!(b.failure(s(18_500)).is_some(), "opens again after 3 more");
    }

    #[test]
    fn a_failed_trial_opens_it_again_and_a_lost_trial_is_replaced() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Breaker::new(settings());
        for i in 0..3 {
            b.failure(s(i));
        }
        assert_eq!(b.admit(s(5_002)).0, Admit::Trial);
        let t = b.failure(s(5_100)).expect("opens again");
        assert_eq!(t.to, State::Open { until: s(10_100) });
        assert_eq!(b.admit(s(10_100)).0, Admit::Trial);
        // The trial never comes back (its client left): after a cool-down, another.
        assert!(matches!(b.admit(s(12_000)).0, Admit::Refuse { .. }));
        assert_eq!(b.admit(s(15_100)).0, Admit::Trial);
        assert!(b.success().is_some());
    }

    #[test]
    fn a_passing_health_check_closes_it_after_the_cooldown_and_zero_failures_never_opens() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut b = Breaker::new(settings());
        for i in 0..3 {
            b.failure(s(i));
        }
        assert_eq!(b.check_passed(s(1_000)), None, "still cooling down");
        assert_eq!(b.check_passed(s(6_000)).map(|t| t.to), Some(State::Closed));
        let mut off = Breaker::new(Settings {
            failures: 0,
            ..settings()
        });
        for i in 0..100 {
            assert_eq!(off.failure(s(i)), None);
        }
        assert_eq!(off.admit(s(100)).0, Admit::Pass);
    }
}
