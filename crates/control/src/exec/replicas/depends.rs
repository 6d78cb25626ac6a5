//! The service controller's `depends_on` side: each planned service's gate
//! (`plan::depends`) from the cache, and the events that tell people about a wait.
//!
//! A wait is recorded when it begins or its reason changes (`Waiting`, or `DependencyFailed`
//! when a required dependency failed for good), and its end as `DependenciesReady`, so that
//! `hivemind events` shows why a service has no replicas yet and when that changed. The
//! controller remembers what it last recorded per service (a restart of the server may
//! record the current wait once more).

use std::collections::HashMap;

use hivemind_types::event::reason;
use hivemind_types::{Event, EventObject, EventType, Kind, Meta, Service};

use super::Cache;
use crate::plan::depends::{gate, DependencyFacts, Gate, ReplicaFacts};

impl Cache {
    /// The gate of the service `key`, or `None` when it has no `depends_on`.
    pub(super) fn gate_of(&self, key: &str) -> Option<Gate> {
        let service = self.services.get(key)?;
        if service.spec.depends_on.is_empty() {
            return None;
        }
        let lookup = |name: &str| {
            let dep_key = format!("{}/{}/{name}", service.namespace, service.app);
            let dep = self.services.get(&dep_key)?;
            let hash = dep.spec.revision_hash();
            let replicas = self
                .by_service
                .get(&dep_key)
                .into_iter()
                .flatten()
                .filter_map(|id| self.replicas.get(id))
                .map(|(_, head)| {
                    let status = self.states.get(&head.id);
                    ReplicaFacts {
                        current: head.revision_hash == hash,
                        created_at: head.created_at,
                        state: status.map(|s| s.state),
                        exit_code: status.and_then(|s| s.exit_code),
                        health: status.and_then(|s| s.health),
                    }
                })
                .collect();
            Some(DependencyFacts {
                service: dep,
                replicas,
            })
        };
        Some(gate(service, &lookup))
    }
}

/// What the controller last recorded about each service's wait.
#[derive(Debug, Default)]
pub(super) struct WaitEvents {
    reported: HashMap<String, String>,
}

impl WaitEvents {
    /// The events the gates of the services planned bring, and the memory to keep once they
    /// are written (`commit`). `gates` holds every planned service that exists.
    pub(super) fn events(
        &self,
        planned: &[(&Service, Option<&Gate>)],
        now: u64,
    ) -> (Vec<Event>, Vec<(String, Option<String>)>) {
        let mut events = Vec::new();
        let mut memory = Vec::new();
        for (i, (service, gate)) in planned.iter().enumerate() {
            let key = service.key();
            let summary = gate.and_then(Gate::summary);
            let before = self.reported.get(&key);
            if summary.as_ref() == before {
                continue;
            }
            // Apart by a millisecond each, so that ids stay unique within one run.
            let time = now + i as u64;
            let (why, event_type, message) = match (&summary, gate) {
                (Some(s), Some(g)) if !g.failed.is_empty() => (
                    reason::DEPENDENCY_FAILED,
                    EventType::Warning,
                    format!("service {}: {s}", service.name),
                ),
                (Some(s), _) => (
                    reason::WAITING,
                    EventType::Normal,
                    format!("service {}: {s}", service.name),
                ),
                (None, _) => (
                    reason::DEPENDENCIES_READY,
                    EventType::Normal,
                    format!(
                        "service {}: its dependencies hold; creating its replicas",
                        service.name
                    ),
                ),
            };
            events.push(service_event(service, time, why, event_type, message));
            memory.push((key, summary));
        }
        (events, memory)
    }

    pub(super) fn commit(&mut self, memory: Vec<(String, Option<String>)>) {
        for (key, summary) in memory {
            match summary {
                Some(s) => self.reported.insert(key, s),
                None => self.reported.remove(&key),
            };
        }
    }
}

fn service_event(
    service: &Service,
    time: u64,
    why: &str,
    event_type: EventType,
    message: String,
) -> Event {
    Event {
        id: Event::key(time, &service.name, why),
        time,
        event_type,
        reason: why.to_string(),
        object: EventObject {
            kind: Kind::Service,
            name: service.name.clone(),
            namespace: Some(service.namespace.clone()),
            app: Some(service.app.clone()),
            service: Some(service.name.clone()),
            node: None,
        },
        message,
        exit_code: None,
        last_lines: Vec::new(),
        count: 1,
        first_time: None,
        meta: Meta::default(),
    }
}
