//! `$VAR`, `${VAR}`, `${VAR:-default}` and `$$` expansion for manifest values. Lookups go
//! through a caller-supplied function; no shell ever runs.

/// Expands variables in `s`. Returns the text and the names of variables that were unset
/// (and had no default), so the caller can warn about them.
pub fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, Vec<String>), String> {
    expand_at(s, lookup, 0)
}

/// Defaults nest at most this deep (`${A:-${B:-...}}`): deeper is an error, not a stack
/// overflow.
const MAX_NESTING: usize = 16;

fn expand_at(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    depth: usize,
) -> Result<(String, Vec<String>), String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "`${{...:-...}}` defaults nest more than {MAX_NESTING} deep"
        ));
    }
    let mut out = String::with_capacity(s.len());
    let mut unset = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c != b'$' {
            let next = s[i..].find('$').map_or(s.len(), |n| i + n);
            out.push_str(&s[i..next]);
            i = next;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let close =
                    find_close(s, i + 2).ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
                let inner = &s[i + 2..close];
                let (name, default) = match inner.find(":-") {
                    Some(p) => (&inner[..p], Some(&inner[p + 2..])),
                    None => (inner, None),
                };
                if !is_name(name) {
                    return Err(format!(
                        "`${{{inner}}}` is not a variable name (letters, digits and `_`); \
                         commands are never run during expansion"
                    ));
                }
                match (lookup(name), default) {
                    (Some(v), Some(_)) if v.is_empty() => {
                        let (d, u) = expand_at(default.unwrap_or(""), lookup, depth + 1)?;
                        out.push_str(&d);
                        unset.extend(u);
                    }
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => {
                        let (d, u) = expand_at(d, lookup, depth + 1)?;
                        out.push_str(&d);
                        unset.extend(u);
                    }
                    (None, None) => unset.push(name.to_string()),
                }
                i = close + 1;
            }
            Some(&b) if b == b'_' || b.is_ascii_alphabetic() => {
                let start = i + 1;
                let mut end = start;
                while end < bytes.len()
                    && (bytes[end] == b'_' || bytes[end].is_ascii_alphanumeric())
                {
                    end += 1;
                }
                let name = &s[start..end];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => unset.push(name.to_string()),
                }
                i = end;
            }
            // A `$` that starts nothing (end of text, `$5`, `$-`) is kept literally.
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok((out, unset))
}

/// Expansion for command arguments, which a shell may read next: only `${NAME}` and
/// `${NAME:-default}` whose NAME is set (or which have a default) are replaced; `$NAME`,
/// `$$`, `$(...)`, `${NAME}` of an unset variable and any other `${...}` (`${#x}`,
/// `${x%y}`) are left as written for the shell. With `lookup` resolving the environment
/// the child will get, a `sh -c` script sees what its shell would have seen.
pub fn expand_braced(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    braced_at(s, lookup, 0)
}

fn braced_at(s: &str, lookup: &dyn Fn(&str) -> Option<String>, depth: usize) -> String {
    if depth > MAX_NESTING {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find("${") {
        let start = i + off;
        out.push_str(&s[i..start]);
        let Some(close) = find_close(s, start + 2) else {
            out.push_str(&s[start..]);
            return out;
        };
        let inner = &s[start + 2..close];
        let (name, default) = match inner.find(":-") {
            Some(p) => (&inner[..p], Some(&inner[p + 2..])),
            None => (inner, None),
        };
        let value = if is_name(name) {
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => Some(braced_at(d, lookup, depth + 1)),
                (Some(v), _) => Some(v),
                (None, Some(d)) => Some(braced_at(d, lookup, depth + 1)),
                (None, None) => None,
            }
        } else {
            None
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&s[start..=close]),
        }
        i = close + 1;
    }
    out.push_str(&s[i..]);
    out
}

/// Index of the `}` closing a `${` whose content starts at `from`, allowing nested `${...}`
/// in defaults.
fn find_close(s: &str, from: usize) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 2;
                continue;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn table() {
        for (input, want, unset) in [
            ("plain", "plain", vec![]),
            ("$HOME/x", "/home/u/x", vec![]),
            ("${HOME}x", "/home/ux", vec![]),
            ("${PORT:-3000}", "8080", vec![]),
            ("${NOPE:-3000}", "3000", vec![]),
            ("${EMPTY:-d}", "d", vec![]),
            ("${NOPE:-${PORT}}", "8080", vec![]),
            ("$$HOME", "$HOME", vec![]),
            ("a$", "a$", vec![]),
            ("$5", "$5", vec![]),
            ("$NOPE-x", "-x", vec!["NOPE"]),
            ("${NOPE}", "", vec!["NOPE"]),
            ("ünï$PORT", "ünï8080", vec![]),
        ] {
            let (got, u) = expand(input, &env).unwrap();
            assert_eq!(got, want, "{input}");
            assert_eq!(u, unset, "{input}");
        }
    }

    #[test]
    fn braced_only_for_arguments() {
        for (input, want) in [
            ("${PORT}", "8080"),
            ("--port=${PORT}", "--port=8080"),
            ("${NOPE:-3000}", "3000"),
            ("${NOPE:-${PORT}}", "8080"),
            ("${EMPTY:-d}", "d"),
            ("$PORT", "$PORT"),
            ("$$", "$$"),
            ("echo $$ $! $(date) $1", "echo $$ $! $(date) $1"),
            ("${NOPE}", "${NOPE}"),
            ("${#arr} ${x%y} ${echo hi}", "${#arr} ${x%y} ${echo hi}"),
            (
                "for f in *; do echo ${f}; done",
                "for f in *; do echo ${f}; done",
            ),
            ("open ${", "open ${"),
            ("ünï${PORT}", "ünï8080"),
        ] {
            assert_eq!(expand_braced(input, &env), want, "{input}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}x{}", "${A:-".repeat(50_000), "}".repeat(50_000));
        assert!(expand(&deep, &env).is_err());
        let _ = expand_braced(&deep, &env);
        let ok = format!("{}x{}", "${A:-".repeat(5), "}".repeat(5));
        assert_eq!(expand(&ok, &env).unwrap().0, "x");
        assert_eq!(expand_braced(&ok, &env), "x");
    }

    #[test]
    fn refuses_commands() {
        let e = expand("${echo hi}", &env).unwrap_err();
        assert!(e.contains("never run"), "{e}");
        assert!(expand("${HOME", &env).is_err());
    }
}
