//! The objects the store holds and the API serves: apps, services, replicas, nodes, and what
//! agents report about replicas.
//!
//! Every stored object carries `Meta::revision`, the store revision of its last write; writes that
//! name a stale revision are refused (optimistic concurrency, SPEC §5).

use serde::{Deserialize, Serialize};

use crate::spec::ServiceSpec;

/// The kinds of stored objects. The string form is the store's table key and the API's path word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    App,
    Service,
    Replica,
    ReplicaStatus,
    Node,
    /// A recorded event (`crate::event::Event`): an exit, an OOM kill, a back-off, a node
    /// coming or going.
    Event,
    /// A service's endpoints as the data plane needs them (`crate::endpoints::Endpoints`),
    /// written by the endpoints controller.
    Endpoints,
    /// An allocated VIP or node subnet (`crate::endpoints::AddressClaim`).
    Address,
    /// A join token or a node's credential (`crate::token::Token`), its secret only as a hash.
    Token,
    /// A named volume and the node it lives on (`crate::volume::Volume`).
    Volume,
    /// A secret (`crate::secret::StoredFile`), its value sealed; left out of the change stream.
    Secret,
    /// A config (`crate::secret::StoredFile`), its value plain.
    Config,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::App,
        Kind::Service,
        Kind::Replica,
        Kind::ReplicaStatus,
        Kind::Node,
        Kind::Event,
        Kind::Endpoints,
        Kind::Address,
        Kind::Token,
        Kind::Volume,
        Kind::Secret,
        Kind::Config,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Service => "service",
            Kind::Replica => "replica",
            Kind::ReplicaStatus => "replica_status",
            Kind::Node => "node",
            Kind::Event => "event",
            Kind::Endpoints => "endpoints",
            Kind::Address => "address",
            Kind::Token => "token",
            Kind::Volume => "volume",
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Bookkeeping common to every stored object. The store sets these on write; values sent by
/// clients are ignored except `revision`, which is the optimistic-concurrency precondition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Store revision of the last write of this object; 0 for an object not yet stored.
    #[serde(default)]
    pub revision: u64,
    /// Unix milliseconds.
    #[serde(default)]
    pub created_at: u64,
    /// Unix milliseconds.
    #[serde(default)]
    pub updated_at: u64,
}

/// One deployed Compose file. Key: `{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub namespace: String,
    pub name: String,
    /// The Compose file as the user sent it, kept for `rollout history` and re-deploys.
    pub source: String,
    /// Names of the app's services, in file order.
    pub services: Vec<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl App {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A replicated container spec inside an app. Key: `{namespace}/{app}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub app: String,
    pub name: String,
    pub spec: ServiceSpec,
    /// The service's stable virtual IP (from 10.43.0.0/16), allocated at first deploy and kept
    /// across re-deploys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    #[serde(default)]
    pub meta: Meta,
}

impl Service {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.app, self.name)
    }
}

/// One scheduled instance of a service on a node: one container. Key: `id` (unique cluster-wide).
///
/// Written only by the control plane. Its existence is the desired state: deleting the object is
/// how the control plane tells the node's agent to stop and remove the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replica {
    /// `web-3f9k2`: service name + 5 chars (SPEC §1). Also the containerd container id.
    pub id: String,
    pub namespace: String,
    pub app: String,
    pub service: String,
    /// Node (hostname) the scheduler placed it on.
    pub node: String,
    /// The service spec this replica runs (a copy, so agents need nothing else).
    pub spec: ServiceSpec,
    /// `spec.revision_hash()`, kept to compare with the service without rehashing.
    pub revision_hash: String,
    #[serde(default)]
    pub meta: Meta,
}

/// What the agent observed about a replica. Key: replica id. Written only by the agent of
/// `node`; kept apart from `Replica` so that the agent's and the control plane's writes never
/// conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedReplica {
    pub id: String,
    pub node: String,
    pub state: ReplicaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How many times the agent restarted the container under its restart policy.
    #[serde(default)]
    pub restarts: u32,
    /// Human-readable reason for the state (`image not found: busybox:1`, `exit code 1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Unix milliseconds of the last start, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// The replica's address on its node's bridge, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The agent's most recent exits of this replica, oldest first (at most
    /// [`ExitRecord::MAX_KEPT`]). Several are carried, not just the last, so that an exit is
    /// not lost when a fast restart and a second exit overwrite a report before it was sent;
    /// the server records each one once (keyed by replica and `at`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exits: Vec<ExitRecord>,
    /// The last failure to create or start the container, while it lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailureRecord>,
    /// What its health check last found; `None` when the service has no check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
    #[serde(default)]
    pub meta: Meta,
}

