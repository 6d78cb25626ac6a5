//! The SQLite backend's watch: history from the change log in bounded pages, then live
//! transactions from the writer's broadcast, with lag repaired from the log.
//!
//! Why this shape: reading the whole backlog at once (`events?since=0` did) holds the entire log
//! in memory per watcher; a bounded live channel of single changes loses a big transaction's
//! tail. Here memory per watcher is one page (`PAGE_ROWS` rows, or one transaction if bigger),
//! live items are whole transactions (large ones only as a marker, read back from the log), and
//! falling behind the broadcast only sends the watcher back to the log. Only compaction of
//! history the watcher still needs ends it, with `Compacted`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};

use super::{db, Readers};
use crate::{Change, StoreError, Watch, WatchEvent};

/// Change rows read per history page.
pub(crate) const PAGE_ROWS: usize = 1000;

/// Transactions with more changes than this are broadcast as a marker only, and each watcher
/// reads them from the log: the broadcast buffer keeps its last `LIVE_BUFFER` items alive, and a
/// 100,000-change transaction there would stay in memory until that many commits pushed it out.
/// With these two, the buffer holds at most 25,600 changes.
pub(crate) const LARGE_TXN: usize = 100;

/// Transactions kept for live watchers. Small, because falling behind costs only a read of the
/// log, never a lost change.
pub(crate) const LIVE_BUFFER: usize = 256;

/// One committed transaction as the writer broadcasts it.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) revision: u64,
    /// `None` for a large transaction: read it from the log.
    pub(crate) changes: Option<Vec<Change>>,
}

enum Mode {
    /// Reading the change log after `next`.
    History,
    /// Following the broadcast.
    Live,
    Done,
}

struct State {
    readers: Readers,
    live: broadcast::Receiver<Arc<Committed>>,
    /// The last revision delivered (or skipped as empty).
    next: u64,
    mode: Mode,
    pending: VecDeque<WatchEvent>,
}

/// A watch of every transaction after `from`. `live` must be subscribed before this is called
/// returns anything, so that no commit falls between the log and the broadcast.
pub(crate) fn watch(
    readers: Readers,
    live: broadcast::Receiver<Arc<Committed>>,
    from: u64,
) -> Watch {
    let state = State {
        readers,
        live,
        next: from,
        mode: Mode::History,
        pending: VecDeque::new(),
    };
    Watch::new(futures::stream::unfold(state, |mut state| async move {
        let event = state.step().await?;
        Some((event, state))
    }))
}

impl State {
    async fn step(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.mode {
                Mode::Done => return None,
                Mode::History => {
                    let after = self.next;
                    let page = self
                        .readers
                        .read(move |conn| db::page(conn, after, PAGE_ROWS))
                        .await;
                    match page {
                        Ok(page) => match page.last {
                            // Caught up with the log; the broadcast has everything newer.
                            None => self.mode = Mode::Live,
                            Some(last) => {
                                self.next = last;
                                self.pending.extend(page.txns.into_iter().map(
                                    |(revision, changes)| WatchEvent::Txn { revision, changes },
                                ));
                            }
                        },
                        Err(StoreError::Compacted { compacted }) => {
                            self.mode = Mode::Done;
                            return Some(WatchEvent::Compacted { compacted });
                        }
                        Err(StoreError::Unavailable { .. }) => return None,
                        Err(error) => {
                            // A read error is the database's, not the watcher's; retry rather
                            // than end a stream the watcher cannot tell from "no news".
                            tracing::warn!(%error, "store watch cannot read the change log; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Mode::Live => match self.live.recv().await {
                    Ok(item) if item.revision <= self.next => {}
                    Ok(item) if item.revision == self.next + 1 => match &item.changes {
                        Some(changes) => {
                            self.next = item.revision;
                            return Some(WatchEvent::Txn {
                                revision: item.revision,
                                changes: changes.clone(),
                            });
                        }
                        None => self.mode = Mode::History,
                    },
                    // A gap (cannot happen while subscribed before reading) or a lag: whatever
                    // was missed is in the log.
                    Ok(_) | Err(RecvError::Lagged(_)) => self.mode = Mode::History,
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}
