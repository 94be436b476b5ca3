//! The dashboard (issue 18) under tmux: `mothership --tui` and `mothership top`, driven
//! with send-keys and read with capture-pane; the terminal's modes checked after each
//! ends.

use std::process::Command;
use std::time::Duration;

use crate::cli::secs;
use crate::support::*;

/// A tmux server of its own, killed when dropped.
struct Tmux {
    sock: std::path::PathBuf,
    conf: std::path::PathBuf,
}

impl Tmux {
    fn new(d: &Dir) -> Tmux {
        let conf = d.write("tmux.conf", "set -g remain-on-exit on\n");
        Tmux {
            sock: d.join("tmux.sock"),
            conf,
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.sock)
            .arg("-f")
            .arg(&self.conf)
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `cmd` (a shell command line) in a 120x30 session `name`: it reports its
    /// exit status and the terminal's modes when it ends.
    fn start(&self, name: &str, cmd: &str) {
        let line = format!(
            "{cmd}; echo \"EXIT:$?\"; echo \"STTY: $(stty -a | tr ' ;' '\\n\\n' | grep -Ex -- '-?(isig|icanon|echo)' | tr '\\n' ' ')\""
        );
        self.run(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "120",
            "-y",
            "30",
            "sh",
            "-c",
            &line,
        ]);
    }

    fn pane(&self, name: &str) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", name])
    }

    fn keys(&self, name: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", name];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn alternate(&self, name: &str) -> String {
        self.run(&["display", "-p", "-t", name, "#{alternate_on}"])
            .trim()
            .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn manifest(d: &Dir, m: &str) {
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
log_dir = "logs"
[[fleet.a]]
name = "tui-one"
command = "sh"
args = ["-c", "while :; do echo one-line; sleep 0.3; done; : {m}"]
[[fleet.a]]
name = "tui-two"
command = "sh"
args = ["-c", "echo $$ >> two.pids; exec sleep 1000; : {m}"]
"#
        ),
    );
}

#[test]
fn the_dashboard_in_the_fleet_shows_restarts_and_lands_on_q() {
    let m = marker("tui-local");
    let d = Dir::new("tui-local");
    manifest(&d, &m);
    std::fs::create_dir(d.join("sock")).unwrap();
    let t = Tmux::new(&d);
    t.start(
        "tui",
        &format!(
            "cd {} && MS_SOCKET_DIR={} {BIN} --tui",
            d.path.display(),
            d.join("sock").display()
        ),
    );
    let shows = |s: &str| t.pane("tui").contains(s);
    assert!(
        wait_for(secs(10), || shows("tui-one")
            && shows("tui-two")
            && shows("[Overview]")),
        "{}",
        t.pane("tui")
    );
    assert_eq!(t.alternate("tui"), "1");
    // Nothing of the fleet's own output is written over the dashboard.
    assert!(
        !t.pane("tui").contains("tui-one | one-line"),
        "{}",
        t.pane("tui")
    );
    // The logs pane shows the programs' lines and mothership's own.
    t.keys("tui", &["Tab"]);
    assert!(
        wait_for(secs(5), || shows("[Logs]")
            && shows("tui-one    | one-line")
            && shows("mothership | tui-two: up")),
        "{}",
        t.pane("tui")
    );
    // Restart tui-two (second row) after confirming.
    t.keys("tui", &["BTab", "Down", "r"]);
    assert!(
        wait_for(secs(5), || shows("restart tui-two? y/n")),
        "{}",
        t.pane("tui")
    );
    t.keys("tui", &["y"]);
    assert!(
        wait_for(secs(10), || d.read("two.pids").lines().count() == 2),
        "{}",
        t.pane("tui")
    );
    // q lands the fleet; the terminal is as it was.
    t.keys("tui", &["q"]);
    assert!(wait_for(secs(15), || shows("STTY:")), "{}", t.pane("tui"));
    let pane = t.pane("tui");
    assert!(pane.contains("EXIT:0"), "{pane}");
    assert!(pane.contains("STTY: isig icanon echo"), "{pane}");
    assert!(pane.contains("landed: quit from the dashboard"), "{pane}");
    // The programs' lines went to their log files, and mothership's own (which the
    // terminal did not get) to mothership.log.
    assert!(d.read("logs/tui-one.log").contains(" out one-line"));
    let own = d.read("logs/mothership.log");
    assert!(
        own.contains(" err tui-two: up") && own.contains("landing: quit from the dashboard"),
        "{own}"
    );
    assert_eq!(t.alternate("tui"), "0");
    assert!(wait_for(secs(5), || pids_with(&m).is_empty()));
}

