//! What a killed instance leaves behind. Parent-death signals reach only direct children,
//! so a mothership killed with SIGKILL (the OOM killer, an operator) leaves grandchildren
//! running in its programs' process groups, and the next start fights them for ports.
//!
//! Each instance records, in the socket folder, the process group of every child it
//! spawns (`fleet-<manifest hash>-<pid>.groups`: a header line with its pid, start time
//! and boot id, then one `group PGID GRACE_MS LEADER_START NAME` line per spawn,
//! appended). A clean exit removes the file. At start, the files of the same manifest
//! whose instance is gone are read, and the groups still alive are stopped: SIGTERM and
//! SIGCONT, then SIGKILL after their grace period. This runs before anything is bound or
//! spawned.
//!
//! What is signalled must be what was spawned: the folder must be a directory owned by
//! this user with no access for others (else nothing is recorded or read), records owned
//! by another user or that are not plain files are ignored, records of another boot are
//! ignored, and a group whose leader still exists is signalled only when the leader's
//! start time is the recorded one (a pid reused by a new session leader is left alone).
//! A group whose leader is gone while members remain keeps its id: the kernel does not
//! reuse it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
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
    /// Start time of the group's leader (clock ticks since boot; 0: unknown).
    pub leader_start: u64,
    pub name: String,
}

