//! Health checks of the node's running replicas (Compose `healthcheck`, the image's
//! `HEALTHCHECK`, `x-hivemind` HTTP/TCP probes).
//!
//! One task per running replica with a check runs it at its pace (`probe`) and feeds the
//! result to that run's [`HealthMachine`] (`machine`, pure). [`Monitors`] is the table of those
//! runs, kept in the converger's state: each pass attaches every run's reported health to the
//! replica's status (so a report is sent only when a status changes), starts monitors for new
//! runs and drops those of runs that ended. An unhealthy run is restarted by the converger
//! (`plan`'s `Action::Restart`), once traffic has left it: [`DRAIN_GRACE_MS`] after the node's
//! assignment stopped listing it as an endpoint (connections forwarded just before finish), or
//! after [`DRAIN_WAIT_MS`] if the server does not answer.
//!
//! The converger's side of this (spawning the tasks, which need the agent's shared state) is
//! `converge::health_hook`.

pub mod machine;
pub mod probe;

use std::collections::HashMap;
use std::time::Duration;

use hivemind_types::healthcheck::ResolvedCheck;
use hivemind_types::{HealthStatus, ObservedReplica, ReplicaState};
use tokio::task::AbortHandle;

pub use machine::{HealthMachine, Outcome};

/// How long an unhealthy replica may wait for the endpoints to drop it before it is restarted
/// anyway (the server may be unreachable; the replica is failing either way).
pub const DRAIN_WAIT_MS: u64 = 3_000;

/// How long an unhealthy replica keeps running once traffic left it, so that connections the
/// data plane forwarded just before are answered rather than reset.
pub const DRAIN_GRACE_MS: u64 = 1_000;

/// A monitor to spawn: replica `id`'s run with process `pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub id: String,
    pub pid: u32,
    pub check: ResolvedCheck,
    /// Before the first check.
    pub first_delay: Duration,
}

/// One run's monitor.
#[derive(Debug)]
struct Entry {
    pid: u32,
    check: ResolvedCheck,
    machine: HealthMachine,
    /// The task running the checks; `None` once the run ended (its last health is kept for
    /// the status until a new run starts).
    task: Option<AbortHandle>,
    unhealthy_at: Option<u64>,
    /// When the unhealthy run was first seen out of the endpoints.
    unrouted_at: Option<u64>,
    restart_requested: bool,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The health of the node's replicas, one entry per replica whose current or last run had a
/// check.
#[derive(Debug, Default)]
pub struct Monitors {
    entries: HashMap<String, Entry>,
    /// A pass has run. The runs of the first one were started before this agent (live
    /// restore): their health is unknown, so they are checked at once rather than after an
    /// interval, lest a restarted agent take every healthy replica out of traffic for that long.
    primed: bool,
}

impl Monitors {
    /// Attaches each replica's health to its status and returns the monitors to spawn.
    /// `resolve` gives a replica's check (`None`: it has none); it is asked only for runs
    /// without a monitor yet. Replicas without a status are forgotten.
    pub fn sync(
        &mut self,
        statuses: &mut [ObservedReplica],
        resolve: impl Fn(&str) -> Option<ResolvedCheck>,
        now: u64,
    ) -> Vec<Start> {
        let adopted = !std::mem::replace(&mut self.primed, true);
        let mut starts = Vec::new();
        let mut seen = std::collections::HashSet::with_capacity(statuses.len());
        for status in statuses.iter_mut() {
            seen.insert(status.id.as_str());
            let running = match (status.state, status.pid) {
                (ReplicaState::Running, Some(pid)) => Some(pid),
                _ => None,
            };
            match running {
                Some(pid) if self.entries.get(&status.id).is_some_and(|e| e.pid == pid) => {}
                Some(pid) => match resolve(&status.id) {
                    Some(check) => {
                        let machine = HealthMachine::new(status.started_at.unwrap_or(now));
                        let first_delay = if adopted {
                            Duration::ZERO
                        } else {
                            machine.next_delay(&check, now)
                        };
                        starts.push(Start {
                            id: status.id.clone(),
                            pid,
                            check: check.clone(),
                            first_delay,
                        });
                        self.entries.insert(
                            status.id.clone(),
                            Entry {
                                pid,
                                check,
                                machine,
                                task: None,
                                unhealthy_at: None,
                                unrouted_at: None,
                                restart_requested: false,
                            },
                        );
                    }
                    None => {
                        self.entries.remove(&status.id);
                    }
                },
                None => {
                    // The run ended: stop checking, keep what it last found.
                    if let Some(task) = self.entries.get_mut(&status.id).and_then(|e| e.task.take())
                    {
                        task.abort();
                    }
                }
            }
            status.health = self
                .entries
                .get(&status.id)
                .map(|e| e.machine.reported().clone());
        }
        self.entries.retain(|id, _| seen.contains(id.as_str()));
        starts
    }

    /// Records the task running `start`'s checks (aborted when its run ends).
    pub fn set_task(&mut self, id: &str, pid: u32, task: AbortHandle) {
        match self.entries.get_mut(id) {
            Some(e) if e.pid == pid && e.task.is_none() => e.task = Some(task),
            _ => task.abort(),
        }
    }

    /// Takes a check's result for run `pid` of `id`: whether its status changed, and the delay
    /// before the next check; `None` when that run is no longer monitored (the task ends).
    pub fn observe(&mut self, id: &str, pid: u32, outcome: Outcome) -> Option<(bool, Duration)> {
        let entry = self.entries.get_mut(id).filter(|e| e.pid == pid)?;
        let at = outcome.at;
        let changed = entry.machine.observe(&entry.check, outcome);
        if changed && entry.machine.status() == HealthStatus::Unhealthy {
            entry.unhealthy_at = Some(at);
        } else if entry.machine.status() != HealthStatus::Unhealthy {
            entry.unhealthy_at = None;
            entry.unrouted_at = None;
        }
        Some((changed, entry.machine.next_delay(&entry.check, at)))
    }

    /// Unhealthy runs to restart now, each once: those traffic left [`DRAIN_GRACE_MS`] ago
    /// (`routed` says whether the node's assignment still lists the replica as an endpoint) or
    /// that waited [`DRAIN_WAIT_MS`]; and when to ask again for the others.
    pub fn restarts_due(
        &mut self,
        now: u64,
        routed: impl Fn(&str) -> bool,
    ) -> (Vec<String>, Option<u64>) {
        let mut due = Vec::new();
        let mut next: Option<u64> = None;
        for (id, e) in &mut self.entries {
            let Some(since) = e.unhealthy_at else {
                continue;
            };
            if e.restart_requested {
                continue;
            }
            if e.unrouted_at.is_none() && !routed(id) {
                e.unrouted_at = Some(now);
            }
            let at = match e.unrouted_at {
                Some(unrouted) => (unrouted + DRAIN_GRACE_MS).min(since + DRAIN_WAIT_MS),
                None => since + DRAIN_WAIT_MS,
            };
            if now >= at {
                e.restart_requested = true;
                due.push(id.clone());
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        due.sort();
        (due, next)
    }

    /// Stops every monitor (the agent stops).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
#[path = "monitors_tests.rs"]
mod tests;
