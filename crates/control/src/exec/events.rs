//! The events controller: records the events (`Kind::Event`) that stored statuses and nodes
//! bring, as `plan::events` decides them.
//!
//! It follows the store's watch like the endpoints controller: one list of statuses and nodes
//! at start, then each committed `ReplicaStatus` or `Node` put is compared with what the cache
//! remembers of that object before (`Seen`, the node's problems) and the cache updated. The
//! events of everything already committed are written in one transaction with the pruning
//! that keeps events bounded. Event ids are the happening's identity (time, object, reason),
//! so a write retried after a failure puts the same events again.
//!
//! A status only reaches the store when it changed (the report writes only what differs), so
//! a quiet cluster costs this controller nothing. At start the cache is primed silently (what
//! the store holds was recorded by the previous run); after compacted history the relisted
//! objects are compared with the cache, so that a gap in the watch loses no event.

use std::collections::HashMap;
use std::time::Duration;

use hivemind_store::{Change, ChangeOp, Expect, Op, Store};
use hivemind_types::event::MAX_EVENTS;
use hivemind_types::{Event, Kind, Node, NodeProblem, ObservedReplica, Replica};
use serde::Deserialize;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::exec::replicas::error_chain;
use crate::exec::{drain_committed, now_millis, ControlError, Drained};
use crate::plan::events::{
    aggregation_candidates, has_news, node_problem_events, replica_events, write_plan, Seen,
};

/// Committed transactions applied before their events are written.
const MAX_COALESCE: usize = 1_000;

/// The part of a node's JSON the cache needs.
#[derive(Deserialize)]
struct NodeHead {
    #[serde(default)]
    problems: Vec<NodeProblem>,
}

/// A status that brings events, with what was seen of it before.
type News = (Option<Seen>, ObservedReplica);

/// The controller's memory of statuses and node problems.
#[derive(Debug, Default)]
pub struct Cache {
    statuses: HashMap<String, Seen>,
    problems: HashMap<String, Vec<NodeProblem>>,
}

/// What changes brought and is not written yet.
#[derive(Debug, Default)]
pub struct Pending {
    /// Statuses with new exits or failures (their events need the replica, read at write).
    news: Vec<News>,
    /// Events decided already (node problems; replica events after a failed write).
    events: Vec<Event>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.news.is_empty() && self.events.is_empty()
    }
}

impl Cache {
    pub fn from_lists(statuses: &[ObservedReplica], nodes: &[Node]) -> Cache {
        Cache {
            statuses: statuses
                .iter()
                .map(|s| (s.id.clone(), Seen::of(s)))
                .collect(),
            problems: nodes
                .iter()
                .map(|n| (n.name.clone(), n.problems.clone()))
                .collect(),
        }
    }

    fn put_status(&mut self, status: ObservedReplica, pending: &mut Pending) {
        let seen = Seen::of(&status);
        let old = self.statuses.insert(status.id.clone(), seen);
        if has_news(old.as_ref(), &status) {
            pending.news.push((old, status));
        }
    }

    fn put_problems(&mut self, node: &str, new: Vec<NodeProblem>, now: u64, pending: &mut Pending) {
        let old = self.problems.get(node).map_or(&[][..], Vec::as_slice);
        pending
            .events
            .extend(node_problem_events(node, old, &new, now));
        self.problems.insert(node.to_string(), new);
    }

    /// Applies one committed change, adding what it brings to `pending`.
    pub fn apply(&mut self, change: &Change, now: u64, pending: &mut Pending) {
        let put = change.op == ChangeOp::Put;
        match change.kind {
            Kind::ReplicaStatus if put => match ObservedReplica::deserialize(&change.value) {
                Ok(status) => self.put_status(status, pending),
                Err(e) => warn!(key = %change.key, error = %e, "unreadable replica status"),
            },
            Kind::ReplicaStatus => {
                self.statuses.remove(&change.key);
            }
            Kind::Node if put => match NodeHead::deserialize(&change.value) {
                Ok(n) => self.put_problems(&change.key, n.problems, now, pending),
                Err(e) => warn!(key = %change.key, error = %e, "unreadable node"),
            },
            // A removed node's problems go with it: nothing was resolved.
            Kind::Node => {
                self.problems.remove(&change.key);
            }
            _ => {}
        }
    }

