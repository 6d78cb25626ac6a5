//! Recorded events: what happened to a replica or a node (an exit, an OOM kill, a back-off, a
//! failed start, a node coming or going), for `hivemind events`, like Kubernetes events.
//!
//! Only the server writes them, from what agents report and what the node-liveness controller
//! decides; they are kept bounded in number and age. They are a record for people, not state
//! that anything reconciles from.

use serde::{Deserialize, Serialize};

use crate::object::{Kind, Meta, NodeProblem};

/// One recorded event. Key: `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `{time, 13 digits}.{object name}.{reason, lowercase}`: store keys then sort by time, and
    /// the same happening (a replica's exit seen at one time) always gets the same id, which is
    /// what makes recording it idempotent.
    pub id: String,
    /// When it happened (Unix ms); for exits, when the agent saw the exit.
    pub time: u64,
    #[serde(rename = "type")]
    pub event_type: EventType,
    /// CamelCase, as in Kubernetes: see [`reason`].
    pub reason: String,
    pub object: EventObject,
    /// One line for people: `replica web-3f9k2 exited with code 3`.
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// For exits: the container's last lines of output (see `ExitRecord::last_lines`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_lines: Vec<String>,
    /// How many times this happened in a row (a crash loop's exits are one event counting
    /// up, as in Kubernetes, rather than hundreds that push everything else out).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
    /// With `count > 1`: when the first of them happened; `time` is the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_time: Option<u64>,
    #[serde(default)]
    pub meta: Meta,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

/// Repeats of an event closer than this to the previous one count up that event instead of
/// adding one (Kubernetes' event correlator uses 10 minutes too).
pub const AGGREGATE_WINDOW_MS: u64 = 10 * 60 * 1000;

/// Whether events with `reason` count up when they repeat: the crash-loop family does; node
/// events, which are rare and each distinct, do not.
pub fn aggregates(reason: &str) -> bool {
    [
        reason::EXITED,
        reason::OOM_KILLED,
        reason::BACK_OFF,
        reason::FAILED,
        reason::UNHEALTHY,
    ]
    .contains(&reason)
}

impl Event {
    /// Whether `self` repeats `earlier`: the same replica, reason and exit code, within
    /// [`AGGREGATE_WINDOW_MS`].
    pub fn repeats(&self, earlier: &Event) -> bool {
        aggregates(&self.reason)
            && self.reason == earlier.reason
            && self.object == earlier.object
            && self.exit_code == earlier.exit_code
            && self.time >= earlier.time
            && self.time - earlier.time <= AGGREGATE_WINDOW_MS
    }

    /// `self`, counting `earlier` (and whatever it counted) as its first occurrences.
    pub fn counting(mut self, earlier: &Event) -> Event {
        self.count = earlier.count.max(1).saturating_add(self.count.max(1));
        self.first_time = Some(earlier.first_time.unwrap_or(earlier.time));
        self
    }
}

impl Event {
    /// The id (and store key) of the event about `name` with `reason` at `time`.
    pub fn key(time: u64, name: &str, reason: &str) -> String {
        format!("{time:013}.{name}.{}", reason.to_ascii_lowercase())
    }

    /// A warning with the problem's own reason when node `name` reports `problem` anew;
    /// `Resolved` (normal) when it no longer does.
    pub fn node_problem(name: &str, problem: &NodeProblem, resolved: bool, time: u64) -> Event {
        let (reason, event_type, message) = if resolved {
            (
                reason::RESOLVED,
                EventType::Normal,
                format!("resolved: {}", problem.message),
            )
        } else {
            (
                problem.reason.as_str(),
                EventType::Warning,
                problem.message.clone(),
            )
        };
        let mut event = Event::about_node(name, true, time);
        event.id = Event::key(time, name, reason);
        event.event_type = event_type;
        event.reason = reason.to_string();
        event.message = message;
        event
    }

