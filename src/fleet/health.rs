//! Health as the subsystems share it: a ship's health status, why a check failed, and the
//! counts the metrics endpoint shows for its checks.

use std::time::Duration;

/// A ship's health as its checks have found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// No verdict yet (not checked since its start, or no check).
    Unknown,
    Healthy,
    /// Failed `health_fails` checks in a row: the edge does not route to it.
    Unhealthy,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Unknown => "unknown",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }
}

/// Why one check failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckFailure {
    /// The connection was refused or could not be made.
    Connect,
    /// Not decided within `health_timeout`.
    Timeout,
    /// Answered, but not with a 2xx status (or not HTTP).
    Status,
    /// An `exec:` check's command failed (or could not be run).
    Exit,
}

impl CheckFailure {
    pub const ALL: [CheckFailure; 4] = [
        CheckFailure::Connect,
        CheckFailure::Timeout,
        CheckFailure::Status,
        CheckFailure::Exit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CheckFailure::Connect => "connect",
            CheckFailure::Timeout => "timeout",
            CheckFailure::Status => "status",
            CheckFailure::Exit => "exit",
        }
    }
}

/// Upper bounds (seconds) of the check duration histogram.
pub const CHECK_BUCKETS: [f64; 9] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0];

/// A ship's checks, for the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckStats {
    pub hist: [u64; CHECK_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
    /// By [`CheckFailure`], in the order of `CheckFailure::ALL`.
    pub failures: [u64; 4],
}

impl CheckStats {
    pub fn observe(&mut self, took: Duration, failure: Option<CheckFailure>) {
        let secs = took.as_secs_f64();
        if let Some(i) = CHECK_BUCKETS.iter().position(|&b| secs <= b) {
            self.hist[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
        if let Some(f) = failure {
            self.failures[f as usize] += 1;
        }
    }
}
