//! A service's final environment, resolved once where the files are (the CLI), as Compose does:
//! its `env_file`s in order (later files win; `required: false` files may be missing;
//! `format: raw` values are taken as written), then `environment`, which wins key by key. A
//! key in `environment` without a value takes it from the project's environment (`.env` and
//! the process environment), and leaves the variable unset when that has none, even if an
//! env_file set it (the Compose Specification's rule).
//!
//! The result replaces the service's `environment` as a mapping of strings and its `env_file`
//! is removed, so the model sent to the server carries every value and needs no files.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::dotenv;
use super::error::Problems;
use super::value::{describe, expect_str, index, join, string_entries, type_error};

/// Reads the file at a path (relative to the project directory, or absolute).
pub(crate) type ReadFile<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Resolves the environment of every service in `services`.
pub(crate) fn resolve_environments(
    p: &mut Problems,
    services: &mut Mapping,
    env: &BTreeMap<String, String>,
    read_file: ReadFile<'_>,
) {
    for (name, service) in services.iter_mut() {
        let Some(name) = name.as_str() else { continue };
        let Value::Mapping(fields) = service else {
            continue;
        };
        let path = join("services", name);
        resolve_service(p, &path, fields, env, read_file);
    }
}

fn resolve_service(
    p: &mut Problems,
    path: &str,
    fields: &mut Mapping,
    env: &BTreeMap<String, String>,
    read_file: ReadFile<'_>,
) {
    let env_file = fields.shift_remove("env_file");
    let environment = fields.get("environment").cloned();
    if env_file.is_none() && environment.is_none() {
        return;
    }
    let before = p.len();
    let mut out = match &env_file {
        Some(v) => read_env_files(p, &join(path, "env_file"), v, env, read_file),
        None => BTreeMap::new(),
    };
    if let Some(v) = &environment {
        for (key, value) in read_environment(p, &join(path, "environment"), v) {
            match value.or_else(|| env.get(&key).cloned()) {
                Some(v) => {
                    out.insert(key, v);
                }
                None => {
                    out.remove(&key);
                }
            }
        }
    }
    if p.len() > before {
        return;
    }
    let resolved: Mapping = out
        .into_iter()
        .map(|(k, v)| (Value::String(k), Value::String(v)))
        .collect();
    fields.insert(
        Value::String("environment".into()),
        Value::Mapping(resolved),
    );
}

/// `environment` as a list of `KEY=VALUE` / `KEY`, or a mapping; `None` is a key without a
/// value.
pub(crate) fn read_environment(
    p: &mut Problems,
    path: &str,
    value: &Value,
) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut put = |p: &mut Problems, item_path: &str, key: &str, value: Option<String>| {
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '=') {
            p.push(
                item_path,
                format!("{key:?} is not a valid variable name"),
                "write KEY=VALUE, with no spaces in KEY",
            );
            return;
        }
        out.push((key.to_string(), value));
    };
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = index(path, i);
                let Some(text) = expect_str(p, &item_path, item, "- KEY=VALUE") else {
                    continue;
                };
                match text.split_once('=') {
                    Some((k, v)) => put(p, &item_path, k, Some(v.to_string())),
                    None => put(p, &item_path, text, None),
                }
            }
        }
        Value::Mapping(map) => {
            for (key, v) in string_entries(p, path, map) {
                let key_path = join(path, &key);
                let value = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    other => {
                        p.push(
                            &key_path,
                            format!(
                                "expected a string, number or boolean, got {}",
                                describe(other)
                            ),
                            "quote the value, like KEY: \"value\"",
                        );
                        continue;
                    }
                };
                put(p, &key_path, &key, value);
            }
        }
        Value::Null => {}
        other => type_error(
            p,
            path,
            "a list or a mapping",
            other,
            "environment: {KEY: value}",
        ),
    }
    out
}

/// How an env_file's lines are read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Quotes, escapes and interpolation, like `.env`.
    Compose,
    /// Values exactly as written.
    Raw,
}

/// One entry of `env_file`.
struct EnvFile {
    path: String,
    file: String,
    required: bool,
    format: Format,
}

/// `env_file`: one path or a list of paths or `{path, required, format}` entries. References
/// in a file resolve through its own earlier lines, then the files before it, then `env`.
fn read_env_files(
    p: &mut Problems,
    path: &str,
    value: &Value,
    env: &BTreeMap<String, String>,
    read_file: ReadFile<'_>,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for entry in env_file_entries(p, path, value) {
        let source = match read_file(&entry.file) {
            Ok(source) => source,
            Err(_) if !entry.required => continue,
            Err(why) => {
                p.push(
                    &entry.path,
                    format!("cannot read env file {:?}: {why}", entry.file),
                    "check the path, which is relative to the compose file, or mark it {path: FILE, required: false}",
                );
                continue;
            }
        };
        let lookup = |name: &str| out.get(name).or_else(|| env.get(name)).cloned();
        let vars = match entry.format {
            Format::Compose => dotenv::parse_with(&source, &lookup),
            Format::Raw => dotenv::parse_raw(&source, &lookup),
        };
        match vars {
            Ok(vars) => out.extend(vars),
            Err(e) => p.push(
                &entry.path,
                format!("{} line {}: {}", entry.file, e.line, e.message),
                e.fix,
            ),
        }
    }
    out
}

fn env_file_entries(p: &mut Problems, path: &str, value: &Value) -> Vec<EnvFile> {
    let items: Vec<(String, &Value)> = match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (index(path, i), item))
            .collect(),
        other => vec![(path.to_string(), other)],
    };
    let mut out = Vec::new();
    for (entry_path, entry) in items {
        match entry {
            Value::String(s) => out.push(EnvFile {
                path: entry_path,
                file: s.clone(),
                required: true,
                format: Format::Compose,
            }),
            Value::Mapping(map) => {
                if let Some(e) = env_file_entry(p, &entry_path, map) {
                    out.push(e);
                }
            }
            other => type_error(p, &entry_path, "a path", other, "env_file: web.env"),
        }
    }
    out
}

fn env_file_entry(p: &mut Problems, entry_path: &str, map: &Mapping) -> Option<EnvFile> {
    let mut file = None;
    let mut required = true;
    let mut format = Format::Compose;
    for (key, v) in string_entries(p, entry_path, map) {
        let key_path = join(entry_path, &key);
        match key.as_str() {
            "path" => file = expect_str(p, &key_path, v, "path: web.env").map(String::from),
            "required" => match v {
                Value::Bool(b) => required = *b,
                Value::String(s) if s == "true" || s == "false" => required = s == "true",
                other => type_error(p, &key_path, "a boolean", other, "required: false"),
            },
            "format" => match expect_str(p, &key_path, v, "format: raw") {
                Some("raw") => format = Format::Raw,
                Some(other) => p.push(
                    &key_path,
                    format!("{other:?} is not an env_file format"),
                    "use format: raw for values taken as written, or leave format out",
                ),
                None => {}
            },
            other => super::keys::unknown_key(p, &key_path, other, ["path", "required", "format"]),
        }
    }
    let Some(file) = file else {
        p.push(
            join(entry_path, "path"),
            "an env_file entry needs `path`",
            "write it like {path: web.env, required: false}",
        );
        return None;
    };
    Some(EnvFile {
        path: entry_path.to_string(),
        file,
        required,
        format,
    })
}
