//! Top-level `secrets` and `configs`, and the services' `secrets:` / `configs:` entries.
//!
//! A definition says where the value comes from: `file` (read by the CLI, relative to the
//! Compose file), `environment` (a variable of the CLI's environment), `content` (configs
//! only, the value inline) or `external` (a cluster secret made with `hivemind secret create`,
//! looked up by `name`). The reader does no I/O: the CLI sends the values of `file` and
//! `environment` definitions beside the model, and the server seals and stores them.
//!
//! A service entry is a name (`- db_password`) or `{source, target, uid, gid, mode}`; the file
//! goes to `/run/secrets/NAME` (a secret) or `/NAME` (a config) unless `target` says otherwise.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::error::Problems;
use super::value::{describe, expect_mapping, expect_str, index, join, string_entries, type_error};
use crate::secret::{FileKind, FileMount};

/// Where one definition's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A file the CLI reads, relative to the Compose file (or absolute, or `~/...`).
    File(String),
    /// A variable of the CLI's environment.
    Environment(String),
    /// The value itself (configs only).
    Content(String),
    /// A cluster secret or config, made beforehand with `hivemind secret create`.
    External,
}

/// One top-level `secrets:` or `configs:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDef {
    /// The stored object's name: `name:` when set, else the entry's key.
    pub name: String,
    pub source: FileSource,
}

/// What a definition may be given as, for errors.
fn sources(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Secret => "`file`, `environment` or `external`",
        FileKind::Config => "`file`, `content`, `environment` or `external`",
    }
}

/// The top-level `secrets` or `configs` section, by key.
pub(crate) fn read_defs(
    p: &mut Problems,
    kind: FileKind,
    path: &str,
    value: &Value,
) -> BTreeMap<String, FileDef> {
    let mut out = BTreeMap::new();
    let example = match kind {
        FileKind::Secret => "secrets: {db_password: {file: ./db_password.txt}}",
        FileKind::Config => "configs: {nginx_conf: {file: ./nginx.conf}}",
    };
    let map = match value {
        Value::Null => return out,
        other => match expect_mapping(p, path, other, example) {
            Some(map) => map,
            None => return out,
        },
    };
    for (key, v) in string_entries(p, path, map) {
        let def_path = join(path, &key);
        if !is_file_name(&key) {
            p.push(
                &def_path,
                format!("{key:?} is not a valid {} name", kind.as_str()),
                "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
            );
            continue;
        }
        if let Some(def) = read_def(p, kind, &def_path, &key, v, example) {
            out.insert(key, def);
        }
    }
    out
}

