//! The hub's memory for delta assignments: every service's current data-plane form (its
//! endpoints slices merged) and a bounded history of what changed in them, so that a node asking after generation G gets
//! only the endpoints that changed since G instead of every routed service in full.
//!
//! The history records, per committed endpoints change, which replica ids' endpoints changed
//! (the current lists are kept here, so the ids are enough to rebuild upserts and removals)
//! or that the service must go in full (new, deleted, or changed in anything but its
//! endpoint list), and when a node gained an app (its services are new to it). It holds at
//! most [`MAX_WEIGHT`] ids; `covers_from` is the oldest generation it can answer after.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hivemind_store::{Change, ChangeOp};
use hivemind_types::{Endpoint, EndpointChange, Endpoints, ServiceEndpoints};
use serde::Deserialize;
use tracing::warn;

/// The most replica ids (and entries) the history keeps: with one 10,000-replica service,
/// about ten full turnovers of it.
pub(crate) const MAX_WEIGHT: usize = 100_000;

/// One committed endpoints change: these replicas' endpoints changed in service `key`, or
/// (`whole`) the service must be sent in full.
#[derive(Debug)]
struct Entry {
    revision: u64,
    key: String,
    ids: Vec<String>,
    whole: bool,
}

impl Entry {
    fn weight(&self) -> usize {
        self.ids.len().max(1)
    }
}

/// What changed for one node since a generation: see `NodeNetwork`'s delta fields.
#[derive(Debug)]
pub(crate) struct NodeDelta {
    pub(crate) replicas: super::replica_log::ReplicaDelta,
    pub(crate) subnet: Option<String>,
    /// The routed services' part, shared by every node that asked the same.
    pub(crate) routed: std::sync::Arc<super::answer::Routed>,
}

/// One service with its slices merged.
#[derive(Debug)]
struct Merged {
    /// Everything but the endpoints, which are below.
    head: ServiceEndpoints,
    endpoints: BTreeMap<String, Endpoint>,
    /// Each slice's endpoints' ids, and which slice holds each id: a replica moved between
    /// slices in one transaction (a repack) must not be removed by its old slice's delete.
    slices: HashMap<u32, Vec<String>>,
    slice_of: HashMap<String, u32>,
}

impl Merged {
    fn new(mut head: ServiceEndpoints) -> Merged {
        head.endpoints = Vec::new();
        Merged {
            head,
            endpoints: BTreeMap::new(),
            slices: HashMap::new(),
            slice_of: HashMap::new(),
        }
    }

    fn whole(&self) -> ServiceEndpoints {
        ServiceEndpoints {
            endpoints: self.endpoints.values().cloned().collect(),
            ..self.head.clone()
        }
    }

    /// Replaces slice `n`'s endpoints with `now` (none for a deleted slice); the ids whose
    /// endpoint changed.
    fn set_slice(&mut self, n: u32, now: Vec<Endpoint>) -> Vec<String> {
        let mut changed = Vec::new();
        let new_ids: BTreeSet<&str> = now.iter().map(|e| e.replica.as_str()).collect();
        for id in self.slices.remove(&n).unwrap_or_default() {
            if !new_ids.contains(id.as_str()) && self.slice_of.get(&id) == Some(&n) {
                self.slice_of.remove(&id);
                self.endpoints.remove(&id);
                changed.push(id);
            }
        }
        let ids: Vec<String> = now.iter().map(|e| e.replica.clone()).collect();
        for e in now {
            self.slice_of.insert(e.replica.clone(), n);
            if self.endpoints.get(&e.replica) != Some(&e) {
                changed.push(e.replica.clone());
                self.endpoints.insert(e.replica.clone(), e);
            }
        }
        if !ids.is_empty() {
            self.slices.insert(n, ids);
        }
        changed
    }
}

#[derive(Debug, Default)]
pub(crate) struct Diffs {
    services: BTreeMap<String, Merged>,
    entries: VecDeque<Entry>,
    weight: usize,
    covers_from: u64,
    /// Bumped by every change to the history: answers built from it stay valid until then.
    version: u64,
}

/// Equal in everything the data plane reads except the endpoint list.
fn same_but_endpoints(a: &ServiceEndpoints, b: &ServiceEndpoints) -> bool {
    a.namespace == b.namespace
        && a.app == b.app
        && a.name == b.name
        && a.vip == b.vip
        && a.ports == b.ports
        && a.ingress == b.ingress
        && a.networks == b.networks
        && a.aliases == b.aliases
        && a.internal == b.internal
        && a.proxy_protocol == b.proxy_protocol
}

impl Diffs {
    /// Starts over from listed endpoints at `revision`: no delta reaches further back.
    pub(crate) fn reset(&mut self, revision: u64, endpoints: &[Endpoints]) {
        self.services.clear();
        // Slice 0 first, so that each service's head comes from it.
        let mut sorted: Vec<&Endpoints> = endpoints.iter().collect();
        sorted.sort_by_key(|e| e.slice);
        for e in sorted {
            let now = e.to_service_endpoints();
            let merged = self
                .services
                .entry(e.service_key())
                .or_insert_with(|| Merged::new(now.clone()));
            merged.set_slice(e.slice, now.endpoints);
        }
        self.entries.clear();
        self.weight = 0;
        self.covers_from = revision;
        self.version += 1;
    }

