//! The service controller's planner: desired replica counts per service → replica objects.
//!
//! A replica object's existence is the desired state (see `hivemind_types::Replica`), so the plan
//! is just which replicas to create (already placed on a node) and which to delete.
//!
//! - A replica whose revision differs from its service's is replaced, all at once and
//!   stop-first. That is the foundation's update; rollout strategies will pace it.
//! - A replica on a node that is not ready (Down, Drained, or gone) is *stranded*: it is
//!   replaced on a ready node, and deleted in the same plan as its replacement, so the service
//!   never has more replica objects than it wants. A Down node that returns therefore finds its
//!   stale replicas gone from its assignment and stops them. With no ready node to take the
//!   replacement, the stranded replica stays (its node may come back).
//! - Ids are unique: checked against every replica in the store and every id of the plan, with
//!   a suffix that grows with the service (see `hivemind_types::id`).
//! - A plan holds at most `budget` writes. A service whose work does not fit is planned in part
//!   (a prefix that leaves a state the next plan continues from) and reported unfinished, so a
//!   scale-up of any size commits in steady steps rather than as one transaction that fails.

use std::collections::{BTreeMap, HashMap, HashSet};

use hivemind_types::{Node, NodeState, Replica, ReplicaState, Service, ServiceMode};

use crate::plan::schedule::NodeLoad;

/// Attempts at a fresh id before a service's creations stop for this plan (reported, and the
/// next plan tries again): with ids sized by `id::suffix_len` one retry is already rare.
pub const ID_ATTEMPTS: usize = 32;

/// What the planner needs of an existing replica (the controller's cache keeps this much, not
/// the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHead {
    pub id: String,
    pub node: String,
    pub revision_hash: String,
    pub created_at: u64,
    /// The store revision the replica was last written at: the precondition of its delete.
    pub revision: u64,
}

impl From<&Replica> for ReplicaHead {
    fn from(r: &Replica) -> ReplicaHead {
        ReplicaHead {
            id: r.id.clone(),
            node: r.node.clone(),
            revision_hash: r.revision_hash.clone(),
            created_at: r.meta.created_at,
            revision: r.meta.revision,
        }
    }
}

/// One service to plan: its key (`ns/app/name`), the service (`None` when it is gone and its
/// replicas are orphans) and its replicas.
#[derive(Debug, Clone)]
pub struct ServiceWork<'a> {
    pub key: &'a str,
    pub service: Option<&'a Service>,
    pub replicas: Vec<&'a ReplicaHead>,
}

/// What the planner reads besides the services: the nodes, the agents' reported states (to
/// prefer removing replicas that are not running) and the ids already in use.
pub struct Observed<'a> {
    pub nodes: &'a [Node],
    pub state: &'a dyn Fn(&str) -> Option<ReplicaState>,
    pub id_taken: &'a dyn Fn(&str) -> bool,
}

/// What one plan does to one service, for the controller's log line and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceOutcome {
    pub key: String,
    pub created: usize,
    pub deleted: usize,
    /// Of the deletes, stranded replicas (on nodes not ready) replaced by a creation.
    pub replaced_stranded: usize,
    /// Replicas wanted that no ready node could take.
    pub unschedulable: usize,
    /// Fresh ids that were already taken and drawn again.
    pub id_collisions: usize,
    /// The budget (or the id attempts) ran out before the service's work was planned whole.
    pub unfinished: bool,
}

/// What the service controller should write in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplicaPlan {
    pub create: Vec<Replica>,
    pub delete: Vec<ReplicaHead>,
    /// The services that were planned and what changed for each (only those with news).
    pub services: Vec<ServiceOutcome>,
}

impl ReplicaPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }

    pub fn ops(&self) -> usize {
        self.create.len() + self.delete.len()
    }

    /// Keys of the services whose work continues in a later plan.
    pub fn unfinished(&self) -> impl Iterator<Item = &str> {
        self.services
            .iter()
            .filter(|s| s.unfinished)
            .map(|s| s.key.as_str())
    }
}

