//! Volumes in a Compose file: the top-level `volumes:` section, a service's `volumes` (short
//! `SOURCE:TARGET:MODE` and long syntax) and `volumes_from`.
//!
//! Named volumes use the `local` driver only (a directory on the node, or a mount(8) of
//! `driver_opts`); a `type: tmpfs` mount becomes one of the service's `tmpfs` mounts. Bind
//! sources must be absolute here: the CLI's loader (`project`) resolves relative ones against
//! the Compose file's directory before the model leaves the user's machine. No I/O, and never
//! a panic: every problem names its key path and a fix.

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

use super::error::Problems;
use super::keys::unknown_key;
use super::value::{
    expect_bool, expect_mapping, expect_scalar, expect_str, index, join, string_entries, type_error,
};
use super::ComposeApp;
use crate::limits::TmpfsMount;
use crate::volume::{
    is_volume_name, MountSource, NamedVolume, VolumeMount, LOCAL_DRIVER, LOCAL_DRIVER_OPTS,
};

/// A top-level volume as the file defines it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VolumeDef {
    /// `name:`: the volume's name as is, without the project prefix.
    pub(crate) name: Option<String>,
    pub(crate) external: bool,
    pub(crate) driver_opts: BTreeMap<String, String>,
    pub(crate) labels: BTreeMap<String, String>,
}

mod long;
mod shared;

pub(crate) use shared::{
    read_volumes_from, resolve_bind_sources, resolve_volumes_from, VolumesFrom,
};

const PROPAGATIONS: [&str; 6] = [
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// The top-level `volumes:` section.
pub(crate) fn read_volumes(p: &mut Problems, value: &Value) -> BTreeMap<String, VolumeDef> {
    let mut out = BTreeMap::new();
    let Some(map) = mapping_or_null(p, "volumes", value, "volumes: {data: {}}") else {
        return out;
    };
    for (key, v) in string_entries(p, "volumes", map) {
        let path = join("volumes", &key);
        if !is_volume_name(&key) {
            p.push(
                &path,
                format!("{key:?} is not a valid volume name"),
                "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
            );
            continue;
        }
        if let Some(def) = read_volume_def(p, &path, v) {
            out.insert(key, def);
        }
    }
    out
}

fn read_volume_def(p: &mut Problems, path: &str, value: &Value) -> Option<VolumeDef> {
    let before = p.len();
    let mut def = VolumeDef::default();
    let map = mapping_or_null(p, path, value, "data: {driver: local}")?;
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "driver" => {
                if let Some(driver) = expect_str(p, &key_path, v, "driver: local") {
                    if driver != LOCAL_DRIVER {
                        p.push(
                            &key_path,
                            format!("volume driver {driver:?} is not supported: only `local` is"),
                            "remove driver, and mount the storage with driver_opts (type: nfs, o: addr=10.0.0.2,rw, device: \":/export\"), or bind-mount a path the node has mounted",
                        );
                    }
                }
            }
            "driver_opts" => def.driver_opts = read_driver_opts(p, &key_path, v),
            "external" => {
                def.external = match v {
                    // The old form `external: {name: NAME}`.
                    Value::Mapping(m) => {
                        for (k, nv) in string_entries(p, &key_path, m) {
                            match k.as_str() {
                                "name" => def.name = read_name(p, &join(&key_path, &k), nv),
                                other => unknown_key(p, &join(&key_path, other), other, ["name"]),
                            }
                        }
                        true
                    }
                    other => expect_bool(p, &key_path, other, "external: true").unwrap_or(false),
                }
            }
            "name" => def.name = read_name(p, &key_path, v),
            "labels" => def.labels = read_string_map(p, &key_path, v, "com.example.tier: db"),
            _ if key.starts_with("x-") => {}
            other => unknown_key(
                p,
                &key_path,
                other,
                ["driver", "driver_opts", "external", "name", "labels"],
            ),
        }
    }
    if def.external && !def.driver_opts.is_empty() {
        p.push(
            join(path, "driver_opts"),
            "an external volume's driver_opts are set where it was created",
            "remove driver_opts, or external: true to let the deploy create the volume",
        );
    }
    (p.len() == before).then_some(def)
}

