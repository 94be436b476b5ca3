//! The programs' log files (issue 18): rotation with nothing lost, compression, reopen
//! after an external logrotate, and `mothership logs` reaching past memory into them.

use std::io::Read;

use crate::cli::secs;
use crate::support::*;

/// Every line of `name`'s files in `dir`, oldest archive first.
fn all_lines(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut archives: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| {
                    let f = p.file_name()?.to_str()?.to_string();
                    let rest = f.strip_prefix(&format!("{name}.log."))?;
                    let k = rest.trim_end_matches(".gz").parse().ok()?;
                    Some((k, p))
                })
                .collect()
        })
        .unwrap_or_default();
    archives.sort_by_key(|a| std::cmp::Reverse(a.0));
    let mut out = Vec::new();
    for (_, p) in archives
        .into_iter()
        .chain(std::iter::once((0, dir.join(format!("{name}.log")))))
    {
        let bytes = std::fs::read(&p).unwrap_or_default();
        let text = if p.extension().is_some_and(|e| e == "gz") {
            // (Archives move up while they are listed: a count taken then is wrong, and
            // the caller asks again.)
            let mut s = String::new();
            let _ = flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s);
            s
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        out.extend(text.lines().map(String::from));
    }
    out
}

#[test]
fn a_chatty_program_rotates_its_files_without_losing_a_line() {
    let m = marker("logfiles");
    let d = Dir::new("logfiles");
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
log_dir = "logs"
log_max_size = "64KB"
log_keep = 100
log_compress = true
[[fleet.a]]
name = "chatty"
command = "sh"
args = ["-c", "seq 1 50000; echo done >&2; exec sleep 1000; : {m}"]
[[fleet.a]]
name = "quiet"
command = "sh"
args = ["-c", "echo hello; exec sleep 1000; : {m}"]
log_file = "quiet/own.log"
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    let logs = d.join("logs");
    // Every line there, and every archive compressed (until then one can be read in both
    // forms, or in neither as the plain one goes).
    let plain_archive = || {
        std::fs::read_dir(&logs).is_ok_and(|rd| {
            rd.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_prefix("chatty.log.")
                    .is_some_and(|k| k.parse::<u32>().is_ok())
            })
        })
    };
    assert!(
        wait_for(secs(20), || !plain_archive()
            && all_lines(&logs, "chatty").len() == 50001),
        "{} lines; {}",
        all_lines(&logs, "chatty").len(),
        f.stderr()
    );
    let lines = all_lines(&logs, "chatty");
    for (i, l) in lines[..50000].iter().enumerate() {
        // 2026-12-02T14:58:27.832Z out 1234
        let mut parts = l.splitn(3, ' ');
        let (t, s, text) = (parts.next(), parts.next(), parts.next());
        assert!(t.is_some_and(|t| t.len() == 24 && t.ends_with('Z')), "{l}");
        assert_eq!(
            (s, text),
            (Some("out"), Some((i + 1).to_string().as_str())),
            "{l}"
        );
    }
    assert!(lines[50000].ends_with(" err done"));
    // Rotated, compressed, each archive within the size (compressed, far under it).
    let archives = std::fs::read_dir(&logs).map(|r| r.count()).unwrap_or(0);
    assert!(archives > 5, "{archives} files");
    assert!(logs.join("chatty.log.1.gz").exists());
    assert!(
        std::fs::metadata(logs.join("chatty.log"))
            .map(|m| m.len())
            .unwrap_or(0)
            <= 64 * 1000
    );
    assert!(d.read("quiet/own.log").ends_with(" out hello\n"));
    // The output still reached mothership's stdout too.
    assert!(
        wait_for(secs(10), || f.stdout().contains("| 50000\n")),
        "{}",
        f.stdout().len()
    );

    // `logs` reaches past what memory keeps (4096 lines) into the files, in order.
    let (code, out, err) = run_in(&d.path, &["logs", "chatty", "-n", "100000"]);
    assert_eq!(code, 0, "{err}");
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 50001);
    assert!(got
        .iter()
        .take(50000)
        .enumerate()
        .all(|(i, l)| l.ends_with(&format!(" out {}", i + 1))));
    let (_, out, _) = run_in(
        &d.path,
        &["logs", "chatty", "--grep", "^123$", "-n", "100000"],
    );
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.ends_with(" out 123\n"));

    // An external logrotate moves the file away; `reopen` makes a new one.
    std::fs::rename(d.join("quiet/own.log"), d.join("quiet/own.log.old")).unwrap();
    let (code, _, err) = run_in(&d.path, &["reopen"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run_in(&d.path, &["restart", "quiet"]);
    assert_eq!(code, 0);
    assert!(
        wait_for(secs(10), || d.read("quiet/own.log").contains(" out hello")),
        "{}",
        f.stderr()
    );
    assert_eq!(d.read("quiet/own.log.old").lines().count(), 1);
    // SIGUSR1 does the same.
    std::fs::rename(d.join("quiet/own.log"), d.join("quiet/own.log.old2")).unwrap();
    f.signal(libc::SIGUSR1);
    assert!(wait_for(secs(5), || f
        .stderr()
        .contains("log files reopened")));
    run_in(&d.path, &["restart", "quiet"]);
    assert!(wait_for(secs(10), || d
        .read("quiet/own.log")
        .contains(" out hello")));
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(pids_with(&m).is_empty());
}

#[test]
fn log_file_settings_are_checked() {
    let d = Dir::new("logfiles-bad");
    for (text, want) in [
        ("[mothership]\nlog_max_size = \"1KB\"", "log_max_size"),
        ("[mothership]\nlog_keep = -1", "log_keep"),
        ("[mothership]\nlog_dir = \"\"", "`log_dir` is empty"),
        ("[mothership]\nlog_compress = \"yes\"", "log_compress"),
    ] {
        d.write(
            "ship-manifest.toml",
            &format!("{text}\n[[fleet.a]]\nname = \"a\"\ncommand = \"true\"\n"),
        );
        let (code, _, err) = run_in(&d.path, &["clearance"]);
        assert_eq!(code, 78, "{text}: {err}");
        assert!(
            err.contains(want) && err.contains("ship-manifest.toml:2:"),
            "{text}: {err}"
        );
    }
    d.write(
        "ship-manifest.toml",
        "[[fleet.a]]\nname = \"a\"\ncommand = \"true\"\nlog_file = \"x.log\"\n[[fleet.a]]\nname = \"b\"\ncommand = \"true\"\nlog_file = \"x.log\"\n",
    );
    let (code, _, err) = run_in(&d.path, &["clearance"]);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("same log file"), "{err}");
}

