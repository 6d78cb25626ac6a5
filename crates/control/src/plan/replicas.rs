//! The service controller's planner: desired replica counts per service → replica objects.
//!
//! A replica object's existence is the desired state (see `hivemind_types::Replica`), so the plan
//! is just which replicas to create (already placed on a node) and which to delete.
//!
//! A replica whose revision differs from its service's is replaced, all at once and stop-first.
//! That is the foundation's update; rollout strategies (rolling, canary, ...) will pace it.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_types::{Node, ObservedReplica, Replica, ReplicaState, Service, ServiceMode};

use crate::plan::schedule::NodeLoad;

/// What the service controller should write in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplicaPlan {
    pub create: Vec<Replica>,
    pub delete: Vec<Replica>,
    /// Services that want more replicas than could be placed: (service key, replicas missing).
    pub unschedulable: Vec<(String, u32)>,
}

impl ReplicaPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// Plans replica creations and deletions for every service.
///
/// `new_id` makes replica ids (injected so tests are deterministic); `statuses` are the agents'
/// reports by replica id, used to prefer removing replicas that are not running.
pub fn plan_replicas(
    services: &[Service],
    replicas: &[Replica],
    statuses: &BTreeMap<String, ObservedReplica>,
    nodes: &[Node],
    new_id: &mut dyn FnMut(&str) -> String,
) -> ReplicaPlan {
    let mut plan = ReplicaPlan::default();
    let mut load = NodeLoad::new(nodes, replicas.iter().map(|r| r.node.as_str()));
    let mut by_service: BTreeMap<(&str, &str, &str), Vec<&Replica>> = BTreeMap::new();
    for r in replicas {
        by_service
            .entry((&r.namespace, &r.app, &r.service))
            .or_default()
            .push(r);
    }
    let mut known = BTreeSet::new();
    for service in services {
        let key = (
            service.namespace.as_str(),
            service.app.as_str(),
            service.name.as_str(),
        );
        known.insert(key);
        let mine = by_service.remove(&key).unwrap_or_default();
        plan_service(service, mine, statuses, &mut load, new_id, &mut plan);
    }
    // Whatever is left belongs to no service: the service or app was removed.
    for (_, orphans) in by_service {
        plan.delete.extend(orphans.into_iter().cloned());
    }
    plan
}

fn plan_service(
    service: &Service,
    mine: Vec<&Replica>,
    statuses: &BTreeMap<String, ObservedReplica>,
    load: &mut NodeLoad,
    new_id: &mut dyn FnMut(&str) -> String,
    plan: &mut ReplicaPlan,
) {
    let hash = service.spec.revision_hash();
    let (mut current, outdated): (Vec<&Replica>, Vec<&Replica>) =
        mine.into_iter().partition(|r| r.revision_hash == hash);
    plan.delete.extend(outdated.into_iter().cloned());

    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for r in &current {
        *per_node.entry(r.node.clone()).or_default() += 1;
    }

    let missing = match service.spec.mode {
        ServiceMode::Replicated => {
            let desired = service.spec.replicas as usize;
            if current.len() > desired {
                current.sort_by_key(|r| removal_order(r, statuses));
                plan.delete
                    .extend(current.drain(..current.len() - desired).cloned());
                0
            } else {
                let mut missing = desired - current.len();
                while missing > 0 {
                    let Some(node) = load.pick_node(&per_node) else {
                        break;
                    };
                    *per_node.entry(node.clone()).or_default() += 1;
                    plan.create.push(new_replica(service, &hash, node, new_id));
                    missing -= 1;
                }
                missing
            }
        }
        ServiceMode::Global => {
            // One per schedulable node: drop duplicates, fill the gaps.
            let mut seen = BTreeSet::new();
            current.sort_by_key(|r| std::cmp::Reverse(removal_order(r, statuses)));
            for r in current {
                if !seen.insert(r.node.clone()) {
                    plan.delete.push(r.clone());
                }
            }
            let targets: Vec<String> = load
                .schedulable_nodes()
                .filter(|n| !seen.contains(*n))
                .map(String::from)
                .collect();
            for node in targets {
                plan.create.push(new_replica(service, &hash, node, new_id));
            }
            0
        }
    };
    if missing > 0 {
        plan.unschedulable.push((service.key(), missing as u32));
    }
}

/// Sort key: replicas that sort first are removed first when scaling down. Broken and not yet
/// running replicas go before running ones; among equals, the newest goes first (as Swarm and
/// Kubernetes do), so long-running replicas survive.
fn removal_order(
    r: &Replica,
    statuses: &BTreeMap<String, ObservedReplica>,
) -> (u8, std::cmp::Reverse<u64>, String) {
    let rank = match statuses.get(&r.id).map(|s| s.state) {
        Some(ReplicaState::Failed | ReplicaState::Exited) => 0,
        Some(ReplicaState::Restarting) => 1,
        None | Some(ReplicaState::Pending | ReplicaState::Starting) => 2,
        Some(ReplicaState::Running) => 3,
    };
    (rank, std::cmp::Reverse(r.meta.created_at), r.id.clone())
}

fn new_replica(
    service: &Service,
    hash: &str,
    node: String,
    new_id: &mut dyn FnMut(&str) -> String,
) -> Replica {
    Replica {
        id: new_id(&service.name),
        namespace: service.namespace.clone(),
        app: service.app.clone(),
        service: service.name.clone(),
        node,
        spec: service.spec.clone(),
        revision_hash: hash.to_string(),
        meta: Default::default(),
    }
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
