//! `extends`: a service built on another one, in the same file (`extends: web` or
//! `{service: web}`) or in another (`{file: common.yaml, service: web}`, the path relative to
//! the file that names it). The base is resolved first (it may extend too; a cycle is an
//! error naming the chain), then the service is merged over it with the rules of merging files.
//!
//! No I/O: another file is read through the caller's loader, which returns its interpolated
//! top-level mapping.

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;
use super::merge::merge_services;
use super::value::{describe, join};

/// Reads another Compose file by its path (relative to the project directory, or absolute)
/// into its interpolated top-level mapping; `Err` is a short reason.
pub(crate) type LoadFile<'a> = &'a dyn Fn(&str) -> Result<Mapping, String>;

/// How deep `extends` chains may go; real ones are a few links long.
const MAX_DEPTH: usize = 32;

/// Resolves `extends` on every service of `services`, which came from the project's files
/// (relative `file:` paths are relative to the project directory).
pub(crate) fn resolve_extends(p: &mut Problems, services: &mut Mapping, load: LoadFile<'_>) {
    let snapshot = services.clone();
    for (name, service) in services.iter_mut() {
        let Some(name) = name.as_str() else { continue };
        if !matches!(service, Value::Mapping(m) if m.contains_key("extends")) {
            continue;
        }
        let mut chain = vec![(String::new(), name.to_string())];
        match resolve(&snapshot, "", service.clone(), &mut chain, load) {
            Ok(resolved) => *service = resolved,
            Err(e) => p.push(join(&join("services", name), "extends"), e.0, e.1),
        }
    }
}

/// A problem's message and fix.
type Failure = (String, String);

/// `service` (from the file `file`, whose services are `services`) with its `extends` applied.
fn resolve(
    services: &Mapping,
    file: &str,
    service: Value,
    chain: &mut Vec<(String, String)>,
    load: LoadFile<'_>,
) -> Result<Value, Failure> {
    let Value::Mapping(mut fields) = service else {
        return Ok(service);
    };
    let Some(extends) = fields.shift_remove("extends") else {
        return Ok(Value::Mapping(fields));
    };
    let (base_name, base_path) = read_extends(&extends)?;
    if chain.len() > MAX_DEPTH {
        return Err((
            format!("extends is nested more than {MAX_DEPTH} deep"),
            "shorten the chain of services extending each other".to_string(),
        ));
    }
    let (base_file, other);
    let base_services = match base_path {
        None => {
            base_file = file.to_string();
            services
        }
        Some(path) => {
            base_file = rebase(file, &path);
            let mut top = load(&base_file).map_err(|why| {
                (
                    format!("cannot read {base_file:?} named by extends.file: {why}"),
                    "check the path, which is relative to the file that names it".to_string(),
                )
            })?;
            other = match top.shift_remove("services") {
                Some(Value::Mapping(m)) => m,
                _ => Mapping::new(),
            };
            &other
        }
    };
    let key = (base_file.clone(), base_name.clone());
    if chain.contains(&key) {
        let names: Vec<&str> = chain
            .iter()
            .map(|(_, n)| n.as_str())
            .chain([base_name.as_str()])
            .collect();
        return Err((
            format!("extends forms a cycle: {}", names.join(" -> ")),
            "make one service of the chain stop extending the next".to_string(),
        ));
    }
    let Some(base) = base_services.get(base_name.as_str()).cloned() else {
        let place = if base_file.is_empty() {
            "this file".to_string()
        } else {
            base_file.clone()
        };
        return Err((
            format!("extends names service {base_name:?}, which {place} does not define"),
            "name a service defined in that file".to_string(),
        ));
    };
    // Its own env_files first: those it inherits are rebased by the step that reads them.
    let base = rebase_env_files(base, &base_file);
    chain.push(key);
    let base = resolve(base_services, &base_file, base, chain, load)?;
    chain.pop();
    Ok(merge_services(base, Value::Mapping(fields)))
}

/// `extends: NAME` or `{service: NAME, file: PATH}`.
fn read_extends(value: &Value) -> Result<(String, Option<String>), Failure> {
    let example = "write it like extends: {service: web, file: common.yaml}".to_string();
    match value {
        Value::String(s) => Ok((s.clone(), None)),
        Value::Mapping(m) => {
            let mut service = None;
            let mut file = None;
            for (k, v) in m {
                match (k.as_str(), v) {
                    (Some("service"), Value::String(s)) => service = Some(s.clone()),
                    (Some("file"), Value::String(s)) => file = Some(s.clone()),
                    (Some(key @ ("service" | "file")), other) => {
                        return Err((
                            format!("extends.{key} must be a string, got {}", describe(other)),
                            example,
                        ))
                    }
                    (other, _) => {
                        return Err((
                            format!(
                                "extends has an unknown key {:?}: it takes service and file",
                                other.unwrap_or("?")
                            ),
                            example,
                        ))
                    }
                }
            }
            match service {
                Some(s) => Ok((s, file)),
                None => Err(("extends needs `service`".to_string(), example)),
            }
        }
        other => Err((
            format!(
                "extends must be a service name or a mapping, got {}",
                describe(other)
            ),
            example,
        )),
    }
}

/// `path` as named in the file `from` (a project-relative path, empty for the project's own
/// files): relative to `from`'s directory.
pub(crate) fn rebase(from: &str, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_string();
    }
    match from.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{path}"),
        None => path.to_string(),
    }
}

/// A service from another file names its env_files relative to that file; make them relative
/// to the project directory, as the project's own files name theirs.
fn rebase_env_files(base: Value, base_file: &str) -> Value {
    if base_file.is_empty() {
        return base;
    }
    let Value::Mapping(mut fields) = base else {
        return base;
    };
    let fix = |v: &mut Value| match v {
        Value::String(s) => *s = rebase(base_file, s),
        Value::Mapping(m) => {
            if let Some(Value::String(s)) = m.get_mut("path") {
                *s = rebase(base_file, s);
            }
        }
        _ => {}
    };
    match fields.get_mut("env_file") {
        Some(Value::Sequence(items)) => items.iter_mut().for_each(fix),
        Some(v) => fix(v),
        None => {}
    }
    Value::Mapping(fields)
}
