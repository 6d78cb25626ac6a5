//! `depends_on`, in both forms: a list of service names, or a mapping by name with
//! `condition` (`service_started`, `service_healthy`, `service_completed_successfully`),
//! `required` (default `true`) and `restart`.
//!
//! A service read here is keyed by its dependency's DNS name, as the store knows services. A
//! dependency on a service that is not in the file is refused unless `required: false` (then a
//! warning, and dropped: Compose starts the service without it). Cycles need every service, so
//! [`refuse_cycles`] runs after all are read and names the chain. No I/O, never panics.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::error::Problems;
use super::keys::unknown_key;
use super::value::{expect_bool, expect_mapping, expect_str, index, join, string_entries};
use super::warnings::Unhonoured;
use crate::lifecycle::{Dependency, DependencyCondition};

const KEYS: &[&str] = &["condition", "required", "restart"];
const CONDITIONS: &str = "use service_started, service_healthy or service_completed_successfully";

/// Reads `services.NAME.depends_on` at `path`; `service_names` maps every service name as
/// written in the file to its DNS name.
pub(crate) fn read_depends_on(
    p: &mut Problems,
    path: &str,
    value: &Value,
    service_names: &BTreeMap<String, String>,
) -> BTreeMap<String, Dependency> {
    let mut out = BTreeMap::new();
    match value {
        Value::Null => {}
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = index(path, i);
                let Some(name) = expect_str(p, &item_path, item, "- db") else {
                    continue;
                };
                add(
                    p,
                    &item_path,
                    name,
                    Dependency::default(),
                    service_names,
                    &mut out,
                );
            }
        }
        Value::Mapping(map) => {
            for (name, settings) in string_entries(p, path, map) {
                let entry_path = join(path, &name);
                if let Some(dep) = read_entry(p, &entry_path, settings) {
                    add(p, &entry_path, &name, dep, service_names, &mut out);
                }
            }
        }
        other => super::value::type_error(
            p,
            path,
            "a list or a mapping",
            other,
            "depends_on: {db: {condition: service_healthy}}",
        ),
    }
    out
}

fn read_entry(p: &mut Problems, path: &str, value: &Value) -> Option<Dependency> {
    let mut dep = Dependency::default();
    // `db:` with nothing under it is the short form's meaning.
    if value.is_null() {
        return Some(dep);
    }
    let map = expect_mapping(p, path, value, "db: {condition: service_healthy}")?;
    let before = p.len();
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "condition" => {
                let Some(text) = expect_str(p, &key_path, v, "condition: service_healthy") else {
                    continue;
                };
                dep.condition = match text.trim() {
                    "service_started" => DependencyCondition::ServiceStarted,
                    "service_healthy" => DependencyCondition::ServiceHealthy,
                    "service_completed_successfully" => {
                        DependencyCondition::ServiceCompletedSuccessfully
                    }
                    other => {
                        p.push(
                            &key_path,
                            format!("{other:?} is not a depends_on condition"),
                            CONDITIONS,
                        );
                        continue;
                    }
                };
            }
            "required" => {
                if let Some(b) = expect_bool(p, &key_path, v, "required: false") {
                    dep.required = b;
                }
            }
            "restart" => {
                if let Some(b) = expect_bool(p, &key_path, v, "restart: true") {
                    dep.restart = b;
                }
            }
            _ if key.starts_with("x-") => {}
            other => unknown_key(p, &key_path, other, KEYS.iter().copied()),
        }
    }
    (p.len() == before).then_some(dep)
}

fn add(
    p: &mut Problems,
    path: &str,
    name: &str,
    dep: Dependency,
    service_names: &BTreeMap<String, String>,
    out: &mut BTreeMap<String, Dependency>,
) {
    match service_names.get(name) {
        Some(dns) => {
            out.insert(dns.clone(), dep);
        }
        None if !dep.required => p.note(
            path,
            Unhonoured::Ignored(
                "ignored: the service it names is not in the app, and required: false lets \
                 this one start without it",
            ),
        ),
        None => p.push(
            path,
            format!("service {name:?} is not defined"),
            "depend on a service of this file, fix the name, or add required: false if it is optional",
        ),
    }
}

/// Refuses dependency cycles among `services` (written name, DNS name, its dependencies by
/// DNS name), naming the chain as written: `services.web.depends_on: cycle web -> api -> web`.
/// Each cycle is reported once, at the service it is found from first in file order.
pub(crate) fn refuse_cycles(
    p: &mut Problems,
    services: &[(&str, &str, &BTreeMap<String, Dependency>)],
) {
    let by_dns: BTreeMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, (_, dns, _))| (*dns, i))
        .collect();
    // 0 unvisited, 1 on the current path, 2 done: the classic three-colour search.
    let mut colour = vec![0u8; services.len()];
    for start in 0..services.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut path = vec![start];
        colour[start] = 1;
        // Each frame: the service and the dependencies still to look at.
        let mut stack: Vec<Vec<usize>> = vec![deps_of(services, &by_dns, start)];
        while let Some(next) = stack.last_mut() {
            let Some(dep) = next.pop() else {
                stack.pop();
                if let Some(done) = path.pop() {
                    colour[done] = 2;
                }
                continue;
            };
            match colour[dep] {
                0 => {
                    colour[dep] = 1;
                    path.push(dep);
                    stack.push(deps_of(services, &by_dns, dep));
                }
                1 => {
                    let from = path.iter().position(|&i| i == dep).unwrap_or(0);
                    let chain: Vec<&str> = path[from..]
                        .iter()
                        .chain(std::iter::once(&dep))
                        .map(|&i| services[i].0)
                        .collect();
                    let head = services[path[from]].0;
                    p.push(
                        join(&join("services", head), "depends_on"),
                        format!("cycle {}", chain.join(" -> ")),
                        "remove one of these dependencies: services that wait for each other never start",
                    );
                }
                _ => {}
            }
        }
    }
}

fn deps_of(
    services: &[(&str, &str, &BTreeMap<String, Dependency>)],
    by_dns: &BTreeMap<&str, usize>,
    i: usize,
) -> Vec<usize> {
    // Reversed so that popping visits them in name order.
    let mut deps: Vec<usize> = services[i]
        .2
        .keys()
        .filter_map(|d| by_dns.get(d.as_str()).copied())
        .collect();
    deps.reverse();
    deps
}
