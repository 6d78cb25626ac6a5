//! Start ordering (Compose `depends_on`): whether a service's replicas may be created now.
//!
//! A dependent service's replicas are created only once every required dependency's condition
//! holds, over the dependency's replicas at its current revision (and as many as it wants):
//!
//! | condition | holds when every replica is |
//! |---|---|
//! | `service_started` | running (or completed: a one-shot that ran has started) |
//! | `service_healthy` | running, with a healthy check or none |
//! | `service_completed_successfully` | completed (exited 0, not restarted) |
//!
//! A dependency that can never get there (a replica exited for good with a non-zero code, a
//! one-shot that completed when it should become healthy) has *failed*: the dependent stays
//! held, and the reason names it. With `required: false`, a dependency that is missing or
//! failed is only a warning and holds nothing. With `restart: true`, the dependent's replicas
//! older than the dependency's newest are replaced, so a dependency that was updated (its
//! replicas replaced) restarts its dependents.
//!
//! Pure: the service controller passes what it knows of each dependency, and turns the gate
//! into held creations, replacements and events.

use std::fmt;

use hivemind_types::{
    Dependency, DependencyCondition, HealthStatus, ReplicaState, Service, ServiceMode,
};

/// What the planner needs of one replica of a dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaFacts {
    /// The replica runs the service's current revision (older ones are being replaced).
    pub current: bool,
    pub created_at: u64,
    /// As the agent last reported; `None` before its first report.
    pub state: Option<ReplicaState>,
    pub exit_code: Option<i32>,
    /// Its health check's verdict; `None` when the service has no check.
    pub health: Option<HealthStatus>,
}

/// A dependency as the store has it: the service and its replicas.
#[derive(Debug, Clone)]
pub struct DependencyFacts<'a> {
    pub service: &'a Service,
    pub replicas: Vec<ReplicaFacts>,
}

/// Why a dependency does not hold yet, or never will.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The dependency's service name.
    pub service: String,
    pub condition: DependencyCondition,
    /// What it lacks, for people: `0/1 replicas completed`, `exited with code 3`.
    pub reason: String,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.service,
            self.condition.as_str(),
            self.reason
        )
    }
}

/// The decision for one dependent service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gate {
    /// Required dependencies still on their way: creations wait.
    pub waiting: Vec<Unmet>,
    /// Required dependencies that failed for good: creations wait until they are fixed (a
    /// redeploy), and an event names them.
    pub failed: Vec<Unmet>,
    /// Optional (`required: false`) dependencies that are missing or failed: nothing waits.
    pub warnings: Vec<Unmet>,
    /// With `restart: true`: replicas created before this (the dependency's newest replica)
    /// are replaced.
    pub replace_created_before: Option<u64>,
}

impl Gate {
    /// Whether the service's replica creations must wait.
    pub fn holds(&self) -> bool {
        !self.waiting.is_empty() || !self.failed.is_empty()
    }

    /// One line for `ps`, events and logs: `waiting for migrate (service_completed_successfully):
    /// 0/1 replicas completed`.
    pub fn summary(&self) -> Option<String> {
        let list = |unmet: &[Unmet]| {
            unmet
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        match (self.failed.is_empty(), self.waiting.is_empty()) {
            (true, true) => None,
            (false, _) => Some(format!("dependency failed: {}", list(&self.failed))),
            (true, false) => Some(format!("waiting for {}", list(&self.waiting))),
        }
    }
}

/// Decides whether `service`'s replicas may be created, given `lookup(name)`: its dependency
/// of that name in the same app, or `None` when the app has no such service.
pub fn gate<'a>(service: &Service, lookup: &dyn Fn(&str) -> Option<DependencyFacts<'a>>) -> Gate {
    let mut gate = Gate::default();
    for (name, dep) in &service.spec.depends_on {
        let facts = lookup(name);
        if dep.restart {
            let newest = facts
                .iter()
                .flat_map(|f| f.replicas.iter())
                .filter(|r| r.current)
                .map(|r| r.created_at)
                .max();
            gate.replace_created_before = gate.replace_created_before.max(newest);
        }
        let verdict = match &facts {
            None => Verdict::Failed(format!("no service {name} in the app")),
            Some(facts) => verdict(dep, facts),
        };
        let unmet = |reason: String| Unmet {
            service: name.clone(),
            condition: dep.condition,
            reason,
        };
        match verdict {
            Verdict::Met => {}
            Verdict::Waiting(reason) => gate.waiting.push(unmet(reason)),
            Verdict::Failed(reason) if dep.required => gate.failed.push(unmet(reason)),
            Verdict::Failed(reason) => gate.warnings.push(unmet(reason)),
        }
    }
    gate
}

enum Verdict {
    Met,
    Waiting(String),
    Failed(String),
}

fn verdict(dep: &Dependency, facts: &DependencyFacts<'_>) -> Verdict {
    let spec = &facts.service.spec;
    let current: Vec<&ReplicaFacts> = facts.replicas.iter().filter(|r| r.current).collect();
    // A global service wants one per node; the controller places them, so any count will do.
    let wanted = match spec.mode {
        ServiceMode::Replicated => spec.replicas as usize,
        ServiceMode::Global => current.len().max(1),
    };
    if wanted == 0 {
        // Scaled to zero: there is nothing to wait for.
        return Verdict::Met;
    }
    // A replica that exited for good never gets there, whatever the condition.
    if let Some(r) = current
        .iter()
        .find(|r| r.state == Some(ReplicaState::Exited))
    {
        let code = r
            .exit_code
            .map_or_else(|| "exited".to_string(), |c| format!("exited with code {c}"));
        return Verdict::Failed(code);
    }
    let (good, word): (fn(&ReplicaFacts) -> bool, &str) = match dep.condition {
        DependencyCondition::ServiceStarted => (
            |r| {
                matches!(
                    r.state,
                    Some(ReplicaState::Running | ReplicaState::Completed)
                )
            },
            "running",
        ),
        DependencyCondition::ServiceHealthy => {
            if current
                .iter()
                .any(|r| r.state == Some(ReplicaState::Completed))
            {
                return Verdict::Failed("completed, so it can never be healthy".to_string());
            }
            (
                |r| {
                    r.state == Some(ReplicaState::Running)
                        && r.health.is_none_or(|h| h == HealthStatus::Healthy)
                },
                "healthy",
            )
        }
        DependencyCondition::ServiceCompletedSuccessfully => {
            (|r| r.state == Some(ReplicaState::Completed), "completed")
        }
    };
    let done = current.iter().filter(|r| good(r)).count();
    if spec.stopped {
        return Verdict::Waiting(format!("stopped by the user, {done}/{wanted} {word}"));
    }
    if done >= wanted && current.len() >= wanted {
        Verdict::Met
    } else {
        Verdict::Waiting(format!("{done}/{wanted} replicas {word}"))
    }
}

#[cfg(test)]
#[path = "depends_tests.rs"]
mod tests;
