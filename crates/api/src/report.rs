//! The agent's side of the API: what a node reports back (its assignment is in `assignments`).
//!
//! Agents write only `Node` and `ReplicaStatus` objects, never `Replica`s, so their writes never
//! conflict with the control plane's (see `ObservedReplica`). Liveness is not a report: a node
//! renews its lease (`lease`), which writes nothing; a report is sent when what the node
//! observes changed, and writes only what differs from the store.

use std::collections::{BTreeMap, HashMap, HashSet};

use hivemind_client::wire::{ReplicaFilter, ReplicaView};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{
    ExitRecord, Kind, Meta, Node, NodeReport, NodeState, ObservedReplica, Replica,
};

use crate::error::ApiError;

/// Registers or updates the node and writes the statuses that changed in one transaction, and
/// renews the node's lease. Returns the store revision the report is reflected in. The events
/// these writes bring (new exits and failures, node problems) are recorded by the events
/// controller (`hivemind_control::exec::events`), which follows the store's watch.
///
/// A new node is written `Down` until node health (`control`) sees its lease and marks it
/// ready; its subnet comes from the allocator. The Node object is rewritten only when its
/// address, agent URL or problems changed, so that steady reports cost no node write.
pub async fn report(
    store: &Store,
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

    // Node health, the allocator and a drain write the Node too: every write here is
    // conditioned on the revision read, and a lost race is planned again from fresh state.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ops = report_ops(store, node, report, &reported, now_ms).await?;
        let revision = if ops.is_empty() {
            store.revision().await?
        } else {
            match store.txn(ops).await {
                Ok(revision) => revision,
                Err(e) if e.is_conflict() && attempt < 3 => continue,
                Err(e) => return Err(e.into()),
            }
        };
        store.leases().renew(node, now_ms);
        return Ok(revision);
    }
}

async fn report_ops(
    store: &Store,
    node: &str,
    report: &NodeReport,
    reported: &BTreeMap<&str, &ObservedReplica>,
    now_ms: u64,
) -> Result<Vec<Op>, ApiError> {
    let mut ops = Vec::new();
    let old_node: Option<Node> = store.get(Kind::Node, node).await?;
    let node_write = match &old_node {
        None => Some((
            Node {
                name: node.to_string(),
                address: report.address.clone(),
                state: NodeState::Down,
                last_seen: now_ms,
                subnet: None,
                agent_url: report.agent_url.clone(),
                problems: report.problems.clone(),
                meta: Meta::default(),
            },
            Expect::Absent,
        )),
        Some(n)
            if n.address != report.address
                || n.agent_url != report.agent_url
                || n.problems != report.problems =>
        {
            Some((
                Node {
                    address: report.address.clone(),
                    agent_url: report.agent_url.clone(),
                    problems: report.problems.clone(),
                    last_seen: now_ms,
                    ..n.clone()
                },
                Expect::Revision(n.meta.revision),
            ))
        }
        Some(_) => None,
    };
    if let Some((node_obj, expect)) = node_write {
        ops.push(Op::put(Kind::Node, node, &node_obj, expect));
    }

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
    for (id, status) in reported {
        let previous = old.get(id).copied();
        let stored = stored_form(status);
        if previous.is_some_and(|o| same_content(o, &stored)) {
            continue;
        }
        let expect = previous.map_or(Expect::Absent, |p| Expect::Revision(p.meta.revision));
        ops.push(Op::put(Kind::ReplicaStatus, *id, &stored, expect));
    }
    for (id, status) in &old {
        if status.node != node || reported.contains_key(id) {
            continue;
        }
        // A status whose replica still exists stays: the agent may be restarting and the
        // scheduler still wants to see the last known state.
        if store.get::<Replica>(Kind::Replica, id).await?.is_none() {
            ops.push(Op::delete(
                Kind::ReplicaStatus,
                *id,
                Expect::Revision(status.meta.revision),
            ));
        }
    }
    Ok(ops)
}

/// The form a reported status is stored in: at most `ExitRecord::MAX_KEPT` exits, each with
/// its last lines bounded (never trust the client with bounds).
///
/// The lines stay in the stored status, rather than in an object of their own, because the
/// events controller makes each exit's event from the stored status and needs them there. It
/// costs little: at most 3 exits of 10 lines of 240 characters, an agent never changes an
/// exit's lines once reported (so a repeated report still compares equal and writes nothing),
/// and a status is rewritten only when it changed, so the change log grows by the lines only
/// when the replica's state did anyway. A second object would cost a second write per exit.
pub(crate) fn stored_form(status: &ObservedReplica) -> ObservedReplica {
    let mut stored = status.clone();
    let excess = stored.exits.len().saturating_sub(ExitRecord::MAX_KEPT);
    stored.exits.drain(..excess);
    for exit in &mut stored.exits {
        exit.last_lines = ExitRecord::bound_lines(std::mem::take(&mut exit.last_lines));
    }
    stored
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

/// Every node, with `last_seen` brought up to its last lease renewal (renewals are not
/// written to the store).
pub async fn nodes(store: &Store) -> Result<Vec<Node>, ApiError> {
    let mut nodes: Vec<Node> = store.list(Kind::Node, "").await?;
    for n in &mut nodes {
        if let Some(renewed) = store.leases().renewed_at(&n.name) {
            n.last_seen = n.last_seen.max(renewed);
        }
    }
    Ok(nodes)
}

/// Renews `node`'s lease at `now_ms`: the heartbeat, which writes nothing. A node renews only
/// after it has registered with a report.
pub async fn renew_lease(store: &Store, node: &str, now_ms: u64) -> Result<(), ApiError> {
    if !store.leases().knows(node) && store.get::<Node>(Kind::Node, node).await?.is_none() {
        return Err(ApiError::not_found(
            format!("node {node:?} (not registered)"),
            "a node registers with its first report (PUT /api/v1/nodes/{node}/report)",
        ));
    }
    store.leases().renew(node, now_ms);
    Ok(())
}

#[cfg(test)]
mod tests;
