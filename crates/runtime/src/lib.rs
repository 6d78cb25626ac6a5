//! The container runtime behind a trait: what the agent needs from containerd (create, start,
//! stop, remove and list replica containers, watch exits, import, pull and list images).
//!
//! [`ContainerRuntime`] is the API boundary: the agent's reconciler talks only to the trait, so it
//! can be tested against a fake (`fake::FakeRuntime`, built for tests and with the crate's `fake`
//! feature). [`Containerd`] is the real implementation over containerd's gRPC
//! API. Pure logic (OCI spec building, image formats, reference normalization, users, signals)
//! lives in its own modules with unit tests; only `containerd/` does I/O against the daemon.
//!
//! **Invariant:** every container this module creates carries the label `hivemind.replica`, and
//! [`ContainerRuntime::list`] returns only those: containers made by others in the namespace are
//! never touched.

mod archive;
mod containerd;
mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod image;
mod oci;
pub mod pull;
mod reference;
mod signal;
mod user;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hivemind_types::Replica;

pub use self::containerd::Containerd;
pub use self::error::RuntimeError;
pub use self::image::ContainerConfig;
pub use self::pull::{PullProgress, RegistryConfig};
pub use self::reference::normalize_image_ref;
pub use self::signal::parse_signal;
pub use self::user::ResolvedUser;

/// Container labels the runtime sets; the agent re-adopts containers by them (live restore).
pub mod labels {
    pub const REPLICA: &str = "hivemind.replica";
    pub const SERVICE: &str = "hivemind.service";
    pub const APP: &str = "hivemind.app";
    pub const NAMESPACE: &str = "hivemind.namespace";
    pub const REVISION: &str = "hivemind.revision";
    /// The service's `logging.options.max-size` in bytes, when it sets one.
    pub const LOG_MAX_SIZE: &str = "hivemind.log.max-size";
    /// The service's `logging.options.max-file`, when it sets one.
    pub const LOG_MAX_FILES: &str = "hivemind.log.max-files";
}

/// Where and how the runtime reaches containerd and keeps per-container files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// containerd namespace holding Hivemind's images and containers.
    pub namespace: String,
    /// Replica output goes to `{log_dir}/{id}/{seq:010}.log` (see `hivemind_logs`).
    pub log_dir: PathBuf,
    /// The log driver the shim runs for every task (absolute): the `hivemind` binary, run as
    /// `hivemind log-driver ARG`, or the agent crate's `hivemind-log-driver` in its tests.
    pub log_driver: PathBuf,
    /// The node's log rotation; a service's `logging.options` override it.
    pub log_rotation: hivemind_logs::files::Rotation,
    /// Per-container generated files (`{run_dir}/{id}/resolv.conf`, `hosts`, `hostname`).
    pub run_dir: PathBuf,
    pub snapshotter: String,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            socket: PathBuf::from("/run/containerd/containerd.sock"),
            namespace: "hivemind".to_string(),
            log_dir: PathBuf::from("/var/lib/hivemind/logs"),
            // The running binary is the driver in `hivemind up`/`agent`.
            log_driver: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("hivemind")),
            log_rotation: hivemind_logs::files::Rotation::default(),
            run_dir: PathBuf::from("/run/hivemind/containers"),
            snapshotter: "overlayfs".to_string(),
        }
    }
}

impl RuntimeConfig {
    /// The directory of replica `id`'s numbered log files.
    pub fn replica_log_dir(&self, id: &str) -> PathBuf {
        self.log_dir.join(id)
    }
}

/// Options for [`ContainerRuntime::create`] that do not come from the replica itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// A network namespace to join (`/var/run/netns/<name>`). `None` gives the container a
    /// fresh namespace with only loopback (networking is wired up by `agent::net` later).
    pub network_ns: Option<PathBuf>,
    /// The container's `/etc/resolv.conf` content; `None` derives it from the host's.
    pub resolv_conf: Option<String>,
    /// The container's own address, written to its `/etc/hosts` next to its hostname.
    pub ip: Option<std::net::IpAddr>,
    /// The service's volumes and bind mounts, as host paths the agent prepared.
    pub mounts: Vec<HostMount>,
    /// Host files bind-mounted read-only into the container (secrets and configs, which the
    /// agent writes to a tmpfs first).
    pub file_binds: Vec<FileBind>,
}

