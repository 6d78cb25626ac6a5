//! The agent's side of the API: what a node must run (its assignment) and what it reports back.
//!
//! Agents write only `Node` and `ReplicaStatus` objects, never `Replica`s, so their writes never
//! conflict with the control plane's (see `ObservedReplica`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use hivemind_client::wire::{ReplicaFilter, ReplicaView};
use hivemind_store::{Change, Expect, Op, Store, WatchEvent};
use hivemind_types::{
    Assignment, Kind, Meta, Node, NodeReport, NodeState, ObservedReplica, Replica,
};

use crate::error::ApiError;
use crate::network::ClusterNetwork;
use crate::recorded;

/// The longest a long poll may be held; longer requests are cut to this, so that proxies and
/// the client's own timeout do not fire first.
pub const MAX_POLL: Duration = Duration::from_secs(120);

/// A client whose `after` is further behind than this gets its assignment at once instead of
/// having the change log scanned for relevant changes.
const MAX_SCAN: u64 = 10_000;

/// All replicas placed on `node`. The generation is read *before* the replicas, so the set is at
/// least as new as the generation claims; an agent never believes it has seen a change it has not.
pub async fn assignment(store: &Store, node: &str) -> Result<Assignment, ApiError> {
    assignment_in(store, &ClusterNetwork::default(), node).await
}

/// [`assignment`] for a cluster with the address plan `net`.
pub async fn assignment_in(
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
) -> Result<Assignment, ApiError> {
    let generation = store.revision().await?;
    let replicas = store.replica_list_by_node(node).await?;
    Ok(Assignment {
        node: node.to_string(),
        generation,
        replicas,
        network: crate::network::node_network(store, net, node).await?,
    })
}

/// The assignment once it may differ from the one at generation `after`, or when `timeout` passes
/// or `stopping` resolves (server shutdown).
///
/// Other nodes' writes bump the store revision all the time, so "revision > after" alone would
/// wake every agent on every report; only changes to replicas placed on (or just moved off) this
/// node count.
pub async fn wait_assignment(
    store: &Store,
    node: &str,
    after: Option<u64>,
    timeout: Duration,
    stopping: impl std::future::Future<Output = ()>,
) -> Result<Assignment, ApiError> {
    wait_assignment_in(
        store,
        &ClusterNetwork::default(),
        node,
        after,
        timeout,
        stopping,
    )
    .await
}

/// [`wait_assignment`] for a cluster with the address plan `net`.
pub async fn wait_assignment_in(
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
    after: Option<u64>,
    timeout: Duration,
    stopping: impl std::future::Future<Output = ()>,
) -> Result<Assignment, ApiError> {
    let Some(after) = after else {
        return assignment_in(store, net, node).await;
    };
    let current = assignment_in(store, net, node).await?;
    if current.generation > after && current.generation - after > MAX_SCAN {
        return Ok(current);
    }
    // Watching from `after` covers both what happened since the agent's copy (up to
    // `current.generation`, already in `current`) and what happens next, with no gap between.
    let mut watch = store.watch(after.min(current.generation));
    let deadline = tokio::time::Instant::now() + timeout.min(MAX_POLL);
    tokio::pin!(stopping);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(deadline, watch.next()) => next,
            // Answer as on a timeout: the agent polls again, reaching the restarted server.
            () = &mut stopping => return Ok(current),
        };
        match next {
            Err(_elapsed) => return Ok(current),
            Ok(Some(WatchEvent::Txn { revision, changes })) => {
                if revision <= current.generation {
                    if changes.iter().any(|c| touches_since(c, node, &current)) {
                        return Ok(current);
                    }
                } else if changes.iter().any(|c| touches(c, node, &current)) {
                    return assignment_in(store, net, node).await;
                }
            }
            // History the agent asks about is gone: it cannot know what it missed.
            Ok(Some(WatchEvent::Compacted { .. })) => return Ok(current),
            // The store closed: answering is always safe.
            Ok(None) => return assignment_in(store, net, node).await,
        }
    }
}

