//! Watching the socket folder for the bays' sockets: on Linux with inotify, so that a bay
//! waiting to be connected to is tried the moment its socket appears rather than at its
//! next retry. Elsewhere there is no watch and the retry timer alone is used.

use std::ffi::OsString;
use std::path::Path;

#[cfg(target_os = "linux")]
pub struct Watch {
    fd: std::os::fd::OwnedFd,
}

#[cfg(target_os = "linux")]
impl Watch {
    /// Watches `dir` for files created or moved in; `None` when that cannot be done.
    pub fn new(dir: &Path) -> Option<Watch> {
        use std::os::fd::FromRawFd;
        use std::os::unix::ffi::OsStrExt;
        // SAFETY: plain system calls; the descriptor is owned from here on.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return None;
        }
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ATTRIB;
        // SAFETY: a valid descriptor and a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(raw, path.as_ptr(), mask) };
        (wd >= 0).then_some(Watch { fd })
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Appends the names of the files that appeared since the last call; true when the
    /// kernel's queue overflowed (any file may have appeared).
    pub fn read(&self, names: &mut Vec<OsString>) -> bool {
        use std::os::unix::ffi::OsStrExt;
        const EVENT: usize = 16;
        let mut overflow = false;
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reads into a buffer of the length given.
            let n = unsafe { libc::read(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return overflow;
            }
            let got = &buf[..n as usize];
            let mut at = 0;
            while let Some(head) = got.get(at..at + EVENT) {
                let word =
                    |i: usize| u32::from_ne_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
                let (mask, len) = (word(4), word(12) as usize);
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    overflow = true;
                }
                let name = got.get(at + EVENT..at + EVENT + len).unwrap_or(&[]);
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                if end > 0 {
                    names.push(std::ffi::OsStr::from_bytes(&name[..end]).to_os_string());
                }
                at += EVENT + len;
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub struct Watch;

#[cfg(not(target_os = "linux"))]
impl Watch {
    pub fn new(_: &Path) -> Option<Watch> {
        None
    }

    pub fn raw(&self) -> std::os::fd::RawFd {
        -1
    }

    pub fn read(&self, _: &mut Vec<OsString>) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_file_created_in_the_folder_is_seen_by_name() {
        let dir = std::env::temp_dir().join(format!("ms-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let w = Watch::new(&dir).expect("inotify");
        let mut names = Vec::new();
        assert!(!w.read(&mut names));
        assert!(names.is_empty());
        let _l = std::os::unix::net::UnixListener::bind(dir.join("chat.sock")).unwrap();
        w.read(&mut names);
        assert!(names.iter().any(|n| n == "chat.sock"), "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
