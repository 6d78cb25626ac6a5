//! The hub's memory for delta assignments: every service's current data-plane form and a
//! bounded history of what changed in them, so that a node asking after generation G gets
//! only the endpoints that changed since G instead of every routed service in full.
//!
//! The history records, per committed endpoints change, which replica ids' endpoints changed
//! (the current lists are kept here, so the ids are enough to rebuild upserts and removals)
//! or that the service must go in full (new, deleted, or changed in anything but its
//! endpoint list), and when a node gained an app (its services are new to it). It holds at
//! most [`MAX_WEIGHT`] ids; `covers_from` is the oldest generation it can answer after.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hivemind_store::{Change, ChangeOp};
use hivemind_types::{EndpointChange, Endpoints, ServiceEndpoints};
use serde::Deserialize;
use tracing::warn;

/// The most replica ids (and entries) the history keeps: with one 10,000-replica service,
/// about ten full turnovers of it.
pub(crate) const MAX_WEIGHT: usize = 100_000;

#[derive(Debug)]
enum What {
    /// These replicas' endpoints changed, or (`whole`) the service must be sent in full.
    Service {
        key: String,
        ids: Vec<String>,
        whole: bool,
    },
    /// `node` now runs a replica of `app` (`ns/app`), whose services are new to it.
    Joined { node: String, app: String },
}

#[derive(Debug)]
struct Entry {
    revision: u64,
    what: What,
}

impl Entry {
    fn weight(&self) -> usize {
        match &self.what {
            What::Service { ids, .. } => ids.len().max(1),
            What::Joined { .. } => 1,
        }
    }
}

/// What changed for one node since a generation: see `NodeNetwork`'s delta fields.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct NodeDelta {
    /// Filled in by `Routes::delta`, which knows the node's replicas and subnet.
    pub(crate) replicas: super::replica_log::ReplicaDelta,
    pub(crate) subnet: Option<String>,
    pub(crate) services: Vec<ServiceEndpoints>,
    pub(crate) endpoint_changes: Vec<EndpointChange>,
    pub(crate) service_keys: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct Diffs {
    services: BTreeMap<String, ServiceEndpoints>,
    entries: VecDeque<Entry>,
    weight: usize,
    covers_from: u64,
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
        self.services = endpoints
            .iter()
            .map(|e| (e.key(), e.to_service_endpoints()))
            .collect();
        self.entries.clear();
        self.weight = 0;
        self.covers_from = revision;
    }

    /// Whether a delta after generation `after` can be answered (`processed` is the hub's).
    pub(crate) fn covers(&self, after: u64, processed: u64) -> bool {
        self.covers_from <= after && after <= processed
    }

    fn push(&mut self, revision: u64, what: What) {
        let entry = Entry { revision, what };
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

    /// Records an endpoints object's put or delete.
    pub(crate) fn endpoints(&mut self, revision: u64, change: &Change) {
        let key = change.key.clone();
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
        let old = self.services.remove(&key);
        let what = match (old, &new) {
            (Some(old), Some(new)) if same_but_endpoints(&old, new) => {
                let before: HashMap<&str, _> = old
                    .endpoints
                    .iter()
                    .map(|e| (e.replica.as_str(), e))
                    .collect();
                let after: BTreeSet<&str> =
                    new.endpoints.iter().map(|e| e.replica.as_str()).collect();
                let mut ids: Vec<String> = new
                    .endpoints
                    .iter()
                    .filter(|e| before.get(e.replica.as_str()) != Some(e))
                    .map(|e| e.replica.clone())
                    .collect();
                ids.extend(
                    before
                        .keys()
                        .filter(|id| !after.contains(*id))
                        .map(|id| id.to_string()),
                );
                (!ids.is_empty()).then_some(What::Service {
                    key: key.clone(),
                    ids,
                    whole: false,
                })
            }
            _ => Some(What::Service {
                key: key.clone(),
                ids: Vec::new(),
                whole: true,
            }),
        };
        if let Some(new) = new {
            self.services.insert(key, new);
        }
        if let Some(what) = what {
            self.push(revision, what);
        }
    }

    /// Records that `node` gained its first replica of `app` (`ns/app`).
    pub(crate) fn joined(&mut self, revision: u64, node: &str, app: &str) {
        self.push(
            revision,
            What::Joined {
                node: node.to_string(),
                app: app.to_string(),
            },
        );
    }

    /// The keys of the services of `apps` (`ns/app`) and of `public`, that exist now.
    fn routed(&self, apps: &BTreeSet<String>, public: &BTreeSet<String>) -> BTreeSet<String> {
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

    /// What changed for `node`, which runs `apps` and routes `public` too, since `after`
    /// (which [`Diffs::covers`]).
    pub(crate) fn delta(
        &self,
        after: u64,
        node: &str,
        apps: &BTreeSet<String>,
        public: &BTreeSet<String>,
    ) -> NodeDelta {
        let keys = self.routed(apps, public);
        let mut whole: BTreeSet<&str> = BTreeSet::new();
        let mut touched: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        let mut joined: BTreeSet<&str> = BTreeSet::new();
        let start = self.entries.partition_point(|e| e.revision <= after);
        for entry in self.entries.range(start..) {
            match &entry.what {
                What::Service { key, ids, whole: w } => {
                    if !keys.contains(key) {
                        continue;
                    }
                    if *w {
                        whole.insert(key);
                    } else {
                        touched
                            .entry(key)
                            .or_default()
                            .extend(ids.iter().map(String::as_str));
                    }
                }
                What::Joined { node: n, app } if n == node => {
                    joined.insert(app);
                }
                What::Joined { .. } => {}
            }
        }
        for key in &keys {
            if joined.contains(crate::assignments::app_of(key)) {
                whole.insert(key);
            }
        }
        let mut out = NodeDelta::default();
        for key in &whole {
            out.services.push(self.services[*key].clone());
        }
        for (key, ids) in touched {
            if whole.contains(key) {
                continue;
            }
            let now = &self.services[key].endpoints;
            let mut change = EndpointChange {
                service: key.to_string(),
                upserts: Vec::new(),
                removes: Vec::new(),
            };
            // Lists are long and changes mostly few: index the list only for many ids.
            let index: HashMap<&str, _> = if ids.len() > 16 {
                now.iter().map(|e| (e.replica.as_str(), e)).collect()
            } else {
                HashMap::new()
            };
            for id in ids {
                let found = if index.is_empty() {
                    now.iter().find(|e| e.replica == id)
                } else {
                    index.get(id).copied()
                };
                match found {
                    Some(e) => change.upserts.push(e.clone()),
                    None => change.removes.push(id.to_string()),
                }
            }
            out.endpoint_changes.push(change);
        }
        out.service_keys = keys.into_iter().collect();
        out
    }
}
