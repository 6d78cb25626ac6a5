//! Sweeping what crashed operations leave behind: things this runtime made for a container that
//! no longer exists.
//!
//! - **Writable snapshots** prepared for a container whose record was never created (the agent
//!   died between `Snapshots.Prepare` and `Containers.Create`). Their lease would let containerd
//!   collect them within [`super::LEASE_EXPIRY`]; the sweep does it at once.
//! - **Run directories** (`{run_dir}/{id}`: resolv.conf, hosts, hostname) of the same kind of
//!   crash, or of a removal that died after deleting the container.
//! - **Log directories** (`{log_dir}/{id}`) of removed containers, when removal could not
//!   delete them, and the plain `{id}.stdout.log`/`.stderr.log` files of versions before the
//!   log driver.
//! - **Cgroup directories** `/sys/fs/cgroup/[hierarchy/]hivemind/{id}` that runc did not delete
//!   (containerd or the shim died mid-delete). Only empty ones are removed, and the kernel itself
//!   refuses to remove a cgroup that still has processes.
//!
//! A container being created owns a snapshot and a run directory before its record exists, so a
//! sweep excludes creates: it holds [`Inner::creating`](super::Inner) for writing while creates
//! hold it for reading. Anything younger than the caller's `min_age` is also left alone, in case
//! another client works in the namespace.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    Kind as SnapshotKind, ListSnapshotsRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::ListContainersRequest;
use futures::StreamExt;
use tracing::{debug, info, warn};

use super::{not_found_ok, Containerd};
use crate::{RuntimeError, SweepReport};

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup parent every container's `cgroupsPath` names (see `oci.rs`).
const CGROUP_PARENT: &str = "hivemind";

impl Containerd {
    pub(super) async fn sweep_owned_leftovers(
        &self,
        min_age: Duration,
    ) -> Result<SweepReport, RuntimeError> {
        let _no_creates = self.inner.creating.write().await;
        let mut ids = HashSet::new();
        let mut snapshot_keys = HashSet::new();
        let containers = ContainersClient::new(self.channel())
            .list(self.request(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| RuntimeError::grpc("list containers", "", s))?
            .into_inner()
            .containers;
        for c in containers {
            snapshot_keys.insert(c.snapshot_key);
            ids.insert(c.id);
        }
        let old = Age {
            now: SystemTime::now(),
            min: min_age,
        };
        let mut report = SweepReport {
            snapshots: self.sweep_snapshots(&snapshot_keys, old).await?,
            ..SweepReport::default()
        };
        report.run_dirs = sweep_dirs(&self.inner.config.run_dir, &ids, old, |dir| {
            std::fs::remove_dir_all(dir)
        });
        // A log driver still flushing when its container was removed may have made the
        // directory again.
        report.log_dirs = sweep_dirs(&self.inner.config.log_dir, &ids, old, |dir| {
            std::fs::remove_dir_all(dir)
        });
        report.log_dirs += sweep_legacy_logs(&self.inner.config.log_dir, &ids, old);
        for parent in cgroup_parents(Path::new(CGROUP_ROOT)) {
            report.cgroups += sweep_dirs(&parent, &ids, old, remove_empty_cgroup);
        }
        if report != SweepReport::default() {
            info!(?report, "removed leftovers of crashed operations");
        }
        Ok(report)
    }

    /// Active snapshots of our snapshotter that no container names. Extraction snapshots of a
    /// pull in progress are active too; they are skipped by their `extract-` key and left to
    /// their lease.
    async fn sweep_snapshots(
        &self,
        keep: &HashSet<String>,
        old: Age,
    ) -> Result<usize, RuntimeError> {
        let snapshotter = self.inner.config.snapshotter.clone();
        let mut snapshots = SnapshotsClient::new(self.channel());
        let mut stream = snapshots
            .list(self.request(ListSnapshotsRequest {
                snapshotter: snapshotter.clone(),
                filters: vec![],
            }))
            .await
            .map_err(|s| RuntimeError::grpc("list snapshots", "", s))?
            .into_inner();
        let mut stale = Vec::new();
        while let Some(page) = stream.next().await {
            let page = page.map_err(|s| RuntimeError::grpc("list snapshots", "", s))?;
            for info in page.info {
                let old = info
                    .created_at
                    .and_then(|t| SystemTime::try_from(t).ok())
                    .is_some_and(|t| old.is(t));
                if info.kind == SnapshotKind::Active as i32
                    && old
                    && !info.name.starts_with("extract-")
                    && !keep.contains(&info.name)
                {
                    stale.push(info.name);
                }
            }
        }
        let mut removed = 0;
        for key in stale {
            let result = snapshots
                .remove(self.request(RemoveSnapshotRequest {
                    snapshotter: snapshotter.clone(),
                    key: key.clone(),
                }))
                .await;
            match not_found_ok(result) {
                Ok(_) => removed += 1,
                Err(status) => warn!(snapshot = %key, %status, "cannot remove a leftover snapshot"),
            }
        }
        Ok(removed)
    }
}

/// Removes the subdirectories of `parent` not named in `keep` and old enough; returns how many
/// went.
fn sweep_dirs(
    parent: &Path,
    keep: &HashSet<String>,
    old: Age,
    remove: impl Fn(&Path) -> std::io::Result<()>,
) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_dir() || keep.contains(&name) {
            continue;
        }
        if !meta.modified().is_ok_and(|t| old.is(t)) {
            continue;
        }
        let path = entry.path();
        match remove(&path) {
            Ok(()) => {
                debug!(path = %path.display(), "removed a leftover directory");
                removed += 1;
            }
            Err(error) => debug!(path = %path.display(), %error, "leftover directory stays"),
        }
    }
    removed
}

