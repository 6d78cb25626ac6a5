//! Containers and their tasks: create (snapshot + spec + container record), start, stop, remove,
//! list, and the exit-event stream. Teardown steps tolerate `NotFound` so that every operation
//! can be retried by the next reconcile.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    ListTasksRequest, StartRequest, WaitRequest,
};
use containerd_client::types::v1::{Process, Status};
use containerd_client::types::Mount as ProtoMount;
use hivemind_types::healthcheck::{ImageHealthcheck, IMAGE_HEALTHCHECK_LABEL};
use hivemind_types::{Replica, ServiceSpec};
use tonic::Code;
use tracing::{debug, info, warn};

use super::log_uri::log_driver_uri;
use super::{not_found_ok, Containerd};
use crate::error::RuntimeError;
use crate::oci::{
    build_spec, container_hostname, container_resolv_conf, hosts_file, process_args, SpecInput,
    INIT_HOST_PATH,
};
use crate::signal::{parse_signal, SIGKILL};
use crate::user::resolve_user;
use crate::{labels, ContainerInfo, CreateOptions, TaskState};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC: &str = "io.containerd.runc.v2";
/// How long `remove` waits for a SIGKILLed task to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl Containerd {
    fn containers(&self) -> ContainersClient<tonic::transport::Channel> {
        ContainersClient::new(self.channel())
    }

    pub(super) fn tasks(&self) -> TasksClient<tonic::transport::Channel> {
        TasksClient::new(self.channel())
    }

    fn snapshots(&self) -> SnapshotsClient<tonic::transport::Channel> {
        SnapshotsClient::new(self.channel())
    }

    pub(super) async fn container_get(&self, id: &str) -> Result<Option<Container>, RuntimeError> {
        let got = self
            .containers()
            .get(self.request(GetContainerRequest { id: id.to_string() }))
            .await;
        Ok(not_found_ok(got)
            .map_err(|s| RuntimeError::grpc("get container", id, s))?
            .and_then(|r| r.into_inner().container))
    }

    async fn task_get(&self, id: &str) -> Result<Option<Process>, RuntimeError> {
        let got = self
            .tasks()
            .get(self.request(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        Ok(not_found_ok(got)
            .map_err(|s| RuntimeError::grpc("get task", id, s))?
            .and_then(|r| r.into_inner().process))
    }

    pub(super) async fn container_create(
        &self,
        replica: &Replica,
        options: &CreateOptions,
    ) -> Result<(), RuntimeError> {
        let id = replica.id.as_str();
        if self.container_get(id).await?.is_some() {
            return Err(RuntimeError::AlreadyExists { id: id.to_string() });
        }
        self.image_ensure(&replica.spec.image, replica.spec.pull_policy)
            .await?;
        let image = self.image_resolve(&replica.spec.image).await?;
        let image_config = image.config.config.clone().unwrap_or_default();
        let args = process_args(&image_config, &replica.spec)
            .ok_or_else(|| RuntimeError::NoCommand { id: id.to_string() })?;

        let lease = self.lease_create("create").await?;
        let result = async {
            let mounts = self.snapshot_prepare(id, &image.chain_id, &lease).await?;
            let made = async {
                let user_str = replica
                    .spec
                    .user
                    .clone()
                    .or(image_config.user.clone())
                    .unwrap_or_default();
                let (passwd, group) = read_user_files(&mounts).await;
                let user = resolve_user(&user_str, &passwd, &group).map_err(|_| {
                    RuntimeError::UserNotFound {
                        id: id.to_string(),
                        user: user_str.clone(),
                    }
                })?;
                if replica.spec.init && !Path::new(INIT_HOST_PATH).exists() {
                    return Err(RuntimeError::InitMissing { id: id.to_string() });
                }
                let files = self.write_run_files(id, &replica.spec, options).await?;
                let scratch = self.run_dir(id).join("image-view");
                super::copy_up::copy_up(id, &mounts, &scratch, &options.mounts).await?;
                let input = SpecInput {
                    id,
                    image: &image_config,
                    service: &replica.spec,
                    user,
                    resolv_conf: &files.resolv_conf,
                    hosts: &files.hosts,
                    hostname: &files.hostname,
                    network_ns: options.network_ns.as_deref(),
                    volumes: &options.mounts,
                };
                let spec = build_spec(&input, args)
                    .and_then(|spec| crate::oci::files::with_file_binds(spec, &options.file_binds))
                    .map_err(|source| RuntimeError::Spec {
                        id: id.to_string(),
                        source,
                    })?;
                let spec_json = serde_json::to_vec(&spec).expect("spec serializes");
                let container = Container {
                    id: id.to_string(),
                    labels: container_labels(replica, image_config.healthcheck.as_ref()),
                    image: image.name.clone(),
                    runtime: Some(Runtime {
                        name: RUNC.to_string(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: SPEC_TYPE_URL.to_string(),
                        value: spec_json,
                    }),
                    snapshotter: self.inner.config.snapshotter.clone(),
                    snapshot_key: id.to_string(),
                    ..Default::default()
                };
                self.containers()
                    .create(self.leased(
                        CreateContainerRequest {
                            container: Some(container),
                        },
                        &lease,
                    ))
                    .await
                    .map_err(|s| match s.code() {
                        Code::AlreadyExists => RuntimeError::AlreadyExists { id: id.to_string() },
                        _ => RuntimeError::grpc("create container", id, s),
                    })?;
                Ok(())
            }
            .await;
            if made.is_err() {
                self.snapshot_remove(id).await;
                let _ = tokio::fs::remove_dir_all(self.run_dir(id)).await;
            }
            made
        }
        .await;
        self.lease_delete(lease).await;
        if result.is_ok() {
            info!(image = %image.name, "container created");
        }
        result
    }

    /// Prepares the container's writable snapshot. A snapshot left by a create that crashed
    /// before its container record existed is replaced.
    async fn snapshot_prepare(
        &self,
        id: &str,
        parent: &str,
        lease: &super::Lease,
    ) -> Result<Vec<ProtoMount>, RuntimeError> {
        let request = || PrepareSnapshotRequest {
            snapshotter: self.inner.config.snapshotter.clone(),
            key: id.to_string(),
            parent: parent.to_string(),
            labels: HashMap::new(),
        };
        let mut snapshots = self.snapshots();
        let first = snapshots.prepare(self.leased(request(), lease)).await;
        let reply = match first {
            Err(s) if s.code() == Code::AlreadyExists => {
                warn!("replacing a stale snapshot");
                self.snapshot_remove(id).await;
                snapshots.prepare(self.leased(request(), lease)).await
            }
            other => other,
        };
        Ok(reply
            .map_err(|s| RuntimeError::grpc("prepare snapshot", id, s))?
            .into_inner()
            .mounts)
    }

    async fn snapshot_remove(&self, id: &str) {
        let removed = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter: self.inner.config.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await;
        if let Err(s) = not_found_ok(removed) {
            warn!(status = %s, "snapshot remove failed");
        }
    }

    /// Writes `{run_dir}/{id}/{resolv.conf,hosts,hostname}`.
    async fn write_run_files(
        &self,
        id: &str,
        service: &ServiceSpec,
        options: &CreateOptions,
    ) -> Result<RunFiles, RuntimeError> {
        let dir = self.run_dir(id);
        let io = |p: &Path, e| RuntimeError::io("write container files", p, e);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| io(&dir, e))?;
        let host_resolv = tokio::fs::read_to_string("/etc/resolv.conf")
            .await
            .unwrap_or_default();
        let files = RunFiles {
            resolv_conf: dir.join("resolv.conf"),
            hosts: dir.join("hosts"),
            hostname: dir.join("hostname"),
        };
        for (path, content) in [
            (
                &files.resolv_conf,
                options
                    .resolv_conf
                    .clone()
                    .unwrap_or_else(|| container_resolv_conf(&host_resolv)),
            ),
            (
                &files.hosts,
                hosts_file(
                    container_hostname(id, service),
                    options.ip,
                    &service.extra_hosts,
                ),
            ),
            (
                &files.hostname,
                format!("{}\n", container_hostname(id, service)),
            ),
        ] {
            tokio::fs::write(path, content)
                .await
                .map_err(|e| io(path, e))?;
        }
        Ok(files)
    }

    pub(super) async fn task_start(&self, id: &str) -> Result<u32, RuntimeError> {
        if let Some(task) = self.task_get(id).await? {
            match Status::try_from(task.status) {
                Ok(Status::Running) => return Ok(task.pid),
                Ok(Status::Created) => return self.task_start_created(id).await,
                _ => {
                    self.task_delete(id).await?;
                }
            }
        }
        let container = self
            .container_get(id)
            .await?
            .ok_or_else(|| RuntimeError::NotFound { id: id.to_string() })?;
        let mounts = self
            .snapshots()
            .mounts(self.request(MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .map_err(|s| RuntimeError::grpc("snapshot mounts", id, s))?
            .into_inner()
            .mounts;
        let config = &self.inner.config;
        let log_uri = log_driver_uri(config, id, &container.labels).await?;
        self.tasks()
            .create(self.request(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                // The shim only reads stdout's URI for a binary driver, which takes both streams.
                stdout: log_uri.clone(),
                stderr: log_uri,
                ..Default::default()
            }))
            .await
            .map_err(|s| RuntimeError::grpc("create task", id, s))?;
        self.task_start_created(id).await
    }

    async fn task_start_created(&self, id: &str) -> Result<u32, RuntimeError> {
        let started = self
            .tasks()
            .start(self.request(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await;
        match started {
            Ok(reply) => {
                let pid = reply.into_inner().pid;
                info!(pid, "task started");
                Ok(pid)
            }
            Err(s) => {
                // Leave no half-started task behind: the next start creates a fresh one.
                let _ = self.task_delete(id).await;
                Err(RuntimeError::grpc("start task", id, s))
            }
        }
    }

    /// Deletes a finished task and returns its exit status (`None` if there was no task).
    async fn task_delete(&self, id: &str) -> Result<Option<i32>, RuntimeError> {
        let deleted = self
            .tasks()
            .delete(self.request(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        Ok(not_found_ok(deleted)
            .map_err(|s| RuntimeError::grpc("delete task", id, s))?
            .map(|r| r.into_inner().exit_status as i32))
    }

    async fn task_kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let killed = self
            .tasks()
            .kill(self.request(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await;
        // NotFound: the process already exited; that is what we wanted.
        not_found_ok(killed)
            .map(|_| ())
            .map_err(|s| RuntimeError::grpc("kill task", id, s))
    }

    /// Waits for the init process to exit, at most `limit`. `Ok(None)` on timeout.
    fn task_wait(&self, id: &str) -> tokio::task::JoinHandle<Result<u32, tonic::Status>> {
        let mut tasks = self.tasks();
        let request = self.request(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        tokio::spawn(async move {
            tasks
                .wait(request)
                .await
                .map(|r| r.into_inner().exit_status)
        })
    }

    pub(super) async fn task_stop(
        &self,
        id: &str,
        signal: &str,
        grace: Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        let signo = parse_signal(signal).ok_or_else(|| RuntimeError::BadSignal {
            id: id.to_string(),
            signal: signal.to_string(),
        })?;
        let Some(task) = self.task_get(id).await? else {
            return Ok(None);
        };
        if Status::try_from(task.status) != Ok(Status::Stopped) {
            // Wait first, so that an exit right after the signal is not missed.
            let mut wait = self.task_wait(id);
            self.task_kill(id, signo).await?;
            if tokio::time::timeout(grace, &mut wait).await.is_err() {
                debug!(?grace, "grace period over, sending SIGKILL");
                self.task_kill(id, SIGKILL).await?;
                match tokio::time::timeout(KILL_WAIT, wait).await {
                    Ok(_) => {}
                    Err(_) => warn!("task still running {KILL_WAIT:?} after SIGKILL"),
                }
            }
        }
        let code = self.task_delete(id).await?;
        info!(exit_code = ?code, "task stopped");
        Ok(code)
    }

    pub(super) async fn container_remove(&self, id: &str) -> Result<(), RuntimeError> {
        if let Some(task) = self.task_get(id).await? {
            if Status::try_from(task.status) != Ok(Status::Stopped) {
                let wait = self.task_wait(id);
                self.task_kill(id, SIGKILL).await?;
                if tokio::time::timeout(KILL_WAIT, wait).await.is_err() {
                    warn!("task still running {KILL_WAIT:?} after SIGKILL");
                }
            }
            self.task_delete(id).await?;
        }
        // Snapshot before container: in the other order GC may take the snapshot first.
        let snapshotter = match self.container_get(id).await? {
            Some(c) if !c.snapshotter.is_empty() => c.snapshotter,
            _ => self.inner.config.snapshotter.clone(),
        };
        let removed = self
            .snapshots()
            .remove(self.request(RemoveSnapshotRequest {
                snapshotter,
                key: id.to_string(),
            }))
            .await;
        not_found_ok(removed).map_err(|s| RuntimeError::grpc("remove snapshot", id, s))?;
        let deleted = self
            .containers()
            .delete(self.request(DeleteContainerRequest { id: id.to_string() }))
            .await;
        not_found_ok(deleted).map_err(|s| RuntimeError::grpc("delete container", id, s))?;
        // Its logs go with it, as in Kubernetes and Docker: nothing can ask for a removed
        // replica's logs (its exits are kept in events, with their last lines).
        let log_dir = self.inner.config.replica_log_dir(id);
        for dir in [self.run_dir(id), log_dir] {
            match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    warn!(error = %e, dir = %dir.display(), "removing container files failed");
                }
                _ => {}
            }
        }
        info!("container removed");
        Ok(())
    }

    pub(super) async fn containers_list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let containers = self
            .containers()
            .list(self.request(ListContainersRequest {
                filters: vec![format!("labels.\"{}\"", labels::REPLICA)],
            }))
            .await
            .map_err(|s| RuntimeError::grpc("list containers", "", s))?
            .into_inner()
            .containers;
        let tasks: HashMap<String, Process> = self
            .tasks()
            .list(self.request(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| RuntimeError::grpc("list tasks", "", s))?
            .into_inner()
            .tasks
            .into_iter()
            .map(|t| {
                // containerd 1.6 fills only `id` (the init process id, which is the
                // container id); newer versions also set `container_id`.
                let key = if t.container_id.is_empty() {
                    t.id.clone()
                } else {
                    t.container_id.clone()
                };
                (key, t)
            })
            .collect();
        let mut out: Vec<ContainerInfo> = containers
            .into_iter()
            .map(|c| ContainerInfo {
                task: tasks.get(&c.id).map(task_state),
                id: c.id,
                labels: c.labels.into_iter().collect(),
                image: c.image,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

struct RunFiles {
    resolv_conf: PathBuf,
    hosts: PathBuf,
    hostname: PathBuf,
}

fn task_state(p: &Process) -> TaskState {
    match Status::try_from(p.status) {
        Ok(Status::Created) => TaskState::Created,
        Ok(Status::Running) => TaskState::Running { pid: p.pid },
        Ok(Status::Stopped) => TaskState::Stopped {
            exit_code: p.exit_status as i32,
        },
        _ => TaskState::Unknown,
    }
}

fn container_labels(
    replica: &Replica,
    image_check: Option<&ImageHealthcheck>,
) -> HashMap<String, String> {
    let mut out: BTreeMap<String, String> = replica.spec.labels.clone();
    // The agent runs the image's own check when the service sets none: it reads it from the
    // container's labels, which it lists anyway, rather than from the image on every pass.
    if let Some(label) = image_check.and_then(image_healthcheck_label) {
        out.insert(IMAGE_HEALTHCHECK_LABEL.to_string(), label);
    }
    for (k, v) in [
        (labels::REPLICA, &replica.id),
        (labels::SERVICE, &replica.service),
        (labels::APP, &replica.app),
        (labels::NAMESPACE, &replica.namespace),
        (labels::REVISION, &replica.revision_hash),
    ] {
        out.insert(k.to_string(), v.clone());
    }
    // The log settings travel with the container, so a restart by a later agent (which only
    // has the id) still uses them.
    if let Some(size) = replica.spec.logging.max_size {
        out.insert(labels::LOG_MAX_SIZE.to_string(), size.to_string());
    }
    if let Some(files) = replica.spec.logging.max_files {
        out.insert(labels::LOG_MAX_FILES.to_string(), files.to_string());
    }
    out.into_iter().collect()
}

/// The image's check as a label value, if it has a test and fits a containerd label (4 kB
/// with its key; a longer test is dropped with a warning rather than failing the create).
fn image_healthcheck_label(check: &ImageHealthcheck) -> Option<String> {
    if check.test.is_empty() {
        return None;
    }
    let json = serde_json::to_string(check).expect("healthcheck serializes");
    if json.len() + IMAGE_HEALTHCHECK_LABEL.len() > 4000 {
        warn!(
            bytes = json.len(),
            "the image's HEALTHCHECK is too long for a container label; it is not run"
        );
        return None;
    }
    Some(json)
}

/// Reads /etc/passwd and /etc/group from a snapshot's layers without mounting it: the upper
/// directory first, then the lower ones top-down (overlay), or the bind source. Missing files
/// read as empty; symlinks are not followed, as they would resolve on the host.
async fn read_user_files(mounts: &[ProtoMount]) -> (String, String) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "overlay" => {
                for opt in &m.options {
                    if let Some(upper) = opt.strip_prefix("upperdir=") {
                        dirs.insert(0, PathBuf::from(upper));
                    }
                }
                for opt in &m.options {
                    if let Some(lower) = opt.strip_prefix("lowerdir=") {
                        dirs.extend(lower.split(':').map(PathBuf::from));
                    }
                }
            }
            "bind" => dirs.push(PathBuf::from(&m.source)),
            _ => {}
        }
    }
    async fn first(dirs: &[PathBuf], rel: &str) -> String {
        for dir in dirs {
            let path = dir.join(rel);
            match tokio::fs::symlink_metadata(&path).await {
                Ok(meta) if meta.is_file() => {
                    return tokio::fs::read_to_string(&path).await.unwrap_or_default();
                }
                _ => continue,
            }
        }
        String::new()
    }
    (
        first(&dirs, "etc/passwd").await,
        first(&dirs, "etc/group").await,
    )
}
