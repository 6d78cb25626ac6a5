//! The endpoints controller: keeps each service's `Endpoints` slices (keys `ns/app/service`,
//! `ns/app/service@N`) equal to what its service, replicas and their reported statuses say.
//!
//! It works like a Kubernetes informer: one list of services, replicas, statuses and endpoints
//! at start (and after the watch reports compacted history), then the store's watch keeps an
//! in-memory cache current. Each committed change marks the one service it concerns; only
//! marked services are planned (`plan::endpoints`) and only changed objects written, in bounded
//! transactions. A status report from one node therefore costs the services of its replicas,
//! never a pass over the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::FutureExt;
use hivemind_store::{Change, ChangeOp, Expect, Op, Store, WatchEvent};
use hivemind_types::{
    Endpoints, HealthStatus, Kind, ObservedReplica, Replica, ReplicaState, Service,
};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::exec::replicas::error_chain;
use crate::exec::{drain_committed, mirror, ControlError, Drained};
use crate::plan::endpoints::{member, plan_endpoints, EndpointsChange};

/// Endpoints slices written per transaction (a service's changes are never split).
const BATCH: usize = 500;

/// Committed transactions applied before the marked services are planned.
const MAX_COALESCE: usize = 1_000;

/// The least time between two endpoints writes. Every write wakes each node that routes the
/// services written and sends it their endpoints, so during a burst (a scale-up reporting
/// thousands of replicas running) changes gather for this long instead of fanning out once per
/// report; a change after a quiet spell is written at once.
const MIN_WRITE_INTERVAL: Duration = Duration::from_millis(100);

/// The part of a status's health the cache needs (its output is skipped).
#[derive(Deserialize)]
struct HealthHead {
    status: HealthStatus,
}

/// What the cache keeps of a replica.
#[derive(Debug, Clone)]
struct ReplicaEntry {
    service: String,
    node: String,
    revision_hash: String,
}

/// The part of a replica's JSON the cache needs (the spec is skipped, not copied).
#[derive(Deserialize)]
struct ReplicaHead {
    id: String,
    namespace: String,
    app: String,
    service: String,
    node: String,
    revision_hash: String,
}

#[derive(Deserialize)]
struct StatusHead {
    state: ReplicaState,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    health: Option<HealthHead>,
}

/// The controller's view of the store, and the services whose endpoints may be stale.
#[derive(Debug, Default)]
pub struct Cache {
    services: HashMap<String, Service>,
    replicas: HashMap<String, ReplicaEntry>,
    by_service: HashMap<String, BTreeSet<String>>,
    statuses: HashMap<String, (ReplicaState, Option<String>, Option<HealthStatus>)>,
    /// Each service's stored slices, by slice number.
    endpoints: HashMap<String, BTreeMap<u32, Endpoints>>,
    dirty: BTreeSet<String>,
}

impl Cache {
    /// A cache of everything listed, every service marked.
    pub fn from_lists(
        services: Vec<Service>,
        replicas: Vec<Replica>,
        statuses: Vec<ObservedReplica>,
        endpoints: Vec<Endpoints>,
    ) -> Cache {
        let mut cache = Cache::default();
        for s in services {
            cache.dirty.insert(s.key());
            cache.services.insert(s.key(), s);
        }
        for r in replicas {
            cache.put_replica(ReplicaHead {
                id: r.id,
                namespace: r.namespace,
                app: r.app,
                service: r.service,
                node: r.node,
                revision_hash: r.revision_hash,
            });
        }
        for s in statuses {
            let health = s.health.map(|h| h.status);
            cache.statuses.insert(s.id, (s.state, s.ip, health));
        }
        for e in endpoints {
            cache.dirty.insert(e.service_key());
            cache
                .endpoints
                .entry(e.service_key())
                .or_default()
                .insert(e.slice, e);
        }
        cache
    }

