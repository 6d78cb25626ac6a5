//! The service controller's executor: keeps a cache of services, replicas, nodes and replica
//! states fed by the store's watch, plans only the services whose objects changed, and writes
//! each plan in one bounded transaction.
//!
//! Like a Kubernetes informer: one list at start, after compacted history and every
//! [`RESYNC`] (which marks every service), then each committed change marks the services it
//! concerns — a service change its service, a replica change its service, a node whose state
//! changed the services with replicas there, every global service and every service that could
//! not be placed. A run first applies everything committed before it started (its own previous
//! write included, so a plan never repeats the creations of the last one), plans the marked
//! services and writes at most [`BATCH`] replicas. A status change replans the services that
//! `depends_on` the replica's service (`depends`: their gates and wait events). A service left unfinished stays marked; the
//! runner wakes the controller on its own write, so a large scale-up proceeds batch by batch.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use hivemind_store::{Change, ChangeOp, Expect, Op, Store, WatchEvent};
use hivemind_types::{HealthStatus, Kind, Meta, Node, Replica, ReplicaState, Service, ServiceMode};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info, warn};

use crate::exec::runner::BackgroundTask;
use crate::exec::{mirror, now_millis, ControlError};
use crate::plan::depends::Gate;
use crate::plan::replicas::{plan_replicas, Observed, ReplicaHead, ServiceWork};
use crate::plan::schedule::NodeLoad;
use depends::WaitEvents;
pub(crate) use hivemind_types::error_chain;

mod depends;

/// Replica writes (creates and deletes) per transaction: a few MB of JSON, well under what
/// one SQLite transaction and one watch item carry comfortably.
pub const BATCH: usize = 5_000;

/// How often the cache is rebuilt from a full list and every service planned, which repairs
/// anything the per-change marking might have missed.
pub const RESYNC: Duration = Duration::from_secs(30);

/// How long a run waits for the watch to deliver what was committed before it began; past it
/// the cache is rebuilt from a list instead.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The part of a replica's JSON the cache needs (of the spec, only `stopped`).
#[derive(Deserialize)]
struct ReplicaJson {
    id: String,
    namespace: String,
    app: String,
    service: String,
    node: String,
    revision_hash: String,
    #[serde(default)]
    spec: StoppedJson,
    #[serde(default)]
    meta: Meta,
}

#[derive(Deserialize, Default)]
struct StoppedJson {
    #[serde(default)]
    stopped: bool,
}

#[derive(Deserialize)]
struct StatusJson {
    id: String,
    state: ReplicaState,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    health: Option<HealthJson>,
}

#[derive(Deserialize)]
struct HealthJson {
    status: HealthStatus,
}

/// What the cache keeps of a replica's status: its state orders scale-down removals, and all
/// of it decides the `depends_on` conditions of the services that depend on its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatusFacts {
    state: ReplicaState,
    exit_code: Option<i32>,
    health: Option<HealthStatus>,
}

impl From<StatusJson> for StatusFacts {
    fn from(s: StatusJson) -> StatusFacts {
        StatusFacts {
            state: s.state,
            exit_code: s.exit_code,
            health: s.health.map(|h| h.status),
        }
    }
}

/// The controller's view of the store and the services that need planning.
#[derive(Debug, Default)]
pub struct Cache {
    /// The store revision the cache reflects.
    revision: u64,
    services: HashMap<String, Service>,
    /// Replica id → (service key, what the planner needs).
    replicas: HashMap<String, (String, ReplicaHead)>,
    by_service: HashMap<String, HashSet<String>>,
    /// Node → service key → replicas of it there.
    by_node: HashMap<String, HashMap<String, usize>>,
    node_counts: HashMap<String, usize>,
    nodes: HashMap<String, Node>,
    states: HashMap<String, StatusFacts>,
    /// Service key → the keys of the services that `depends_on` it, so that a change of its
    /// replicas or their states replans them.
    dependents: HashMap<String, BTreeSet<String>>,
    dirty: BTreeSet<String>,
    /// Services the last plan could not place in full: a node change may help them.
    unschedulable: BTreeSet<String>,
}

impl Cache {
    fn from_lists(
        revision: u64,
        services: Vec<Service>,
        replicas: Vec<ReplicaJson>,
        nodes: Vec<Node>,
        statuses: Vec<StatusJson>,
    ) -> Cache {
        let mut cache = Cache {
            revision,
            ..Default::default()
        };
        for s in services {
            cache.dirty.insert(s.key());
            cache.services.insert(s.key(), s);
        }
        for r in replicas {
            cache.put_replica(r);
        }
        for n in nodes {
            cache.nodes.insert(n.name.clone(), n);
        }
        for s in statuses {
            cache.states.insert(s.id.clone(), s.into());
        }
        cache.index_dependents();
        cache
    }