/// Like [`touches`], for changes already applied to `current`: the agent's copy predates them,
/// so comparing with `current` would hide them (a new subnet equals the current subnet). Any
/// change that can alter the network counts.
fn touches_since(change: &Change, node: &str, current: &Assignment) -> bool {
    touches(change, node, current)
        || match change.kind {
            Kind::Service | Kind::ReplicaStatus => true,
            Kind::Node => change.key == node,
            Kind::Replica => change.op == hivemind_store::ChangeOp::Delete,
            Kind::App | Kind::Event | Kind::Endpoints | Kind::Address => false,
        }
}

/// Whether `change` may alter `node`'s assignment: a replica written or deleted on this node, one
/// of its current replicas written elsewhere (moved away), or a change to the network it serves.
fn touches(change: &Change, node: &str, current: &Assignment) -> bool {
    let replica_change = change.kind == Kind::Replica
        && (change.value.get("node").and_then(|n| n.as_str()) == Some(node)
            || current.replicas.iter().any(|r| r.id == change.key));
    replica_change || crate::network::touches_network(change, node, current)
}

/// Upserts the node and writes the statuses that changed, with the events they bring (new exits
/// and failures, a node becoming ready; see `recorded`), in one transaction. Returns the new
/// store revision.
pub async fn report(
    store: &Store,
    node: &str,
    report: &NodeReport,
    now_ms: u64,
) -> Result<u64, ApiError> {
    report_in(store, &ClusterNetwork::default(), node, report, now_ms).await
}

/// [`report`] for a cluster with the address plan `net` (new nodes get a subnet from it).
pub async fn report_in(
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
    report: &NodeReport,
    now_ms: u64,
) -> Result<u64, ApiError> {
    if report.node != node {
        return Err(ApiError::bad_request(
            "node",
            format!(
                "node: the body reports node {:?} but the path names {node:?}",
                report.node
            ),
            "send the report to /api/v1/nodes/{its own node}/report",
        ));
    }
    if report.address.is_empty() {
        return Err(ApiError::invalid(
            "address",
            "address: the node's address is empty",
            "start the agent with --advertise-address",
        ));
    }
    let mut reported = BTreeMap::new();
    for (i, status) in report.replicas.iter().enumerate() {
        if status.node != node {
            return Err(ApiError::invalid(
                format!("replicas[{i}].node"),
                format!(
                    "replicas[{i}].node: replica {} is reported by {node} but says node {:?}",
                    status.id, status.node
                ),
                "report only replicas of the reporting node",
            ));
        }
        if reported.insert(status.id.as_str(), status).is_some() {
            return Err(ApiError::invalid(
                format!("replicas[{i}].id"),
                format!("replicas[{i}].id: replica {} is reported twice", status.id),
                "report each replica once",
            ));
        }
    }

    let _allocation = crate::network::ALLOCATION.lock().await;
    let mut ops = Vec::new();
    let old_node: Option<Node> = store.get(Kind::Node, node).await?;
    let state = match &old_node {
        // Drain is the operator's decision; a report must not undo it.
        Some(n) if n.state == NodeState::Drained => NodeState::Drained,
        _ => NodeState::Ready,
    };
    // A node keeps its subnet for life; a new node gets the lowest free one.
    let (subnet, node_expect) = match &old_node {
        Some(n) if n.subnet.is_some() => (n.subnet.clone(), Expect::Any),
        Some(n) => (
            crate::network::allocate_subnet(net, &store.list(Kind::Node, "").await?),
            Expect::Revision(n.meta.revision),
        ),
        None => (
            crate::network::allocate_subnet(net, &store.list(Kind::Node, "").await?),
            Expect::Absent,
        ),
    };
    let node_obj = Node {
        name: node.to_string(),
        address: report.address.clone(),
        state,
        last_seen: now_ms,
        subnet,
        agent_url: report.agent_url.clone(),
        problems: report.problems.clone(),
        meta: Meta::default(),
    };
    ops.push(Op::put(Kind::Node, node, &node_obj, node_expect));
    let mut events = Vec::new();
    let was_ready = old_node
        .as_ref()
        .is_some_and(|n| n.state != NodeState::Down);
    if !was_ready && state == NodeState::Ready {
        events.push(hivemind_types::Event::about_node(node, true, now_ms));
    }
    let old_problems = old_node.as_ref().map_or(&[][..], |n| &n.problems[..]);
    events.extend(recorded::node_problem_events(
        node,
        old_problems,
        &report.problems,
        now_ms,
    ));

    // This node's statuses, and those of reported replicas last reported by another node.
    let mut old: Vec<ObservedReplica> = store.status_list_by_node(node).await?;
    let on_node: HashSet<String> = old.iter().map(|s| s.id.clone()).collect();
    for id in reported.keys() {
        if !on_node.contains(*id) {
            if let Some(s) = store.get(Kind::ReplicaStatus, id).await? {
                old.push(s);
            }
        }
    }
    let old: HashMap<&str, &ObservedReplica> = old.iter().map(|s| (s.id.as_str(), s)).collect();
    for (id, status) in &reported {
        let previous = old.get(id).copied();
        let stored = recorded::stored_form(status);
        if previous.is_some_and(|o| same_content(o, &stored)) {
            continue;
        }
        events.extend(recorded::replica_events(store, previous, status).await?);
        ops.push(Op::put(Kind::ReplicaStatus, *id, &stored, Expect::Any));
    }
    for (id, status) in &old {
        if status.node != node || reported.contains_key(id) {
            continue;
        }
        // A status whose replica still exists stays: the agent may be restarting and the
        // scheduler still wants to see the last known state.
        if store.get::<Replica>(Kind::Replica, id).await?.is_none() {
            ops.push(Op::delete(Kind::ReplicaStatus, *id, Expect::Any));
        }
    }
    ops.extend(recorded::write_ops(store, events, now_ms).await?);
    Ok(store.txn(ops).await?)
}

