//! Unit tests of the store: transactions, preconditions, change log, and crash safety.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use hivemind_types::Kind;
use serde_json::json;

use crate::{Change, ChangeOp, Expect, Op, Store, StoreError, WatchEvent};

fn obj(name: &str) -> serde_json::Value {
    json!({ "name": name })
}

/// Every change after `from` up to the current revision, read through a watch; `Err` with the
/// compacted revision when that history is gone.
async fn changes_after(store: &Store, from: u64) -> Result<Vec<Change>, u64> {
    let head = store.revision().await.unwrap();
    let mut watch = store.watch(from);
    let mut out = Vec::new();
    let mut at = from;
    while at < head {
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next());
        match next.await.expect("the watch stalled") {
            Some(WatchEvent::Txn { revision, changes }) => {
                assert!(revision > at, "revision {revision} after {at}");
                at = revision;
                out.extend(changes);
            }
            Some(WatchEvent::Compacted { compacted }) => return Err(compacted),
            None => panic!("the watch ended"),
        }
    }
    Ok(out)
}

#[tokio::test]
async fn put_sets_meta_and_bumps_revision() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.revision().await.unwrap(), 0);
    let rev = store
        .txn(vec![Op::put(
            Kind::App,
            "default/a",
            &obj("a"),
            Expect::Absent,
        )])
        .await
        .unwrap();
    assert_eq!(rev, 1);
    let got: serde_json::Value = store.get(Kind::App, "default/a").await.unwrap().unwrap();
    assert_eq!(got["meta"]["revision"], 1);
    let created = got["meta"]["created_at"].as_u64().unwrap();
    store
        .txn(vec![Op::put(
            Kind::App,
            "default/a",
            &obj("a2"),
            Expect::Revision(1),
        )])
        .await
        .unwrap();
    let got: serde_json::Value = store.get(Kind::App, "default/a").await.unwrap().unwrap();
    assert_eq!(got["meta"]["revision"], 2);
    assert_eq!(got["meta"]["created_at"].as_u64().unwrap(), created);
    assert_eq!(got["name"], "a2");
}

#[tokio::test]
async fn preconditions_table() {
    // (expectation, object exists at revision 1?, should succeed)
    let cases = [
        (Expect::Any, false, true),
        (Expect::Any, true, true),
        (Expect::Absent, false, true),
        (Expect::Absent, true, false),
        (Expect::Present, false, false),
        (Expect::Present, true, true),
        (Expect::Revision(1), true, true),
        (Expect::Revision(7), true, false),
        (Expect::Revision(1), false, false),
    ];
    for (expect, exists, ok) in cases {
        let store = Store::open_in_memory().unwrap();
        if exists {
            store
                .txn(vec![Op::put(Kind::Node, "n1", &obj("n1"), Expect::Any)])
                .await
                .unwrap();
        }
        let result = store
            .txn(vec![Op::put(Kind::Node, "n1", &obj("x"), expect)])
            .await;
        assert_eq!(result.is_ok(), ok, "{expect:?} exists={exists}: {result:?}");
        if let Err(e) = result {
            assert!(e.is_conflict(), "{e}");
        }
    }
}

#[tokio::test]
async fn failed_precondition_writes_nothing() {
    let store = Store::open_in_memory().unwrap();
    store
        .txn(vec![Op::put(
            Kind::App,
            "default/a",
            &obj("a"),
            Expect::Any,
        )])
        .await
        .unwrap();
    let err = store
        .txn(vec![
            Op::put(Kind::Service, "default/a/web", &obj("web"), Expect::Absent),
            Op::put(Kind::App, "default/a", &obj("a"), Expect::Absent),
        ])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert!(store
        .get::<serde_json::Value>(Kind::Service, "default/a/web")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.revision().await.unwrap(), 1);
    assert_eq!(changes_after(&store, 0).await.unwrap().len(), 1);
}

