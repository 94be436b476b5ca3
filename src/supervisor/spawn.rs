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
pub fn spawn(argv: &[String], env: &[(String, String)], cwd: &Path) -> io::Result<Spawned> {
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
    // sigprocmask, prctl, getppid, _exit) and touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || child_setup(parent));
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
        #[cfg(not(target_os = "linux"))]
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

/// Sends `sig` to process group `pgid`. ESRCH (already gone) is not an error.
pub fn signal_group(pgid: i32, sig: i32) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: kill with a negative pid addresses one process group we created.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// True while any process of group `pgid` exists (zombies included).
pub fn group_alive(pgid: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: signal 0 only checks existence.
    let r = unsafe { libc::kill(-pgid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
