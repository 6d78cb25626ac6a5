//! The long syntax of a service's volume: `{type, source, target, read_only, bind, volume,
//! tmpfs}`.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::super::error::Problems;
use super::super::keys::unknown_key;
use super::super::value::{expect_bool, expect_str, join, string_entries};
use super::{
    check_bind_source, check_target, mapping_or_null, named, Read, VolumeDef, PROPAGATIONS,
};
use crate::limits::TmpfsMount;
use crate::volume::{MountSource, VolumeMount};

/// The long syntax: `{type, source, target, read_only, bind, volume, tmpfs}`.
pub(super) fn read_long(
    p: &mut Problems,
    path: &str,
    map: &Mapping,
    defs: &BTreeMap<String, VolumeDef>,
) -> Option<Read> {
    let before = p.len();
    let mut typ = None;
    let mut source = None;
    let mut target = None;
    let mut read_only = false;
    let mut propagation = None;
    let mut create_host_path = false;
    let mut nocopy = false;
    let mut subpath = None;
    let mut tmpfs_opts = Vec::new();
    let mut sections: Vec<&str> = Vec::new();
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "type" => typ = expect_str(p, &key_path, v, "type: volume").map(String::from),
            "source" => source = expect_str(p, &key_path, v, "source: data").map(String::from),
            "target" => target = expect_str(p, &key_path, v, "target: /data").map(String::from),
            "read_only" => {
                read_only = expect_bool(p, &key_path, v, "read_only: true").unwrap_or(false)
            }
            // Docker Desktop's file sharing hint; meaningless on Linux, as in Docker.
            "consistency" => {
                expect_str(p, &key_path, v, "consistency: cached");
            }
            "bind" => {
                sections.push("bind");
                for (k, bv) in sub_entries(p, &key_path, v) {
                    let k_path = join(&key_path, &k);
                    match k.as_str() {
                        "propagation" => {
                            let Some(mode) = expect_str(p, &k_path, bv, "propagation: rslave")
                            else {
                                continue;
                            };
                            if PROPAGATIONS.contains(&mode) {
                                propagation = Some(mode.to_string());
                            } else {
                                p.push(
                                    &k_path,
                                    format!("{mode:?} is not a propagation mode"),
                                    "use shared, slave, private, rshared, rslave or rprivate",
                                );
                            }
                        }
                        "create_host_path" => {
                            create_host_path = expect_bool(p, &k_path, bv, "create_host_path: true")
                                .unwrap_or(false)
                        }
                        "selinux" => match expect_str(p, &k_path, bv, "selinux: z") {
                            Some("z" | "Z") | None => {}
                            Some(other) => p.push(
                                &k_path,
                                format!("{other:?} is not an SELinux mode"),
                                "use z or Z (both accepted; the node runs without SELinux)",
                            ),
                        },
                        other => unknown_key(
                            p,
                            &k_path,
                            other,
                            ["propagation", "create_host_path", "selinux"],
                        ),
                    }
                }
            }
            "volume" => {
                sections.push("volume");
                for (k, vv) in sub_entries(p, &key_path, v) {
                    let k_path = join(&key_path, &k);
                    match k.as_str() {
                        "nocopy" => {
                            nocopy = expect_bool(p, &k_path, vv, "nocopy: true").unwrap_or(false)
                        }
                        "subpath" => subpath = read_subpath(p, &k_path, vv),
                        other => unknown_key(p, &k_path, other, ["nocopy", "subpath"]),
                    }
                }
            }
            "tmpfs" => {
                sections.push("tmpfs");
                for (k, tv) in sub_entries(p, &key_path, v) {
                    let k_path = join(&key_path, &k);
                    match k.as_str() {
                        "size" => {
                            if let Some(size) = read_tmpfs_size(p, &k_path, tv) {
                                tmpfs_opts.push(format!("size={size}"));
                            }
                        }
                        "mode" => {
                            if let Some(mode) = read_tmpfs_mode(p, &k_path, tv) {
                                tmpfs_opts.push(format!("mode={mode}"));
                            }
                        }
                        other => unknown_key(p, &k_path, other, ["size", "mode"]),
                    }
                }
            }
            other => unknown_key(
                p,
                &key_path,
                other,
                [
                    "type",
                    "source",
                    "target",
                    "read_only",
                    "bind",
                    "volume",
                    "tmpfs",
                    "consistency",
                ],
            ),
        }
    }
    let Some(target) = target else {
        p.push(
            join(path, "target"),
            "a volume needs `target`, the path inside the container",
            "add target: /data",
        );
        return None;
    };
    let target = check_target(p, &join(path, "target"), &target)?;
    let Some(typ) = typ else {
        p.push(
            join(path, "type"),
            "a volume in the long syntax needs `type`",
            "add type: volume, bind or tmpfs",
        );
        return None;
    };
    let type_path = join(path, "type");
    for section in &sections {
        if *section != typ {
            p.push(
                join(path, section),
                format!("`{section}` options do not apply to a mount of type {typ}"),
                format!("remove `{section}`, or set type: {section}"),
            );
        }
    }
    if p.len() != before {
        return None;
    }
    let source_path = join(path, "source");
    let mount = |source| {
        Some(Read::Mount(VolumeMount {
            source,
            target: target.clone(),
            read_only,
            propagation: propagation.clone(),
        }))
    };
    match typ.as_str() {
        "volume" => match source.as_deref().filter(|s| !s.is_empty()) {
            None if subpath.is_some() => {
                p.push(
                    &source_path,
                    "volume.subpath needs a named volume",
                    "add source: the volume's name",
                );
                None
            }
            None => mount(MountSource::Anonymous { nocopy }),
            Some(name) => {
                let v = named(p, &source_path, name, defs, nocopy, subpath)?;
                mount(MountSource::Volume(v))
            }
        },
        "bind" => {
            let Some(source) = source else {
                p.push(
                    &source_path,
                    "a bind mount needs `source`, the path on the node",
                    "add source: /srv/data (or ./data, next to the Compose file)",
                );
                return None;
            };
            mount(MountSource::Bind {
                path: check_bind_source(p, &source_path, &source)?,
                create_host_path,
            })
        }
        "tmpfs" => {
            if source.is_some_and(|s| !s.is_empty()) {
                p.push(&source_path, "a tmpfs has no source", "remove source");
                return None;
            }
            if read_only {
                tmpfs_opts.push("ro".to_string());
            }
            Some(Read::Tmpfs(TmpfsMount {
                target,
                options: tmpfs_opts,
            }))
        }
        "image" | "npipe" | "cluster" => {
            p.push(
                &type_path,
                format!("volume type {typ} is not supported"),
                "use type: volume, bind or tmpfs (npipe is for Windows; copy an image's files with a named volume's copy-up)",
            );
            None
        }
        other => {
            p.push(
                &type_path,
                format!("{other:?} is not a volume type"),
                "use type: volume, bind or tmpfs",
            );
            None
        }
    }
}

