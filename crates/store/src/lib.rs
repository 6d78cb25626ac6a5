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
//! ```ignore
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
