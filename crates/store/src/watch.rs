//! What a watcher receives: one item per committed transaction, or the signal to re-list.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::Change;

#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// All changes of one committed transaction (same revision), in op order. One item even for a
    /// 100,000-op transaction, so nothing is lost to a bounded channel.
    Txn { revision: u64, changes: Vec<Change> },
    /// The history after the watch's `from` was compacted up to `compacted`: the watcher must
    /// re-list and watch again from the current revision. Always the last item.
    Compacted { compacted: u64 },
}

/// A watch: every transaction committed after `from`, in order, then live ones
/// (see [`Store::watch`](crate::Store::watch)). Ends after `Compacted` or when the store closes.
///
/// Cancel-safe: dropping a `next()` future loses nothing (the stream keeps its own state), so it
/// can sit in a `tokio::select!` loop.
pub struct Watch {
    inner: BoxStream<'static, WatchEvent>,
}

impl Watch {
    /// Wraps a backend's stream.
    pub fn new(stream: impl Stream<Item = WatchEvent> + Send + 'static) -> Watch {
        Watch {
            inner: stream.boxed(),
        }
    }

    /// The next event; `None` when the watch ended.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.inner.next().await
    }
}

impl Stream for Watch {
    type Item = WatchEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchEvent>> {
        self.inner.as_mut().poll_next(cx)
    }
}
