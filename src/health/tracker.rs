//! The verdict of one ship's health checks as a pure machine: check results and the clock
//! in, changes of status out. It counts consecutive failures and passes, ignores failures
//! while the ship starts and during its `health_grace`, and says when a ship has been
//! unhealthy long enough to be restarted.

use std::time::{Duration, Instant};

use crate::fleet::health::Status;
use crate::manifest::Health;
use crate::reactor::deadline::after;

/// What a result or the clock changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The status is now this, for this reason.
    Status(Status, String),
    /// Unhealthy for longer than `unhealthy_restart`: restart it (said once per episode).
    Restart(String),
}

#[derive(Clone, Debug)]
pub struct Tracker {
    fails_needed: u32,
    passes_needed: u32,
    grace: Duration,
    restart_after: Option<Duration>,
    status: Status,
    fails: u32,
    passes: u32,
    /// When the ship's current process started.
    started: Instant,
    /// The ship is up: failures count (outside the grace period).
    running: bool,
    unhealthy_since: Option<Instant>,
    restart_said: bool,
    reason: String,
}

impl Tracker {
    pub fn new(h: &Health, now: Instant) -> Tracker {
        Tracker {
            fails_needed: h.fails.max(1),
            passes_needed: h.passes.max(1),
            grace: h.grace,
            restart_after: h.unhealthy_restart,
            status: Status::Unknown,
            fails: 0,
            passes: 0,
            started: now,
            running: false,
            unhealthy_since: None,
            restart_said: false,
            reason: String::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// A new process of the ship started: no verdict until it is checked again.
    pub fn started(&mut self, now: Instant) -> Option<Change> {
        self.started = now;
        self.running = false;
        self.reset(Status::Unknown, "started".into())
    }

    /// The ship is up: from now on (after the grace period) failures count.
    pub fn running(&mut self) {
        self.running = true;
    }

    /// The ship is down (stopping, backing off, ended): no verdict.
    pub fn stopped(&mut self) -> Option<Change> {
        self.running = false;
        self.reset(Status::Unknown, "not running".into())
    }

    fn reset(&mut self, status: Status, reason: String) -> Option<Change> {
        self.fails = 0;
        self.passes = 0;
        self.unhealthy_since = None;
        self.restart_said = false;
        self.set(status, reason)
    }

    fn set(&mut self, status: Status, reason: String) -> Option<Change> {
        if status == self.status {
            return None;
        }
        self.status = status;
        self.reason.clone_from(&reason);
        Some(Change::Status(status, reason))
    }

    /// One check ended: `Err` carries why it failed.
    pub fn result(&mut self, outcome: Result<(), String>, now: Instant) -> Option<Change> {
        match outcome {
            Ok(()) => {
                self.fails = 0;
                match self.status {
                    Status::Healthy => None,
                    Status::Unknown => self.set(Status::Healthy, "check passed".into()),
                    Status::Unhealthy => {
                        self.passes += 1;
                        if self.passes < self.passes_needed {
                            return None;
                        }
                        self.unhealthy_since = None;
                        self.restart_said = false;
                        let n = self.passes;
                        self.set(Status::Healthy, format!("{n} check(s) passed in a row"))
                    }
                }
            }
            Err(why) => {
                self.passes = 0;
                self.reason.clone_from(&why);
                let in_grace = now < after(self.started, self.grace);
                if !self.running || in_grace || self.status == Status::Unhealthy {
                    return None;
                }
                self.fails += 1;
                if self.fails < self.fails_needed {
                    return None;
                }
                self.unhealthy_since = Some(now);
                let n = self.fails;
                self.set(
                    Status::Unhealthy,
                    format!("{why} ({n} check(s) failed in a row)"),
                )
            }
        }
    }

    /// When a restart falls due, while the ship is unhealthy and one is to follow.
    pub fn restart_at(&self) -> Option<Instant> {
        match (self.unhealthy_since, self.restart_after, self.restart_said) {
            (Some(since), Some(d), false) => Some(after(since, d)),
            _ => None,
        }
    }

    /// `Restart` once the ship has been unhealthy for `unhealthy_restart`.
    pub fn restart_due(&mut self, now: Instant) -> Option<Change> {
        let at = self.restart_at()?;
        if now < at {
            return None;
        }
        self.restart_said = true;
        Some(Change::Restart(self.reason.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HealthProbe;

    fn health(fails: u32, passes: u32, grace: u64, restart: Option<u64>) -> Health {
        Health {
            probe: HealthProbe::Exec {
                argv: vec!["true".into()],
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fails,
            passes,
            grace: Duration::from_secs(grace),
            unhealthy_restart: restart.map(Duration::from_secs),
        }
    }

    fn fail(why: &str) -> Result<(), String> {
        Err(why.into())
    }

    #[test]
    fn unhealthy_after_fails_in_a_row_and_healthy_again_after_passes() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = Tracker::new(&health(3, 2, 0, Some(30)), t0);
        assert_eq!(t.started(t0), None, "already unknown");
        // While it starts, failures do not count; the first pass is news.
        assert_eq!(t.result(fail("refused"), s(1)), None);
        assert_eq!(
            t.result(Ok(()), s(2)),
            Some(Change::Status(Status::Healthy, "check passed".into()))
        );
        t.running();
        assert_eq!(t.result(fail("status 500"), s(3)), None);
        assert_eq!(t.result(fail("status 500"), s(4)), None);
        assert_eq!(t.result(Ok(()), s(5)), None, "a pass resets the count");
        assert_eq!(t.result(fail("status 500"), s(6)), None);
        assert_eq!(t.result(fail("status 500"), s(7)), None);
        assert_eq!(
            t.result(fail("status 503"), s(8)),
            Some(Change::Status(
                Status::Unhealthy,
                "status 503 (3 check(s) failed in a row)".into()
            ))
        );
        assert_eq!(t.restart_at(), Some(s(38)));
        assert_eq!(t.restart_due(s(37)), None);
        assert_eq!(t.result(Ok(()), s(9)), None, "one pass of two");
        assert_eq!(t.result(fail("status 503"), s(10)), None, "passes reset");
        assert_eq!(t.result(Ok(()), s(11)), None);
        assert_eq!(
            t.result(Ok(()), s(12)),
            Some(Change::Status(
                Status::Healthy,
                "2 check(s) passed in a row".into()
            ))
        );
        assert_eq!(t.restart_at(), None, "healthy again: no restart");
    }

    #[test]
    fn a_restart_falls_due_once_per_episode() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = Tracker::new(&health(1, 1, 0, Some(10)), t0);
        t.result(Ok(()), s(0));
        t.running();
        assert!(matches!(
            t.result(fail("timed out"), s(1)),
            Some(Change::Status(Status::Unhealthy, _))
        ));
        assert_eq!(
            t.restart_due(s(11)),
            Some(Change::Restart(
                "timed out (1 check(s) failed in a row)".into()
            ))
        );
        assert_eq!(t.restart_due(s(20)), None, "said once");
        // The restart starts a new process: a new episode.
        assert!(matches!(
            t.started(s(21)),
            Some(Change::Status(Status::Unknown, _))
        ));
        assert_eq!(t.restart_at(), None);

        let mut never = Tracker::new(&health(1, 1, 0, None), t0);
        never.running();
        never.result(fail("x"), s(1));
        assert_eq!(never.status(), Status::Unhealthy);
        assert_eq!(never.restart_at(), None, "unhealthy_restart = \"never\"");
    }

    #[test]
    fn failures_in_the_grace_period_do_not_count() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut t = Tracker::new(&health(1, 1, 30, None), t0);
        t.started(t0);
        t.running();
        assert_eq!(t.result(fail("refused"), s(10)), None, "in grace");
        assert_eq!(t.status(), Status::Unknown);
        assert!(matches!(
            t.result(fail("refused"), s(30)),
            Some(Change::Status(Status::Unhealthy, _))
        ));
        assert!(matches!(
            t.stopped(),
            Some(Change::Status(Status::Unknown, _))
        ));
    }
}
