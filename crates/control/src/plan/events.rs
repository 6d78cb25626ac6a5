//! Recorded events (`Kind::Event`, `hivemind events`): which events a change of a stored status
//! or node brings, and how they are written (aggregated, pruned).
//!
//! Events are derived, never reported as such: an agent reports each replica's recent exits
//! and its current create/start failure (`ObservedReplica::exits`, `failure`), the API stores
//! the status, and the events controller (`exec::events`) compares it with the status it saw
//! before: each exit or failure the previous one does not have is an event. A status written
//! twice therefore records nothing the second time. Node problems likewise: each one that
//! appears is a warning, each one that goes a `Resolved`.
//!
//! Writes prune in the same transaction (`hivemind_types::event::expired_keys`), so there is no
//! cleaner to run, and repeats within a window count up one event (like Kubernetes' event
//! correlator) instead of pushing everything else out.

use std::collections::{BTreeSet, HashMap};

use hivemind_types::event::{self, reason};
use hivemind_types::limits::human_bytes;
use hivemind_types::{
    Event, EventObject, EventType, ExitRecord, FailureRecord, Health, HealthStatus, Kind, Meta,
    NodeProblem, ObservedReplica, Replica, ReplicaState,
};

/// A failure message longer than this is cut in the event (a registry can answer with a page).
const MAX_MESSAGE_CHARS: usize = 1_000;

/// What the controller remembers of a status to tell what a later one brings: the exits'
/// and the failure's identities and the state, not the whole status (a cluster has many).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub state: Option<ReplicaState>,
    pub exit_code: Option<i32>,
    pub exits_at: Vec<u64>,
    pub failure_at: Option<u64>,
    /// The health status and when the check that set it ran.
    pub health: Option<(HealthStatus, Option<u64>)>,
}

impl Seen {
    pub fn of(status: &ObservedReplica) -> Seen {
        Seen {
            state: Some(status.state),
            exit_code: status.exit_code,
            exits_at: status.exits.iter().map(|e| e.at).collect(),
            failure_at: status.failure.as_ref().map(|f| f.at),
            health: status.health.as_ref().map(|h| (h.status, h.checked_at)),
        }
    }
}

/// Exits in `new` that `old` (the status seen before, if any) has not recorded.
///
/// An exit found by a restarted agent (`adopted`) may be one a previous agent already reported:
/// it is new only if the previous status does not already show the replica stopped with that
/// code. (If the replica was restarted and exited again with the same code while no agent was
/// running, that one exit goes unrecorded; nothing on the node can tell the two apart.)
pub fn new_exits<'a>(old: Option<&Seen>, new: &'a ObservedReplica) -> Vec<&'a ExitRecord> {
    // Never trust the client with bounds: an agent keeps at most this many.
    let excess = new.exits.len().saturating_sub(ExitRecord::MAX_KEPT);
    new.exits[excess..]
        .iter()
        .filter(|exit| {
            let Some(old) = old else { return true };
            if old.exits_at.contains(&exit.at) {
                return false;
            }
            let already_stopped = matches!(
                old.state,
                Some(ReplicaState::Exited | ReplicaState::Restarting | ReplicaState::Completed)
            ) && old.exit_code == Some(exit.exit_code);
            !(exit.adopted && already_stopped)
        })
        .collect()
}

/// The failure in `new`, unless `old` already had it.
fn new_failure<'a>(old: Option<&Seen>, new: &'a ObservedReplica) -> Option<&'a FailureRecord> {
    let failure = new.failure.as_ref()?;
    let known = old.is_some_and(|o| o.failure_at == Some(failure.at));
    (!known).then_some(failure)
}

/// The health transition in `new` worth an event: to healthy or unhealthy, by a check that
/// `old` has not seen (a new run starting over is no event; its first pass is).
fn new_health<'a>(old: Option<&Seen>, new: &'a ObservedReplica) -> Option<&'a Health> {
    let health = new.health.as_ref()?;
    let checked_at = health.checked_at?;
    if health.status == HealthStatus::Starting {
        return None;
    }
    let known = old.and_then(|o| o.health) == Some((health.status, Some(checked_at)));
    (!known).then_some(health)
}

/// Whether `new` brings any event over `old`: the executor reads the replica only then.
pub fn has_news(old: Option<&Seen>, new: &ObservedReplica) -> bool {
    !new_exits(old, new).is_empty()
        || new_failure(old, new).is_some()
        || new_health(old, new).is_some()
}

/// The events `new` brings over `old`: one per new exit (`Exited` or `OOMKilled`, and `BackOff`
/// when the restart waits), one per new failure (`Failed`). `replica` names the service and
/// the memory limit; without it (already removed) the events name only the replica and node.
pub fn replica_events(
    replica: Option<&Replica>,
    old: Option<&Seen>,
    new: &ObservedReplica,
) -> Vec<Event> {
    let mut events = Vec::new();
    for exit in new_exits(old, new) {
        events.extend(exit_events(replica, new, exit));
    }
    if let Some(failure) = new_failure(old, new) {
        events.push(failure_event(replica, new, failure));
    }
    if let Some(health) = new_health(old, new) {
        events.push(health_event(replica, new, health));
    }
    events
}

