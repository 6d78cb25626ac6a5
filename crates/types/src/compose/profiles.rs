//! `profiles`: a service that lists profiles is deployed only when one of them is active
//! (`--profile`, `COMPOSE_PROFILES`; `*` activates all). Services without `profiles` always
//! are. A deployed service that needs a disabled one (`depends_on`, `links`, `volumes_from`,
//! `network_mode: service:NAME`) is an error naming both, as in Docker Compose, rather than
//! silently deploying half an app.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;
use super::value::{index, join, type_error};

/// Removes the disabled services and every `profiles` key.
pub(crate) fn apply_profiles(p: &mut Problems, services: &mut Mapping, active: &[String]) {
    let all = active.iter().any(|a| a == "*");
    // Disabled service name -> its profiles, for the error message.
    let mut disabled: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, service) in services.iter_mut() {
        let Some(name) = name.as_str() else { continue };
        let Value::Mapping(fields) = service else {
            continue;
        };
        let Some(listed) = fields.shift_remove("profiles") else {
            continue;
        };
        let path = join(&join("services", name), "profiles");
        let profiles = profile_names(p, &path, &listed);
        if !all && !profiles.iter().any(|pr| active.contains(pr)) {
            disabled.insert(name.to_string(), profiles);
        }
    }
    if disabled.is_empty() {
        return;
    }
    services.retain(|name, _| name.as_str().is_none_or(|n| !disabled.contains_key(n)));
    for (name, service) in services.iter() {
        let Some(name) = name.as_str() else { continue };
        for (key, needed) in references(service) {
            let Some(profiles) = disabled.get(&needed) else {
                continue;
            };
            p.push(
                join(&join("services", name), key),
                format!(
                    "service {name} needs service {needed}, which is disabled: it has the \
                     profiles [{}] and none of them is active",
                    profiles.join(", ")
                ),
                format!(
                    "activate one with --profile {} (or COMPOSE_PROFILES), or give {name} the \
                     same profiles",
                    profiles.first().map_or("NAME", String::as_str)
                ),
            );
        }
    }
}

fn profile_names(p: &mut Problems, path: &str, value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => type_error(p, &index(path, i), "a profile name", other, "- debug"),
                }
            }
            out
        }
        Value::String(s) => vec![s.clone()],
        other => {
            type_error(
                p,
                path,
                "a list of profile names",
                other,
                "profiles: [debug]",
            );
            Vec::new()
        }
    }
}

/// The services a service refers to, with the key that does.
fn references(service: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let Value::Mapping(fields) = service else {
        return out;
    };
    match fields.get("depends_on") {
        Some(Value::Sequence(items)) => out.extend(
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|n| ("depends_on", n.to_string())),
        ),
        Some(Value::Mapping(m)) => {
            for (name, settings) in m {
                let Some(name) = name.as_str() else { continue };
                // `required: false` tolerates a missing dependency.
                let optional = settings.get("required").and_then(Value::as_bool) == Some(false);
                if !optional {
                    out.push(("depends_on", name.to_string()));
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Sequence(items)) = fields.get("links") {
        for link in items.iter().filter_map(Value::as_str) {
            let name = link.split_once(':').map_or(link, |(n, _)| n);
            out.push(("links", name.to_string()));
        }
    }
    if let Some(Value::Sequence(items)) = fields.get("volumes_from") {
        for from in items.iter().filter_map(Value::as_str) {
            if from.starts_with("container:") {
                continue;
            }
            let name = from.split_once(':').map_or(from, |(n, _)| n);
            out.push(("volumes_from", name.to_string()));
        }
    }
    if let Some(mode) = fields.get("network_mode").and_then(Value::as_str) {
        if let Some(name) = mode.strip_prefix("service:") {
            out.push(("network_mode", name.to_string()));
        }
    }
    out
}
