//! Simulated nodes: agents without containers, for measuring the control plane at cluster scale
//! (SPEC §8, Omicron's `sled-agent/src/sim/`).
//!
//! A simulated node speaks to a real server through the real client, exactly as an agent does:
//! it long-polls its assignment, "runs" every replica in it at once, and reports each one
//! running with an address from the node's subnet. It never touches containerd, netlink or
//! nftables, so a thousand of them fit in one process.
//!
//! The decision of what to report is [`observe`], a pure function of the assignment and what
//! the node reported before, so that it is tested with data; the loop in [`run_node`] only
//! moves bytes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hivemind_client::Client;
use hivemind_types::now_millis;
use hivemind_types::{NodeReport, ObservedReplica, ReplicaState};
use serde::Deserialize;

/// What a simulated node reads of its assignment: its replicas (id and node) and its subnet.
/// The rest, the endpoints its data plane would route (the bulk of an answer in a big
/// cluster), is skipped unparsed: one process stands for a thousand nodes, each of which
/// parses its own on its own machine, and the benchmark measures the server.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct SimAssignment {
    pub generation: u64,
    #[serde(default)]
    pub replicas: Vec<SimReplica>,
    #[serde(default)]
    pub replica_removes: Vec<String>,
    #[serde(default)]
    pub network: SimNetwork,
    #[serde(default)]
    pub delta: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SimReplica {
    pub id: String,
    pub node: String,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct SimNetwork {
    #[serde(default)]
    pub subnet: Option<String>,
}

impl SimAssignment {
    /// Brings `self` (the last whole assignment) to `next`, as `Assignment::apply` does for
    /// the parts a simulated node reads.
    pub fn apply(&mut self, next: SimAssignment) {
        if !next.delta {
            *self = next;
            return;
        }
        let mut replicas: BTreeMap<String, SimReplica> = std::mem::take(&mut self.replicas)
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for id in &next.replica_removes {
            replicas.remove(id);
        }
        for r in next.replicas {
            replicas.insert(r.id.clone(), r);
        }
        self.replicas = replicas.into_values().collect();
        self.generation = next.generation;
        self.network = next.network;
    }
}

/// What one simulated node remembers between assignments: the replicas it runs, each with the
/// address and start time it was given, so that a replica keeps both for its whole life (a
/// real agent never renumbers a running replica).
#[derive(Debug, Default, Clone)]
pub struct SimState {
    running: BTreeMap<String, ObservedReplica>,
    /// Host parts handed out so far on this node; addresses are not reused while in use.
    next_host: u32,
}

impl SimState {
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

/// Brings `state` in line with `assignment` and returns the report to send, or `None` when
/// nothing observable changed (the node then only renews its liveness).
///
/// Replicas in the assignment start "running" at `now_ms`; replicas no longer in it are gone.
pub fn observe(
    state: &mut SimState,
    assignment: &SimAssignment,
    now_ms: u64,
) -> Option<Vec<ObservedReplica>> {
    let wanted: BTreeMap<&str, _> = assignment
        .replicas
        .iter()
        .map(|r| (r.id.as_str(), r))
        .collect();
    let before = state.running.len();
    state
        .running
        .retain(|id, _| wanted.contains_key(id.as_str()));
    let mut changed = state.running.len() != before;
    let subnet = assignment.network.subnet.as_deref().and_then(subnet_base);
    for (id, replica) in wanted {
        if state.running.contains_key(id) {
            continue;
        }
        let ip = subnet.map(|base| host_address(base, state.next_host));
        state.next_host = state.next_host.wrapping_add(1);
        state.running.insert(
            id.to_string(),
            ObservedReplica {
                id: id.to_string(),
                node: replica.node.clone(),
                state: ReplicaState::Running,
                pid: Some(10_000 + state.next_host),
                exit_code: None,
                restarts: 0,
                message: String::new(),
                started_at: Some(now_ms),
                ip,
                exits: Vec::new(),
                failure: None,
                health: None,
                meta: Default::default(),
            },
        );
        changed = true;
    }
    changed.then(|| state.running.values().cloned().collect())
}

/// The base address of an `A.B.C.D/24` subnet.
fn subnet_base(subnet: &str) -> Option<Ipv4Addr> {
    subnet.split_once('/')?.0.parse().ok()
}

/// Host addresses .2 to .254 of the node's /24 in turn (.1 is the bridge's gateway). A node
/// with more than 253 replicas wraps around, as the simulation needs no real uniqueness beyond
/// that; the server never relies on replica addresses being unique.
fn host_address(base: Ipv4Addr, n: u32) -> String {
    Ipv4Addr::from(u32::from(base) + 2 + n % 253).to_string()
}

/// How a simulated node behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The lease is renewed this often (the agent's heartbeat).
    pub heartbeat: Duration,
    /// How long each assignment long poll may be held by the server.
    pub poll: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            heartbeat: Duration::from_secs(5),
            poll: Duration::from_secs(30),
        }
    }
}