/// A health transition, with the output of the check that made it (bounded like exit lines).
fn health_event(replica: Option<&Replica>, status: &ObservedReplica, health: &Health) -> Event {
    let id = &status.id;
    let at = health.checked_at.unwrap_or_default();
    let object = replica_object(replica, status);
    let mut e = match health.status {
        HealthStatus::Unhealthy => event(
            at,
            EventType::Warning,
            reason::UNHEALTHY,
            object,
            format!(
                "replica {id} is unhealthy: {} health checks failed in a row; it leaves traffic and is restarted",
                health.failing_streak
            ),
        ),
        _ => event(
            at,
            EventType::Normal,
            reason::HEALTHY,
            object,
            format!("replica {id} is healthy: its health check passed"),
        ),
    };
    let lines: Vec<String> = health
        .last_output
        .chars()
        .take(Health::MAX_OUTPUT)
        .collect::<String>()
        .lines()
        .map(str::to_string)
        .collect();
    e.last_lines = ExitRecord::bound_lines(lines);
    e
}

fn replica_object(replica: Option<&Replica>, status: &ObservedReplica) -> EventObject {
    EventObject {
        kind: Kind::Replica,
        name: status.id.clone(),
        namespace: replica.map(|r| r.namespace.clone()),
        app: replica.map(|r| r.app.clone()),
        service: replica.map(|r| r.service.clone()),
        node: Some(status.node.clone()),
    }
}

fn event(
    time: u64,
    event_type: EventType,
    reason: &str,
    object: EventObject,
    message: String,
) -> Event {
    Event {
        id: Event::key(time, &object.name, reason),
        time,
        event_type,
        reason: reason.to_string(),
        object,
        message,
        exit_code: None,
        last_lines: Vec::new(),
        count: 1,
        first_time: None,
        meta: Meta::default(),
    }
}

/// The exit's event, and a `BackOff` event when its restart waits.
pub fn exit_events(
    replica: Option<&Replica>,
    status: &ObservedReplica,
    exit: &ExitRecord,
) -> Vec<Event> {
    let id = &status.id;
    let object = replica_object(replica, status);
    let (reason, event_type, mut message) = if exit.oom {
        let limit = replica
            .and_then(|r| r.spec.resources.memory_limit_bytes)
            .map(|b| format!(" (limit {})", human_bytes(b)))
            .unwrap_or_default();
        (
            reason::OOM_KILLED,
            EventType::Warning,
            format!(
                "replica {id} killed for memory{limit}, exit code {}",
                exit.exit_code
            ),
        )
    } else if exit.exit_code == 0 && exit.restart_delay_ms.is_none() {
        // Exit 0 and not restarted: a one-shot job (a migration) that is done.
        (
            reason::COMPLETED,
            EventType::Normal,
            format!("replica {id} completed (exit code 0)"),
        )
    } else {
        let event_type = match exit.exit_code {
            0 => EventType::Normal,
            _ => EventType::Warning,
        };
        (
            reason::EXITED,
            event_type,
            format!("replica {id} exited with code {}", exit.exit_code),
        )
    };
    if exit.adopted {
        message.push_str(" (found stopped when the agent started)");
    }
    let mut exited = event(exit.at, event_type, reason, object.clone(), message);
    exited.exit_code = Some(exit.exit_code);
    exited.last_lines = ExitRecord::bound_lines(exit.last_lines.clone());
    let mut events = vec![exited];
    if let Some(delay) = exit.restart_delay_ms.filter(|d| *d > 0) {
        // One millisecond after the exit: the back-off is decided on seeing the exit, and the
        // listing (ordered by time) must show it after the exit.
        events.push(event(
            exit.at + 1,
            EventType::Warning,
            reason::BACK_OFF,
            object,
            format!(
                "back-off {} restarting replica {id} after exit code {} (restart {})",
                duration(delay),
                exit.exit_code,
                exit.restarts + 1
            ),
        ));
    }
    events
}

fn failure_event(
    replica: Option<&Replica>,
    status: &ObservedReplica,
    failure: &FailureRecord,
) -> Event {
    let mut what: String = failure.message.chars().take(MAX_MESSAGE_CHARS).collect();
    if what.len() < failure.message.len() {
        what.push('…');
    }
    let retry = match failure.retry_in_ms {
        0 => String::new(),
        ms => format!(", retry in {}", duration(ms)),
    };
    event(
        failure.at,
        EventType::Warning,
        reason::FAILED,
        replica_object(replica, status),
        format!(
            "replica {} failed to start: {what} (attempt {}{retry})",
            status.id,
            failure.attempts.max(1)
        ),
    )
}

