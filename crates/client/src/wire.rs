//! The request and response bodies of the REST API that are not stored objects.
//!
//! **The wire format has one definition, here.** The server (`hivemind-api`) serializes these very
//! types, so a field renamed here is renamed on both sides at once. Stored objects (`App`,
//! `Service`, `Replica`, ...) travel as they are defined in `hivemind_types`.
//!
//! With the `openapi` feature the types derive `utoipa::ToSchema`; fields holding
//! `hivemind_types` objects are described as plain JSON objects, because that crate stays free of
//! HTTP concerns.

use std::collections::BTreeMap;

use hivemind_types::compose::Warning;
use hivemind_types::{App, EventType, Kind, ObservedReplica, Replica, Service, TokenRole};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/apps`: deploy (create or update) an app from a Compose file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// App name; when absent the Compose file's top-level `name:` is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Namespace; when absent the `?namespace=` query parameter, then `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Compose model. The CLI sends its project already loaded
    /// (`hivemind_types::compose::load_project`): every `-f` file merged, interpolated once
    /// with its whole environment (every `$` left doubled), env_files and values taken from the
    /// shell inlined into each service's `environment`, profiles applied; `env` and `env_files`
    /// are then empty. A Compose file as written, with `env` and `env_files`, is read too.
    pub compose: String,
    /// The file's name as the user gave it, used in error messages (`compose.yaml` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Variables for `${VAR}` interpolation of `compose`, for clients that send the file as
    /// written (older CLIs sent the variables the text mentions); empty from the CLI now, which
    /// interpolates before sending. Left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Contents of the files named by `env_file`, keyed by the path as written in the file, for
    /// clients that send the file as written; empty from the CLI now. Left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env_files: BTreeMap<String, String>,
    /// Optimistic concurrency: deploy only if the app is at exactly this revision (0 = must not
    /// exist yet). Stale revisions get 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// Refuse the file (422, nothing written) if it has keys Hivemind reads but does not
    /// honour, instead of deploying it with warnings. `?strict=true` sets it too. Left out when
    /// false, so that older servers accept the requests of newer clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// The values of the file's `secrets` that the CLI reads (`file`, `environment`), base64,
    /// by their key in the file. The server seals them before they are stored; they are never
    /// in `compose`, which is stored as sent. Left out when empty.
    #[serde(default, skip_serializing_if = "FileValues::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub secrets: FileValues,
    /// The values of the file's `configs` that the CLI reads (`file`, `environment`), as for
    /// `secrets`.
    #[serde(default, skip_serializing_if = "FileValues::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub configs: FileValues,
}

/// Secret or config values by name, base64. Its `Debug` shows the names only, so that a
/// logged request never carries a value.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileValues(pub BTreeMap<String, String>);

impl FileValues {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for FileValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The app and all its services as stored after a deploy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeployResponse {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub app: App,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub services: Vec<Service>,
    /// Store revision after the deploy; watch events from here to follow the rollout.
    pub revision: u64,
    /// Keys of the file that were read but are not honoured, and what happens instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub warnings: Vec<Warning>,
}

/// `POST /api/v1/services/{app}/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: u32,
    /// Optimistic concurrency on the service; stale revisions get 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// A replica joined with what its node's agent last reported about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReplicaView {
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub replica: Replica,
    /// `None` until the agent has reported the replica.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub status: Option<ObservedReplica>,
}

/// Filter for `GET /api/v1/replicas`; every field left `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct ReplicaFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Filter for `GET /api/v1/events` (recorded events); every field left `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
pub struct EventFilter {
    /// Only events of this app's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Only events of this service's replicas (in any app unless `app` is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only events of this replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    /// `normal` or `warning`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>))]
    pub event_type: Option<EventType>,
    /// Only the newest this many (1 to 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong and how to fix it, in the words the CLI prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Machine-readable: `bad_request`, `unauthorized`, `not_found`, `conflict`, `invalid`,
    /// `internal`.
    pub code: String,
    /// What went wrong: lowercase, no full stop; may span lines (one per Compose problem).
    pub message: String,
    /// The request field or Compose key path at fault, e.g. `services.web.ports[1]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// How to fix it, as one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Whether a change wrote or deleted its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One entry of the store's change log as `GET /api/v1/events` sends it (the `data:` of an SSE
/// event whose `id:` is `revision`). Same JSON shape as the store's own `Change`; defined again
/// here because clients (the agent above all) must not depend on the store crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangeEvent {
    pub revision: u64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: Kind,
    pub key: String,
    pub op: ChangeOp,
    /// The object as written, or its last version for deletes.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub value: serde_json::Value,
}

/// SSE event names used by `GET /api/v1/events`.
pub mod event_name {
    /// A `ChangeEvent` in `data:`.
    pub const CHANGE: &str = "change";
    /// The server cannot continue the stream without a gap (the client fell behind or asked for
    /// compacted history): re-list and watch again from the current revision. Its data is
    /// `{"reason": "lagged" | "compacted"}`; the stream ends after it.
    pub const RESET: &str = "reset";
}

/// `POST /api/v1/tokens`: mint a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// Only `node` (a join token for nodes); node credentials come from joins.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub role: TokenRole,
    /// Seconds until the token is refused; absent or 0: until `token rm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The answer to `POST /api/v1/tokens`: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenCreated {
    pub id: String,
    /// `hm1.<id>.<secret>`: give it to the nodes that are to join. Not retrievable later.
    pub token: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub role: TokenRole,
    /// Unix milliseconds; absent: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// A token as `GET /api/v1/tokens` lists it: everything but the secret and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub role: TokenRole,
    /// The node of a node credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub issued_by: String,
    /// Unix milliseconds.
    pub created_at: u64,
}

/// The answer to `POST /api/v1/nodes/{node}/join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinResponse {
    pub node: String,
    /// `hm1.n-<node>.<secret>`: the node's own bearer token towards the server from now on.
    pub credential: String,
    /// What the server presents to this node's agent endpoint (logs, exec); the agent accepts
    /// nothing else. Derived per node, so one node's secret opens no other node's agent.
    pub agent_secret: String,
}

/// `POST /api/v1/secrets` and `POST /api/v1/configs`: a cluster secret or config, which
/// Compose files name as `external`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FileCreateRequest {
    pub name: String,
    /// The value, base64.
    pub data: String,
}

impl std::fmt::Debug for FileCreateRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCreateRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A secret or config as the API shows it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FileView {
    pub name: String,
    /// `{namespace}/{app}` for an app's own (from its Compose file); absent for a cluster one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Bytes.
    pub size: u64,
    /// The first 12 hex digits of the value's digest (keyed for secrets), to tell versions
    /// apart.
    pub digest: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// The services that mount it (`{namespace}/{app}/{service}`).
    #[serde(default)]
    pub users: Vec<String>,
}
