//! Image garbage collection on the node, like the kubelet's: when the filesystem holding
//! containerd's root is fuller than `high_percent`, remove unused images, oldest first, until
//! the projected usage is at most `low_percent`.
//!
//! [`plan_image_gc`] is the pure planner (table-tested); [`collect_images`] is the one-shot
//! executor (measure, list, plan, remove) and [`run`] drives it on a timer inside the agent.
//!
//! **Invariant:** an image a container uses (or the node's assignment names) is never removed;
//! removal is never forced, so a container created meanwhile makes containerd's check refuse it.
//! Nothing is collected before the first assignment has arrived (live restore).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::{error_chain, Shared};
use hivemind_runtime::{normalize_image_ref, ContainerRuntime, ImageInfo, RuntimeError};

/// When to collect images, and how far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Collection starts when the disk is fuller than this (percent of its size).
    pub high_percent: u8,
    /// Collection stops once the projected usage is at most this.
    pub low_percent: u8,
    /// A path on the filesystem holding containerd's content and snapshots.
    pub containerd_root: PathBuf,
}

impl Default for ImageGcPolicy {
    /// The kubelet's defaults.
    fn default() -> Self {
        ImageGcPolicy {
            high_percent: 85,
            low_percent: 80,
            containerd_root: PathBuf::from("/var/lib/containerd"),
        }
    }
}

/// Bytes used and in total on one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageGcError {
    #[error("cannot measure the disk usage of {}", path.display())]
    DiskUsage {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot list images or containers")]
    Runtime(#[source] RuntimeError),
}

/// How often the agent checks the disk.
const INTERVAL: Duration = Duration::from_secs(60);

/// The references to remove, in order: unused images, least recently written first (unknown
/// age first, then by name), until `usage` minus their sizes is at most `low_percent`; nothing
/// unless `usage` is above `high_percent`. `in_use` holds normalized references. Sizes are
/// counted once per digest, and a name whose digest is in use frees nothing, so it is skipped.
pub fn plan_image_gc(
    images: &[ImageInfo],
    in_use: &BTreeSet<String>,
    usage: DiskUsage,
    policy: &ImageGcPolicy,
) -> Vec<String> {
    let total = u128::from(usage.total_bytes);
    let above = |used: u64, percent: u8| u128::from(used) * 100 > u128::from(percent) * total;
    if total == 0 || !above(usage.used_bytes, policy.high_percent) {
        return Vec::new();
    }
    let used_digests: BTreeSet<&str> = images
        .iter()
        .filter(|i| in_use.contains(&i.name))
        .map(|i| i.digest.as_str())
        .collect();
    let mut candidates: Vec<&ImageInfo> = images
        .iter()
        .filter(|i| !in_use.contains(&i.name) && !used_digests.contains(i.digest.as_str()))
        .collect();
    candidates.sort_by(|a, b| (a.updated_at, &a.name).cmp(&(b.updated_at, &b.name)));
    let mut projected = usage.used_bytes;
    let mut freed_digests = BTreeSet::new();
    let mut remove = Vec::new();
    for image in candidates {
        if !above(projected, policy.low_percent) {
            break;
        }
        if freed_digests.insert(image.digest.as_str()) {
            projected = projected.saturating_sub(image.size);
        }
        remove.push(image.name.clone());
    }
    remove
}

/// The usage of the filesystem holding `path`, as `df` counts it (blocks reserved for root
/// count neither as used nor as available).
pub fn disk_usage(path: &Path) -> Result<DiskUsage, ImageGcError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|source| ImageGcError::DiskUsage {
        path: path.to_path_buf(),
        source,
    })?;
    let block = stat.fragment_size() as u64;
    let used = (stat.blocks() as u64).saturating_sub(stat.blocks_free() as u64) * block;
    let available = stat.blocks_available() as u64 * block;
    Ok(DiskUsage {
        used_bytes: used,
        total_bytes: used + available,
    })
}

/// One collection: measures the disk, lists images and containers, plans and removes. Images
/// in `also_in_use` (normalized) are kept too. An image that became used meanwhile, or is gone
/// already, is skipped. Returns the removed images.
pub async fn collect_images<R: ContainerRuntime>(
    runtime: &R,
    policy: &ImageGcPolicy,
    also_in_use: &BTreeSet<String>,
) -> Result<Vec<ImageInfo>, ImageGcError> {
    let usage = disk_usage(&policy.containerd_root)?;
    let images = runtime.image_list().await.map_err(ImageGcError::Runtime)?;
    let containers = runtime.list().await.map_err(ImageGcError::Runtime)?;
    let mut in_use: BTreeSet<String> = containers.into_iter().map(|c| c.image).collect();
    in_use.extend(also_in_use.iter().cloned());
    let plan = plan_image_gc(&images, &in_use, usage, policy);
    if plan.is_empty() {
        debug!(?usage, "no image to collect");
        return Ok(Vec::new());
    }
    info!(
        used_bytes = usage.used_bytes,
        total_bytes = usage.total_bytes,
        high_percent = policy.high_percent,
        "disk above the image GC threshold; removing unused images"
    );
    let mut removed = Vec::new();
    for reference in plan {
        match runtime.image_remove(&reference, false).await {
            Ok(image) => {
                info!(image = %image.name, size_bytes = image.size, "unused image removed");
                removed.push(image);
            }
            Err(RuntimeError::ImageInUse { .. } | RuntimeError::ImageNotFound { .. }) => {
                debug!(image = %reference, "image became used or vanished; kept");
            }
            Err(error) => {
                warn!(image = %reference, error = %error_chain(&error), "cannot remove image");
            }
        }
    }
    let freed: u64 = removed.iter().map(|i| i.size).sum();
    info!(images = removed.len(), freed_bytes = freed, "image GC done");
    Ok(removed)
}

