//! A typed reader over the spanned TOML tree: each getter checks the type of one key and
//! reports a located diagnostic instead of failing, so that every problem is found in one
//! pass. Keys that no getter asked for are reported as unknown, with a suggestion.

use std::ops::Range;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{suggest, Diags};
use super::units;

pub type Value<'i> = Spanned<DeValue<'i>>;

/// A string with the byte span it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub span: Range<usize>,
}

impl<T> Located<T> {
    pub fn new(value: T, span: Range<usize>) -> Self {
        Located { value, span }
    }
}

/// Human name of a TOML value's type, for messages.
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Reads the keys of one table. Call [`Table::finish`] when done to report unknown keys.
pub struct Table<'a, 'i> {
    table: &'a DeTable<'i>,
    /// Where the table is, for "missing key" messages.
    pub span: Range<usize>,
    /// Dotted name of the table, for messages (`fleet.web`, `mothership.flagship`).
    pub path: String,
    asked: Vec<&'static str>,
    accept_all: bool,
}

impl<'a, 'i> Table<'a, 'i> {
    pub fn new(table: &'a DeTable<'i>, span: Range<usize>, path: impl Into<String>) -> Self {
        Table {
            table,
            span,
            path: path.into(),
            asked: Vec::new(),
            accept_all: false,
        }
    }

    /// The underlying table, for tables whose keys are free-form names.
    pub fn inner(&self) -> &'a DeTable<'i> {
        self.table
    }

    /// Marks every key as known (free-form tables such as `fleet` and `mothership.bind`).
    pub fn accept_any(&mut self) {
        self.accept_all = true;
    }