    /// Rebuilds [`Cache::dependents`] (on every service change: services are few next to
    /// replicas, and most have no `depends_on`).
    fn index_dependents(&mut self) {
        self.dependents.clear();
        for (key, s) in &self.services {
            for dep in s.spec.depends_on.keys() {
                let dep_key = format!("{}/{}/{dep}", s.namespace, s.app);
                self.dependents
                    .entry(dep_key)
                    .or_default()
                    .insert(key.clone());
            }
        }
    }

    /// Marks the services that depend on the service `key`.
    fn mark_dependents(&mut self, key: &str) {
        if let Some(dependents) = self.dependents.get(key) {
            self.dirty.extend(dependents.iter().cloned());
        }
    }

    fn put_replica(&mut self, r: ReplicaJson) {
        let key = format!("{}/{}/{}", r.namespace, r.app, r.service);
        self.dirty.insert(key.clone());
        self.by_service
            .entry(key.clone())
            .or_default()
            .insert(r.id.clone());
        *self
            .by_node
            .entry(r.node.clone())
            .or_default()
            .entry(key.clone())
            .or_default() += 1;
        *self.node_counts.entry(r.node.clone()).or_default() += 1;
        let head = ReplicaHead {
            id: r.id.clone(),
            node: r.node,
            revision_hash: r.revision_hash,
            created_at: r.meta.created_at,
            revision: r.meta.revision,
            stopped: r.spec.stopped,
        };
        self.mark_dependents(&key);
        self.replicas.insert(r.id, (key, head));
    }

    fn remove_replica(&mut self, id: &str) {
        let Some((key, head)) = self.replicas.remove(id) else {
            return;
        };
        if let Some(ids) = self.by_service.get_mut(&key) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_service.remove(&key);
            }
        }
        if let Some(services) = self.by_node.get_mut(&head.node) {
            if let Some(n) = services.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    services.remove(&key);
                }
            }
            if services.is_empty() {
                self.by_node.remove(&head.node);
            }
        }
        self.mark_dependents(&key);
        if let Some(n) = self.node_counts.get_mut(&head.node) {
            *n -= 1;
            if *n == 0 {
                self.node_counts.remove(&head.node);
            }
        }
        self.dirty.insert(key);
    }

    /// Applies one committed change, marking the services it concerns.
    pub fn apply(&mut self, change: &Change) {
        let put = change.op == ChangeOp::Put;
        match change.kind {
            Kind::Service => {
                self.dirty.insert(change.key.clone());
                mirror(&mut self.services, change, "service");
                self.index_dependents();
                self.mark_dependents(&change.key);
            }
            Kind::Replica => {
                // A replica that moved service or node is a removal and an addition.
                self.remove_replica(&change.key);
                if put {
                    match ReplicaJson::deserialize(&change.value) {
                        Ok(r) => self.put_replica(r),
                        Err(e) => warn!(key = %change.key, error = %e, "unreadable replica"),
                    }
                }
            }
            Kind::Node => {
                let new = match put.then(|| Node::deserialize(&change.value)) {
                    Some(Ok(n)) => Some(n),
                    Some(Err(e)) => {
                        warn!(key = %change.key, error = %e, "unreadable node");
                        return;
                    }
                    None => None,
                };
                let old_state = self.nodes.get(&change.key).map(|n| n.state);
                let new_state = new.as_ref().map(|n| n.state);
                match new {
                    Some(n) => self.nodes.insert(change.key.clone(), n),
                    None => self.nodes.remove(&change.key),
                };
                // Reports rewrite nodes often; only a change of schedulability matters here.
                if old_state != new_state {
                    self.mark_node(&change.key);
                }
            }
            Kind::ReplicaStatus => {
                // Orders scale-down removals, and decides the conditions of the services that
                // depend on the replica's service: those are planned again when it changes.
                let facts = put
                    .then(|| StatusJson::deserialize(&change.value).ok())
                    .flatten()
                    .map(StatusFacts::from);
                let old = match facts {
                    Some(f) => self.states.insert(change.key.clone(), f),
                    None => self.states.remove(&change.key),
                };
                if old != facts {
                    if let Some((key, _)) = self.replicas.get(&change.key) {
                        let key = key.clone();
                        self.mark_dependents(&key);
                    }
                }
            }
            Kind::App
            | Kind::Event
            | Kind::Endpoints
            | Kind::Address
            | Kind::Token
            | Kind::Volume
            | Kind::Secret
            | Kind::Config => {}
        }
    }

    fn mark_node(&mut self, node: &str) {
        if let Some(services) = self.by_node.get(node) {
            self.dirty.extend(services.keys().cloned());
        }
        self.dirty.extend(
            self.services
                .iter()
                .filter(|(_, s)| s.spec.mode == ServiceMode::Global)
                .map(|(k, _)| k.clone()),
        );
        self.dirty.extend(self.unschedulable.iter().cloned());
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Plans the marked services, at most `budget` writes, unmarking those planned whole;
    /// returns how many services were examined, the plan, and the gates of those with
    /// `depends_on`.
    fn plan(
        &mut self,
        budget: usize,
        new_id: &mut dyn FnMut(&str, u32) -> String,
    ) -> (
        usize,
        crate::plan::replicas::ReplicaPlan,
        HashMap<String, Gate>,
    ) {
        let keys: Vec<String> = std::mem::take(&mut self.dirty).into_iter().collect();
        let nodes: Vec<Node> = self.nodes.values().cloned().collect();
        let mut load = NodeLoad::from_counts(&nodes, &self.node_counts);
        let gates: HashMap<String, Gate> = keys
            .iter()
            .filter_map(|key| Some((key.clone(), self.gate_of(key)?)))
            .collect();
        let work: Vec<ServiceWork<'_>> = keys
            .iter()
            .map(|key| ServiceWork {
                key,
                service: self.services.get(key),
                replicas: self
                    .by_service
                    .get(key)
                    .into_iter()
                    .flatten()
                    .filter_map(|id| self.replicas.get(id).map(|(_, head)| head))
                    .collect(),
                held: gates.get(key).is_some_and(Gate::holds),
                replace_created_before: gates.get(key).and_then(|g| g.replace_created_before),
            })
            .collect();
        let replicas = &self.replicas;
        let states = &self.states;
        let observed = Observed {
            nodes: &nodes,
            state: &|id| states.get(id).map(|s| s.state),
            id_taken: &|id| replicas.contains_key(id),
        };
        let plan = plan_replicas(&work, &mut load, &observed, new_id, budget);
        drop(work);
        let short: HashSet<&str> = plan
            .services
            .iter()
            .filter(|o| o.unschedulable > 0)
            .map(|o| o.key.as_str())
            .collect();
        for key in &keys {
            if short.contains(key.as_str()) {
                self.unschedulable.insert(key.clone());
            } else {
                self.unschedulable.remove(key);
            }
        }
        for outcome in plan.services.iter().filter(|o| o.unfinished) {
            self.dirty.insert(outcome.key.clone());
        }
        (keys.len(), plan, gates)
    }
}

