//! The store: revisioned objects and an append-only change log, behind a [`Backend`] (today
//! embedded SQLite, see `sqlite`; etcd later).
//!
//! **This is the only crate that knows SQL.** Everything above it speaks in `hivemind_types`
//! objects, keys and revisions.
//!
//! Model (etcd-like): one global revision counter; every committed transaction bumps it by one and
//! appends one change row per touched object. Each object's `meta.revision` is the revision of its
//! last write. Watchers read the change log from any revision on, then follow live changes.
//!
//! API CONTRACT (other crates code against exactly this; keep it). Every call is async and
//! runs on the backend's own threads, never on the caller's tokio worker:
//! ```text
//! let store = Store::open(&data_dir.join("state.db"))?;   // or Store::open_in_memory()
//! store.revision().await?                                  // -> u64, current global revision
//! store.get::<App>(Kind::App, "default/hello").await?      // -> Option<App>
//! store.list::<Replica>(Kind::Replica, "").await?          // all; prefix filter on key
//! store.replica_list_by_node("n1").await?                  // indexed; also _by_service,
//!                                                          // status_list_by_node
//! store.txn(vec![Op::put(Kind::App, app.key(), &app, Expect::Absent),
//!                Op::delete(Kind::Replica, id, Expect::Any)]).await?   // -> u64 new revision
//! store.watch(rev)                                         // -> Watch: Stream<Item = WatchEvent>
//! store.compact(rev).await?                                // drop change log up to rev
//! ```
//! `txn` sets `meta.revision`, `meta.created_at` (kept from the previous version) and
//! `meta.updated_at` in the stored JSON. A failed precondition fails the whole transaction with
//! `StoreError::Conflict` and writes nothing.

mod backend;
mod error;
mod lease;
mod sqlite;
mod watch;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

pub(crate) use hivemind_types::now_millis;
use hivemind_types::{Kind, ObservedReplica, Replica};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use backend::{Backend, Index};
pub use error::StoreError;
pub use lease::Leases;
pub use watch::{Watch, WatchEvent};

/// Precondition on the current version of an object, checked inside the transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No precondition: last writer wins.
    Any,
    /// The object must not exist (create).
    Absent,
    /// The object must exist (update or delete of something known).
    Present,
    /// The object must exist at exactly this revision (optimistic concurrency).
    Revision(u64),
}

/// One write inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        kind: Kind,
        key: String,
        value: serde_json::Value,
        expect: Expect,
    },
    Delete {
        kind: Kind,
        key: String,
        expect: Expect,
    },
}

impl Op {
    /// A put of `value`, serialized to JSON. Objects must serialize to JSON objects, because the
    /// store writes their `meta` field.
    pub fn put<T: Serialize>(kind: Kind, key: impl Into<String>, value: &T, expect: Expect) -> Op {
        Op::Put {
            kind,
            key: key.into(),
            value: serde_json::to_value(value).expect("stored objects serialize to JSON"),
            expect,
        }
    }

    pub fn delete(kind: Kind, key: impl Into<String>, expect: Expect) -> Op {
        Op::Delete {
            kind,
            key: key.into(),
            expect,
        }
    }

    fn kind_key(&self) -> (Kind, &str) {
        match self {
            Op::Put { kind, key, .. } | Op::Delete { kind, key, .. } => (*kind, key),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One entry of the change log: the object as written (or the last version, for deletes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    pub kind: Kind,
    pub key: String,
    pub op: ChangeOp,
    pub value: serde_json::Value,
}

/// A cheap-to-clone handle to the store: typed reads and writes over a [`Backend`].
///
/// Every method is async and none blocks the calling tokio worker: the SQLite backend does its
/// work (and its fsyncs) on threads of its own (see `sqlite`).
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    leases: Leases,
}

impl Store {
    /// Opens (creating and migrating as needed) the SQLite store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::with_backend(sqlite::SqliteBackend::open(path)?))
    }

    /// A private store in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Ok(Store::with_backend(sqlite::SqliteBackend::open_in_memory()?))
    }