#[tokio::test]
async fn list_by_prefix_is_literal_and_ordered() {
    let store = Store::open_in_memory().unwrap();
    for key in [
        "default/b/x",
        "default/a/y",
        "default/a/x",
        "default/a_/z",
        "other/a/x",
    ] {
        store
            .txn(vec![Op::put(Kind::Service, key, &obj(key), Expect::Any)])
            .await
            .unwrap();
    }
    let got: Vec<serde_json::Value> = store.list(Kind::Service, "default/a/").await.unwrap();
    let names: Vec<_> = got.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default/a/x", "default/a/y"]);
    assert_eq!(
        store
            .list::<serde_json::Value>(Kind::Service, "")
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(store
        .list::<serde_json::Value>(Kind::App, "")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.keys(Kind::Service, "default/a").await.unwrap(),
        ["default/a/x", "default/a/y", "default/a_/z"]
    );
    assert!(store.keys(Kind::App, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn deletes_are_logged_and_absent_deletes_are_noops() {
    let store = Store::open_in_memory().unwrap();
    store
        .txn(vec![Op::put(
            Kind::Replica,
            "web-aaaaa",
            &obj("r"),
            Expect::Any,
        )])
        .await
        .unwrap();
    let rev = store
        .txn(vec![Op::delete(Kind::Replica, "web-bbbbb", Expect::Any)])
        .await
        .unwrap();
    assert_eq!(rev, 1, "deleting an absent object changes nothing");
    let rev = store
        .txn(vec![Op::delete(
            Kind::Replica,
            "web-aaaaa",
            Expect::Present,
        )])
        .await
        .unwrap();
    assert_eq!(rev, 2);
    let changes = changes_after(&store, 1).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].op, ChangeOp::Delete);
    assert_eq!(changes[0].value["name"], "r");
    assert!(store
        .txn(vec![Op::delete(
            Kind::Replica,
            "web-aaaaa",
            Expect::Present
        )])
        .await
        .unwrap_err()
        .is_conflict());
}

#[tokio::test]
async fn duplicate_keys_in_one_txn_are_refused() {
    let store = Store::open_in_memory().unwrap();
    let err = store
        .txn(vec![
            Op::put(Kind::Node, "n", &obj("1"), Expect::Any),
            Op::delete(Kind::Node, "n", Expect::Any),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateOp { .. }), "{err}");
}

#[tokio::test]
async fn non_object_values_are_refused() {
    let store = Store::open_in_memory().unwrap();
    let err = store
        .txn(vec![Op::put(Kind::Node, "n", &json!([1, 2]), Expect::Any)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotAnObject { .. }), "{err}");
    assert_eq!(store.revision().await.unwrap(), 0);
}

#[tokio::test]
async fn watchers_see_each_committed_txn_as_one_item() {
    let store = Store::open_in_memory().unwrap();
    let mut watch = store.watch(0);
    store
        .txn(vec![
            Op::put(Kind::App, "default/a", &obj("a"), Expect::Any),
            Op::put(Kind::Service, "default/a/web", &obj("web"), Expect::Any),
        ])
        .await
        .unwrap();
    let Some(WatchEvent::Txn { revision, changes }) = watch.next().await else {
        panic!("no transaction");
    };
    assert_eq!(revision, 1);
    let kinds: Vec<_> = changes.iter().map(|c| (c.revision, c.kind)).collect();
    assert_eq!(kinds, [(1, Kind::App), (1, Kind::Service)]);
}

#[tokio::test]
async fn compaction_forces_relist() {
    let store = Store::open_in_memory().unwrap();
    for i in 0..5 {
        store
            .txn(vec![Op::put(
                Kind::Node,
                format!("n{i}"),
                &obj("n"),
                Expect::Any,
            )])
            .await
            .unwrap();
    }
    store.compact(3).await.unwrap();
    assert_eq!(changes_after(&store, 2).await, Err(3));
    assert_eq!(changes_after(&store, 3).await.unwrap().len(), 2);
    assert_eq!(
        store
            .list::<serde_json::Value>(Kind::Node, "")
            .await
            .unwrap()
            .len(),
        5
    );
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

/// Concurrent transactions are committed in batches (one fsync each); a failed precondition in a
/// batch fails only its own transaction, and every committed one gets its own revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_txns_commit_in_batches_with_their_own_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // Every task also tries to create "same": exactly one of those wins.
            let key = if i % 2 == 0 {
                format!("n{i}")
            } else {
                "same".to_string()
            };
            store
                .txn(vec![Op::put(Kind::Node, key, &obj("n"), Expect::Absent)])
                .await
        }));
    }
    let mut revisions = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(rev) => revisions.push(rev),
            Err(e) => {
                assert!(e.is_conflict(), "{e}");
                conflicts += 1;
            }
        }
    }
    revisions.sort();
    assert_eq!(revisions, (1..=33).collect::<Vec<u64>>());
    assert_eq!(conflicts, 31);
    assert_eq!(store.revision().await.unwrap(), 33);
    assert_eq!(store.keys(Kind::Node, "").await.unwrap().len(), 33);
}

