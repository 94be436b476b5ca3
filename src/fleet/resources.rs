//! Memory and CPU of whole process groups (a ship and everything it started in its group).
//! Sampled on demand only: when metrics are read, and on the `max_memory` check interval.
//!
//! Linux reads `/proc/<pid>/stat` once per process. FreeBSD asks `kern.proc.pgrp` and macOS
//! `proc_listpids` + `proc_pidinfo`; those paths are compiled only on their systems.

use std::collections::HashMap;

/// Summed over the processes of one group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub virtual_bytes: u64,
    /// User plus system time.
    pub cpu_seconds: f64,
    pub processes: u32,
}

/// The last sample of a fleet's process groups, taken again only when it is older than
/// `max_age` or lacks a group: walking the processes costs with their number, and a
/// storm of scrapes or status requests gets the last sample while it is fresh.
#[derive(Debug, Default)]
pub struct Cached {
    last: Option<(std::time::Instant, HashMap<i32, Usage>)>,
}

impl Cached {
    pub fn get(
        &mut self,
        pgids: &[i32],
        now: std::time::Instant,
        max_age: std::time::Duration,
    ) -> &HashMap<i32, Usage> {
        let fresh = self.last.as_ref().is_some_and(|(at, u)| {
            now.saturating_duration_since(*at) < max_age && pgids.iter().all(|p| u.contains_key(p))
        });
        let last = match self.last.take() {
            Some(l) if fresh => l,
            _ => (now, sample(pgids)),
        };
        &self.last.insert(last).1
    }
}