/// One host file mounted read-only at `target` in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileBind {
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
}

/// A host directory bind-mounted into the container: a volume's data or a bind mount's
/// source, prepared by the agent (`hivemind_agent::volumes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    /// Absolute path on the node.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    pub read_only: bool,
    /// `rprivate` when `None`, as Docker.
    pub propagation: Option<String>,
    /// Copy what the image has at `target` into `source` before the container is created
    /// (Docker's copy-up into a new, empty volume), keeping owners, modes, symlinks and
    /// extended attributes.
    pub copy_up: bool,
}

/// The state of a container's task (its running process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Created but not started.
    Created,
    Running {
        pid: u32,
    },
    /// Exited; the task stays until deleted (by `start` or `stop`).
    Stopped {
        exit_code: i32,
    },
    /// Paused or a state this version does not know.
    Unknown,
}

/// A Hivemind container as containerd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Normalized image reference.
    pub image: String,
    /// `None` when the container has no task (never started, or stopped and deleted).
    pub task: Option<TaskState>,
}

/// An init process exit, from containerd's event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskExit {
    pub id: String,
    /// Exit status; 128 + n when killed by signal n.
    pub exit_code: i32,
    /// This is containerd's out-of-memory event for the container (the kernel's OOM killer hit
    /// its cgroup), sent before the exit itself; `exit_code` is then 137.
    pub oom: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Normalized reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// Digest of the image's manifest.
    pub digest: String,
    /// Manifest, config and (compressed) layers, in bytes.
    pub size: u64,
    /// When containerd last wrote the image record (its `updated_at`, else `created_at`): the
    /// image's age for garbage collection. `None` when containerd did not say.
    pub updated_at: Option<std::time::SystemTime>,
}

/// What one [`ContainerRuntime::sweep_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub snapshots: usize,
    pub run_dirs: usize,
    pub log_dirs: usize,
    pub cgroups: usize,
}