/// Secret and config names: a path segment and a file name in the container at once.
fn is_file_name(name: &str) -> bool {
    name.len() <= 253
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn read_def(
    p: &mut Problems,
    kind: FileKind,
    path: &str,
    key: &str,
    value: &Value,
    example: &str,
) -> Option<FileDef> {
    let map = expect_mapping(p, path, value, example)?;
    let before = p.len();
    let mut name = None;
    let mut found: Vec<(String, FileSource)> = Vec::new();
    for (k, v) in string_entries(p, path, map) {
        let key_path = join(path, &k);
        match k.as_str() {
            "name" => {
                name = expect_str(p, &key_path, v, "name: db_password").map(String::from);
                if let Some(n) = &name {
                    if !is_file_name(n) {
                        p.push(
                            &key_path,
                            format!("{n:?} is not a valid {} name", kind.as_str()),
                            "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
                        );
                    }
                }
            }
            "file" => {
                if let Some(f) = expect_str(p, &key_path, v, "file: ./db_password.txt") {
                    if f.trim().is_empty() {
                        p.push(&key_path, "the path is empty", "name the file, like ./db_password.txt");
                    } else {
                        found.push((k.clone(), FileSource::File(f.to_string())));
                    }
                }
            }
            "environment" => {
                if let Some(var) = expect_str(p, &key_path, v, "environment: DB_PASSWORD") {
                    if var.is_empty() || var.chars().any(|c| c.is_whitespace() || c == '=') {
                        p.push(
                            &key_path,
                            format!("{var:?} is not a variable name"),
                            "name the variable whose value it is, like environment: DB_PASSWORD",
                        );
                    } else {
                        found.push((k.clone(), FileSource::Environment(var.to_string())));
                    }
                }
            }
            "content" if kind == FileKind::Config => match v {
                Value::String(s) => found.push((k.clone(), FileSource::Content(s.clone()))),
                Value::Number(n) => found.push((k.clone(), FileSource::Content(n.to_string()))),
                Value::Bool(b) => found.push((k.clone(), FileSource::Content(b.to_string()))),
                other => type_error(p, &key_path, "a string", other, "content: \"key=value\""),
            },
            "content" => p.push(
                &key_path,
                "a secret has no `content`: its value would be stored in the Compose file for all to read",
                "put the value in a file and write file: ./FILE, or take it from the environment with environment: VAR",
            ),
            "external" => match v {
                Value::Bool(true) => found.push((k.clone(), FileSource::External)),
                Value::Bool(false) => {}
                Value::String(s) if s == "true" => found.push((k.clone(), FileSource::External)),
                Value::String(s) if s == "false" => {}
                // The old form `external: {name: NAME}`.
                Value::Mapping(m) => {
                    for (ek, ev) in string_entries(p, &key_path, m) {
                        let ek_path = join(&key_path, &ek);
                        match ek.as_str() {
                            "name" => {
                                name = expect_str(p, &ek_path, ev, "name: db_password")
                                    .map(String::from)
                            }
                            other => super::keys::unknown_key(p, &ek_path, other, ["name"]),
                        }
                    }
                    found.push((k.clone(), FileSource::External));
                }
                other => type_error(p, &key_path, "a boolean", other, "external: true"),
            },
            // Metadata of the object; nothing reads it.
            "labels" => {}
            "driver" | "driver_opts" | "template_driver" => p.push(
                &key_path,
                format!("`{k}` is not supported: Hivemind keeps {}s itself", kind.as_str()),
                format!("remove `{k}` and give the value with {}", sources(kind)),
            ),
            _ if k.starts_with("x-") => {}
            other => {
                let candidates: &[&str] = match kind {
                    FileKind::Secret => &["name", "file", "environment", "external", "labels"],
                    FileKind::Config => {
                        &["name", "file", "content", "environment", "external", "labels"]
                    }
                };
                super::keys::unknown_key(p, &key_path, other, candidates.iter().copied());
            }
        }
    }
    if p.len() > before {
        return None;
    }
    match found.len() {
        1 => Some(FileDef {
            name: name.unwrap_or_else(|| key.to_string()),
            source: found.remove(0).1,
        }),
        0 => {
            p.push(
                path,
                format!("the {} has no value", kind.as_str()),
                format!("give it one of {}", sources(kind)),
            );
            None
        }
        _ => {
            let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
            p.push(
                path,
                format!("the {} has both `{}`", kind.as_str(), keys.join("` and `")),
                format!("keep one of {}", sources(kind)),
            );
            None
        }
    }
}

/// A service's `secrets:` or `configs:` list against the app's definitions.
pub(crate) fn read_mounts(
    p: &mut Problems,
    kind: FileKind,
    path: &str,
    value: &Value,
    defs: &BTreeMap<String, FileDef>,
) -> Vec<FileMount> {
    let items = match value {
        Value::Null => return Vec::new(),
        Value::Sequence(items) => items,
        other => {
            type_error(p, path, "a list", other, "secrets: [db_password]");
            return Vec::new();
        }
    };
    let mut out: Vec<FileMount> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(mount) = read_mount(p, kind, &item_path, item, defs) else {
            continue;
        };
        if out.iter().any(|m| m.target == mount.target) {
            p.push(
                &item_path,
                format!("two entries go to {}", mount.target),
                "give each entry its own `target`",
            );
            continue;
        }
        out.push(mount);
    }
    out
}

