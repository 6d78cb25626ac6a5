//! The SQLite schema and queries. Nothing outside this file writes SQL.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a transaction that returned is on disk and
//! survives `kill -9` and power loss. Each `txn` is one SQLite transaction: either every object
//! and change row is written, or none is.

use std::path::Path;

use hivemind_types::Kind;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::{Change, ChangeOp, Expect, Op, StoreError};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    // 1: objects, change log, counters.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        revision INTEGER NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
     ) WITHOUT ROWID;
     CREATE TABLE changes (
        revision INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (revision, seq)
     ) WITHOUT ROWID;
     CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO counters VALUES ('revision', 0), ('compacted', 0);",
];

pub(crate) struct Db {
    conn: Connection,
}

impl Db {
    pub(crate) fn open(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Db::init(conn)
    }

    pub(crate) fn open_in_memory() -> Result<Db, StoreError> {
        Db::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> Result<Db, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(StoreError::SchemaTooNew {
                found: version,
                known,
            });
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        for migration in &MIGRATIONS[version as usize..] {
            tx.execute_batch(migration)?;
        }
        tx.pragma_update(None, "user_version", known)?;
        tx.commit()?;
        Ok(Db { conn })
    }

    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                r.get::<_, i64>(0)
            })? as u64)
    }

    pub(crate) fn revision(&self) -> u64 {
        // The counters row exists from the first migration on; a read error here means a broken
        // database, which every later call will report properly.
        self.counter("revision").unwrap_or_default()
    }

    pub(crate) fn get(
        &self,
        kind: Kind,
        key: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM objects WHERE kind = ?1 AND key = ?2",
                params![kind.as_str(), key],
                |r| r.get(0),
            )
            .optional()?;
        text.map(|t| parse(kind, key, &t)).transpose()
    }

    pub(crate) fn list(
        &self,
        kind: Kind,
        prefix: &str,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        // Range scan on the primary key instead of LIKE, so that `%` and `_` in keys are literal.
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, value FROM objects WHERE kind = ?1 AND key >= ?2 ORDER BY key",
        )?;
        let rows = stmt.query_map(params![kind.as_str(), prefix], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, text) = row?;
            if !key.starts_with(prefix) {
                break;
            }
            let value = parse(kind, &key, &text)?;
            out.push((key, value));
        }
        Ok(out)
    }

    pub(crate) fn keys(&self, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM objects WHERE kind = ?1 AND key >= ?2 ORDER BY key")?;
        let rows = stmt.query_map(params![kind.as_str(), prefix], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for key in rows {
            let key = key?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push(key);
        }
        Ok(out)
    }

    pub(crate) fn txn(&mut self, ops: Vec<Op>, now: u64) -> Result<Vec<Change>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let revision: u64 = tx.query_row(
            "SELECT value FROM counters WHERE name = 'revision'",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64
            + 1;
        let mut changes = Vec::with_capacity(ops.len());
        for (seq, op) in ops.into_iter().enumerate() {
            let (kind, key) = op.kind_key();
            let key = key.to_string();
            let current: Option<(u64, String)> = tx
                .query_row(
                    "SELECT revision, value FROM objects WHERE kind = ?1 AND key = ?2",
                    params![kind.as_str(), key],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .optional()?;
            check(kind, &key, op_expect(&op), current.as_ref().map(|c| c.0))?;
            let (change_op, value) = match op {
                Op::Put { mut value, .. } => {
                    let created_at = match &current {
                        Some((_, text)) => parse(kind, &key, text)?
                            .pointer("/meta/created_at")
                            .and_then(|v| v.as_u64())
                            .unwrap_or(now),
                        None => now,
                    };
                    let obj = value.as_object_mut().ok_or(StoreError::NotAnObject {
                        kind: kind.as_str(),
                        key: key.clone(),
                    })?;
                    obj.insert(
                        "meta".into(),
                        serde_json::json!({
                            "revision": revision,
                            "created_at": created_at,
                            "updated_at": now,
                        }),
                    );
                    let text = value.to_string();
                    tx.execute(
                        "INSERT INTO objects (kind, key, revision, value) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (kind, key) DO UPDATE SET revision = ?3, value = ?4",
                        params![kind.as_str(), key, revision as i64, text],
                    )?;
                    (ChangeOp::Put, value)
                }
                Op::Delete { .. } => {
                    let Some((_, text)) = current else {
                        // Deleting something absent under `Expect::Any` is a no-op, not a change.
                        continue;
                    };
                    tx.execute(
                        "DELETE FROM objects WHERE kind = ?1 AND key = ?2",
                        params![kind.as_str(), key],
                    )?;
                    (ChangeOp::Delete, parse(kind, &key, &text)?)
                }
            };
            tx.execute(
                "INSERT INTO changes (revision, seq, kind, key, op, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    revision as i64,
                    seq as i64,
                    kind.as_str(),
                    key,
                    op_name(change_op),
                    value.to_string()
                ],
            )?;
            changes.push(Change {
                revision,
                kind,
                key,
                op: change_op,
                value,
            });
        }
        if changes.is_empty() {
            // Nothing changed (only deletes of absent objects): keep the revision as it was.
            tx.rollback()?;
            return Ok(changes);
        }
        tx.execute(
            "UPDATE counters SET value = ?1 WHERE name = 'revision'",
            [revision as i64],
        )?;
        tx.commit()?;
        Ok(changes)
    }

    pub(crate) fn changes_since(&self, since: u64) -> Result<Vec<Change>, StoreError> {
        let compacted = self.counter("compacted")?;
        if since < compacted {
            return Err(StoreError::Compacted { compacted });
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT revision, kind, key, op, value FROM changes WHERE revision > ?1 ORDER BY revision, seq",
        )?;
        let rows = stmt.query_map([since as i64], |r| {
            Ok((
                r.get::<_, i64>(0)? as u64,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (revision, kind, key, op, text) = row?;
            // Rows are written only by `txn`, so unknown words mean a newer binary wrote them.
            let Some(kind) = Kind::parse(&kind) else {
                continue;
            };
            let op = if op == "delete" {
                ChangeOp::Delete
            } else {
                ChangeOp::Put
            };
            let value = parse(kind, &key, &text)?;
            out.push(Change {
                revision,
                kind,
                key,
                op,
                value,
            });
        }
        Ok(out)
    }

    pub(crate) fn compact(&mut self, revision: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM changes WHERE revision <= ?1",
            [revision as i64],
        )?;
        tx.execute(
            "UPDATE counters SET value = MAX(value, ?1) WHERE name = 'compacted'",
            [revision as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn op_expect(op: &Op) -> Expect {
    match op {
        Op::Put { expect, .. } | Op::Delete { expect, .. } => *expect,
    }
}

fn op_name(op: ChangeOp) -> &'static str {
    match op {
        ChangeOp::Put => "put",
        ChangeOp::Delete => "delete",
    }
}

fn check(kind: Kind, key: &str, expect: Expect, current: Option<u64>) -> Result<(), StoreError> {
    let reason = match (expect, current) {
        (Expect::Any, _) => return Ok(()),
        (Expect::Absent, None) => return Ok(()),
        (Expect::Absent, Some(rev)) => format!("already exists at revision {rev}"),
        (Expect::Present, Some(_)) => return Ok(()),
        (Expect::Present, None) | (Expect::Revision(_), None) => "does not exist".to_string(),
        (Expect::Revision(want), Some(rev)) if want == rev => return Ok(()),
        (Expect::Revision(want), Some(rev)) => {
            format!("expected revision {want}, found {rev}: re-read it and retry")
        }
    };
    Err(StoreError::Conflict {
        kind: kind.as_str(),
        key: key.to_string(),
        reason,
    })
}

fn parse(kind: Kind, key: &str, text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Decode {
        kind: kind.as_str(),
        key: key.to_string(),
        source,
    })
}