fn read_name(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let name = expect_str(p, path, value, "name: shop-data")?;
    if !is_volume_name(name) {
        p.push(
            path,
            format!("{name:?} is not a valid volume name"),
            "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        );
        return None;
    }
    Some(name.to_string())
}

/// `driver_opts` of the `local` driver: `type`, `o` and `device`, given to mount(8).
fn read_driver_opts(p: &mut Problems, path: &str, value: &Value) -> BTreeMap<String, String> {
    let opts = read_string_map(p, path, value, "type: tmpfs");
    let mut out = BTreeMap::new();
    for (k, v) in opts {
        if !LOCAL_DRIVER_OPTS.contains(&k.as_str()) {
            p.push(
                join(path, &k),
                format!("driver option {k:?} is not one the local driver takes"),
                "use type (the filesystem, like nfs or tmpfs), o (its mount options) and device",
            );
        } else if v.contains('\n') || v.contains('\0') {
            p.push(
                join(path, &k),
                "the value has a line break or NUL",
                "write the option on one line",
            );
        } else {
            out.insert(k, v);
        }
    }
    if !out.is_empty() && !out.contains_key("type") {
        p.push(
            join(path, "type"),
            "driver_opts without `type` cannot be mounted",
            "add type: the filesystem (bind, tmpfs, nfs, ext4...), as for mount -t",
        );
    }
    out
}

fn read_string_map(
    p: &mut Problems,
    path: &str,
    value: &Value,
    example: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match value {
        Value::Mapping(map) => {
            for (k, v) in string_entries(p, path, map) {
                let value = match v {
                    Value::Null => String::new(),
                    other => match expect_scalar(p, &join(path, &k), other, example) {
                        Some(s) => s,
                        None => continue,
                    },
                };
                out.insert(k, value);
            }
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(text) = expect_str(p, &index(path, i), item, "- KEY=VALUE") {
                    let (k, v) = text.split_once('=').unwrap_or((text, ""));
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        Value::Null => {}
        other => type_error(p, path, "a mapping", other, example),
    }
    out
}

fn mapping_or_null<'v>(
    p: &mut Problems,
    path: &str,
    value: &'v Value,
    example: &str,
) -> Option<&'v Mapping> {
    static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
    match value {
        Value::Null => Some(EMPTY.get_or_init(Mapping::new)),
        other => expect_mapping(p, path, other, example),
    }
}

/// A service's `volumes`: its mounts, and the `type: tmpfs` ones as tmpfs mounts.
pub(crate) fn read_service_volumes(
    p: &mut Problems,
    path: &str,
    value: &Value,
    defs: &BTreeMap<String, VolumeDef>,
) -> (Vec<VolumeMount>, Vec<TmpfsMount>) {
    let mut mounts: Vec<VolumeMount> = Vec::new();
    let mut tmpfs: Vec<TmpfsMount> = Vec::new();
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => return (mounts, tmpfs),
        other => {
            type_error(
                p,
                path,
                "a list",
                other,
                "volumes: [\"data:/var/lib/data\"]",
            );
            return (mounts, tmpfs);
        }
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let read = match item {
            Value::String(text) => read_short(p, &item_path, text, defs),
            Value::Mapping(map) => long::read_long(p, &item_path, map, defs),
            other => {
                type_error(
                    p,
                    &item_path,
                    "a string or a mapping",
                    other,
                    "- data:/var/lib/data",
                );
                None
            }
        };
        let target = match &read {
            Some(Read::Mount(m)) => m.target.clone(),
            Some(Read::Tmpfs(t)) => t.target.clone(),
            None => continue,
        };
        let taken =
            mounts.iter().any(|m| m.target == target) || tmpfs.iter().any(|t| t.target == target);
        if taken {
            p.push(
                &item_path,
                format!("{target} is mounted twice"),
                "keep one volume per container path",
            );
            continue;
        }
        match read {
            Some(Read::Mount(m)) => mounts.push(m),
            Some(Read::Tmpfs(t)) => tmpfs.push(t),
            None => {}
        }
    }
    (mounts, tmpfs)
}

enum Read {
    Mount(VolumeMount),
    Tmpfs(TmpfsMount),
}

/// `SOURCE:TARGET[:MODE]` or `TARGET` (an anonymous volume).
fn read_short(
    p: &mut Problems,
    path: &str,
    text: &str,
    defs: &BTreeMap<String, VolumeDef>,
) -> Option<Read> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, ""),
        [source, target] => (Some(*source), *target, ""),
        [source, target, mode] => (Some(*source), *target, *mode),
        _ => {
            p.push(
                path,
                format!("{text:?} is not SOURCE:TARGET[:MODE]"),
                "write it like data:/var/lib/data, ./config:/etc/app:ro or /cache",
            );
            return None;
        }
    };
    let target = check_target(p, path, target)?;
    let mut read_only = false;
    let mut nocopy = false;
    let mut propagation = None;
    for opt in mode.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => read_only = true,
            "rw" => read_only = false,
            // SELinux relabelling: the node runs without SELinux, so there is nothing to do.
            "z" | "Z" => {}
            "nocopy" => nocopy = true,
            o if PROPAGATIONS.contains(&o) => propagation = Some(o.to_string()),
            other => {
                p.push(
                    path,
                    format!("{other:?} is not a volume mode"),
                    "use ro, rw, z, Z, nocopy or a propagation (shared, slave, private, rshared, rslave, rprivate), separated by commas",
                );
                return None;
            }
        }
    }
    let source = match source {
        None => MountSource::Anonymous { nocopy },
        Some(s) if is_path(s) => {
            if nocopy {
                p.push(
                    path,
                    "nocopy applies to volumes, not to bind mounts",
                    "remove nocopy",
                );
                return None;
            }
            MountSource::Bind {
                path: check_bind_source(p, path, s)?,
                // Like `docker run -v` and Compose's short syntax.
                create_host_path: true,
            }
        }
        Some(name) => MountSource::Volume(named(p, path, name, defs, nocopy, None)?),
    };
    if propagation.is_some() && !matches!(source, MountSource::Bind { .. }) {
        p.push(
            path,
            "a propagation mode applies to bind mounts only",
            "remove it, or mount a host path",
        );
        return None;
    }
    Some(Read::Mount(VolumeMount {
        source,
        target,
        read_only,
        propagation,
    }))
}

