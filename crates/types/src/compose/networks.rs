//! Compose `networks`: the top-level definitions and a service's attachments, with aliases.
//!
//! Hivemind has one flat routed network; a Compose network is a membership list on it, scoped to
//! its app: replicas of one app see (DNS) and reach (nftables) each other only through a shared
//! network. Network names are mapped to DNS labels like service names (`internal_network` ->
//! `internal-network`, see `names`). Settings that only shape a Docker network (`ipam`,
//! `driver_opts`, `name`, `external`, `attachable`) are accepted with a warning, since the app's
//! network works without them; static addresses are refused as "not supported yet".

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::error::Problems;
use super::keys::unknown_key;
use super::names::{alias_fix, is_alias, read_name, Kind, Mapped};
use super::value::{expect_mapping, expect_str, index, join, string_entries, type_error};
use super::warnings::Unhonoured;
use crate::spec::{NetworkAttachment, DEFAULT_NETWORK};

/// What Hivemind keeps of a top-level network definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetworkDef {
    /// The DNS label the network is known by (`internal_network` -> `internal-network`).
    pub(crate) dns: String,
    /// `internal: true`: members get no route outside the cluster.
    pub(crate) internal: bool,
    /// The definition was refused (already reported): services that list it get no second
    /// error for it.
    pub(crate) refused: bool,
}

const NETWORK_KEYS: &[&str] = &[
    "driver",
    "internal",
    "labels",
    "name",
    "external",
    "ipam",
    "driver_opts",
    "attachable",
    "enable_ipv4",
];
/// Keys of a network definition that need a network of its own; with their advice.
const NETWORK_KEYS_NOT_YET: &[(&str, &str)] = &[("enable_ipv6", "app networks are IPv4 only")];
const ATTACHMENT_KEYS: &[&str] = &["aliases"];
const ATTACHMENT_KEYS_NOT_YET: &[&str] = &[
    "driver_opts",
    "gw_priority",
    "interface_name",
    "ipv4_address",
    "ipv6_address",
    "link_local_ips",
    "mac_address",
    "priority",
];

/// Reads the top-level `networks:` map. `default` always exists, defined or not.
pub(crate) fn read_networks(p: &mut Problems, value: &Value) -> BTreeMap<String, NetworkDef> {
    let default = NetworkDef {
        dns: DEFAULT_NETWORK.to_string(),
        ..NetworkDef::default()
    };
    let mut out = BTreeMap::from([(DEFAULT_NETWORK.to_string(), default)]);
    let map = match value {
        Value::Null => return out,
        other => match expect_mapping(p, "networks", other, "networks: {back: {}}") {
            Some(map) => map,
            None => return out,
        },
    };
    let mut mapped = Mapped::default();
    mapped.claim(
        p,
        "networks",
        Kind::Network,
        DEFAULT_NETWORK,
        DEFAULT_NETWORK,
    );
    for (name, v) in string_entries(p, "networks", map) {
        let path = join("networks", &name);
        let dns = read_name(p, &path, Kind::Network, &name, 63).filter(|dns| {
            name == DEFAULT_NETWORK || mapped.claim(p, &path, Kind::Network, &name, dns)
        });
        let def = dns.and_then(|dns| read_network(p, &path, v, dns));
        out.insert(
            name,
            def.unwrap_or(NetworkDef {
                refused: true,
                ..NetworkDef::default()
            }),
        );
    }
    out
}