/// One exit of a replica's container, as the agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// When the agent saw the exit (Unix ms). With the replica id, the exit's identity.
    pub at: u64,
    /// The kernel killed it for memory (containerd's OOM event came with it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
    /// Restarts done before this exit.
    #[serde(default)]
    pub restarts: u32,
    /// The wait before the restart; `None` when the restart policy does not restart it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay_ms: Option<u64>,
    /// Found already exited by an agent that never saw it run (it exited while the agent was
    /// down): `at` is then when it was found, and a previous agent may have reported it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopted: bool,
    /// The last lines the container wrote (stdout and stderr), at most [`ExitRecord::MAX_LINES`]
    /// each cut to [`ExitRecord::MAX_LINE_CHARS`]. The server stores them with the status (so
    /// bounded again), and the events controller copies them into the exit's event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
}

impl ExitRecord {
    /// Exits an agent keeps per replica (and reports).
    pub const MAX_KEPT: usize = 3;
    /// Log lines kept with an exit, like the tail `kubectl describe` shows.
    pub const MAX_LINES: usize = 10;
    /// A longer line is cut (a JSON log line or a stack trace can be kilobytes).
    pub const MAX_LINE_CHARS: usize = 240;

    /// `lines` bounded as [`ExitRecord::last_lines`] must be: the last `MAX_LINES`, each cut.
    pub fn bound_lines(lines: Vec<String>) -> Vec<String> {
        let skip = lines.len().saturating_sub(Self::MAX_LINES);
        lines
            .into_iter()
            .skip(skip)
            .map(|line| match line.char_indices().nth(Self::MAX_LINE_CHARS) {
                Some((cut, _)) => format!("{}…", &line[..cut]),
                None => line,
            })
            .collect()
    }
}

/// A failure to create or start a replica's container (bad image, failed pull, bad spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub message: String,
    /// When it failed (Unix ms): with the replica id, the failure's identity.
    pub at: u64,
    /// Consecutive failures so far, this one included.
    #[serde(default)]
    pub attempts: u32,
    /// The wait before the next attempt.
    #[serde(default)]
    pub retry_in_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    /// Scheduled; the agent has not reported it yet.
    Pending,
    /// The agent is creating the container.
    Starting,
    Running,
    /// The container exited and will be restarted after a back-off.
    Restarting,
    /// The container exited and its restart policy says not to restart it (or it gave up after
    /// `max_attempts`): exited for good, not missing.
    Exited,
    /// The container exited with code 0 and its restart policy does not restart it: a one-shot
    /// job (a migration) that is done. Its container is kept, stopped, so its logs stay
    /// readable, until the replica is removed.
    Completed,
    /// The user stopped its service (`hivemind stop`): the container is kept, stopped, until
    /// `hivemind start`.
    Stopped,
    /// The container could not be created or started (bad image, bad spec).
    Failed,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Pending => "pending",
            ReplicaState::Starting => "starting",
            ReplicaState::Running => "running",
            ReplicaState::Restarting => "restarting",
            ReplicaState::Exited => "exited",
            ReplicaState::Completed => "completed",
            ReplicaState::Stopped => "stopped",
            ReplicaState::Failed => "failed",
        }
    }

    /// Whether the replica will not run again unless something changes its desired state (a
    /// redeploy, `hivemind start`): it is not missing, and nothing replaces it.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            ReplicaState::Exited | ReplicaState::Completed | ReplicaState::Stopped
        )
    }
}

/// A machine running the agent. Key: `name` (the hostname).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    /// Address other nodes and the server reach this node at.
    pub address: String,
    pub state: NodeState,
    /// Unix milliseconds of the last status report from the node's agent.
    pub last_seen: u64,
    /// The node's replica subnet (a /24 of 10.42.0.0/16), allocated at its first report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// Where the node's agent serves node-local operations (logs, exec), e.g.
    /// `http://10.0.0.5:7072`; the API server proxies to it. `None` for agents that serve none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    /// What is wrong on the node now, as its agent last reported (see [`NodeProblem`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<NodeProblem>,
    #[serde(default)]
    pub meta: Meta,
}

