//! Located diagnostics for the manifest: byte spans turned into `file:line:col` messages.
//! Collects every problem of a manifest so that one run reports them all.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

/// How bad a diagnostic is: errors make the manifest invalid, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a manifest, located by a byte span of the source text.
#[derive(Clone, Debug)]
pub struct Diag {
    pub severity: Severity,
    pub span: Range<usize>,
    pub message: String,
}

/// The diagnostics of one manifest, in the order they were found.
#[derive(Default, Debug)]
pub struct Diags {
    pub list: Vec<Diag>,
}

impl Diags {
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push(Diag {
            severity: Severity::Error,
            span,
            message: message.into(),
        });
    }

    pub fn warning(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push(Diag {
            severity: Severity::Warning,
            span,
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.list
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Renders every diagnostic, sorted by position, as `file:line:col: severity: message`
    /// followed by the source line and a caret under the span.
    pub fn render(&self, file: &Path, text: &str) -> String {
        let mut sorted: Vec<&Diag> = self.list.iter().collect();
        sorted.sort_by_key(|d| (d.span.start, d.severity == Severity::Warning));
        let mut out = String::new();
        for d in sorted {
            let (line, col) = line_col(text, d.span.start);
            let kind = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let _ = writeln!(
                out,
                "{}:{}:{}: {}: {}",
                file.display(),
                line,
                col,
                kind,
                d.message
            );
            if let Some(src) = text.lines().nth(line.saturating_sub(1)) {
                let width = span_width(text, &d.span, src, col);
                let _ = writeln!(out, "    {src}");
                let _ = writeln!(
                    out,
                    "    {}{}",
                    " ".repeat(col.saturating_sub(1)),
                    "^".repeat(width.max(1))
                );
            }
        }
        out
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = offset;
    while start > 0 && !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn span_width(text: &str, span: &Range<usize>, line_src: &str, col: usize) -> usize {
    let end = span.end.min(text.len());
    let start = span.start.min(end);
    let covered = text.get(start..end).unwrap_or("");
    let first_line = covered.split('\n').next().unwrap_or("");
    let rest = line_src.chars().count().saturating_sub(col - 1);
    first_line.chars().count().min(rest)
}

/// Edit distance, used for "did you mean" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
        assert_eq!(line_col(t, 100), (3, 1));
    }

    #[test]
    fn suggestions() {
        let keys = ["metrics_port", "bind", "env"];
        assert_eq!(suggest("metric_port", keys), Some("metrics_port"));
        assert_eq!(suggest("bnd", keys), Some("bind"));
        assert_eq!(suggest("totally_else", keys), None);
    }

    #[test]
    fn render_has_location() {
        let mut d = Diags::default();
        d.error(14..25, "unknown key `metric_port`");
        let out = d.render(Path::new("m.toml"), "[mothership]\n\nmetric_port = 1\n");
        assert!(out.starts_with("m.toml:3:1: error: unknown key"), "{out}");
        assert!(out.contains("^^^^^^^^^^^"), "{out}");
    }
}
