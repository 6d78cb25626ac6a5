//! Assignments, long polls, report diffing and the replica view against an in-memory store.

use std::time::{Duration, Instant};

use hivemind_client::wire::ReplicaFilter;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{
    Assignment, ClusterNetwork, ExitRecord, Kind, Meta, Node, NodeReport, NodeState,
    ObservedReplica, Replica, ReplicaState,
};

use super::*;
use crate::assignments::{wait_assignment, Hub};

/// `node`'s assignment now, through a hub started on `store`.
async fn assignment(store: &Store, node: &str) -> Assignment {
    let hub = Hub::spawn(store.clone());
    wait_assignment(
        &hub,
        store,
        &ClusterNetwork::default(),
        node,
        None,
        Duration::ZERO,
        std::future::pending(),
    )
    .await
    .unwrap()
}

fn replica(id: &str, service: &str, node: &str) -> Replica {
    crate::testing::replica(id, "shop", service, node)
}

async fn put(store: &Store, r: &Replica) -> u64 {
    store
        .txn(vec![Op::put(Kind::Replica, r.id.clone(), r, Expect::Any)])
        .await
        .unwrap()
}

fn status(id: &str, node: &str, state: ReplicaState) -> ObservedReplica {
    ObservedReplica {
        id: id.into(),
        node: node.into(),
        state,
        pid: None,
        exit_code: None,
        restarts: 0,
        message: String::new(),
        started_at: None,
        ip: None,
        exits: Vec::new(),
        failure: None,
        health: None,
        meta: Meta::default(),
    }
}

fn node_report(node: &str, replicas: Vec<ObservedReplica>) -> NodeReport {
    NodeReport {
        node: node.into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems: Vec::new(),
        generation: 0,
        replicas,
    }
}

#[tokio::test]
async fn assignment_holds_only_the_nodes_replicas() {
    let store = Store::open_in_memory().unwrap();
    put(&store, &replica("web-1", "web", "n1")).await;
    put(&store, &replica("web-2", "web", "n2")).await;
    put(&store, &replica("db-1", "db", "n1")).await;
    let a = assignment(&store, "n1").await;
    assert_eq!(a.node, "n1");
    assert_eq!(a.generation, 3);
    let ids: Vec<_> = a.replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["db-1", "web-1"]);
    assert!(assignment(&store, "n9").await.replicas.is_empty());
}