/// Draws candidate replica ids: `(service name, desired replicas) -> id`.
pub type IdSource = Box<dyn FnMut(&str, u32) -> String + Send>;

pub struct ServiceController {
    store: Store,
    cache: Option<(Cache, hivemind_store::Watch, Instant)>,
    waits: WaitEvents,
    new_id: IdSource,
    batch: usize,
    resync: Duration,
}

impl ServiceController {
    pub fn new(store: Store) -> ServiceController {
        ServiceController {
            store,
            cache: None,
            waits: WaitEvents::default(),
            new_id: Box::new(hivemind_types::id::replica_id),
            batch: BATCH,
            resync: RESYNC,
        }
    }

    /// A controller writing at most `batch` replicas per run and drawing ids from `new_id`
    /// (tests use a small batch and colliding ids).
    pub fn with_options(store: Store, batch: usize, new_id: IdSource) -> ServiceController {
        ServiceController {
            store,
            cache: None,
            waits: WaitEvents::default(),
            new_id,
            batch,
            resync: RESYNC,
        }
    }

    /// Rebuilds the cache from a full list this often instead of every [`RESYNC`].
    pub fn resync_every(mut self, every: Duration) -> ServiceController {
        self.resync = every;
        self
    }

    /// Brings the cache up to the store's current revision; `false` when it must be relisted.
    async fn catch_up(&mut self) -> Result<bool, ControlError> {
        let target = self.store.revision().await?;
        let Some((cache, watch, _)) = &mut self.cache else {
            return Ok(false);
        };
        while cache.revision < target {
            match tokio::time::timeout(CATCH_UP, watch.next()).await {
                Ok(Some(WatchEvent::Txn { revision, changes })) => {
                    changes.iter().for_each(|c| cache.apply(c));
                    cache.revision = revision;
                }
                Ok(Some(WatchEvent::Compacted { .. }) | None) => return Ok(false),
                Err(_) => {
                    warn!(
                        at = cache.revision,
                        target, "service controller: watch is behind; relisting"
                    );
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    async fn run(&mut self) -> Result<serde_json::Value, ControlError> {
        let started = Instant::now();
        let fresh = match &self.cache {
            Some((_, _, listed)) if listed.elapsed() < self.resync => self.catch_up().await?,
            _ => false,
        };
        if !fresh {
            self.cache = Some(relist(&self.store).await?);
        }
        let Some((cache, _, _)) = &mut self.cache else {
            unreachable!("set above");
        };
        let read = started.elapsed();
        let (examined, plan, gates) = cache.plan(self.batch, &mut *self.new_id);
        let planned_services: Vec<(&Service, Option<&Gate>)> = plan
            .services
            .iter()
            .map(|o| o.key.as_str())
            .chain(gates.keys().map(String::as_str))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .filter_map(|key| Some((cache.services.get(key)?, gates.get(key))))
            .collect();
        let (events, waits) = self.waits.events(&planned_services, now_millis());
        let planned = started.elapsed();
        let mut ops = Vec::with_capacity(plan.ops() + events.len());
        for e in &events {
            info!(service = %e.object.name, reason = %e.reason, "{}", e.message);
            ops.push(Op::put(Kind::Event, e.id.clone(), e, Expect::Any));
        }
        for (head, stopped) in &plan.set_stopped {
            // Read whole to rewrite it; a replica gone or changed meanwhile fails the
            // precondition below, and the next run plans afresh.
            let Some(mut replica) = self.store.get::<Replica>(Kind::Replica, &head.id).await?
            else {
                continue;
            };
            replica.spec.stopped = *stopped;
            ops.push(Op::put(
                Kind::Replica,
                head.id.clone(),
                &replica,
                Expect::Revision(head.revision),
            ));
        }
        for r in &plan.create {
            debug!(replica = %r.id, node = %r.node, service = %r.service, "placing replica");
            ops.push(Op::put(Kind::Replica, r.id.clone(), r, Expect::Absent));
        }
        for r in &plan.delete {
            debug!(replica = %r.id, node = %r.node, "removing replica");
            // Expect the revision we planned from: if anything changed meanwhile, the batch is
            // dropped and the next run plans again from fresh state.
            ops.push(Op::delete(
                Kind::Replica,
                r.id.clone(),
                Expect::Revision(r.revision),
            ));
        }
        if let Err(e) = self.store.txn(ops).await {
            // Plan the same services again next run, from a fresh list (the conflict means
            // another writer changed them).
            self.cache = None;
            return Err(e.into());
        }
        self.waits.commit(waits);
        let written = started.elapsed();
        // One line per service per run, never one per replica.
        for o in &plan.services {
            if o.created + o.deleted > 0 {
                info!(
                    service = %o.key,
                    created = o.created,
                    deleted = o.deleted,
                    replaced_stranded = o.replaced_stranded,
                    id_collisions = o.id_collisions,
                    more_to_do = o.unfinished,
                    "service replicas written"
                );
            }
            if o.unschedulable > 0 {
                warn!(service = %o.key, missing = o.unschedulable, "no ready node to place replicas on");
            }
            if o.stop_changed > 0 {
                info!(service = %o.key, replicas = o.stop_changed, "replicas stopped or started");
            }
        }
        let unschedulable: Vec<(&str, usize)> = plan
            .services
            .iter()
            .filter(|o| o.unschedulable > 0)
            .map(|o| (o.key.as_str(), o.unschedulable))
            .collect();
        Ok(json!({
            "examined": examined,
            "changed": plan.services.len(),
            "created": plan.create.len(),
            "deleted": plan.delete.len(),
            "stop_changed": plan.set_stopped.len(),
            "held": plan.services.iter().filter(|o| o.held > 0).map(|o| o.key.as_str()).collect::<Vec<_>>(),
            "unfinished": plan.unfinished().collect::<Vec<_>>(),
            "unschedulable": unschedulable,
            "id_collisions": plan.services.iter().map(|o| o.id_collisions).sum::<usize>(),
            "relisted": !fresh,
            // Where the run's time went: catching up (or relisting), planning, writing.
            "read_ms": read.as_millis() as u64,
            "plan_ms": (planned - read).as_millis() as u64,
            "write_ms": (written - planned).as_millis() as u64,
        }))
    }
}

async fn relist(store: &Store) -> Result<(Cache, hivemind_store::Watch, Instant), ControlError> {
    let revision = store.revision().await?;
    let cache = Cache::from_lists(
        revision,
        store.list(Kind::Service, "").await?,
        store.list(Kind::Replica, "").await?,
        store.list(Kind::Node, "").await?,
        store.list(Kind::ReplicaStatus, "").await?,
    );
    Ok((cache, store.watch(revision), Instant::now()))
}

#[async_trait::async_trait]
impl BackgroundTask for ServiceController {
    fn name(&self) -> &'static str {
        "service-controller"
    }

    fn watches(&self, kind: Kind) -> bool {
        // Statuses decide `depends_on` conditions; a run for a status that changes nothing
        // plans no service and writes nothing.
        matches!(
            kind,
            Kind::Service | Kind::Replica | Kind::Node | Kind::ReplicaStatus
        )
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}

#[cfg(test)]
#[path = "replicas_tests.rs"]
mod tests;
