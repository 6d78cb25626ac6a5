//! Secrets and configs: files a service's containers read, kept by the server and delivered to
//! the nodes that run those containers.
//!
//! - [`StoredFile`] is the stored object (`Kind::Secret`, `Kind::Config`). An app's own ones
//!   come from its Compose file (key `{namespace}/{app}/{name}`); cluster ones from
//!   `hivemind secret create` (key `{name}`), which Compose files name as `external`. A
//!   secret's `data` is sealed (the API's `secrets` module encrypts it); a config's is plain.
//! - [`FileMount`] is one file in a service's spec: what it is, where it goes, its owner and
//!   mode, and the digest of its value, so that a changed value changes the container template
//!   and replaces the replicas, as Swarm and Kubernetes users expect of a redeploy.
//! - [`FileValue`] is a value in a node's assignment, for its replicas only.

use serde::{Deserialize, Serialize};

use crate::object::Meta;

/// Which of the two a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Secret,
    Config,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Secret => "secret",
            FileKind::Config => "config",
        }
    }

    /// Where a file goes when its mount names no absolute target: `/run/secrets/NAME` for a
    /// secret (Docker's), `/NAME` for a config (Swarm's).
    pub fn default_dir(self) -> &'static str {
        match self {
            FileKind::Secret => "/run/secrets",
            FileKind::Config => "",
        }
    }

    /// A file's mode when its mount gives none: readable by all, as in Docker.
    pub const DEFAULT_MODE: u32 = 0o444;
}

/// The store key of a file: an app's own (`{namespace}/{app}/{name}`) or a cluster one
/// (`{name}`, when `app` is `None`).
pub fn file_key(namespace: &str, app: Option<&str>, name: &str) -> String {
    match app {
        Some(app) => format!("{namespace}/{app}/{name}"),
        None => name.to_string(),
    }
}

/// A stored secret or config.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub name: String,
    /// The app it belongs to (`{namespace}/{app}`); `None` for a cluster one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Bytes of the value.
    pub size: u64,
    /// The value's digest (hex): keyed for a secret, so that it tells nothing about the value
    /// (see the API's `secrets`), plain SHA-256 for a config.
    pub digest: String,
    /// Base64: a secret's nonce and ciphertext, a config's value.
    pub data: String,
    #[serde(default)]
    pub meta: Meta,
}

impl std::fmt::Debug for StoredFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The data is sealed for secrets, but a debug dump has no reason to carry it either.
        f.debug_struct("StoredFile")
            .field("name", &self.name)
            .field("app", &self.app)
            .field("size", &self.size)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// One secret or config file in a service's spec (Compose `secrets:` / `configs:` entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    /// The store key of the secret or config ([`file_key`]). The Compose reader sets the
    /// file's name and `external`; the server turns that into the key when it deploys.
    pub source: String,
    /// A cluster secret or config (Compose `external`), rather than one of the app's own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// Absolute path of the file in the container.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    /// The value's digest, set by the server; part of the template hash.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

/// A secret's or config's value in a node's assignment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileValue {
    pub kind: FileKind,
    /// The store key, as in [`FileMount::source`].
    pub key: String,
    pub digest: String,
    /// Base64 of the value (decrypted: the node needs it, and only its own replicas' ones are
    /// sent to it).
    pub data: String,
}

impl std::fmt::Debug for FileValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Assignments are logged at debug level in places: never print a value.
        f.debug_struct("FileValue")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

/// The files of `spec` with their kind.
pub fn mounts_of(spec: &crate::ServiceSpec) -> impl Iterator<Item = (FileKind, &FileMount)> {
    spec.secrets
        .iter()
        .map(|m| (FileKind::Secret, m))
        .chain(spec.configs.iter().map(|m| (FileKind::Config, m)))
}

/// Merges the values of a delta answer into the previous ones and keeps those a replica of
/// `replicas` still mounts (a delta carries the values of its changed replicas only).
pub fn merge_values(
    previous: Vec<FileValue>,
    next: Vec<FileValue>,
    replicas: &[crate::object::Replica],
) -> Vec<FileValue> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut by_key: BTreeMap<(FileKind, String), FileValue> = previous
        .into_iter()
        .map(|v| ((v.kind, v.key.clone()), v))
        .collect();
    for v in next {
        by_key.insert((v.kind, v.key.clone()), v);
    }
    let used: BTreeSet<(FileKind, &str)> = replicas
        .iter()
        .flat_map(|r| mounts_of(&r.spec).map(|(kind, m)| (kind, m.source.as_str())))
        .collect();
    by_key.retain(|(kind, key), _| used.contains(&(*kind, key.as_str())));
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::Replica;
    use crate::ServiceSpec;

    fn value(kind: FileKind, key: &str, data: &str) -> FileValue {
        FileValue {
            kind,
            key: key.into(),
            digest: format!("d-{}", data.len()),
            data: data.into(),
        }
    }

    fn replica(id: &str, secrets: &[&str]) -> Replica {
        Replica {
            id: id.into(),
            namespace: "default".into(),
            app: "shop".into(),
            service: "web".into(),
            node: "n1".into(),
            spec: ServiceSpec {
                secrets: secrets
                    .iter()
                    .map(|s| FileMount {
                        source: s.to_string(),
                        external: false,
                        target: format!("/run/secrets/{s}"),
                        uid: 0,
                        gid: 0,
                        mode: 0o444,
                        digest: String::new(),
                    })
                    .collect(),
                ..Default::default()
            },
            revision_hash: String::new(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn merged_values_are_the_new_ones_and_only_those_still_mounted() {
        let previous = vec![
            value(FileKind::Secret, "a", "old"),
            value(FileKind::Secret, "gone", "x"),
        ];
        let next = vec![value(FileKind::Secret, "a", "new")];
        let merged = merge_values(previous, next, &[replica("web-1", &["a"])]);
        assert_eq!(merged, vec![value(FileKind::Secret, "a", "new")]);
    }

    #[test]
    fn a_config_does_not_keep_a_secret_of_the_same_key() {
        let merged = merge_values(
            vec![value(FileKind::Config, "a", "c")],
            Vec::new(),
            &[replica("web-1", &["a"])],
        );
        assert!(merged.is_empty());
    }

    #[test]
    fn a_changed_digest_changes_the_revision() {
        let a = replica("web-1", &["a"]).spec;
        let mut b = a.clone();
        b.secrets[0].digest = "other".into();
        assert_ne!(a.revision_hash(), b.revision_hash());
        let mut c = a.clone();
        c.secrets.clear();
        assert_eq!(c.revision_hash(), ServiceSpec::default().revision_hash());
    }

    #[test]
    fn debug_never_prints_values() {
        let v = value(FileKind::Secret, "a", "hunter2");
        assert!(!format!("{v:?}").contains("hunter2"));
        let stored = StoredFile {
            name: "a".into(),
            app: None,
            size: 7,
            digest: "d".into(),
            data: "c2VhbGVk".into(),
            meta: Meta::default(),
        };
        assert!(!format!("{stored:?}").contains("c2VhbGVk"));
    }
}
