//! Docker's copy-up: a new, empty volume mounted where the image has content is first filled
//! with that content, keeping owners, modes, symlinks and extended attributes, so that an
//! image's default data (a database's initial files, a web root) is there on first start.
//!
//! The content is read from the container's fresh snapshot, mounted read-only on a scratch
//! directory (an overlay of its layers, the empty upper one included; a bind snapshot is read
//! in place), and copied with `cp -a`, which keeps all of the above where the filesystem
//! allows. The scratch mount is detached before returning, whatever happened.

use std::path::{Path, PathBuf};

use containerd_client::types::Mount as ProtoMount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tracing::{debug, info};

use crate::error::RuntimeError;
use crate::HostMount;

/// Copies the image's content at each `copy_up` mount's target into its source.
pub(super) async fn copy_up(
    id: &str,
    rootfs: &[ProtoMount],
    scratch: &Path,
    mounts: &[HostMount],
) -> Result<(), RuntimeError> {
    let wanted: Vec<&HostMount> = mounts.iter().filter(|m| m.copy_up).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let err = |target: &str, reason: String| RuntimeError::CopyUp {
        id: id.to_string(),
        target: target.to_string(),
        reason,
    };
    let first = wanted[0].target.as_str();
    let view = ImageView::mount(rootfs, scratch).map_err(|reason| err(first, reason))?;
    for m in wanted {
        let from = view.root().join(m.target.trim_start_matches('/'));
        match tokio::fs::metadata(&from).await {
            Ok(meta) if meta.is_dir() => {}
            // Nothing at that path in the image (runc creates the mount point): nothing to copy.
            _ => {
                debug!(target = %m.target, "the image has nothing to copy up");
                continue;
            }
        }
        // `SRC/.` copies the directory's content and its own owner and mode onto the volume.
        let output = tokio::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(from.join("."))
            .arg(&m.source)
            .output()
            .await
            .map_err(|e| err(&m.target, format!("cannot run cp: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(err(&m.target, stderr.trim().to_string()));
        }
        info!(target = %m.target, volume = %m.source.display(), "copied the image's content into the new volume");
    }
    drop(view);
    Ok(())
}

/// The image's files, read-only, for as long as it lives.
struct ImageView {
    root: PathBuf,
    /// Mounted by us, so unmounted on drop (a bind snapshot is read in place).
    mounted: bool,
}

impl ImageView {
    fn mount(rootfs: &[ProtoMount], scratch: &Path) -> Result<ImageView, String> {
        let [m] = rootfs else {
            return Err(format!("the snapshot has {} mounts, not one", rootfs.len()));
        };
        match m.r#type.as_str() {
            "bind" => Ok(ImageView {
                root: PathBuf::from(&m.source),
                mounted: false,
            }),
            "overlay" => {
                // Read-only and without a work dir: the upper dir (empty in a fresh snapshot)
                // becomes the top lower one, so nothing is written.
                let mut layers: Vec<&str> = Vec::new();
                for opt in &m.options {
                    if let Some(upper) = opt.strip_prefix("upperdir=") {
                        layers.insert(0, upper);
                    }
                }
                for opt in &m.options {
                    if let Some(lower) = opt.strip_prefix("lowerdir=") {
                        layers.extend(lower.split(':'));
                    }
                }
                if layers.len() < 2 {
                    // A read-only overlay needs two layers; one is its own root.
                    return match layers.first() {
                        Some(only) => Ok(ImageView {
                            root: PathBuf::from(only),
                            mounted: false,
                        }),
                        None => Err("the overlay snapshot has no layers".to_string()),
                    };
                }
                std::fs::create_dir_all(scratch)
                    .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
                let data = format!("lowerdir={}", layers.join(":"));
                mount(
                    Some("overlay"),
                    scratch,
                    Some("overlay"),
                    MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
                    Some(data.as_str()),
                )
                .map_err(|e| format!("cannot mount the image read-only: {e}"))?;
                Ok(ImageView {
                    root: scratch.to_path_buf(),
                    mounted: true,
                })
            }
            other => Err(format!("snapshot mounts of type {other} are not supported")),
        }
    }

    fn root(&self) -> &Path {
        &self.root
    }
}

impl Drop for ImageView {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = umount2(&self.root, MntFlags::MNT_DETACH) {
                tracing::warn!(path = %self.root.display(), error = %e, "cannot unmount the image view");
            }
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}