/// Usage of each process group in `pgids` that still has a process.
pub fn sample(pgids: &[i32]) -> HashMap<i32, Usage> {
    let mut out = HashMap::new();
    if pgids.is_empty() {
        return out;
    }
    imp::sample(pgids, &mut out);
    out
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Usage;
    use std::collections::HashMap;
    use std::fs;

    pub fn sample(pgids: &[i32], out: &mut HashMap<i32, Usage>) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        // SAFETY: as above.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        for pid in candidates() {
            // The process may be gone by now: skip it.
            let Ok(stat) = fs::read(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(s) = parse_stat(&stat) else { continue };
            if !pgids.contains(&s.pgrp) {
                continue;
            }
            let u = out.entry(s.pgrp).or_default();
            u.rss_bytes += s.rss_pages * page;
            u.virtual_bytes += s.vsize;
            u.cpu_seconds += (s.utime + s.stime + s.cutime + s.cstime) as f64 / ticks;
            u.processes += 1;
        }
    }

    /// The processes to look at: this one and its descendants, found through the
    /// `children` files of /proc (every process of the fleet descends from mothership,
    /// which is also the subreaper of what they orphan), so the cost follows the size of
    /// the fleet, not of the host. Without those files (a kernel built without
    /// CONFIG_PROC_CHILDREN), every process in /proc.
    fn candidates() -> Vec<u32> {
        let me = std::process::id();
        let mut out = vec![me];
        let mut i = 0;
        while i < out.len() {
            let pid = out[i];
            i += 1;
            let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            let mut any = false;
            for t in tasks.flatten() {
                let mut p = t.path();
                p.push("children");
                let Ok(text) = fs::read_to_string(&p) else {
                    continue;
                };
                any = true;
                out.extend(
                    text.split_ascii_whitespace()
                        .filter_map(|x| x.parse::<u32>().ok()),
                );
            }
            if !any && pid == me {
                return all_processes();
            }
            if out.len() > 1_000_000 {
                break;
            }
        }
        out
    }

    fn all_processes() -> Vec<u32> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    #[derive(Debug, PartialEq)]
    pub struct Stat {
        pub pgrp: i32,
        pub utime: u64,
        pub stime: u64,
        /// Time of the children each process has waited for (workers that came and went).
        pub cutime: u64,
        pub cstime: u64,
        pub vsize: u64,
        pub rss_pages: u64,
    }

    /// Fields of `/proc/<pid>/stat` (see proc(5)); the command name, in parentheses, may
    /// hold spaces and parentheses itself, so fields are counted from the last `)`.
    pub fn parse_stat(b: &[u8]) -> Option<Stat> {
        let close = b.iter().rposition(|&c| c == b')')?;
        let rest = std::str::from_utf8(b.get(close + 1..)?).ok()?;
        // After ")": state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... vsize(23) rss(24).
        let f: Vec<&str> = rest.split_ascii_whitespace().collect();
        let at = |n: usize| f.get(n - 3).copied();
        Some(Stat {
            pgrp: at(5)?.parse().ok()?,
            utime: at(14)?.parse().ok()?,
            stime: at(15)?.parse().ok()?,
            cutime: at(16)?.parse::<i64>().ok()?.max(0) as u64,
            cstime: at(17)?.parse::<i64>().ok()?.max(0) as u64,
            vsize: at(23)?.parse().ok()?,
            rss_pages: at(24)?.parse::<i64>().ok()?.max(0) as u64,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_with_odd_command_name() {
            let line = b"4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 99 123456789 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
            let s = parse_stat(line).unwrap();
            assert_eq!(
                s,
                Stat {
                    pgrp: 4240,
                    utime: 250,
                    stime: 50,
                    cutime: 0,
                    cstime: 0,
                    vsize: 123456789,
                    rss_pages: 321
                }
            );
            assert!(parse_stat(b"4242 (x").is_none());
            assert!(parse_stat(b"4242 (x) S 1").is_none());
        }

        #[test]
        fn samples_own_group() {
            // SAFETY: getpgrp has no preconditions.
            let me = unsafe { libc::getpgrp() };
            let u = super::super::sample(&[me]);
            let u = u.get(&me).copied().unwrap_or_default();
            assert!(u.processes >= 1);
            assert!(u.rss_bytes > 0 && u.virtual_bytes >= u.rss_bytes);
        }
    }
}

#[cfg(target_os = "freebsd")]
mod imp {
    use super::Usage;
    use std::collections::HashMap;

    pub fn sample(pgids: &[i32], out: &mut HashMap<i32, Usage>) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        for &pgid in pgids {
            let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PGRP, pgid];
            let mut len: libc::size_t = 0;
            // SAFETY: a size query: null buffer, valid length pointer.
            let r = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    4,
                    std::ptr::null_mut(),
                    &mut len,
                    std::ptr::null(),
                    0,
                )
            };
            if r != 0 || len == 0 {
                continue;
            }
            let n = len / std::mem::size_of::<libc::kinfo_proc>() + 4;
            let mut buf: Vec<libc::kinfo_proc> = Vec::with_capacity(n);
            let mut len = n * std::mem::size_of::<libc::kinfo_proc>();
            // SAFETY: the buffer holds `len` bytes; the kernel writes at most that much.
            let r = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    4,
                    buf.as_mut_ptr().cast(),
                    &mut len,
                    std::ptr::null(),
                    0,
                )
            };
            if r != 0 {
                continue;
            }
            // SAFETY: the kernel filled `len` bytes of whole records.
            unsafe { buf.set_len(len / std::mem::size_of::<libc::kinfo_proc>()) };
            for p in &buf {
                let u = out.entry(pgid).or_default();
                u.rss_bytes += p.ki_rssize.max(0) as u64 * page;
                u.virtual_bytes += p.ki_size as u64;
                u.cpu_seconds += p.ki_runtime as f64 / 1e6;
                u.processes += 1;
            }
        }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::Usage;
    use std::collections::HashMap;

    pub fn sample(pgids: &[i32], out: &mut HashMap<i32, Usage>) {
        for &pgid in pgids {
            let mut pids = vec![0i32; 4096];
            let bytes = (pids.len() * std::mem::size_of::<i32>()) as i32;
            // SAFETY: the buffer holds `bytes` bytes.
            let n = unsafe {
                libc::proc_listpids(PROC_PGRP_ONLY, pgid as u32, pids.as_mut_ptr().cast(), bytes)
            };
            if n <= 0 {
                continue;
            }
            pids.truncate(n as usize / std::mem::size_of::<i32>());
            for &pid in pids.iter().filter(|&&p| p > 0) {
                // SAFETY: a plain-data struct, filled by the kernel below.
                let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of::<libc::proc_taskinfo>() as i32;
                // SAFETY: `info` holds `size` bytes.
                let r = unsafe {
                    libc::proc_pidinfo(
                        pid,
                        libc::PROC_PIDTASKINFO,
                        0,
                        (&mut info as *mut libc::proc_taskinfo).cast(),
                        size,
                    )
                };
                if r != size {
                    continue;
                }
                let u = out.entry(pgid).or_default();
                u.rss_bytes += info.pti_resident_size;
                u.virtual_bytes += info.pti_virtual_size;
                // Mach absolute time units; nanoseconds on Intel, scaled on Apple silicon.
                u.cpu_seconds += mach_to_secs(info.pti_total_user + info.pti_total_system);
                u.processes += 1;
            }
        }
    }

    /// `proc_listpids` type for "the processes of one process group" (<libproc.h>).
    const PROC_PGRP_ONLY: u32 = 2;

    #[repr(C)]
    struct Timebase {
        numer: u32,
        denom: u32,
    }

    extern "C" {
        fn mach_timebase_info(info: *mut Timebase) -> libc::c_int;
    }

    fn mach_to_secs(t: u64) -> f64 {
        let mut tb = Timebase { numer: 0, denom: 0 };
        // SAFETY: `tb` is a valid out-pointer of the layout the function fills.
        let ok = unsafe { mach_timebase_info(&mut tb) } == 0 && tb.denom != 0;
        let scale = if ok {
            tb.numer as f64 / tb.denom as f64
        } else {
            1.0
        };
        t as f64 * scale / 1e9
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd", target_os = "macos")))]
mod imp {
    use super::Usage;
    use std::collections::HashMap;

    pub fn sample(_pgids: &[i32], _out: &mut HashMap<i32, Usage>) {}
}
