//! The normalized service spec: what a Compose service means once parsed, validated and defaulted.
//!
//! The Compose parser (`compose`) produces these; the store keeps them inside `Service` and
//! `Replica`; the agent turns them into OCI runtime specs. Durations are milliseconds so that the
//! JSON form is plain numbers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lifecycle::Dependency;
use crate::limits::{ExtraHost, Resources, TmpfsMount, Ulimit};

/// One replicated container spec inside an app.
///
/// Its fields are of two kinds (`ServiceSpec::split` in `routing`): the container template,
/// whose hash is the revision (a change replaces the replicas), and the routing (ports,
/// networks, `x-hivemind` ingress/strategy/allow_from/proxy_protocol), which the data plane
/// applies without restarting containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceSpec {
    /// Image reference as written (`busybox:latest`, `127.0.0.1:5000/web:1`).
    pub image: String,
    /// Overrides the image's `Cmd` when set (Compose `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's `Entrypoint` when set (Compose `entrypoint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment after `env_file` and `environment` are merged (`environment` wins).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub mode: ServiceMode,
    /// Desired replica count for `ServiceMode::Replicated` (Compose `deploy.replicas`, default 1).
    pub replicas: u32,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Signal name sent first on stop (Compose `stop_signal`, default `SIGTERM`).
    pub stop_signal: String,
    /// Time between the stop signal and SIGKILL (Compose `stop_grace_period`, default 10 s).
    pub stop_grace_period_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Hivemind's own settings (`x-hivemind` on the service).
    #[serde(default)]
    pub hivemind: HivemindExt,
    /// When the node pulls the image (Compose `pull_policy`). Left out of the JSON when it is
    /// the default, so that specs written before the field existed keep their revision hash.
    #[serde(default, skip_serializing_if = "PullPolicy::is_default")]
    pub pull_policy: PullPolicy,
    /// The app networks the service is attached to (Compose `networks`), by name within the
    /// app. Empty means the app's `default` network only; the reader normalizes a plain
    /// `networks: [default]` to empty too, and empty is left out of the JSON, so that specs
    /// written before networks existed keep their JSON. Routing (see `routing`): not hashed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, NetworkAttachment>,
    /// CPU, memory and pids limits and reservations (Compose `deploy.resources`).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Mount the root filesystem read-only (Compose `read_only`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Capabilities added to Docker's default set: `CAP_` names, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from Docker's default set: `CAP_` names, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Process resource limits by Docker's name (`nofile`, `nproc`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Run the process under a minimal init that reaps zombies and forwards signals.
    #[serde(default, skip_serializing_if = "is_false")]
    pub init: bool,
    /// The container's hostname instead of the replica id (Compose `hostname`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Entries appended to the generated /etc/hosts, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// Log rotation (Compose `logging.options`); unset parts take the node's defaults. Left out
    /// of the JSON when unset, so that older specs keep their revision hash.
    #[serde(default, skip_serializing_if = "LogOptions::is_empty")]
    pub logging: LogOptions,
    /// The service's health check (Compose `healthcheck`, or `x-hivemind.healthcheck`, which
    /// wins). `None`: the image's `HEALTHCHECK`, if any. Template: a change replaces replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::healthcheck::HealthCheck>,
    /// Secret files (Compose `secrets`), read-only from a tmpfs on the node. Left out of the
    /// JSON when empty, so that older specs keep their revision hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secret::FileMount>,
    /// Config files (Compose `configs`), like secrets but not secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::secret::FileMount>,
    /// The services (by DNS name) whose replicas must reach a condition before this one's are
    /// created (Compose `depends_on`). On neither side of `split`: ordering is the control
    /// plane's and the agent's business, so a change to it replaces no replica.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, Dependency>,
    /// The user stopped the service (`hivemind stop`): its replicas keep their containers,
    /// stopped, until `hivemind start` (or a deploy of the file, as `docker compose up` does).
    /// Desired state decided by the control plane, which copies it into each replica's spec;
    /// on neither side of `split`, so stopping replaces nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stopped: bool,
    /// Named volumes, anonymous volumes and bind mounts (Compose `volumes`, `volumes_from`),
    /// in file order; see `volume`. Left out of the JSON when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volume::VolumeMount>,
}

