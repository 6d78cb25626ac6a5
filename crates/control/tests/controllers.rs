//! The controllers driven by the runner against a real (in-memory) store.

use std::time::Duration;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Meta, Node, NodeState, Replica, Service, ServiceSpec};

fn node(name: &str, last_seen: u64) -> Node {
    Node {
        name: name.into(),
        address: "127.0.0.1".into(),
        state: NodeState::Ready,
        last_seen,
        subnet: None,
        agent_url: None,
        problems: Vec::new(),
        meta: Meta::default(),
    }
}

fn service(replicas: u32) -> Service {
    Service {
        namespace: "default".into(),
        app: "hello".into(),
        name: "web".into(),
        spec: ServiceSpec {
            image: "busybox".into(),
            replicas,
            ..Default::default()
        },
        vip: None,
        meta: Meta::default(),
    }
}

async fn wait_for_replicas(store: &Store, n: usize) -> Vec<Replica> {
    for _ in 0..200 {
        let rs: Vec<Replica> = store.list(Kind::Replica, "").await.unwrap();
        if rs.len() == n {
            return rs;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("replicas never reached {n}");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn service_changes_wake_the_controller() {
    let store = Store::open_in_memory().unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let controllers =
        hivemind_control::spawn_controllers(store.clone(), Default::default(), shutdown);
    store
        .txn(vec![Op::put(
            Kind::Node,
            "n1",
            &node("n1", now()),
            Expect::Any,
        )])
        .await
        .unwrap();
    let s = service(3);
    store
        .txn(vec![Op::put(Kind::Service, s.key(), &s, Expect::Any)])
        .await
        .unwrap();
    let rs = wait_for_replicas(&store, 3).await;
    assert!(rs
        .iter()
        .all(|r| r.node == "n1" && r.id.starts_with("web-")));

    let scaled = service(1);
    store
        .txn(vec![Op::put(Kind::Service, s.key(), &scaled, Expect::Any)])
        .await
        .unwrap();
    wait_for_replicas(&store, 1).await;

    store
        .txn(vec![Op::delete(Kind::Service, s.key(), Expect::Present)])
        .await
        .unwrap();
    wait_for_replicas(&store, 0).await;
    let status = controllers.statuses();
    assert!(status
        .iter()
        .any(|s| s.name == "service-controller" && s.runs >= 3));
    controllers.abort();
}

#[tokio::test]
async fn silent_nodes_are_marked_down() {
    let store = Store::open_in_memory().unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let config = hivemind_control::ControlConfig {
        node_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let controllers = hivemind_control::spawn_controllers(store.clone(), config, shutdown);
    store
        .txn(vec![Op::put(
            Kind::Node,
            "old",
            &node("old", now() - 60_000),
            Expect::Any,
        )])
        .await
        .unwrap();
    for _ in 0..300 {
        let n: Node = store.get(Kind::Node, "old").await.unwrap().unwrap();
        if n.state == NodeState::Down {
            controllers.abort();
            // Recorded in the same transaction, for `hivemind events`.
            let events: Vec<hivemind_types::Event> = store.list(Kind::Event, "").await.unwrap();
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(
                (events[0].reason.as_str(), events[0].object.name.as_str()),
                ("Down", "old")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node never marked down");
}

#[tokio::test]
async fn a_registered_node_that_renews_its_lease_turns_ready_with_an_event() {
    let store = Store::open_in_memory().unwrap();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let controllers =
        hivemind_control::spawn_controllers(store.clone(), Default::default(), shutdown);
    // As the API registers a node: down until node health sees it alive.
    let mut new = node("new", now());
    new.state = NodeState::Down;
    store.leases().renew("new", now());
    store
        .txn(vec![Op::put(Kind::Node, "new", &new, Expect::Absent)])
        .await
        .unwrap();
    for _ in 0..300 {
        let n: Node = store.get(Kind::Node, "new").await.unwrap().unwrap();
        if n.state == NodeState::Ready {
            let events: Vec<hivemind_types::Event> = store.list(Kind::Event, "").await.unwrap();
            assert_eq!(events.len(), 1, "{events:?}");
            assert_eq!(
                (events[0].reason.as_str(), events[0].object.name.as_str()),
                ("Ready", "new")
            );
            // The allocator gave it a subnet.
            for _ in 0..300 {
                let n: Node = store.get(Kind::Node, "new").await.unwrap().unwrap();
                if n.subnet.is_some() {
                    controllers.abort();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("node never got a subnet");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node never marked ready");
}
