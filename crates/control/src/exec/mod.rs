//! Effects: each controller's executor (plan → one store transaction) and the runner.

pub mod allocate;
pub mod compaction;
pub mod endpoints;
pub mod nodes;
pub mod replicas;
pub mod runner;

/// Unix milliseconds now. The only clock the controllers read; planners get time as an argument.
pub(crate) fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("store")]
    Store(#[from] hivemind_store::StoreError),
}
