//! `mothership init`: write a commented starter manifest that passes `clearance` and runs.

use std::io::Write;

use super::{manifest_path, Global, EXIT_FAILED, EXIT_OK};

pub const TEMPLATE: &str = r#"# ship-manifest.toml: the fleet that `mothership` launches.
# Check it with `mothership clearance`, see the plan with `mothership chart`,
# launch it with `mothership` (or `mothership run`). Reference: man 5 ship-manifest.toml

[mothership]
# Environment given to every ship, bay and prelaunch job. $VAR, ${VAR} and
# ${VAR:-default} expand from mothership's environment; $$ is a literal $.
env = { APP_ENV = "${APP_ENV:-development}" }

# Named listeners for the HTTP edge (routes refer to them by name):
# bind = { http = "127.0.0.1:8080" }

# Jobs that run once, in dependency order, before any ship starts. A failure aborts
# the launch with exit status 1.
# [[mothership.prelaunch]]
# name = "migrate"
# command = "bin/migrate"

# Ships are grouped under [[fleet.<group>]]; any group name works.
[[fleet.web]]
name = "web"
command = "sh"
args = ["-c", "echo web is up; while :; do sleep 60; done"]
# bind = "127.0.0.1:3000"        # dependents wait until this accepts connections
# routes = ["http:/.*"]
# stop_signal = "TERM"           # sent to the whole process group on landing
# grace_period = "10s"           # then SIGKILL
# restart = "always"             # or "on-failure", "never"

[[fleet.workers]]
name = "worker"
command = "sh"
args = ["-c", "while :; do echo working; sleep 5; done"]
depends_on = ["web"]             # starts once web is up; lands before it
critical = false                 # its failures never land the fleet

[[fleet.jobs]]
name = "hello"
command = "echo hello from a one-shot job"   # split into words, run without a shell
oneshot = true
"#;

pub fn init(g: &Global, force: bool) -> i32 {
    let path = manifest_path(g);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    match opts
        .open(&path)
        .and_then(|mut f| f.write_all(TEMPLATE.as_bytes()))
    {
        Ok(()) => {
            println!(
                "wrote {}; check it with `mothership clearance`, launch it with `mothership`",
                path.display()
            );
            EXIT_OK
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            eprintln!(
                "mothership: {} already exists; use --force to overwrite it",
                path.display()
            );
            EXIT_FAILED
        }
        Err(e) => {
            eprintln!("mothership: cannot write {}: {e}", path.display());
            EXIT_FAILED
        }
    }
}