/// Joins `node` with `client`'s join token and returns a client that presents the node's own
/// credential, as an agent does; `None` when the server refuses for good (a wrong or expired
/// token, a name that has joined already), which is logged. Transient failures are retried.
pub async fn join(client: &Client, node: &str) -> Option<Client> {
    loop {
        match client.join(node).await {
            Ok(joined) => return Some(client.clone().with_token(joined.credential)),
            Err(error)
                if error
                    .status()
                    .is_some_and(|s| (400..500).contains(&s) && s != 429) =>
            {
                tracing::error!(%node, %error, fix = ?error.fix(), "cannot join");
                return None;
            }
            Err(error) => {
                tracing::warn!(%node, %error, "join failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Joins `node` with `client`'s join token, then runs it until the task is dropped.
pub async fn run_node(client: Client, node: String, address: String, config: SimConfig) {
    let Some(client) = join(&client, &node).await else {
        return;
    };
    let mut state = SimState::default();
    // The last whole assignment: the next answer is a delta merged into it, as the agent does.
    let mut base: Option<SimAssignment> = None;
    let mut generation = 0;
    // Renewals run beside the assignment loop, as the agent's reporter does, so that a slow
    // assignment never lets the lease lapse. A refused renewal asks the loop to register again.
    let unregistered = Arc::new(AtomicBool::new(true));
    let _lease = AbortOnDrop(tokio::spawn(renew_leases(
        client.clone(),
        node.clone(),
        config.heartbeat,
        unregistered.clone(),
    )));
    loop {
        // Register before asking for work, as the agent does on start.
        if unregistered.load(Ordering::Relaxed) {
            let report = NodeReport {
                node: node.clone(),
                address: address.clone(),
                agent_url: None,
                generation,
                replicas: state.running.values().cloned().collect(),
                problems: Vec::new(),
            };
            match client.report(&report).await {
                Ok(()) => unregistered.store(false, Ordering::Relaxed),
                Err(error) if error.status() == Some(401) => {
                    // The node was removed (`hivemind node rm`): its credential is gone for good.
                    tracing::error!(%node, %error, "credential refused; the node stops");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%node, %error, "report failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        let poll = config.poll;
        let wait = poll.max(Duration::from_millis(100));
        let after = base.as_ref().map(|b| b.generation);
        let next = match client
            .assignment_delta::<SimAssignment>(&node, after, wait)
            .await
        {
            Ok(a) => a,
            Err(error) => {
                tracing::warn!(%node, %error, "assignment failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let assignment = match &mut base {
            Some(whole) => {
                whole.apply(next);
                whole
            }
            None => base.insert(next),
        };
        generation = assignment.generation;
        let observed = observe(&mut state, assignment, now_millis());
        if let Some(replicas) = observed {
            let report = NodeReport {
                node: node.clone(),
                address: address.clone(),
                agent_url: None,
                generation,
                replicas,
                problems: Vec::new(),
            };
            match client.report(&report).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(%node, %error, "report failed; the next pass retries");
                    // Forget the assignment so that the next pass reports again.
                    state = SimState::default();
                    base = None;
                }
            }
        }
    }
}

/// Renews `node`'s lease every `heartbeat` until aborted; a refusal (the server does not know
/// the node) sets `unregistered` so that the node reports again.
async fn renew_leases(
    client: Client,
    node: String,
    heartbeat: Duration,
    unregistered: Arc<AtomicBool>,
) {
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        if unregistered.load(Ordering::Relaxed) {
            continue;
        }
        if let Err(error) = client.renew_lease(&node).await {
            tracing::warn!(%node, %error, "lease renewal failed; registering again");
            unregistered.store(true, Ordering::Relaxed);
        }
    }
}

/// Aborts the task when dropped (the node's loop ended or was aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use hivemind_types::{Assignment, NodeNetwork, Replica, ServiceSpec};

    use super::*;

    fn assignment(ids: &[&str]) -> SimAssignment {
        SimAssignment {
            generation: 1,
            replicas: ids
                .iter()
                .map(|id| SimReplica {
                    id: id.to_string(),
                    node: "sim-1".into(),
                })
                .collect(),
            replica_removes: Vec::new(),
            network: SimNetwork {
                subnet: Some("10.42.3.0/24".into()),
            },
            delta: false,
        }
    }

    #[test]
    fn a_whole_assignment_parses_as_the_parts_a_simulated_node_reads() {
        let whole = Assignment {
            node: "sim-1".into(),
            generation: 7,
            replicas: vec![Replica {
                id: "web-a".into(),
                namespace: "default".into(),
                app: "a".into(),
                service: "web".into(),
                node: "sim-1".into(),
                spec: ServiceSpec::default(),
                revision_hash: String::new(),
                meta: Default::default(),
            }],
            replica_removes: Vec::new(),
            network: NodeNetwork {
                subnet: Some("10.42.3.0/24".into()),
                ..Default::default()
            },
            delta: false,
            files: Vec::new(),
        };
        let read: SimAssignment =
            serde_json::from_value(serde_json::to_value(&whole).unwrap()).unwrap();
        assert_eq!(
            read,
            SimAssignment {
                generation: 7,
                ..assignment(&["web-a"])
            }
        );
    }

    #[test]
    fn deltas_merge_replicas_by_id() {
        let mut base = assignment(&["web-a", "web-b"]);
        base.apply(SimAssignment {
            generation: 2,
            replicas: vec![SimReplica {
                id: "web-c".into(),
                node: "sim-1".into(),
            }],
            replica_removes: vec!["web-a".into()],
            network: SimNetwork {
                subnet: Some("10.42.3.0/24".into()),
            },
            delta: true,
        });
        let ids: Vec<_> = base.replicas.iter().map(|r| r.id.as_str()).collect();
        assert_eq!((base.generation, ids), (2, vec!["web-b", "web-c"]));
    }

    #[test]
    fn new_replicas_run_with_addresses_from_the_subnet_and_keep_them() {
        let mut state = SimState::default();
        let first = observe(&mut state, &assignment(&["web-a", "web-b"]), 1_000).unwrap();
        let ips: Vec<_> = first.iter().map(|r| r.ip.clone().unwrap()).collect();
        assert_eq!(ips, ["10.42.3.2", "10.42.3.3"]);
        assert!(first.iter().all(|r| r.state == ReplicaState::Running));
        assert_eq!(
            observe(&mut state, &assignment(&["web-a", "web-b"]), 2_000),
            None
        );
        let next = observe(&mut state, &assignment(&["web-b", "web-c"]), 3_000).unwrap();
        let got: Vec<_> = next
            .iter()
            .map(|r| (r.id.as_str(), r.ip.as_deref().unwrap(), r.started_at))
            .collect();
        assert_eq!(
            got,
            [
                ("web-b", "10.42.3.3", Some(1_000)),
                ("web-c", "10.42.3.4", Some(3_000))
            ]
        );
        assert_eq!(
            observe(&mut state, &assignment(&[]), 4_000),
            Some(Vec::new())
        );
    }

    #[test]
    fn no_subnet_yet_means_no_address() {
        let mut state = SimState::default();
        let mut a = assignment(&["web-a"]);
        a.network.subnet = None;
        let got = observe(&mut state, &a, 0).unwrap();
        assert_eq!(got[0].ip, None);
    }
}