/// A named volume the service mounts, which the top-level section must define.
fn named(
    p: &mut Problems,
    path: &str,
    key: &str,
    defs: &BTreeMap<String, VolumeDef>,
    nocopy: bool,
    subpath: Option<String>,
) -> Option<NamedVolume> {
    // `services.NAME.volumes[i]...`, NAME quoted when it has dots.
    let service = path
        .strip_prefix("services.")
        .and_then(|rest| rest.rsplit_once(".volumes"))
        .map_or("the service", |(name, _)| name);
    let Some(def) = defs.get(key) else {
        p.push(
            path,
            format!("service {service} mounts volume {key:?}, which the file does not define"),
            format!(
                "add it to the top-level volumes (volumes: {{{key}: {{}}}}), or write a path like ./{key} to mount a directory of the node"
            ),
        );
        return None;
    };
    let (name, project_prefix) = match &def.name {
        Some(name) => (name.clone(), false),
        // An external volume is named by its key as is; others get the project's prefix.
        None => (key.to_string(), !def.external),
    };
    Some(NamedVolume {
        name,
        driver_opts: def.driver_opts.clone(),
        labels: def.labels.clone(),
        external: def.external,
        nocopy,
        subpath,
        project_prefix,
    })
}

fn is_path(source: &str) -> bool {
    source.starts_with('/') || source.starts_with('.') || source.starts_with('~')
}

fn check_target(p: &mut Problems, path: &str, target: &str) -> Option<String> {
    if !target.starts_with('/') {
        p.push(
            path,
            format!("{target:?} is not an absolute path in the container"),
            "start the container path with `/`, like /var/lib/data",
        );
        return None;
    }
    if target == "/" {
        p.push(
            path,
            "a volume cannot be mounted over the container's root",
            "mount it on a directory, like /data",
        );
        return None;
    }
    Some(target.trim_end_matches('/').to_string())
}

fn check_bind_source(p: &mut Problems, path: &str, source: &str) -> Option<String> {
    if !source.starts_with('/') {
        p.push(
            path,
            format!("bind source {source:?} is relative, and the server cannot know to what"),
            "deploy with the hivemind CLI, which resolves it against the Compose file's directory, or write an absolute path on the node",
        );
        return None;
    }
    Some(source.to_string())
}

/// Prefixes the project's name to the volumes the file names by their key (Compose's
/// `{project}_{key}`), once the app's name is known (the API decides it from `--app` or
/// `name:`). Volumes with `name:` and external ones keep their name.
pub fn name_volumes(app: &mut ComposeApp, project: &str) {
    for (_, spec) in &mut app.services {
        for m in &mut spec.volumes {
            if let MountSource::Volume(v) = &mut m.source {
                if v.project_prefix {
                    v.name = format!("{project}_{}", v.name);
                    v.project_prefix = false;
                }
            }
        }
    }
}

/// Adds a service's `type: tmpfs` volumes to its `tmpfs` mounts, refusing a path mounted both
/// ways (one mount would hide the other).
pub(crate) fn merge_volume_tmpfs(
    p: &mut Problems,
    path: &str,
    spec: &mut crate::spec::ServiceSpec,
    volume_tmpfs: Vec<TmpfsMount>,
) {
    for t in volume_tmpfs {
        if spec.tmpfs.iter().any(|o| o.target == t.target) {
            p.push(
                join(path, "volumes"),
                format!("{} is both a tmpfs and a volume", t.target),
                "keep one of them",
            );
        } else {
            spec.tmpfs.push(t);
        }
    }
    for m in &spec.volumes {
        if spec.tmpfs.iter().any(|t| t.target == m.target) {
            p.push(
                join(path, "volumes"),
                format!("{} is both a tmpfs and a volume", m.target),
                "keep one of them",
            );
        }
    }
}