    /// A store over any backend.
    pub fn with_backend(backend: impl Backend) -> Store {
        Store {
            backend: Arc::new(backend),
            leases: Leases::new(),
        }
    }

    /// The node lease table that goes with this store (see [`Leases`]): renewals write
    /// nothing, only node health reads it.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The current global revision: that of the last committed transaction (0 when empty).
    pub async fn revision(&self) -> Result<u64, StoreError> {
        self.backend.revision().await
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.backend.get(kind, key).await? {
            Some(text) => Ok(Some(decode(kind, key, &text)?)),
            None => Ok(None),
        }
    }

    /// All objects of `kind` whose key starts with `prefix`, ordered by key.
    pub async fn list<T: DeserializeOwned>(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.backend
            .list(kind, prefix)
            .await?
            .into_iter()
            .map(|(key, text)| decode(kind, &key, &text))
            .collect()
    }

    /// The keys of all objects of `kind` whose key starts with `prefix`, ordered; cheaper than
    /// `list` when the values are not needed (counting, pruning).
    pub async fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.backend.keys(kind, prefix).await
    }

    /// The replicas placed on `node`, by id (indexed: no scan of other nodes' replicas).
    pub async fn replica_list_by_node(&self, node: &str) -> Result<Vec<Replica>, StoreError> {
        self.list_indexed(Index::ReplicasByNode {
            node: node.to_string(),
        })
        .await
    }

    /// The replicas of one service, by id (indexed).
    pub async fn replica_list_by_service(
        &self,
        namespace: &str,
        app: &str,
        service: &str,
    ) -> Result<Vec<Replica>, StoreError> {
        self.list_indexed(Index::ReplicasByService {
            namespace: namespace.to_string(),
            app: app.to_string(),
            service: service.to_string(),
        })
        .await
    }

    /// The replica statuses `node` reported, by id (indexed).
    pub async fn status_list_by_node(
        &self,
        node: &str,
    ) -> Result<Vec<ObservedReplica>, StoreError> {
        self.list_indexed(Index::StatusesByNode {
            node: node.to_string(),
        })
        .await
    }

    async fn list_indexed<T: DeserializeOwned>(&self, index: Index) -> Result<Vec<T>, StoreError> {
        let kind = index.kind();
        self.backend
            .list_indexed(index)
            .await?
            .into_iter()
            .map(|(key, text)| decode(kind, &key, &text))
            .collect()
    }

    /// Applies `ops` atomically and returns the new revision. Nothing is written when any
    /// precondition fails. An empty transaction writes nothing and returns the current revision.
    pub async fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        if ops.is_empty() {
            return self.revision().await;
        }
        let mut seen = HashSet::with_capacity(ops.len());
        for op in &ops {
            let (kind, key) = op.kind_key();
            if !seen.insert((kind, key)) {
                return Err(StoreError::DuplicateOp {
                    kind: kind.as_str(),
                    key: key.to_string(),
                });
            }
        }
        drop(seen);
        self.backend.txn(ops).await
    }

    /// Every transaction committed after `from`, in order, one item per transaction, then live
    /// ones; produced by the backend (history read from the change log in bounded pages, a
    /// watcher that falls behind the live buffer catches up from the log instead of losing
    /// anything). Ends with `WatchEvent::Compacted` when `from` is older than the compacted
    /// history: the watcher must re-list and watch from the current revision.
    pub fn watch(&self, from: u64) -> Watch {
        self.backend.watch(from)
    }

    /// Drops change-log entries at or below `revision`, keeping objects. Watchers that ask for
    /// older revisions get `WatchEvent::Compacted` and must re-list.
    pub async fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.backend.compact(revision).await
    }
}

fn decode<T: DeserializeOwned>(kind: Kind, key: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Decode {
        kind: kind.as_str(),
        key: key.to_string(),
        source,
    })
}

#[cfg(any(test, feature = "suite"))]
pub mod suite;
#[cfg(test)]
mod tests;
