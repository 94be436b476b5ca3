//! Who is at the other end of a Unix stream socket: the kernel's record of the peer's
//! user and group, for sockets that must only serve their owner (the control socket).
//! Linux reads `SO_PEERCRED`; FreeBSD and macOS call `getpeereid(2)`.

use std::io;
use std::os::fd::AsRawFd;

/// The effective user and group of a connected peer, as the kernel recorded them when
/// the connection was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn peer_credentials(sock: &impl AsRawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups.
#[cfg(target_os = "linux")]
const SO_PEERGROUPS: libc::c_int = if cfg!(target_arch = "sparc64") {
    0x3d
} else {
    59
};

/// The peer's supplementary groups, as the kernel recorded them when it connected
/// (empty where the kernel cannot say).
#[cfg(target_os = "linux")]
pub fn peer_groups(sock: &impl AsRawFd) -> Vec<u32> {
    let size = std::mem::size_of::<libc::gid_t>();
    let mut groups = vec![0 as libc::gid_t; 256];
    // Twice at most: when the buffer is too small (ERANGE), the kernel says how large.
    for _ in 0..2 {
        let mut len = (groups.len() * size) as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the buffer, that large.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / size);
            return groups;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || len as usize <= groups.len() * size {
            break;
        }
        groups = vec![0; (len as usize).div_ceil(size).min(1 << 16)];
    }
    Vec::new()
}

/// The peer's supplementary groups: not known here (its primary group is).
#[cfg(not(target_os = "linux"))]
pub fn peer_groups(_: &impl AsRawFd) -> Vec<u32> {
    Vec::new()
}

#[cfg(any(target_os = "freebsd", target_os = "macos"))]
pub fn peer_credentials(sock: &impl AsRawFd) -> io::Result<PeerCred> {
    let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
    // SAFETY: getpeereid writes one uid_t and one gid_t through valid pointers.
    if unsafe { libc::getpeereid(sock.as_raw_fd(), &mut uid, &mut gid) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_pair_is_its_own_user() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        // SAFETY: geteuid and getegid have no preconditions.
        let me = unsafe {
            PeerCred {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        };
        assert_eq!(peer_credentials(&a).unwrap(), me);
        assert_eq!(peer_credentials(&b).unwrap(), me);
        // Not a socket: an error, not a made-up answer.
        let f = std::fs::File::open("/dev/null").unwrap();
        assert!(peer_credentials(&f).is_err());
    }
}
