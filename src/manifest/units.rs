//! Small value parsers for the manifest: durations, signal names and shell-style command
//! splitting. Pure functions over strings.

use std::time::Duration;

/// Parses `"500ms"`, `"10s"`, `"5m"`, `"1h"`, `"1m30s"` or `"1.5s"`. A bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; write it like \"10s\", \"500ms\" or \"5m\"".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return secs_to_duration(secs, s);
    }
    let bad =
        || format!("invalid duration {s:?}; write it like \"10s\", \"500ms\", \"5m\" or \"1h\"");
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match rest[..unit_len].trim() {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    secs_to_duration(total, s)
}

/// Longest duration accepted anywhere (ten years).
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 86400;

fn secs_to_duration(secs: f64, orig: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=MAX_DURATION_SECS as f64).contains(&secs) {
        return Err(format!("duration {orig:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a size: `"512"`, `"16KiB"`, `"16KB"`, `"10MB"`, `"1GiB"`, `"2G"` (K, M, G are
/// powers of 1024 with or without `i`; `kB`-style decimal units are taken as binary too,
/// which is what people mean for buffers and bodies).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("invalid size {s:?}; write it like \"512\", \"16KiB\", \"10MB\" or \"1GiB\"");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Signal names accepted for `stop_signal`: with or without `SIG`, any case.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let sig = match name {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "HUP" => libc::SIGHUP,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "WINCH" => libc::SIGWINCH,
        "ALRM" => libc::SIGALRM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => {
            return Err(format!(
            "unknown signal {s:?}; use one of TERM, INT, QUIT, HUP, KILL, USR1, USR2, WINCH, ALRM"
        ))
        }
    };
    Ok(sig)
}

/// Name of a signal number, for logs.
pub fn signal_name(sig: i32) -> String {
    let n = match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGALRM => "SIGALRM",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        #[cfg(target_os = "linux")]
        libc::SIGPWR => "SIGPWR",
        _ => return format!("signal {sig}"),
    };
    n.to_string()
}

/// Splits a command line the way a POSIX shell splits words, without running a shell:
/// whitespace separates words, single quotes keep everything literal, double quotes allow
/// `\"`, `\\`, `\$` and `` \` `` escapes, and a backslash outside quotes escapes the next
/// character. Expansions, pipes and redirections are not interpreted.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => cur.push(e),
                            Some('\n') => {}
                            Some(other) => {
                                cur.push('\\');
                                cur.push(other);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => {
                    in_word = true;
                    cur.push(e);
                }
                None => return Err("trailing backslash".into()),
            },
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// True when a command string uses shell syntax that [`split_command`] does not interpret.
pub fn looks_like_shell(s: &str) -> bool {
    let mut in_single = false;
    let mut prev = ' ';
    for c in s.chars() {
        if c == '\'' {
            in_single = !in_single;
        } else if !in_single
            && prev != '\\'
            && matches!(c, '|' | '&' | ';' | '<' | '>' | '`' | '$' | '*' | '?')
        {
            return true;
        }
        prev = c;
    }
    false
}

/// `true`, `1` and `yes`, in any case, are truthy; anything else (empty included) is not.
pub fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = |n| Duration::from_millis(n);
        for (s, want) in [
            ("500ms", ms(500)),
            ("10s", ms(10_000)),
            ("5m", ms(300_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1500)),
            ("2", ms(2000)),
            (" 3s ", ms(3000)),
        ] {
            assert_eq!(parse_duration(s), Ok(want), "{s}");
        }
        for s in ["", "s", "10x", "ms10", "-1s", "1..2s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn sizes() {
        for (s, n) in [
            ("512", 512),
            ("16KiB", 16384),
            ("16kb", 16384),
            ("10MB", 10 << 20),
            ("1GiB", 1 << 30),
            ("2 G", 2 << 30),
        ] {
            assert_eq!(parse_size(s), Ok(n), "{s}");
        }
        for s in ["", "MB", "1.5MB", "-1", "10XB", "99999999999T"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse_signal("sigint"), Ok(libc::SIGINT));
        assert_eq!(parse_signal("Quit"), Ok(libc::SIGQUIT));
        assert!(parse_signal("TERMINATE").is_err());
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
    }

    #[test]
    fn splitting() {
        let ok = |s: &str, w: &[&str]| assert_eq!(split_command(s).unwrap(), w, "{s}");
        ok("bundle exec puma", &["bundle", "exec", "puma"]);
        ok("  a   b  ", &["a", "b"]);
        ok(
            "sh -c 'echo done > /tmp/x'",
            &["sh", "-c", "echo done > /tmp/x"],
        );
        ok(r#"echo "a \"b\" c" d"#, &["echo", "a \"b\" c", "d"]);
        ok(r"a\ b c", &["a b", "c"]);
        ok("x ''", &["x", ""]);
        ok(r#"p "a\nb""#, &["p", "a\\nb"]);
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
        assert!(split_command("a \\").is_err());
    }

    #[test]
    fn shell_syntax_detection() {
        assert!(looks_like_shell("a | b"));
        assert!(looks_like_shell("echo $HOME"));
        assert!(!looks_like_shell("sh -c 'a | b'"));
        assert!(!looks_like_shell("bundle exec puma -p 3000"));
    }
}
