//! Start order on the node: a replica whose service `depends_on` another is not created or
//! started while a local replica of that dependency has not reached the condition. After a
//! node or agent restart, every container needs starting at once; this makes dependents wait
//! for their local dependencies, as `docker compose up` does on one host.
//!
//! The control plane gates creation cluster-wide (`control::plan::depends`); this covers what
//! only the node sees. Dependencies with no replica on this node, and `required: false` ones,
//! do not hold anything here. Restarts after an exit are the restart policy's and are not held.
//! Pure: it reads the pass's own statuses.

use std::collections::BTreeMap;

use hivemind_types::{DependencyCondition, HealthStatus, ObservedReplica, Replica, ReplicaState};

use super::plan::{Action, Pass};

/// Removes from `pass` the creations and first starts of replicas whose local dependencies are
/// not there yet, and says so in their status.
pub(super) fn hold_for_dependencies(desired: &[Replica], pass: &mut Pass) {
    if desired.iter().all(|r| r.spec.depends_on.is_empty()) {
        return;
    }
    let status_of: BTreeMap<&str, &ObservedReplica> =
        pass.statuses.iter().map(|s| (s.id.as_str(), s)).collect();
    // (namespace, app, service) → the states of its replicas here.
    let mut local: BTreeMap<(&str, &str, &str), Vec<&ObservedReplica>> = BTreeMap::new();
    for r in desired {
        if let Some(status) = status_of.get(r.id.as_str()) {
            local
                .entry((&r.namespace, &r.app, &r.service))
                .or_default()
                .push(status);
        }
    }
    let mut held: BTreeMap<String, String> = BTreeMap::new();
    for r in desired {
        let waits: Vec<String> = r
            .spec
            .depends_on
            .iter()
            .filter(|(_, dep)| dep.required)
            .filter_map(|(name, dep)| {
                let replicas = local.get(&(r.namespace.as_str(), r.app.as_str(), name.as_str()))?;
                let met = replicas.iter().all(|s| condition_met(dep.condition, s));
                (!met).then(|| format!("{name} ({})", dep.condition.as_str()))
            })
            .collect();
        if !waits.is_empty() {
            held.insert(r.id.clone(), waits.join(", "));
        }
    }
    if held.is_empty() {
        return;
    }
    pass.actions.retain(|a| match a {
        Action::Create(r) => !held.contains_key(&r.id),
        // A restart after an exit is not held; a first start (nothing exited) is.
        Action::Start { id } => {
            !(held.contains_key(id)
                && status_of_state(&pass.statuses, id) == Some(ReplicaState::Starting))
        }
        Action::Restart { .. } | Action::Stop { .. } | Action::Remove { .. } => true,
    });
    for status in &mut pass.statuses {
        if status.state != ReplicaState::Starting {
            continue;
        }
        if let Some(waits) = held.get(&status.id) {
            status.message = format!("waiting for {waits}");
        }
    }
}

fn status_of_state(statuses: &[ObservedReplica], id: &str) -> Option<ReplicaState> {
    statuses.iter().find(|s| s.id == id).map(|s| s.state)
}

/// Whether one local replica of a dependency satisfies `condition`.
pub(super) fn condition_met(condition: DependencyCondition, status: &ObservedReplica) -> bool {
    match condition {
        // A one-shot dependency that ran and finished has started.
        DependencyCondition::ServiceStarted => {
            matches!(
                status.state,
                ReplicaState::Running | ReplicaState::Completed
            )
        }
        DependencyCondition::ServiceHealthy => {
            status.state == ReplicaState::Running
                && status
                    .health
                    .as_ref()
                    .is_none_or(|h| h.status == HealthStatus::Healthy)
        }
        DependencyCondition::ServiceCompletedSuccessfully => {
            status.state == ReplicaState::Completed
        }
    }
}
