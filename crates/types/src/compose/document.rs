//! One Compose document as YAML: parsing with `<<` merge keys resolved, the top-level mapping,
//! and the walk over the string values that interpolation applies to.
//!
//! Both the project loader (which interpolates with the whole environment) and the reader
//! (which the server runs on the already interpolated model) use this walk, so that the
//! values the loader escapes are exactly the values the reader unescapes.

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;
use super::interpolate::{interpolate, Lookup};
use super::value::{self, describe, join};

/// Parses the YAML and resolves `<<` merge keys.
pub(crate) fn load_yaml(p: &mut Problems, source: &str) -> Option<Value> {
    let mut doc: Value = match serde_yaml_ng::from_str(source) {
        Ok(doc) => doc,
        Err(e) => {
            let fix = match e.location() {
                Some(at) => format!(
                    "check the indentation and quoting near line {}, column {}",
                    at.line(),
                    at.column()
                ),
                None => "check the indentation and quoting".to_string(),
            };
            p.push("", format!("invalid YAML: {e}"), fix);
            return None;
        }
    };
    // `apply_merge` resolves one level per pass: a mapping merged from an anchor that itself
    // used `<<` brings that key along. Repeat until none is left; the depth of such chains is
    // bounded by the file, and the bound below only guards against surprises.
    for _ in 0..64 {
        if let Err(e) = doc.apply_merge() {
            p.push(
                "",
                format!("invalid merge key `<<`: {e}"),
                "merge a mapping or a list of mappings, like `<<: *defaults`",
            );
            return None;
        }
        if !has_merge_key(&doc) {
            return Some(doc);
        }
    }
    p.push(
        "",
        "merge keys `<<` are nested too deeply",
        "flatten the chain of anchors merged into each other",
    );
    None
}

fn has_merge_key(value: &Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Mapping(map) => {
                if map.contains_key("<<") {
                    return true;
                }
                stack.extend(map.values());
            }
            Value::Sequence(items) => stack.extend(items),
            Value::Tagged(t) => stack.push(&t.value),
            _ => {}
        }
    }
    false
}

/// The document's top-level mapping, or a problem saying what the file should start with.
pub(crate) fn top_mapping<'d>(p: &mut Problems, doc: &'d mut Value) -> Option<&'d mut Mapping> {
    match doc {
        Value::Mapping(map) => Some(map),
        Value::Null => {
            p.push(
                "",
                "the file is empty",
                "describe the app under `services:`, like services: {web: {image: nginx:1.27}}",
            );
            None
        }
        other => {
            p.push(
                "",
                format!(
                    "expected a mapping at the top of the file, got {}",
                    describe(other)
                ),
                "start the file with `services:`",
            );
            None
        }
    }
}

/// Interpolates every string value the walk visits, pushing a problem for each that fails.
pub(crate) fn interpolate_top(p: &mut Problems, top: &mut Mapping, lookup: Lookup<'_>) {
    walk_strings(top, &mut |path, s| match interpolate(s, lookup) {
        Ok(expanded) => *s = expanded,
        Err(e) => p.push(path, e.message, e.fix),
    });
}

/// Doubles every `$` the walk visits, so that interpolating the result again (the server does)
/// gives back exactly these values.
pub(crate) fn escape_top(top: &mut Mapping) {
    walk_strings(top, &mut |_, s| {
        if s.contains('$') {
            *s = s.replace('$', "$$");
        }
    });
}

/// Visits every string value except under `x-*` keys at the top and on services, which
/// Hivemind ignores (and which often hold half-finished anchors); `x-hivemind` on a service is
/// visited. Merged copies of anchors are visited where they are used.
pub(crate) fn walk_strings(top: &mut Mapping, f: &mut dyn FnMut(&str, &mut String)) {
    for (key, v) in top.iter_mut() {
        let Some(key) = key.as_str() else { continue };
        if key.starts_with("x-") {
            continue;
        }
        if key == "services" {
            if let Value::Mapping(services) = v {
                for (name, service) in services.iter_mut() {
                    let path = join("services", &value::key_text(name).unwrap_or_default());
                    match service {
                        Value::Mapping(fields) => {
                            for (field, fv) in fields.iter_mut() {
                                let field = value::key_text(field).unwrap_or_default();
                                if field.starts_with("x-") && field != "x-hivemind" {
                                    continue;
                                }
                                walk_value(&join(&path, &field), fv, f);
                            }
                        }
                        other => walk_value(&path, other, f),
                    }
                }
                continue;
            }
        }
        walk_value(key, v, f);
    }
}

fn walk_value(path: &str, value: &mut Value, f: &mut dyn FnMut(&str, &mut String)) {
    match value {
        Value::String(s) => f(path, s),
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk_value(&value::index(path, i), item, f);
            }
        }
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = value::key_text(k).unwrap_or_default();
                walk_value(&join(path, &key), v, f);
            }
        }
        Value::Tagged(t) => walk_value(path, &mut t.value, f),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
