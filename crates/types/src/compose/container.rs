//! Service keys that shape the container itself rather than its scheduling: `read_only`,
//! `cap_add`/`cap_drop`, `tmpfs`, `ulimits`, `init`, `hostname` and `extra_hosts`.
//!
//! Each is validated into the form the agent maps onto the OCI spec without further checks:
//! capabilities as `CAP_` names (or `ALL`), tmpfs options the kernel knows, ulimits by Docker's
//! names with soft ≤ hard, hostnames as DNS names and extra hosts with parsed addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_yaml_ng::Value;

use super::error::Problems;
use super::value::{describe, expect_str, index, join, string_entries, type_error};
use crate::limits::{
    ExtraHost, TmpfsMount, Ulimit, ALL_CAPABILITIES, KNOWN_CAPABILITIES, ULIMIT_NAMES,
};

/// `read_only`, `init`: a boolean (or its text after interpolation).
pub(crate) fn read_flag(p: &mut Problems, path: &str, value: &Value, example: &str) -> bool {
    super::value::expect_bool(p, path, value, example).unwrap_or(false)
}

/// A string or a list of strings, each with its path.
fn string_list<'v>(
    p: &mut Problems,
    path: &str,
    value: &'v Value,
    example: &str,
) -> Vec<(String, &'v str)> {
    match value {
        Value::String(s) => vec![(path.to_string(), s.as_str())],
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = index(path, i);
                expect_str(p, &item_path, item, example).map(|s| (item_path, s))
            })
            .collect(),
        Value::Null => Vec::new(),
        other => {
            type_error(p, path, "a list", other, example);
            Vec::new()
        }
    }
}

/// `cap_add` / `cap_drop`: names with or without `CAP_`, any case, or `ALL`; repeats dropped.
pub(crate) fn read_capabilities(p: &mut Problems, path: &str, value: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (item_path, name) in string_list(p, path, value, "cap_add: [NET_ADMIN]") {
        let upper = name.trim().to_ascii_uppercase();
        let cap = if upper == ALL_CAPABILITIES || upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        if cap != ALL_CAPABILITIES && !KNOWN_CAPABILITIES.contains(&cap.as_str()) {
            p.push(
                &item_path,
                format!("unknown capability {name:?}"),
                "use a name from capabilities(7) like NET_ADMIN or CAP_SYS_TIME, or ALL",
            );
            continue;
        }
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    out
}

/// `tmpfs`: `"/run"` or `"/tmp:size=64m,mode=1777"`, one or a list.
pub(crate) fn read_tmpfs(p: &mut Problems, path: &str, value: &Value) -> Vec<TmpfsMount> {
    let mut out: Vec<TmpfsMount> = Vec::new();
    for (item_path, text) in string_list(p, path, value, "tmpfs: [\"/tmp:size=64m\"]") {
        let (target, options) = text.split_once(':').unwrap_or((text, ""));
        if !target.starts_with('/') {
            p.push(
                &item_path,
                format!("{target:?} is not an absolute path"),
                "write the path inside the container, like /tmp or /run:size=16m",
            );
            continue;
        }
        if out.iter().any(|m| m.target == target) {
            p.push(
                &item_path,
                format!("{target} is listed twice"),
                "keep one entry per path",
            );
            continue;
        }
        let mut opts = Vec::new();
        for opt in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match check_tmpfs_option(opt) {
                Ok(()) => opts.push(opt.to_string()),
                Err(why) => p.push(
                    &item_path,
                    format!("tmpfs option {opt:?} {why}"),
                    "use size=64m, mode=1777, uid=N, gid=N, nr_inodes=N, ro, rw, exec, noexec, suid, nosuid, dev or nodev",
                ),
            }
        }
        out.push(TmpfsMount {
            target: target.to_string(),
            options: opts,
        });
    }
    out
}

fn check_tmpfs_option(opt: &str) -> Result<(), &'static str> {
    const FLAGS: &[&str] = &[
        "ro", "rw", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "atime", "noatime",
    ];
    if FLAGS.contains(&opt) {
        return Ok(());
    }
    let Some((name, value)) = opt.split_once('=') else {
        return Err("is unknown");
    };
    let ok = match name {
        "size" => {
            value.ends_with('%') && value[..value.len() - 1].parse::<u8>().is_ok()
                || super::resources::parse_size(value).is_some_and(|b| b > 0)
        }
        "mode" => !value.is_empty() && value.len() <= 4 && value.chars().all(|c| c.is_digit(8)),
        "uid" | "gid" => value.parse::<u32>().is_ok(),
        "nr_inodes" | "nr_blocks" => super::resources::parse_size(value).is_some(),
        _ => return Err("is unknown"),
    };
    if ok {
        Ok(())
    } else {
        Err("has an invalid value")
    }
}