#[tokio::test]
async fn long_poll_answers_at_once_when_a_past_change_touched_the_node() {
    let store = Store::open_in_memory().unwrap();
    // Started first: a hub that lists the store counts every node as touched at that revision.
    let hub = Hub::spawn(store.clone());
    let net = ClusterNetwork::default();
    let gen = put(&store, &replica("web-1", "web", "n1")).await;
    put(&store, &replica("web-2", "web", "n2")).await;
    // Only n2 changed since `gen`: n1 waits; n2 does not.
    let t = Instant::now();
    let a = wait_assignment(
        &hub,
        &store,
        &net,
        "n1",
        Some(gen),
        Duration::from_millis(200),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(190));
    assert_eq!(a.replicas.len(), 1);
    let t = Instant::now();
    let a = wait_assignment(
        &hub,
        &store,
        &net,
        "n2",
        Some(gen),
        Duration::from_secs(10),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(a.replicas[0].id, "web-2");
    // No `after`: always at once.
    let a = wait_assignment(
        &hub,
        &store,
        &net,
        "n3",
        None,
        Duration::from_secs(10),
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(a.replicas.is_empty());
}

#[tokio::test]
async fn long_poll_wakes_on_a_live_change_for_the_node_and_on_a_move_away() {
    let store = Store::open_in_memory().unwrap();
    let hub = Hub::spawn(store.clone());
    let gen = put(&store, &replica("web-1", "web", "n1")).await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            wait_assignment(
                &hub,
                &store,
                &ClusterNetwork::default(),
                "n1",
                Some(gen),
                Duration::from_secs(20),
                std::future::pending(),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Unrelated writes do not wake it.
    put(&store, &replica("web-9", "web", "n2")).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished());
    let moved = put(&store, &replica("web-1", "web", "n3")).await;
    let a = tokio::time::timeout(Duration::from_secs(2), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(a.replicas.is_empty(), "web-1 moved away");
    assert!(a.generation >= moved);
}

#[tokio::test]
async fn report_writes_only_changed_statuses_and_keeps_drain() {
    let store = Store::open_in_memory().unwrap();
    put(&store, &replica("web-1", "web", "n1")).await;
    let r = node_report("n1", vec![status("web-1", "n1", ReplicaState::Running)]);
    report(&store, "n1", &r, 1000).await.unwrap();
    let node: Node = store.get(Kind::Node, "n1").await.unwrap().unwrap();
    // Registered down: node health marks it ready once it sees the lease.
    assert_eq!(
        (node.state, node.last_seen, node.address.as_str()),
        (NodeState::Down, 1000, "10.0.0.1")
    );
    let s1: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();

    // Same status again: nothing is written; the report renews the node's lease, which
    // `nodes` shows as last seen.
    let before = store.revision().await.unwrap();
    let rev = report(&store, "n1", &r, 2000).await.unwrap();
    assert_eq!(rev, before);
    assert_eq!(store.leases().renewed_at("n1"), Some(2000));
    assert_eq!(nodes(&store).await.unwrap()[0].last_seen, 2000);

    // A changed address rewrites the node, keeping what others wrote (its state).
    let mut ready = store.get::<Node>(Kind::Node, "n1").await.unwrap().unwrap();
    ready.state = NodeState::Ready;
    store
        .txn(vec![Op::put(Kind::Node, "n1", &ready, Expect::Any)])
        .await
        .unwrap();
    let moved = NodeReport {
        address: "10.0.0.2".into(),
        ..r.clone()
    };
    report(&store, "n1", &moved, 2500).await.unwrap();
    let node: Node = store.get(Kind::Node, "n1").await.unwrap().unwrap();
    assert_eq!(
        (node.state, node.last_seen, node.address.as_str()),
        (NodeState::Ready, 2500, "10.0.0.2")
    );
    let s2: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s1.meta.revision, s2.meta.revision);

    // A drained node stays drained.
    let mut drained = store.get::<Node>(Kind::Node, "n1").await.unwrap().unwrap();
    drained.state = NodeState::Drained;
    store
        .txn(vec![Op::put(Kind::Node, "n1", &drained, Expect::Any)])
        .await
        .unwrap();
    let r = node_report("n1", vec![status("web-1", "n1", ReplicaState::Exited)]);
    report(&store, "n1", &r, 3000).await.unwrap();
    let node: Node = store.get(Kind::Node, "n1").await.unwrap().unwrap();
    assert_eq!(node.state, NodeState::Drained);
    let s3: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s3.state, ReplicaState::Exited);
}

#[tokio::test]
async fn exits_are_stored_with_their_last_lines_bounded_and_written_once() {
    let store = Store::open_in_memory().unwrap();
    put(&store, &replica("web-1", "web", "n1")).await;
    let exit = |at: u64| ExitRecord {
        exit_code: 3,
        at,
        oom: false,
        restarts: 0,
        restart_delay_ms: None,
        adopted: false,
        // More, and longer, lines than any agent sends.
        last_lines: (0..50)
            .map(|i| format!("{i} {}", "x".repeat(1_000)))
            .collect(),
    };
    let exited = ObservedReplica {
        exits: (0..6).map(exit).collect(),
        ..status("web-1", "n1", ReplicaState::Exited)
    };
    let r = node_report("n1", vec![exited]);
    report(&store, "n1", &r, 1000).await.unwrap();
    let stored: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();
    // The events controller makes the exits' events from the stored status: the lines stay,
    // bounded as an agent bounds them.
    let ats: Vec<u64> = stored.exits.iter().map(|e| e.at).collect();
    assert_eq!(ats, [3, 4, 5]);
    for e in &stored.exits {
        assert_eq!(e.last_lines.len(), ExitRecord::MAX_LINES);
        assert!(e.last_lines[0].starts_with("40 "), "{:?}", e.last_lines[0]);
        assert!(e
            .last_lines
            .iter()
            .all(|l| l.chars().count() <= ExitRecord::MAX_LINE_CHARS + 1));
    }
    // The same report again writes nothing.
    let before = store.revision().await.unwrap();
    assert_eq!(report(&store, "n1", &r, 2000).await.unwrap(), before);
}

#[tokio::test]
async fn unreported_statuses_go_only_when_their_replica_is_gone() {
    let store = Store::open_in_memory().unwrap();
    put(&store, &replica("web-1", "web", "n1")).await;
    put(&store, &replica("web-2", "web", "n1")).await;
    let r = node_report(
        "n1",
        vec![
            status("web-1", "n1", ReplicaState::Running),
            status("web-2", "n1", ReplicaState::Running),
            // The agent still runs a container whose Replica object is already gone.
            status("web-3", "n1", ReplicaState::Running),
        ],
    );
    report(&store, "n1", &r, 1).await.unwrap();
    // n2's status must never be touched by n1's reports.
    report(
        &store,
        "n2",
        &node_report("n2", vec![status("db-1", "n2", ReplicaState::Running)]),
        1,
    )
    .await
    .unwrap();

    store
        .txn(vec![Op::delete(Kind::Replica, "web-2", Expect::Any)])
        .await
        .unwrap();
    report(&store, "n1", &node_report("n1", vec![]), 2)
        .await
        .unwrap();
    let ids: Vec<String> = store
        .list::<ObservedReplica>(Kind::ReplicaStatus, "")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["db-1", "web-1"]);
}

