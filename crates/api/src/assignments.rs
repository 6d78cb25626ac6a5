//! Node assignments: what one node must run and route, and the hub that wakes its long poll.
//!
//! A node's assignment is O(node): its own replicas, the `Endpoints` of the services its data
//! plane needs (every service of an app with a replica on the node, plus every public service —
//! published ports or ingress — since every node proxies those) and its subnet. The [`Hub`] is
//! one watch of the store per server process that routes each committed change to exactly the
//! nodes whose assignment it touches, through one wake channel per node: a replica to its node,
//! an endpoints object to the nodes of its app (or to all for a public service), a node's
//! subnet to that node. Status reports, events and everything else wake nobody: the endpoints
//! controller turns the reports that matter into endpoints changes.
//!
//! Generations: an assignment's generation is the hub's processed revision, read before the
//! objects, so the objects are at least as new as it claims; every change after it is still
//! to be routed and will wake the node. An agent therefore never believes it saw a change it
//! has not.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_store::{Change, ChangeOp, Store, WatchEvent};
use hivemind_types::spec::{IngressRule, PortSpec};
use hivemind_types::{Assignment, ClusterNetwork, Endpoints, Kind, Node, Replica};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::warn;

use crate::error::ApiError;
pub use answer::AssignmentAnswer;
use answer::{Routed, RoutedCache, RoutedKey};

/// The longest a long poll may be held; longer requests are cut to this, so that proxies and
/// the client's own timeout do not fire first.
pub const MAX_POLL: Duration = Duration::from_secs(120);

/// `node`'s whole assignment once a change after generation `after` touches it, or when
/// `timeout` passes or `stopping` resolves (server shutdown); at once without `after`.
pub async fn wait_assignment(
    hub: &Hub,
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
    after: Option<u64>,
    timeout: Duration,
    stopping: impl std::future::Future<Output = ()>,
) -> Result<Assignment, ApiError> {
    let answer = wait_assignment_delta(hub, store, net, node, after, false, timeout, stopping);
    Ok(answer.await?.decode())
}

/// As [`wait_assignment`], but with `delta` (and `after`) answers with what changed since
/// `after` when the hub's history reaches back that far (see `Assignment::apply`), else in
/// full.
#[allow(clippy::too_many_arguments)]
pub async fn wait_assignment_delta(
    hub: &Hub,
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
    after: Option<u64>,
    delta: bool,
    timeout: Duration,
    stopping: impl std::future::Future<Output = ()>,
) -> Result<AssignmentAnswer, ApiError> {
    let Some(after) = after else {
        return hub.whole_answer(store, net, node).await;
    };
    hub.wait(node, after, timeout.min(MAX_POLL), stopping).await;
    if delta {
        if let Some(a) = hub.delta_answer(store, net, node, after).await? {
            return Ok(a);
        }
    }
    hub.whole_answer(store, net, node).await
}

/// Who must hear of one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    None,
    Nodes(BTreeSet<String>),
    All,
}

/// The routing state: which node each replica is on, which nodes run each app, which services
/// are public, each node's subnet, and each node's last touching revision.
#[derive(Debug, Default)]
pub struct Routes {
    /// Every node counts as touched at this revision (the last relist or all-nodes change).
    floor: u64,
    processed: u64,
    touched: HashMap<String, u64>,
    waiters: HashMap<String, watch::Sender<u64>>,
    replicas: HashMap<String, Placed>,
    /// Each node's replica ids, and those that left it recently (for delta answers).
    node_replicas: HashMap<String, replica_log::NodeReplicas>,
    /// Each app's nodes: how many of its replicas each runs, since when.
    app_nodes: HashMap<String, HashMap<String, Presence>>,
    public: BTreeSet<String>,
    subnets: HashMap<String, Option<String>>,
    diffs: delta::Diffs,
    routed: RoutedCache,
}

/// How many replicas of an app a node runs, and the revision it gained the first of them
/// (its services are new to the node after that).
#[derive(Debug, Clone, Copy)]
struct Presence {
    count: usize,
    since: u64,
}

/// Where a replica is and when it last changed.
#[derive(Debug)]
struct Placed {
    node: String,
    app: String,
    revision: u64,
}

/// The routing-relevant part of an endpoints object (its replicas are skipped, not copied).
#[derive(Deserialize)]
struct RoutingHead {
    #[serde(default)]
    ports: Vec<PortSpec>,
    #[serde(default)]
    ingress: Option<IngressRule>,
}

