//! The SQLite schema and queries. Nothing outside `sqlite/` writes SQL.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a transaction that returned is on disk and
//! survives `kill -9` and power loss. Each store transaction is one SQLite savepoint inside the
//! writer's batch transaction: either every object and change row of it is written, or none is.
//!
//! These are plain functions over a `Connection`; which thread runs them is `sqlite/mod.rs`'s
//! business.

use std::path::Path;
use std::time::Duration;

use hivemind_types::Kind;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::backend::Index;
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
    // 2: resource-first reads without full scans: replicas by node and by service, statuses by
    // node. Partial expression indexes, so that writes of other kinds pay nothing for them; the
    // queries in `list_indexed` repeat the `kind = '...'` literals so SQLite can use them.
    "CREATE INDEX replicas_by_node ON objects (json_extract(value, '$.node'))
        WHERE kind = 'replica';
     CREATE INDEX replicas_by_service ON objects (
        json_extract(value, '$.namespace'),
        json_extract(value, '$.app'),
        json_extract(value, '$.service')
     ) WHERE kind = 'replica';
     CREATE INDEX statuses_by_node ON objects (json_extract(value, '$.node'))
        WHERE kind = 'replica_status';",
];

/// Bytes of WAL file kept after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

/// Opens the writer's connection at `path`, creating and migrating the schema.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    make_private(path)?;
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // After a checkpoint, cut the WAL back to this size: one huge transaction (100,000 replicas)
    // grows it to hundreds of MB, which SQLite would otherwise keep as the file's high mark.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    migrate(conn)
}

/// Creates the database file mode 0600 if it is missing, and takes group and other access off
/// it and its `-wal` and `-shm` files if they have any (stores made before this were 0644).
/// Why: the store holds every app's environment and the credentials' hashes. SQLite creates the
/// WAL and shared-memory files with the database file's mode, so the database's 0600 carries
/// over to them; only files an older version left behind need the chmod.
fn make_private(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let failed = |path: &Path, source| StoreError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        // An existing store is opened to check its mode, never emptied.
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| failed(path, e))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        let mode = match std::fs::metadata(file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(failed(file, e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode & 0o700))
                .map_err(|e| failed(file, e))?;
        }
    }
    Ok(())
}

/// Opens a reader's connection to a store `open_writer` already migrated. WAL lets readers see
/// the last committed state while the writer writes, without waiting for it.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // A reader never writes; make a slip an error instead of a second writer.
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

pub(crate) fn open_in_memory() -> Result<Connection, StoreError> {
    migrate(Connection::open_in_memory()?)
}

fn migrate(mut conn: Connection) -> Result<Connection, StoreError> {
    conn.busy_timeout(Duration::from_secs(5))?;
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
    Ok(conn)
}

fn counter(conn: &Connection, name: &str) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM counters WHERE name = ?1")?;
    Ok(stmt.query_row([name], |r| r.get::<_, i64>(0))? as u64)
}

pub(crate) fn revision(conn: &Connection) -> Result<u64, StoreError> {
    counter(conn, "revision")
}

pub(crate) fn get(conn: &Connection, kind: Kind, key: &str) -> Result<Option<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT value FROM objects WHERE kind = ?1 AND key = ?2")?;
    Ok(stmt
        .query_row(params![kind.as_str(), key], |r| r.get(0))
        .optional()?)
}

/// `(key, JSON text)` of every object of `kind` whose key starts with `prefix`, ordered by key.
pub(crate) fn list(
    conn: &Connection,
    kind: Kind,
    prefix: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    // Range scan on the primary key instead of LIKE, so that `%` and `_` in keys are literal.
    let mut stmt = conn.prepare_cached(
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
        out.push((key, text));
    }
    Ok(out)
}

