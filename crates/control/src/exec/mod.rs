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
