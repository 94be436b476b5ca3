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

/// Port the `web` process of a Procfile listens on behind the edge: next to foreman's
/// 5000, which Dokku and `heroku local` hand out as `$PORT` (the edge's port).
pub const WEB_PORT: u16 = 5001;

/// A manifest made from a Procfile (`name: command` lines; blank lines and `#` comments
/// skipped). Commands run as written through `sh -c`, as foreman and Heroku run them. The
/// `web` process gets `PORT` set to [`WEB_PORT`] and sits behind the edge, which listens on
/// the platform's `$PORT`; a `release` process becomes a prelaunch job; the others are
/// ships of group `workers`.
pub fn from_procfile(text: &str) -> Result<String, String> {
    let mut procs: Vec<(&str, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((name, cmd)) = l.split_once(':') else {
            return Err(format!("line {}: expected `name: command`", i + 1));
        };
        let (name, cmd) = (name.trim(), cmd.trim());
        if crate::manifest::check_name(name).is_err() || cmd.is_empty() {
            return Err(format!(
                "line {}: `{name}` is not a process name with a command",
                i + 1
            ));
        }
        if procs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(format!("line {}: `{name}` is declared twice", i + 1));
        }
        procs.push((name, cmd));
    }
    if procs.is_empty() {
        return Err("no process lines".into());
    }
    let mut out = String::from(
        "# ship-manifest.toml made from a Procfile by `mothership init --from`.\n\
         # Commands run as written, through `sh -c`. Reference: man 5 ship-manifest.toml\n",
    );
    let web = procs.iter().any(|(n, _)| *n == "web");
    if web {
        out.push_str(
            "\n[mothership]\n# The edge listens on the port the platform hands out; web sits behind it.\n\
             bind = { http = \"0.0.0.0:${PORT:-8080}\" }\n",
        );
    }
    for (name, cmd) in &procs {
        let table = match *name {
            "release" => "mothership.prelaunch",
            "web" => "fleet.web",
            _ => "fleet.workers",
        };
        out.push_str(&format!(
            "\n[[{table}]]\nname = {}\ncommand = \"sh\"\nargs = [\"-c\", {}]\n",
            toml_string(name),
            toml_string(cmd)
        ));
        if *name == "web" {
            out.push_str(&format!(
                "env = {{ PORT = \"{WEB_PORT}\" }}\nbind = \"127.0.0.1:{WEB_PORT}\"\nroutes = [\"http:/\"]\n"
            ));
        } else if web && *name != "release" {
            out.push_str("depends_on = [\"web\"]\n");
        }
    }
    Ok(out)
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn init(g: &Global, force: bool, from: Option<&std::path::Path>) -> i32 {
    let path = manifest_path(g);
    let text = match from {
        None => TEMPLATE.to_string(),
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(|t| from_procfile(&t))
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mothership: {}: {e}", p.display());
                return EXIT_FAILED;
            }
        },
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    match opts
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_procfile_becomes_a_manifest_that_passes_clearance() {
        let procfile = "# comment\nweb: bundle exec puma -p $PORT -C \"config/puma.rb\"\nworker:  bin/worker --queue=a\\\\b\n\nrelease: bin/migrate\n";
        let text = from_procfile(procfile).unwrap();
        let l = crate::manifest::parse(
            Path::new("ship-manifest.toml"),
            Path::new("/srv/app"),
            text.clone(),
            &|k| (k == "PORT").then(|| "9000".to_string()),
        );
        let diags = l.render_diags();
        let m = l.manifest.unwrap_or_else(|| panic!("{diags}\n{text}"));
        assert_eq!(m.binds[0].addr.to_string(), "tcp://0.0.0.0:9000");
        let web = &m.programs[0];
        assert_eq!(web.name, "web");
        assert_eq!(
            web.argv,
            [
                "sh",
                "-c",
                "bundle exec puma -p $PORT -C \"config/puma.rb\""
            ]
        );
        assert_eq!(web.env, [("PORT".to_string(), "5001".to_string())]);
        assert_eq!(
            web.bind.as_ref().map(ToString::to_string).as_deref(),
            Some("tcp://127.0.0.1:5001")
        );
        assert_eq!(m.programs[1].argv[2], "bin/worker --queue=a\\\\b");
        assert_eq!(m.programs[1].depends_on, ["web"]);
        assert_eq!(m.prelaunch[0].name, "release");
        // Without web: no edge.
        let t = from_procfile("worker: x\n").unwrap();
        assert!(!t.contains("[mothership]"), "{t}");
        for bad in [
            "",
            "# only\n",
            "web\n",
            "web: \n",
            "a b: x\n",
            "w: x\nw: y\n",
        ] {
            assert!(from_procfile(bad).is_err(), "{bad:?}");
        }
    }
}