fn replica(id: &str, app: &str, service: &str, node: &str) -> hivemind_types::Replica {
    hivemind_types::Replica {
        id: id.into(),
        namespace: "default".into(),
        app: app.into(),
        service: service.into(),
        node: node.into(),
        spec: Default::default(),
        revision_hash: String::new(),
        meta: Default::default(),
    }
}

#[tokio::test]
async fn indexed_reads_select_by_node_and_service() {
    let store = Store::open_in_memory().unwrap();
    let mut ops = Vec::new();
    for (id, app, service, node) in [
        ("web-1", "shop", "web", "n1"),
        ("web-2", "shop", "web", "n2"),
        ("db-1", "shop", "db", "n1"),
        ("web-3", "blog", "web", "n1"),
    ] {
        ops.push(Op::put(
            Kind::Replica,
            id,
            &replica(id, app, service, node),
            Expect::Absent,
        ));
        let status = json!({ "id": id, "node": node, "state": "running", "restarts": 0 });
        ops.push(Op::put(Kind::ReplicaStatus, id, &status, Expect::Absent));
    }
    // Another kind with a `node` field is not a replica.
    ops.push(Op::put(
        Kind::Event,
        "e",
        &json!({ "node": "n1" }),
        Expect::Any,
    ));
    store.txn(ops).await.unwrap();
    let ids = |rs: Vec<hivemind_types::Replica>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.replica_list_by_node("n1").await.unwrap()),
        ["db-1", "web-1", "web-3"]
    );
    assert_eq!(
        ids(store
            .replica_list_by_service("default", "shop", "web")
            .await
            .unwrap()),
        ["web-1", "web-2"]
    );
    assert!(store
        .replica_list_by_service("other", "shop", "web")
        .await
        .unwrap()
        .is_empty());
    let statuses = store.status_list_by_node("n2").await.unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].id, "web-2");
    // A replica moved to another node leaves the old node's index.
    store
        .txn(vec![Op::put(
            Kind::Replica,
            "web-1",
            &replica("web-1", "shop", "web", "n2"),
            Expect::Any,
        )])
        .await
        .unwrap();
    assert_eq!(
        ids(store.replica_list_by_node("n2").await.unwrap()),
        ["web-1", "web-2"]
    );
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

#[tokio::test]
async fn compaction_never_passes_the_head() {
    let store = Store::open_in_memory().unwrap();
    store
        .txn(vec![Op::put(Kind::Node, "n", &obj("n"), Expect::Any)])
        .await
        .unwrap();
    store.compact(u64::MAX).await.unwrap();
    assert_eq!(changes_after(&store, 0).await, Err(1));
    let mut watch = store.watch(1);
    store
        .txn(vec![Op::put(Kind::Node, "m", &obj("m"), Expect::Any)])
        .await
        .unwrap();
    assert!(matches!(
        watch.next().await,
        Some(WatchEvent::Txn { revision: 2, .. })
    ));
}
