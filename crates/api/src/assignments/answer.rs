//! Assignments as they are sent: the node's own part (its replicas, subnet, generation) beside
//! the routed services' part, which is serialized once and shared.
//!
//! One endpoints write during a burst wakes every node routing the service, a thousand at
//! once, and they all ask the same question: what changed in the same services since the same
//! history entry. Building and serializing that answer once per question instead of once per
//! node is what keeps a scale-up's fan-out to the cost of writing bytes (Kubernetes' watch
//! cache serializes each event once for all watchers for the same reason).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use hivemind_types::{Assignment, EndpointChange, Replica, ServiceEndpoints};
use serde::Serialize;
use serde_json::value::RawValue;

/// The routed services' part of an answer, serialized.
#[derive(Debug)]
pub(crate) struct Routed {
    services: Box<RawValue>,
    /// Delta answers only.
    endpoint_changes: Option<Box<RawValue>>,
    service_keys: Option<Box<RawValue>>,
}

fn raw<T: Serialize>(value: &T) -> Box<RawValue> {
    // Plain data with string keys: serializing it cannot fail.
    serde_json::value::to_raw_value(value).expect("routed services serialize")
}

impl Routed {
    /// A full answer's part: every routed service whole.
    pub(crate) fn whole(services: &[ServiceEndpoints]) -> Routed {
        Routed {
            services: raw(&services),
            endpoint_changes: None,
            service_keys: None,
        }
    }

    /// A delta answer's part: the services sent whole, the endpoint lists' changes and the
    /// keys of every service routed now.
    pub(crate) fn delta(
        services: &[ServiceEndpoints],
        changes: &[EndpointChange],
        keys: &[String],
    ) -> Routed {
        Routed {
            services: raw(&services),
            endpoint_changes: (!changes.is_empty()).then(|| raw(&changes)),
            service_keys: (!keys.is_empty()).then(|| raw(&keys)),
        }
    }
}

/// What identifies one routed part: whether it is a full answer's, the first history entry
/// a delta covers (`None` when nothing changed), the services routed and those sent whole
/// because the node just gained their app.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RoutedKey {
    pub(crate) full: bool,
    pub(crate) from: Option<u64>,
    pub(crate) keys: Vec<String>,
    pub(crate) joined: Vec<String>,
}

/// Routed parts built since the history last changed; any change to it empties the cache.
#[derive(Debug, Default)]
pub(crate) struct RoutedCache {
    version: u64,
    parts: HashMap<RoutedKey, Arc<Routed>>,
}

impl RoutedCache {
    /// Bounds memory when many nodes ask different questions between two history changes.
    const MAX_PARTS: usize = 256;

    /// The part for `key` while the history is at `version`, built by `build` when missing.
    pub(crate) fn get_or_build(
        &mut self,
        version: u64,
        key: RoutedKey,
        build: impl FnOnce() -> Routed,
    ) -> Arc<Routed> {
        if self.version != version || self.parts.len() >= Self::MAX_PARTS {
            self.parts.clear();
            self.version = version;
        }
        self.parts
            .entry(key)
            .or_insert_with(|| Arc::new(build()))
            .clone()
    }
}

/// One node's assignment, ready to send.
#[derive(Debug)]
pub struct AssignmentAnswer {
    pub(crate) node: String,
    pub(crate) generation: u64,
    pub(crate) replicas: Vec<Replica>,
    pub(crate) replica_removes: Vec<String>,
    pub(crate) subnet: Option<String>,
    pub(crate) cluster_cidr: String,
    pub(crate) service_cidr: String,
    pub(crate) routed: Arc<Routed>,
    pub(crate) delta: bool,
    /// The node's own secret and config values (`assignments::secrets`): never shared.
    pub(crate) files: Vec<hivemind_types::secret::FileValue>,
}

/// The wire form: field for field what `Assignment` serializes to.
#[derive(Serialize)]
struct Wire<'a> {
    node: &'a str,
    generation: u64,
    replicas: &'a [Replica],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    replica_removes: &'a [String],
    network: NetworkWire<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    delta: bool,
    #[serde(skip_serializing_if = "<[hivemind_types::secret::FileValue]>::is_empty")]
    files: &'a [hivemind_types::secret::FileValue],
}

#[derive(Serialize)]
struct NetworkWire<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    subnet: Option<&'a str>,
    cluster_cidr: &'a str,
    service_cidr: &'a str,
    services: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_changes: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_keys: Option<&'a RawValue>,
}

impl AssignmentAnswer {
    /// The JSON sent to the node.
    pub fn to_json(&self) -> Vec<u8> {
        let wire = Wire {
            node: &self.node,
            generation: self.generation,
            replicas: &self.replicas,
            replica_removes: &self.replica_removes,
            network: NetworkWire {
                subnet: self.subnet.as_deref(),
                cluster_cidr: &self.cluster_cidr,
                service_cidr: &self.service_cidr,
                services: &self.routed.services,
                endpoint_changes: self.routed.endpoint_changes.as_deref(),
                service_keys: self.routed.service_keys.as_deref(),
            },
            delta: self.delta,
            files: &self.files,
        };
        serde_json::to_vec(&wire).expect("an assignment serializes")
    }

    /// The answer as the node reads it (tests and in-process callers).
    pub fn decode(&self) -> Assignment {
        serde_json::from_slice(&self.to_json()).expect("an assignment's JSON reads back")
    }
}

impl IntoResponse for AssignmentAnswer {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.to_json()).into_response()
    }
}
