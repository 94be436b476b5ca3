//! Child output: nothing lost, nothing reordered within a stream, memory bounded.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::cli::secs;
use crate::support::*;

const PREFIX: &[u8] = b"talker     | ";

/// Strips the `name | ` prefix of every line of `out`; panics on a line without it.
fn payload_lines(out: &[u8]) -> Vec<&[u8]> {
    out.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.strip_prefix(PREFIX).unwrap_or_else(|| {
                panic!(
                    "unprefixed line: {:?}",
                    String::from_utf8_lossy(&l[..l.len().min(80)])
                )
            })
        })
        .collect()
}

#[test]
fn hundred_megabytes_a_long_line_and_invalid_utf8_lose_nothing() {
    let d = Dir::new("volume");
    d.write(
        "gen.py",
        r#"
import sys
w = sys.stdout.buffer.write
for i in range(1_000_000):
    w(b"%09d %s\n" % (i, b"x" * 90))
w(b"L" * (1 << 20) + b"\n")
w(b"bad \xff\xfe\xc3( utf8\n")
w(b"no newline at the end")
sys.stdout.flush()
sys.stderr.buffer.write(b"on stderr\n")
"#,
    );
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"talker\"\ncommand = \"python3 gen.py\"\noneshot = true\n",
    );
    let mut f = Fleet::start(&d, &[]);
    assert_eq!(f.wait(secs(120)), Some(0), "{}", f.stderr());
    let out = std::fs::read(&f.out).unwrap();
    let lines = payload_lines(&out);
    for (i, l) in lines.iter().take(1_000_000).enumerate() {
        let want = format!("{i:09} {}", "x".repeat(90));
        assert_eq!(*l, want.as_bytes(), "line {i}");
    }
    let long: Vec<u8> = lines[1_000_000..]
        .iter()
        .take_while(|l| l.iter().all(|&b| b == b'L'))
        .flat_map(|l| l.iter().copied())
        .collect();
    assert_eq!(
        long.len(),
        1 << 20,
        "the 1 MiB line must arrive whole (split into pieces)"
    );
    let rest: Vec<&[u8]> = lines[1_000_000..]
        .iter()
        .skip_while(|l| l.iter().all(|&b| b == b'L'))
        .copied()
        .collect();
    assert_eq!(
        rest,
        vec![&b"bad \xff\xfe\xc3( utf8"[..], b"no newline at the end"]
    );
    assert!(f.logged("talker     | on stderr"), "{}", f.stderr());
}

#[test]
fn blocked_stdout_pauses_children_instead_of_growing_memory() {
    let d = Dir::new("blocked");
    // 64 MB of output; mothership's stdout is a pipe nobody reads for a while.
    d.write(
        "gen.py",
        "import sys\nw = sys.stdout.buffer.write\nfor i in range(640_000):\n    w(b'%09d %s\\n' % (i, b'y' * 90))\nsys.stdout.flush()\nopen('done', 'w').write('1')\n",
    );
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"talker\"\ncommand = \"python3 gen.py\"\noneshot = true\n",
    );
    let mut f = Fleet::start_with(&d, &[], |c| {
        c.stdout(Stdio::piped());
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Anonymous memory (heap and buffers): the executable's own pages, which a debug
    // build with the WASM interpreter makes large, are not what this bounds.
    let rss1 = proc_status_kib(f.pid(), "RssAnon:").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let rss2 = proc_status_kib(f.pid(), "RssAnon:").unwrap();
    assert!(
        !d.join("done").exists(),
        "the child should be blocked by backpressure"
    );
    assert!(
        rss2 < 16 * 1024,
        "mothership RSS {rss2} KiB while its stdout is blocked"
    );
    assert!(
        rss2 <= rss1 + 1024,
        "RSS grew from {rss1} to {rss2} KiB while blocked"
    );
    let mut pipe = f.child.stdout.take().unwrap();
    let mut out = Vec::new();
    pipe.read_to_end(&mut out).unwrap();
    assert_eq!(f.wait(secs(30)), Some(0));
    let lines = payload_lines(&out);
    assert_eq!(lines.len(), 640_000);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            *l,
            format!("{i:09} {}", "y".repeat(90)).as_bytes(),
            "line {i}"
        );
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let d = Dir::new("colour");
    d.write(
        "ship-manifest.toml",
        "[[fleet.j]]\nname = \"talker\"\ncommand = \"echo hi\"\noneshot = true\n",
    );
    // `script` gives mothership a pseudo-terminal as stdout and stderr.
    let run_tty = |no_color: bool| {
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-qec", &format!("{BIN} -c ship-manifest.toml"), "/dev/null"])
            .current_dir(&d.path)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = run_tty(false);
    assert!(tty.contains("\x1b[36mtalker     | \x1b[0mhi"), "{tty:?}");
    assert!(tty.contains("\x1b[1mmothership |\x1b[0m"), "{tty:?}");
    let plain = run_tty(true);
    assert!(
        plain.contains("talker     | hi") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    // Not a terminal: no colour even without NO_COLOR.
    let f = Fleet::start_with(&d, &[], |c| {
        c.env_remove("NO_COLOR");
    });
    let mut f = f;
    assert_eq!(f.wait(secs(10)), Some(0));
    assert!(!f.stdout().contains('\x1b') && !f.stderr().contains('\x1b'));
}
