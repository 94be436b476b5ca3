//! Init mode (`--init`), short of a real machine: mothership as PID 1 of new PID, mount
//! and UTS namespaces. There reboot(2) ends the namespace, whose init then shows as killed
//! by SIGINT (power off) or SIGHUP (reboot). `make vm-test` boots a real kernel.
//! /tmp, where the test's files are, is bind-mounted on itself in the new mount namespace
//! first, so that the init mode finds it mounted and leaves it (on a machine it would
//! mount a fresh tmpfs there, hiding what the root file system has in it).

use crate::cli::secs;
use crate::support::*;

fn start_init(d: &Dir, extra: &[&str]) -> Fleet {
    let manifest = d.join("ship-manifest.toml");
    let mut args: Vec<String> = [
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--uts",
        "sh",
        "-c",
        "mount --bind /tmp /tmp && exec \"$0\" \"$@\"",
        BIN,
        "--init",
        "--hostname",
        "initvm",
        "-c",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(manifest.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    Fleet::start_with(d, &[], |c| {
        *c = std::process::Command::new("unshare");
        c.args(&args)
            .current_dir(&d.path)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(d.join("mothership.out")).unwrap())
            .stderr(std::fs::File::create(d.join("mothership.err")).unwrap());
    })
}

/// The pid (outside) of the mothership inside the namespace: unshare's one child.
fn inner_pid(f: &Fleet) -> i32 {
    let mut inner = None;
    wait_for(secs(5), || {
        inner = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", f.pid()))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()));
        inner.is_some()
    });
    inner.expect("unshare's child")
}

#[test]
fn init_mode_sets_the_hostname_lands_on_sigint_and_powers_off() {
    let d = Dir::new("sysinit");
    let m = marker("sysinit");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[fleet.web]]
name = "web"
command = "sh"
args = ["-c", "echo host=$(hostname) path=$PATH; while :; do sleep 0.1; done # {m}"]
grace_period = "2s"
"#
        ),
    );
    let mut f = start_init(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stdout().contains("host=initvm")),
        "{}{}",
        f.stdout(),
        f.stderr()
    );
    assert!(f.logged("is the init of this machine"), "{}", f.stderr());
    // Not the machine's init: nothing machine-wide (such as remounting `/` read-only,
    // which would reach the host) happens at the end.
    assert!(
        f.logged("Ctrl-Alt-Del stays with the host"),
        "{}",
        f.stderr()
    );
    // What the kernel turns Ctrl-Alt-Del into.
    unsafe {
        libc::kill(inner_pid(&f), libc::SIGINT);
    }
    // The namespace's init powered off: its parent sees it killed by SIGINT.
    assert_eq!(f.wait(secs(20)), Some(128 + libc::SIGINT), "{}", f.stderr());
    let err = f.stderr();
    assert!(err.contains("landed: received SIGINT"), "{err}");
    assert!(err.contains("exit status 0; powering off"), "{err}");
    assert!(
        wait_for(secs(3), || pids_with(&m).is_empty()),
        "left behind: {:?}",
        pids_with(&m)
    );
}

#[test]
fn init_mode_powers_off_with_the_failure_instead_of_exiting() {
    let d = Dir::new("sysinit-fail");
    d.write(
        "ship-manifest.toml",
        "[[mothership.prelaunch]]\nname = \"doomed\"\ncommand = \"sh\"\nargs = [\"-c\", \"exit 7\"]\n\n[[fleet.web]]\nname = \"never\"\ncommand = \"sleep\"\nargs = [\"100\"]\n",
    );
    let mut f = start_init(&d, &["--at-landing", "reboot"]);
    assert_eq!(f.wait(secs(20)), Some(128 + libc::SIGHUP), "{}", f.stderr());
    let err = f.stderr();
    assert!(err.contains("exit status 1; rebooting"), "{err}");
    assert!(
        !err.contains("never"),
        "nothing launched after the failure: {err}"
    );

    // An invalid manifest is no exception: the reason, then the power-off.
    let d = Dir::new("sysinit-bad");
    d.write("ship-manifest.toml", "[[fleet.web]]\nname = 3\n");
    let mut f = start_init(&d, &[]);
    assert_eq!(f.wait(secs(20)), Some(128 + libc::SIGINT), "{}", f.stderr());
    let err = f.stderr();
    assert!(err.contains("ship-manifest.toml:2:"), "{err}");
    assert!(err.contains("exit status 78; powering off"), "{err}");
}

#[test]
fn init_options_are_refused_outside_init_mode() {
    let d = Dir::new("sysinit-flags");
    d.write(
        "ship-manifest.toml",
        "[[fleet.web]]\nname = \"w\"\ncommand = \"true\"\n",
    );
    for (args, needle) in [
        (
            &["--hostname", "x"][..],
            "--hostname applies in init mode only",
        ),
        (
            &["--exit-port", "0xf4"][..],
            "--exit-port applies in init mode only",
        ),
        (&["--init"][..], "--init needs mothership to be PID 1"),
        (&["--exit-port", "0x10000"][..], "not an I/O port number"),
    ] {
        let (code, _, err) = run_in(&d.path, args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