    /// `Ready` when node `name` reports for the first time or after it was down; `Down` when
    /// it was marked down.
    pub fn about_node(name: &str, ready: bool, time: u64) -> Event {
        let (reason, event_type, message) = if ready {
            (
                reason::READY,
                EventType::Normal,
                format!("node {name} is ready"),
            )
        } else {
            (
                reason::DOWN,
                EventType::Warning,
                format!("node {name} stopped reporting; marked down"),
            )
        };
        Event {
            id: Event::key(time, name, reason),
            time,
            event_type,
            reason: reason.to_string(),
            object: EventObject {
                kind: Kind::Node,
                name: name.to_string(),
                namespace: None,
                app: None,
                service: None,
                node: Some(name.to_string()),
            },
            message,
            exit_code: None,
            last_lines: Vec::new(),
            count: 1,
            first_time: None,
            meta: Meta::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// Expected: a node became ready, a run-to-completion replica finished.
    Normal,
    /// Needs a look: a crash, an OOM kill, a back-off, a failed start, a node down.
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "normal",
            EventType::Warning => "warning",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        [EventType::Normal, EventType::Warning]
            .into_iter()
            .find(|t| t.as_str() == s)
    }
}

/// What an event is about. Replicas carry their app, service, namespace and node, so events
/// stay readable after the replica is gone; nodes are cluster-wide (no namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventObject {
    /// `replica` or `node`.
    pub kind: Kind,
    /// The replica id or node name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The reasons events are recorded with.
pub mod reason {
    /// A replica's container exited (warning unless with code 0).
    pub const EXITED: &str = "Exited";
    /// A replica's container was killed by the kernel for exceeding its memory limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// A replica that keeps exiting waits before its next restart (a crash loop).
    pub const BACK_OFF: &str = "BackOff";
    /// A replica's container could not be created or started (image, pull, spec).
    pub const FAILED: &str = "Failed";
    /// A node reported for the first time, or again after it was down.
    pub const READY: &str = "Ready";
    /// A node stopped reporting and was marked down.
    pub const DOWN: &str = "Down";
    /// A published port cannot be served on a node (a host process holds it).
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// A node problem reported before is gone.
    pub const RESOLVED: &str = "Resolved";
    /// A replica's health check failed `retries` times in a row (the agent restarts it).
    pub const UNHEALTHY: &str = "Unhealthy";
    /// A replica's health check passed after it started or was unhealthy.
    pub const HEALTHY: &str = "Healthy";
    /// A one-shot replica exited with code 0 and is not restarted: its job is done.
    pub const COMPLETED: &str = "Completed";
    /// A service's replicas wait for its `depends_on` conditions (the message says which).
    pub const WAITING: &str = "Waiting";
    /// A required dependency of a service failed for good: its replicas are not created.
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
    /// A service's dependencies hold now: its replicas are created.
    pub const DEPENDENCIES_READY: &str = "DependenciesReady";
}

/// How many events are kept, like the Kubernetes API server's bounded event store...
pub const MAX_EVENTS: usize = 1000;
/// ...and for how long (Kubernetes' default `--event-ttl` is one hour; a day suits a small
/// cluster whose events are few).
pub const MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;

/// The keys (as listed: ordered, hence oldest first) to delete so that, after `adding` more
/// events are written at `now`, at most [`MAX_EVENTS`] remain and none older than
/// [`MAX_AGE_MS`]. Writers call it in the transaction that adds events, so the bound holds
/// without a separate cleaner.
pub fn expired_keys(keys: &[String], adding: usize, now: u64) -> Vec<&str> {
    let oldest_kept = now.saturating_sub(MAX_AGE_MS);
    let over = (keys.len() + adding).saturating_sub(MAX_EVENTS);
    keys.iter()
        .enumerate()
        .filter(|(i, key)| *i < over || key_time(key).is_some_and(|t| t < oldest_kept))
        .map(|(_, key)| key.as_str())
        .collect()
}

/// The time an event key starts with (see [`Event::id`]).
pub fn key_time(key: &str) -> Option<u64> {
    key.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time() {
        let a = Event::key(999, "web-aaaaa", reason::EXITED);
        let b = Event::key(1_000, "web-aaaaa", reason::BACK_OFF);
        assert_eq!(a, "0000000000999.web-aaaaa.exited");
        assert!(a < b);
        assert_eq!(key_time(&b), Some(1_000));
    }

    #[test]
    fn retention_bounds_count_and_age() {
        let day = MAX_AGE_MS;
        let keys: Vec<String> = (0..MAX_EVENTS as u64)
            .map(|i| Event::key(day + i, "n1", reason::READY))
            .collect();
        // Full: adding two drops the two oldest.
        assert_eq!(expired_keys(&keys, 2, day), [&keys[0], &keys[1]]);
        // Old: everything before `now - MAX_AGE_MS` goes, whatever the count.
        assert_eq!(expired_keys(&keys[..10], 1, 2 * day + 5).len(), 5);
        assert!(expired_keys(&keys[..10], 1, day).is_empty());
    }
}
