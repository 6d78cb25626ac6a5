//! The store's errors.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("conflict on {kind} {key}: {reason}")]
    Conflict {
        kind: &'static str,
        key: String,
        /// What the precondition expected and what was found.
        reason: String,
    },
    #[error("transaction touches {kind} {key} twice")]
    DuplicateOp { kind: &'static str, key: String },
    #[error("stored {kind} {key} cannot be decoded")]
    Decode {
        kind: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("value for {kind} {key} is not a JSON object")]
    NotAnObject { kind: &'static str, key: String },
    #[error("changes up to revision {compacted} were compacted; re-list and watch from the current revision")]
    Compacted { compacted: u64 },
    /// The backend cannot serve requests: its threads stopped, or a commit of the batch this
    /// transaction was in failed (nothing of it was written).
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String },
    /// The store's files could not be created private to their owner, or tightened to that.
    #[error("cannot make the store file {path} private (mode 0600): {source}; run hivemind as the user that owns the data dir, or fix its owner")]
    Permissions {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store database error")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "store schema version {found} is newer than this binary knows ({known}); upgrade hivemind"
    )]
    SchemaTooNew { found: u32, known: u32 },
}

impl StoreError {
    pub(crate) fn closed() -> StoreError {
        StoreError::Unavailable {
            reason: "the store's threads have stopped".to_string(),
        }
    }

    pub(crate) fn thread(e: std::io::Error) -> StoreError {
        StoreError::Unavailable {
            reason: format!("cannot start a store thread: {e}"),
        }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}
