//! [`Containerd`]: the [`ContainerRuntime`] over containerd 1.6's gRPC API.
//!
//! Every call carries the `containerd-namespace` metadata; calls that create content or
//! snapshots also carry a `containerd-lease`, so that containerd's garbage collector cannot
//! remove half-made objects (see notes/containerd.md: without a lease a fresh snapshot can vanish
//! before its container record exists). Image import and unpacking are client-side, as 1.6 has
//! no transfer service: `images.rs` (records, unpacking) over `content.rs` (blobs). Registry
//! pulls end in the same path: `pull.rs`. Containers and tasks: `containers.rs`. The exit
//! stream: `events.rs`. Exec'd processes: `exec.rs`.

mod containers;
mod content;
mod copy_up;
mod events;
mod exec;
mod images;
mod leftovers;
mod log_uri;
mod pull;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{
    CreateNamespaceRequest, CreateRequest as LeaseCreateRequest,
    DeleteRequest as LeaseDeleteRequest, Namespace,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tracing::{debug, instrument};

use super::error::RuntimeError;
use super::pull::{InFlightPulls, PullProgress, RegistryConfig};
use super::{
    ContainerInfo, ContainerRuntime, CreateOptions, ExecInput, ExecOutput, ExecSpec, ImageInfo,
    RuntimeConfig, SweepReport, TaskExit,
};
use hivemind_types::Replica;

/// How long an operation's lease outlives a crashed agent before containerd collects it.
const LEASE_EXPIRY: Duration = Duration::from_secs(3600);

/// A connection to containerd, scoped to one namespace. Cheap to clone (one shared channel).
#[derive(Clone)]
pub struct Containerd {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    channel: Channel,
    namespace: MetadataValue<Ascii>,
    /// How registries are reached; see [`Containerd::set_registry_config`].
    registry: std::sync::RwLock<RegistryConfig>,
    /// Pulls running now, so that concurrent pulls of one reference download once.
    pulls: InFlightPulls,
    /// Held for reading by every create and for writing by the leftovers sweep: a container
    /// being created has a snapshot and files but no record yet, and must not look leftover.
    creating: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Containerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containerd")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Containerd {
    /// Connects to `config.socket` and creates `config.namespace` if it does not exist.
    pub async fn connect(config: RuntimeConfig) -> Result<Containerd, RuntimeError> {
        let namespace = config
            .namespace
            .parse::<MetadataValue<Ascii>>()
            .ok()
            .filter(|_| is_valid_namespace(&config.namespace))
            .ok_or_else(|| RuntimeError::Protocol {
                op: "connect",
                id: config.namespace.clone(),
                reason: "namespace names are letters, digits, `.`, `_` and `-`".to_string(),
            })?;
        let channel = containerd_client::connect(&config.socket)
            .await
            .map_err(|source| RuntimeError::Connect {
                socket: config.socket.clone(),
                source,
            })?;
        let runtime = Containerd {
            inner: Arc::new(Inner {
                config,
                channel,
                namespace,
                registry: std::sync::RwLock::new(RegistryConfig::from_env()),
                pulls: InFlightPulls::default(),
                creating: tokio::sync::RwLock::new(()),
            }),
        };
        runtime.ensure_namespace().await?;
        Ok(runtime)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Replaces how registries are reached (credentials file, plain-HTTP registries). The
    /// default comes from the environment: [`RegistryConfig::from_env`].
    pub fn set_registry_config(&self, config: RegistryConfig) {
        *self.inner.registry.write().expect("registry config lock") = config;
    }

    pub fn registry_config(&self) -> RegistryConfig {
        self.inner
            .registry
            .read()
            .expect("registry config lock")
            .clone()
    }

    pub(crate) fn channel(&self) -> Channel {
        self.inner.channel.clone()
    }

    /// A request carrying our namespace.
    pub(crate) fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.inner.namespace.clone());
        request
    }

    /// A request carrying our namespace and `lease`.
    pub(crate) fn leased<T>(&self, message: T, lease: &Lease) -> Request<T> {
        let mut request = self.request(message);
        request
            .metadata_mut()
            .insert("containerd-lease", lease.header.clone());
        request
    }

