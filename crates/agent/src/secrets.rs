//! Secret and config files on the node: before a replica's container is created, its files are
//! written to a tmpfs of its own at `{secrets_dir}/{replica}` (memory, never the node's disk),
//! one file per mount with the mount's owner and mode, and bound read-only at their targets by
//! the runtime. The tmpfs goes when the replica is removed.
//!
//! The tmpfs is a kernel mount, so it outlives the agent: an agent restarted while its
//! containers run finds the files where they were (and a container it creates again gets them
//! written again from the assignment).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use hivemind_runtime::FileBind;
use hivemind_types::secret::{mounts_of, FileKind, FileValue};
use hivemind_types::Replica;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Writes `replica`'s secret and config files (from `values`, the assignment's) and returns
/// the binds its container needs; nothing (and no tmpfs) for a replica without any.
pub(crate) fn prepare(
    secrets_dir: Option<&Path>,
    replica: &Replica,
    values: &[FileValue],
) -> Result<Vec<FileBind>, String> {
    let mounts: Vec<_> = mounts_of(&replica.spec).collect();
    if mounts.is_empty() {
        return Ok(Vec::new());
    }
    let Some(secrets_dir) = secrets_dir else {
        return Err(
            "this agent was started without a directory for secrets and configs".to_string(),
        );
    };
    let by_key: BTreeMap<(FileKind, &str), &FileValue> = values
        .iter()
        .map(|v| ((v.kind, v.key.as_str()), v))
        .collect();
    let mut plain = Vec::with_capacity(mounts.len());
    for (kind, m) in &mounts {
        let Some(value) = by_key.get(&(*kind, m.source.as_str())) else {
            return Err(format!(
                "{} {} was not delivered with the assignment (removed since?)",
                kind.as_str(),
                m.source
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&value.data)
            .map_err(|_| format!("{} {} arrived damaged", kind.as_str(), m.source))?;
        plain.push(bytes);
    }
    let dir = replica_dir(secrets_dir, &replica.id);
    let total: usize = plain.iter().map(Vec::len).sum();
    mount_tmpfs(&dir, total)
        .map_err(|e| format!("cannot mount a tmpfs for secrets at {}: {e}", dir.display()))?;
    let mut binds = Vec::with_capacity(mounts.len());
    for (i, ((_, m), bytes)) in mounts.iter().zip(plain).enumerate() {
        let path = dir.join(i.to_string());
        write_file(&path, &bytes, m.uid, m.gid, m.mode)
            .map_err(|e| format!("cannot write {} at {}: {e}", m.target, path.display()))?;
        binds.push(FileBind {
            source: path,
            target: m.target.clone(),
        });
    }
    Ok(binds)
}

/// Unmounts and removes `replica`'s tmpfs, if it has one.
pub(crate) fn remove(secrets_dir: Option<&Path>, replica: &str) -> std::io::Result<()> {
    let Some(secrets_dir) = secrets_dir else {
        return Ok(());
    };
    let dir = replica_dir(secrets_dir, replica);
    if !dir.exists() {
        return Ok(());
    }
    if is_mount_point(&dir) {
        // Detached: a container still holding its bind keeps its view until it goes.
        umount2(&dir, MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    std::fs::remove_dir_all(&dir)
}

/// Removes the tmpfs of every replica not in `live` (the containers the runtime lists) and
/// older than `min_age`: what an agent that crashed between a removal and its cleanup left.
pub(crate) fn sweep(
    secrets_dir: Option<&Path>,
    live: &std::collections::BTreeSet<String>,
    min_age: std::time::Duration,
) {
    let Some(dir) = secrets_dir else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < min_age);
        if live.contains(&name) || young {
            continue;
        }
        if let Err(error) = remove(Some(dir), &name) {
            tracing::warn!(replica = %name, %error, "cannot remove a leftover secrets tmpfs");
        }
    }
}

fn replica_dir(secrets_dir: &Path, replica: &str) -> PathBuf {
    secrets_dir.join(replica)
}

/// Whether `dir` is a mount point: on another device than its parent.
fn is_mount_point(dir: &Path) -> bool {
    let (Ok(meta), Some(Ok(parent))) =
        (std::fs::metadata(dir), dir.parent().map(std::fs::metadata))
    else {
        return false;
    };
    meta.dev() != parent.dev()
}

/// Mounts a tmpfs at `dir` (0700, no devices, programs or set-uid) big enough for `bytes`
/// plus slack; an existing one (a retried create, a restarted agent) is reused.
fn mount_tmpfs(dir: &Path, bytes: usize) -> std::io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    // Files are small; the size caps what a bug could put in memory.
    let size = bytes + 64 * 1024;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=0700,size={size}").as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Writes the file whole (a temporary name, then renamed), owned by `uid`:`gid` with `mode`.
fn write_file(path: &Path, bytes: &[u8], uid: u32, gid: u32, mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    // After the chown, which clears set-id bits; the mode is the mount's own.
    file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    drop(file);
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_types::secret::FileMount;
    use hivemind_types::{Meta, ServiceSpec};

    fn replica(mounts: Vec<FileMount>) -> Replica {
        Replica {
            id: "web-abcde".into(),
            namespace: "default".into(),
            app: "shop".into(),
            service: "web".into(),
            node: "n1".into(),
            spec: ServiceSpec {
                secrets: mounts,
                ..Default::default()
            },
            revision_hash: String::new(),
            meta: Meta::default(),
        }
    }

    fn mount(source: &str) -> FileMount {
        FileMount {
            source: source.into(),
            external: false,
            target: format!("/run/secrets/{source}"),
            uid: 0,
            gid: 0,
            mode: 0o400,
            digest: "d".into(),
        }
    }

    #[test]
    fn a_replica_without_files_needs_no_directory() {
        assert_eq!(prepare(None, &replica(Vec::new()), &[]), Ok(Vec::new()));
    }

    #[test]
    fn a_value_missing_from_the_assignment_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let err = prepare(Some(dir.path()), &replica(vec![mount("db")]), &[]).unwrap_err();
        assert!(err.contains("secret db was not delivered"), "{err}");
        let err = prepare(None, &replica(vec![mount("db")]), &[]).unwrap_err();
        assert!(err.contains("without a directory"), "{err}");
        // Nothing was mounted or made for it.
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
