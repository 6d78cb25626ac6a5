//! Top-level `include`: other Compose files whose services, networks, volumes, secrets and
//! configs join the project. Each entry is a path or `{path: PATH | [PATH...], env_file}`,
//! relative to the including file; an included file is interpolated with its own directory's
//! `.env` (or its `env_file`s) under the project's environment, which wins, and may include
//! others. Paths it names (`env_file`, `extends.file`) stay relative to it. A resource defined
//! both by the project and an included file is an error naming both, as in Docker Compose.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;
use super::extends::rebase;
use super::value::{describe, index};

/// Reads a file by its project-relative path; `Err` is a short reason.
pub(crate) type ReadFile<'a> = &'a dyn Fn(&str) -> Result<String, String>;
/// Parses and interpolates a file's text with the given variables into its top-level mapping,
/// or the first problem's text.
pub(crate) type LoadText<'a> =
    &'a dyn Fn(&str, &str, &BTreeMap<String, String>) -> Result<Mapping, String>;

const MAX_DEPTH: usize = 16;
const SECTIONS: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

/// Replaces `include` in `top` (which was read from the project-relative file `from`) with the
/// included models.
pub(crate) fn apply_includes(
    p: &mut Problems,
    top: &mut Mapping,
    from: &str,
    env: &BTreeMap<String, String>,
    read: ReadFile<'_>,
    load: LoadText<'_>,
    depth: usize,
) {
    let Some(include) = top.shift_remove("include") else {
        return;
    };
    if depth > MAX_DEPTH {
        p.push(
            "include",
            format!("include is nested more than {MAX_DEPTH} deep"),
            "check for files that include each other",
        );
        return;
    }
    let entries = match include {
        Value::Sequence(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let path = index("include", i);
        let (paths, env_files) = match entry {
            Value::String(s) => (vec![s], Vec::new()),
            Value::Mapping(m) => {
                let list = |v: Option<&Value>| -> Vec<String> {
                    match v {
                        Some(Value::String(s)) => vec![s.clone()],
                        Some(Value::Sequence(items)) => items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect(),
                        _ => Vec::new(),
                    }
                };
                (list(m.get("path")), list(m.get("env_file")))
            }
            other => {
                p.push(
                    &path,
                    format!("expected a path or a mapping, got {}", describe(&other)),
                    "write it like include: [other/compose.yaml]",
                );
                continue;
            }
        };
        if paths.is_empty() {
            p.push(
                &path,
                "an include entry needs `path`",
                "write it like {path: other/compose.yaml}",
            );
            continue;
        }
        for file in paths {
            let file = rebase(from, &file);
            let text = match read(&file) {
                Ok(text) => text,
                Err(why) => {
                    p.push(
                        &path,
                        format!("cannot read included file {file:?}: {why}"),
                        "check the path, which is relative to the including file",
                    );
                    continue;
                }
            };
            // The included file's own `.env` (or env_files), under the project's variables.
            let mut vars = BTreeMap::new();
            let dotenvs = if env_files.is_empty() {
                vec![(rebase(&file, ".env"), false)]
            } else {
                env_files.iter().map(|e| (rebase(from, e), true)).collect()
            };
            for (dotenv, required) in dotenvs {
                match read(&dotenv) {
                    Ok(t) => match super::dotenv::parse_with(&t, &|n| env.get(n).cloned()) {
                        Ok(v) => vars.extend(v),
                        Err(e) => p.push(
                            &path,
                            format!("{dotenv} line {}: {}", e.line, e.message),
                            e.fix,
                        ),
                    },
                    Err(why) if required => p.push(
                        &path,
                        format!("cannot read env file {dotenv:?}: {why}"),
                        "check the path, which is relative to the including file",
                    ),
                    Err(_) => {}
                }
            }
            vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut included = match load(&file, &text, &vars) {
                Ok(m) => m,
                Err(why) => {
                    p.push(
                        &path,
                        format!("included file {file}: {why}"),
                        "fix that file",
                    );
                    continue;
                }
            };
            apply_includes(p, &mut included, &file, env, read, load, depth + 1);
            rebase_paths(&mut included, &file);
            join_model(p, top, included, &path, &file);
        }
    }
}

/// Paths an included file's services name, made project-relative.
fn rebase_paths(model: &mut Mapping, file: &str) {
    super::secrets::rebase_files(model, file);
    let Some(Value::Mapping(services)) = model.get_mut("services") else {
        return;
    };
    for service in services.values_mut() {
        let Value::Mapping(fields) = service else {
            continue;
        };
        let fix = |v: &mut Value| match v {
            Value::String(s) => *s = rebase(file, s),
            Value::Mapping(m) => {
                if let Some(Value::String(s)) = m.get_mut("path") {
                    *s = rebase(file, s);
                }
            }
            _ => {}
        };
        match fields.get_mut("env_file") {
            Some(Value::Sequence(items)) => items.iter_mut().for_each(fix),
            Some(v) => fix(v),
            None => {}
        }
        if let Some(Value::Mapping(ext)) = fields.get_mut("extends") {
            if let Some(Value::String(s)) = ext.get_mut("file") {
                *s = rebase(file, s);
            }
        }
    }
}

fn join_model(p: &mut Problems, top: &mut Mapping, included: Mapping, path: &str, file: &str) {
    for (key, value) in included {
        let Some(section) = key.as_str().filter(|k| SECTIONS.contains(k)) else {
            continue;
        };
        let Value::Mapping(entries) = value else {
            continue;
        };
        let slot = top
            .entry(Value::String(section.to_string()))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if slot.is_null() {
            *slot = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(target) = slot else {
            continue;
        };
        for (name, def) in entries {
            if target.contains_key(&name) {
                p.push(
                    path,
                    format!(
                        "{section} {} is defined both here and in the included file {file}",
                        name.as_str().unwrap_or("?")
                    ),
                    "rename one of them, or remove it from one file",
                );
                continue;
            }
            target.insert(name, def);
        }
    }
}
