//! Mothership's own stdout and stderr, shared with a terminal, a logger or a container
//! runtime. They stay blocking; one writer thread drains a bounded queue into them, so the
//! event loop never blocks on a slow reader. When the queue is full the loop stops reading
//! child pipes (backpressure) and the writer wakes it once there is room again.

pub mod files;
pub mod journal;
pub mod lines;
pub mod logger;
pub mod spool;

use std::fs::File;
use std::io::Write;
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use spool::Spool;

/// Above this many queued bytes the loop stops reading child output.
pub const HIGH_WATER: usize = 1 << 20;
/// The writer wakes a paused loop once the queue is back under this many bytes.
pub const LOW_WATER: usize = 256 << 10;
/// Longest wait at exit for the writer to finish.
pub const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The loop's handle on the writer thread.
#[derive(Clone)]
pub struct Output {
    spool: Arc<Spool<Stream>>,
}

impl Output {
    /// Starts the writer thread.
    pub fn start() -> std::io::Result<(Output, JoinHandle<()>)> {
        let spool = Arc::new(Spool::new(HIGH_WATER, LOW_WATER));
        let s = spool.clone();
        let handle = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || writer(&s))?;
        Ok((Output { spool }, handle))
    }

    /// The waker the writer uses to resume a paused loop.
    pub fn set_waker(&self, waker: Arc<mio::Waker>) {
        self.spool.set_waker(waker);
    }

    /// Queues bytes for one stream. Never blocks on the stream itself (once the writer
    /// has finished, the bytes are written directly).
    pub fn push(&self, stream: Stream, data: Vec<u8>) {
        if let Err(data) = self.spool.push(stream, data) {
            write_fd(stream, &data);
        }
    }

    /// Queues one of mothership's own log lines, unless the queue is over its high-water
    /// mark (the reader of our output is stuck): then the line is refused (`false`) and the
    /// caller counts it. Child output is never refused (the loop stops reading it instead),
    /// but our own lines (the access log: tens of thousands a second) cannot wait.
    pub fn push_own(&self, stream: Stream, data: Vec<u8>) -> bool {
        if self.spool.full() {
            return false;
        }
        self.push(stream, data);
        true
    }

    /// True when the loop should stop reading child output; if so, the writer will wake
    /// the loop (through the waker) when there is room again.
    pub fn congested(&self) -> bool {
        self.spool.congested()
    }

    /// Writes out everything queued and stops the writer thread, waiting at most
    /// `FINISH_WAIT` for it: a stuck stdout must not keep the process from ending (as PID
    /// 1 the kernel drops default-action signals, so nothing else would end it). Later
    /// pushes are written directly.
    pub fn finish(&self, handle: JoinHandle<()>) {
        self.spool.close();
        let end = std::time::Instant::now() + FINISH_WAIT;
        while !handle.is_finished() {
            if std::time::Instant::now() >= end {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let _ = handle.join();
    }
}

fn writer(s: &Spool<Stream>) {
    while let Some(batch) = s.take() {
        let mut written = 0;
        for (stream, data) in &batch.chunks {
            write_fd(*stream, data);
            written += data.len();
        }
        s.done(written);
    }
}

/// Blocking write of all of `data` to fd 1 or 2. If another process made the shared file
/// description non-blocking, wait for it to become writable instead of dropping data.
/// Other errors (a closed stdout) drop the data: there is nowhere else to put it.
fn write_fd(stream: Stream, data: &[u8]) {
    let fd = match stream {
        Stream::Stdout => 1,
        Stream::Stderr => 2,
    };
    // SAFETY: fds 1 and 2 live for the whole process; ManuallyDrop keeps them open.
    let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
    let mut rest = data;
    while !rest.is_empty() {
        match f.write(rest) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd; this thread may block.
                unsafe {
                    libc::poll(&mut pfd, 1, -1);
                }
            }
            Err(_) => return,
        }
    }
}