pub(crate) fn keys(conn: &Connection, kind: Kind, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT key FROM objects WHERE kind = ?1 AND key >= ?2 ORDER BY key")?;
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

/// The SQL of each indexed read; each must use its index (a test checks the query plans).
pub(crate) fn index_sql(index: &Index) -> &'static str {
    match index {
        Index::ReplicasByNode { .. } => {
            "SELECT key, value FROM objects WHERE kind = 'replica'
             AND json_extract(value, '$.node') = ?1 ORDER BY key"
        }
        Index::ReplicasByService { .. } => {
            "SELECT key, value FROM objects WHERE kind = 'replica'
             AND json_extract(value, '$.namespace') = ?1 AND json_extract(value, '$.app') = ?2
             AND json_extract(value, '$.service') = ?3 ORDER BY key"
        }
        Index::StatusesByNode { .. } => {
            "SELECT key, value FROM objects WHERE kind = 'replica_status'
             AND json_extract(value, '$.node') = ?1 ORDER BY key"
        }
    }
}

/// `(key, JSON text)` of the objects `index` selects, ordered by key.
pub(crate) fn list_indexed(
    conn: &Connection,
    index: &Index,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(index_sql(index))?;
    let row = |r: &rusqlite::Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?));
    let rows = match index {
        Index::ReplicasByNode { node } | Index::StatusesByNode { node } => {
            stmt.query_map([node], row)?.collect::<Result<_, _>>()?
        }
        Index::ReplicasByService {
            namespace,
            app,
            service,
        } => stmt
            .query_map([namespace, app, service], row)?
            .collect::<Result<_, _>>()?,
    };
    Ok(rows)
}

/// Applies `ops` as revision `revision` on `conn` (the caller's savepoint) and returns the
/// changes. An empty result means nothing changed (only deletes of absent objects); the caller
/// then rolls back and keeps the revision.
pub(crate) fn apply(
    conn: &Connection,
    revision: u64,
    ops: Vec<Op>,
    now: u64,
) -> Result<Vec<Change>, StoreError> {
    // Cached statements: a 100,000-op transaction must not prepare 300,000 statements.
    let mut read =
        conn.prepare_cached("SELECT revision, value FROM objects WHERE kind = ?1 AND key = ?2")?;
    let mut upsert = conn.prepare_cached(
        "INSERT INTO objects (kind, key, revision, value) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (kind, key) DO UPDATE SET revision = ?3, value = ?4",
    )?;
    let mut delete = conn.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND key = ?2")?;
    let mut log = conn.prepare_cached(
        "INSERT INTO changes (revision, seq, kind, key, op, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut changes = Vec::with_capacity(ops.len());
    for (seq, op) in ops.into_iter().enumerate() {
        let (kind, key, expect) = match &op {
            Op::Put {
                kind, key, expect, ..
            }
            | Op::Delete { kind, key, expect } => (*kind, key.clone(), *expect),
        };
        let current: Option<(u64, String)> = read
            .query_row(params![kind.as_str(), key], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
            })
            .optional()?;
        check(kind, &key, expect, current.as_ref().map(|c| c.0))?;
        let (change_op, value, text) = match op {
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
                upsert.execute(params![kind.as_str(), key, revision as i64, text])?;
                (ChangeOp::Put, value, text)
            }
            Op::Delete { .. } => {
                let Some((_, text)) = current else {
                    // Deleting something absent under `Expect::Any` is a no-op, not a change.
                    continue;
                };
                delete.execute(params![kind.as_str(), key])?;
                (ChangeOp::Delete, parse(kind, &key, &text)?, text)
            }
        };
        log.execute(params![
            revision as i64,
            seq as i64,
            kind.as_str(),
            key,
            op_name(change_op),
            text
        ])?;
        changes.push(Change {
            revision,
            kind,
            key,
            op: change_op,
            value,
        });
    }
    Ok(changes)
}

pub(crate) fn set_revision(conn: &Connection, revision: u64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE counters SET value = ?1 WHERE name = 'revision'")?
        .execute([revision as i64])?;
    Ok(())
}

pub(crate) fn compacted(conn: &Connection) -> Result<u64, StoreError> {
    counter(conn, "compacted")
}