fn read_network(p: &mut Problems, path: &str, value: &Value, dns: String) -> Option<NetworkDef> {
    let before = p.len();
    let mut def = NetworkDef {
        dns,
        ..NetworkDef::default()
    };
    let map = match value {
        Value::Null => return Some(def),
        other => expect_mapping(p, path, other, "back: {internal: true}")?,
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "driver" => {
                let Some(driver) = expect_str(p, &key_path, v, "driver: bridge") else {
                    continue;
                };
                // Both mean "the app's own network"; on Hivemind that is a membership list on
                // the cluster network, whatever the node count.
                if driver != "bridge" && driver != "overlay" {
                    p.push(
                        &key_path,
                        format!("network driver {driver:?} is not supported"),
                        "use driver: bridge or overlay (both mean the app's network on Hivemind), or remove driver",
                    );
                }
            }
            "internal" => def.internal = read_bool(p, &key_path, v, "internal: true")?,
            "labels" => {
                check_labels(p, &key_path, v);
                p.note(&key_path, Unhonoured::NetworkLabels);
            }
            "name" => {
                if expect_str(p, &key_path, v, "name: shop-back").is_some() {
                    p.note(&key_path, Unhonoured::NetworkName);
                }
            }
            "external" => read_external(p, &key_path, v),
            "ipam" | "driver_opts" => {
                if expect_mapping(p, &key_path, v, "ipam: {config: [{subnet: 10.5.0.0/16}]}")
                    .is_some_and(|m| !m.is_empty())
                {
                    p.note(&key_path, Unhonoured::NetworkAddressing);
                }
            }
            // Both ask for what every app network already is: reachable by the app's
            // services only (`attachable` is about containers outside Compose), IPv4.
            "attachable" | "enable_ipv4" => {
                read_bool(p, &key_path, v, "attachable: true");
            }
            _ if key.starts_with("x-") => {}
            other => {
                if let Some((_, advice)) = NETWORK_KEYS_NOT_YET.iter().find(|(k, _)| *k == other) {
                    // `false` asks for nothing Hivemind lacks, so files that spell out the
                    // default keep working.
                    if matches!(v, Value::Bool(false)) {
                        continue;
                    }
                    p.push(
                        &key_path,
                        format!("`{key_path}` is not supported yet"),
                        format!("remove it; {advice}"),
                    );
                } else {
                    let known = NETWORK_KEYS
                        .iter()
                        .copied()
                        .chain(NETWORK_KEYS_NOT_YET.iter().map(|(k, _)| *k));
                    unknown_key(p, &key_path, other, known);
                }
            }
        }
    }
    (p.len() == before).then_some(def)
}

/// `external: true` (or the obsolete `external: {name: ...}`): a network made outside the
/// file. Hivemind's networks belong to one app, so the app gets a network of its own under that
/// name, with a warning: services of other apps are not on it.
fn read_external(p: &mut Problems, path: &str, value: &Value) {
    let external = match value {
        Value::Mapping(map) => {
            for (key, v) in string_entries(p, path, map) {
                let key_path = join(path, &key);
                match key.as_str() {
                    "name" => {
                        expect_str(p, &key_path, v, "name: proxy");
                    }
                    other => unknown_key(p, &key_path, other, ["name"]),
                }
            }
            true
        }
        other => read_bool(p, path, other, "external: true").unwrap_or(false),
    };
    if external {
        p.note(path, Unhonoured::ExternalNetwork);
    }
}

fn read_bool(p: &mut Problems, path: &str, value: &Value, example: &str) -> Option<bool> {
    super::value::expect_bool(p, path, value, example)
}

/// Network labels are kept by nobody yet; check their shape so a later release can keep them.
fn check_labels(p: &mut Problems, path: &str, value: &Value) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                expect_str(p, &index(path, i), item, "- com.example.team=shop");
            }
        }
        Value::Mapping(map) => {
            string_entries(p, path, map);
        }
        Value::Null => {}
        other => type_error(
            p,
            path,
            "a list or a mapping",
            other,
            "labels: {com.example.team: shop}",
        ),
    }
}