/// Plans replica creations and deletions for `work`, at most `budget` of them in all.
///
/// `load` is the cluster's replica count per ready node (every service's, not only these);
/// it records the placements made. `new_id(service_name, desired)` draws a candidate id
/// (injected so tests are deterministic); the planner checks it is unused.
pub fn plan_replicas(
    work: &[ServiceWork<'_>],
    load: &mut NodeLoad,
    observed: &Observed<'_>,
    new_id: &mut dyn FnMut(&str, u32) -> String,
    budget: usize,
) -> ReplicaPlan {
    let node_state: HashMap<&str, NodeState> = observed
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state))
        .collect();
    let mut cx = Cx {
        load,
        observed,
        node_state,
        new_id,
        planned_ids: HashSet::new(),
        budget,
        plan: ReplicaPlan::default(),
    };
    for w in work {
        let mut outcome = ServiceOutcome {
            key: w.key.to_string(),
            ..Default::default()
        };
        match w.service {
            None => {
                // The service or its app was removed: its replicas are orphans.
                let mut orphans = w.replicas.clone();
                orphans.sort_by(|a, b| a.id.cmp(&b.id));
                cx.delete_all(orphans, &mut outcome);
            }
            Some(service) => match service.spec.mode {
                ServiceMode::Replicated => cx.plan_replicated(service, w, &mut outcome),
                ServiceMode::Global => cx.plan_global(service, w, &mut outcome),
            },
        }
        if outcome
            != (ServiceOutcome {
                key: outcome.key.clone(),
                ..Default::default()
            })
        {
            cx.plan.services.push(outcome);
        }
    }
    cx.plan
}

struct Cx<'a, 'b> {
    load: &'b mut NodeLoad,
    observed: &'b Observed<'a>,
    node_state: HashMap<&'b str, NodeState>,
    new_id: &'b mut dyn FnMut(&str, u32) -> String,
    planned_ids: HashSet<String>,
    budget: usize,
    plan: ReplicaPlan,
}

impl Cx<'_, '_> {
    fn plan_replicated(
        &mut self,
        service: &Service,
        w: &ServiceWork<'_>,
        out: &mut ServiceOutcome,
    ) {
        let hash = service.spec.revision_hash();
        let desired = service.spec.replicas as usize;
        let mut current = Vec::new();
        let mut stranded = Vec::new();
        let mut outdated = Vec::new();
        for r in &w.replicas {
            if r.revision_hash != hash {
                outdated.push(*r);
            } else if self.load.is_schedulable(&r.node) {
                current.push(*r);
            } else {
                stranded.push(*r);
            }
        }
        // Deleted whatever else happens: replaced revisions and the excess of a scale-down
        // (broken and newest first), and stranded replicas beyond what the service wants.
        let mut free = outdated;
        free.sort_by(|a, b| a.id.cmp(&b.id));
        if current.len() > desired {
            current.sort_by_key(|r| self.removal_order(r));
            free.extend(current.drain(..current.len() - desired));
        }
        let creates = desired - current.len();
        stranded.sort_by_key(|r| self.removal_order(r));
        if stranded.len() > creates {
            free.extend(stranded.drain(..stranded.len() - creates));
        }
        self.delete_all(free, out);
        if out.unfinished || creates == 0 {
            return;
        }
        // Stranded replicas go only together with their replacement.
        let mut stranded = stranded.into_iter();
        let mut same_service: HashMap<String, usize> = HashMap::new();
        for r in &current {
            *same_service.entry(r.node.clone()).or_default() += 1;
        }
        let mut placer = self.load.placer(&same_service);
        let mut made = 0;
        while made < creates {
            let replacing = stranded.len() > 0;
            let cost = if replacing { 2 } else { 1 };
            if self.budget < cost {
                out.unfinished = true;
                break;
            }
            let Some(id) = fresh_id(
                self.new_id,
                &mut self.planned_ids,
                self.observed.id_taken,
                &service.name,
                service.spec.replicas,
                out,
            ) else {
                out.unfinished = true;
                break;
            };
            let Some(node) = placer.pick() else {
                out.unschedulable = creates - made;
                break;
            };
            if let Some(old) = stranded.next() {
                self.plan.delete.push(old.clone());
                out.deleted += 1;
                out.replaced_stranded += 1;
            }
            self.plan.create.push(new_replica(service, &hash, id, node));
            out.created += 1;
            self.budget -= cost;
            made += 1;
        }
    }

