//! Mothership as PID 1 of a new PID namespace (`unshare --pid --fork`).

use crate::cli::secs;
use crate::support::*;

#[test]
fn as_pid_1_it_reaps_orphans_and_lands_everything() {
    let d = Dir::new("pid1");
    let m = marker("pid1");
    let zombies = d.join("zombies");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"
[[fleet.web]]
name = "orphaner"
command = "sh"
args = ["-c", "(sleep 0.2 &); (setsid sh -c 'trap \"\" TERM; sleep 1000 # {m}' &); sleep 1; ps -eo stat= | grep -c '^Z' > {z}; echo pid=$$ ppid=$PPID; while :; do sleep 0.1; done # {m}"]
grace_period = "1s"
"#,
            z = zombies.display()
        ),
    );
    let manifest = d.join("ship-manifest.toml");
    let mut f = Fleet::start_with(&d, &[], |c| {
        c.env("ignored", "1");
        let args = [
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            BIN,
            "-c",
            manifest.to_str().unwrap(),
        ];
        *c = std::process::Command::new("unshare");
        c.args(args)
            .current_dir(&d.path)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(d.join("mothership.out")).unwrap())
            .stderr(std::fs::File::create(d.join("mothership.err")).unwrap());
    });
    assert!(
        wait_for(secs(10), || zombies.exists()
            && !d.read("zombies").is_empty()),
        "{}",
        f.stderr()
    );
    assert_eq!(
        d.read("zombies").trim(),
        "0",
        "zombies inside the namespace"
    );
    assert!(f.logged("running as PID 1"), "{}", f.stderr());
    assert!(
        wait_for(secs(5), || f.stdout().contains(" ppid=1\n")),
        "the fleet runs directly under mothership: {}",
        f.stdout()
    );
    // The inner mothership is the child of unshare.
    let inner =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", f.pid(), f.pid())).unwrap();
    let inner: i32 = inner.split_whitespace().next().unwrap().parse().unwrap();
    unsafe {
        libc::kill(inner, libc::SIGTERM);
    }
    assert_eq!(f.wait(secs(15)), Some(0), "{}", f.stderr());
    // The kernel tears the namespace down as its PID 1 exits: give it a moment.
    assert!(
        wait_for(secs(3), || pids_with(&m).is_empty()),
        "left behind: {:?}",
        pids_with(&m)
    );
    let err = f.stderr();
    assert!(
        err.contains("waiting up to 1s for remaining descendants"),
        "{err}"
    );
}