fn sub_entries<'v>(p: &mut Problems, path: &str, value: &'v Value) -> Vec<(String, &'v Value)> {
    match mapping_or_null(p, path, value, "{nocopy: true}") {
        Some(map) => string_entries(p, path, map),
        None => Vec::new(),
    }
}

fn read_subpath(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let sub = expect_str(p, path, value, "subpath: app/data")?;
    let escapes = sub.starts_with('/')
        || sub.is_empty()
        || sub.split('/').any(|c| c == "..")
        || sub.contains('\0');
    if escapes {
        p.push(
            path,
            format!("{sub:?} is not a relative path inside the volume"),
            "write a relative path without `..`, like app/data",
        );
        return None;
    }
    Some(sub.trim_end_matches('/').to_string())
}

fn read_tmpfs_size(p: &mut Problems, path: &str, value: &Value) -> Option<u64> {
    let bytes = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => super::super::resources::parse_size(s.trim()),
        _ => None,
    };
    match bytes {
        Some(b) if b > 0 => Some(b),
        _ => {
            p.push(
                path,
                "expected a size in bytes, or like 64m",
                "write size: 64m",
            );
            None
        }
    }
}

fn read_tmpfs_mode(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    // YAML reads `1777` as the number one thousand seven hundred...: its digits are the octal
    // mode as Compose means it.
    let text = match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().trim_start_matches("0o").to_string(),
        _ => String::new(),
    };
    if !text.is_empty() && text.len() <= 4 && text.chars().all(|c| c.is_digit(8)) {
        Some(text)
    } else {
        p.push(path, "expected an octal mode like 1777", "write mode: 1777");
        None
    }
}