    fn plan_global(&mut self, service: &Service, w: &ServiceWork<'_>, out: &mut ServiceOutcome) {
        let hash = service.spec.revision_hash();
        let mut free = Vec::new();
        let mut kept: BTreeMap<&str, &ReplicaHead> = BTreeMap::new();
        let mut mine: Vec<&ReplicaHead> = w.replicas.clone();
        // Best first, so the replica kept on a node is the healthiest and oldest.
        mine.sort_by_key(|r| std::cmp::Reverse(self.removal_order(r)));
        for r in mine {
            let node = self.node_state.get(r.node.as_str()).copied();
            let on_usable_node = match node {
                Some(NodeState::Ready) => true,
                // One replica per node: nothing to move elsewhere, and the node may return.
                Some(NodeState::Down) => true,
                Some(NodeState::Drained) | None => false,
            };
            if r.revision_hash != hash || !on_usable_node || kept.contains_key(r.node.as_str()) {
                free.push(r);
            } else {
                kept.insert(&r.node, r);
            }
        }
        free.sort_by(|a, b| a.id.cmp(&b.id));
        self.delete_all(free, out);
        if out.unfinished {
            return;
        }
        let targets: Vec<String> = self
            .load
            .schedulable_nodes()
            .filter(|n| !kept.contains_key(n))
            .map(String::from)
            .collect();
        for node in targets {
            if self.budget == 0 {
                out.unfinished = true;
                break;
            }
            let Some(id) = fresh_id(
                self.new_id,
                &mut self.planned_ids,
                self.observed.id_taken,
                &service.name,
                self.load.schedulable_nodes().count() as u32,
                out,
            ) else {
                out.unfinished = true;
                break;
            };
            self.plan.create.push(new_replica(service, &hash, id, node));
            out.created += 1;
            self.budget -= 1;
        }
    }

    /// Deletes `replicas` in order while the budget lasts.
    fn delete_all(&mut self, replicas: Vec<&ReplicaHead>, out: &mut ServiceOutcome) {
        for r in replicas {
            if self.budget == 0 {
                out.unfinished = true;
                return;
            }
            self.budget -= 1;
            self.plan.delete.push(r.clone());
            out.deleted += 1;
        }
    }

    /// Sort key: replicas that sort first are removed first. Broken and not yet running
    /// replicas go before running ones; among equals, the newest goes first (as Swarm and
    /// Kubernetes do), so long-running replicas survive.
    fn removal_order(&self, r: &ReplicaHead) -> (u8, std::cmp::Reverse<u64>, String) {
        let rank = match (self.observed.state)(&r.id) {
            Some(ReplicaState::Failed | ReplicaState::Exited) => 0,
            Some(ReplicaState::Restarting) => 1,
            None | Some(ReplicaState::Pending | ReplicaState::Starting) => 2,
            Some(ReplicaState::Running) => 3,
        };
        (rank, std::cmp::Reverse(r.created_at), r.id.clone())
    }
}

/// An id that no stored replica and no creation of this plan has, or `None` after
/// [`ID_ATTEMPTS`] draws.
fn fresh_id(
    new_id: &mut dyn FnMut(&str, u32) -> String,
    planned: &mut HashSet<String>,
    taken: &dyn Fn(&str) -> bool,
    service: &str,
    desired: u32,
    out: &mut ServiceOutcome,
) -> Option<String> {
    for _ in 0..ID_ATTEMPTS {
        let id = new_id(service, desired);
        if !taken(&id) && !planned.contains(&id) {
            planned.insert(id.clone());
            return Some(id);
        }
        out.id_collisions += 1;
    }
    None
}

fn new_replica(service: &Service, hash: &str, id: String, node: String) -> Replica {
    Replica {
        id,
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
