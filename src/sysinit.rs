//! Init mode: mothership as the first process of a (virtual) machine, where nothing ran
//! before it. It prepares what a program expects to find (the kernel file systems, a
//! console, a PATH, a hostname), asks the kernel to turn Ctrl-Alt-Del into SIGINT, and at
//! the end syncs and powers off (or reboots) instead of exiting: the kernel panics when
//! PID 1 exits.
//!
//! When it applies: mothership is PID 1 and `/proc` is not mounted (a container runtime
//! always mounts it, a kernel never does), or `--init` forces it (PID 1 only); `--no-init`
//! turns it off. Linux only.

use std::path::Path;

/// What the init mode does at the end of the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AtLanding {
    /// Power the machine off.
    Poweroff,
    /// Reboot the machine.
    Reboot,
}

/// The init mode's settings, from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    pub hostname: Option<String>,
    pub at_landing: AtLanding,
    /// An x86 I/O port to write a non-zero exit status to before powering off (qemu's
    /// `isa-debug-exit` device turns it into the emulator's exit status).
    pub exit_port: Option<u16>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            hostname: None,
            at_landing: AtLanding::Poweroff,
            exit_port: None,
        }
    }
}

/// Whether this process should act as the system's init.
pub fn wanted(force: bool, never: bool) -> Result<bool, String> {
    let pid1 = std::process::id() == 1;
    if never {
        return Ok(false);
    }
    if force {
        if !cfg!(target_os = "linux") {
            return Err("--init: the init mode is available on Linux only".into());
        }
        if !pid1 {
            return Err("--init needs mothership to be PID 1".into());
        }
        return Ok(true);
    }
    Ok(pid1 && cfg!(target_os = "linux") && !Path::new("/proc/self").exists())
}

/// Prepares the machine. Problems are logged to the console and do not stop the boot:
/// a fleet that needs no /sys should still run when mounting it fails.
pub fn boot(s: &Settings) {
    imp::boot(s);
}

/// Ends the machine: stops and reaps whatever is left, syncs, and powers off or reboots.
/// Never returns.
pub fn shutdown(code: i32, s: &Settings) -> ! {
    imp::shutdown(code, s)
}

/// From here on a panic that would end the process powers the machine off (after its
/// message) instead of ending PID 1, which would panic the kernel: any panic in a build
/// that aborts on panic, a panic of the main thread otherwise (a worker thread's panic
/// ends only that thread there).
pub fn install_panic_hook(s: &Settings) {
    let s = s.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let main = std::thread::current().name() == Some("main");
        if cfg!(panic = "abort") || main {
            imp::shutdown(101, &s);
        }
    }));
}

/// Parses an I/O port number, decimal or `0x` hexadecimal.
pub fn parse_port(v: &str) -> Result<u16, String> {
    let r = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u16::from_str_radix(h, 16),
        None => v.parse(),
    };
    r.map_err(|_| format!("not an I/O port number (0 to 0xffff): {v}"))
}

