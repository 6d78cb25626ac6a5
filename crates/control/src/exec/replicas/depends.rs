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
    /// Service key → the [`signature`] of the wait last recorded.
    reported: HashMap<String, String>,
}

/// What a wait is about, without its progress: `migrate:service_completed_successfully`
/// waiting, `db:service_healthy` failed. `None` when nothing holds.
fn signature(gate: &Gate) -> Option<String> {
    if !gate.holds() {
        return None;
    }
    let part = |what: &str, u: &crate::plan::depends::Unmet| {
        format!("{what} {}:{}", u.service, u.condition.as_str())
    };
    let parts: Vec<String> = gate
        .waiting
        .iter()
        .map(|u| part("waiting", u))
        .chain(gate.failed.iter().map(|u| part("failed", u)))
        .collect();
    Some(parts.join(", "))
}

impl WaitEvents {
    /// The events the gates of the services planned bring, and the memory to keep once they
    /// are written (`commit`). `planned` holds every planned service that exists.
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
            // Recorded when the set of dependencies waited for (or failed) changes, not at
            // every replica of a big dependency that comes up.
            let signature = gate.and_then(signature);
            if signature.as_ref() == self.reported.get(&key) {
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
            memory.push((key, signature));
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

#[cfg(test)]
mod tests {
    use hivemind_types::{DependencyCondition, ServiceSpec};

    use super::*;
    use crate::plan::depends::Unmet;

    fn web() -> Service {
        Service {
            namespace: "default".into(),
            app: "shop".into(),
            name: "web".into(),
            spec: ServiceSpec::default(),
            vip: None,
            meta: Meta::default(),
        }
    }

    fn unmet(reason: &str) -> Unmet {
        Unmet {
            service: "migrate".into(),
            condition: DependencyCondition::ServiceCompletedSuccessfully,
            reason: reason.into(),
        }
    }

    /// Records what `gate` brings and returns the reasons of the events.
    fn step(waits: &mut WaitEvents, gate: Option<&Gate>, now: u64) -> Vec<String> {
        let service = web();
        let (events, memory) = waits.events(&[(&service, gate)], now);
        waits.commit(memory);
        events
            .iter()
            .map(|e| format!("{} {}", e.reason, e.message))
            .collect()
    }

    #[test]
    fn a_wait_is_recorded_when_it_begins_changes_kind_and_ends_not_at_each_step() {
        let mut waits = WaitEvents::default();
        let waiting = |reason: &str| Gate {
            waiting: vec![unmet(reason)],
            ..Default::default()
        };
        assert_eq!(
            step(&mut waits, Some(&waiting("0/2 replicas completed")), 1),
            ["Waiting service web: waiting for migrate (service_completed_successfully): 0/2 replicas completed"]
        );
        // Progress of the same wait records nothing more.
        assert!(step(&mut waits, Some(&waiting("1/2 replicas completed")), 2).is_empty());
        let failed = Gate {
            failed: vec![unmet("exited with code 3")],
            ..Default::default()
        };
        assert_eq!(
            step(&mut waits, Some(&failed), 3),
            ["DependencyFailed service web: dependency failed: migrate (service_completed_successfully): exited with code 3"]
        );
        assert!(step(&mut waits, Some(&failed), 4).is_empty());
        assert_eq!(
            step(&mut waits, Some(&Gate::default()), 5),
            ["DependenciesReady service web: its dependencies hold; creating its replicas"]
        );
        // Nothing held and nothing reported before: silence, with or without depends_on.
        assert!(step(&mut waits, Some(&Gate::default()), 6).is_empty());
        assert!(step(&mut waits, None, 7).is_empty());
    }

    #[test]
    fn events_of_one_run_get_distinct_ids_and_name_the_service() {
        let waits = WaitEvents::default();
        let a = web();
        let mut b = web();
        b.name = "api".into();
        let gate = Gate {
            waiting: vec![unmet("0/1 replicas completed")],
            ..Default::default()
        };
        let (events, _) = waits.events(&[(&a, Some(&gate)), (&b, Some(&gate))], 10);
        assert_eq!(events.len(), 2);
        assert_ne!(events[0].id, events[1].id);
        assert_eq!(events[1].object.kind, Kind::Service);
        assert_eq!(events[1].object.service.as_deref(), Some("api"));
        assert_eq!(events[1].object.app.as_deref(), Some("shop"));
    }
}
