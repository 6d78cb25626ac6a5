//! The interface a storage engine implements to sit behind [`Store`](crate::Store).
//!
//! Backends deal in JSON text and raw changes; [`Store`](crate::Store) does the typed decoding and
//! the checks every backend needs alike (duplicate keys in a transaction, empty transactions), so
//! an etcd backend later implements only this trait and no caller changes.
//!
//! Contract: revisions are global and bumped by one per committed transaction that changed
//! something; `txn` is atomic and answers only once the transaction is durable; a read that
//! starts after `txn` returned sees it.

use async_trait::async_trait;
use hivemind_types::Kind;

use crate::{Op, StoreError, Watch};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The revision of the last committed transaction (0 when empty).
    async fn revision(&self) -> Result<u64, StoreError>;
    /// The stored JSON text of one object.
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<String>, StoreError>;
    /// `(key, JSON text)` of the objects of `kind` whose key starts with `prefix`, by key.
    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    async fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// `(key, JSON text)` of the objects `index` selects, by key, without a full scan.
    async fn list_indexed(&self, index: Index) -> Result<Vec<(String, String)>, StoreError>;
    /// Applies non-empty `ops` (no key twice) atomically; returns the new revision, or the
    /// current one when nothing changed (only deletes of absent objects).
    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError>;
    /// Every transaction committed after `from`, then live ones, as `Store::watch` documents:
    /// history in bounded pages, lag repaired from the backend's own log, `Compacted` last when
    /// `from` is older than the kept history.
    fn watch(&self, from: u64) -> Watch;
    async fn compact(&self, revision: u64) -> Result<(), StoreError>;
}

/// The secondary indexes every backend keeps: the only object fields the store knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Index {
    /// Replicas whose `node` is this.
    ReplicasByNode { node: String },
    /// Replicas of one service.
    ReplicasByService {
        namespace: String,
        app: String,
        service: String,
    },
    /// Replica statuses whose `node` is this.
    StatusesByNode { node: String },
}

impl Index {
    /// The kind of the objects the index selects.
    pub fn kind(&self) -> Kind {
        match self {
            Index::ReplicasByNode { .. } | Index::ReplicasByService { .. } => Kind::Replica,
            Index::StatusesByNode { .. } => Kind::ReplicaStatus,
        }
    }
}