/// The agent's image GC task: every [`INTERVAL`], once the first assignment has arrived,
/// collects images, keeping those the assignment names too (their containers may be about to
/// be created).
pub(super) async fn run<R: ContainerRuntime>(shared: Arc<Shared<R>>, policy: ImageGcPolicy) {
    loop {
        tokio::time::sleep(INTERVAL).await;
        let desired: Option<BTreeSet<String>> = shared.state().assignment.as_ref().map(|a| {
            a.replicas
                .iter()
                .map(|r| normalize_image_ref(&r.spec.image))
                .collect()
        });
        let Some(desired) = desired else {
            continue;
        };
        if let Err(error) = collect_images(&shared.runtime, &policy, &desired).await {
            warn!(error = %error_chain(&error), "image GC failed; retrying next time");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const GB: u64 = 1 << 30;

    /// An image `name` of `size` GB written at second `age` (`None`: unknown); digest = name.
    fn image(name: &str, size: u64, at: Option<u64>) -> ImageInfo {
        image_digest(name, name, size, at)
    }

    fn image_digest(name: &str, digest: &str, size: u64, at: Option<u64>) -> ImageInfo {
        ImageInfo {
            name: name.to_string(),
            digest: digest.to_string(),
            size: size * GB,
            updated_at: at.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    fn policy(high: u8, low: u8) -> ImageGcPolicy {
        ImageGcPolicy {
            high_percent: high,
            low_percent: low,
            ..Default::default()
        }
    }

    struct Case {
        name: &'static str,
        images: Vec<ImageInfo>,
        in_use: &'static [&'static str],
        /// Used GB of 100.
        used: u64,
        policy: ImageGcPolicy,
        expect: &'static [&'static str],
    }

    #[test]
    fn plans_image_gc() {
        let three = || {
            vec![
                image("new", 3, Some(300)),
                image("old", 3, Some(100)),
                image("mid", 3, Some(200)),
            ]
        };
        let cases = [
            Case {
                name: "below the high threshold: nothing to do",
                images: three(),
                in_use: &[],
                used: 85,
                policy: policy(85, 80),
                expect: &[],
            },
            Case {
                name: "above high: oldest first, stops once at or below low",
                images: three(),
                in_use: &[],
                used: 86,
                policy: policy(85, 80),
                expect: &["old", "mid"],
            },
            Case {
                name: "one removal reaches low exactly",
                images: three(),
                in_use: &[],
                used: 83,
                policy: policy(82, 80),
                expect: &["old"],
            },
            Case {
                name: "in-use image protected even when oldest",
                images: three(),
                in_use: &["old"],
                used: 86,
                policy: policy(85, 80),
                expect: &["mid", "new"],
            },
            Case {
                name: "all in use: nothing, even far above high",
                images: three(),
                in_use: &["old", "mid", "new"],
                used: 99,
                policy: policy(85, 80),
                expect: &[],
            },
            Case {
                name: "low unreachable: every unused image",
                images: three(),
                in_use: &["mid"],
                used: 99,
                policy: policy(85, 80),
                expect: &["old", "new"],
            },
            Case {
                name: "high=0 low=0: all unused images",
                images: three(),
                in_use: &["new"],
                used: 50,
                policy: policy(0, 0),
                expect: &["old", "mid"],
            },
            Case {
                name: "high=100: never",
                images: three(),
                in_use: &[],
                used: 100,
                policy: policy(100, 0),
                expect: &[],
            },
            Case {
                name: "unknown age counts as oldest; ties by name",
                images: vec![
                    image("b", 1, Some(5)),
                    image("z", 1, None),
                    image("a", 1, Some(5)),
                ],
                in_use: &[],
                used: 90,
                policy: policy(85, 88),
                expect: &["z", "a"],
            },
            Case {
                name: "alias of an in-use digest frees nothing: skipped",
                images: vec![
                    image_digest("alias", "d1", 5, Some(1)),
                    image_digest("used", "d1", 5, Some(2)),
                    image("other", 5, Some(3)),
                ],
                in_use: &["used"],
                used: 86,
                policy: policy(85, 80),
                expect: &["other"],
            },
            Case {
                name: "two names of one digest: size counted once",
                images: vec![
                    image_digest("a", "d1", 4, Some(1)),
                    image_digest("b", "d1", 4, Some(2)),
                    image("c", 4, Some(3)),
                ],
                in_use: &[],
                used: 86,
                policy: policy(85, 80),
                expect: &["a", "b", "c"],
            },
        ];
        for case in cases {
            let in_use = case.in_use.iter().map(|s| s.to_string()).collect();
            let usage = DiskUsage {
                used_bytes: case.used * GB,
                total_bytes: 100 * GB,
            };
            let got = plan_image_gc(&case.images, &in_use, usage, &case.policy);
            assert_eq!(got, case.expect, "{}", case.name);
        }
    }

    #[test]
    fn empty_disk_plans_nothing() {
        let usage = DiskUsage {
            used_bytes: 0,
            total_bytes: 0,
        };
        let images = [image("a", 1, None)];
        assert!(plan_image_gc(&images, &BTreeSet::new(), usage, &policy(0, 0)).is_empty());
    }

    #[test]
    fn measures_the_root_filesystem() {
        let usage = disk_usage(Path::new("/")).expect("statvfs /");
        assert!(usage.total_bytes > 0 && usage.used_bytes <= usage.total_bytes);
    }
}
