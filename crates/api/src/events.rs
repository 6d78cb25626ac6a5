//! `GET /api/v1/events`: the store's change log as Server-Sent Events.
//!
//! The stream is the store's watch from `since` (the backlog, then live changes, with no gap and
//! no duplicate), one `change` event per changed object. When `since` is older than the
//! compacted history the stream sends `reset` and ends, and the watcher re-lists.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::future;
use futures::stream::{self, Stream, StreamExt};
use hivemind_client::wire::event_name;
use hivemind_store::{Change, Store, WatchEvent};

use crate::error::ApiError;
use crate::shutdown::{stopped, Shutdown};

/// Often enough that idle proxies and load balancers keep the connection open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// Events after revision `since`; `None` means from now on.
pub(crate) async fn change_stream(
    store: &Store,
    since: Option<u64>,
    shutdown: Option<Shutdown>,
) -> Result<impl IntoResponse, ApiError> {
    let current = store.revision().await?;
    let since = match since {
        // A revision the store has not reached is a client error, not "everything": it used to
        // wrap to -1 inside the store and replay the whole log.
        Some(since) if since > current => {
            return Err(ApiError::bad_request(
                "since",
                format!("since: revision {since} is after the store's current revision {current}"),
                "pass the id of the last event you received, or leave since out for new \
                 changes only",
            ))
        }
        Some(since) => since,
        None => current,
    };
    // The store's watch pages through history and recovers from lag itself; only compaction
    // ends it, and the watcher re-lists. Each transaction's changes become events one at a
    // time, as the client takes them: a watcher holds at most the transaction being sent, and a
    // slow client slows its own stream down instead of piling events up here.
    let body = store.watch(since).flat_map(|event| match event {
        // Credentials stay out of the stream: their hashes are nobody's business; and so do
        // secrets, sealed as they are.
        WatchEvent::Txn { changes, .. } => stream::iter(changes)
            .filter(|c| {
                future::ready(!matches!(
                    c.kind,
                    hivemind_types::Kind::Token | hivemind_types::Kind::Secret
                ))
            })
            .map(|c| Ok(change_event(&c)))
            .left_stream(),
        WatchEvent::Compacted { .. } => {
            stream::once(future::ready(Ok(reset_event("compacted")))).right_stream()
        }
    });
    // Each event costs its connection's task a unit of tokio's cooperative budget, so that the
    // task yields every so many events. Without it a watcher whose client reads as fast as it
    // is written never yielded: only socket writes count against the budget, and hyper buffers
    // hundreds of events per write, so ten watchers of a long backlog kept `/healthz` and every
    // other connection waiting for seconds.
    let body = body.then(|event| async move {
        tokio::task::coop::consume_budget().await;
        event
    });
    // On shutdown the stream just ends; watchers reconnect from their last revision.
    let body: Events = Box::pin(body.take_until(stopped(shutdown)));
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

fn change_event(change: &Change) -> Event {
    let data = serde_json::to_string(change).unwrap_or_else(|_| "{}".to_string());
    Event::default()
        .event(event_name::CHANGE)
        .id(change.revision.to_string())
        .data(data)
}

/// A `reset` says why in its data; the data also must not be empty, because SSE clients drop
/// events without data.
fn reset_event(reason: &str) -> Event {
    Event::default()
        .event(event_name::RESET)
        .data(serde_json::json!({ "reason": reason }).to_string())
}