/// What the agent needs from a container runtime. Implementations are cheap to share
/// (`Arc<impl ContainerRuntime>`); all methods take `&self`.
pub trait ContainerRuntime: Send + Sync + 'static {
    /// Containers labelled `hivemind.replica`, with their task state.
    fn list(&self) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// Creates the container and its writable snapshot, without starting it. Labels:
    /// `hivemind.replica`, `.service`, `.app`, `.namespace`, `.revision` (plus the service's own
    /// labels). The image is pulled first as the service's `pull_policy` says (`missing`: only
    /// if absent; `always`; `never`). Fails with [`RuntimeError::AlreadyExists`] if the id is
    /// taken, [`RuntimeError::ImageNotFound`] if the image is absent and may not be pulled, and
    /// [`RuntimeError::Registry`] if the pull fails.
    fn create(
        &self,
        replica: &Replica,
        options: &CreateOptions,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Starts (or restarts) the container's process: deletes a stopped task if present, creates
    /// a task whose stdout/stderr go to a log driver process (`hivemind_logs::driver`), starts
    /// it. Returns the pid. Starting a running container returns its pid.
    fn start(&self, id: &str) -> impl Future<Output = Result<u32, RuntimeError>> + Send;

    /// Sends `signal` (`SIGTERM`, `TERM`, `15`), waits up to `grace`, then SIGKILL; deletes the
    /// task. Returns its exit code, or `None` if it had no task.
    fn stop(
        &self,
        id: &str,
        signal: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<Option<i32>, RuntimeError>> + Send;

    /// Kills and deletes the task if any, removes the snapshot and the container. Removing what
    /// is already gone succeeds.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes what crashed operations left for containers that do not exist (writable
    /// snapshots, per-container files, empty cgroup directories), never anything of a container
    /// that exists or is being created, nor anything younger than `min_age` (another client
    /// may be at work in the namespace). Runtimes with nothing to sweep keep the default.
    fn sweep_leftovers(
        &self,
        min_age: Duration,
    ) -> impl Future<Output = Result<SweepReport, RuntimeError>> + Send {
        let _ = min_age;
        async { Ok(SweepReport::default()) }
    }

    /// A stream of init-process exits of Hivemind containers. The channel closes if the
    /// subscription breaks (containerd restarted): subscribe again and `list` to resync.
    fn exits(
        &self,
    ) -> impl Future<Output = Result<tokio::sync::mpsc::Receiver<TaskExit>, RuntimeError>> + Send;

    /// Imports a `docker save` archive or an OCI layout tarball (optionally gzipped). Idempotent.
    fn image_import(
        &self,
        tarball: &Path,
    ) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;

    /// Pulls `reference` from its registry (credentials from Docker's `config.json`), writes it
    /// into the node's store and unpacks it. Layers already present are not downloaded; a pull
    /// of a reference that is already being pulled on this node waits for that pull instead.
    /// `progress` receives [`PullProgress`] events (dropped, not awaited, when it is full).
    fn image_pull(
        &self,
        reference: &str,
        progress: Option<tokio::sync::mpsc::Sender<PullProgress>>,
    ) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;

    fn image_list(&self) -> impl Future<Output = Result<Vec<ImageInfo>, RuntimeError>> + Send;

    /// Removes the image record `reference` (its content goes with containerd's garbage
    /// collection). Fails with [`RuntimeError::ImageInUse`] while a container uses it, unless
    /// `force`, and with [`RuntimeError::ImageNotFound`] if it is absent.
    fn image_remove(
        &self,
        reference: &str,
        force: bool,
    ) -> impl Future<Output = Result<ImageInfo, RuntimeError>> + Send;

    /// The image named `name` (normalized first), if present.
    fn image_get(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<ImageInfo>, RuntimeError>> + Send;

    /// Runs `args` in the running container `id` with its process spec (env, cwd, user), no
    /// stdin and no TTY. Its output is sent to `output` as it comes (the call waits while
    /// `output` is full); returns the exit status once the process ended and its output was
    /// sent. Fails with [`RuntimeError::NotFound`] if the container has no running task and
    /// [`RuntimeError::Exec`] if the process cannot start (e.g. the command does not exist).
    fn exec(
        &self,
        id: &str,
        args: &[String],
        output: tokio::sync::mpsc::Sender<ExecOutput>,
    ) -> impl Future<Output = Result<i32, RuntimeError>> + Send;

    /// Runs `spec.args` in the running container `id` like [`ContainerRuntime::exec`], with
    /// stdin (`spec.stdin`) and a terminal (`spec.tty`) as asked. `input` feeds the process:
    /// stdin bytes, the end of stdin ([`ExecInput::CloseStdin`]) and terminal resizes. Output
    /// goes to `output` (one `Stdout` stream with a terminal). Returns the exit status.
    ///
    /// **If every sender of `input` is dropped before the process ended, the caller is taken
    /// to be gone: the process is killed** and the call fails. Whatever happens, also when this
    /// future is dropped, the exec process is deleted and its FIFOs removed.
    fn exec_session(
        &self,
        id: &str,
        spec: ExecSpec,
        input: tokio::sync::mpsc::Receiver<ExecInput>,
        output: tokio::sync::mpsc::Sender<ExecOutput>,
    ) -> impl Future<Output = Result<i32, RuntimeError>> + Send;

    /// Kills and deletes the exec processes a previous agent process left running (it died
    /// mid-session) and removes their FIFOs; returns how many. Call once at start, before any
    /// session of this process begins: every exec it finds is taken to be orphaned.
    fn exec_sweep(&self) -> impl Future<Output = Result<usize, RuntimeError>> + Send {
        async { Ok(0) }
    }
}

/// What [`ContainerRuntime::exec_session`] runs, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    pub args: Vec<String>,
    /// Give the process a stdin fed from [`ExecInput::Stdin`]; without it, stdin is empty.
    pub stdin: bool,
    /// Give the process a terminal of this size.
    pub tty: Option<TtySize>,
}

pub use hivemind_types::exec::TtySize;

/// Input to an exec session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecInput {
    Stdin(Vec<u8>),
    /// No more stdin: the process reads end-of-file.
    CloseStdin,
    /// The terminal's new size (ignored without a terminal).
    Resize(TtySize),
}

/// A chunk of an exec'd process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}