/// Equal apart from `meta`, which the store rewrites on every put.
fn same_content(a: &ObservedReplica, b: &ObservedReplica) -> bool {
    let strip = |s: &ObservedReplica| ObservedReplica {
        meta: Meta::default(),
        ..s.clone()
    };
    strip(a) == strip(b)
}

/// Replicas matching `filter` in `namespace`, each with its reported status.
pub async fn replica_views(
    store: &Store,
    namespace: &str,
    filter: &ReplicaFilter,
) -> Result<Vec<ReplicaView>, ApiError> {
    let matches = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    // The narrowest index the filter allows; the filter below still applies in full.
    let candidates: Vec<Replica> = match (&filter.node, &filter.app, &filter.service) {
        (Some(node), _, _) => store.replica_list_by_node(node).await?,
        (None, Some(app), Some(service)) => {
            store
                .replica_list_by_service(namespace, app, service)
                .await?
        }
        _ => store.list(Kind::Replica, "").await?,
    };
    let replicas: Vec<Replica> = candidates
        .into_iter()
        .filter(|r| {
            r.namespace == namespace
                && matches(&filter.app, &r.app)
                && matches(&filter.service, &r.service)
                && matches(&filter.node, &r.node)
        })
        .collect();
    // Point reads for a few replicas (`ps web`), one scan for many (`ps`).
    let mut statuses: HashMap<String, ObservedReplica> = HashMap::new();
    if replicas.len() <= 64 {
        for r in &replicas {
            if let Some(s) = store
                .get::<ObservedReplica>(Kind::ReplicaStatus, &r.id)
                .await?
            {
                statuses.insert(r.id.clone(), s);
            }
        }
    } else {
        let all = match &filter.node {
            Some(node) => store.status_list_by_node(node).await?,
            None => store.list(Kind::ReplicaStatus, "").await?,
        };
        statuses = all.into_iter().map(|s| (s.id.clone(), s)).collect();
    }
    Ok(replicas
        .into_iter()
        .map(|replica| ReplicaView {
            status: statuses.remove(&replica.id),
            replica,
        })
        .collect())
}

pub async fn nodes(store: &Store) -> Result<Vec<Node>, ApiError> {
    Ok(store.list(Kind::Node, "").await?)
}

#[cfg(test)]
mod tests;