/// `ulimits`: `{nofile: {soft: 1024, hard: 2048}, nproc: 512}`.
pub(crate) fn read_ulimits(
    p: &mut Problems,
    path: &str,
    value: &Value,
) -> BTreeMap<String, Ulimit> {
    let mut out = BTreeMap::new();
    let Value::Mapping(map) = value else {
        if !value.is_null() {
            type_error(p, path, "a mapping", value, "ulimits: {nofile: 65536}");
        }
        return out;
    };
    for (name, v) in string_entries(p, path, map) {
        let key_path = join(path, &name);
        if !ULIMIT_NAMES.contains(&name.as_str()) {
            p.push(
                &key_path,
                format!("unknown ulimit {name:?}"),
                format!("use one of {}", ULIMIT_NAMES.join(", ")),
            );
            continue;
        }
        let limit = match v {
            Value::Mapping(m) => {
                let mut soft = None;
                let mut hard = None;
                for (k, lv) in string_entries(p, &key_path, m) {
                    let limit_path = join(&key_path, &k);
                    match k.as_str() {
                        "soft" => soft = read_limit_value(p, &limit_path, lv),
                        "hard" => hard = read_limit_value(p, &limit_path, lv),
                        other => super::keys::unknown_key(p, &limit_path, other, ["soft", "hard"]),
                    }
                }
                match (soft, hard) {
                    (Some(soft), Some(hard)) => Ulimit { soft, hard },
                    _ => {
                        p.push(
                            &key_path,
                            "a ulimit mapping needs both soft and hard",
                            format!("write it like `{name}: {{soft: 1024, hard: 2048}}`, or a single number for both"),
                        );
                        continue;
                    }
                }
            }
            other => match read_limit_value(p, &key_path, other) {
                Some(n) => Ulimit { soft: n, hard: n },
                None => continue,
            },
        };
        if limit.soft > limit.hard {
            p.push(
                &key_path,
                format!(
                    "the soft limit {} is above the hard limit {}",
                    limit.soft, limit.hard
                ),
                "make soft at most hard",
            );
            continue;
        }
        out.insert(name, limit);
    }
    out
}

/// A limit value: a whole number, or -1 / `unlimited` for no limit (`RLIM_INFINITY`).
fn read_limit_value(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let parsed = match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| -2)),
        Value::String(s) if s.trim() == "unlimited" => Some(-1),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match parsed {
        Some(-1) => Some(u64::MAX),
        Some(n) if n >= 0 => Some(n as u64),
        _ => {
            p.push(
                path,
                format!("{} is not a ulimit value", describe(value)),
                "use a whole number, or -1 for unlimited",
            );
            None
        }
    }
}

/// `hostname`: a DNS name of labels, at most 63 characters like Linux's own limit (64 with NUL).
pub(crate) fn read_hostname(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let name = expect_str(p, path, value, "hostname: web")?.trim();
    if name.is_empty() || name.len() > 63 || !name.split('.').all(is_host_label) {
        p.push(
            path,
            format!("{name:?} is not a valid hostname"),
            "use lowercase letters, digits, `-` and `.`, at most 63 characters, like web-1",
        );
        return None;
    }
    Some(name.to_string())
}

/// A hostname label (RFC 1123): letters, digits and `-`, not at either end.
fn is_host_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `extra_hosts`: `["db:10.0.0.5", "v6=::1"]` or `{db: 10.0.0.5}`.
pub(crate) fn read_extra_hosts(p: &mut Problems, path: &str, value: &Value) -> Vec<ExtraHost> {
    let mut entries: Vec<(String, String, String)> = Vec::new();
    match value {
        Value::Mapping(map) => {
            for (name, v) in string_entries(p, path, map) {
                let key_path = join(path, &name);
                match v {
                    Value::String(ip) => entries.push((key_path, name, ip.clone())),
                    // A list of addresses for one name (Compose allows it).
                    Value::Sequence(ips) => {
                        for (i, ip) in ips.iter().enumerate() {
                            if let Some(ip) = expect_str(p, &index(&key_path, i), ip, "- 10.0.0.5")
                            {
                                entries.push((index(&key_path, i), name.clone(), ip.to_string()));
                            }
                        }
                    }
                    other => type_error(p, &key_path, "an address", other, "db: 10.0.0.5"),
                }
            }
        }
        _ => {
            for (item_path, text) in string_list(p, path, value, "extra_hosts: [\"db:10.0.0.5\"]") {
                // `=` first: an IPv6 address contains `:`.
                let split = text.split_once('=').or_else(|| text.split_once(':'));
                match split {
                    Some((name, ip)) => entries.push((item_path, name.to_string(), ip.to_string())),
                    None => p.push(
                        &item_path,
                        format!("{text:?} is not NAME:ADDRESS"),
                        "write it like db:10.0.0.5 or v6host=::1",
                    ),
                }
            }
        }
    }
    let mut out = Vec::new();
    for (item_path, name, ip) in entries {
        let name = name.trim();
        let ip = ip.trim();
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            p.push(
                &item_path,
                format!("{name:?} is not a host name"),
                "write it like db:10.0.0.5",
            );
            continue;
        }
        if ip == "host-gateway" {
            p.push(
                &item_path,
                "host-gateway is not supported yet",
                "write the node's address instead",
            );
            continue;
        }
        let bare = ip.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(addr) => out.push(ExtraHost {
                name: name.to_string(),
                ip: addr.to_string(),
            }),
            Err(_) => p.push(
                &item_path,
                format!("{ip:?} is not an IP address"),
                "write it like db:10.0.0.5 or v6host=::1",
            ),
        }
    }
    out
}
