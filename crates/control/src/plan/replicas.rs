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
//! - A replica's existence is what counts, not its state: a completed one-shot or a replica
//!   that exited for good is not missing and is not replaced (a redeploy with a changed
//!   template replaces it like any other), and a completed one on a lost node stays.
//! - A stopped service (`hivemind stop`) keeps its replicas; those whose copy of
//!   `spec.stopped` differs are rewritten (`set_stopped`), which the agents apply.
//! - Creations wait while the service's `depends_on` does not hold (`plan::depends`, given
//!   as `ServiceWork::held`); deletions do not.
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
    /// Its copy of the spec says the service is stopped (`ServiceSpec::stopped`).
    pub stopped: bool,
}

impl From<&Replica> for ReplicaHead {
    fn from(r: &Replica) -> ReplicaHead {
        ReplicaHead {
            id: r.id.clone(),
            node: r.node.clone(),
            revision_hash: r.revision_hash.clone(),
            created_at: r.meta.created_at,
            revision: r.meta.revision,
            stopped: r.spec.stopped,
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
    /// Its dependencies do not hold yet (`plan::depends`): no replica is created.
    pub held: bool,
    /// Replicas created before this are replaced (`depends_on.restart`: a dependency was
    /// replaced after them).
    pub replace_created_before: Option<u64>,
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
    /// Creations wanted but held until its dependencies hold.
    pub held: usize,
    /// Replicas rewritten to stop or start them (`hivemind stop` / `start`).
    pub stop_changed: usize,
}

/// What the service controller should write in one transaction.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplicaPlan {
    pub create: Vec<Replica>,
    pub delete: Vec<ReplicaHead>,
    /// Replicas whose `spec.stopped` is rewritten to the given value (their service was
    /// stopped or started); the executor reads and rewrites each.
    pub set_stopped: Vec<(ReplicaHead, bool)>,
    /// The services that were planned and what changed for each (only those with news).
    pub services: Vec<ServiceOutcome>,
}

impl ReplicaPlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty() && self.set_stopped.is_empty()
    }

    pub fn ops(&self) -> usize {
        self.create.len() + self.delete.len() + self.set_stopped.len()
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
            if is_outdated(r, &hash, w) {
                outdated.push(*r);
            } else if self.load.is_schedulable(&r.node) || self.is_completed(r) {
                // A completed one-shot on a lost node is done, not missing: running it again
                // elsewhere would repeat its work.
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
        self.sync_stopped(service, current.iter().chain(&stranded).copied(), out);
        if out.unfinished || creates == 0 {
            return;
        }
        if w.held {
            out.held = creates;
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
            if is_outdated(r, &hash, w) || !on_usable_node || kept.contains_key(r.node.as_str()) {
                free.push(r);
            } else {
                kept.insert(&r.node, r);
            }
        }
        free.sort_by(|a, b| a.id.cmp(&b.id));
        self.delete_all(free, out);
        self.sync_stopped(service, kept.values().copied(), out);
        if out.unfinished {
            return;
        }
        let targets: Vec<String> = self
            .load
            .schedulable_nodes()
            .filter(|n| !kept.contains_key(n))
            .map(String::from)
            .collect();
        if w.held && !targets.is_empty() {
            out.held = targets.len();
            return;
        }
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

    /// Rewrites the replicas whose copy of `stopped` differs from the service's, while the
    /// budget lasts.
    fn sync_stopped<'r>(
        &mut self,
        service: &Service,
        replicas: impl Iterator<Item = &'r ReplicaHead>,
        out: &mut ServiceOutcome,
    ) {
        let mut differing: Vec<&ReplicaHead> = replicas
            .filter(|r| r.stopped != service.spec.stopped)
            .collect();
        differing.sort_by(|a, b| a.id.cmp(&b.id));
        for r in differing {
            if self.budget == 0 {
                out.unfinished = true;
                return;
            }
            self.budget -= 1;
            self.plan
                .set_stopped
                .push((r.clone(), service.spec.stopped));
            out.stop_changed += 1;
        }
    }

    fn is_completed(&self, r: &ReplicaHead) -> bool {
        (self.observed.state)(&r.id) == Some(ReplicaState::Completed)
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
            Some(ReplicaState::Restarting | ReplicaState::Completed | ReplicaState::Stopped) => 1,
            None | Some(ReplicaState::Pending | ReplicaState::Starting) => 2,
            Some(ReplicaState::Running) => 3,
        };
        (rank, std::cmp::Reverse(r.created_at), r.id.clone())
    }
}

/// Whether `r` must be replaced: another revision, or older than a dependency it restarts with.
fn is_outdated(r: &ReplicaHead, hash: &str, w: &ServiceWork<'_>) -> bool {
    r.revision_hash != hash || w.replace_created_before.is_some_and(|t| r.created_at < t)
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

#[cfg(test)]
#[path = "replicas_lifecycle_tests.rs"]
mod lifecycle_tests;
