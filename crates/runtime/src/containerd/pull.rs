//! Registry pulls into containerd: resolve the reference, then write the image through the same
//! path an import takes (`images.rs`: content under a lease with GC labels, image record,
//! unpack). Blobs containerd already has are not downloaded. Also: making sure a service's
//! image is present per its pull policy, and removing images.

use std::sync::Arc;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{DeleteImageRequest, ListContainersRequest};
use hivemind_types::spec::PullPolicy;
use tokio::sync::mpsc;
use tracing::info;

use super::content::Source;
use super::images::ImageWrite;
use super::{not_found_ok, Containerd};
use crate::error::RuntimeError;
use crate::image::ImageConfigFile;
use crate::pull::{ProgressSink, PullProgress, Registry, RemoteBlob};
use crate::reference::normalize_image_ref;
use crate::ImageInfo;

impl Containerd {
    /// Pulls `reference`, joining a pull of the same reference already running on this node.
    pub(super) async fn images_pull(
        &self,
        reference: &str,
        progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<ImageInfo, RuntimeError> {
        let name = normalize_image_ref(reference);
        let this = self.clone();
        let owned = name.clone();
        self.inner
            .pulls
            .run(&name, progress, move |sink| async move {
                this.pull_once(&owned, sink).await
            })
            .await
    }

    async fn pull_once(&self, name: &str, sink: ProgressSink) -> Result<ImageInfo, RuntimeError> {
        let config = self.registry_config();
        let registry = Arc::new(Registry::new(name, &config)?);
        let resolved = registry.resolve().await?;
        let manifest = &resolved.manifest;
        let target_digest = resolved
            .index
            .as_ref()
            .map_or(&resolved.manifest_desc.digest, |(d, _)| &d.digest)
            .clone();
        sink.emit(PullProgress::Resolved {
            digest: target_digest.clone(),
            layers: manifest
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size.max(0) as u64))
                .collect(),
        });
        // The config is small but still skipped when containerd has it.
        let config_bytes = match self.content_read(&manifest.config.digest).await {
            Ok(bytes) => bytes,
            Err(e) if e.grpc_code() == Some(tonic::Code::NotFound) => {
                registry.fetch_blob(&manifest.config).await?
            }
            Err(e) => return Err(e),
        };
        let image_config: ImageConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| RuntimeError::InvalidImage {
                image: name.to_string(),
                reason: format!("config: {e}"),
            })?;
        let remotes: Vec<RemoteBlob> = manifest
            .layers
            .iter()
            .map(|layer| RemoteBlob::new(registry.clone(), layer.clone(), sink.clone()))
            .collect();
        let names = [name.to_string()];
        let write = ImageWrite {
            names: &names,
            manifest,
            manifest_desc: resolved.manifest_desc.clone(),
            manifest_bytes: &resolved.manifest_bytes,
            config_bytes: &config_bytes,
            diff_ids: &image_config.rootfs.diff_ids,
            index: resolved
                .index
                .as_ref()
                .map(|(desc, bytes)| (desc.clone(), bytes.as_slice())),
        };
        let lease = self.lease_create("pull").await?;
        let stored = self
            .image_store(write, remotes.iter().map(Source::Remote).collect(), &lease)
            .await;
        self.lease_delete(lease).await;
        let info = stored?.pop().ok_or_else(|| RuntimeError::InvalidImage {
            image: name.to_string(),
            reason: "nothing was stored".to_string(),
        })?;
        info!(image = %info.name, digest = %info.digest, "image pulled");
        sink.emit(PullProgress::Done {
            digest: info.digest.clone(),
        });
        Ok(info)
    }

    /// Makes sure `reference` is present before a container is created from it, per `policy`.
    /// With `Never` nothing is fetched: creating the container reports the missing image.
    pub(super) async fn image_ensure(
        &self,
        reference: &str,
        policy: PullPolicy,
    ) -> Result<(), RuntimeError> {
        match policy {
            PullPolicy::Never => Ok(()),
            PullPolicy::Always => self.images_pull(reference, None).await.map(drop),
            PullPolicy::Missing => {
                if self.images_get(reference).await?.is_some() {
                    return Ok(());
                }
                self.images_pull(reference, None).await.map(drop)
            }
        }
    }

    /// Removes the image record `reference`; its content and snapshots go with containerd's
    /// next garbage collection. Refused while a container in the namespace uses the image,
    /// unless `force`.
    pub async fn image_remove(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<ImageInfo, RuntimeError> {
        let name = normalize_image_ref(reference);
        let info = self
            .images_get(&name)
            .await?
            .ok_or_else(|| RuntimeError::ImageNotFound {
                image: name.clone(),
            })?;
        if !force {
            let containers = ContainersClient::new(self.channel())
                .list(self.request(ListContainersRequest { filters: vec![] }))
                .await
                .map_err(|s| RuntimeError::grpc("list containers", &name, s))?
                .into_inner()
                .containers;
            let users: Vec<String> = containers
                .into_iter()
                .filter(|c| c.image == name)
                .map(|c| c.id)
                .collect();
            if !users.is_empty() {
                return Err(RuntimeError::ImageInUse {
                    image: name,
                    containers: users,
                });
            }
        }
        let deleted = ImagesClient::new(self.channel())
            .delete(self.request(DeleteImageRequest {
                name: name.clone(),
                sync: false,
                target: None,
            }))
            .await;
        not_found_ok(deleted).map_err(|s| RuntimeError::grpc("delete image", &name, s))?;
        info!(image = %name, "image removed");
        Ok(info)
    }
}
