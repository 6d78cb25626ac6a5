//! The store: revisioned objects and an append-only change log on embedded SQLite.
//!
//! **This is the only crate that knows SQL.** Everything above it speaks in `hivemind_types`
//! objects, keys and revisions.
//!
//! Model (etcd-like): one global revision counter; every committed transaction bumps it by one and
//! appends one change row per touched object. Each object's `meta.revision` is the revision of its
//! last write. Watchers read the change log from any revision on, then follow live changes.
//!
//! API CONTRACT (other crates code against exactly this; keep it):
//! ```text
//! let store = Store::open(&data_dir.join("state.db"))?;   // or Store::open_in_memory()
//! store.revision()                                         // -> u64, current global revision
//! store.get::<App>(Kind::App, "default/hello")?            // -> Option<App>
//! store.list::<Replica>(Kind::Replica, "")?                // all; prefix filter on key
//! store.txn(vec![Op::put(Kind::App, app.key(), &app, Expect::Absent),
//!                Op::delete(Kind::Replica, id, Expect::Any)])?   // -> u64 new revision, atomic
//! store.changes_since(rev)?                                // -> Vec<Change> with revision > rev
//! store.subscribe()                                        // -> broadcast::Receiver<Change>
//! ```
//! `txn` sets `meta.revision`, `meta.created_at` (kept from the previous version) and
//! `meta.updated_at` in the stored JSON. A failed precondition fails the whole transaction with
//! `StoreError::Conflict` and writes nothing.

mod error;
mod sqlite;

use std::path::Path;
use std::sync::{Arc, Mutex};

use hivemind_types::Kind;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use error::StoreError;

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

/// A cheap-to-clone handle to the store.
///
/// SQLite calls are short and synchronous, so they run under a std mutex on the caller's thread
/// (as mini-redis does for its map); the lock is never held across an `.await`.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Mutex<sqlite::Db>,
    changes: broadcast::Sender<Change>,
}

impl Store {
    /// Opens (creating and migrating as needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store::from_db(sqlite::Db::open(path)?))
    }

    /// A private store in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Ok(Store::from_db(sqlite::Db::open_in_memory()?))
    }

    fn from_db(db: sqlite::Db) -> Store {
        let (changes, _) = broadcast::channel(4096);
        Store {
            inner: Arc::new(Inner {
                db: Mutex::new(db),
                changes,
            }),
        }
    }

    fn db(&self) -> std::sync::MutexGuard<'_, sqlite::Db> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is safe to keep using.
        self.inner.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current global revision: that of the last committed transaction (0 when empty).
    pub fn revision(&self) -> u64 {
        self.db().revision()
    }

    pub fn get<T: DeserializeOwned>(&self, kind: Kind, key: &str) -> Result<Option<T>, StoreError> {
        match self.db().get(kind, key)? {
            Some(value) => Ok(Some(decode(kind, key, value)?)),
            None => Ok(None),
        }
    }

    /// All objects of `kind` whose key starts with `prefix`, ordered by key.
    pub fn list<T: DeserializeOwned>(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        self.db()
            .list(kind, prefix)?
            .into_iter()
            .map(|(key, value)| decode(kind, &key, value))
            .collect()
    }

    /// The keys of all objects of `kind` whose key starts with `prefix`, ordered; cheaper than
    /// `list` when the values are not needed (counting, pruning).
    pub fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.db().keys(kind, prefix)
    }

    /// Applies `ops` atomically and returns the new revision. Nothing is written when any
    /// precondition fails. An empty transaction writes nothing and returns the current revision.
    pub fn txn(&self, ops: Vec<Op>) -> Result<u64, StoreError> {
        if ops.is_empty() {
            return Ok(self.revision());
        }
        for (i, op) in ops.iter().enumerate() {
            if ops[..i].iter().any(|o| o.kind_key() == op.kind_key()) {
                let (kind, key) = op.kind_key();
                return Err(StoreError::DuplicateOp {
                    kind: kind.as_str(),
                    key: key.to_string(),
                });
            }
        }
        let mut db = self.db();
        let changes = db.txn(ops, now_millis())?;
        let revision = match changes.first() {
            Some(change) => change.revision,
            None => db.revision(),
        };
        // Sent while still holding the lock, so that subscribers see revisions in commit order.
        for change in changes {
            // No receivers is fine: nobody is watching.
            let _ = self.inner.changes.send(change);
        }
        drop(db);
        Ok(revision)
    }

    /// Changes with a revision greater than `since`, oldest first.
    pub fn changes_since(&self, since: u64) -> Result<Vec<Change>, StoreError> {
        self.db().changes_since(since)
    }

    /// Live changes from now on. Pair with `changes_since` to watch from a past revision:
    /// subscribe first, then read the backlog, then skip live changes at or below its last revision.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// Drops change-log entries at or below `revision`, keeping objects. Watchers that ask for
    /// older revisions get `StoreError::Compacted` and must re-list.
    pub fn compact(&self, revision: u64) -> Result<(), StoreError> {
        self.db().compact(revision)
    }
}

fn decode<T: DeserializeOwned>(
    kind: Kind,
    key: &str,
    value: serde_json::Value,
) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|source| StoreError::Decode {
        kind: kind.as_str(),
        key: key.to_string(),
        source,
    })
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
