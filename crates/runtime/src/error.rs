//! The runtime's error type: every variant names the operation and the object it failed on, so
//! that the agent can report it on the replica without adding context of its own.

use std::path::PathBuf;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot connect to containerd at {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },

    #[error(
        "image not found: {image} (pull it with `hivemind image pull {image}`, import it with \
         `hivemind image import FILE.tar`, or let the service pull it: pull_policy never pulls)"
    )]
    ImageNotFound { image: String },

    /// A registry refused or failed a pull; `reason` says what happened and `fix` what to do.
    #[error("cannot pull {reference}: {reason}: {fix}")]
    Registry {
        reference: String,
        reason: String,
        fix: String,
    },

    #[error(
        "image {image} is used by container(s) {} (remove them first, or force the removal)",
        containers.join(", ")
    )]
    ImageInUse {
        image: String,
        containers: Vec<String>,
    },

    /// The error of a pull this caller joined (another caller started it).
    #[error(transparent)]
    Shared(std::sync::Arc<RuntimeError>),

    #[error("invalid image {image}: {reason}")]
    InvalidImage { image: String, reason: String },

    #[error("invalid image archive {}: {reason}", path.display())]
    InvalidArchive { path: PathBuf, reason: String },

    /// The image's content could not be copied into a new volume (Docker's copy-up).
    #[error("container {id}: cannot copy the image's {target} into its new volume: {reason}")]
    CopyUp {
        id: String,
        target: String,
        reason: String,
    },

    #[error("container {id} already exists")]
    AlreadyExists { id: String },

    #[error("container {id} not found")]
    NotFound { id: String },

    /// An exec'd process could not start; `reason` is containerd's (runc's) explanation.
    #[error("cannot run {command:?} in {id}: {reason}")]
    Exec {
        id: String,
        command: String,
        reason: String,
    },

    #[error(
        "container {id}: user {user:?} not found in the image's /etc/passwd or /etc/group (use a \
         numeric `uid[:gid]` or a user the image defines)"
    )]
    UserNotFound { id: String, user: String },

    #[error("container {id}: no command to run (the image has no Entrypoint or Cmd and the service sets no `command`)")]
    NoCommand { id: String },

    #[error(
        "container {id}: unknown stop signal {signal:?} (use a name like SIGTERM or a number)"
    )]
    BadSignal { id: String, signal: String },

    #[error(
        "container {id}: `init: true` needs {} on the node (install Debian's tini package), or remove init",
        crate::oci::INIT_HOST_PATH
    )]
    InitMissing { id: String },

    #[error("container {id}: building the OCI runtime spec failed")]
    Spec {
        id: String,
        #[source]
        source: oci_spec::OciSpecError,
    },

    #[error("{op} {id}: unexpected reply from containerd: {reason}")]
    Protocol {
        op: &'static str,
        id: String,
        reason: String,
    },

    #[error("{op} {id}: containerd call failed")]
    Grpc {
        op: &'static str,
        id: String,
        #[source]
        source: tonic::Status,
    },

    #[error("{op} {}: I/O error", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// A gRPC failure, naming the containerd call and the object it was about.
    pub(crate) fn grpc(op: &'static str, id: impl Into<String>, source: tonic::Status) -> Self {
        RuntimeError::Grpc {
            op,
            id: id.into(),
            source,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RuntimeError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The gRPC status code if this is a containerd call failure.
    pub fn grpc_code(&self) -> Option<tonic::Code> {
        match self {
            RuntimeError::Grpc { source, .. } => Some(source.code()),
            RuntimeError::Shared(inner) => inner.grpc_code(),
            _ => None,
        }
    }
}