#[derive(Deserialize)]
struct ReplicaHead {
    namespace: String,
    app: String,
    node: String,
}

#[derive(Deserialize)]
struct NodeHead {
    #[serde(default)]
    subnet: Option<String>,
}

fn is_public(head: &RoutingHead) -> bool {
    head.ingress.is_some() || head.ports.iter().any(|p| p.published.is_some())
}

/// `ns/app` of an endpoints key `ns/app/service`.
pub(crate) fn app_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(app, _)| app)
}

impl Routes {
    /// Starts over from listed objects at `revision`: every node counts as touched.
    pub fn relist(
        &mut self,
        revision: u64,
        replicas: &[Replica],
        endpoints: &[Endpoints],
        nodes: &[Node],
    ) {
        self.replicas.clear();
        self.app_nodes.clear();
        self.node_replicas.clear();
        for r in replicas {
            self.add_replica(
                revision,
                &r.id,
                &r.node,
                &format!("{}/{}", r.namespace, r.app),
            );
        }
        for nodes in self.node_replicas.values_mut() {
            nodes.forget_before(revision);
        }
        self.public = endpoints
            .iter()
            .filter(|e| e.is_public())
            .map(|e| e.service_key())
            .collect();
        self.subnets = nodes
            .iter()
            .map(|n| (n.name.clone(), n.subnet.clone()))
            .collect();
        self.diffs.reset(revision, endpoints);
        self.touched.clear();
        self.processed = revision;
        self.touch_all(revision);
    }

    fn add_replica(&mut self, revision: u64, id: &str, node: &str, app: &str) {
        self.node_replicas
            .entry(node.to_string())
            .or_default()
            .put(id);
        self.app_nodes
            .entry(app.to_string())
            .or_default()
            .entry(node.to_string())
            .or_insert(Presence {
                count: 0,
                since: revision,
            })
            .count += 1;
        self.replicas.insert(
            id.to_string(),
            Placed {
                node: node.to_string(),
                app: app.to_string(),
                revision,
            },
        );
    }

    /// Forgets `id`'s place; `staying_on` is its new node in an update, where it does not
    /// leave that node.
    fn remove_replica(
        &mut self,
        revision: u64,
        id: &str,
        staying_on: Option<&str>,
    ) -> Option<String> {
        let Placed { node, app, .. } = self.replicas.remove(id)?;
        if staying_on != Some(node.as_str()) {
            if let Some(on_node) = self.node_replicas.get_mut(&node) {
                on_node.remove(revision, id);
            }
        }
        if let Some(nodes) = self.app_nodes.get_mut(&app) {
            if let Some(presence) = nodes.get_mut(&node) {
                presence.count -= 1;
                if presence.count == 0 {
                    nodes.remove(&node);
                }
            }
            if nodes.is_empty() {
                self.app_nodes.remove(&app);
            }
        }
        Some(node)
    }

    /// Updates the routing state with `change`, committed at `revision`, and says whom it
    /// concerns.
    pub fn route(&mut self, revision: u64, change: &Change) -> Targets {
        let put = change.op == ChangeOp::Put;
        match change.kind {
            Kind::Replica => {
                let new = if put {
                    ReplicaHead::deserialize(&change.value)
                        .inspect_err(
                            |e| warn!(key = %change.key, error = %e, "hub: unreadable replica"),
                        )
                        .ok()
                } else {
                    None
                };
                let mut nodes = BTreeSet::new();
                // Its old node (a move or a delete) and its new one.
                let staying_on = new.as_ref().map(|r| r.node.clone());
                nodes.extend(self.remove_replica(revision, &change.key, staying_on.as_deref()));
                if let Some(r) = new {
                    let app = format!("{}/{}", r.namespace, r.app);
                    self.add_replica(revision, &change.key, &r.node, &app);
                    nodes.insert(r.node);
                }
                Targets::Nodes(nodes)
            }
            Kind::Endpoints => {
                self.diffs.endpoints(revision, change);
                let Some((service, slice)) = Endpoints::split_key(&change.key) else {
                    return Targets::None;
                };
                let was_public = self.public.contains(service);
                // Every slice carries the routing head; only slice 0 goes with the service.
                let now_public = if put {
                    RoutingHead::deserialize(&change.value).is_ok_and(|h| is_public(&h))
                } else {
                    was_public && slice != 0
                };
                if now_public {
                    self.public.insert(service.to_string());
                } else {
                    self.public.remove(service);
                }
                if was_public || now_public {
                    return Targets::All;
                }
                let nodes = self
                    .app_nodes
                    .get(app_of(service))
                    .map(|nodes| nodes.keys().cloned().collect())
                    .unwrap_or_default();
                Targets::Nodes(nodes)
            }
            Kind::Node => {
                let subnet = if put {
                    NodeHead::deserialize(&change.value)
                        .ok()
                        .and_then(|n| n.subnet)
                } else {
                    None
                };
                let old = self.subnets.insert(change.key.clone(), subnet.clone());
                if old.flatten() == subnet {
                    Targets::None
                } else {
                    Targets::Nodes(BTreeSet::from([change.key.clone()]))
                }
            }
            Kind::App
            | Kind::Service
            | Kind::ReplicaStatus
            | Kind::Event
            | Kind::Address
            | Kind::Token
            | Kind::Volume
            | Kind::Secret
            | Kind::Config => Targets::None,
        }
    }

