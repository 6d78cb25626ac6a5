//! The events controller against a real (in-memory) store: statuses and nodes written as the
//! API writes them, events read back as `hivemind events` lists them.

use std::time::{Duration, Instant};

use hivemind_types::event::reason;
use hivemind_types::{ExitRecord, Meta, NodeState, ReplicaState};

use super::*;

fn replica(id: &str) -> Replica {
    Replica {
        id: id.into(),
        namespace: "default".into(),
        app: "shop".into(),
        service: "web".into(),
        node: "n1".into(),
        spec: Default::default(),
        revision_hash: String::new(),
        meta: Meta::default(),
    }
}

fn exit(code: i32, at: u64) -> ExitRecord {
    ExitRecord {
        exit_code: code,
        at,
        oom: false,
        restarts: 0,
        restart_delay_ms: None,
        adopted: false,
        last_lines: vec![format!("bye {code}")],
    }
}

fn status(id: &str, state: ReplicaState, exits: Vec<ExitRecord>) -> ObservedReplica {
    ObservedReplica {
        id: id.into(),
        node: "n1".into(),
        state,
        pid: None,
        exit_code: exits.last().map(|e| e.exit_code),
        restarts: 0,
        message: String::new(),
        started_at: None,
        ip: None,
        exits,
        failure: None,
        health: None,
        meta: Meta::default(),
    }
}

fn node(problems: Vec<NodeProblem>) -> Node {
    Node {
        name: "n1".into(),
        address: "10.0.0.1".into(),
        state: NodeState::Ready,
        last_seen: 0,
        subnet: None,
        agent_url: None,
        problems,
        meta: Meta::default(),
    }
}

fn problem(port: u16) -> NodeProblem {
    NodeProblem {
        reason: reason::PORT_UNAVAILABLE.to_string(),
        message: format!("published port {port} is not served: in use"),
    }
}

async fn put<T: serde::Serialize>(store: &Store, kind: Kind, key: &str, value: &T) {
    store
        .txn(vec![Op::put(kind, key, value, Expect::Any)])
        .await
        .unwrap();
}

async fn events(store: &Store) -> Vec<Event> {
    store.list(Kind::Event, "").await.unwrap()
}

/// The events once there are `count` of them (the controller writes asynchronously).
async fn wait_for(store: &Store, count: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = events(store).await;
        if got.len() >= count {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {count} events: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now() -> u64 {
    now_millis()
}

#[tokio::test]
async fn a_stored_exit_becomes_one_event_with_its_lines() {
    let store = Store::open_in_memory().unwrap();
    put(&store, Kind::Replica, "web-1", &replica("web-1")).await;
    let (_stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_events(store.clone(), stopped));
    // Give the controller its first list before the status lands (a status already stored at
    // start counts as recorded).
    tokio::time::sleep(Duration::from_millis(100)).await;

    let at = now();
    let exited = status("web-1", ReplicaState::Exited, vec![exit(3, at)]);
    put(&store, Kind::ReplicaStatus, "web-1", &exited).await;
    let got = wait_for(&store, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].reason, reason::EXITED);
    assert_eq!(got[0].last_lines, ["bye 3"]);
    assert_eq!(got[0].object.service.as_deref(), Some("web"));

    // The status rewritten with other changes (restarted, running) but the same exit: no new
    // event. A second exit, then, is one more.
    let running = ObservedReplica {
        restarts: 1,
        ..status("web-1", ReplicaState::Running, vec![exit(3, at)])
    };
    put(&store, Kind::ReplicaStatus, "web-1", &running).await;
    let again = status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(3, at), exit(0, at + 1)],
    );
    put(&store, Kind::ReplicaStatus, "web-1", &again).await;
    let got = wait_for(&store, 2).await;
    let codes: Vec<_> = got.iter().map(|e| e.exit_code).collect();
    assert_eq!(codes, [Some(3), Some(0)]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(events(&store).await.len(), 2);
    task.abort();
}

#[tokio::test]
async fn node_problems_are_recorded_when_they_appear_and_when_they_go() {
    let store = Store::open_in_memory().unwrap();
    put(&store, Kind::Node, "n1", &node(vec![])).await;
    let (_stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_events(store.clone(), stopped));
    tokio::time::sleep(Duration::from_millis(100)).await;

    put(
        &store,
        Kind::Node,
        "n1",
        &node(vec![problem(80), problem(81)]),
    )
    .await;
    assert_eq!(wait_for(&store, 2).await.len(), 2);
    // The node rewritten with the same problems (a state change): nothing new.
    let down = Node {
        state: NodeState::Down,
        ..node(vec![problem(80), problem(81)])
    };
    put(&store, Kind::Node, "n1", &down).await;
    put(&store, Kind::Node, "n1", &node(vec![problem(81)])).await;
    let got = wait_for(&store, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[2].reason, reason::RESOLVED);
    assert!(got[2].message.contains("port 80"), "{got:?}");
    task.abort();
}

#[tokio::test]
async fn what_is_stored_at_start_is_not_recorded_again() {
    let store = Store::open_in_memory().unwrap();
    let exited = status("web-1", ReplicaState::Exited, vec![exit(3, now())]);
    put(&store, Kind::ReplicaStatus, "web-1", &exited).await;
    put(&store, Kind::Node, "n1", &node(vec![problem(80)])).await;
    let (_stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_events(store.clone(), stopped));
    // A later change shows the controller has run: only its event is there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    put(&store, Kind::Node, "n1", &node(vec![])).await;
    let got = wait_for(&store, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reasons: Vec<_> = events(&store).await.into_iter().map(|e| e.reason).collect();
    assert_eq!(reasons, [reason::RESOLVED], "{got:?}");
    task.abort();
}

#[test]
fn a_relist_after_compaction_records_what_the_gap_held() {
    let at = 1_000_000;
    let mut cache = Cache::from_lists(
        &[status("web-1", ReplicaState::Running, vec![])],
        &[node(vec![])],
    );
    let mut pending = Pending::default();
    cache.relisted(
        vec![
            status("web-1", ReplicaState::Exited, vec![exit(1, at)]),
            status("web-2", ReplicaState::Running, vec![]),
        ],
        vec![node(vec![problem(80)])],
        at,
        &mut pending,
    );
    let news: Vec<_> = pending.news.iter().map(|(_, s)| s.id.as_str()).collect();
    assert_eq!(news, ["web-1"]);
    assert_eq!(pending.events.len(), 1);
    // The same list again brings nothing.
    let mut again = Pending::default();
    cache.relisted(
        vec![status("web-1", ReplicaState::Exited, vec![exit(1, at)])],
        vec![node(vec![problem(80)])],
        at,
        &mut again,
    );
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn a_deleted_status_is_forgotten() {
    let mut cache = Cache::from_lists(
        &[status("web-1", ReplicaState::Exited, vec![exit(1, 5)])],
        &[],
    );
    let delete = Change {
        revision: 2,
        kind: Kind::ReplicaStatus,
        key: "web-1".into(),
        op: ChangeOp::Delete,
        value: serde_json::Value::Null,
    };
    let mut pending = Pending::default();
    cache.apply(&delete, 10, &mut pending);
    assert!(cache.statuses.is_empty());
    assert!(pending.is_empty());
}