/// Reads a service's `networks:`, a list of names or a map name → `{aliases: [...]}`. The
/// result is normalized: only `default` without aliases or `internal` is the empty map.
pub(crate) fn read_service_networks(
    p: &mut Problems,
    path: &str,
    value: &Value,
    defined: &BTreeMap<String, NetworkDef>,
) -> BTreeMap<String, NetworkAttachment> {
    let mut out = BTreeMap::new();
    let mut attach = |p: &mut Problems, item_path: &str, name: &str, aliases: Vec<String>| {
        let Some(def) = defined.get(name) else {
            let known: Vec<&str> = defined
                .iter()
                .filter(|(_, d)| !d.refused)
                .map(|(k, _)| k.as_str())
                .collect();
            p.push(
                item_path,
                format!("network {name:?} is not defined"),
                format!(
                    "define it under the top-level networks: (like networks: {{{name}: {{}}}}), or use one of: {}",
                    known.join(", ")
                ),
            );
            return;
        };
        // Its definition was refused, which is the one error for this root cause.
        if def.refused {
            return;
        }
        if out.contains_key(&def.dns) {
            p.push(
                item_path,
                format!("network {name:?} is listed twice"),
                "list each network once",
            );
            return;
        }
        out.insert(
            def.dns.clone(),
            NetworkAttachment {
                aliases,
                internal: def.internal,
            },
        );
    };
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = index(path, i);
                if let Some(name) = expect_str(p, &item_path, item, "networks: [front, back]") {
                    attach(p, &item_path, name, Vec::new());
                }
            }
        }
        Value::Mapping(map) => {
            for (name, v) in string_entries(p, path, map) {
                let item_path = join(path, &name);
                if let Some(aliases) = read_attachment(p, &item_path, v) {
                    attach(p, &item_path, &name, aliases);
                }
            }
        }
        Value::Null => {}
        other => type_error(
            p,
            path,
            "a list or a mapping",
            other,
            "networks: [front, back]",
        ),
    }
    if out.is_empty() {
        // No networks listed (or only bad ones, already reported): on `default`, as Compose.
        if let Some(def) = defined.get(DEFAULT_NETWORK).filter(|d| d.internal) {
            out.insert(
                DEFAULT_NETWORK.to_string(),
                NetworkAttachment {
                    aliases: Vec::new(),
                    internal: def.internal,
                },
            );
        }
    }
    if out.len() == 1 && out.get(DEFAULT_NETWORK) == Some(&NetworkAttachment::default()) {
        out.clear();
    }
    out
}

/// One entry of the map form: `null` or `{aliases: [...]}`; returns the aliases.
fn read_attachment(p: &mut Problems, path: &str, value: &Value) -> Option<Vec<String>> {
    let map = match value {
        Value::Null => return Some(Vec::new()),
        other => expect_mapping(p, path, other, "back: {aliases: [db]}")?,
    };
    let before = p.len();
    let mut aliases = Vec::new();
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "aliases" => aliases = read_aliases(p, &key_path, v),
            _ if key.starts_with("x-") => {}
            other if ATTACHMENT_KEYS_NOT_YET.contains(&other) => p.push(
                &key_path,
                format!("`{key_path}` is not supported yet"),
                "remove it; replica addresses come from the node's subnet and other services reach the service by name",
            ),
            other => unknown_key(
                p,
                &key_path,
                other,
                ATTACHMENT_KEYS
                    .iter()
                    .chain(ATTACHMENT_KEYS_NOT_YET)
                    .copied(),
            ),
        }
    }
    (p.len() == before).then_some(aliases)
}

fn read_aliases(p: &mut Problems, path: &str, value: &Value) -> Vec<String> {
    let Value::Sequence(items) = value else {
        if !matches!(value, Value::Null) {
            type_error(p, path, "a list", value, "aliases: [db, database]");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(alias) = expect_str(p, &item_path, item, "- db") else {
            continue;
        };
        // DNS is case-insensitive: keep one spelling.
        let alias = alias.to_ascii_lowercase();
        if is_alias(&alias) {
            if !out.contains(&alias) {
                out.push(alias);
            }
        } else {
            p.push(
                &item_path,
                format!("{alias:?} is not a valid alias"),
                alias_fix(),
            );
        }
    }
    out
}
