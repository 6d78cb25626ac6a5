//! Store throughput figures (printed, never asserted): small transactions one at a time and
//! many at once (group commit), one 100,000-replica transaction, indexed and full reads of the
//! result, and how long a watcher takes to receive that transaction.
//!
//! Run: `benches/store.sh` (or `cargo bench -p hivemind-store --bench store`).

use std::time::{Duration, Instant};

use hivemind_store::{Expect, Op, Store, WatchEvent};
use hivemind_types::{Kind, Meta, Replica};

fn replica(i: usize, nodes: usize) -> Replica {
    Replica {
        id: format!("web-{i:06}"),
        namespace: "default".into(),
        app: "bench".into(),
        service: "web".into(),
        node: format!("node-{:04}", i % nodes),
        spec: hivemind_types::ServiceSpec {
            image: "busybox:1".into(),
            ..Default::default()
        },
        revision_hash: "0123456789abcdef".into(),
        meta: Meta::default(),
    }
}

fn report(what: &str, n: usize, took: Duration) {
    let per_s = n as f64 / took.as_secs_f64();
    println!(
        "{what:<48} {n:>7} in {:>8.1} ms  {per_s:>10.0}/s",
        took.as_secs_f64() * 1e3
    );
}

async fn small_txns(store: &Store, n: usize, concurrency: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(concurrency) {
                let node = serde_json::json!({ "name": format!("n{}", i % 1000), "last_seen": i });
                store
                    .txn(vec![Op::put(
                        Kind::Node,
                        format!("n{}", i % 1000),
                        &node,
                        Expect::Any,
                    )])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

async fn run(label: &str, store: Store) {
    println!("--- {label}");
    let t = small_txns(&store, 2_000, 1).await;
    report("1-op txns, one at a time", 2_000, t);
    let t = small_txns(&store, 20_000, 64).await;
    report("1-op txns, 64 concurrent writers", 20_000, t);

    let n = 100_000;
    let ops: Vec<Op> = (0..n)
        .map(|i| {
            let r = replica(i, 1000);
            Op::put(Kind::Replica, r.id.clone(), &r, Expect::Absent)
        })
        .collect();
    let from = store.revision().await.unwrap();
    let mut watch = store.watch(from);
    let started = Instant::now();
    store.txn(ops).await.unwrap();
    report("one txn of 100,000 replicas (ops)", n, started.elapsed());
    match watch.next().await {
        Some(WatchEvent::Txn { changes, .. }) => report(
            "  ... until a watcher has it whole (changes)",
            changes.len(),
            started.elapsed(),
        ),
        other => panic!("{other:?}"),
    }

    let started = Instant::now();
    let mut found = 0;
    for node in 0..100 {
        found += store
            .replica_list_by_node(&format!("node-{node:04}"))
            .await
            .unwrap()
            .len();
    }
    report(
        "replica_list_by_node x100 (replicas read)",
        found,
        started.elapsed(),
    );
    let started = Instant::now();
    for node in 0..100 {
        let none = store.status_list_by_node(&format!("node-{node:04}")).await;
        assert!(none.unwrap().is_empty());
    }
    report(
        "status_list_by_node x100, empty (per-query cost)",
        100,
        started.elapsed(),
    );
    let started = Instant::now();
    let all: Vec<Replica> = store.list(Kind::Replica, "").await.unwrap();
    report(
        "list all replicas (replicas read)",
        all.len(),
        started.elapsed(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    run(
        "SQLite file (WAL, synchronous=FULL)",
        Store::open(&dir.path().join("state.db")).unwrap(),
    )
    .await;
    run("SQLite in memory", Store::open_in_memory().unwrap()).await;
}