    fn put_replica(&mut self, r: ReplicaHead) {
        let service = format!("{}/{}/{}", r.namespace, r.app, r.service);
        self.dirty.insert(service.clone());
        self.by_service
            .entry(service.clone())
            .or_default()
            .insert(r.id.clone());
        self.replicas.insert(
            r.id,
            ReplicaEntry {
                service,
                node: r.node,
                revision_hash: r.revision_hash,
            },
        );
    }

    fn remove_replica(&mut self, id: &str) {
        if let Some(old) = self.replicas.remove(id) {
            if let Some(ids) = self.by_service.get_mut(&old.service) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_service.remove(&old.service);
                }
            }
            self.dirty.insert(old.service);
        }
    }

    /// Applies one committed change, marking the service it concerns.
    pub fn apply(&mut self, change: &Change) {
        let put = change.op == ChangeOp::Put;
        match change.kind {
            Kind::Service => {
                self.dirty.insert(change.key.clone());
                mirror(&mut self.services, change, "service");
            }
            Kind::Replica => {
                // A replica whose service or node changed is a removal and an addition.
                self.remove_replica(&change.key);
                if put {
                    match ReplicaHead::deserialize(&change.value) {
                        Ok(r) => self.put_replica(r),
                        Err(e) => warn!(key = %change.key, error = %e, "unreadable replica"),
                    }
                }
            }
            Kind::ReplicaStatus => {
                let status = put
                    .then(|| StatusHead::deserialize(&change.value).ok())
                    .flatten();
                let new = status.map(|s| (s.state, s.ip, s.health.map(|h| h.status)));
                let old = match &new {
                    Some(new) => self.statuses.insert(change.key.clone(), new.clone()),
                    None => self.statuses.remove(&change.key),
                };
                // Restart counts, exits and messages change statuses too; only the state, the
                // address and the health status matter here.
                if old != new {
                    if let Some(r) = self.replicas.get(&change.key) {
                        self.dirty.insert(r.service.clone());
                    }
                }
            }
            Kind::Endpoints => {
                // Someone else's write (or our own echo): plan again; equal content is kept.
                let Some((service, n)) = Endpoints::split_key(&change.key) else {
                    warn!(key = %change.key, "endpoints with a malformed slice key");
                    return;
                };
                self.dirty.insert(service.to_string());
                match put.then(|| Endpoints::deserialize(&change.value)) {
                    Some(Ok(e)) => {
                        self.endpoints
                            .entry(service.to_string())
                            .or_default()
                            .insert(n, e);
                    }
                    Some(Err(e)) => warn!(key = %change.key, error = %e, "unreadable endpoints"),
                    None => self.forget_slice(service, n),
                }
            }
            Kind::App
            | Kind::Node
            | Kind::Event
            | Kind::Address
            | Kind::Token
            | Kind::Volume
            | Kind::Secret
            | Kind::Config => {}
        }
    }

    fn forget_slice(&mut self, service: &str, n: u32) {
        if let Some(slices) = self.endpoints.get_mut(service) {
            slices.remove(&n);
            if slices.is_empty() {
                self.endpoints.remove(service);
            }
        }
    }

    /// Plans marked services, unmarking them, until their changes reach `limit` slices (or
    /// none is marked): the changes by slice key.
    pub fn plan_dirty(&mut self, limit: usize) -> Vec<(String, EndpointsChange)> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(key) = self.dirty.pop_first() else {
                break;
            };
            out.extend(self.plan_service(&key));
        }
        out
    }

    fn plan_service(&self, key: &str) -> Vec<(String, EndpointsChange)> {
        let empty = BTreeMap::new();
        let members = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let r = self.replicas.get(id)?;
                let status = self.statuses.get(id);
                Some(member(
                    id,
                    &r.node,
                    &r.revision_hash,
                    status.map(|s| s.0),
                    status.and_then(|s| s.1.as_deref()),
                    status.and_then(|s| s.2),
                ))
            })
            .collect();
        plan_endpoints(
            self.services.get(key),
            members,
            self.endpoints.get(key).unwrap_or(&empty),
        )
    }

    /// Records what a committed plan wrote, so that later plans compare against it.
    fn committed(&mut self, planned: Vec<(String, EndpointsChange)>) {
        for (key, change) in planned {
            let Some((service, n)) = Endpoints::split_key(&key) else {
                continue;
            };
            match change {
                EndpointsChange::Put(e) => {
                    self.endpoints
                        .entry(service.to_string())
                        .or_default()
                        .insert(n, *e);
                }
                EndpointsChange::Delete => self.forget_slice(service, n),
                EndpointsChange::Keep => {}
            }
        }
    }

    fn mark(&mut self, keys: impl IntoIterator<Item = String>) {
        self.dirty.extend(keys);
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// The write of a plan. Last writer wins (`Expect::Any`): every writer computes the same
/// content from the same committed state, and a stale one is corrected by the next change.
fn ops(planned: &[(String, EndpointsChange)]) -> Vec<Op> {
    planned
        .iter()
        .filter_map(|(key, change)| match change {
            EndpointsChange::Put(e) => Some(Op::put(Kind::Endpoints, key.clone(), e, Expect::Any)),
            EndpointsChange::Delete => Some(Op::delete(Kind::Endpoints, key.clone(), Expect::Any)),
            EndpointsChange::Keep => None,
        })
        .collect()
}

async fn relist(store: &Store) -> Result<(u64, Cache), ControlError> {
    let revision = store.revision().await?;
    let cache = Cache::from_lists(
        store.list(Kind::Service, "").await?,
        store.list(Kind::Replica, "").await?,
        store.list(Kind::ReplicaStatus, "").await?,
        store.list(Kind::Endpoints, "").await?,
    );
    Ok((revision, cache))
}

/// Runs the endpoints controller until `shutdown` turns true.
pub async fn run_endpoints(store: Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (revision, mut cache) = match relist(&store).await {
            Ok(listed) => listed,
            Err(e) => {
                warn!(error = %error_chain(&e), "endpoints: cannot list; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        let mut watch = store.watch(revision);
        let mut last_write: Option<tokio::time::Instant> = None;
        loop {
            if let Some(due) = last_write.map(|at| at + MIN_WRITE_INTERVAL) {
                if cache.has_dirty() && tokio::time::Instant::now() < due {
                    tokio::select! {
                        () = tokio::time::sleep_until(due) => {}
                        _ = shutdown.changed() => return,
                    }
                    // What committed meanwhile goes into this write.
                    let mut relisted = false;
                    while let Some(event) = watch.next().now_or_never() {
                        match event {
                            Some(WatchEvent::Txn { changes, .. }) => {
                                changes.iter().for_each(|c| cache.apply(c));
                            }
                            Some(WatchEvent::Compacted { .. }) => {
                                relisted = true;
                                break;
                            }
                            None => return,
                        }
                    }
                    if relisted {
                        break;
                    }
                }
            }
            while cache.has_dirty() {
                let planned = cache.plan_dirty(BATCH);
                let count = planned.len();
                match store.txn(ops(&planned)).await {
                    Ok(revision) => {
                        debug!(written = count, revision, "endpoints written");
                        cache.committed(planned);
                        last_write = Some(tokio::time::Instant::now());
                    }
                    Err(e) => {
                        warn!(error = %error_chain(&e), "endpoints: write failed; retrying");
                        cache.mark(planned.into_iter().filter_map(|(key, _)| {
                            Endpoints::split_key(&key).map(|(service, _)| service.to_string())
                        }));
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
            let event = tokio::select! {
                event = watch.next() => event,
                _ = shutdown.changed() => return,
            };
            // Everything already committed is applied before planning, so that a burst of
            // reports about one service costs one write of its endpoints.
            let drained = drain_committed(event, &mut watch, MAX_COALESCE, |changes| {
                changes.iter().for_each(|c| cache.apply(c));
            });
            match drained.await {
                Drained::Applied => {}
                // History is gone: start over from a fresh list.
                Drained::Compacted => break,
                Drained::Ended => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
