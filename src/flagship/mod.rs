//! Flagship election (`[mothership.flagship]`): of several servers running the same
//! manifest, exactly one (the flagship) runs the prelaunch jobs; the others (escorts) skip
//! them. This module has the static election; the PostgreSQL one needs the `postgres`
//! feature.

pub mod coord;
#[cfg(feature = "postgres")]
pub mod postgres;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::manifest::StaticFlagship;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rank {
    Flagship,
    Escort,
}

pub use crate::manifest::units::truthy;

/// Decides this instance's rank from `static_flagship`; `Err` says why it cannot be
/// decided (the command failed, printed nothing usable in time...). The command runs in
/// `cwd`, with at most `timeout` to finish.
pub fn decide_static(
    s: &StaticFlagship,
    cwd: &Path,
    timeout: Duration,
) -> Result<(Rank, String), String> {
    match s {
        StaticFlagship::Value(v) => {
            let rank = if truthy(v) {
                Rank::Flagship
            } else {
                Rank::Escort
            };
            Ok((rank, format!("static_flagship is {v:?}")))
        }
        StaticFlagship::Command { command, equals } => {
            let (prog, args) = command
                .split_first()
                .ok_or_else(|| "static_flagship command is empty".to_string())?;
            let mut cmd = Command::new(prog);
            cmd.args(args)
                .current_dir(cwd)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // Its own process group, ended with it: on a timeout, whatever it started
            // goes too.
            crate::supervisor::spawn::isolate(&mut cmd);
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot run static_flagship command `{prog}`: {e}"))?;
            let group = child.id() as i32;
            let kill_group = || crate::supervisor::spawn::signal_group(group, libc::SIGKILL);
            let mut stdout = child.stdout.take();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(64 << 10).read_to_end(&mut out);
                }
                let _ = tx.send(out);
            });
            let deadline = Instant::now() + timeout;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break st,
                    Ok(None) if Instant::now() >= deadline => {
                        kill_group();
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!(
                            "static_flagship command `{prog}` did not finish within {timeout:?}"
                        ));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => return Err(format!("waiting for `{prog}`: {e}")),
                }
            };
            // Output up to the end of stream, which a background process that kept the
            // command's stdout could hold back: bounded by the same deadline.
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(out) = rx.recv_timeout(left.max(Duration::from_millis(100))) else {
                kill_group();
                return Err(format!(
                    "static_flagship command `{prog}` left its output open past {timeout:?}"
                ));
            };
            if !status.success() {
                return Err(format!(
                    "static_flagship command `{prog}` failed ({status})"
                ));
            }
            let got = String::from_utf8_lossy(&out).trim().to_string();
            let rank = if got == *equals {
                Rank::Flagship
            } else {
                Rank::Escort
            };
            Ok((
                rank,
                format!(
                    "`{}` printed {got:?} (flagship when {equals:?})",
                    command.join(" ")
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness() {
        for v in ["true", "TRUE", "1", "yes", " Yes "] {
            assert!(truthy(v), "{v}");
        }
        for v in ["", "0", "no", "false", "y", "on"] {
            assert!(!truthy(v), "{v}");
        }
    }

    #[test]
    fn static_values_and_commands() {
        let cwd = Path::new("/");
        let t = Duration::from_secs(5);
        let v = |s: &str| {
            decide_static(&StaticFlagship::Value(s.into()), cwd, t)
                .unwrap()
                .0
        };
        assert_eq!(v("yes"), Rank::Flagship);
        assert_eq!(v(""), Rank::Escort);
        let cmd = |argv: &[&str], equals: &str, t: Duration| {
            decide_static(
                &StaticFlagship::Command {
                    command: argv.iter().map(|s| s.to_string()).collect(),
                    equals: equals.into(),
                },
                cwd,
                t,
            )
        };
        assert_eq!(
            cmd(&["echo", " web-1 "], "web-1", t).unwrap().0,
            Rank::Flagship
        );
        assert_eq!(cmd(&["echo", "web-2"], "web-1", t).unwrap().0, Rank::Escort);
        assert!(cmd(&["false"], "x", t).unwrap_err().contains("failed"));
        assert!(cmd(&["/no/such/prog"], "x", t)
            .unwrap_err()
            .contains("cannot run"));
        let slow = cmd(&["sleep", "5"], "x", Duration::from_millis(200)).unwrap_err();
        assert!(slow.contains("did not finish"), "{slow}");
        // A background process keeping the output open cannot hold the election, and is
        // ended with the command's process group.
        let pidfile = std::env::temp_dir().join(format!("ms-flagship-{}", std::process::id()));
        let script = format!("echo x; sleep 30 & echo $! > {}", pidfile.display());
        let held = cmd(&["sh", "-c", &script], "x", Duration::from_millis(300));
        assert!(held.unwrap_err().contains("left its output open"));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pidfile);
        let gone = (0..200).any(|_| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
            false
        });
        assert!(gone, "the background process {pid} outlived the election");
    }
}
