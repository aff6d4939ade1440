//! Problems found in a policy set, each pinned to a file and, where known, a line.

use std::fmt;

use cedar_policy::ffi::DetailedError;
use serde::{Deserialize, Serialize};

use crate::error::lowercase_first;

/// One problem in a policy set: a parse error, a schema error or a validation error.
///
/// Displays as `file:line:col: message` (or `file: message` without a position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The file it is in.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column in characters, when known.
    pub column: Option<u32>,
    /// Stable snake_case kind: `parse_error`, `schema_error`, `validation_error`,
    /// `duplicate_policy_id`, `invalid_policy_id`, `template_not_supported` or
    /// `internal_error`.
    pub code: String,
    /// What is wrong, in Cedar's words.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(col)) => write!(f, "{}:{line}:{col}: {}", self.file, self.message),
            (Some(line), None) => write!(f, "{}:{line}: {}", self.file, self.message),
            _ => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl Diagnostic {
    /// A diagnostic at byte `offset` of `text` (the whole file the problem is in).
    pub(crate) fn at(file: &str, text: &str, offset: Option<usize>, code: &str, message: String) -> Self {
        let (line, column) = match offset.map(|o| line_col(text, o)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Diagnostic { file: file.to_owned(), line, column, code: code.to_owned(), message }
    }

    /// One diagnostic per error Cedar reports (its related errors included), each at the
    /// first place Cedar points to.
    pub(crate) fn from_cedar(file: &str, text: &str, code: &str, error: &DetailedError) -> Vec<Self> {
        let mut out = Vec::new();
        flatten(file, text, code, error, &mut out);
        out
    }
}

fn flatten(file: &str, text: &str, code: &str, error: &DetailedError, out: &mut Vec<Diagnostic>) {
    let offset = error.source_locations.first().map(|l| l.loc.start);
    let mut message = lowercase_first(error.message.trim_end_matches('.'));
    if let Some(help) = &error.help {
        message.push_str(" (");
        message.push_str(&lowercase_first(help.trim_end_matches('.')));
        message.push(')');
    }
    out.push(Diagnostic::at(file, text, offset, code, message));
    for related in &error.related {
        flatten(file, text, code, related, out);
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let text = "ab\ncdé\nf";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 3), (2, 1));
        assert_eq!(line_col(text, 5), (2, 3));
        assert_eq!(line_col(text, 8), (3, 1));
        assert_eq!(line_col(text, 100), (3, 2));
    }

    #[test]
    fn display_names_file_line_and_column() {
        let d = Diagnostic::at("a.cedar", "x\ny", Some(2), "parse_error", "bad".into());
        assert_eq!(d.to_string(), "a.cedar:2:1: bad");
        let d = Diagnostic::at("a.cedar", "", None, "parse_error", "bad".into());
        assert_eq!(d.to_string(), "a.cedar: bad");
    }
}