#[test]
fn top_attaches_to_a_running_fleet_and_restores_the_terminal_on_term() {
    let m = marker("tui-top");
    let d = Dir::new("tui-top");
    manifest(&d, &m);
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("tui-two: up")),
        "{}",
        f.stderr()
    );
    let t = Tmux::new(&d);
    t.start(
        "top",
        &format!(
            "cd {} && MS_SOCKET_DIR={} sh -c 'echo $$ > top.pid; exec \"$0\" top' {BIN}",
            d.path.display(),
            d.join("sock").display()
        ),
    );
    let shows = |s: &str| t.pane("top").contains(s);
    assert!(
        wait_for(secs(10), || shows("tui-one")
            && shows("tui-two")
            && shows("running")),
        "{}",
        t.pane("top")
    );
    // Stop tui-two from the dashboard: the fleet does it and the dashboard shows it.
    t.keys("top", &["Down", "s", "y"]);
    assert!(
        wait_for(secs(10), || t
            .pane("top")
            .lines()
            .any(|l| l.starts_with("tui-two") && l.contains("stopped"))),
        "{}",
        t.pane("top")
    );
    let (_, status, _) = run_in(&d.path, &["status"]);
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("tui-two") && l.contains("stopped")),
        "{status}"
    );
    // New lines come to its logs pane.
    t.keys("top", &["Tab"]);
    let one_line = || {
        t.pane("top")
            .lines()
            .any(|l| l.contains(" tui-one ") && l.ends_with("| one-line"))
    };
    assert!(wait_for(secs(5), one_line), "{}", t.pane("top"));
    // TERM ends it with the terminal restored; the fleet runs on.
    let pid: i32 = d.read("top.pid").trim().parse().unwrap_or(0);
    assert!(pid > 0);
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(wait_for(secs(10), || shows("STTY:")), "{}", t.pane("top"));
    let pane = t.pane("top");
    assert!(pane.contains("STTY: isig icanon echo"), "{pane}");
    assert_eq!(t.alternate("top"), "0");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(pids_with(&m).is_empty());

    // Without a terminal, top says so (exit 2); without a fleet, exit 4.
    let (code, _, err) = run_in(&d.path, &["top"]);
    assert!(
        code == 2 && err.contains("needs a terminal"),
        "{code} {err}"
    );
}

#[test]
fn every_way_out_restores_the_terminal() {
    let m = marker("tui-ways");
    let d = Dir::new("tui-ways");
    manifest(&d, &m);
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || f.stderr().contains("tui-two: up")),
        "{}",
        f.stderr()
    );
    let t = Tmux::new(&d);
    let top = format!(
        "cd {} && MS_SOCKET_DIR={} {BIN} top",
        d.path.display(),
        d.join("sock").display()
    );
    let ended_well = |name: &str| {
        assert!(
            wait_for(secs(15), || t.pane(name).contains("STTY:")),
            "{}",
            t.pane(name)
        );
        let pane = t.pane(name);
        assert!(
            pane.contains("EXIT:0") && pane.contains("STTY: isig icanon echo"),
            "{pane}"
        );
        assert_eq!(t.alternate(name), "0");
        pane
    };
    let up = |name: &str| {
        assert!(
            wait_for(secs(10), || t.pane(name).contains("tui-two")),
            "{}",
            t.pane(name)
        );
        assert_eq!(t.alternate(name), "1");
    };
    // top: q leaves it, the fleet running on.
    t.start("q", &top);
    up("q");
    t.keys("q", &["q"]);
    ended_well("q");
    assert_eq!(f.wait(Duration::ZERO), None, "the fleet still runs");
    // top: the fleet landing ends it.
    t.start("landed", &top);
    up("landed");
    assert_eq!(f.stop(secs(10)), Some(0));
    let pane = ended_well("landed");
    assert!(pane.contains("the fleet has landed"), "{pane}");
    // --tui: TERM lands the fleet and gives the terminal back.
    t.start(
        "term",
        &format!(
            "cd {} && MS_SOCKET_DIR={} sh -c 'echo $$ > tui.pid; exec \"$0\" --tui' {BIN}",
            d.path.display(),
            d.join("sock").display()
        ),
    );
    up("term");
    let pid: i32 = d.read("tui.pid").trim().parse().unwrap_or(0);
    assert!(pid > 0);
    unsafe { libc::kill(pid, libc::SIGTERM) };
    ended_well("term");
    assert!(wait_for(secs(5), || pids_with(&m).is_empty()));
}