    /// Dotted name of a key of this table, for messages.
    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.path, key)
        }
    }

    /// Raw access to a key (marks it as known).
    pub fn get(&mut self, key: &'static str) -> Option<&'a Value<'i>> {
        self.asked.push(key);
        self.table.get(key)
    }

    /// Span of the key itself (for messages about the key rather than its value).
    pub fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }

    fn type_error(&self, d: &mut Diags, key: &str, v: &Value<'_>, want: &str) {
        d.error(
            v.span(),
            format!(
                "`{}` must be {}, found {}",
                self.child_path(key),
                want,
                type_name(v.get_ref())
            ),
        );
    }

    pub fn string(&mut self, d: &mut Diags, key: &'static str) -> Option<Located<String>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => Some(Located::new(s.to_string(), v.span())),
            _ => {
                self.type_error(d, key, v, "a string");
                None
            }
        }
    }

    pub fn required_string(&mut self, d: &mut Diags, key: &'static str) -> Option<Located<String>> {
        let present = self.table.contains_key(key);
        let r = self.string(d, key);
        if !present {
            d.error(
                self.span.clone(),
                format!("`{}` is missing the required key `{}`", self.path, key),
            );
        }
        r
    }

    pub fn bool(&mut self, d: &mut Diags, key: &'static str) -> Option<bool> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(d, key, v, "a boolean (true or false)");
                None
            }
        }
    }

    /// An integer within `min..=max`.
    pub fn int(&mut self, d: &mut Diags, key: &'static str, min: i64, max: i64) -> Option<i64> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    d.error(
                        v.span(),
                        format!(
                            "`{}` must be between {} and {}",
                            self.child_path(key),
                            min,
                            max
                        ),
                    );
                    None
                }
            },
            _ => {
                self.type_error(d, key, v, "an integer");
                None
            }
        }
    }

    /// A non-negative number, integer or float.
    pub fn number(&mut self, d: &mut Diags, key: &'static str) -> Option<f64> {
        let v = self.get(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                .ok()
                .map(|n| n as f64),
            DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
            _ => {
                self.type_error(d, key, v, "a number");
                return None;
            }
        };
        match n {
            Some(n) if n.is_finite() && n >= 0.0 => Some(n),
            _ => {
                d.error(
                    v.span(),
                    format!("`{}` must be a finite number >= 0", self.child_path(key)),
                );
                None
            }
        }
    }

    /// A duration: a string such as `"1m30s"`, `"500ms"`, or an integer number of seconds.
    pub fn duration(&mut self, d: &mut Diags, key: &'static str) -> Option<Duration> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::String(s) => match units::parse_duration(s) {
                Ok(dur) => Some(dur),
                Err(e) => {
                    d.error(v.span(), format!("`{}`: {}", self.child_path(key), e));
                    None
                }
            },
            DeValue::Integer(i) => match u64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if n <= units::MAX_DURATION_SECS => Some(Duration::from_secs(n)),
                _ => {
                    d.error(
                        v.span(),
                        format!(
                            "`{}` must be a duration from 0 to {} seconds",
                            self.child_path(key),
                            units::MAX_DURATION_SECS
                        ),
                    );
                    None
                }
            },
            _ => {
                self.type_error(d, key, v, "a duration such as \"10s\"");
                None
            }
        }
    }

    /// A size in bytes: an integer, or a string such as `"16KiB"`, `"10MB"`, `"1GiB"`,
    /// within `min..=max`.
    pub fn size(&mut self, d: &mut Diags, key: &'static str, min: u64, max: u64) -> Option<u64> {
        let v = self.get(key)?;
        let n = match v.get_ref() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| "must not be negative".to_string()),
            DeValue::String(s) => units::parse_size(s),
            _ => {
                self.type_error(d, key, v, "a size such as \"16KiB\" or a number of bytes");
                return None;
            }
        };
        match n {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            Ok(_) => {
                d.error(
                    v.span(),
                    format!(
                        "`{}` must be between {min} and {max} bytes",
                        self.child_path(key)
                    ),
                );
                None
            }
            Err(e) => {
                d.error(v.span(), format!("`{}`: {e}", self.child_path(key)));
                None
            }
        }
    }

    pub fn string_list(&mut self, d: &mut Diags, key: &'static str) -> Vec<Located<String>> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v.get_ref() else {
            self.type_error(d, key, v, "an array of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(Located::new(s.to_string(), item.span())),
                other => d.error(
                    item.span(),
                    format!(
                        "`{}` must only hold strings, found {}",
                        self.child_path(key),
                        type_name(other)
                    ),
                ),
            }
        }
        out
    }

    /// A table of string values (`env`, `config`), in declaration order.
    pub fn string_map(
        &mut self,
        d: &mut Diags,
        key: &'static str,
    ) -> Vec<(Located<String>, Located<String>)> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let DeValue::Table(t) = v.get_ref() else {
            self.type_error(d, key, v, "a table of strings");
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, val) in sorted_entries(t) {
            let text = match val.get_ref() {
                DeValue::String(s) => s.to_string(),
                // Numbers and booleans are accepted and passed on as written.
                DeValue::Integer(i) => format_int(i.as_str(), i.radix()),
                DeValue::Float(f) => f.as_str().to_string(),
                DeValue::Boolean(b) => b.to_string(),
                other => {
                    d.error(
                        val.span(),
                        format!(
                            "`{}.{}` must be a string, found {}",
                            self.child_path(key),
                            k.get_ref(),
                            type_name(other)
                        ),
                    );
                    continue;
                }
            };
            out.push((
                Located::new(k.get_ref().to_string(), k.span()),
                Located::new(text, val.span()),
            ));
        }
        out
    }

    /// A nested table.
    pub fn table(&mut self, d: &mut Diags, key: &'static str) -> Option<Table<'a, 'i>> {
        let v = self.get(key)?;
        match v.get_ref() {
            DeValue::Table(t) => Some(Table::new(t, v.span(), self.child_path(key))),
            _ => {
                self.type_error(d, key, v, "a table");
                None
            }
        }
    }

    /// Reports every key that no getter asked for.
    pub fn finish(self, d: &mut Diags) {
        if self.accept_all {
            return;
        }
        for (k, v) in self.table.iter() {
            let name = k.get_ref();
            if self.asked.iter().any(|a| *a == name.as_ref()) {
                continue;
            }
            let _ = v;
            let hint = match suggest(name, self.asked.iter().copied()) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!("; known keys: {}", self.asked.join(", ")),
            };
            d.error(
                k.span(),
                if self.path.is_empty() {
                    format!("unknown top-level key `{name}`{hint}")
                } else {
                    format!("unknown key `{}` in `{}`{}", name, self.path, hint)
                },
            );
        }
    }
}

/// The entries of a table sorted by their position in the file (declaration order).
pub fn sorted_entries<'a, 'i>(
    t: &'a DeTable<'i>,
) -> Vec<(&'a Spanned<std::borrow::Cow<'i, str>>, &'a Value<'i>)> {
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    v
}

fn format_int(s: &str, radix: u32) -> String {
    match i64::from_str_radix(s, radix) {
        Ok(n) => n.to_string(),
        Err(_) => s.to_string(),
    }
}