    /// Routes one committed transaction, waking each concerned node once.
    pub fn apply(&mut self, revision: u64, changes: &[Change]) {
        let mut nodes = BTreeSet::new();
        let mut all = false;
        for change in changes {
            match self.route(revision, change) {
                Targets::None => {}
                Targets::Nodes(n) => nodes.extend(n),
                Targets::All => all = true,
            }
        }
        if all {
            self.touch_all(revision);
        } else {
            for node in nodes {
                self.touch(&node, revision);
            }
        }
        self.processed = self.processed.max(revision);
    }

    fn touch(&mut self, node: &str, revision: u64) {
        self.touched.insert(node.to_string(), revision);
        if let Some(waiter) = self.waiters.get(node) {
            waiter.send_replace(revision);
        }
    }

    fn touch_all(&mut self, revision: u64) {
        self.floor = revision;
        for waiter in self.waiters.values() {
            waiter.send_replace(revision);
        }
    }

    /// The last revision that touched `node`'s assignment.
    pub fn touched(&self, node: &str) -> u64 {
        self.touched.get(node).copied().unwrap_or(0).max(self.floor)
    }

    /// `node`'s wake channel: its value is [`Routes::touched`].
    pub fn subscribe(&mut self, node: &str) -> watch::Receiver<u64> {
        let touched = self.touched(node);
        self.waiters
            .entry(node.to_string())
            .or_insert_with(|| watch::channel(touched).0)
            .subscribe()
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }

    pub fn public(&self) -> Vec<String> {
        self.public.iter().cloned().collect()
    }

    /// What changed for `node` since `after`, at the processed revision; `None` when the
    /// history does not reach back to `after`.
    pub(crate) fn delta(&mut self, node: &str, after: u64) -> Option<delta::NodeDelta> {
        if !self.diffs.covers(after, self.processed) {
            return None;
        }
        let replicas = match self.node_replicas.get(node) {
            Some(on_node) => {
                on_node.since(after, |id| self.replicas.get(id).map(|p| p.revision))?
            }
            None => replica_log::ReplicaDelta::default(),
        };
        let mut apps = BTreeSet::new();
        let mut joined = BTreeSet::new();
        for (app, nodes) in &self.app_nodes {
            if let Some(presence) = nodes.get(node) {
                apps.insert(app.clone());
                if presence.since > after {
                    joined.insert(app.clone());
                }
            }
        }
        let keys = self.diffs.routed(&apps, &self.public);
        let key = RoutedKey {
            full: false,
            from: self.diffs.first_after(after),
            keys: keys.iter().cloned().collect(),
            joined: joined.iter().cloned().collect(),
        };
        let diffs = &self.diffs;
        let routed = self.routed.get_or_build(diffs.version(), key, || {
            let (services, changes) = diffs.delta(after, &keys, &joined);
            let keys: Vec<String> = keys.iter().cloned().collect();
            Routed::delta(&services, &changes, &keys)
        });
        Some(delta::NodeDelta {
            replicas,
            subnet: self.subnets.get(node).cloned().flatten(),
            routed,
        })
    }

    /// The routed part of a full answer for a node running `apps`.
    fn whole_routed(&mut self, apps: &BTreeSet<String>) -> Arc<Routed> {
        let keys = self.diffs.routed(apps, &self.public);
        let key = RoutedKey {
            full: true,
            from: None,
            keys: keys.iter().cloned().collect(),
            joined: Vec::new(),
        };
        let diffs = &self.diffs;
        self.routed.get_or_build(diffs.version(), key, || {
            Routed::whole(&diffs.whole_services(&keys))
        })
    }
}

