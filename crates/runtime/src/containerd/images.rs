//! Images, client-side as containerd 1.6 requires: storing an image (blobs through `content.rs`,
//! GC labels, image records, unpacking layers into snapshots) for import and pull alike, and
//! reading an image back (manifest, config, chain id) when a container is created.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use containerd_client::types::Descriptor as ProtoDescriptor;
use tonic::Code;
use tracing::{debug, info};

use super::content::Source;
use super::{not_found_ok, Containerd, Lease};
use crate::archive::{Archive, PlannedImage};
use crate::error::RuntimeError;
use crate::image::{
    chain_ids, is_index, manifest_gc_labels, pick_platform, Descriptor, ImageConfigFile, Index,
    Manifest,
};
use crate::reference::normalize_image_ref;
use crate::ImageInfo;

/// An image as a container needs it.
pub(super) struct ResolvedImage {
    pub(super) name: String,
    pub(super) config: ImageConfigFile,
    /// Chain id of the top layer: the parent snapshot of a container's rootfs.
    pub(super) chain_id: String,
}

/// How many layers are written (and downloaded) at once.
const LAYER_CONCURRENCY: usize = 3;

/// One image ready to be written by [`Containerd::image_store`].
pub(super) struct ImageWrite<'a> {
    /// Normalized names to point at the image.
    pub(super) names: &'a [String],
    pub(super) manifest: &'a Manifest,
    pub(super) manifest_desc: Descriptor,
    pub(super) manifest_bytes: &'a [u8],
    pub(super) config_bytes: &'a [u8],
    /// Uncompressed layer digests from the config, in manifest order.
    pub(super) diff_ids: &'a [String],
    /// The index (manifest list) the name resolved to, if any: it becomes the image's target,
    /// so the image keeps the digest the registry reports for the tag.
    pub(super) index: Option<(Descriptor, &'a [u8])>,
}

