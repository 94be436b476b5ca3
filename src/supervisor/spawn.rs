//! Starting a child: its own session and process group, stdin from /dev/null, stdout and
//! stderr as pipes, default signal dispositions and an empty signal mask, and (on Linux)
//! a parent-death signal. Only async-signal-safe calls run between fork and exec.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};

pub struct Spawned {
    pub pid: i32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
}

/// Spawns `argv` with exactly the environment `env` (already merged by the caller).
/// `pass`: a descriptor of ours the child gets as descriptor `.1` (a readiness pipe).
pub fn spawn(
    argv: &[String],
    env: &[(std::ffi::OsString, std::ffi::OsString)],
    cwd: &Path,
    pass: Option<(std::os::fd::RawFd, i32)>,
) -> io::Result<Spawned> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure only makes async-signal-safe system calls (setsid, sigaction,
    // sigprocmask, prctl or procctl, getppid, _exit) and touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || child_setup(parent));
        if let Some((from, to)) = pass {
            // dup2 and fcntl are async-signal-safe.
            cmd.pre_exec(move || {
                let r = if from == to {
                    libc::fcntl(to, libc::F_SETFD, 0)
                } else {
                    libc::dup2(from, to)
                };
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                e.kind(),
                format!(
                    "{program}: command not found (or working directory {} missing)",
                    cwd.display()
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("{program}: {e}"))
        }
    })?;
    let pid = child.id() as i32;
    let (Some(stdout), Some(stderr)) = (child.stdout, child.stderr) else {
        return Err(io::Error::other("child pipes missing"));
    };
    Ok(Spawned {
        pid,
        stdout,
        stderr,
    })
}

/// Makes the child of `cmd` what `spawn` makes of a program's: its own session and
/// process group (its pid is the group's id), default signal dispositions, an empty mask,
/// and a parent-death signal. For commands run outside the fleet (the static election's).
pub fn isolate(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: as in `spawn`: only async-signal-safe system calls in the closure.
    unsafe {
        cmd.pre_exec(move || child_setup(parent));
    }
}

/// A pipe (read end, write end) whose ends are closed on exec.
pub fn cloexec_pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    #[cfg(any(target_os = "linux", target_os = "freebsd"))]
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    let r = unsafe {
        let r = libc::pipe(fds.as_mut_ptr());
        if r == 0 {
            libc::fcntl(fds[0], libc::F_SETFD, libc::FD_CLOEXEC);
            libc::fcntl(fds[1], libc::F_SETFD, libc::FD_CLOEXEC);
        }
        r
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and belong to nothing else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

fn child_setup(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: plain system calls on this process only.
    unsafe {
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        for sig in 1..=31 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        #[cfg(target_os = "linux")]
        {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            );
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        #[cfg(target_os = "freebsd")]
        {
            // FreeBSD's parent-death signal: procctl on the calling process.
            let mut sig: libc::c_int = libc::SIGKILL;
            libc::procctl(
                libc::P_PID,
                0,
                libc::PROC_PDEATHSIG_CTL,
                (&mut sig as *mut libc::c_int).cast(),
            );
            if libc::getppid() != parent {
                libc::_exit(1);
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
        let _ = parent;
    }
    Ok(())
}

/// Makes this process the reaper of its orphaned descendants (Linux and FreeBSD), so that
/// grandchildren whose parent exits are still waited for here.
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) == 0
    }
    #[cfg(target_os = "freebsd")]
    // SAFETY: procctl on our own pid with no data argument.
    unsafe {
        libc::procctl(
            libc::P_PID,
            libc::getpid() as libc::id_t,
            libc::PROC_REAP_ACQUIRE,
            std::ptr::null_mut(),
        ) == 0
    }
    #[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
    false
}

/// Is group `pgid` still the one spawned here? Each child calls `setsid`, so its group
/// and session have its pid as id. Once the leader is reaped its pid may be reused; a
/// process that now has that pid and leads a group of that id is in another session, and
/// must not be signalled. (While any member of the old group lives, the kernel does not
/// reuse the id.)
fn still_ours(pgid: i32) -> bool {
    // SAFETY: getsid has no memory arguments.
    let sid = unsafe { libc::getsid(pgid) };
    sid < 0 || sid == pgid
}

/// Sends `sig` to one process of the fleet (a program's main process, not yet reaped: its
/// pid cannot have been reused).
pub fn signal_process(pid: i32, sig: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill of one process; no memory is involved.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Sends `sig` to process group `pgid`, if it is still the group spawned here (see
/// [`still_ours`]). ESRCH (already gone) is not an error.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    if !still_ours(pgid) {
        log::debug!("process group {pgid} now belongs to another session; not signalled");
        return;
    }
    // SAFETY: kill with a negative pid addresses one process group we created.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// True while any process of group `pgid` exists (zombies included) and the group is
/// still the one spawned here.
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 || !still_ours(pgid) {
        return false;
    }
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Marks every file descriptor above 2 close-on-exec, so that what the parent left open
/// (a service manager's sockets, a shell's redirections) does not leak into every child.
/// Linux 5.11+ and FreeBSD 13+ do it in one call; elsewhere the open descriptors are
/// walked.
pub fn cloexec_inherited() {
    #[cfg(target_os = "linux")]
    {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: close_range with flags only changes descriptor flags of this process.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            )
        };
        if r == 0 {
            return;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<i32> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd > 2)
                .collect();
            fds.into_iter().for_each(set_cloexec);
            return;
        }
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 16) as i32
    } else {
        1024
    };
    (3..max).for_each(set_cloexec);
}

fn set_cloexec(fd: i32) {
    // SAFETY: fcntl on a descriptor number; a closed one just fails with EBADF.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_id_in_another_session_is_not_signalled() {
        // A process whose group id is its pid but which is in this test's session: what a
        // reused pid looks like to the supervisor.
        use std::os::unix::process::CommandExt;
        let mut c = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = c.id() as i32;
        assert!(!still_ours(pid));
        assert!(!group_alive(pid));
        signal_group(pid, libc::SIGKILL);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(c.try_wait().unwrap().is_none(), "it was signalled");
        c.kill().unwrap();
        c.wait().unwrap();
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: clearing the flag on our own descriptor.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        cloexec_inherited();
        // SAFETY: reading the flags of our own descriptor.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }
}
