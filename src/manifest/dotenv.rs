//! `env_file`: dotenv text into variables. Pure: the caller reads the file and supplies the
//! environment that `${VAR}` falls back to.
//!
//! One `NAME=value` per line; blank lines and lines starting with `#` are skipped; an
//! optional `export ` before the name is ignored. A value is
//! - single-quoted: taken as written, up to the closing quote;
//! - double-quoted: `\n`, `\r`, `\t`, `\"`, `\\` and `\$` are escapes, and `$VAR`,
//!   `${VAR}` and `${VAR:-default}` are expanded;
//! - unquoted: up to a ` #` comment, trimmed, and expanded like a double-quoted one.
//!
//! After a quoted value only spaces and a `#` comment may follow. Variables set earlier in
//! the file are seen by later ones before the environment is. No command is ever run.

use super::expand::expand;

/// A line that is not `NAME=value` (1-based line number, reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub line: usize,
    pub why: String,
}

/// Variables in the order they were first set.
pub type Vars = Vec<(String, String)>;

/// The variables of `text`, and the lines that referred to an unset variable. Nothing of
/// a value (not even a name read from one: `s3cr$tValue` would give `tValue`) is put in a
/// message: only line numbers.
pub fn parse(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vars, Vec<usize>), Invalid> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut unset = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let bad = |why: &str| Invalid {
            line: i + 1,
            why: why.to_string(),
        };
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((name, rest)) = line.split_once('=') else {
            return Err(bad("expected NAME=value"));
        };
        let name = name.trim_end();
        if !is_name(name) {
            return Err(bad(
                "the name must be letters, digits and `_`, not starting with a digit",
            ));
        }
        let rest = rest.trim_start();
        let (value, expand_it) = if let Some(q) = rest.strip_prefix('\'') {
            let Some(end) = q.find('\'') else {
                return Err(bad("unterminated single quote"));
            };
            only_comment(&q[end + 1..]).map_err(&bad)?;
            (q[..end].to_string(), false)
        } else if let Some(q) = rest.strip_prefix('"') {
            let (v, after) = double_quoted(q).map_err(&bad)?;
            only_comment(after).map_err(&bad)?;
            (v, true)
        } else {
            let v = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(p) => &rest[..p],
                None => rest,
            };
            (v.trim_end().to_string(), true)
        };
        let value = if expand_it {
            let seen = |k: &str| {
                vars.iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
                    .or_else(|| lookup(k))
            };
            let (v, u) = expand(&value, &seen).map_err(|_| {
                bad("invalid `${...}` in the value (unterminated, not a variable name, or nested too deep)")
            })?;
            if !u.is_empty() {
                unset.push(i + 1);
            }
            v
        } else {
            value
        };
        match vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name.to_string(), value)),
        }
    }
    Ok((vars, unset))
}

fn is_name(n: &str) -> bool {
    let mut c = n.chars();
    matches!(c.next(), Some(f) if f == '_' || f.is_ascii_alphabetic())
        && c.all(|x| x == '_' || x.is_ascii_alphanumeric())
}

/// What may follow a quoted value: spaces and a comment.
fn only_comment(after: &str) -> Result<(), &'static str> {
    let a = after.trim_start();
    if a.is_empty() || a.starts_with('#') {
        Ok(())
    } else {
        Err("unexpected text after the quoted value")
    }
}

/// The inside of a double-quoted value (escapes resolved; `\$` kept as `$$` so that
/// expansion leaves a literal `$`), and what follows the closing quote.
fn double_quoted(q: &str) -> Result<(String, &str), &'static str> {
    let mut out = String::with_capacity(q.len());
    let mut chars = q.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &q[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 'r')) => out.push('\r'),
                Some((_, 't')) => out.push('\t'),
                Some((_, '"')) => out.push('"'),
                Some((_, '\\')) => out.push('\\'),
                Some((_, '$')) => out.push_str("$$"),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => return Err("unterminated double quote"),
            },
            c => out.push(c),
        }
    }
    Err("unterminated double quote")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "OUTER").then(|| "outer".to_string())
    }

    #[test]
    fn syntax() {
        let text = "# a comment\n\nA=plain\nexport B=\"two words\"\nC='single $OUTER'\nD=\"${OUTER}-ref\"\nE=unquoted value # comment\nF=\"a\\nb\\\"c\\$OUTER\"\nG=${A}-${NOPE:-dflt}\nH=\nA=again\n  I = spaced\nJ=\"x\" # after\n";
        let (vars, unset) = parse(text, &env).unwrap();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("again"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("single $OUTER"));
        assert_eq!(get("D"), Some("outer-ref"));
        assert_eq!(get("E"), Some("unquoted value"));
        assert_eq!(get("F"), Some("a\nb\"c$OUTER"));
        assert_eq!(get("G"), Some("plain-dflt"));
        assert_eq!(get("H"), Some(""));
        assert_eq!(get("I"), Some("spaced"));
        assert_eq!(get("J"), Some("x"));
        assert!(unset.is_empty(), "{unset:?}");
        let (_, unset) = parse("A=1\nX=$NOPE\n", &env).unwrap();
        assert_eq!(unset, [2]);
        // A byte-order mark is not part of the first name.
        let (vars, _) = parse("\u{feff}K=v\n", &env).unwrap();
        assert_eq!(vars, [("K".to_string(), "v".to_string())]);
        // Nothing of a value reaches a message.
        let e = parse("P=\"s3cr${et\"\n", &env).unwrap_err();
        assert!(!e.why.contains("s3cr") && !e.why.contains("et\""), "{e:?}");
    }

    #[test]
    fn errors_name_their_line() {
        for (text, line) in [
            ("A=1\nnot a line\n", 2),
            ("1A=x\n", 1),
            ("A='open\n", 1),
            ("A=\"open\n", 1),
            ("A=\"x\" y\n", 1),
            ("\n\nA=${echo hi}\n", 3),
            ("A B=1\n", 1),
        ] {
            let e = parse(text, &env).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
        }
    }
}
