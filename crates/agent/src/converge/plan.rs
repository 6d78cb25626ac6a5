//! The agent's planner: the node's assignment and what containerd runs → actions and statuses.
//!
//! Pure and synchronous: time comes in as `now` (Unix ms), and the only state it touches is the
//! agent's own per-replica bookkeeping (`LocalState`), which it updates as it observes exits.
//! The restart policy and its back-off live here, like kubelet's container restarts in a pod:
//! `max_attempts` counts restarts (a run of at least the policy's `window` starts the count
//! afresh), an exit 0 that is not restarted is `Completed` (a one-shot job), a replica whose
//! service the user stopped is stopped and keeps its container, and first starts wait for
//! local dependencies (`start_order`).

use std::collections::{BTreeMap, BTreeSet};

use hivemind_types::limits::human_bytes;
use hivemind_types::{ExitRecord, FailureRecord, ObservedReplica, Replica, ReplicaState};

use hivemind_runtime::{ContainerInfo, TaskState};

/// Back-off between restarts grows from this (or the policy's delay, if longer)...
const BACKOFF_BASE_MS: u64 = 1_000;
/// ...and is capped here, as kubelet caps CrashLoopBackOff.
const BACKOFF_CAP_MS: u64 = 5 * 60 * 1_000;
/// A replica that ran this long before exiting starts its back-off afresh.
const BACKOFF_RESET_AFTER_MS: u64 = 10 * 60 * 1_000;
/// Default stop settings for containers whose replica the agent never saw (adopted, then removed).
const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";
const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// What the agent remembers about one replica between passes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalReplica {
    /// Restarts done under the restart policy (reported as `restarts`).
    pub restarts: u32,
    /// Restarts that count towards the policy's `max_attempts`: all of them, except that a run
    /// of at least the policy's `window` was a successful restart and starts the count afresh.
    pub attempts: u32,
    /// The replica was seen stopped by the user (`hivemind stop`): when it is started again,
    /// the task it left is not an exit to handle under the restart policy.
    pub user_stopped: bool,
    /// When the current run started (Unix ms), if known.
    pub started_at: Option<u64>,
    /// The exit being handled: (exit code, seen at).
    pub exit: Option<(i32, u64)>,
    /// The last create/start failure and when it happened.
    pub error: Option<(String, u64)>,
    /// Consecutive create/start failures, for their back-off.
    pub failures: u32,
    /// Earliest time of the next start attempt (restart or retry after a failure).
    pub next_attempt_at: Option<u64>,
    /// containerd reported an out-of-memory kill since the last start.
    pub oom_killed: bool,
    /// The replica as last assigned, kept so a removal knows its stop signal and grace period.
    pub stop_signal: Option<String>,
    pub stop_grace_ms: Option<u64>,
    /// The most recent exits, oldest first (at most `ExitRecord::MAX_KEPT`), reported with the
    /// status so that the server records each as an event. Their `last_lines` are filled in by
    /// the converger after the pass (reading log files is I/O, which the planner does not do).
    pub exits: Vec<ExitRecord>,
    /// Its health check failed `retries` times and traffic left it (`health`): the next pass
    /// stops the run for the restart policy to start it again, as Swarm does.
    pub unhealthy: bool,
    /// The exit code of that stop. The stop deletes the task, so a pass that finds no task
    /// takes this as the run's exit (recorded, restarted with the policy's back-off).
    pub stopped_exit: Option<i32>,
}

pub type LocalState = BTreeMap<String, LocalReplica>;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the container and start its task.
    Create(Box<Replica>),
    /// Start a task for an existing container (a restart when it ran before).
    Start { id: String },
    /// Stop a running container that is unhealthy (signal, grace, SIGKILL), keeping it for the
    /// restart policy.
    Restart {
        id: String,
        signal: String,
        grace_ms: u64,
    },
    /// Stop the task (signal, grace, SIGKILL) and keep the container: its service was stopped
    /// by the user (`hivemind stop`), and `hivemind start` starts it again.
    Stop {
        id: String,
        signal: String,
        grace_ms: u64,
    },
    /// Stop (signal, grace, SIGKILL) and remove a container that is no longer desired.
    Remove {
        id: String,
        signal: String,
        grace_ms: u64,
    },
}

