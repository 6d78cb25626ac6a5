//! Images, client-side as containerd 1.6 requires: writing blobs into the content store, creating
//! image records, unpacking layers into snapshots, and reading an image back (manifest, config,
//! chain id) when a container is created.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, Info as ContentInfo,
    ListImagesRequest, ReadContentRequest, UpdateImageRequest, UpdateRequest as ContentUpdate,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor as ProtoDescriptor;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::Code;
use tracing::{debug, info};

use super::{not_found_ok, Containerd, Lease};
use crate::runtime::archive::{Archive, BlobRef, PlannedImage};
use crate::runtime::error::RuntimeError;
use crate::runtime::image::{
    chain_ids, is_index, manifest_gc_labels, pick_platform, Descriptor, ImageConfigFile, Index,
    Manifest,
};
use crate::runtime::reference::normalize_image_ref;
use crate::runtime::ImageInfo;

/// Upload chunk size for `Content.Write`.
const CHUNK: usize = 1 << 20;

/// An image as a container needs it.
pub(super) struct ResolvedImage {
    pub(super) name: String,
    pub(super) config: ImageConfigFile,
    /// Chain id of the top layer: the parent snapshot of a container's rootfs.
    pub(super) chain_id: String,
}

/// Where a blob's bytes come from.
enum Source<'a> {
    Bytes(&'a [u8]),
    Archive(&'a Path, BlobRef),
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
        let manifest = &image.manifest;
        for (layer, blob) in manifest.layers.iter().zip(&image.layers) {
            let source = Source::Archive(archive.tar_path(), *blob);
            self.content_write(layer, source, BTreeMap::new(), lease)
                .await?;
        }
        let chain = chain_ids(&image.diff_ids);
        let top = chain.last().cloned().unwrap_or_default();
        let snapshot_label = format!(
            "containerd.io/gc.ref.snapshot.{}",
            self.inner.config.snapshotter
        );
        let config_labels = BTreeMap::from([(snapshot_label, top)]);
        let config_source = Source::Bytes(&image.config_bytes);
        self.content_write(&manifest.config, config_source, config_labels, lease)
            .await?;
        let manifest_desc = image.manifest_descriptor();
        let manifest_source = Source::Bytes(&image.manifest_bytes);
        self.content_write(
            &manifest_desc,
            manifest_source,
            manifest_gc_labels(manifest),
            lease,
        )
        .await?;
        self.unpack(&image.names[0], manifest, &image.diff_ids, lease)
            .await?;
        let size = image_size(manifest, image.manifest_bytes.len());
        let mut out = Vec::new();
        for name in &image.names {
            self.image_put(name, &manifest_desc).await?;
            info!(image = %name, digest = %manifest_desc.digest, "image imported");
            out.push(ImageInfo {
                name: name.clone(),
                digest: manifest_desc.digest.clone(),
                size,
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

    /// Writes one blob unless containerd already has it, and makes sure it carries `labels`.
    async fn content_write(
        &self,
        desc: &Descriptor,
        source: Source<'_>,
        labels: BTreeMap<String, String>,
        lease: &Lease,
    ) -> Result<(), RuntimeError> {
        let digest = desc.digest.clone();
        let err = |s| RuntimeError::grpc("write content", &digest, s);
        let total = desc.size;
        let labels: HashMap<String, String> = labels.into_iter().collect();
        let msg = |action: WriteAction, offset: i64, data: Vec<u8>, labels| WriteContentRequest {
            action: action as i32,
            r#ref: format!("hivemind-import-{digest}"),
            total,
            expected: digest.clone(),
            offset,
            data,
            labels,
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Go's gRPC server sends response headers with its first message, so the STAT must be
        // queued before awaiting the call.
        let _ = tx
            .send(msg(WriteAction::Stat, 0, Vec::new(), HashMap::new()))
            .await;
        let mut client = ContentClient::new(self.channel());
        let mut replies = match client
            .write(self.leased(ReceiverStream::new(rx), lease))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await;
            }
            Err(s) => return Err(err(s)),
        };
        let next = |r: Option<Result<_, tonic::Status>>| match r {
            Some(Ok(reply)) => Ok(reply),
            Some(Err(s)) => Err(s),
            None => Err(tonic::Status::unknown("content write stream ended early")),
        };
        let stat = match next(replies.next().await) {
            Ok(stat) => stat,
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await;
            }
            Err(s) => return Err(err(s)),
        };
        let mut offset = stat.offset;
        if offset < total {
            match source {
                Source::Bytes(bytes) => {
                    for chunk in bytes[offset as usize..].chunks(CHUNK) {
                        let _ = tx
                            .send(msg(
                                WriteAction::Write,
                                offset,
                                chunk.to_vec(),
                                HashMap::new(),
                            ))
                            .await;
                        next(replies.next().await).map_err(err)?;
                        offset += chunk.len() as i64;
                    }
                }
                Source::Archive(path, blob) => {
                    let io_err = |e| RuntimeError::io("read image archive", path, e);
                    let mut file = tokio::fs::File::open(path).await.map_err(io_err)?;
                    file.seek(std::io::SeekFrom::Start(blob.offset + offset as u64))
                        .await
                        .map_err(io_err)?;
                    let mut buf = vec![0u8; CHUNK];
                    while offset < total {
                        let want = CHUNK.min((total - offset) as usize);
                        file.read_exact(&mut buf[..want]).await.map_err(io_err)?;
                        let _ = tx
                            .send(msg(
                                WriteAction::Write,
                                offset,
                                buf[..want].to_vec(),
                                HashMap::new(),
                            ))
                            .await;
                        next(replies.next().await).map_err(err)?;
                        offset += want as i64;
                    }
                }
            }
        }
        // Commit must carry the current offset: 0 would truncate and fail size validation.
        let _ = tx
            .send(msg(WriteAction::Commit, offset, Vec::new(), labels.clone()))
            .await;
        match next(replies.next().await) {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                return self.content_label(&digest, labels).await;
            }
            Err(s) => return Err(err(s)),
        }
        drop(tx);
        debug!(%digest, total, "blob written");
        Ok(())
    }

    /// Sets `labels` on an existing blob (a blob written earlier may lack the GC references).
    async fn content_label(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel())
            .update(self.request(ContentUpdate {
                info: Some(ContentInfo {
                    digest: digest.to_string(),
                    size: 0,
                    created_at: None,
                    updated_at: None,
                    labels,
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map(|_| ())
            .map_err(|s| RuntimeError::grpc("label content", digest, s))
    }

    /// Reads a whole blob (manifests and configs: small).
    pub(super) async fn content_read(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let err = |s| RuntimeError::grpc("read content", digest, s);
        let mut stream = ContentClient::new(self.channel())
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(err)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(err)?.data);
        }
        Ok(out)
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