    async fn ensure_namespace(&self) -> Result<(), RuntimeError> {
        let ns = &self.inner.config.namespace;
        let request = CreateNamespaceRequest {
            namespace: Some(Namespace {
                name: ns.clone(),
                labels: HashMap::new(),
            }),
        };
        match NamespacesClient::new(self.channel())
            .create(self.request(request))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(RuntimeError::grpc("create namespace", ns, s)),
        }
    }

    /// Creates a lease that expires on its own if we crash before deleting it.
    pub(crate) async fn lease_create(&self, purpose: &str) -> Result<Lease, RuntimeError> {
        let id = format!("hivemind-{purpose}-{:016x}", rand::random::<u64>());
        let expire = humantime::format_rfc3339_seconds(SystemTime::now() + LEASE_EXPIRY);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire.to_string())]);
        LeasesClient::new(self.channel())
            .create(self.request(LeaseCreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| RuntimeError::grpc("create lease", &id, s))?;
        let header = id.parse().expect("lease ids are ASCII");
        Ok(Lease { id, header })
    }

    /// Deletes a lease; what it protected is now protected by references (or collected).
    /// Failures are logged, not returned: the lease expires anyway.
    pub(crate) async fn lease_delete(&self, lease: Lease) {
        let result = LeasesClient::new(self.channel())
            .delete(self.request(LeaseDeleteRequest {
                id: lease.id.clone(),
                sync: false,
            }))
            .await;
        if let Err(status) = result {
            debug!(lease = %lease.id, %status, "lease delete failed; it will expire");
        }
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.inner.config.run_dir.join(id)
    }
}

/// A containerd lease held for the duration of one operation.
pub(crate) struct Lease {
    id: String,
    header: MetadataValue<Ascii>,
}

/// containerd's namespace rule: `[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*`, roughly.
fn is_valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 76
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Maps `NotFound` to `Ok(None)`, as many teardown steps are idempotent.
pub(crate) fn not_found_ok<T>(
    result: Result<T, tonic::Status>,
) -> Result<Option<T>, tonic::Status> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

impl ContainerRuntime for Containerd {
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        self.containers_list().await
    }

    #[instrument(skip_all, fields(replica = %replica.id))]
    async fn create(&self, replica: &Replica, options: &CreateOptions) -> Result<(), RuntimeError> {
        let _not_swept = self.inner.creating.read().await;
        self.container_create(replica, options).await
    }

    #[instrument(skip(self))]
    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        self.task_start(id).await
    }

    #[instrument(skip(self))]
    async fn stop(
        &self,
        id: &str,
        signal: &str,
        grace: Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        self.task_stop(id, signal, grace).await
    }

    #[instrument(skip(self))]
    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.container_remove(id).await
    }

    async fn sweep_leftovers(&self, min_age: Duration) -> Result<SweepReport, RuntimeError> {
        self.sweep_owned_leftovers(min_age).await
    }

    async fn exits(&self) -> Result<tokio::sync::mpsc::Receiver<TaskExit>, RuntimeError> {
        self.task_exits().await
    }

    #[instrument(skip(self))]
    async fn image_import(&self, tarball: &Path) -> Result<Vec<ImageInfo>, RuntimeError> {
        self.images_import(tarball).await
    }

    #[instrument(skip(self, progress))]
    async fn image_pull(
        &self,
        reference: &str,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> Result<ImageInfo, RuntimeError> {
        self.images_pull(reference, progress).await
    }

    async fn image_list(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        self.images_list().await
    }

    async fn image_get(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        self.images_get(name).await
    }

    async fn image_remove(&self, reference: &str, force: bool) -> Result<ImageInfo, RuntimeError> {
        Containerd::image_remove(self, reference, force).await
    }

    #[instrument(skip(self, output))]
    async fn exec(
        &self,
        id: &str,
        args: &[String],
        output: tokio::sync::mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        self.task_exec(id, args, output).await
    }

    #[instrument(skip(self, spec, input, output), fields(args = ?spec.args, tty = spec.tty.is_some()))]
    async fn exec_session(
        &self,
        id: &str,
        spec: ExecSpec,
        input: tokio::sync::mpsc::Receiver<ExecInput>,
        output: tokio::sync::mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        self.task_exec_session(id, spec, input, output).await
    }

    async fn exec_sweep(&self) -> Result<usize, RuntimeError> {
        self.task_exec_sweep().await
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_namespace;

    #[test]
    fn namespace_names() {
        assert!(is_valid_namespace("hivemind"));
        assert!(is_valid_namespace("hm-test-abc_1.x"));
        assert!(!is_valid_namespace(""));
        assert!(!is_valid_namespace("a b"));
        assert!(!is_valid_namespace("a/b"));
    }
}