impl Action {
    pub fn id(&self) -> &str {
        match self {
            Action::Create(r) => &r.id,
            Action::Start { id }
            | Action::Restart { id, .. }
            | Action::Stop { id, .. }
            | Action::Remove { id, .. } => id,
        }
    }
}

/// The result of one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    pub actions: Vec<Action>,
    /// One status per desired replica, for the report.
    pub statuses: Vec<ObservedReplica>,
    /// When the planner wants to run again even if nothing changes (a back-off expiring).
    pub wake_at: Option<u64>,
    /// Replicas with an exit first seen in this pass: the converger attaches their last log
    /// lines to the newest `ExitRecord`.
    pub new_exits: Vec<String>,
}

pub fn plan(
    node: &str,
    desired: &[Replica],
    containers: &[ContainerInfo],
    in_flight: &BTreeSet<String>,
    local: &mut LocalState,
    now: u64,
) -> Pass {
    let mut pass = Pass::default();
    let by_id: BTreeMap<&str, &ContainerInfo> =
        containers.iter().map(|c| (c.id.as_str(), c)).collect();
    let desired_ids: BTreeSet<&str> = desired.iter().map(|r| r.id.as_str()).collect();

    for replica in desired {
        let state = local.entry(replica.id.clone()).or_default();
        state.stop_signal = Some(replica.spec.stop_signal.clone());
        state.stop_grace_ms = Some(replica.spec.stop_grace_period_ms);
        let mut status = ObservedReplica {
            id: replica.id.clone(),
            node: node.to_string(),
            state: ReplicaState::Starting,
            pid: None,
            exit_code: None,
            restarts: state.restarts,
            message: String::new(),
            started_at: state.started_at,
            ip: None,
            exits: Vec::new(),
            failure: None,
            health: None,
            meta: Default::default(),
        };
        if in_flight.contains(&replica.id) {
            pass.statuses.push(with_history(status, state));
            continue;
        }
        let container = by_id.get(replica.id.as_str());
        let task = container.and_then(|c| c.task);
        if replica.spec.stopped {
            plan_stopped(replica, state, task, &mut status, &mut pass);
            pass.statuses.push(with_history(status, state));
            continue;
        }
        if state.user_stopped && !matches!(task, Some(TaskState::Running { .. })) {
            // Started again after `hivemind stop`: what the stop left is no exit.
            pass.actions.push(match container {
                None => Action::Create(Box::new(replica.clone())),
                Some(_) => Action::Start {
                    id: replica.id.clone(),
                },
            });
            pass.statuses.push(with_history(status, state));
            continue;
        }
        match (container, task) {
            (_, Some(TaskState::Running { pid })) => {
                state.user_stopped = false;
                state.exit = None;
                state.error = None;
                state.failures = 0;
                state.next_attempt_at = None;
                let started = *state.started_at.get_or_insert(now);
                if now.saturating_sub(started) >= BACKOFF_RESET_AFTER_MS {
                    // Healthy for long enough: forget earlier crashes for the back-off.
                    state.restarts = 0;
                }
                status.state = ReplicaState::Running;
                status.pid = Some(pid);
                status.restarts = state.restarts;
                status.started_at = state.started_at;
                if state.unhealthy {
                    status.message = "unhealthy, restarting".to_string();
                    pass.actions.push(Action::Restart {
                        id: replica.id.clone(),
                        signal: replica.spec.stop_signal.clone(),
                        grace_ms: replica.spec.stop_grace_period_ms,
                    });
                }
            }
            (Some(_), None) if state.stopped_exit.is_some() => {
                // Stopped for being unhealthy: an exit like any other.
                let code = state.stopped_exit.unwrap_or(137);
                plan_exited(replica, state, code, now, &mut status, &mut pass);
            }
            (Some(_), Some(TaskState::Stopped { exit_code })) => {
                plan_exited(replica, state, exit_code, now, &mut status, &mut pass);
            }
            (container, _) => {
                // Absent, or present without a running task (created but never started, or a
                // task in an unknown state): (re)try, unless a failure's back-off is pending.
                if let Some((message, _)) = &state.error {
                    if let Some(at) = state.next_attempt_at.filter(|at| *at > now) {
                        status.state = ReplicaState::Failed;
                        status.message = format!("{message} (retry in {})", secs(at - now));
                        pass.wake_at = min_opt(pass.wake_at, at);
                        pass.statuses.push(with_history(status, state));
                        continue;
                    }
                }
                pass.actions.push(match container {
                    None => Action::Create(Box::new(replica.clone())),
                    Some(_) => Action::Start {
                        id: replica.id.clone(),
                    },
                });
            }
        }
        pass.statuses.push(with_history(status, state));
    }

    for c in containers {
        if desired_ids.contains(c.id.as_str()) || in_flight.contains(&c.id) {
            continue;
        }
        let known = local.get(&c.id);
        pass.actions.push(Action::Remove {
            id: c.id.clone(),
            signal: known
                .and_then(|l| l.stop_signal.clone())
                .unwrap_or_else(|| DEFAULT_STOP_SIGNAL.to_string()),
            grace_ms: known
                .and_then(|l| l.stop_grace_ms)
                .unwrap_or(DEFAULT_STOP_GRACE_MS),
        });
    }
    super::start_order::hold_for_dependencies(desired, &mut pass);
    // Forget replicas that are neither desired nor present any more.
    let present: BTreeSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    local.retain(|id, _| {
        desired_ids.contains(id.as_str()) || present.contains(id.as_str()) || in_flight.contains(id)
    });
    pass
}