/// A service's log rotation (Compose `logging.options`, Docker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LogOptions {
    /// `max-size` in bytes: a replica's log file is rotated before it passes this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// `max-file`: how many files of a replica's log are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

impl LogOptions {
    pub fn is_empty(&self) -> bool {
        self.max_size.is_none() && self.max_files.is_none()
    }
}

/// The most replicas one service may have, whether asked for by `deploy.replicas` in a Compose
/// file or by `scale` (one limit, so that both answer alike and at once). Beyond it the count is
/// a typo rather than a plan: the control plane is sized for a million replicas across the
/// cluster, and issue 9's benchmark scales one service to exactly this many.
pub const MAX_REPLICAS: u32 = 100_000;

/// The refusal of a replica count above [`MAX_REPLICAS`]: the Compose reader and the scale API
/// both report it, with the same message and fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replicas: {0} is more than the {MAX_REPLICAS} one service may have")]
pub struct TooManyReplicas(pub u32);

impl TooManyReplicas {
    /// Checks a desired replica count against [`MAX_REPLICAS`].
    pub fn check(replicas: u32) -> Result<(), TooManyReplicas> {
        if replicas > MAX_REPLICAS {
            Err(TooManyReplicas(replicas))
        } else {
            Ok(())
        }
    }

    pub fn fix(&self) -> String {
        format!("ask for at most {MAX_REPLICAS} replicas, or split the service in several")
    }
}

/// The name of the network every service of an app is on unless it lists others.
pub const DEFAULT_NETWORK: &str = "default";

/// A service's membership of one app network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkAttachment {
    /// Further DNS names of the service (Compose `aliases`), DNS labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Copied from the top-level network's `internal: true`, so that the data plane needs
    /// nothing but the service: members of internal networks only get no route outside the
    /// cluster.
    #[serde(default, skip_serializing_if = "is_false")]
    pub internal: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ServiceSpec {
    /// The names of the networks the service is on, sorted: `default` when it lists none.
    pub fn network_names(&self) -> Vec<String> {
        if self.networks.is_empty() {
            vec![DEFAULT_NETWORK.to_string()]
        } else {
            self.networks.keys().cloned().collect()
        }
    }

    /// Every alias of the service on any of its networks, sorted and without repeats.
    pub fn network_aliases(&self) -> Vec<String> {
        let mut aliases: Vec<String> = self
            .networks
            .values()
            .flat_map(|n| n.aliases.iter().cloned())
            .collect();
        aliases.sort();
        aliases.dedup();
        aliases
    }

    /// Whether every network of the service is internal: its replicas get no route out.
    pub fn is_internal(&self) -> bool {
        !self.networks.is_empty() && self.networks.values().all(|n| n.internal)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    #[default]
    Replicated,
    /// One replica on every node (Compose `deploy.mode: global`).
    Global,
}

/// When a node pulls a service's image before creating a container (Compose `pull_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Pull only when the image is not in the node's store (`missing`, `if_not_present`).
    #[default]
    Missing,
    /// Pull every time a container is created; cheap when nothing changed, as only the manifest
    /// is fetched and blobs already present are skipped.
    Always,
    /// Never pull: the image must have been imported or pulled beforehand.
    Never,
}

impl PullPolicy {
    pub fn is_default(&self) -> bool {
        *self == PullPolicy::default()
    }

    /// The Compose spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Missing => "missing",
            PullPolicy::Always => "always",
            PullPolicy::Never => "never",
        }
    }
}