/// One page of the change log for a watcher.
pub(crate) struct Page {
    /// The last revision read, `None` when there was nothing after `after`. Rows of kinds this
    /// binary does not know are skipped but still count as read.
    pub(crate) last: Option<u64>,
    /// Whole transactions, oldest first.
    pub(crate) txns: Vec<(u64, Vec<Change>)>,
}

/// The transactions after `after`, about `max_rows` change rows of them: whole transactions
/// only, except that one transaction bigger than a page comes whole on its own. Fails with
/// `Compacted` when history after `after` is gone.
pub(crate) fn page(conn: &Connection, after: u64, max_rows: usize) -> Result<Page, StoreError> {
    // One read transaction, so that the compaction mark and the rows agree.
    let tx = conn.unchecked_transaction()?;
    let compacted = compacted(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted { compacted });
    }
    let mut stmt = tx.prepare_cached(
        "SELECT revision, kind, key, op, value FROM changes WHERE revision > ?1
         ORDER BY revision, seq LIMIT ?2",
    )?;
    let mut rows: Vec<ChangeRow> = stmt
        .query_map(params![after as i64, max_rows as i64], change_row)?
        .collect::<Result<_, _>>()?;
    drop(stmt);
    if rows.len() == max_rows {
        let first = rows[0].0;
        let last = rows[max_rows - 1].0;
        if first == last {
            // One transaction fills the page: deliver it whole, it is one item to the watcher.
            let mut stmt = tx.prepare_cached(
                "SELECT revision, kind, key, op, value FROM changes WHERE revision = ?1
                 ORDER BY seq",
            )?;
            rows = stmt
                .query_map([last as i64], change_row)?
                .collect::<Result<_, _>>()?;
        } else {
            // The last transaction may go on past the page: it comes whole with the next one.
            rows.retain(|r| r.0 != last);
        }
    }
    let last = rows.last().map(|r| r.0);
    let mut txns: Vec<(u64, Vec<Change>)> = Vec::new();
    for change in collect_changes(rows.into_iter().map(Ok))? {
        match txns.last_mut() {
            Some((revision, changes)) if *revision == change.revision => changes.push(change),
            _ => txns.push((change.revision, vec![change])),
        }
    }
    tx.commit()?;
    Ok(Page { last, txns })
}

type ChangeRow = (u64, String, String, String, String);

fn change_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ChangeRow> {
    Ok((
        r.get::<_, i64>(0)? as u64,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
    ))
}

fn collect_changes(
    rows: impl Iterator<Item = rusqlite::Result<ChangeRow>>,
) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (revision, kind, key, op, text) = row?;
        // Rows are written only by `apply`, so unknown words mean a newer binary wrote them.
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

/// Drops change rows at or below `revision` and records the mark, then checkpoints the WAL.
///
/// Space (why no VACUUM): deleted rows' pages go to SQLite's freelist and the next writes reuse
/// them, so a log kept at a bounded length stops the file growing without rewriting it (VACUUM
/// would copy the whole database and block the writer meanwhile). The WAL is copied back into the
/// database and truncated (`TRUNCATE` checkpoint); if a reader holds an old snapshot the
/// checkpoint does what it can and the next compaction finishes it.
pub(crate) fn compact(conn: &mut Connection, revision: u64) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Never past the head: a mark above it would send every watcher to re-list forever.
    let revision = revision.min(counter(&tx, "revision")?);
    tx.execute(
        "DELETE FROM changes WHERE revision <= ?1",
        [revision as i64],
    )?;
    tx.execute(
        "UPDATE counters SET value = MAX(value, ?1) WHERE name = 'compacted'",
        [revision as i64],
    )?;
    tx.commit()?;
    // In memory there is no WAL; the pragma answers without doing anything.
    let (busy, _log, _done): (i64, i64, i64) =
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        tracing::debug!("WAL checkpoint found readers busy; the next compaction finishes it");
    }
    Ok(())
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