    /// Changes with every change to the services or their history.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The revision of the first change after `after`, which with the history's version names
    /// everything a delta after `after` covers; `None` when nothing changed since.
    pub(crate) fn first_after(&self, after: u64) -> Option<u64> {
        let start = self.entries.partition_point(|e| e.revision <= after);
        self.entries.get(start).map(|e| e.revision)
    }

    /// Whether a delta after generation `after` can be answered (`processed` is the hub's).
    pub(crate) fn covers(&self, after: u64, processed: u64) -> bool {
        self.covers_from <= after && after <= processed
    }

    fn push(&mut self, entry: Entry) {
        self.version += 1;
        self.weight += entry.weight();
        self.entries.push_back(entry);
        while self.weight > MAX_WEIGHT {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.weight -= old.weight();
            // Changes at `old.revision` may now be partly forgotten: only later ones are whole.
            self.covers_from = self.covers_from.max(old.revision);
        }
    }

    /// Records an endpoints slice's put or delete.
    pub(crate) fn endpoints(&mut self, revision: u64, change: &Change) {
        let Some((key, n)) = Endpoints::split_key(&change.key) else {
            warn!(key = %change.key, "hub: endpoints with a malformed slice key");
            return;
        };
        let key = key.to_string();
        let new = if change.op == ChangeOp::Put {
            match Endpoints::deserialize(&change.value) {
                Ok(e) => Some(e.to_service_endpoints()),
                Err(error) => {
                    warn!(key = %change.key, %error, "hub: unreadable endpoints");
                    None
                }
            }
        } else {
            None
        };
        let entry = |key, ids, whole| Entry {
            revision,
            key,
            ids,
            whole,
        };
        let what = match (self.services.get_mut(&key), new) {
            // Slice 0 goes only with the service.
            (Some(_), None) if n == 0 => {
                self.services.remove(&key);
                Some(entry(key, Vec::new(), true))
            }
            (Some(merged), None) => {
                let ids = merged.set_slice(n, Vec::new());
                (!ids.is_empty()).then(|| entry(key, ids, false))
            }
            (None, None) => None,
            (Some(merged), Some(now)) if same_but_endpoints(&merged.head, &now) => {
                let ids = merged.set_slice(n, now.endpoints);
                (!ids.is_empty()).then(|| entry(key, ids, false))
            }
            (Some(merged), Some(mut now)) => {
                let endpoints = std::mem::take(&mut now.endpoints);
                merged.head = now;
                merged.set_slice(n, endpoints);
                Some(entry(key, Vec::new(), true))
            }
            (None, Some(now)) => {
                let mut merged = Merged::new(now.clone());
                merged.set_slice(n, now.endpoints);
                self.services.insert(key.clone(), merged);
                Some(entry(key, Vec::new(), true))
            }
        };
        if let Some(what) = what {
            self.push(what);
        }
    }

    /// The keys of the services of `apps` (`ns/app`) and of `public`, that exist now.
    pub(crate) fn routed(
        &self,
        apps: &BTreeSet<String>,
        public: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let mut keys: BTreeSet<String> = public
            .iter()
            .filter(|k| self.services.contains_key(*k))
            .cloned()
            .collect();
        for app in apps {
            let prefix = format!("{app}/");
            keys.extend(
                self.services
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone()),
            );
        }
        keys
    }

    /// The services of `keys` (from [`Diffs::routed`]) in full, in key order: a full
    /// answer's.
    pub(crate) fn whole_services(&self, keys: &BTreeSet<String>) -> Vec<ServiceEndpoints> {
        keys.iter()
            .filter_map(|key| self.services.get(key))
            .map(Merged::whole)
            .collect()
    }

    /// What changed since `after` (which [`Diffs::covers`]) in the services of `keys`, for a
    /// node that gained the apps `joined` since then (their services go whole): the services
    /// sent whole and the endpoint lists' changes, both in key order.
    pub(crate) fn delta(
        &self,
        after: u64,
        keys: &BTreeSet<String>,
        joined: &BTreeSet<String>,
    ) -> (Vec<ServiceEndpoints>, Vec<EndpointChange>) {
        let mut whole: BTreeSet<&str> = keys
            .iter()
            .filter(|key| joined.contains(crate::assignments::app_of(key)))
            .map(String::as_str)
            .collect();
        // Ids are gathered in lists and sorted once: a set per id cost most of a burst's
        // answers.
        let mut touched: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let start = self.entries.partition_point(|e| e.revision <= after);
        for entry in self.entries.range(start..) {
            if !keys.contains(&entry.key) {
                continue;
            }
            if entry.whole {
                whole.insert(&entry.key);
            } else {
                touched
                    .entry(&entry.key)
                    .or_default()
                    .extend(entry.ids.iter().map(String::as_str));
            }
        }
        let services = whole
            .iter()
            .filter_map(|key| self.services.get(*key))
            .map(Merged::whole)
            .collect();
        let mut changes = Vec::new();
        for (key, mut ids) in touched {
            if whole.contains(key) {
                continue;
            }
            let Some(merged) = self.services.get(key) else {
                continue;
            };
            ids.sort_unstable();
            ids.dedup();
            let mut change = EndpointChange {
                service: key.to_string(),
                upserts: Vec::new(),
                removes: Vec::new(),
            };
            for id in ids {
                match merged.endpoints.get(id) {
                    Some(e) => change.upserts.push(e.clone()),
                    None => change.removes.push(id.to_string()),
                }
            }
            changes.push(change);
        }
        (services, changes)
    }
}
