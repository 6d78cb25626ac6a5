//! Recorded events (`Kind::Event`, `hivemind events`): made from what agents report, kept
//! bounded, listed with filters.
//!
//! Events are derived, never reported as such: an agent reports each replica's recent exits and
//! its current create/start failure (`ObservedReplica::exits`, `failure`), and the report's
//! transaction adds an event for each one the stored status does not have yet. A report sent
//! twice therefore records nothing the second time, and a quiet report (nothing new) reads no
//! more than before and writes no event. Writers prune in the same transaction
//! (`hivemind_types::event::expired_keys`), so there is no cleaner to run.
//!
//! This module decides what to record and how to say it; it writes nothing itself. Callers put
//! the returned operations into their own transaction.

use hivemind_client::wire::EventFilter;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::event::{self, reason};
use hivemind_types::limits::human_bytes;
use hivemind_types::{
    Event, EventObject, EventType, ExitRecord, FailureRecord, Kind, Meta, NodeProblem,
    ObservedReplica, Replica, ReplicaState,
};

use crate::error::ApiError;

/// A failure message longer than this is cut in the event (a registry can answer with a page).
const MAX_MESSAGE_CHARS: usize = 1_000;

/// The form a reported status is stored in: without the exits' log lines, which live in the
/// events. Keeps `ReplicaStatus` objects (and every change-log entry of them) small, and lets
/// a repeated report compare equal to what is stored.
pub(crate) fn stored_form(status: &ObservedReplica) -> ObservedReplica {
    let mut stored = status.clone();
    // Never trust the client with bounds: an agent keeps at most this many.
    let excess = stored.exits.len().saturating_sub(ExitRecord::MAX_KEPT);
    stored.exits.drain(..excess);
    for exit in &mut stored.exits {
        exit.last_lines.clear();
    }
    stored
}

/// Exits in `new` that `old` (the stored status, if any) has not recorded.
///
/// An exit found by a restarted agent (`adopted`) may be one a previous agent already reported:
/// it is new only if the stored status does not already show the replica stopped with that
/// code. (If the replica was restarted and exited again with the same code while no agent was
/// running, that one exit goes unrecorded; nothing on the node can tell the two apart.)
pub(crate) fn new_exits<'a>(
    old: Option<&ObservedReplica>,
    new: &'a ObservedReplica,
) -> Vec<&'a ExitRecord> {
    let excess = new.exits.len().saturating_sub(ExitRecord::MAX_KEPT);
    new.exits[excess..]
        .iter()
        .filter(|exit| {
            let Some(old) = old else { return true };
            if old.exits.iter().any(|o| o.at == exit.at) {
                return false;
            }
            let already_stopped =
                matches!(old.state, ReplicaState::Exited | ReplicaState::Restarting)
                    && old.exit_code == Some(exit.exit_code);
            !(exit.adopted && already_stopped)
        })
        .collect()
}

/// The failure in `new`, unless `old` already recorded it.
fn new_failure<'a>(
    old: Option<&ObservedReplica>,
    new: &'a ObservedReplica,
) -> Option<&'a FailureRecord> {
    let failure = new.failure.as_ref()?;
    let known = old
        .and_then(|o| o.failure.as_ref())
        .is_some_and(|o| o.at == failure.at);
    (!known).then_some(failure)
}