/// Events for node problems that appeared (warnings) or went (`Resolved`) between the node as
/// seen before and as written now. Several at once are stamped a millisecond apart, so ids
/// stay unique.
pub fn node_problem_events(
    node: &str,
    old: &[NodeProblem],
    new: &[NodeProblem],
    now_ms: u64,
) -> Vec<Event> {
    let appeared = new.iter().filter(|p| !old.contains(p)).map(|p| (p, false));
    let resolved = old.iter().filter(|p| !new.contains(p)).map(|p| (p, true));
    appeared
        .chain(resolved)
        .enumerate()
        .map(|(i, (problem, resolved))| {
            Event::node_problem(node, problem, resolved, now_ms + i as u64)
        })
        .collect()
}

/// The suffix of the keys of `event`'s object and reason: keys end in `.{name}.{reason}`.
fn key_suffix(event: &Event) -> String {
    format!(
        ".{}.{}",
        event.object.name,
        event.reason.to_ascii_lowercase()
    )
}

/// The stored events `events` may count up: for each aggregating event, the newest stored key
/// of its object and reason within the window. `keys` are the stored event keys, as listed
/// (ordered, hence oldest first). The executor reads these and passes them to [`write_plan`].
pub fn aggregation_candidates(events: &[Event], keys: &[String]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| event::aggregates(&e.reason))
        .filter_map(|e| latest_key(e, keys))
        .map(str::to_string)
        .collect()
}

fn latest_key<'k>(event: &Event, keys: &'k [String]) -> Option<&'k str> {
    let suffix = key_suffix(event);
    keys.iter()
        .rev()
        .take_while(|k| {
            event::key_time(k).is_some_and(|t| t + event::AGGREGATE_WINDOW_MS >= event.time)
        })
        .find(|k| k.ends_with(&suffix) && **k != event.id)
        .map(String::as_str)
}

/// What one write of events does: keys deleted (pruned or replaced by a count) and events put.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventWrites {
    pub delete: Vec<String>,
    pub put: Vec<Event>,
}

impl EventWrites {
    pub fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.put.is_empty()
    }
}

/// How `events` are written at `now_ms` over the stored `keys` (ordered), given the stored
/// events `stored` that [`aggregation_candidates`] named: repeats fold into counts, events
/// already past the age limit are dropped (an agent with a slow clock), and the oldest stored
/// events go so that at most `event::MAX_EVENTS` remain.
pub fn write_plan(
    events: Vec<Event>,
    keys: &[String],
    stored: &HashMap<String, Event>,
    now_ms: u64,
) -> EventWrites {
    let oldest_kept = now_ms.saturating_sub(event::MAX_AGE_MS);
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| e.time >= oldest_kept)
        .collect();
    if events.is_empty() {
        return EventWrites::default();
    }
    let (mut events, replaced) = aggregate(events, keys, stored);
    // One batch never holds more than the store keeps: the newest win (a flood of node
    // problems must not leave more than the cap, nor wipe the history for nothing).
    if events.len() > event::MAX_EVENTS {
        events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
        events.drain(..events.len() - event::MAX_EVENTS);
    }
    let adding = events.len().saturating_sub(replaced.len());
    let delete: Vec<String> = event::expired_keys(keys, adding, now_ms)
        .into_iter()
        .chain(replaced.iter().map(String::as_str))
        // A key about to be rewritten is not deleted in the same transaction.
        .filter(|key| !events.iter().any(|e| e.id == *key))
        .collect::<BTreeSet<&str>>()
        .into_iter()
        .map(str::to_string)
        .collect();
    EventWrites {
        delete,
        put: events,
    }
}

/// Folds repeats into counts: an event that repeats the latest stored one of its replica and
/// reason (see [`Event::repeats`]) replaces it with the count raised, and so does one that
/// repeats an earlier event of the same batch. Returns the events to write and the stored keys
/// they replace.
fn aggregate(
    events: Vec<Event>,
    keys: &[String],
    stored: &HashMap<String, Event>,
) -> (Vec<Event>, Vec<String>) {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut replaced = Vec::new();
    for event in events {
        if !event::aggregates(&event.reason) {
            out.push(event);
            continue;
        }
        if let Some(i) = out.iter().rposition(|e| event.repeats(e)) {
            let earlier = out.remove(i);
            out.push(event.counting(&earlier));
            continue;
        }
        match latest_key(&event, keys).and_then(|k| stored.get(k)) {
            Some(earlier) if event.repeats(earlier) && !replaced.contains(&earlier.id) => {
                replaced.push(earlier.id.clone());
                out.push(event.counting(earlier));
            }
            _ => out.push(event),
        }
    }
    (out, replaced)
}

/// `800ms`, `2s`, `5m`, `1m30s`.
fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms}ms"),
        _ if ms < 60_000 => format!("{}s", ms.div_ceil(1000)),
        _ => {
            let secs = ms.div_ceil(1000);
            match secs % 60 {
                0 => format!("{}m", secs / 60),
                s => format!("{}m{s}s", secs / 60),
            }
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
