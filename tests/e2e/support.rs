//! Helpers: a temp dir per test, running the binary, waiting for conditions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mothership");

/// A scratch folder, removed on drop.
pub struct Dir {
    pub path: PathBuf,
}

impl Dir {
    pub fn new(tag: &str) -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "ms-e2e-{}-{}-{}",
            tag,
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Dir { path }
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }

    /// Writes `ship-manifest.toml` (or another file) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    pub fn read(&self, name: &str) -> String {
        fs::read_to_string(self.join(name)).unwrap_or_default()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Runs the binary to completion in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        // Each test's fleet has its own socket folder (and so its own control socket).
        .env("MS_SOCKET_DIR", dir.join("sock"))
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running mothership whose stdout and stderr go to files in its folder.
pub struct Fleet {
    pub child: Child,
    pub out: PathBuf,
    pub err: PathBuf,
    status: Option<ExitStatus>,
}

impl Fleet {
    pub fn start(dir: &Dir, args: &[&str]) -> Fleet {
        Self::start_with(dir, args, |_| {})
    }

    pub fn start_with(dir: &Dir, args: &[&str], f: impl FnOnce(&mut Command)) -> Fleet {
        let out = dir.join("mothership.out");
        let err = dir.join("mothership.err");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .current_dir(&dir.path)
            // Each test's fleet has its own socket folder (and so its own control
            // socket); a test may give another.
            .env("MS_SOCKET_DIR", dir.join("sock"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap());
        f(&mut cmd);
        let child = cmd.spawn().unwrap();
        Fleet {
            child,
            out,
            err,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        if let Some(s) = self.status {
            return s.code();
        }
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return Some(s.code().unwrap_or(
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0),
                ));
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.out).unwrap_or_default()).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.err).unwrap_or_default()).into_owned()
    }

    /// True once `needle` is in the fleet's stderr, waiting up to 10 s for it: log lines
    /// reach the file through the output writer a moment after what they tell of.
    pub fn logged(&self, needle: &str) -> bool {
        wait_for(Duration::from_secs(10), || self.stderr().contains(needle))
    }
}

impl Fleet {
    /// Lands the fleet as an operator would: SIGTERM, then a wait; SIGKILL only if it is
    /// still running after `bound` (a SIGKILLed supervisor leaves its grandchildren).
    pub fn stop(&mut self, bound: Duration) -> Option<i32> {
        if self.status.is_some() || self.child.try_wait().ok().flatten().is_some() {
            return self.wait(Duration::ZERO);
        }
        self.signal(libc::SIGTERM);
        if let Some(code) = self.wait(bound) {
            return Some(code);
        }
        eprintln!(
            "fleet {} still running {bound:?} after SIGTERM: SIGKILL",
            self.pid()
        );
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        None
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

/// Polls `cond` every 20 ms for up to `timeout`.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pids of processes whose command line contains `marker` (excluding this test process).
pub fn pids_with(marker: &str) -> Vec<i32> {
    let mut v = Vec::new();
    let me = std::process::id() as i32;
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmd).contains(marker) {
            v.push(pid);
        }
    }
    v
}

/// A fresh marker string to find a test's processes by command line.
pub fn marker(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "msmark-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free TCP port on loopback, for a server a test starts.
///
/// Taken below the kernel's ephemeral range (where outgoing connections get their local
/// ports: the 10,000-connection test alone takes thousands), each port handed out once per
/// test binary, starting at a place that depends on the process id so that two test runs
/// at once rarely meet; and checked to be bindable now.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let (lo, hi) = ephemeral_range();
    // The window below the ephemeral range, or above it when there is no room below.
    let (base, span) = if lo > 11_000 {
        (10_000u64, u64::from(lo) - 10_000)
    } else {
        (u64::from(hi) + 1, 65_535 - u64::from(hi))
    };
    let start = u64::from(std::process::id()) * 97 % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port outside the ephemeral range");
}

fn ephemeral_range() -> (u16, u16) {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|x| x.parse().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (32_768, 60_999),
    }
}

/// Value of a `Key:  N kB` line of /proc/<pid>/status, in KiB.
pub fn proc_status_kib(pid: i32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