/// The events `new` brings over `old`: one per new exit (`Exited` or `OOMKilled`, and `BackOff`
/// when the restart waits), one per new failure (`Failed`). Reads the replica object only when
/// there is something to record.
pub(crate) async fn replica_events(
    store: &Store,
    old: Option<&ObservedReplica>,
    new: &ObservedReplica,
) -> Result<Vec<Event>, ApiError> {
    let exits = new_exits(old, new);
    let failure = new_failure(old, new);
    if exits.is_empty() && failure.is_none() {
        return Ok(Vec::new());
    }
    let replica: Option<Replica> = store.get(Kind::Replica, &new.id).await?;
    let mut events = Vec::new();
    for exit in exits {
        events.extend(exit_events(replica.as_ref(), new, exit));
    }
    if let Some(failure) = failure {
        events.push(failure_event(replica.as_ref(), new, failure));
    }
    Ok(events)
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

/// The exit's event, and a `BackOff` event when its restart waits.
pub(crate) fn exit_events(
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
    let mut events = vec![Event {
        id: Event::key(exit.at, id, reason),
        time: exit.at,
        event_type,
        reason: reason.to_string(),
        object: object.clone(),
        message,
        exit_code: Some(exit.exit_code),
        last_lines: ExitRecord::bound_lines(exit.last_lines.clone()),
        count: 1,
        first_time: None,
        meta: Meta::default(),
    }];
    if let Some(delay) = exit.restart_delay_ms.filter(|d| *d > 0) {
        // One millisecond after the exit: the back-off is decided on seeing the exit, and the
        // listing (ordered by time) must show it after the exit.
        let time = exit.at + 1;
        events.push(Event {
            id: Event::key(time, id, reason::BACK_OFF),
            time,
            event_type: EventType::Warning,
            reason: reason::BACK_OFF.to_string(),
            object,
            message: format!(
                "back-off {} restarting replica {id} after exit code {} (restart {})",
                duration(delay),
                exit.exit_code,
                exit.restarts + 1
            ),
            exit_code: None,
            last_lines: Vec::new(),
            count: 1,
            first_time: None,
            meta: Meta::default(),
        });
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
    Event {
        id: Event::key(failure.at, &status.id, reason::FAILED),
        time: failure.at,
        event_type: EventType::Warning,
        reason: reason::FAILED.to_string(),
        object: replica_object(replica, status),
        message: format!(
            "replica {} failed to start: {what} (attempt {}{retry})",
            status.id,
            failure.attempts.max(1)
        ),
        exit_code: None,
        last_lines: Vec::new(),
        count: 1,
        first_time: None,
        meta: Meta::default(),
    }
}

/// The operations that write `events` and prune old ones, for the caller's transaction. Events
/// already past the age limit are not written at all (an agent with a slow clock).
/// Events for node problems that appeared (warnings) or went (`Resolved`) between the stored
/// node and its new report. A repeated report finds the stored node already updated, so it
/// records nothing again. Several at once are stamped a millisecond apart: ids stay unique.
pub(crate) fn node_problem_events(
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

pub async fn write_ops(
    store: &Store,
    events: Vec<Event>,
    now_ms: u64,
) -> Result<Vec<Op>, ApiError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let oldest_kept = now_ms.saturating_sub(event::MAX_AGE_MS);
    let events: Vec<Event> = events
        .into_iter()
        .filter(|e| e.time >= oldest_kept)
        .collect();
    let keys = store.keys(Kind::Event, "").await?;
    let (events, replaced) = aggregate(store, &keys, events).await?;
    let adding = events.len().saturating_sub(replaced.len());
    let mut ops: Vec<Op> = event::expired_keys(&keys, adding, now_ms)
        .into_iter()
        .chain(replaced.iter().map(String::as_str))
        // A key about to be rewritten is not deleted in the same transaction.
        .filter(|key| !events.iter().any(|e| e.id == *key))
        .collect::<std::collections::BTreeSet<&str>>()
        .into_iter()
        .map(|key| Op::delete(Kind::Event, key, Expect::Any))
        .collect();
    for e in &events {
        ops.push(Op::put(Kind::Event, e.id.clone(), e, Expect::Any));
    }
    Ok(ops)
}

/// Folds repeats into counts: an event that repeats the latest stored one of its replica and
/// reason (see [`Event::repeats`]) replaces it with the count raised, and so does one that
/// repeats an earlier event of the same batch. Returns the events to write and the stored keys
/// they replace.
async fn aggregate(
    store: &Store,
    keys: &[String],
    events: Vec<Event>,
) -> Result<(Vec<Event>, Vec<String>), ApiError> {
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
        // Keys end in `.{name}.{reason}` and sort by time: the newest match is the last.
        let suffix = format!(
            ".{}.{}",
            event.object.name,
            event.reason.to_ascii_lowercase()
        );
        let latest = keys
            .iter()
            .rev()
            .take_while(|k| {
                event::key_time(k).is_some_and(|t| t + event::AGGREGATE_WINDOW_MS >= event.time)
            })
            .find(|k| k.ends_with(&suffix) && **k != event.id);
        let stored = match latest {
            Some(key) => store.get::<Event>(Kind::Event, key).await?,
            None => None,
        };
        match stored {
            Some(earlier) if event.repeats(&earlier) => {
                replaced.push(earlier.id.clone());
                out.push(event.counting(&earlier));
            }
            _ => out.push(event),
        }
    }
    Ok((out, replaced))
}

/// Recorded events in `namespace` matching `filter`, oldest first; with `limit`, the newest
/// that many. Node events belong to no namespace and show unless the filter names an app,
/// service or replica.
pub async fn list(
    store: &Store,
    namespace: &str,
    filter: &EventFilter,
) -> Result<Vec<Event>, ApiError> {
    let by_object = filter.app.is_some() || filter.service.is_some() || filter.replica.is_some();
    let is = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    let mut events: Vec<Event> = store
        .list::<Event>(Kind::Event, "")
        .await?
        .into_iter()
        .filter(|e| match &e.object.namespace {
            Some(ns) => ns == namespace,
            None => !by_object,
        })
        .filter(|e| {
            is(&filter.app, &e.object.app)
                && is(&filter.service, &e.object.service)
                && filter
                    .replica
                    .as_ref()
                    .is_none_or(|r| e.object.kind == Kind::Replica && &e.object.name == r)
                && filter.event_type.is_none_or(|t| t == e.event_type)
        })
        .collect();
    // Keys sort by time, and so does the listing; the sort only matters for equal times
    // written by different clocks.
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    if let Some(limit) = filter.limit {
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
    }
    Ok(events)
}

/// The `limit` a request may ask for.
pub(crate) fn check_limit(limit: u64) -> Result<usize, ApiError> {
    if limit == 0 || limit > event::MAX_EVENTS as u64 {
        return Err(ApiError::bad_request(
            "limit",
            format!(
                "limit: {limit} is out of range (1 to {})",
                event::MAX_EVENTS
            ),
            format!(
                "pass a limit from 1 to {}, or none for all",
                event::MAX_EVENTS
            ),
        ));
    }
    Ok(limit as usize)
}

/// The `type` a request may ask for.
pub(crate) fn parse_type(value: &str) -> Result<EventType, ApiError> {
    EventType::parse(value).ok_or_else(|| {
        ApiError::bad_request(
            "type",
            format!("type: {value:?} is not an event type"),
            "pass type=normal or type=warning",
        )
    })
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
mod tests;
