//! Recorded events (`Kind::Event`, `hivemind events`): listed with filters.
//!
//! The API only lists them. Which events a report brings (exits, failures, node problems),
//! how repeats count up and how the table stays bounded is the control plane's decision
//! (`hivemind_control::plan::events`); the events controller writes them from the statuses
//! and nodes the report stores.

use hivemind_client::wire::EventFilter;
use hivemind_store::Store;
use hivemind_types::event;
use hivemind_types::{Event, EventType, Kind};

use crate::error::ApiError;

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

#[cfg(test)]
mod tests;
