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
use tokio::sync::broadcast;

use crate::{Change, Op, StoreError};

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The revision of the last committed transaction (0 when empty).
    async fn revision(&self) -> Result<u64, StoreError>;
    /// The stored JSON text of one object.
    async fn get(&self, kind: Kind, key: &str) -> Result<Option<String>, StoreError>;
    /// `(key, JSON text)` of the objects of `kind` whose key starts with `prefix`, by key.
    async fn list(&self, kind: Kind, prefix: &str) -> Result<Vec<(String, String)>, StoreError>;
    async fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Applies non-empty `ops` (no key twice) atomically; returns the new revision, or the
    /// current one when nothing changed (only deletes of absent objects).
    async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError>;
    async fn changes_since(&self, since: u64) -> Result<Vec<Change>, StoreError>;
    fn subscribe(&self) -> broadcast::Receiver<Change>;
    async fn compact(&self, revision: u64) -> Result<(), StoreError>;
}