/// Something wrong on a node that is about no single replica, e.g. a published port the node
/// cannot listen on because a host process holds it. Reported for as long as it lasts; the
/// server records an event when one appears and when it goes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeProblem {
    /// CamelCase, like event reasons: [`crate::event::reason::PORT_UNAVAILABLE`].
    pub reason: String,
    /// What and why, for people: `published port 8080/tcp (shop/web) is not served: ...`.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    Ready,
    Down,
    /// Taken out of scheduling by `node drain`.
    Drained,
}

/// A node's complete desired set (SPEC §6, "whole configs with a generation").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub node: String,
    /// The store revision this set was read at. Agents report the generation they applied.
    pub generation: u64,
    /// The node's replicas, in id order. In a delta answer only those added or changed since
    /// the generation asked after (the rest are unchanged, or named in `replica_removes`).
    pub replicas: Vec<Replica>,
    /// Delta answers only: ids of replicas no longer on the node since the generation asked
    /// after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_removes: Vec<String>,
    /// What the node needs for DNS, service VIPs and the ingress.
    #[serde(default)]
    pub network: NodeNetwork,
    /// A delta answer (asked for with `delta=true`): `replicas` and `network` hold only what
    /// changed since
    /// the generation asked after; [`Assignment::apply`] merges it into the previous one.
    /// Absent (false) in full answers and in payloads from before deltas existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delta: bool,
    /// The secret and config values the replicas in `replicas` mount (in a delta answer, those
    /// of the changed replicas only), sent only to the node itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::secret::FileValue>,
}

/// The network part of a node's assignment: its subnet and every service's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNetwork {
    /// This node's replica subnet, e.g. `10.42.3.0/24`; `None` until the server allocated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// The whole cluster's replica range (outbound traffic leaving it is masqueraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_cidr: Option<String>,
    /// Where service VIPs come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<String>,
    /// The services the node routes, in key order. In a delta answer only those new to the
    /// node or whose fields other than `endpoints` changed, each in full.
    #[serde(default)]
    pub services: Vec<ServiceEndpoints>,
    /// Delta answers only: the endpoint lists that changed, by service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoint_changes: Vec<crate::assignment_delta::EndpointChange>,
    /// Delta answers only: the key (`ns/app/name`) of every service the node routes now; the
    /// node drops the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_keys: Vec<String>,
}

/// A service as the data plane sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    pub namespace: String,
    pub app: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    #[serde(default)]
    pub ports: Vec<crate::spec::PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<crate::spec::IngressRule>,
    /// Replicas that are running and attached, in id order.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The app networks the service is on, sorted (`["default"]` unless it lists others).
    /// Replicas of one app see and reach each other only through a shared network. Empty in
    /// payloads from before networks existed, which the agent reads as `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    /// Further DNS names of the service, from all its networks, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Every network of the service is `internal`: its replicas get no route outside the
    /// cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Its published TCP ports send a PROXY protocol v1 header to the replicas.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

/// One ready replica of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub replica: String,
    pub node: String,
    pub ip: String,
}

/// What an agent reports: everything it observed, with the generation it had applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: String,
    pub address: String,
    /// The agent's own HTTP endpoint (logs, exec); see [`Node::agent_url`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    pub generation: u64,
    pub replicas: Vec<ObservedReplica>,
    /// Node-level problems now (sorted); empty when all is well.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<NodeProblem>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_lines_are_bounded() {
        let mut lines: Vec<String> = (0..15).map(|i| i.to_string()).collect();
        lines.push("é".repeat(ExitRecord::MAX_LINE_CHARS + 5));
        let kept = ExitRecord::bound_lines(lines);
        assert_eq!(kept.len(), ExitRecord::MAX_LINES);
        assert_eq!(kept[0], "6");
        let last = kept.last().unwrap();
        assert_eq!(last.chars().count(), ExitRecord::MAX_LINE_CHARS + 1);
        assert!(last.ends_with('…'));
    }

    #[test]
    fn reports_without_exits_still_parse() {
        let old = r#"{"id": "web-a", "node": "n1", "state": "running"}"#;
        let status: ObservedReplica = serde_json::from_str(old).unwrap();
        assert!(status.exits.is_empty() && status.failure.is_none());
    }
}
