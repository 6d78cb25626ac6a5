//! Volumes: the stored `Volume` object (a named volume and the node it lives on) and the
//! mounts a service asks for (Compose `volumes`, `volumes_from`), in their normalized form.
//!
//! A mount carries everything the node needs to prepare it (the volume's store name, its
//! `driver_opts`, whether to copy the image's content in), so the agent works from the
//! replica's copy of the spec alone. The `Volume` object is the control plane's record: it
//! outlives replicas and redeploys, and its `node` is where the data is, so that the scheduler
//! can pin replicas to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::object::Meta;

/// The only volume driver: a directory under the node's data dir, or a mount(8) of the
/// `driver_opts` (`type`, `o`, `device`) on it, as Docker's `local` driver does.
pub const LOCAL_DRIVER: &str = "local";

/// The `driver_opts` keys the `local` driver takes (Docker passes them to mount(8)).
pub const LOCAL_DRIVER_OPTS: [&str; 3] = ["type", "o", "device"];

/// A named volume. Key: `{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub namespace: String,
    /// The app whose deploy created it; `None` for `hivemind volume create`. `rm --volumes APP`
    /// removes the volumes of that app only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The volume's name: Compose's `{project}_{key}`, or the file's `name:`.
    pub name: String,
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The node the volume's data lives on.
    pub node: String,
    /// Made outside the app (`external: true` refers to it); an app's removal never removes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// `hivemind rm --volumes` asked for it to go: the control plane deletes it once no
    /// replica uses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
    #[serde(default)]
    pub meta: Meta,
}

impl Volume {
    pub fn key(&self) -> String {
        volume_key(&self.namespace, &self.name)
    }
}

/// The store key of volume `name` in `namespace`.
pub fn volume_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Whether `name` is a valid volume name (Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`), short enough
/// to be a directory name with room to spare.
pub fn is_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 200
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One volume or bind mount of a service's containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub source: MountSource,
    /// Absolute path inside the container.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Bind propagation (`rprivate` when unset, as Docker): `shared`, `rshared`, `slave`,
    /// `rslave`, `private`, `rprivate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// A named volume.
    Volume(NamedVolume),
    /// A volume of the replica's own, removed with the replica (`- /data`).
    Anonymous {
        /// Do not copy the image's content in (`volume.nocopy`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        nocopy: bool,
    },
    /// A host path on the node.
    Bind {
        /// Absolute (the CLI resolves paths relative to the Compose file).
        path: String,
        /// Create the path as a directory when it is missing (Docker's default for the short
        /// syntax); otherwise a missing path fails the replica.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        create_host_path: bool,
    },
}

/// A named volume as a mount refers to it, with what the control plane needs to create it and
/// the node needs to prepare it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedVolume {
    /// The store name (`shop_data`). The reader leaves the Compose key here until the app's
    /// name is known (`compose::name_volumes`).
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `external: true`: it must exist already; the deploy does not create it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Do not copy the image's content into a new, empty volume (`volume.nocopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
    /// Mount this directory of the volume instead of its root (`volume.subpath`), relative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
    /// Set by the reader when `name` is still the Compose key and the project's name must
    /// prefix it (`compose::name_volumes` does, once the app's name is known); never stored.
    #[serde(skip)]
    pub project_prefix: bool,
}

impl VolumeMount {
    /// The named volume mounted, if it is one.
    pub fn named(&self) -> Option<&NamedVolume> {
        match &self.source {
            MountSource::Volume(v) => Some(v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_follow_docker() {
        for ok in ["data", "shop_data", "a.b-c", "0x"] {
            assert!(is_volume_name(ok), "{ok}");
        }
        for bad in ["", "_data", "-x", "a/b", "a b", "é", &"x".repeat(201)] {
            assert!(!is_volume_name(bad), "{bad}");
        }
    }

    #[test]
    fn mount_json_is_tagged_and_compact() {
        let m = VolumeMount {
            source: MountSource::Bind {
                path: "/srv".into(),
                create_host_path: false,
            },
            target: "/data".into(),
            read_only: true,
            propagation: None,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"source": {"type": "bind", "path": "/srv"}, "target": "/data", "read_only": true})
        );
        let back: VolumeMount = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
