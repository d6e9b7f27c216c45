//! The generic part of the TOML walk: [`Diagnostic`] (file, line,
//! column, message, hint), and the `Walker` that visits a span-keeping
//! document and collects every problem instead of stopping at the first.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml_edit::{ImDocument, Item, Key, TableLike, Value};

use crate::duration::parse_duration;
use crate::{Error, Result};

/// One problem found in a config file.
///
/// Displays as `path:line:column: message`, followed by an indented
/// `  hint: ...` line when there is a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: std::path::PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Render diagnostics for people: a first line `N problems in PATH` (or
/// `in K files` when they span several), then one diagnostic per line.
pub fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    let n = diagnostics.len();
    let noun = if n == 1 { "problem" } else { "problems" };
    let mut paths: Vec<&Path> = diagnostics.iter().map(|d| d.path.as_path()).collect();
    paths.sort();
    paths.dedup();
    let place = match paths.as_slice() {
        [one] => one.display().to_string(),
        many => format!("{} files", many.len()),
    };
    let mut out = format!("{n} {noun} in {place}");
    for d in diagnostics {
        out.push('\n');
        out.push_str(&d.to_string());
    }
    out
}

/// The [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) error
/// whose message is [`render_diagnostics`].
pub fn diagnostics_error(diagnostics: &[Diagnostic]) -> Error {
    Error::invalid_config(render_diagnostics(diagnostics))
}

pub(crate) type Span = Option<Range<usize>>;

/// A table or inline table, with where to point when something in it is
/// missing and how to name it in messages.
pub(crate) struct Tbl<'t> {
    pub(crate) table: &'t dyn TableLike,
    pub(crate) at: Span,
    pub(crate) what: String,
}

/// A key found in a table.
pub(crate) struct Field<'t> {
    pub(crate) name: String,
    pub(crate) item: &'t Item,
    /// The value's span, else the key's.
    pub(crate) at: Span,
}