impl Containerd {
    pub(super) async fn images_import(
        &self,
        tarball: &Path,
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        let path = tarball.to_path_buf();
        let (archive, planned) = tokio::task::spawn_blocking(move || {
            let archive = Archive::open(&path)?;
            let images = archive.images()?;
            Ok::<_, RuntimeError>((archive, images))
        })
        .await
        .expect("archive reader does not panic")?;
        let lease = self.lease_create("import").await?;
        let mut out = Vec::new();
        let mut result = Ok(());
        for image in &planned {
            match self.import_one(&archive, image, &lease).await {
                Ok(mut infos) => out.append(&mut infos),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.lease_delete(lease).await;
        result.map(|()| out)
    }

    async fn import_one(
        &self,
        archive: &Archive,
        image: &PlannedImage,
        lease: &Lease,
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        let layers = image
            .layers
            .iter()
            .map(|blob| Source::Archive(archive.tar_path(), *blob))
            .collect();
        let write = ImageWrite {
            names: &image.names,
            manifest: &image.manifest,
            manifest_desc: image.manifest_descriptor(),
            manifest_bytes: &image.manifest_bytes,
            config_bytes: &image.config_bytes,
            diff_ids: &image.diff_ids,
            index: None,
        };
        let infos = self.image_store(write, layers, lease).await?;
        for info in &infos {
            info!(image = %info.name, digest = %info.digest, "image imported");
        }
        Ok(infos)
    }

    /// Writes an image into containerd: layers (those containerd lacks), config, manifest (and
    /// index) with the GC labels that keep them alive, unpacks the layers into snapshots, and
    /// points every name at the image. Import and registry pulls both end here; `layers` says
    /// where each layer's bytes come from, in manifest order.
    pub(super) async fn image_store(
        &self,
        image: ImageWrite<'_>,
        layers: Vec<Source<'_>>,
        lease: &Lease,
    ) -> Result<Vec<ImageInfo>, RuntimeError> {
        let manifest = image.manifest;
        if layers.len() != manifest.layers.len() || image.diff_ids.len() != layers.len() {
            return Err(RuntimeError::InvalidImage {
                image: image.names.first().cloned().unwrap_or_default(),
                reason: format!(
                    "{} layers in the manifest, {} in the config",
                    manifest.layers.len(),
                    image.diff_ids.len()
                ),
            });
        }
        // A few layers at a time, as `ctr` does: downloads overlap, writes stay bounded.
        let pairs: Vec<(&Descriptor, Source<'_>)> = manifest.layers.iter().zip(layers).collect();
        for group in pairs.chunks(LAYER_CONCURRENCY) {
            let mut writes = Vec::with_capacity(group.len());
            for (layer, source) in group {
                writes.push(self.content_write(layer, *source, BTreeMap::new(), lease));
            }
            futures::future::try_join_all(writes).await?;
        }
        let chain = chain_ids(image.diff_ids);
        let top = chain.last().cloned().unwrap_or_default();
        let snapshot_label = format!(
            "containerd.io/gc.ref.snapshot.{}",
            self.inner.config.snapshotter
        );
        let config_labels = BTreeMap::from([(snapshot_label, top)]);
        let config_source = Source::Bytes(image.config_bytes);
        self.content_write(&manifest.config, config_source, config_labels, lease)
            .await?;
        let manifest_source = Source::Bytes(image.manifest_bytes);
        self.content_write(
            &image.manifest_desc,
            manifest_source,
            manifest_gc_labels(manifest),
            lease,
        )
        .await?;
        let target = match &image.index {
            Some((index_desc, index_bytes)) => {
                let labels = BTreeMap::from([(
                    "containerd.io/gc.ref.content.m.0".to_string(),
                    image.manifest_desc.digest.clone(),
                )]);
                self.content_write(index_desc, Source::Bytes(index_bytes), labels, lease)
                    .await?;
                index_desc.clone()
            }
            None => image.manifest_desc.clone(),
        };
        let first = image.names.first().map_or("", String::as_str);
        self.unpack(first, manifest, image.diff_ids, lease).await?;
        let size = image_size(manifest, image.manifest_bytes.len());
        let mut out = Vec::new();
        for name in image.names {
            self.image_put(name, &target).await?;
            out.push(ImageInfo {
                name: name.clone(),
                digest: target.digest.clone(),
                size,
                updated_at: Some(std::time::SystemTime::now()),
            });
        }
        Ok(out)
    }

    /// Creates or updates the image record `name` → `target`.
    async fn image_put(&self, name: &str, target: &Descriptor) -> Result<(), RuntimeError> {
        let image = Image {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(to_proto(target)),
            created_at: None,
            updated_at: None,
        };
        let mut images = ImagesClient::new(self.channel());
        let created = images
            .create(self.request(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => images
                .update(self.request(UpdateImageRequest {
                    image: Some(image),
                    update_mask: None,
                    source_date_epoch: None,
                }))
                .await
                .map(|_| ())
                .map_err(|s| RuntimeError::grpc("update image", name, s)),
            Err(s) => Err(RuntimeError::grpc("create image", name, s)),
        }
    }

    /// Unpacks layers into committed snapshots named by chain id, skipping those present.
    async fn unpack(
        &self,
        image: &str,
        manifest: &Manifest,
        diff_ids: &[String],
        lease: &Lease,
    ) -> Result<(), RuntimeError> {
        let snapshotter = self.inner.config.snapshotter.clone();
        let mut snapshots = SnapshotsClient::new(self.channel());
        let chain = chain_ids(diff_ids);
        let mut parent = String::new();
        for ((layer, diff_id), chain_id) in manifest.layers.iter().zip(diff_ids).zip(&chain) {
            if self.snapshot_exists(chain_id).await? {
                parent = chain_id.clone();
                continue;
            }
            let key = format!("extract-{:016x}-{chain_id}", rand::random::<u64>());
            let mounts = snapshots
                .prepare(self.leased(
                    PrepareSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: HashMap::new(),
                    },
                    lease,
                ))
                .await
                .map_err(|s| RuntimeError::grpc("prepare snapshot", &key, s))?
                .into_inner()
                .mounts;
            let applied = DiffClient::new(self.channel())
                .apply(self.leased(
                    ApplyRequest {
                        diff: Some(to_proto(layer)),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    lease,
                ))
                .await;
            let check = match applied {
                Ok(reply) => match reply.into_inner().applied {
                    Some(d) if &d.digest == diff_id => Ok(()),
                    other => Err(RuntimeError::InvalidImage {
                        image: image.to_string(),
                        reason: format!(
                            "layer {} unpacked to {} but the config says {diff_id}",
                            layer.digest,
                            other.map(|d| d.digest).unwrap_or_default()
                        ),
                    }),
                },
                Err(s) => Err(RuntimeError::grpc("apply layer", &layer.digest, s)),
            };
            let committed = match check {
                Ok(()) => snapshots
                    .commit(self.leased(
                        CommitSnapshotRequest {
                            snapshotter: snapshotter.clone(),
                            name: chain_id.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                        lease,
                    ))
                    .await
                    .map(|_| ())
                    .or_else(|s| match s.code() {
                        // Another import committed the same layer meanwhile.
                        Code::AlreadyExists => Ok(()),
                        _ => Err(RuntimeError::grpc("commit snapshot", chain_id, s)),
                    }),
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                let _ = snapshots
                    .remove(self.request(RemoveSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key,
                    }))
                    .await;
                return Err(e);
            }
            parent = chain_id.clone();
        }
        Ok(())
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let stat = SnapshotsClient::new(self.channel())
            .stat(self.request(StatSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: key.to_string(),
            }))
            .await;
        Ok(not_found_ok(stat)
            .map_err(|s| RuntimeError::grpc("stat snapshot", key, s))?
            .is_some())
    }

    /// The single-platform manifest an image record points to (through an index if need be).
    async fn image_manifest(
        &self,
        name: &str,
        target: &ProtoDescriptor,
    ) -> Result<(Manifest, usize), RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidImage {
            image: name.to_string(),
            reason,
        };
        let mut digest = target.digest.clone();
        if is_index(&target.media_type) {
            let bytes = self.content_read(&digest).await?;
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index: {e}")))?;
            digest = pick_platform(&index)
                .ok_or_else(|| invalid("no manifest for this platform".to_string()))?
                .digest
                .clone();
        }
        let bytes = self.content_read(&digest).await?;
        let manifest =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest: {e}")))?;
        Ok((manifest, bytes.len()))
    }

    async fn image_record(&self, name: &str) -> Result<Option<Image>, RuntimeError> {
        let got = ImagesClient::new(self.channel())
            .get(self.request(GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        Ok(not_found_ok(got)
            .map_err(|s| RuntimeError::grpc("get image", name, s))?
            .and_then(|r| r.into_inner().image))
    }

    /// Reads what a container of image `reference` needs, unpacking the image if its snapshots
    /// are missing (an image written by other tools may not be unpacked for our snapshotter).
    pub(super) async fn image_resolve(
        &self,
        reference: &str,
    ) -> Result<ResolvedImage, RuntimeError> {
        let name = normalize_image_ref(reference);
        let image = self
            .image_record(&name)
            .await?
            .ok_or_else(|| RuntimeError::ImageNotFound {
                image: name.clone(),
            })?;
        let target = image.target.ok_or_else(|| RuntimeError::InvalidImage {
            image: name.clone(),
            reason: "image record has no target".to_string(),
        })?;
        let (manifest, _) = self.image_manifest(&name, &target).await?;
        let config_bytes = self.content_read(&manifest.config.digest).await?;
        let config: ImageConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| RuntimeError::InvalidImage {
                image: name.clone(),
                reason: format!("config: {e}"),
            })?;
        let chain_id =
            chain_ids(&config.rootfs.diff_ids)
                .pop()
                .ok_or_else(|| RuntimeError::InvalidImage {
                    image: name.clone(),
                    reason: "image has no layers".to_string(),
                })?;
        // The common case, an unpacked image, costs one Stat and no lease.
        if !self.snapshot_exists(&chain_id).await? {
            let lease = self.lease_create("unpack").await?;
            let unpacked = self
                .unpack(&name, &manifest, &config.rootfs.diff_ids, &lease)
                .await;
            self.lease_delete(lease).await;
            unpacked?;
        }
        Ok(ResolvedImage {
            name,
            config,
            chain_id,
        })
    }

    pub(super) async fn images_list(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        let images = ImagesClient::new(self.channel())
            .list(self.request(ListImagesRequest { filters: vec![] }))
            .await
            .map_err(|s| RuntimeError::grpc("list images", "", s))?
            .into_inner()
            .images;
        let mut out = Vec::new();
        for image in images {
            match self.image_info(&image).await {
                Ok(info) => out.push(info),
                // An image whose content is incomplete is listed by name with what we know.
                Err(e) => debug!(image = %image.name, error = %e, "image content unreadable"),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub(super) async fn images_get(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        let name = normalize_image_ref(name);
        match self.image_record(&name).await? {
            Some(image) => Ok(Some(self.image_info(&image).await?)),
            None => Ok(None),
        }
    }

    async fn image_info(&self, image: &Image) -> Result<ImageInfo, RuntimeError> {
        let target = image
            .target
            .clone()
            .ok_or_else(|| RuntimeError::InvalidImage {
                image: image.name.clone(),
                reason: "image record has no target".to_string(),
            })?;
        let (manifest, manifest_len) = self.image_manifest(&image.name, &target).await?;
        Ok(ImageInfo {
            name: image.name.clone(),
            digest: target.digest,
            size: image_size(&manifest, manifest_len),
            updated_at: image
                .updated_at
                .or(image.created_at)
                .and_then(|t| std::time::SystemTime::try_from(t).ok()),
        })
    }
}

fn image_size(manifest: &Manifest, manifest_len: usize) -> u64 {
    let blobs: i64 = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<i64>();
    manifest_len as u64 + blobs.max(0) as u64
}

fn to_proto(d: &Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}
