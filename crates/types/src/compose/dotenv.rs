//! The `.env` file format, used for the project's `.env` and for a service's `env_file`.
//!
//! Lines are `KEY=VALUE` (optionally prefixed by `export `), blank or `#` comments. Values may be
//! unquoted (trimmed, ` #` starts a comment), single-quoted (literal) or double-quoted (`\n`, `\t`,
//! `\"`, `\\` escapes); quoted values may span lines. Unquoted and double-quoted values are
//! interpolated against the variables defined earlier in the same file and then the caller's
//! lookup, as Docker Compose does. A bare `KEY` takes its value from the lookup and is skipped
//! when the lookup has none.

use std::collections::BTreeMap;

use super::interpolate::{interpolate, Lookup};

/// Why a `.env` file could not be read, at a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DotenvError {
    pub(crate) line: usize,
    pub(crate) message: String,
    pub(crate) fix: String,
}

/// Parses `source`, resolving references through the file's own earlier keys, then `outer`.
pub(crate) fn parse_with(
    source: &str,
    outer: Lookup<'_>,
) -> Result<BTreeMap<String, String>, DotenvError> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    // A leading byte-order mark is common in files saved by Windows editors.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut lines = source.lines().enumerate().peekable();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let err = |message: String, fix: &str| DotenvError {
            line: line_no,
            message,
            fix: fix.to_string(),
        };
        let (key, rest) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim_start())),
            None => (line, None),
        };
        if !is_valid_key(key) {
            return Err(err(
                format!("{key:?} is not a valid variable name"),
                "write KEY=VALUE, where KEY has only letters, digits, `_`, `.` and `-`",
            ));
        }
        let Some(rest) = rest else {
            let lookup = |name: &str| vars.get(name).cloned().or_else(|| outer(name));
            if let Some(v) = lookup(key) {
                vars.insert(key.to_string(), v);
            }
            continue;
        };
        let value = if let Some(quote @ ('\'' | '"')) = rest.chars().next() {
            // Quoted values may continue on the following lines until the closing quote.
            let mut text = rest[1..].to_string();
            let (body, after) = loop {
                if let Some(end) = closing_quote(&text, quote) {
                    break (text[..end].to_string(), text[end + 1..].to_string());
                }
                match lines.next() {
                    Some((_, next)) => {
                        text.push('\n');
                        text.push_str(next);
                    }
                    None => {
                        return Err(err(
                            format!(
                                "the value of {key} opens a {quote} quote that is never closed"
                            ),
                            "close the quote at the end of the value",
                        ))
                    }
                }
            };
            let after = after.trim();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(err(
                    format!("unexpected {after:?} after the quoted value of {key}"),
                    "put the whole value inside the quotes, or start a comment with ` #`",
                ));
            }
            if quote == '\'' {
                body
            } else {
                let unescaped = unescape_double(&body);
                expand(&unescaped, &vars, outer).map_err(|e| err(e.0, &e.1))?
            }
        } else {
            let unquoted = match rest.find(" #").or_else(|| rest.find("\t#")) {
                Some(i) => &rest[..i],
                None => rest,
            };
            let unquoted = if unquoted.starts_with('#') {
                ""
            } else {
                unquoted.trim_end()
            };
            expand(unquoted, &vars, outer).map_err(|e| err(e.0, &e.1))?
        };
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

fn expand(
    text: &str,
    vars: &BTreeMap<String, String>,
    outer: Lookup<'_>,
) -> Result<String, (String, String)> {
    let lookup = |name: &str| vars.get(name).cloned().or_else(|| outer(name));
    interpolate(text, &lookup).map_err(|e| (e.message, e.fix))
}

fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Byte index of the quote closing a value that started with `quote`; backslash escapes only
/// count inside double quotes.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote == '"' {
            escaped = true;
        } else if c == quote {
            return Some(i);
        }
    }
    None
}

fn unescape_double(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            // `\$` keeps the dollar literal; doubling it survives the interpolation that follows.
            Some('$') => out.push_str("$$"),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Parses an `env_file` with `format: raw`: `KEY=VALUE` lines whose values are kept exactly as
/// written (quotes, `$`, `#` and trailing spaces included); blank lines and lines starting with
/// `#` are skipped, and a bare `KEY` takes its value from `outer` as in the default format.
pub(crate) fn parse_raw(
    source: &str,
    outer: Lookup<'_>,
) -> Result<BTreeMap<String, String>, DotenvError> {
    let mut vars = BTreeMap::new();
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    for (index, raw) in source.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.trim_end().is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (key, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.to_string())),
            None => (trimmed.trim_end(), None),
        };
        if !is_valid_key(key) {
            return Err(DotenvError {
                line: index + 1,
                message: format!("{key:?} is not a valid variable name"),
                fix: "write KEY=VALUE, where KEY has only letters, digits, `_`, `.` and `-`"
                    .to_string(),
            });
        }
        match value.or_else(|| outer(key)) {
            Some(v) => {
                vars.insert(key.to_string(), v);
            }
            None => continue,
        }
    }
    Ok(vars)
}