fn read_mount(
    p: &mut Problems,
    kind: FileKind,
    path: &str,
    value: &Value,
    defs: &BTreeMap<String, FileDef>,
) -> Option<FileMount> {
    let before = p.len();
    let (source, source_path, target, uid, gid, mode) = match value {
        Value::String(s) => (
            s.clone(),
            path.to_string(),
            None,
            0,
            0,
            FileKind::DEFAULT_MODE,
        ),
        Value::Mapping(map) => {
            let mut source = None;
            let mut target = None;
            let (mut uid, mut gid, mut mode) = (0, 0, FileKind::DEFAULT_MODE);
            for (k, v) in string_entries(p, path, map) {
                let key_path = join(path, &k);
                match k.as_str() {
                    "source" => {
                        source =
                            expect_str(p, &key_path, v, "source: db_password").map(String::from)
                    }
                    "target" => {
                        target =
                            expect_str(p, &key_path, v, "target: /run/secrets/db").map(String::from)
                    }
                    "uid" => uid = read_id(p, &key_path, v).unwrap_or(0),
                    "gid" => gid = read_id(p, &key_path, v).unwrap_or(0),
                    "mode" => mode = read_mode(p, &key_path, v).unwrap_or(FileKind::DEFAULT_MODE),
                    _ if k.starts_with("x-") => {}
                    other => super::keys::unknown_key(
                        p,
                        &key_path,
                        other,
                        ["source", "target", "uid", "gid", "mode"],
                    ),
                }
            }
            let Some(source) = source else {
                if p.len() == before {
                    p.push(
                        join(path, "source"),
                        format!("the entry names no {}", kind.as_str()),
                        "add source: NAME, the name of an entry of the top-level section",
                    );
                }
                return None;
            };
            (source, join(path, "source"), target, uid, gid, mode)
        }
        other => {
            p.push(
                path,
                format!("expected a name or a mapping, got {}", describe(other)),
                "write `- db_password` or `- {source: db_password, target: db}`",
            );
            return None;
        }
    };
    let section = match kind {
        FileKind::Secret => "secrets",
        FileKind::Config => "configs",
    };
    let Some(def) = defs.get(&source) else {
        p.push(
            &source_path,
            format!("{} {source:?} is not defined", kind.as_str()),
            format!("define it in the top-level `{section}:` section, like {section}: {{{source}: {{file: ./{source}.txt}}}}"),
        );
        return None;
    };
    let target = match target {
        Some(t) if t.starts_with('/') => t,
        Some(t) => format!("{}/{t}", kind.default_dir()),
        None => format!("{}/{source}", kind.default_dir()),
    };
    if !is_clean_target(&target) {
        p.push(
            join(path, "target"),
            format!("{target:?} is not a file path"),
            "write an absolute path without `..`, like /run/secrets/db_password",
        );
        return None;
    }
    (p.len() == before).then(|| FileMount {
        source: def.name.clone(),
        external: def.source == FileSource::External,
        target,
        uid,
        gid,
        mode,
        digest: String::new(),
    })
}

/// A path runc can mount a file at: absolute, no `.`/`..`/empty segments, not `/` itself.
fn is_clean_target(target: &str) -> bool {
    let Some(rest) = target.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && !target.contains('\0')
        && rest
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// `uid`/`gid`: a number or a numeric string (the Compose Specification writes `'103'`).
fn read_id(p: &mut Problems, path: &str, value: &Value) -> Option<u32> {
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        other => {
            type_error(p, path, "a number", other, "uid: \"103\"");
            return None;
        }
    };
    match text.parse::<u32>() {
        Ok(id) => Some(id),
        Err(_) => {
            p.push(
                path,
                format!("{text:?} is not a numeric id"),
                "write the numeric id, like \"103\" (names are not looked up)",
            );
            None
        }
    }
}

/// `mode`: octal as written (`0440`, which YAML 1.2 reads as a string, or `"0440"`, `0o440`),
/// or a plain number, which is taken as it is (`0o440` is the number 288), as Docker does.
fn read_mode(p: &mut Problems, path: &str, value: &Value) -> Option<u32> {
    let mode = match value {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::String(s) => {
            let s = s.trim();
            let digits = s.strip_prefix("0o").unwrap_or(s);
            u32::from_str_radix(digits, 8).ok()
        }
        other => {
            type_error(p, path, "an octal mode", other, "mode: 0440");
            return None;
        }
    };
    match mode {
        Some(m) if m <= 0o777 => Some(m),
        _ => {
            p.push(
                path,
                format!("{} is not a file mode", describe(value)),
                "write the permissions in octal, like mode: 0440",
            );
            None
        }
    }
}

/// The `file:` paths of an included file's `secrets` and `configs`, made relative to the project
/// directory as its own env_files are (`~/` and absolute paths stay).
pub(crate) fn rebase_files(model: &mut serde_yaml_ng::Mapping, file: &str) {
    for section in ["secrets", "configs"] {
        let Some(Value::Mapping(defs)) = model.get_mut(section) else {
            continue;
        };
        for def in defs.values_mut() {
            if let Value::Mapping(fields) = def {
                if let Some(Value::String(path)) = fields.get_mut("file") {
                    if !path.starts_with('~') {
                        *path = super::extends::rebase(file, path);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "secrets_tests.rs"]
mod tests;
