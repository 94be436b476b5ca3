//! The loop's side of an election that runs on a worker thread: messages come in through a
//! channel (the worker wakes the loop with its `mio::Waker`), the prelaunch outcome goes
//! back the same way.

use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Rank;

/// From the election worker to the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// This instance's rank. An escort may later be told `Elected(Flagship)` when it takes
    /// over from a flagship that died before `ready`.
    Elected(Rank, String),
    /// The flagship published `ready`: launch without prelaunch.
    Ready(String),
    /// The flagship published `abort`, or the election cannot go on: exit 1.
    Failed(String),
}

/// From the loop to the worker: the flagship's prelaunch ended (successfully or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    PrelaunchDone {
        ok: bool,
    },
    /// Landing on a signal: let go of the lock without a verdict (an escort takes over).
    Release,
}

pub struct Coordinator {
    rx: Receiver<Report>,
    tx: Sender<Command>,
    /// The worker has nothing more to say (it reported an outcome, or was told the
    /// prelaunch ended): its going away is expected.
    finished: bool,
    /// The worker was told how prelaunch went and is publishing it.
    told: bool,
    /// The worker leads (it reported `Elected(Flagship)`): only then is there something
    /// to publish at the end. An escort's worker may be blocked waiting for the lock.
    leading: bool,
    worker: Option<JoinHandle<()>>,
}

impl Coordinator {
    pub fn new(
        rx: Receiver<Report>,
        tx: Sender<Command>,
        worker: Option<JoinHandle<()>>,
    ) -> Coordinator {
        Coordinator {
            rx,
            tx,
            finished: false,
            told: false,
            leading: false,
            worker,
        }
    }

    /// Before the process exits: gives the worker up to `max` to publish what it was told
    /// (a worker blocked on the database is left behind).
    pub fn wait(&mut self, max: Duration) {
        if !self.told || !self.leading {
            return;
        }
        let until = Instant::now() + max;
        if let Some(w) = self.worker.take() {
            while !w.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }

    /// The next report, if one arrived; a worker that went away without a word is a failure.
    pub fn report(&mut self) -> Option<Report> {
        match self.rx.try_recv() {
            Ok(r) => {
                match &r {
                    Report::Ready(_) | Report::Failed(_) => self.finished = true,
                    Report::Elected(Rank::Flagship, _) => self.leading = true,
                    Report::Elected(Rank::Escort, _) => {}
                }
                Some(r)
            }
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) if !self.finished => {
                self.finished = true;
                Some(Report::Failed("the election worker stopped".into()))
            }
            Err(TryRecvError::Disconnected) => None,
        }
    }

    /// Landing without a failure before the prelaunch ended: the worker releases the lock
    /// without publishing anything.
    pub fn release(&mut self) {
        self.finished = true;
        self.told = true;
        let _ = self.tx.send(Command::Release);
    }

    /// Tells the worker how the prelaunch went (it publishes `ready` or `abort`).
    pub fn prelaunch_done(&mut self, ok: bool) {
        self.finished = true;
        self.told = true;
        let _ = self.tx.send(Command::PrelaunchDone { ok });
    }
}
