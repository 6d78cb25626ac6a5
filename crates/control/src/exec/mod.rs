//! Effects: each controller's executor (plan → one store transaction) and the runner.

pub(crate) use hivemind_types::now_millis;

pub mod allocate;
pub mod compaction;
pub mod endpoints;
pub mod events;
pub mod nodes;
pub mod replicas;
pub mod runner;
pub mod volumes;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("store")]
    Store(#[from] hivemind_store::StoreError),
}

/// How a burst of committed transactions ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Everything waiting was applied: do the work it marked.
    Applied,
    /// The watch's history is gone: list again.
    Compacted,
    /// The watch ended (the store closed).
    Ended,
}

/// Applies `first` and every transaction already committed behind it (at most `max` in all)
/// through `apply`, without waiting: the watch-fed controllers do their work once per burst
/// (a scale-up's thousands of reports cost one write), not once per transaction.
pub(crate) async fn drain_committed(
    first: Option<hivemind_store::WatchEvent>,
    watch: &mut hivemind_store::Watch,
    max: usize,
    mut apply: impl FnMut(&[hivemind_store::Change]),
) -> Drained {
    use futures::FutureExt;
    let mut event = first;
    for _ in 0..max {
        match event {
            Some(hivemind_store::WatchEvent::Txn { changes, .. }) => apply(&changes),
            Some(hivemind_store::WatchEvent::Compacted { .. }) => return Drained::Compacted,
            None => return Drained::Ended,
        }
        match watch.next().now_or_never() {
            Some(next) => event = next,
            None => break,
        }
    }
    Drained::Applied
}

/// Keeps `cache[change.key]` equal to the object `change` wrote: inserted or replaced by a put,
/// removed by a delete. An unreadable value is logged and leaves the entry as it was (the next
/// relist repairs it). The watch-fed caches of the controllers share it.
pub(crate) fn mirror<T: serde::de::DeserializeOwned>(
    cache: &mut std::collections::HashMap<String, T>,
    change: &hivemind_store::Change,
    what: &str,
) {
    if change.op != hivemind_store::ChangeOp::Put {
        cache.remove(&change.key);
        return;
    }
    match T::deserialize(&change.value) {
        Ok(object) => {
            cache.insert(change.key.clone(), object);
        }
        Err(error) => tracing::warn!(key = %change.key, %error, "unreadable {what}"),
    }
}