/// Before the log driver, the shim appended to `{log_dir}/{id}.stdout.log` and `.stderr.log`,
/// and removal left them; those of containers that no longer exist go (counted per replica).
fn sweep_legacy_logs(log_dir: &Path, keep: &HashSet<String>, old: Age) -> usize {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return 0;
    };
    let mut replicas = HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".stdout.log")
            .or_else(|| name.strip_suffix(".stderr.log"))
        else {
            continue;
        };
        let stale = entry
            .metadata()
            .is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| old.is(t)));
        if stale && !keep.contains(id) && std::fs::remove_file(entry.path()).is_ok() {
            replicas.insert(id.to_string());
        }
    }
    replicas.len()
}

/// "Old enough to be a leftover": at least `min` before `now`.
#[derive(Debug, Clone, Copy)]
struct Age {
    now: SystemTime,
    min: Duration,
}

impl Age {
    fn is(self, t: SystemTime) -> bool {
        self.now.duration_since(t).is_ok_and(|age| age >= self.min)
    }
}

/// `{root}/{hierarchy}/hivemind` for every cgroup v1 hierarchy and the v2 (or hybrid
/// `unified`) tree, each once (`cpu` and `cpuacct` are links to one hierarchy).
fn cgroup_parents(root: &Path) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut parents = Vec::new();
    let mut candidates = vec![root.join(CGROUP_PARENT)];
    if let Ok(entries) = std::fs::read_dir(root) {
        candidates.extend(entries.flatten().map(|e| e.path().join(CGROUP_PARENT)));
    }
    for dir in candidates {
        if let Ok(real) = dir.canonicalize() {
            if real.is_dir() && seen.insert(real.clone()) {
                parents.push(real);
            }
        }
    }
    parents
}

/// A cgroup directory is removed with `rmdir` (its control files are not real files); the
/// kernel refuses while it has processes or children, which is the safety we want.
fn remove_empty_cgroup(dir: &Path) -> std::io::Result<()> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    if !procs.trim().is_empty() {
        return Err(std::io::Error::other("the cgroup still has processes"));
    }
    std::fs::remove_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_age(path: &Path, age: Duration) {
        let t = SystemTime::now() - age;
        let f = std::fs::File::open(path).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(t))
            .unwrap();
    }

    #[test]
    fn only_old_unknown_directories_go() {
        let root = tempfile::tempdir().unwrap();
        for name in ["live-aaaaa", "gone-bbbbb", "young-ccccc"] {
            std::fs::create_dir(root.path().join(name)).unwrap();
            std::fs::write(root.path().join(name).join("hosts"), "x").unwrap();
        }
        std::fs::write(root.path().join("a-file"), "x").unwrap();
        for name in ["live-aaaaa", "gone-bbbbb", "a-file"] {
            set_age(&root.path().join(name), Duration::from_secs(600));
        }
        let keep = HashSet::from(["live-aaaaa".to_string()]);
        let old = Age {
            now: SystemTime::now(),
            min: Duration::from_secs(120),
        };
        let removed = sweep_dirs(root.path(), &keep, old, |d| std::fs::remove_dir_all(d));
        assert_eq!(removed, 1);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a-file", "live-aaaaa", "young-ccccc"]);
    }

    #[test]
    fn legacy_log_files_of_gone_replicas_go() {
        let root = tempfile::tempdir().unwrap();
        for name in [
            "gone-aaaaa.stdout.log",
            "gone-aaaaa.stderr.log",
            "live-bbbbb.stdout.log",
            "other.txt",
        ] {
            std::fs::write(root.path().join(name), "x\n").unwrap();
            set_age(&root.path().join(name), Duration::from_secs(600));
        }
        let keep = HashSet::from(["live-bbbbb".to_string()]);
        let old = Age {
            now: SystemTime::now(),
            min: Duration::from_secs(120),
        };
        assert_eq!(sweep_legacy_logs(root.path(), &keep, old), 1);
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["live-bbbbb.stdout.log", "other.txt"]);
    }

    #[test]
    fn a_missing_parent_sweeps_nothing() {
        let removed = sweep_dirs(
            Path::new("/nonexistent/hivemind"),
            &HashSet::new(),
            Age {
                now: SystemTime::now(),
                min: Duration::ZERO,
            },
            |_| Ok(()),
        );
        assert_eq!(removed, 0);
    }

    #[test]
    fn cgroup_parents_are_deduplicated_through_links() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("cpu,cpuacct/hivemind")).unwrap();
        std::fs::create_dir_all(root.path().join("memory/hivemind")).unwrap();
        std::fs::create_dir_all(root.path().join("pids")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpuacct")).unwrap();
        let parents = cgroup_parents(root.path());
        assert_eq!(parents.len(), 2, "{parents:?}");
    }
}