    /// Replaces the cache with a fresh list, adding to `pending` what the list brings over
    /// what the cache had (the changes a compacted watch no longer holds).
    pub fn relisted(
        &mut self,
        statuses: Vec<ObservedReplica>,
        nodes: Vec<Node>,
        now: u64,
        pending: &mut Pending,
    ) {
        let mut fresh = Cache::default();
        for s in statuses {
            let old = self.statuses.remove(&s.id);
            let seen = Seen::of(&s);
            if has_news(old.as_ref(), &s) {
                pending.news.push((old, s.clone()));
            }
            fresh.statuses.insert(s.id, seen);
        }
        for n in nodes {
            let old = self.problems.remove(&n.name).unwrap_or_default();
            pending
                .events
                .extend(node_problem_events(&n.name, &old, &n.problems, now));
            fresh.problems.insert(n.name, n.problems);
        }
        *self = fresh;
    }
}

/// Turns `pending` into events and writes them (and the pruning) in one transaction. On
/// failure the events stay in `pending` for the next attempt.
async fn record(store: &Store, pending: &mut Pending) -> Result<usize, ControlError> {
    // Read first, so that a failed read leaves `pending` as it was.
    let mut replicas: HashMap<String, Option<Replica>> = HashMap::new();
    for (_, status) in &pending.news {
        if !replicas.contains_key(&status.id) {
            let replica = store.get(Kind::Replica, &status.id).await?;
            replicas.insert(status.id.clone(), replica);
        }
    }
    for (old, status) in std::mem::take(&mut pending.news) {
        let replica = replicas.get(&status.id).and_then(Option::as_ref);
        pending
            .events
            .extend(replica_events(replica, old.as_ref(), &status));
    }
    if pending.events.is_empty() {
        return Ok(0);
    }
    let (ops, written) = event_ops(store, pending.events.clone(), now_millis()).await?;
    if !ops.is_empty() {
        store.txn(ops).await?;
    }
    pending.events.clear();
    Ok(written)
}

/// The writes that record `events` at `now`: repeats folded into the stored events they
/// repeat, and the pruning that keeps events bounded (`plan::events::write_plan`); with the
/// number of events written. Shared by every controller that records events.
pub(crate) async fn event_ops(
    store: &Store,
    events: Vec<Event>,
    now: u64,
) -> Result<(Vec<Op>, usize), ControlError> {
    let keys = store.keys(Kind::Event, "").await?;
    let mut stored = HashMap::new();
    for key in aggregation_candidates(&events, &keys) {
        if let Some(e) = store.get::<Event>(Kind::Event, &key).await? {
            stored.insert(key, e);
        }
    }
    let writes = write_plan(events, &keys, &stored, now);
    let written = writes.put.len();
    let mut ops: Vec<Op> = writes
        .delete
        .iter()
        .map(|key| Op::delete(Kind::Event, key.clone(), Expect::Any))
        .collect();
    ops.extend(
        writes
            .put
            .iter()
            .map(|e| Op::put(Kind::Event, e.id.clone(), e, Expect::Any)),
    );
    Ok((ops, written))
}

async fn relist(store: &Store) -> Result<(u64, Vec<ObservedReplica>, Vec<Node>), ControlError> {
    let revision = store.revision().await?;
    Ok((
        revision,
        store.list(Kind::ReplicaStatus, "").await?,
        store.list(Kind::Node, "").await?,
    ))
}

/// Runs the events controller until `shutdown` turns true.
pub async fn run_events(store: Store, mut shutdown: watch::Receiver<bool>) {
    let mut cache: Option<Cache> = None;
    let mut pending = Pending::default();
    loop {
        let (revision, statuses, nodes) = match relist(&store).await {
            Ok(listed) => listed,
            Err(e) => {
                warn!(error = %error_chain(&e), "events: cannot list; retrying");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        match cache.as_mut() {
            Some(c) => c.relisted(statuses, nodes, now_millis(), &mut pending),
            None => cache = Some(Cache::from_lists(&statuses, &nodes)),
        }
        let cache = cache.get_or_insert_with(Cache::default);
        let mut watch = store.watch(revision);
        loop {
            while !pending.is_empty() {
                match record(&store, &mut pending).await {
                    Ok(written) => debug!(written, "events recorded"),
                    Err(e) => {
                        warn!(error = %error_chain(&e), "events: write failed; retrying");
                        bound(&mut pending.events);
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
            // Everything already committed is applied before writing: a burst of reports
            // costs one event transaction.
            let now = now_millis();
            let drained = drain_committed(event, &mut watch, MAX_COALESCE, |changes| {
                changes
                    .iter()
                    .for_each(|c| cache.apply(c, now, &mut pending));
            });
            match drained.await {
                Drained::Applied => {}
                // History is gone: compare a fresh list with the cache.
                Drained::Compacted => break,
                Drained::Ended => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

/// Keeps the newest events a write could keep anyway, so that a store failing for long does
/// not grow the backlog without end.
fn bound(events: &mut Vec<Event>) {
    if events.len() > MAX_EVENTS {
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        events.drain(..events.len() - MAX_EVENTS);
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