#[tokio::test]
async fn malformed_reports_write_nothing() {
    let store = Store::open_in_memory().unwrap();
    let rev = store.revision().await.unwrap();
    let twice = node_report(
        "n1",
        vec![
            status("a", "n1", ReplicaState::Running),
            status("a", "n1", ReplicaState::Failed),
        ],
    );
    let mut no_address = node_report("n1", vec![]);
    no_address.address.clear();
    let cases = [
        ("n2", node_report("n1", vec![]), 400, "node"),
        (
            "n1",
            node_report("n1", vec![status("a", "n2", ReplicaState::Running)]),
            422,
            "replicas[0].node",
        ),
        ("n1", twice, 422, "replicas[1].id"),
        ("n1", no_address, 422, "address"),
    ];
    for (path_node, r, code, field) in cases {
        let err = report(&store, path_node, &r, 1).await.unwrap_err();
        assert_eq!((err.status().as_u16(), err.field()), (code, Some(field)));
    }
    assert_eq!(store.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn replica_views_join_statuses_and_filter() {
    let store = Store::open_in_memory().unwrap();
    put(&store, &replica("web-1", "web", "n1")).await;
    put(&store, &replica("web-2", "web", "n2")).await;
    put(&store, &replica("db-1", "db", "n1")).await;
    report(
        &store,
        "n1",
        &node_report("n1", vec![status("web-1", "n1", ReplicaState::Running)]),
        1,
    )
    .await
    .unwrap();
    let all = replica_views(&store, "default", &ReplicaFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    let web1 = all.iter().find(|v| v.replica.id == "web-1").unwrap();
    assert_eq!(web1.status.as_ref().unwrap().state, ReplicaState::Running);
    assert!(all
        .iter()
        .find(|v| v.replica.id == "db-1")
        .unwrap()
        .status
        .is_none());
    let filter = ReplicaFilter {
        service: Some("web".into()),
        node: Some("n1".into()),
        ..Default::default()
    };
    let some = replica_views(&store, "default", &filter).await.unwrap();
    assert_eq!(some.len(), 1);
    assert!(replica_views(&store, "other", &ReplicaFilter::default())
        .await
        .unwrap()
        .is_empty());

    // Many replicas take the scanning path; the join must agree.
    for i in 0..70 {
        put(&store, &replica(&format!("x-{i}"), "x", "n1")).await;
    }
    let many = replica_views(&store, "default", &ReplicaFilter::default())
        .await
        .unwrap();
    assert_eq!(many.len(), 73);
    assert!(many
        .iter()
        .find(|v| v.replica.id == "web-1")
        .unwrap()
        .status
        .is_some());
}