impl Record {
    /// Stops what earlier instances of the manifest at `manifest` left, then creates this
    /// instance's record. `None` (with a warning) when the folder cannot be written.
    pub fn start(dir: &Path, manifest: &Path) -> Option<Record> {
        if let Err(e) = private_dir(dir) {
            log::warn!(
                "not recording process groups in {}: {e}; a later start will not find what this one leaves if it is killed",
                dir.display()
            );
            return None;
        }
        let prefix = format!("fleet-{:016x}-", manifest_key(manifest));
        let found = find(dir, &prefix);
        if !found.is_empty() {
            stop(&found);
        }
        let me = std::process::id();
        let path = dir.join(format!("{prefix}{me}.groups"));
        let header = format!(
            "mothership {me} {} {}\n",
            start_time(me).unwrap_or(0),
            boot_id()
        );
        // A stale record of a pid this process now has: replaced, never followed.
        let _ = std::fs::remove_file(&path);
        let made = create_new(&path).and_then(|mut f| {
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

    /// Records a spawned child's process group. Runs on the loop thread: one append of a
    /// short line to a file in the socket folder (a tmpfs or a local disk) and one read
    /// of `/proc/PID/stat`, next to the fork and exec the spawn itself costs.
    pub fn spawned(&mut self, pgid: i32, grace: Duration, name: &str) {
        let started = u32::try_from(pgid).ok().and_then(start_time).unwrap_or(0);
        let line = format!("group {pgid} {} {started} {name}\n", grace.as_millis());
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
        let _ = std::fs::remove_file(&tmp);
        let done = create_new(&tmp)
            .and_then(|mut f| f.write_all(out.as_bytes()))
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

/// Makes sure `dir` is a directory of this user that no one else can list or enter
/// (creating it with mode 0700, or tightening a directory of ours; its group may keep
/// the right to pass through).
fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    if meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    // Search by the group alone (0710: the control socket's group, `control_group`)
    // lets no one list or read what is here.
    if meta.mode() & 0o067 != 0 {
        use std::os::unix::fs::PermissionsExt;
        let keep = meta.mode() & 0o010;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700 | keep))?;
    }
    Ok(())
}

/// Creates a file that must not exist yet (never following a symlink), mode 0600.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// This boot's id (Linux), so that records of an earlier boot are not taken for this one.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
        .unwrap_or_else(|| "-".to_string())
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

/// What a record's header says of its instance.
#[derive(Debug, PartialEq, Eq)]
enum Instance {
    /// Still running: its groups are its own business.
    Running,
    /// Gone, in this boot: what it left is ours to stop.
    Gone,
    /// Of another boot, or unreadable: nothing it names can be trusted.
    Stale,
}

fn instance_of(header: &str) -> Instance {
    let mut parts = header.split_whitespace();
    let (Some("mothership"), Some(pid)) = (parts.next(), parts.next()) else {
        return Instance::Stale;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return Instance::Stale;
    };
    let started: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let boot = parts.next().unwrap_or("-");
    let now = boot_id();
    if boot != now || now == "-" {
        return Instance::Stale;
    }
    if instance_alive(pid, started) {
        Instance::Running
    } else {
        Instance::Gone
    }
}

/// Is process `pid`, started at `started` (0: unknown), still running?
fn instance_alive(pid: u32, started: u64) -> bool {
    process_exists(pid as libc::pid_t)
        && (started == 0 || start_time(pid).is_none_or(|t| t == started))
}

/// Does a process with this pid exist (ours or not)?
fn process_exists(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn parse_group(line: &str) -> Option<Leftover> {
    let mut p = line.splitn(5, ' ');
    if p.next()? != "group" {
        return None;
    }
    let pgid: i32 = p.next()?.parse().ok()?;
    let grace = Duration::from_millis(p.next()?.parse().ok()?);
    let leader_start: u64 = p.next()?.parse().ok()?;
    let name = p.next().unwrap_or("?").to_string();
    (pgid > 1).then_some(Leftover {
        pgid,
        grace,
        leader_start,
        name,
    })
}

/// Is group `g` still the one that was recorded? Its leader, if a process with its id
/// exists, must have the recorded start time; with the leader gone, the id cannot have
/// been reused while the group has members.
fn still_recorded(g: &Leftover) -> bool {
    if !group_alive(g.pgid) {
        return false;
    }
    if !process_exists(g.pgid) {
        return true;
    }
    let now = u32::try_from(g.pgid).ok().and_then(start_time);
    g.leader_start != 0 && now == Some(g.leader_start)
}

/// The groups still alive in the records of gone instances (whose files are removed).
fn find(dir: &Path, prefix: &str) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut found: Vec<Leftover> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if !n.starts_with(prefix) || !n.ends_with(".groups") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !meta.is_file() || meta.uid() != me {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines();
        match instance_of(lines.next().unwrap_or("")) {
            Instance::Running => continue,
            Instance::Stale => {}
            Instance::Gone => {
                for g in lines.filter_map(parse_group) {
                    if still_recorded(&g) && !found.iter().any(|f| f.pgid == g.pgid) {
                        found.push(g);
                    } else if group_alive(g.pgid) {
                        log::debug!(
                            "process group {} of {} now belongs to another process; left alone",
                            g.pgid,
                            g.name
                        );
                    }
                }
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
            parse_group("group 1234 5000 77 web server"),
            Some(Leftover {
                pgid: 1234,
                grace: Duration::from_secs(5),
                leader_start: 77,
                name: "web server".into()
            })
        );
        assert_eq!(parse_group("group 1 5000 0 init"), None);
        assert_eq!(parse_group("group x 5000 0 a"), None);
        assert_eq!(parse_group("group 1234 5000 web"), None);
        assert_eq!(parse_group("mothership 1 2"), None);
    }

    #[test]
    fn instances_of_this_boot_and_others() {
        let me = std::process::id();
        let t = start_time(me).unwrap_or(0);
        let boot = boot_id();
        assert_eq!(
            instance_of(&format!("mothership {me} {t} {boot}")),
            Instance::Running
        );
        if t != 0 {
            assert_eq!(
                instance_of(&format!("mothership {me} {} {boot}", t + 1)),
                Instance::Gone,
                "a reused pid is not the instance"
            );
        }
        assert_eq!(
            instance_of(&format!("mothership 2147483646 0 {boot}")),
            Instance::Gone
        );
        assert_eq!(
            instance_of("mothership 2147483646 0 another-boot"),
            Instance::Stale
        );
        assert_eq!(instance_of("garbage"), Instance::Stale);
    }

    #[test]
    fn a_session_leader_with_a_reused_id_is_not_the_recorded_group() {
        use std::os::unix::process::CommandExt;
        // A new session leader (what a reused pid that called setsid looks like).
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = c.id() as i32;
        let real = start_time(c.id()).unwrap_or(0);
        let recorded = |leader_start| Leftover {
            pgid: pid,
            grace: Duration::from_secs(1),
            leader_start,
            name: "x".into(),
        };
        if real != 0 {
            assert!(!still_recorded(&recorded(real + 1)));
        }
        assert!(!still_recorded(&recorded(0)), "unknown start: not trusted");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn records_need_a_private_folder() {
        let base = std::env::temp_dir().join(format!("ms-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("sock");
        private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // A symlink where the folder should be is refused.
        let link = base.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(private_dir(&link).is_err());
        // A record path that is a symlink is not followed.
        let target = base.join("victim");
        std::fs::write(&target, "keep").unwrap();
        let rec = dir.join("fleet-0000000000000000-1.groups");
        std::os::unix::fs::symlink(&target, &rec).unwrap();
        assert!(create_new(&rec).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
