//! Volumes on the node: where their data lives, preparing a replica's mounts before its
//! container is created, and removing the data of volumes that are gone.
//!
//! A named volume is `{dir}/{namespace}/{name}/_data` (the namespace keeps two namespaces'
//! `data` apart), made on first use, or the mount(8) of its `driver_opts` (`type`, `o`,
//! `device`, as Docker's local driver) on that directory, mounted at first use and unmounted
//! when the volume is removed. An anonymous volume is `{dir}/_anonymous/{replica}/{n}/_data`
//! and goes with its replica. `_anonymous` cannot be a namespace (those are DNS labels). A
//! new, empty volume is marked for copy-up (the runtime copies the image's content in first)
//! unless the mount says `nocopy`. Bind sources are the node's own paths: a missing one is
//! created when the mount allows it, else the replica fails naming the path.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hivemind_runtime::HostMount;
use hivemind_types::{MountSource, NamedVolume, Replica};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tracing::{info, warn};

/// Why a replica's volumes could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "bind mount source {path} (for {target}) does not exist on this node: create it, or set bind.create_host_path: true"
    )]
    BindSourceMissing { path: String, target: String },
    #[error("volume {volume} has no {subpath} (volume.subpath, for {target}): create it in the volume first")]
    SubpathMissing {
        volume: String,
        subpath: String,
        target: String,
    },
    #[error("cannot prepare {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot mount volume {volume} (mount -t {fs} {device} -o {options}): {reason}")]
    Mount {
        volume: String,
        fs: String,
        device: String,
        options: String,
        reason: String,
    },
}

/// The node's volume directory (`{data-dir}/volumes`).
#[derive(Debug, Clone)]
pub struct NodeVolumes {
    dir: PathBuf,
}

const ANONYMOUS: &str = "_anonymous";

impl NodeVolumes {
    pub fn new(dir: impl Into<PathBuf>) -> NodeVolumes {
        NodeVolumes { dir: dir.into() }
    }

    /// Where named volume `name` of `namespace` keeps its data.
    pub fn volume_data(&self, namespace: &str, name: &str) -> PathBuf {
        self.dir.join(namespace).join(name).join("_data")
    }

    fn anonymous(&self, replica: &str) -> PathBuf {
        self.dir.join(ANONYMOUS).join(replica)
    }

    /// Makes every volume and bind source of `replica` ready and returns its mounts.
    pub async fn prepare(&self, replica: &Replica) -> Result<Vec<HostMount>, VolumeError> {
        let this = self.clone();
        let replica = replica.clone();
        tokio::task::spawn_blocking(move || this.prepare_blocking(&replica))
            .await
            .unwrap_or_else(|e| {
                Err(VolumeError::Io {
                    path: PathBuf::new(),
                    source: io::Error::other(e.to_string()),
                })
            })
    }

    fn prepare_blocking(&self, replica: &Replica) -> Result<Vec<HostMount>, VolumeError> {
        let mut out = Vec::new();
        for (i, m) in replica.spec.volumes.iter().enumerate() {
            let (source, copy_up) = match &m.source {
                MountSource::Volume(v) => self.prepare_named(&replica.namespace, v, &m.target)?,
                MountSource::Anonymous { nocopy } => {
                    let data = self
                        .anonymous(&replica.id)
                        .join(i.to_string())
                        .join("_data");
                    private_dirs(&self.dir, &data)?;
                    let empty = is_empty(&data)?;
                    (data, empty && !nocopy)
                }
                MountSource::Bind {
                    path,
                    create_host_path,
                } => {
                    let p = Path::new(path);
                    if !p.exists() {
                        if !create_host_path {
                            return Err(VolumeError::BindSourceMissing {
                                path: path.clone(),
                                target: m.target.clone(),
                            });
                        }
                        std::fs::create_dir_all(p).map_err(|source| VolumeError::Io {
                            path: p.to_path_buf(),
                            source,
                        })?;
                    }
                    (p.to_path_buf(), false)
                }
            };
            out.push(HostMount {
                source,
                target: m.target.clone(),
                read_only: m.read_only,
                propagation: m.propagation.clone(),
                copy_up,
            });
        }
        Ok(out)
    }

    fn prepare_named(
        &self,
        namespace: &str,
        v: &NamedVolume,
        target: &str,
    ) -> Result<(PathBuf, bool), VolumeError> {
        let data = self.volume_data(namespace, &v.name);
        private_dirs(&self.dir, &data)?;
        if !v.driver_opts.is_empty() && !is_mount_point(&data) {
            mount_driver_opts(&v.name, &v.driver_opts, &data)?;
        }
        match &v.subpath {
            Some(sub) => {
                let path = data.join(sub);
                if !path.is_dir() {
                    return Err(VolumeError::SubpathMissing {
                        volume: v.name.clone(),
                        subpath: sub.clone(),
                        target: target.to_string(),
                    });
                }
                // Docker copies into the volume's root only.
                Ok((path, false))
            }
            None => {
                let empty = is_empty(&data)?;
                Ok((data, empty && !v.nocopy))
            }
        }
    }

    /// Removes replica `id`'s anonymous volumes.
    pub async fn remove_anonymous(&self, id: &str) {
        let dir = self.anonymous(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => info!(replica = %id, "removed the replica's anonymous volumes"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %dir.display(), error = %e, "cannot remove anonymous volumes"),
        }
    }