pub(crate) struct Walker<'a> {
    pub(crate) path: &'a Path,
    pub(crate) text: &'a str,
    pub(crate) line_starts: Vec<usize>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(path: &'a Path, text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Walker {
            path,
            text,
            line_starts,
            diags: Vec::new(),
        }
    }

    pub(crate) fn document(&mut self) -> Result<ImDocument<&'a str>, Vec<Diagnostic>> {
        ImDocument::parse(self.text).map_err(|e| {
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            self.report(e.span(), format!("TOML syntax error: {message}"), None);
            std::mem::take(&mut self.diags)
        })
    }

    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, Vec<Diagnostic>> {
        match value {
            Some(v) if self.diags.is_empty() => Ok(v),
            _ => {
                if self.diags.is_empty() {
                    // A walk never returns None without saying why; keep it
                    // honest if one day it does.
                    self.report(None, "invalid file", None);
                }
                self.diags.sort_by_key(|d| (d.line, d.column));
                Err(self.diags)
            }
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn position(&self, span: &Span) -> (usize, usize) {
        let Some(span) = span else { return (1, 1) };
        let offset = span.start.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line, column + 1)
    }

    pub(crate) fn report(&mut self, span: Span, message: impl Into<String>, hint: Option<String>) {
        let (line, column) = self.position(&span);
        self.diags.push(Diagnostic {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    pub(crate) fn raw(&self, span: &Span) -> Option<&'a str> {
        span.as_ref().and_then(|s| self.text.get(s.clone()))
    }

    /// Report every key of `t` not in `known`.
    pub(crate) fn unknown_keys(&mut self, t: &Tbl<'_>, known: &[&str]) {
        for (k, _) in t.table.iter() {
            if !known.contains(&k) {
                let at = t.table.key(k).and_then(Key::span);
                let hint = match closest(k, known) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("known keys: {}", known.join(", ")),
                };
                self.report(at, format!("unknown key `{k}` in {}", t.what), Some(hint));
            }
        }
    }

    /// The key `name` of `t`. When absent and `example` is given (the key is
    /// required), report it missing with the example as the hint.
    pub(crate) fn field<'t>(
        &mut self,
        t: &Tbl<'t>,
        name: &str,
        example: Option<&str>,
    ) -> Option<Field<'t>> {
        match t.table.get_key_value(name) {
            Some((key, item)) if !item.is_none() => Some(Field {
                name: name.to_string(),
                item,
                at: item.span().or_else(|| key.span()),
            }),
            _ => {
                if let Some(example) = example {
                    self.report(
                        t.at.clone(),
                        format!("missing required key `{name}` in {}", t.what),
                        Some(format!("add `{example}`")),
                    );
                }
                None
            }
        }
    }

    pub(crate) fn wrong_type(&mut self, f: &Field<'_>, expected: &str) {
        let found = type_name(f.item);
        let raw = self.raw(&f.at).unwrap_or("");
        let hint = match f.item.as_value() {
            Some(Value::String(s))
                if expected.contains("integer") && s.value().parse::<i64>().is_ok() =>
            {
                Some(format!("remove the quotes: `{} = {}`", f.name, s.value()))
            }
            Some(Value::Integer(_) | Value::Float(_) | Value::Boolean(_))
                if expected == "a string" =>
            {
                Some(format!("quote it: `{} = \"{raw}\"`", f.name))
            }
            _ => None,
        };
        self.report(
            f.at.clone(),
            format!("`{}` must be {expected}, not {found}", f.name),
            hint,
        );
    }

    pub(crate) fn string(&mut self, f: &Field<'_>) -> Option<String> {
        match f.item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(f, "a string");
                None
            }
        }
    }

    pub(crate) fn non_empty_string(&mut self, f: &Field<'_>) -> Option<String> {
        let s = self.string(f)?;
        if s.trim().is_empty() {
            self.report(
                f.at.clone(),
                format!("`{}` must not be empty", f.name),
                None,
            );
            return None;
        }
        Some(s)
    }

    pub(crate) fn boolean(&mut self, f: &Field<'_>) -> Option<bool> {
        match f.item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(f, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    /// A positive integer that fits `u32`.
    pub(crate) fn positive_u32(&mut self, f: &Field<'_>, hint: Option<String>) -> Option<u32> {
        let Some(n) = f.item.as_integer() else {
            self.wrong_type(f, "a positive integer");
            return None;
        };
        match u32::try_from(n) {
            Ok(v) if v > 0 => Some(v),
            _ => {
                self.report(
                    f.at.clone(),
                    format!("`{}` must be a positive integer, not {n}", f.name),
                    hint,
                );
                None
            }
        }
    }

    /// A non-zero duration string.
    pub(crate) fn duration(&mut self, f: &Field<'_>) -> Option<Duration> {
        let s = self.string(f)?;
        match parse_duration(&s) {
            Ok(d) if d.is_zero() => {
                self.report(
                    f.at.clone(),
                    format!("`{}` must be longer than 0s", f.name),
                    None,
                );
                None
            }
            Ok(d) => Some(d),
            Err(why) => {
                self.report(
                    f.at.clone(),
                    format!("bad duration for `{}`: {why}", f.name),
                    None,
                );
                None
            }
        }
    }

    /// An optional duration with a default.
    pub(crate) fn duration_or(
        &mut self,
        t: &Tbl<'_>,
        name: &str,
        default: Duration,
    ) -> Option<Duration> {
        match self.field(t, name, None) {
            Some(f) => self.duration(&f),
            None => Some(default),
        }
    }

    /// An array of non-empty strings.
    pub(crate) fn string_array(&mut self, f: &Field<'_>) -> Option<Vec<String>> {
        let Some(array) = f.item.as_array() else {
            let found = type_name(f.item);
            self.report(
                f.at.clone(),
                format!("`{}` must be an array of strings, not {found}", f.name),
                Some(format!("write e.g. `{} = [\"sandboxer01\"]`", f.name)),
            );
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, v) in array.iter().enumerate() {
            match v.as_str() {
                Some(s) if !s.trim().is_empty() => out.push(s.to_string()),
                Some(_) => {
                    ok = false;
                    self.report(
                        v.span(),
                        format!("`{}` item {} is an empty string", f.name, i + 1),
                        None,
                    );
                }
                None => {
                    ok = false;
                    self.report(
                        v.span(),
                        format!(
                            "`{}` must be an array of strings; item {} is {}",
                            f.name,
                            i + 1,
                            value_type_name(v)
                        ),
                        None,
                    );
                }
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn table<'t>(&mut self, f: &Field<'t>, what: String) -> Option<Tbl<'t>> {
        match f.item.as_table_like() {
            Some(table) => Some(Tbl {
                table,
                at: f.at.clone(),
                what,
            }),
            None => {
                self.wrong_type(f, "a table");
                None
            }
        }
    }

    /// `[[name]]` tables (or an array of inline tables).
    pub(crate) fn tables<'t>(&mut self, f: &Field<'t>, noun: &str) -> Option<Vec<Tbl<'t>>> {
        let what = |i: usize| format!("`[[{}]]` #{}", f.name, i + 1);
        match f.item {
            Item::ArrayOfTables(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, t)| Tbl {
                        table: t,
                        at: t.span(),
                        what: what(i),
                    })
                    .collect(),
            ),
            Item::Value(Value::Array(a)) => {
                let mut out = Vec::new();
                for (i, v) in a.iter().enumerate() {
                    match v.as_inline_table() {
                        Some(t) => out.push(Tbl {
                            table: t,
                            at: t.span(),
                            what: what(i),
                        }),
                        None => self.report(
                            v.span(),
                            format!(
                                "each {noun} in `{}` must be a table, not {}",
                                f.name,
                                value_type_name(v)
                            ),
                            Some(format!("write each {noun} as a `[[{}]]` table", f.name)),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                let found = type_name(f.item);
                self.report(
                    f.at.clone(),
                    format!("`{}` must be an array of tables, not {found}", f.name),
                    Some(format!("write each {noun} as a `[[{}]]` table", f.name)),
                );
                None
            }
        }
    }

    /// A TOML item as JSON, for `[routes.config]`.
    pub(crate) fn json(&mut self, item: &Item) -> Option<serde_json::Value> {
        match item {
            Item::None => None,
            Item::Value(v) => self.json_value(v),
            Item::Table(t) => self.json_object(t).map(serde_json::Value::Object),
            Item::ArrayOfTables(a) => {
                let mut out = Vec::new();
                for t in a.iter() {
                    out.push(serde_json::Value::Object(self.json_object(t)?));
                }
                Some(serde_json::Value::Array(out))
            }
        }
    }

    pub(crate) fn json_object(
        &mut self,
        t: &dyn TableLike,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut out = serde_json::Map::new();
        let mut ok = true;
        for (k, item) in t.iter() {
            match self.json(item) {
                Some(v) => {
                    out.insert(k.to_string(), v);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn json_value(&mut self, v: &Value) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        Some(match v {
            Value::String(s) => J::String(s.value().clone()),
            Value::Integer(i) => J::from(*i.value()),
            Value::Float(x) => match serde_json::Number::from_f64(*x.value()) {
                Some(n) => J::Number(n),
                None => {
                    self.report(
                        v.span(),
                        "`nan` and `inf` cannot be passed to an extension",
                        Some("use a finite number or a string".to_string()),
                    );
                    return None;
                }
            },
            Value::Boolean(b) => J::Bool(*b.value()),
            Value::Datetime(d) => J::String(d.value().to_string()),
            Value::Array(a) => {
                let mut out = Vec::new();
                let mut ok = true;
                for v in a.iter() {
                    match self.json_value(v) {
                        Some(j) => out.push(j),
                        None => ok = false,
                    }
                }
                if !ok {
                    return None;
                }
                J::Array(out)
            }
            Value::InlineTable(t) => J::Object(self.json_object(t)?),
        })
    }
}

pub(crate) fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Value(v) => value_type_name(v),
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
    }
}

pub(crate) fn value_type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

/// The candidate nearest to `word`, when near enough to be a likely typo
/// (or when `word` is a prefix of exactly one candidate).
pub(crate) fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let limit = (word.chars().count() / 3).max(1);
    let best = candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .min_by_key(|(d, _)| *d);
    if let Some((d, c)) = best {
        if d <= limit {
            return Some(c);
        }
    }
    let prefixed: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| word.len() >= 3 && c.starts_with(word))
        .collect();
    match prefixed.as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// Optimal string alignment distance: insertions, deletions, substitutions
/// and swaps of two neighbours each count 1.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}