/// The server's assignment hub: [`Routes`] kept current by one watch task. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    routes: Arc<Mutex<Routes>>,
    ready: watch::Receiver<bool>,
    /// Dropped with the last handle, which ends the watch task.
    _alive: Arc<watch::Sender<()>>,
}

impl Hub {
    /// Starts the hub's watch of `store` (on the current tokio runtime).
    pub fn spawn(store: Store) -> Hub {
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (ready_tx, ready) = watch::channel(false);
        let (alive, mut alive_rx) = watch::channel(());
        let task_routes = routes.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = follow(store, task_routes, ready_tx) => {}
                _ = alive_rx.changed() => {}
            }
        });
        Hub {
            routes,
            ready,
            _alive: Arc::new(alive),
        }
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Updates are plain map edits: a poisoned lock still holds whole routes.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the hub has listed the store (at start, so within a moment).
    async fn ready(&self) {
        let mut ready = self.ready.clone();
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Waits until a change after `after` touches `node`, `timeout` passes or `stopping`
    /// resolves, whichever is first.
    pub async fn wait(
        &self,
        node: &str,
        after: u64,
        timeout: Duration,
        stopping: impl std::future::Future<Output = ()>,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::pin!(stopping);
        tokio::select! {
            () = self.ready() => {}
            () = tokio::time::sleep_until(deadline) => return,
            () = &mut stopping => return,
        }
        let mut touched = self.routes().subscribe(node);
        tokio::select! {
            _ = touched.wait_for(|t| *t > after) => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = &mut stopping => {}
        }
    }

    /// `node`'s assignment, with the hub's processed revision as its generation, as the
    /// node reads it.
    pub async fn assignment(
        &self,
        store: &Store,
        net: &ClusterNetwork,
        node: &str,
    ) -> Result<Assignment, ApiError> {
        Ok(self.whole_answer(store, net, node).await?.decode())
    }

    /// `node`'s whole assignment, with the hub's processed revision as its generation.
    pub async fn whole_answer(
        &self,
        store: &Store,
        net: &ClusterNetwork,
        node: &str,
    ) -> Result<AssignmentAnswer, ApiError> {
        self.ready().await;
        let generation = self.routes().processed();
        // Read after the generation, so at least as new; the services at the generation come
        // from the hub's memory.
        let replicas = store.replica_list_by_node(node).await?;
        let apps: BTreeSet<String> = replicas
            .iter()
            .map(|r| format!("{}/{}", r.namespace, r.app))
            .collect();
        let (subnet, routed) = {
            let mut routes = self.routes();
            (
                routes.subnets.get(node).cloned().flatten(),
                routes.whole_routed(&apps),
            )
        };
        Ok(AssignmentAnswer {
            node: node.to_string(),
            generation,
            replicas,
            replica_removes: Vec::new(),
            subnet,
            cluster_cidr: net.cluster_cidr_string(),
            service_cidr: net.service_cidr_string(),
            routed,
            delta: false,
            files: Vec::new(),
        })
    }

    /// `node`'s assignment as a delta since `after` (`delta: true`), with the hub's processed
    /// revision as its generation; `None` when the hub's history does not reach `after`.
    /// Everything comes from the hub's memory at that revision except the changed replicas'
    /// values, read from the store (at least as new): a wake that changed no replica of the
    /// node reads nothing.
    pub async fn delta_answer(
        &self,
        store: &Store,
        net: &ClusterNetwork,
        node: &str,
        after: u64,
    ) -> Result<Option<AssignmentAnswer>, ApiError> {
        self.ready().await;
        let (generation, delta) = {
            let mut routes = self.routes();
            let Some(delta) = routes.delta(node, after) else {
                return Ok(None);
            };
            (routes.processed(), delta)
        };
        let (replicas, replica_removes) = read_changed(store, node, delta.replicas).await?;
        Ok(Some(AssignmentAnswer {
            node: node.to_string(),
            generation,
            replicas,
            replica_removes,
            subnet: delta.subnet,
            cluster_cidr: net.cluster_cidr_string(),
            service_cidr: net.service_cidr_string(),
            routed: delta.routed,
            delta: true,
            files: Vec::new(),
        }))
    }
}