fn plan_exited(
    replica: &Replica,
    state: &mut LocalReplica,
    exit_code: i32,
    now: u64,
    status: &mut ObservedReplica,
    pass: &mut Pass,
) {
    status.exit_code = Some(exit_code);
    let policy = &replica.spec.restart;
    let wants_restart = |attempts: u32| {
        policy.condition.restarts_after(exit_code)
            && policy.max_attempts.is_none_or(|max| attempts < max)
    };
    if state.exit.is_none() {
        // First time this exit is seen: decide when to restart, and record it.
        let ran_for = state.started_at.map(|s| now.saturating_sub(s)).unwrap_or(0);
        if ran_for >= BACKOFF_RESET_AFTER_MS {
            state.restarts = 0;
        }
        // Swarm's window: a run that lasted it was a restart that worked.
        if state.started_at.is_some() && policy.window_ms.is_some_and(|w| ran_for >= w) {
            state.attempts = 0;
        }
        let delay = restart_delay(policy.delay_ms, state.restarts);
        state.exits.push(ExitRecord {
            exit_code,
            at: now,
            oom: state.oom_killed,
            restarts: state.restarts,
            restart_delay_ms: wants_restart(state.attempts).then_some(delay),
            // Every run this agent started has a start time; an exit of a run without one
            // happened before this agent was there to see it.
            adopted: state.started_at.is_none(),
            last_lines: Vec::new(),
        });
        let excess = state.exits.len().saturating_sub(ExitRecord::MAX_KEPT);
        state.exits.drain(..excess);
        pass.new_exits.push(replica.id.clone());
        state.exit = Some((exit_code, now));
        state.started_at = None;
        state.next_attempt_at = Some(now + delay);
    } else if state.oom_killed {
        // containerd's OOM event can arrive after the pass that saw the exit.
        if let (Some(last), Some((_, seen))) = (state.exits.last_mut(), state.exit) {
            if last.at == seen {
                last.oom = true;
            }
        }
    }
    let wants_restart = wants_restart(state.attempts);
    // Say why when the kernel killed it for memory: a bare 137 reads like any SIGKILL.
    let exited = if state.oom_killed {
        let limit = replica.spec.resources.memory_limit_bytes;
        let limit = limit
            .map(|b| format!(" {}", human_bytes(b)))
            .unwrap_or_default();
        format!("OOM-killed (memory limit{limit}), exit code {exit_code}")
    } else {
        format!("exited with code {exit_code}")
    };
    if !wants_restart {
        // Exit 0 under a policy that does not restart it: a one-shot job that is done.
        if exit_code == 0 && !state.oom_killed {
            status.state = ReplicaState::Completed;
            status.message = "completed (exit code 0)".to_string();
            return;
        }
        status.state = ReplicaState::Exited;
        status.message = match policy.max_attempts {
            Some(max) if policy.condition.restarts_after(exit_code) => {
                format!("{exited}; gave up after {max} restarts (max_attempts)")
            }
            _ => exited,
        };
        return;
    }
    let at = state.next_attempt_at.unwrap_or(now);
    if at <= now {
        pass.actions.push(Action::Start {
            id: replica.id.clone(),
        });
        status.state = ReplicaState::Restarting;
        status.message = format!("{exited}, restarting");
    } else {
        status.state = ReplicaState::Restarting;
        status.message = format!("crash-loop: {exited} (restart in {})", secs(at - now));
        pass.wake_at = min_opt(pass.wake_at, at);
    }
}

