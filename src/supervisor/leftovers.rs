//! What a killed instance leaves behind. Parent-death signals reach only direct children,
//! so a mothership killed with SIGKILL (the OOM killer, an operator) leaves grandchildren
//! running in its programs' process groups, and the next start fights them for ports.
//!
//! Each instance records, in the socket folder, the process group of every child it
//! spawns (`fleet-<manifest hash>-<pid>.groups`: a header line with its pid and start
//! time, then one `group PGID GRACE_MS NAME` line per spawn, appended). A clean exit
//! removes the file. At start, the files of the same manifest whose instance is gone are
//! read, and the groups still alive are stopped: their stop signal is SIGTERM and SIGCONT,
//! then SIGKILL after their grace period. This runs before anything is bound or spawned.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::spawn::{group_alive, signal_group};

/// The record of the running instance.
pub struct Record {
    path: PathBuf,
    file: File,
    bytes: usize,
}

/// Past this size the record is rewritten with the groups still alive (a crash-looping
/// program appends a line per restart).
const COMPACT_AT: usize = 256 << 10;

/// A group left by an instance that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pgid: i32,
    pub grace: Duration,
    pub name: String,
}

impl Record {
    /// Stops what earlier instances of the manifest at `manifest` left, then creates this
    /// instance's record. `None` (with a warning) when the folder cannot be written.
    pub fn start(dir: &Path, manifest: &Path) -> Option<Record> {
        let prefix = format!("fleet-{:016x}-", manifest_key(manifest));
        let found = find(dir, &prefix);
        if !found.is_empty() {
            stop(&found);
        }
        let me = std::process::id();
        let path = dir.join(format!("{prefix}{me}.groups"));
        let header = format!("mothership {me} {}\n", start_time(me).unwrap_or(0));
        let made = std::fs::create_dir_all(dir).and_then(|()| {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)?;
            f.write_all(header.as_bytes())?;
            Ok(f)
        });
        match made {
            Ok(file) => Some(Record {
                path,
                file,
                bytes: header.len(),
            }),
            Err(e) => {
                log::warn!(
                    "cannot record process groups in {}: {e}; a later start will not find what this one leaves if it is killed",
                    dir.display()
                );
                None
            }
        }
    }

    /// Records a spawned child's process group.
    pub fn spawned(&mut self, pgid: i32, grace: Duration, name: &str) {
        let line = format!("group {pgid} {} {name}\n", grace.as_millis());
        if self.bytes + line.len() > COMPACT_AT {
            self.compact();
        }
        if self.file.write_all(line.as_bytes()).is_ok() {
            self.bytes += line.len();
        }
    }

    fn compact(&mut self) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let mut out = String::new();
        for (i, line) in text.lines().enumerate() {
            let keep = i == 0 || parse_group(line).is_some_and(|g| group_alive(g.pgid));
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        let tmp = self.path.with_extension("tmp");
        let done = std::fs::write(&tmp, &out)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .and_then(|()| OpenOptions::new().append(true).open(&self.path));
        if let Ok(f) = done {
            self.file = f;
            self.bytes = out.len();
        }
    }

    /// A clean exit: nothing is left behind, so the record goes.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// FNV-1a of the manifest's canonical path: the same manifest, the same key.
fn manifest_key(manifest: &Path) -> u64 {
    let p = std::fs::canonicalize(manifest).unwrap_or_else(|_| manifest.to_path_buf());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in p.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// When process `pid` started (clock ticks since boot), to tell a reused pid apart.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the instance with this header line still running?
fn instance_alive(header: &str) -> bool {
    let mut parts = header.split_whitespace();
    let (Some("mothership"), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let started: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && (started == 0 || start_time(pid).is_none_or(|t| t == started))
}

fn parse_group(line: &str) -> Option<Leftover> {
    let mut p = line.splitn(4, ' ');
    if p.next()? != "group" {
        return None;
    }
    let pgid: i32 = p.next()?.parse().ok()?;
    let grace = Duration::from_millis(p.next()?.parse().ok()?);
    let name = p.next().unwrap_or("?").to_string();
    (pgid > 1).then_some(Leftover { pgid, grace, name })
}

/// The groups still alive in the records of gone instances (whose files are removed).
fn find(dir: &Path, prefix: &str) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Leftover> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if !n.starts_with(prefix) || !n.ends_with(".groups") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines();
        if instance_alive(lines.next().unwrap_or("")) {
            continue;
        }
        for g in lines.filter_map(parse_group) {
            if group_alive(g.pgid) && !found.iter().any(|f| f.pgid == g.pgid) {
                found.push(g);
            }
        }
        let _ = std::fs::remove_file(e.path());
    }
    found
}

/// Stops the groups: SIGTERM and SIGCONT, then SIGKILL to those still alive after their
/// grace period. Blocks (polling every 20 ms) until they are gone or killed.
fn stop(groups: &[Leftover]) {
    for g in groups {
        log::warn!(
            "a previous instance of this manifest was killed and left {} (process group {}) running; stopping it",
            g.name,
            g.pgid
        );
        signal_group(g.pgid, libc::SIGTERM);
        signal_group(g.pgid, libc::SIGCONT);
    }
    let t0 = Instant::now();
    let mut left: Vec<&Leftover> = groups.iter().collect();
    while !left.is_empty() {
        let now = t0.elapsed();
        left.retain(|g| {
            if !group_alive(g.pgid) {
                return false;
            }
            if now >= g.grace {
                log::warn!(
                    "{} (process group {}) still running after {:?}; sending SIGKILL",
                    g.name,
                    g.pgid,
                    g.grace
                );
                signal_group(g.pgid, libc::SIGKILL);
                return false;
            }
            true
        });
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_lines() {
        assert_eq!(
            parse_group("group 1234 5000 web server"),
            Some(Leftover {
                pgid: 1234,
                grace: Duration::from_secs(5),
                name: "web server".into()
            })
        );
        assert_eq!(parse_group("group 1 5000 init"), None);
        assert_eq!(parse_group("group x 5000 a"), None);
        assert_eq!(parse_group("mothership 1 2"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not_it() {
        let me = std::process::id();
        let t = start_time(me).unwrap_or(0);
        assert!(instance_alive(&format!("mothership {me} {t}")));
        if t != 0 {
            assert!(!instance_alive(&format!("mothership {me} {}", t + 1)));
        }
        assert!(!instance_alive("mothership 2147483646 0"));
        assert!(!instance_alive("garbage"));
    }
}