async fn follow(store: Store, routes: Arc<Mutex<Routes>>, ready: watch::Sender<bool>) {
    loop {
        let listed = async {
            let revision = store.revision().await?;
            let replicas: Vec<Replica> = store.list(Kind::Replica, "").await?;
            let endpoints: Vec<Endpoints> = store.list(Kind::Endpoints, "").await?;
            let nodes: Vec<Node> = store.list(Kind::Node, "").await?;
            Ok::<_, hivemind_store::StoreError>((revision, replicas, endpoints, nodes))
        };
        let revision = match listed.await {
            Ok((revision, replicas, endpoints, nodes)) => {
                let mut r = routes.lock().unwrap_or_else(|p| p.into_inner());
                r.relist(revision, &replicas, &endpoints, &nodes);
                revision
            }
            Err(error) => {
                warn!(%error, "assignment hub: cannot list the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        ready.send_replace(true);
        let mut watch = store.watch(revision);
        loop {
            match watch.next().await {
                Some(WatchEvent::Txn { revision, changes }) => routes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(revision, &changes),
                // History is gone: list again, which wakes every node (it may have missed
                // something).
                Some(WatchEvent::Compacted { .. }) => break,
                None => return,
            }
        }
    }
}

/// Reads `node`'s assignment claiming `generation` from the store alone, every endpoints slice
/// included: what the hub's answers must equal (tests compare them).
#[cfg(test)]
pub(crate) async fn read_assignment(
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
    generation: u64,
) -> Result<Assignment, ApiError> {
    let replicas = store.replica_list_by_node(node).await?;
    let subnet = store
        .get::<Node>(Kind::Node, node)
        .await?
        .and_then(|n| n.subnet);
    let apps: BTreeSet<String> = replicas
        .iter()
        .map(|r| format!("{}/{}", r.namespace, r.app))
        .collect();
    let mut slices: Vec<Endpoints> = store.list(Kind::Endpoints, "").await?;
    slices.sort_by_key(|e| e.slice);
    let public: BTreeSet<String> = slices
        .iter()
        .filter(|e| e.slice == 0 && e.is_public())
        .map(Endpoints::service_key)
        .collect();
    let mut needed: std::collections::BTreeMap<String, hivemind_types::ServiceEndpoints> =
        std::collections::BTreeMap::new();
    for e in slices {
        let key = e.service_key();
        if !apps.contains(app_of(&key)) && !public.contains(&key) {
            continue;
        }
        let now = e.to_service_endpoints();
        match needed.get_mut(&key) {
            Some(service) => service.endpoints.extend(now.endpoints),
            None => {
                needed.insert(key, now);
            }
        }
    }
    for service in needed.values_mut() {
        service.endpoints.sort_by(|a, b| a.replica.cmp(&b.replica));
    }
    Ok(Assignment {
        node: node.to_string(),
        generation,
        replicas,
        replica_removes: Vec::new(),
        network: hivemind_types::NodeNetwork {
            subnet,
            cluster_cidr: Some(net.cluster_cidr_string()),
            service_cidr: Some(net.service_cidr_string()),
            services: needed.into_values().collect(),
            ..Default::default()
        },
        delta: false,
        files: Vec::new(),
    })
}

/// The values of the replicas a delta names as changed, and the ids of those gone: a changed
/// replica may have left the node (or the store) after the generation, which makes it a
/// removal. Few changes are read by key; many by the node index, in one read.
async fn read_changed(
    store: &Store,
    node: &str,
    changed: replica_log::ReplicaDelta,
) -> Result<(Vec<Replica>, Vec<String>), ApiError> {
    const BY_KEY_AT_MOST: usize = 8;
    let mut removes = changed.removes;
    let mut replicas = Vec::with_capacity(changed.changed.len());
    if changed.changed.len() <= BY_KEY_AT_MOST {
        for id in changed.changed {
            match store.get::<Replica>(Kind::Replica, &id).await? {
                Some(r) if r.node == node => replicas.push(r),
                _ => removes.push(id),
            }
        }
    } else {
        let wanted: BTreeSet<String> = changed.changed.into_iter().collect();
        let mut found = BTreeSet::new();
        for r in store.replica_list_by_node(node).await? {
            if wanted.contains(&r.id) {
                found.insert(r.id.clone());
                replicas.push(r);
            }
        }
        removes.extend(wanted.difference(&found).cloned());
    }
    Ok((replicas, removes))
}

mod answer;
mod delta;
#[cfg(test)]
mod delta_tests;
mod replica_log;
pub(crate) mod secrets;
#[cfg(test)]
mod tests;