    /// Removes the data of named volumes not in `keep` (the node's volumes in the store, as
    /// `(namespace, name)`; `None` keeps them all) and not in `in_use`, and the anonymous
    /// volumes of replicas not in `replicas`. Returns how many were removed.
    pub async fn sweep(
        &self,
        keep: Option<BTreeSet<(String, String)>>,
        in_use: BTreeSet<(String, String)>,
        replicas: BTreeSet<String>,
    ) -> usize {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.sweep_blocking(keep.as_ref(), &in_use, &replicas))
            .await
            .unwrap_or(0)
    }

    fn sweep_blocking(
        &self,
        keep: Option<&BTreeSet<(String, String)>>,
        in_use: &BTreeSet<(String, String)>,
        replicas: &BTreeSet<String>,
    ) -> usize {
        let mut removed = 0;
        for ns in dir_names(&self.dir) {
            if ns == ANONYMOUS {
                for replica in dir_names(&self.dir.join(ANONYMOUS)) {
                    if !replicas.contains(&replica) {
                        removed += usize::from(remove(&self.anonymous(&replica)));
                    }
                }
                continue;
            }
            let Some(keep) = keep else { continue };
            for name in dir_names(&self.dir.join(&ns)) {
                let id = (ns.clone(), name.clone());
                if keep.contains(&id) || in_use.contains(&id) {
                    continue;
                }
                let data = self.volume_data(&ns, &name);
                if is_mount_point(&data) {
                    if let Err(e) = umount2(&data, MntFlags::MNT_DETACH) {
                        warn!(volume = %name, error = %e, "cannot unmount the removed volume");
                        continue;
                    }
                }
                if remove(&self.dir.join(&ns).join(&name)) {
                    info!(namespace = %ns, volume = %name, "removed the data of a deleted volume");
                    removed += 1;
                }
            }
        }
        removed
    }
}

fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn remove(path: &Path) -> bool {
    match std::fs::remove_dir_all(path) {
        Ok(()) => true,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot remove volume data");
            false
        }
    }
}

/// Creates `data` and the directories between `root` and it: those 0700 (volumes hold apps'
/// data, like the rest of the data dir), `data` itself 0755 as Docker makes it (copy-up then
/// gives it the image's owner and mode).
fn private_dirs(root: &Path, data: &Path) -> Result<(), VolumeError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| VolumeError::Io { path, source }
    };
    if let Some(parent) = data.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(io(parent))?;
        // `recursive` leaves existing directories' modes alone; the root may predate us.
        if root.is_dir() {
            let mode = std::fs::metadata(root)
                .map_err(io(root))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                    .map_err(io(root))?;
            }
        }
    }
    match std::fs::DirBuilder::new().mode(0o755).create(data) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io(data)(e)),
    }
}

fn is_empty(dir: &Path) -> Result<bool, VolumeError> {
    let mut entries = std::fs::read_dir(dir).map_err(|source| VolumeError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(entries.next().is_none())
}

/// Whether `path` is a mount point, from /proc/self/mountinfo (a bind mount of the same
/// filesystem has the same device, so comparing devices would not tell).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape_mountinfo(&path.to_string_lossy());
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn escape_mountinfo(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Mounts `driver_opts` on `data` as `mount -t TYPE -o O DEVICE DATA` would: the flags mount(8)
/// knows go in the flags, the rest is the filesystem's data.
fn mount_driver_opts(
    volume: &str,
    opts: &std::collections::BTreeMap<String, String>,
    data: &Path,
) -> Result<(), VolumeError> {
    let fs = opts.get("type").cloned().unwrap_or_default();
    let o = opts.get("o").cloned().unwrap_or_default();
    let device = opts.get("device").cloned().unwrap_or_else(|| fs.clone());
    let (mut flags, rest) = split_mount_options(&o);
    let fs_type = if fs == "bind" || flags.contains(MsFlags::MS_BIND) {
        flags |= MsFlags::MS_BIND;
        None
    } else {
        Some(fs.as_str())
    };
    let rest_opt = (!rest.is_empty()).then_some(rest.as_str());
    let err = |reason: String| VolumeError::Mount {
        volume: volume.to_string(),
        fs: fs.clone(),
        device: device.clone(),
        options: o.clone(),
        reason,
    };
    mount(Some(device.as_str()), data, fs_type, flags, rest_opt).map_err(|e| err(e.to_string()))?;
    // A bind mount ignores MS_RDONLY until remounted.
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        mount(
            None::<&str>,
            data,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| err(e.to_string()))?;
    }
    info!(volume, fs = %fs, "mounted the volume's driver_opts");
    Ok(())
}

/// `o` split into mount(2) flags and the filesystem-specific rest, in order.
fn split_mount_options(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut rest: Vec<&str> = Vec::new();
    for opt in o.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            other => rest.push(other),
        }
    }
    (flags, rest.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_options_split_like_mount_8() {
        let (flags, rest) = split_mount_options("addr=10.0.0.2, ro,nosuid,vers=4,bind");
        assert_eq!(
            flags,
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_BIND
        );
        assert_eq!(rest, "addr=10.0.0.2,vers=4");
        assert_eq!(split_mount_options(""), (MsFlags::empty(), String::new()));
    }

    #[test]
    fn mountinfo_paths_are_escaped() {
        assert_eq!(escape_mountinfo("/a b\\c"), "/a\\040b\\134c");
    }
}
