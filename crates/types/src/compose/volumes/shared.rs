//! What needs the other services or the user's files: `volumes_from` (resolved once every
//! service is read) and relative bind sources (made absolute by the CLI's loader).

use serde_yaml_ng::{Mapping, Value};

use super::super::aliases::Entry;
use super::super::error::Problems;
use super::super::value::{expect_str, index, type_error};
use crate::volume::{MountSource, VolumeMount};

/// A `volumes_from` entry: `SERVICE[:ro|rw]` or `container:NAME[:ro|rw]`.
pub(crate) struct VolumesFrom {
    pub(crate) path: String,
    /// `container:NAME` names a `container_name`; otherwise a service as written.
    pub(crate) container: bool,
    pub(crate) name: String,
    pub(crate) read_only: bool,
}

pub(crate) fn read_volumes_from(p: &mut Problems, path: &str, value: &Value) -> Vec<VolumesFrom> {
    let mut out = Vec::new();
    let items = match value {
        Value::Sequence(items) => items,
        Value::Null => return out,
        other => {
            type_error(p, path, "a list", other, "volumes_from: [db]");
            return out;
        }
    };
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(text) = expect_str(p, &item_path, item, "- db:ro") else {
            continue;
        };
        let (container, rest) = match text.strip_prefix("container:") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (name, mode) = rest.split_once(':').unwrap_or((rest, "rw"));
        let read_only = match mode {
            "ro" => true,
            "rw" => false,
            other => {
                p.push(
                    &item_path,
                    format!("{other:?} is not ro or rw"),
                    "write SERVICE, SERVICE:ro or container:NAME:ro",
                );
                continue;
            }
        };
        if name.is_empty() {
            p.push(
                &item_path,
                "names no service",
                "write SERVICE or container:NAME",
            );
            continue;
        }
        out.push(VolumesFrom {
            path: item_path,
            container,
            name: name.to_string(),
            read_only,
        });
    }
    out
}

/// Gives each service with `volumes_from` the named volumes and bind mounts of the services
/// it names (read-only with `:ro`). An anonymous volume cannot be shared: it belongs to one
/// replica, and the other service's replicas are other containers.
pub(crate) fn resolve_volumes_from(p: &mut Problems, entries: &mut [Entry]) {
    // Each service's own mounts, before any is extended, so that the order of services does
    // not matter.
    let own: Vec<Option<Vec<VolumeMount>>> = entries
        .iter()
        .map(|e| {
            let spec = e.read.as_ref()?.spec.as_ref()?;
            Some(spec.volumes.clone())
        })
        .collect();
    for i in 0..entries.len() {
        let Some(read) = entries[i].read.as_ref() else {
            continue;
        };
        if read.volumes_from.is_empty() {
            continue;
        }
        let mut added: Vec<VolumeMount> = Vec::new();
        for from in &read.volumes_from {
            let found = entries.iter().position(|t| {
                if from.container {
                    t.read
                        .as_ref()
                        .and_then(|r| r.container_name.as_ref())
                        .is_some_and(|(_, n)| *n == from.name)
                } else {
                    t.written == from.name
                }
            });
            let Some(t) = found else {
                let what = if from.container {
                    format!("no service has container_name {}", from.name)
                } else {
                    format!("{:?} is not a service of this file", from.name)
                };
                p.push(
                    &from.path,
                    what,
                    "name a service of the file, or container:NAME for a service's container_name",
                );
                continue;
            };
            if t == i {
                p.push(
                    &from.path,
                    "a service cannot take volumes from itself",
                    "name another service",
                );
                continue;
            }
            // A refused service was reported already.
            let Some(mounts) = &own[t] else { continue };
            for m in mounts {
                if matches!(m.source, MountSource::Anonymous { .. }) {
                    p.push(
                        &from.path,
                        format!(
                            "{}'s volume at {} is anonymous, and each replica has its own",
                            entries[t].written, m.target
                        ),
                        "give it a name under the top-level volumes and mount it by name in both services",
                    );
                    continue;
                }
                let mut m = m.clone();
                m.read_only |= from.read_only;
                added.push(m);
            }
        }
        let Some(spec) = entries[i].read.as_mut().and_then(|r| r.spec.as_mut()) else {
            continue;
        };
        for m in added {
            // The service's own mount at a path wins, as in Docker.
            if !spec.volumes.iter().any(|o| o.target == m.target)
                && !spec.tmpfs.iter().any(|o| o.target == m.target)
            {
                spec.volumes.push(m);
            }
        }
    }
}

/// Makes every relative bind source of `services` absolute: `./data` and `../x` against `dir`
/// (the Compose file's directory), `~/x` against `home`. The CLI's loader does this, so that
/// the server, which cannot see the user's files, receives paths on the node.
pub(crate) fn resolve_bind_sources(services: &mut Mapping, dir: &str, home: Option<&str>) {
    for (_, service) in services.iter_mut() {
        let Some(Value::Sequence(items)) = service.get_mut("volumes") else {
            continue;
        };
        for item in items {
            match item {
                Value::String(text) => {
                    let Some((source, rest)) = text.split_once(':') else {
                        continue;
                    };
                    if let Some(abs) = absolute(source, dir, home) {
                        *text = format!("{abs}:{rest}");
                    }
                }
                Value::Mapping(map) => {
                    let is_bind = map.get("type").and_then(Value::as_str) == Some("bind");
                    if let (true, Some(Value::String(source))) = (is_bind, map.get_mut("source")) {
                        if let Some(abs) = absolute(source, dir, home) {
                            *source = abs;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// `source` made absolute, or `None` when it is absolute already or not a path.
fn absolute(source: &str, dir: &str, home: Option<&str>) -> Option<String> {
    let (base, rest) = if source == "~" || source.starts_with("~/") {
        (home?, source.trim_start_matches('~'))
    } else if source.starts_with('.') {
        (dir, source)
    } else {
        return None;
    };
    // Lexically, as Compose does: the path may not exist yet (create_host_path).
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Some(format!("/{}", parts.join("/")))
}
