//! The store test suite every backend must pass: what callers may rely on, whatever stores it.
//!
//! `conformance(make)` runs every case on fresh stores from `make`; the SQLite backend runs it on
//! a file and in memory (see `tests`), and an etcd backend will run the same. Backend-specific
//! tests (kill -9 durability, file growth, query plans) stay with their backend.

use hivemind_types::Kind;
use serde_json::json;

use crate::{Change, ChangeOp, Expect, Op, Store, StoreError, WatchEvent};

/// Runs every case, each on a fresh store from `make`. Panics on the first failure, naming it.
pub async fn conformance(make: impl Fn() -> Store) {
    put_sets_meta_and_bumps_revision(make()).await;
    preconditions_table(&make).await;
    failed_precondition_writes_nothing(make()).await;
    list_by_prefix_is_literal_and_ordered(make()).await;
    deletes_are_logged_and_absent_deletes_are_noops(make()).await;
    duplicate_keys_in_one_txn_are_refused(make()).await;
    non_object_values_are_refused(make()).await;
    watchers_see_each_committed_txn_as_one_item(make()).await;
    watch_replays_history_then_follows_live(make()).await;
    watchers_that_fall_behind_lose_nothing(make()).await;
    history_pages_never_split_a_transaction(make()).await;
    a_100k_op_transaction_is_one_item(make()).await;
    compaction_forces_relist(make()).await;
    compaction_never_passes_the_head(make()).await;
    concurrent_txns_commit_in_batches_with_their_own_outcomes(make()).await;
    indexed_reads_select_by_node_and_service(make()).await;
}

/// The next event, or a panic naming the stall.
async fn next(watch: &mut crate::Watch) -> Option<WatchEvent> {
    tokio::time::timeout(std::time::Duration::from_secs(30), watch.next())
        .await
        .expect("the watch stalled")
}

fn revision_of(event: Option<WatchEvent>) -> u64 {
    match event {
        Some(WatchEvent::Txn { revision, changes }) => {
            assert!(changes.iter().all(|c| c.revision == revision));
            revision
        }
        other => panic!("expected a transaction, got {other:?}"),
    }
}

async fn put_node(store: &Store, key: &str) -> u64 {
    store
        .txn(vec![Op::put(Kind::Node, key, &obj(key), Expect::Any)])
        .await
        .unwrap()
}

async fn watch_replays_history_then_follows_live(store: Store) {
    for i in 0..5 {
        put_node(&store, &format!("n{i}")).await;
    }
    let mut watch = store.watch(2);
    for want in 3..=5 {
        assert_eq!(revision_of(next(&mut watch).await), want);
    }
    // Caught up: the next one arrives live, without a gap or a repeat.
    put_node(&store, "n5").await;
    assert_eq!(revision_of(next(&mut watch).await), 6);
    // A watch from the head sees only what comes next.
    let mut head = store.watch(store.revision().await.unwrap());
    put_node(&store, "n6").await;
    assert_eq!(revision_of(next(&mut head).await), 7);
}

/// A watcher that reads nothing while a thousand transactions commit (more than any live buffer
/// holds) then gets every one of them, in order.
async fn watchers_that_fall_behind_lose_nothing(store: Store) {
    let mut watch = store.watch(0);
    for i in 0..1000 {
        put_node(&store, &format!("n{}", i % 7)).await;
    }
    for want in 1..=1000 {
        assert_eq!(revision_of(next(&mut watch).await), want);
    }
}

/// Transactions of 600 changes, read from history in pages of about 1,000 rows, still come
/// whole, one item each.
async fn history_pages_never_split_a_transaction(store: Store) {
    for t in 0..4 {
        let ops = (0..600)
            .map(|i| Op::put(Kind::Event, format!("e{t}-{i}"), &obj("e"), Expect::Any))
            .collect();
        store.txn(ops).await.unwrap();
    }
    let mut watch = store.watch(0);
    for want in 1..=4 {
        match next(&mut watch).await {
            Some(WatchEvent::Txn { revision, changes }) => {
                assert_eq!((revision, changes.len()), (want, 600));
                assert_eq!(changes[599].key, format!("e{}-599", want - 1));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A 100,000-op transaction (a scale-up to 100,000 replicas) commits, and both a live watcher and
/// one replaying history see it as one item with every change, in op order.
async fn a_100k_op_transaction_is_one_item(store: Store) {
    put_node(&store, "before").await;
    let mut live = store.watch(1);
    let ops = (0..100_000)
        .map(|i| Op::put(Kind::Event, format!("e{i:06}"), &obj("e"), Expect::Absent))
        .collect();
    assert_eq!(store.txn(ops).await.unwrap(), 2);
    put_node(&store, "after").await;
    let mut history = store.watch(0);
    assert_eq!(revision_of(next(&mut history).await), 1);
    for watch in [&mut live, &mut history] {
        match next(watch).await {
            Some(WatchEvent::Txn { revision, changes }) => {
                assert_eq!((revision, changes.len()), (2, 100_000));
                assert_eq!(changes[0].key, "e000000");
                assert_eq!(changes[99_999].key, "e099999");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(revision_of(next(watch).await), 3);
    }
    assert_eq!(store.keys(Kind::Event, "").await.unwrap().len(), 100_000);
}

pub(crate) fn obj(name: &str) -> serde_json::Value {
    json!({ "name": name })
}

/// Every change after `from` up to the current revision, read through a watch; `Err` with the
/// compacted revision when that history is gone.
pub(crate) async fn changes_after(store: &Store, from: u64) -> Result<Vec<Change>, u64> {
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

async fn put_sets_meta_and_bumps_revision(store: Store) {
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

async fn preconditions_table(make: &dyn Fn() -> Store) {
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
        let store = make();
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

async fn failed_precondition_writes_nothing(store: Store) {
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

async fn list_by_prefix_is_literal_and_ordered(store: Store) {
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

async fn deletes_are_logged_and_absent_deletes_are_noops(store: Store) {
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

async fn duplicate_keys_in_one_txn_are_refused(store: Store) {
    let err = store
        .txn(vec![
            Op::put(Kind::Node, "n", &obj("1"), Expect::Any),
            Op::delete(Kind::Node, "n", Expect::Any),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateOp { .. }), "{err}");
}

async fn non_object_values_are_refused(store: Store) {
    let err = store
        .txn(vec![Op::put(Kind::Node, "n", &json!([1, 2]), Expect::Any)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotAnObject { .. }), "{err}");
    assert_eq!(store.revision().await.unwrap(), 0);
}

async fn watchers_see_each_committed_txn_as_one_item(store: Store) {
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

async fn compaction_forces_relist(store: Store) {
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

/// Concurrent transactions are committed in batches (one fsync each); a failed precondition in a
/// batch fails only its own transaction, and every committed one gets its own revision.
async fn concurrent_txns_commit_in_batches_with_their_own_outcomes(store: Store) {
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

async fn indexed_reads_select_by_node_and_service(store: Store) {
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

async fn compaction_never_passes_the_head(store: Store) {
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
