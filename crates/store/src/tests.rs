//! Tests of the SQLite backend: the conformance suite on a file and in memory, and what only
//! SQLite has (crash safety, file growth, query plans).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hivemind_types::Kind;
use serde_json::json;

use crate::suite::{changes_after, conformance, obj};
use crate::{Expect, Op, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_in_memory_passes_the_conformance_suite() {
    conformance(|| Store::open_in_memory().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let count = std::sync::atomic::AtomicUsize::new(0);
    conformance(|| {
        let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Store::open(&dir.path().join(format!("state-{n}.db"))).unwrap()
    })
    .await;
}

#[tokio::test]
async fn reopening_keeps_objects_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let store = Store::open(&path).unwrap();
        store
            .txn(vec![Op::put(
                Kind::App,
                "default/a",
                &obj("a"),
                Expect::Any,
            )])
            .await
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.revision().await.unwrap(), 1);
    assert!(store
        .get::<serde_json::Value>(Kind::App, "default/a")
        .await
        .unwrap()
        .is_some());
}

const CRASH_CHILD_ENV: &str = "HIVEMIND_STORE_CRASH_CHILD";

/// Not a test on its own: the writer process for `kill_9_loses_no_acknowledged_write`. It writes
/// as fast as it can and prints each revision after `txn` returned, i.e. after the acknowledgement.
#[tokio::test]
async fn crash_writer_child() {
    let Ok(path) = std::env::var(CRASH_CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::path::Path::new(&path)).unwrap();
    for i in 0u64.. {
        let rev = store
            .txn(vec![Op::put(
                Kind::Node,
                format!("n{i}"),
                &obj("n"),
                Expect::Absent,
            )])
            .await
            .unwrap();
        println!("acked {rev} n{i}");
    }
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "tests::crash_writer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("acked ") {
            let (rev, key) = rest.split_once(' ').unwrap();
            acked.push((rev.parse::<u64>().unwrap(), key.to_string()));
            if acked.len() == 300 {
                // SIGKILL: no destructors, no flush, like a crash.
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(acked.len(), 300);
    let store = Store::open(&path).unwrap();
    let (last_rev, _) = acked.last().unwrap();
    assert!(store.revision().await.unwrap() >= *last_rev);
    for (rev, key) in &acked {
        let got: serde_json::Value = store
            .get(Kind::Node, key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} at revision {rev} lost"));
        assert_eq!(got["meta"]["revision"], *rev);
    }
    // The log is consistent with the objects: one change per revision, no gaps.
    let changes = changes_after(&store, 0).await.unwrap();
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c.revision, i as u64 + 1);
    }
}

/// "No full scans": each indexed read's query plan searches its index.
#[test]
fn indexed_reads_use_their_indexes() {
    use crate::backend::Index;
    let conn = crate::sqlite::db_for_tests();
    for (index, name) in [
        (
            Index::ReplicasByNode { node: "n".into() },
            "replicas_by_node",
        ),
        (
            Index::ReplicasByService {
                namespace: "d".into(),
                app: "a".into(),
                service: "s".into(),
            },
            "replicas_by_service",
        ),
        (
            Index::StatusesByNode { node: "n".into() },
            "statuses_by_node",
        ),
    ] {
        let sql = format!("EXPLAIN QUERY PLAN {}", crate::sqlite::index_sql(&index));
        let mut stmt = conn.prepare(&sql).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<String> = (0..n).map(|_| "x".to_string()).collect();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains(&format!("USING INDEX {name}"))),
            "{index:?}: {plan:?}"
        );
    }
}

/// Compaction keeps the file from growing: freed log pages are reused and the WAL is cut back,
/// so rounds of the same writes, each followed by a compaction, end at about the same size.
#[tokio::test]
async fn compacted_files_stop_growing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let size = || {
        let wal = std::fs::metadata(dir.path().join("state.db-wal")).map_or(0, |m| m.len());
        std::fs::metadata(&path).unwrap().len() + wal
    };
    let padding = "x".repeat(2000);
    let mut sizes = Vec::new();
    for _ in 0..4 {
        // The same node rewritten, as heartbeats do: only the log grows.
        for _ in 0..300 {
            let node = json!({ "name": "n1", "padding": padding });
            store
                .txn(vec![Op::put(Kind::Node, "n1", &node, Expect::Any)])
                .await
                .unwrap();
        }
        store
            .compact(store.revision().await.unwrap())
            .await
            .unwrap();
        sizes.push(size());
    }
    // The first round sets the high mark; later ones reuse its pages.
    assert!(sizes[3] <= sizes[1] + 64 * 1024, "sizes grew: {sizes:?}");
    assert_eq!(changes_after(&store, 1200).await.unwrap().len(), 0);
    assert_eq!(changes_after(&store, 0).await, Err(1200));
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue 10: the database, its WAL and its shared-memory file are 0600 from the start, whatever
/// the umask lets through (they were 0644).
#[tokio::test]
async fn store_files_are_private_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store
        .txn(vec![Op::put(Kind::Node, "n1", &obj("n1"), Expect::Any)])
        .await
        .unwrap();
    for name in ["state.db", "state.db-wal", "state.db-shm"] {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
}

/// Issue 10, for stores made before the fix: files left 0644 are tightened when the store
/// opens, and the data written before stays.
#[tokio::test]
async fn store_files_left_world_readable_are_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store
        .txn(vec![Op::put(Kind::Node, "n1", &obj("n1"), Expect::Any)])
        .await
        .unwrap();
    let names = ["state.db", "state.db-wal", "state.db-shm"];
    // Open handles keep the WAL and shm files in place, as after a crash of an older version.
    for name in names {
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    let reopened = Store::open(&path).unwrap();
    for name in names {
        assert_eq!(mode(&dir.path().join(name)), 0o600, "{name}");
    }
    assert_eq!(reopened.revision().await.unwrap(), 1);
    drop(store);
}
