//! Typed reads of YAML values with errors that name the expected type and show what was found.
//!
//! After interpolation every substituted value is a string, so numeric fields accept numeric
//! strings (`replicas: ${REPLICAS:-3}`), as Docker Compose does. This module owns those
//! conversions and the wording of type errors; it knows no Compose keys.

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;

/// Describes a value for an error message: `a string "three"`, `a list`, `null`.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("a boolean {b}"),
        Value::Number(n) => format!("a number {n}"),
        Value::String(s) => format!("a string {:?}", shorten(s)),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Long values would drown the message; the path already says where to look.
fn shorten(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

/// The key as text when it is a scalar; mapping keys in Compose are always strings, but YAML
/// allows `80: x`, which we still want to name in errors.
pub(crate) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reports a wrong type at `path`; `example` shows a correct value in the fix.
pub(crate) fn type_error(p: &mut Problems, path: &str, expected: &str, got: &Value, example: &str) {
    p.push(
        path,
        format!("expected {expected}, got {}", describe(got)),
        format!("write it like `{example}`"),
    );
}

pub(crate) fn expect_str<'v>(
    p: &mut Problems,
    path: &str,
    value: &'v Value,
    example: &str,
) -> Option<&'v str> {
    match value {
        Value::String(s) => Some(s),
        other => {
            type_error(p, path, "a string", other, example);
            None
        }
    }
}

/// A string, or a number or boolean taken as its text (`user: 1000`, `FOO: true`).
pub(crate) fn expect_scalar(
    p: &mut Problems,
    path: &str,
    value: &Value,
    example: &str,
) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            type_error(p, path, "a string", other, example);
            None
        }
    }
}

pub(crate) fn expect_mapping<'v>(
    p: &mut Problems,
    path: &str,
    value: &'v Value,
    example: &str,
) -> Option<&'v Mapping> {
    match value {
        Value::Mapping(m) => Some(m),
        other => {
            type_error(p, path, "a mapping", other, example);
            None
        }
    }
}

/// A non-negative whole number that fits in `u32`, from a number or a numeric string.
/// `true`/`false`, also as the strings interpolation produces.
pub(crate) fn expect_bool(
    p: &mut Problems,
    path: &str,
    value: &Value,
    example: &str,
) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
        other => {
            type_error(p, path, "a boolean", other, example);
            None
        }
    }
}

pub(crate) fn expect_u32(
    p: &mut Problems,
    path: &str,
    value: &Value,
    example: &str,
) -> Option<u32> {
    let parsed = match value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.trim().parse::<i128>().ok(),
        _ => None,
    };
    match parsed {
        Some(n) if n < 0 => {
            p.push(
                path,
                format!("{n} is negative"),
                format!("use zero or a positive whole number, like `{example}`"),
            );
            None
        }
        Some(n) => match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                p.push(
                    path,
                    format!("{n} is too large"),
                    format!("use a whole number below {}, like `{example}`", u32::MAX),
                );
                None
            }
        },
        None => {
            let expected = if matches!(value, Value::Number(_)) {
                "a whole number"
            } else {
                "a number"
            };
            type_error(p, path, expected, value, example);
            None
        }
    }
}

/// Walks a mapping whose keys must be strings, reporting other keys.
pub(crate) fn string_entries<'v>(
    p: &mut Problems,
    path: &str,
    map: &'v Mapping,
) -> Vec<(String, &'v Value)> {
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        match k {
            Value::String(s) => out.push((s.clone(), v)),
            other => p.push(
                join(path, &key_text(other).unwrap_or_else(|| "?".to_string())),
                format!("keys must be strings, got {}", describe(other)),
                "quote the key",
            ),
        }
    }
    out
}

/// `services` + `web` -> `services.web`; an empty base yields the key alone. A key that would
/// make the path ambiguous (`meet.jitsi`, `com.example.team`, spaces, brackets) is quoted:
/// `services."meet.jitsi".image`.
pub(crate) fn join(base: &str, key: &str) -> String {
    let key = quote_key(key);
    if base.is_empty() {
        key
    } else {
        format!("{base}.{key}")
    }
}

fn quote_key(key: &str) -> String {
    let plain = !key.is_empty()
        && !key
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '[' | ']' | '"' | '\\'));
    if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// The first key of `path` and the rest after its `.` or `[`, with the key unquoted:
/// `"meet.jitsi".image` -> (`meet.jitsi`, `image`).
pub(crate) fn first_key(path: &str) -> Option<(String, &str)> {
    if let Some(rest) = path.strip_prefix('"') {
        // Quoted by `quote_key` with Rust's escapes; the key ends at the first `"` that is
        // not escaped.
        let mut escaped = false;
        let end = rest.char_indices().find_map(|(i, c)| {
            let found = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            found.then_some(i)
        })?;
        let key = rest[..end].replace("\\\"", "\"").replace("\\\\", "\\");
        Some((key, &rest[end + 1..]))
    } else {
        let end = path.find(['.', '[']).unwrap_or(path.len());
        (end > 0).then(|| (path[..end].to_string(), &path[end..]))
    }
}

pub(crate) fn index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}