/// A published port (Compose `ports`, short or long syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Port inside the container.
    pub target: u16,
    /// Port published on every node; `None` means "expose only".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    /// Host address to bind the published port to; `None` means all addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// A port's transport protocol: the one type for it, from the Compose file to the agent's
/// nftables rules and ingress listeners.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// When a replica's container is restarted after it exits.
///
/// Compose `restart: no|always|on-failure[:N]|unless-stopped` and `deploy.restart_policy` both map
/// here (`deploy.restart_policy` wins). The default is `Always`, as for Swarm services: an
/// orchestrator keeps replicated services running unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// Give up after this many restarts (`on-failure:N`, `max_attempts`); `None` = never give up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Delay before the first restart (`deploy.restart_policy.delay`); back-off grows from it.
    pub delay_ms: u64,
    /// `deploy.restart_policy.window`: a run at least this long was a successful restart, so it
    /// does not count towards `max_attempts`. `None`: every restart counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_ms: Option<u64>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Always,
            max_attempts: None,
            delay_ms: 0,
            window_ms: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    /// Never restart (`no`, `none`).
    Never,
    /// Restart on a non-zero exit code (`on-failure`).
    OnFailure,
    /// Restart whatever the exit code (`always`, `any`).
    Always,
    /// As `Always`, and said apart so that the spec keeps what the file meant: a replica the
    /// user stopped (`hivemind stop`) stays stopped across node and agent restarts.
    UnlessStopped,
}

impl RestartCondition {
    /// Whether an exit with `exit_code` asks for a restart (before `max_attempts`).
    pub fn restarts_after(self, exit_code: i32) -> bool {
        match self {
            RestartCondition::Never => false,
            RestartCondition::OnFailure => exit_code != 0,
            RestartCondition::Always | RestartCondition::UnlessStopped => true,
        }
    }
}

/// `x-hivemind` on a service (SPEC §3). Later issues give these fields their behaviour; the parser
/// validates them now so that files written today keep working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HivemindExt {
    /// Rollout strategy: `rolling` (default), `blue-green`, `canary` or `ab`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressRule>,
    /// Network policy: only these services of the app may connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<Vec<String>>,
    /// Published TCP ports (L4) send a PROXY protocol v1 header first, so the replicas see
    /// the client's address.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default = "default_path")]
    pub path: String,
}

fn default_path() -> String {
    "/".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_hash_ignores_replica_count_but_not_image() {
        let a = ServiceSpec {
            image: "busybox:1".into(),
            replicas: 1,
            ..Default::default()
        };
        let mut b = a.clone();
        b.replicas = 7;
        assert_eq!(a.revision_hash(), b.revision_hash());
        b.image = "busybox:2".into();
        assert_ne!(a.revision_hash(), b.revision_hash());
    }

    #[test]
    fn default_pull_policy_keeps_old_json_and_hashes() {
        let a = ServiceSpec {
            image: "busybox:1".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("pull_policy").is_none());
        let back: ServiceSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back.pull_policy, PullPolicy::Missing);
        let mut b = a.clone();
        b.pull_policy = PullPolicy::Always;
        assert_ne!(a.revision_hash(), b.revision_hash());
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["pull_policy"], "always");
    }

    #[test]
    fn no_networks_keeps_old_json_and_networks_are_routing() {
        let a = ServiceSpec {
            image: "busybox:1".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("networks").is_none());
        assert_eq!(a.network_names(), ["default"]);
        assert!(!a.is_internal());
        let mut b = a.clone();
        b.networks.insert(
            "back".into(),
            NetworkAttachment {
                aliases: vec!["db".into()],
                internal: true,
            },
        );
        // Networks are routing: the data plane applies them to running replicas.
        assert_eq!(a.revision_hash(), b.revision_hash());
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(
            json["networks"],
            serde_json::json!({"back": {"aliases": ["db"], "internal": true}})
        );
        assert_eq!(b.network_names(), ["back"]);
        assert_eq!(b.network_aliases(), ["db"]);
        assert!(b.is_internal());
    }
}