/// A line on the console. Never panics (a panic here may be a panic in the panic hook).
fn console(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "mothership: init: {msg}");
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::ffi::CString;
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether this is the init of the machine itself, not of a PID namespace: the kernel
    /// accepted Ctrl-Alt-Del for it. Only then is `/` remounted read-only at the end (in
    /// a namespace that would reach the host's root file system), and only then must the
    /// process never exit.
    static MACHINE: AtomicBool = AtomicBool::new(false);

    fn cstr(s: &str) -> CString {
        // The strings given here are constants or come from the command line, which
        // cannot carry a NUL byte.
        CString::new(s).unwrap_or_default()
    }

    /// Kernel file systems: target, type, flags, options, the mode of the folder when it
    /// has to be made.
    const MOUNTS: &[(&str, &str, libc::c_ulong, &str, u32)] = &[
        (
            "/proc",
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
            0o555,
        ),
        (
            "/sys",
            "sysfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            "",
            0o555,
        ),
        ("/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755", 0o755),
        (
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "gid=5,mode=0620,ptmxmode=0666",
            0o755,
        ),
        (
            "/dev/shm",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
            0o1777,
        ),
        (
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
            0o755,
        ),
        (
            "/tmp",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=1777",
            0o1777,
        ),
    ];

    pub fn boot(s: &Settings) {
        // /proc comes first: once it is there, the kernel's list tells what is mounted.
        let mut mounted = mount_points();
        for &(target, fstype, flags, data, mode) in MOUNTS {
            if mounted.iter().any(|m| m == target) {
                continue;
            }
            match mount(target, fstype, flags, data, mode) {
                Ok(()) if target == "/proc" => mounted = mount_points(),
                Ok(()) => {}
                Err(e) => console(&format!("cannot mount {fstype} on {target}: {e}")),
            }
        }
        attach_console();
        if std::env::var_os("PATH").is_none() {
            // The kernel starts init without one; children that run `sh` need it.
            std::env::set_var(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            );
        }
        if let Some(name) = &s.hostname {
            // SAFETY: the pointer and length describe `name`'s bytes.
            let r = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
            if r != 0 {
                console(&format!(
                    "cannot set the hostname to {name}: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        // SAFETY: reboot(2) with RB_DISABLE_CAD only changes what Ctrl-Alt-Del does: the
        // kernel sends SIGINT to PID 1 instead of rebooting at once.
        if unsafe { libc::reboot(libc::RB_DISABLE_CAD) } == 0 {
            MACHINE.store(true, Ordering::Relaxed);
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                // What a PID namespace answers: Ctrl-Alt-Del belongs to the host's init.
                console("Ctrl-Alt-Del stays with the host (this is a PID namespace)");
            } else {
                console(&format!("cannot make Ctrl-Alt-Del a signal: {e}"));
            }
        }
        console(&format!(
            "mothership {} is the init of this machine",
            env!("CARGO_PKG_VERSION")
        ));
    }

    /// Mount points listed by the kernel (empty when /proc is not mounted yet).
    fn mount_points() -> Vec<String> {
        let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(str::to_string)
            .collect()
    }

    fn mount(
        target: &str,
        fstype: &str,
        flags: libc::c_ulong,
        data: &str,
        mode: u32,
    ) -> io::Result<()> {
        if !Path::new(target).is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(mode).create(target)?;
        }
        let (t, f, d) = (cstr(target), cstr(fstype), cstr(data));
        // SAFETY: NUL-terminated strings that outlive the call.
        let r =
            unsafe { libc::mount(f.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Standard input, output and error on the console. The kernel opens /dev/console for
    /// init when its initramfs has that node (the kernel's own built-in list provides it);
    /// without it, Rust's start-up code puts /dev/null on the three descriptors (and
    /// aborts when there is no /dev/null either, before any code of ours runs: an
    /// initramfs needs one of the two nodes). Descriptors that are closed or on /dev/null
    /// are moved to the console of the devtmpfs just mounted.
    fn attach_console() {
        let detached = |fd: i32| {
            // SAFETY: fstat into a zeroed struct; fails for a closed descriptor.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return true;
            }
            let null = libc::makedev(1, 3);
            (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && st.st_rdev == null
        };
        let targets: Vec<i32> = (0..3).filter(|&fd| detached(fd)).collect();
        if targets.is_empty() {
            return;
        }
        let path = cstr("/dev/console");
        // SAFETY: open with a NUL-terminated path; dup2 onto descriptors 0 to 2.
        unsafe {
            // The lowest free descriptor: a closed one of 0 to 2 if any (then it is one of
            // the targets and stays), else one above 2, closed once copied.
            let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
            if fd < 0 {
                return;
            }
            for &t in targets.iter().filter(|&&t| t != fd) {
                libc::dup2(fd, t);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }

    pub fn shutdown(code: i32, s: &Settings) -> ! {
        // Whatever is still running (the supervisor has stopped its fleet; this covers an
        // early error and a panic) gets TERM, a moment, then KILL.
        // SAFETY: as PID 1, -1 addresses every process but this one.
        unsafe {
            libc::kill(-1, libc::SIGTERM);
            libc::kill(-1, libc::SIGCONT);
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while reap_all() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-1, libc::SIGKILL);
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while reap_all() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: sync has no preconditions.
        unsafe { libc::sync() };
        let machine = MACHINE.load(Ordering::Relaxed);
        if machine {
            // A root file system on a disk is left clean; on an initramfs this fails,
            // which is fine.
            let root = cstr("/");
            // SAFETY: NUL-terminated path; a remount changes no memory of ours.
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                );
            }
        }
        let what = match s.at_landing {
            AtLanding::Poweroff => "powering off",
            AtLanding::Reboot => "rebooting",
        };
        console(&format!("exit status {code}; {what}"));
        if code != 0 {
            if let Some(port) = s.exit_port {
                debug_exit(port, code);
            }
        }
        let cmd = match s.at_landing {
            AtLanding::Poweroff => libc::RB_POWER_OFF,
            AtLanding::Reboot => libc::RB_AUTOBOOT,
        };
        loop {
            // SAFETY: reboot(2) as PID 1; it does not return on success (in a PID
            // namespace it ends the namespace).
            unsafe { libc::reboot(cmd) };
            console(&format!("reboot(2) failed: {}", io::Error::last_os_error()));
            if !machine {
                // The init of a PID namespace (without CAP_SYS_BOOT, say) may exit.
                // SAFETY: _exit ends the process at once.
                unsafe { libc::_exit(code) };
            }
            // Never exit: the kernel would panic. Halting here keeps the message readable.
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }

    /// Reaps every child that has ended; true while any child is left.
    fn reap_all() -> bool {
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r > 0 {
                continue;
            }
            // 0: children left, none ended; -1 (ECHILD): no children.
            return r == 0;
        }
    }

    /// Writes the low byte of `code` to an x86 I/O port (qemu's isa-debug-exit).
    #[cfg(target_arch = "x86_64")]
    fn debug_exit(port: u16, code: i32) {
        // SAFETY: ioperm grants this process access to one port; the `out` instruction
        // writes one byte to it and touches no memory.
        unsafe {
            if libc::ioperm(port.into(), 1, 1) != 0 {
                console(&format!(
                    "cannot write to I/O port {port:#x}: {}",
                    io::Error::last_os_error()
                ));
                return;
            }
            let value = code as u8;
            std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn debug_exit(port: u16, _code: i32) {
        console(&format!(
            "--exit-port {port:#x}: I/O ports exist on x86_64 only"
        ));
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    pub fn boot(_s: &Settings) {
        console("init mode is available on Linux only");
    }

    pub fn shutdown(code: i32, _s: &Settings) -> ! {
        std::process::exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_numbers() {
        assert_eq!(parse_port("0xf4"), Ok(0xf4));
        assert_eq!(parse_port("244"), Ok(244));
        assert!(parse_port("0x10000").is_err());
        assert!(parse_port("port").is_err());
    }

    #[test]
    fn not_init_unless_pid1() {
        // The test runner is never PID 1.
        assert_eq!(wanted(false, false), Ok(false));
        assert!(wanted(true, false).is_err());
        assert_eq!(wanted(true, true), Ok(false));
    }
}
