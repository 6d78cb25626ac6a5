//! Effects: each controller's executor (plan → one store transaction) and the runner.

pub(crate) use hivemind_types::now_millis;

pub mod allocate;
pub mod compaction;
pub mod endpoints;
pub mod nodes;
pub mod replicas;
pub mod runner;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("store")]
    Store(#[from] hivemind_store::StoreError),
}
