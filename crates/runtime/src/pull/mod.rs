//! Registry pulls: what the runtime needs to fetch an image from an OCI registry before it
//! writes the image into containerd the same way an import does.
//!
//! This module owns the registry side only: resolving a reference to a manifest (picking this
//! host's platform from an index), fetching and verifying blobs (`registry.rs`, over
//! `oci-client`), registry credentials in Docker's `config.json` format (`credentials.rs`),
//! progress events, and the deduplication of concurrent pulls of one reference (`inflight.rs`).
//! It never talks to containerd: `containerd/pull.rs` drives a pull and hands the blobs to the
//! shared image-writing path in `containerd/images.rs`.
//!
//! Plain HTTP is used only for insecure registries: loopback (`localhost`, `127.0.0.0/8`,
//! `[::1]`) and those listed in [`RegistryConfig::insecure`]; everything else is HTTPS.

mod credentials;
mod inflight;
mod registry;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::error::RuntimeError;
use crate::image::Descriptor;

pub use self::credentials::{
    credentials_for, credentials_remove, credentials_store, docker_config_path, Credentials,
    CredentialsError,
};
pub(crate) use self::inflight::InFlightPulls;
pub(crate) use self::registry::Registry;
pub use self::registry::{is_insecure_registry, registry_login_check};

/// The environment variable listing extra plain-HTTP registries (`host:port`, comma-separated).
pub const INSECURE_REGISTRIES_ENV: &str = "HIVEMIND_INSECURE_REGISTRIES";

/// How the runtime reaches registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryConfig {
    /// Docker's `config.json` holding credentials; `None` pulls anonymously. Read at every
    /// pull, so a `hivemind registry login` takes effect without restarting the agent.
    pub docker_config: Option<PathBuf>,
    /// Registries (`host:port`, or `host` for every port) reached over plain HTTP in addition
    /// to the loopback ones.
    pub insecure: Vec<String>,
}

impl RegistryConfig {
    /// `DOCKER_CONFIG` (or `~/.docker`) for credentials and `HIVEMIND_INSECURE_REGISTRIES`.
    pub fn from_env() -> RegistryConfig {
        let insecure = std::env::var(INSECURE_REGISTRIES_ENV)
            .map(|v| parse_insecure_list(&v))
            .unwrap_or_default();
        RegistryConfig {
            docker_config: docker_config_path(),
            insecure,
        }
    }
}

/// `a:5000, b ,,c:1` → `["a:5000", "b", "c:1"]`.
fn parse_insecure_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// What a pull reports while it runs. Byte counts are of the blobs as stored in the registry
/// (compressed layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullProgress {
    /// The reference resolved to `digest`; the image has these layers (digest, size).
    Resolved {
        digest: String,
        layers: Vec<(String, u64)>,
    },
    /// containerd already has this layer: it is not downloaded.
    LayerPresent { digest: String, size: u64 },
    /// Bytes of a layer received so far.
    LayerProgress {
        digest: String,
        received: u64,
        size: u64,
    },
    /// A layer was downloaded, verified and committed to the content store.
    LayerDownloaded { digest: String, size: u64 },
    /// The layers are unpacked; the image is ready to run.
    Done { digest: String },
}

/// Where progress events go: every caller waiting on the same pull. Events are offered with
/// `try_send`, so a slow reader loses byte counts instead of slowing the pull.
#[derive(Clone, Default)]
pub(crate) struct ProgressSink {
    senders: Arc<Mutex<Vec<mpsc::Sender<PullProgress>>>>,
}

impl ProgressSink {
    pub(crate) fn add(&self, sender: mpsc::Sender<PullProgress>) {
        self.senders.lock().expect("progress lock").push(sender);
    }

    pub(crate) fn emit(&self, event: PullProgress) {
        let mut senders = self.senders.lock().expect("progress lock");
        senders.retain(|s| !s.is_closed());
        for sender in senders.iter() {
            let _ = sender.try_send(event.clone());
        }
    }
}

/// One layer to fetch from the registry, handed to the content writer, which opens it only if
/// containerd lacks the blob.
pub(crate) struct RemoteBlob {
    registry: Arc<Registry>,
    desc: Descriptor,
    sink: ProgressSink,
}

/// A stream of a blob's bytes, verified against its digest by the time it ends.
pub(crate) type BlobStream =
    futures::stream::BoxStream<'static, Result<bytes::Bytes, RuntimeError>>;

impl RemoteBlob {
    pub(crate) fn new(registry: Arc<Registry>, desc: Descriptor, sink: ProgressSink) -> Self {
        RemoteBlob {
            registry,
            desc,
            sink,
        }
    }

    /// Starts the download. The stream fails at its end if the bytes do not match the digest.
    pub(crate) async fn open(&self) -> Result<BlobStream, RuntimeError> {
        use futures::StreamExt;
        let stream = self.registry.blob_stream(&self.desc).await?;
        let sink = self.sink.clone();
        let digest = self.desc.digest.clone();
        let size = self.desc.size.max(0) as u64;
        let mut received = 0u64;
        Ok(stream
            .inspect(move |chunk| {
                if let Ok(bytes) = chunk {
                    received += bytes.len() as u64;
                    sink.emit(PullProgress::LayerProgress {
                        digest: digest.clone(),
                        received,
                        size,
                    });
                }
            })
            .boxed())
    }

    /// The error for a download that ended before `size` bytes.
    pub(crate) fn short(&self, got: u64) -> RuntimeError {
        self.registry.failure(
            format!(
                "blob {} ended after {got} of {} bytes",
                self.desc.digest, self.desc.size
            ),
            "retry the pull; if it keeps failing, push the image to the registry again",
        )
    }

    /// Reports the layer as downloaded (`written`) or already present.
    pub(crate) fn finished(&self, written: bool) {
        let digest = self.desc.digest.clone();
        let size = self.desc.size.max(0) as u64;
        self.sink.emit(if written {
            PullProgress::LayerDownloaded { digest, size }
        } else {
            PullProgress::LayerPresent { digest, size }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_list_is_comma_separated() {
        assert_eq!(
            parse_insecure_list(" reg.lan:5000, ,10.0.0.5:80,"),
            vec!["reg.lan:5000".to_string(), "10.0.0.5:80".to_string()]
        );
        assert!(parse_insecure_list("").is_empty());
    }

    #[tokio::test]
    async fn progress_goes_to_every_live_subscriber() {
        let sink = ProgressSink::default();
        let (a, mut ra) = mpsc::channel(4);
        let (b, rb) = mpsc::channel(4);
        sink.add(a);
        sink.add(b);
        drop(rb);
        sink.emit(PullProgress::Done {
            digest: "sha256:x".into(),
        });
        assert!(matches!(ra.recv().await, Some(PullProgress::Done { .. })));
        assert_eq!(sink.senders.lock().unwrap().len(), 1);
    }
}
