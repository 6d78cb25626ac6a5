//! `GET /api/v1/events`: the store's change log as Server-Sent Events.
//!
//! The stream is the backlog after `since`, then live changes, with no gap and no duplicate:
//! subscribe first, read the backlog, then drop live changes the backlog already had. When a gap
//! cannot be avoided (the watcher lagged behind the broadcast buffer, or asked for compacted
//! history) the stream sends `reset` and ends, and the watcher re-lists.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures::stream::{self, Stream, StreamExt};
use hivemind_client::wire::event_name;
use hivemind_store::{Change, Store, StoreError};
use tokio::sync::broadcast::{self, error::RecvError};

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
    let live = store.subscribe();
    let since = match since {
        Some(since) => since,
        None => store.revision().await?,
    };
    let (backlog, reset) = match store.changes_since(since).await {
        Ok(changes) => (changes, false),
        Err(StoreError::Compacted { .. }) => (Vec::new(), true),
        Err(e) => return Err(e.into()),
    };
    let last = backlog.last().map_or(since, |c| c.revision);
    let head = stream::iter(backlog.into_iter().map(|c| Ok(change_event(&c))));
    let body: Events = if reset {
        Box::pin(stream::iter([Ok(reset_event("compacted"))]))
    } else {
        Box::pin(head.chain(live_events(live, last)))
    };
    // On shutdown the stream just ends; watchers reconnect from their last revision.
    let body: Events = Box::pin(body.take_until(stopped(shutdown)));
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Live changes newer than `backlog_end`; a `reset` and the end when the receiver lagged.
///
/// A transaction is either wholly in the backlog or wholly after it (the store commits and
/// reads under one lock), and the broadcast is in commit order, so comparing with the backlog's
/// last revision is enough, even though one transaction sends several changes of one revision.
fn live_events(
    rx: broadcast::Receiver<Change>,
    backlog_end: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    stream::unfold(Some(rx), move |state| async move {
        let mut rx = state?;
        loop {
            match rx.recv().await {
                Ok(change) if change.revision <= backlog_end => continue,
                Ok(change) => return Some((Ok(change_event(&change)), Some(rx))),
                Err(RecvError::Lagged(_)) => return Some((Ok(reset_event("lagged")), None)),
                Err(RecvError::Closed) => return None,
            }
        }
    })
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