#[test]
fn a_file_that_cannot_be_written_is_reported_once_and_its_lines_counted() {
    let m = marker("logfiles-lost");
    let d = Dir::new("logfiles-lost");
    // Its folder is a file: every write fails, as on a full disk.
    d.write("blocker", "");
    let port = free_port();
    d.write(
        "ship-manifest.toml",
        &format!(
            r#"[mothership]
metrics_port = {port}
[[fleet.a]]
name = "talker"
command = "sh"
args = ["-c", "for i in 1 2 3; do echo line $i; sleep 0.2; done; exec sleep 1000; : {m}"]
log_file = "blocker/talker.log"
"#
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    let lost = || {
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .find_map(|l| l.strip_prefix("mothership_log_file_lines_lost_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    assert!(wait_for(secs(10), || lost() >= 3.0), "{}", f.stderr());
    assert!(wait_for(secs(5), || f.stderr().contains("log file")));
    let warned = f.stderr().matches("log file").count();
    assert_eq!(warned, 1, "said once: {}", f.stderr());
    // The lines are still in memory.
    let (_, out, _) = run_in(&d.path, &["logs", "talker"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(pids_with(&m).is_empty());
}

#[test]
fn logs_since_reaches_into_the_archives_and_reads_each_archive_once() {
    let m = marker("logfiles-since");
    let d = Dir::new("logfiles-since");
    std::fs::create_dir_all(d.join("logs")).unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.as_millis() as u64)
        .unwrap_or(0);
    let hour_ago = mothership::output::logger::rfc3339_ms(now_ms - 3_600_000);
    // Archives left by an earlier run: .2 caught while being compressed (the plain file
    // and its .gz both there, with the same lines), then .1.
    d.write("logs/x.log.2", "2019-05-01T00:00:00.000Z out oldest\n");
    let gz = std::process::Command::new("gzip")
        .args(["-k", "-n"])
        .arg(d.join("logs/x.log.2"))
        .status()
        .expect("gzip");
    assert!(gz.success());
    d.write(
        "logs/x.log.1",
        &format!("2020-01-01T00:00:00.000Z err ancient\n{hour_ago} out recent\n"),
    );
    d.write(
        "ship-manifest.toml",
        &format!(
            "[mothership]\nlog_dir = \"logs\"\nlog_keep = 5\n[[fleet.a]]\nname = \"x\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo live; exec sleep 1000; : {m}\"]\n"
        ),
    );
    let mut f = Fleet::start(&d, &[]);
    assert!(
        wait_for(secs(10), || d.read("logs/x.log").contains(" out live")),
        "{}",
        f.stderr()
    );
    let texts = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["logs", "x"];
        all.extend_from_slice(args);
        let (code, out, err) = run_in(&d.path, &all);
        assert_eq!(code, 0, "{err}");
        out.lines()
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        texts(&["-n", "100"]),
        ["oldest", "ancient", "recent", "live"],
        "every archive once, oldest first"
    );
    assert_eq!(texts(&["--since", "2h"]), ["recent", "live"]);
    assert_eq!(texts(&["--since", "2h", "--grep", "^rec"]), ["recent"]);
    assert_eq!(f.stop(secs(10)), Some(0));
    assert!(pids_with(&m).is_empty());
}