/// A replica whose service the user stopped: stop a running task (keeping the container), and
/// report it stopped. Its exit is the stop's doing, so it is not handled as one.
fn plan_stopped(
    replica: &Replica,
    state: &mut LocalReplica,
    task: Option<TaskState>,
    status: &mut ObservedReplica,
    pass: &mut Pass,
) {
    state.user_stopped = true;
    state.exit = None;
    state.started_at = None;
    state.next_attempt_at = None;
    state.error = None;
    state.failures = 0;
    status.started_at = None;
    match task {
        Some(TaskState::Running { .. }) => {
            pass.actions.push(Action::Stop {
                id: replica.id.clone(),
                signal: replica.spec.stop_signal.clone(),
                grace_ms: replica.spec.stop_grace_period_ms,
            });
            status.state = ReplicaState::Stopped;
            status.message = "stopping (hivemind stop)".to_string();
        }
        _ => {
            status.state = ReplicaState::Stopped;
            status.message = "stopped by the user (hivemind start starts it)".to_string();
        }
    }
}

/// Delay before restart number `restarts + 1`: the first restart waits only the policy's delay
/// (0 by default, so a killed replica is back at once); later ones back off exponentially.
pub fn restart_delay(policy_delay_ms: u64, restarts: u32) -> u64 {
    if restarts == 0 {
        return policy_delay_ms;
    }
    let base = policy_delay_ms.max(BACKOFF_BASE_MS);
    base.saturating_mul(1u64 << (restarts - 1).min(20))
        .min(BACKOFF_CAP_MS)
}

/// Delay before retrying a failed create/start after `failures` consecutive failures.
pub fn failure_delay(failures: u32) -> u64 {
    restart_delay(0, failures.max(1))
}

/// `status` with the replica's recent exits and its current failure, for the server to record.
fn with_history(mut status: ObservedReplica, state: &LocalReplica) -> ObservedReplica {
    status.exits = state.exits.clone();
    status.failure = state.error.as_ref().map(|(message, at)| FailureRecord {
        message: message.clone(),
        at: *at,
        attempts: state.failures,
        retry_in_ms: state
            .next_attempt_at
            .map_or(0, |next| next.saturating_sub(*at)),
    });
    status
}

fn secs(ms: u64) -> String {
    format!("{}s", ms.div_ceil(1000))
}

fn min_opt(a: Option<u64>, b: u64) -> Option<u64> {
    Some(a.map_or(b, |a| a.min(b)))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_lifecycle_tests.rs"]
mod lifecycle_tests;
