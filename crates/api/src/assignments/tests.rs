use serde_json::json;

use super::*;

fn change(kind: Kind, key: &str, op: ChangeOp, value: serde_json::Value) -> Change {
    Change {
        revision: 0,
        kind,
        key: key.into(),
        op,
        value,
    }
}

fn replica(id: &str, app: &str, node: &str) -> Change {
    let value = json!({
        "id": id, "namespace": "default", "app": app, "service": "web", "node": node,
        "spec": {"image": "x"}, "revision_hash": "h",
    });
    change(Kind::Replica, id, ChangeOp::Put, value)
}

fn endpoints(app: &str, service: &str, published: Option<u16>) -> Change {
    let value = json!({
        "namespace": "default", "app": app, "service": service,
        "ports": [{"target": 80, "published": published}],
        "replicas": [{"id": "x", "node": "n0", "ip": "10.42.0.2", "ready": true}],
    });
    change(
        Kind::Endpoints,
        &format!("default/{app}/{service}"),
        ChangeOp::Put,
        value,
    )
}

/// 100 nodes with a waiter each; `shop` runs on n0..n2, `blog` on n3.
fn cluster() -> (Routes, Vec<watch::Receiver<u64>>) {
    let mut routes = Routes::default();
    routes.relist(10, &[], &[], &[]);
    let waiters: Vec<_> = (0..100)
        .map(|i| routes.subscribe(&format!("n{i}")))
        .collect();
    let mut revision = 10;
    for (id, app, node) in [
        ("shop-a", "shop", "n0"),
        ("shop-b", "shop", "n1"),
        ("shop-c", "shop", "n2"),
        ("blog-a", "blog", "n3"),
    ] {
        revision += 1;
        routes.apply(revision, &[replica(id, app, node)]);
    }
    (routes, waiters)
}

/// The nodes whose waiter was woken since the last call, marking them seen.
fn woken(waiters: &mut [watch::Receiver<u64>]) -> Vec<usize> {
    waiters
        .iter_mut()
        .enumerate()
        .filter_map(|(i, w)| {
            let changed = w.has_changed().unwrap();
            w.borrow_and_update();
            changed.then_some(i)
        })
        .collect()
}

#[test]
fn a_replica_change_wakes_its_node_and_the_nodes_whose_endpoints_include_it() {
    let (mut routes, mut waiters) = cluster();
    woken(&mut waiters);

    // A new replica on n0: only n0's replica list changes.
    routes.apply(20, &[replica("shop-d", "shop", "n0")]);
    assert_eq!(woken(&mut waiters), [0]);
    assert_eq!(routes.touched("n0"), 20);
    assert_eq!(
        routes.touched("n5"),
        10,
        "untouched nodes stay at the relist"
    );

    // Its status says running: no node hears of the status itself...
    let status = json!({"id": "shop-d", "node": "n0", "state": "running", "ip": "10.42.0.9"});
    routes.apply(
        21,
        &[change(Kind::ReplicaStatus, "shop-d", ChangeOp::Put, status)],
    );
    assert!(woken(&mut waiters).is_empty());
    // ...but the endpoints controller's write of shop/web reaches every node running shop.
    routes.apply(22, &[endpoints("shop", "web", None)]);
    assert_eq!(woken(&mut waiters), [0, 1, 2]);

    // Services, apps, events and claims are nobody's assignment.
    routes.apply(
        23,
        &[
            change(Kind::Service, "default/shop/web", ChangeOp::Put, json!({})),
            change(Kind::Event, "e1", ChangeOp::Put, json!({})),
            change(Kind::Address, "vip/10.43.0.2", ChangeOp::Put, json!({})),
        ],
    );
    assert!(woken(&mut waiters).is_empty());
    assert_eq!(routes.processed(), 23);
}

#[test]
fn public_services_reach_every_node_until_they_stop_being_public() {
    let (mut routes, mut waiters) = cluster();
    woken(&mut waiters);
    routes.apply(30, &[endpoints("blog", "front", Some(8080))]);
    assert_eq!(woken(&mut waiters).len(), 100);
    assert_eq!(routes.public(), ["default/blog/front"]);
    assert_eq!(routes.touched("n77"), 30);
    // Unpublishing it is news for every node too (they must drop the route).
    routes.apply(31, &[endpoints("blog", "front", None)]);
    assert_eq!(woken(&mut waiters).len(), 100);
    assert!(routes.public().is_empty());
    routes.apply(32, &[endpoints("blog", "front", None)]);
    assert_eq!(woken(&mut waiters), [3]);
}

#[test]
fn moves_and_deletes_wake_the_old_node() {
    let (mut routes, mut waiters) = cluster();
    woken(&mut waiters);
    routes.apply(40, &[replica("shop-a", "shop", "n9")]);
    assert_eq!(woken(&mut waiters), [0, 9]);
    routes.apply(
        41,
        &[change(
            Kind::Replica,
            "shop-a",
            ChangeOp::Delete,
            json!({"node": "n9"}),
        )],
    );
    assert_eq!(woken(&mut waiters), [9]);
    // n9 runs no shop replica any more, so shop's endpoints no longer concern it.
    routes.apply(42, &[endpoints("shop", "web", None)]);
    assert_eq!(woken(&mut waiters), [1, 2]);
}

#[test]
fn only_a_new_subnet_wakes_a_node_for_its_node_object() {
    let (mut routes, mut waiters) = cluster();
    woken(&mut waiters);
    let node = |subnet: Option<&str>| {
        change(
            Kind::Node,
            "n4",
            ChangeOp::Put,
            json!({"name": "n4", "address": "a", "state": "ready", "last_seen": 1, "subnet": subnet}),
        )
    };
    routes.apply(50, &[node(None)]);
    assert!(woken(&mut waiters).is_empty(), "problems or state changed");
    routes.apply(51, &[node(Some("10.42.4.0/24"))]);
    assert_eq!(woken(&mut waiters), [4]);
    routes.apply(52, &[node(Some("10.42.4.0/24"))]);
    assert!(woken(&mut waiters).is_empty());
}

#[test]
fn a_relist_wakes_everyone_and_late_subscribers_see_the_floor() {
    let (mut routes, mut waiters) = cluster();
    woken(&mut waiters);
    routes.relist(99, &[], &[], &[]);
    assert_eq!(woken(&mut waiters).len(), 100);
    let late = routes.subscribe("new-node");
    assert_eq!(*late.borrow(), 99);
}

#[tokio::test]
async fn assignments_hold_own_replicas_and_needed_endpoints_only() {
    let store = Store::open_in_memory().unwrap();
    let spec = serde_json::to_value(hivemind_types::ServiceSpec {
        image: "x".into(),
        ..Default::default()
    })
    .unwrap();
    let put = |kind, key: &str, value: serde_json::Value| {
        hivemind_store::Op::put(kind, key, &value, hivemind_store::Expect::Any)
    };
    let replica = |id: &str, app: &str, node: &str| {
        put(
            Kind::Replica,
            id,
            json!({"id": id, "namespace": "default", "app": app, "service": "web", "node": node,
                   "spec": spec, "revision_hash": "h"}),
        )
    };
    let endpoints = |app: &str, published: Option<u16>| {
        put(
            Kind::Endpoints,
            &format!("default/{app}/web"),
            json!({"namespace": "default", "app": app, "service": "web",
                   "ports": [{"target": 80, "published": published}]}),
        )
    };
    store
        .txn(vec![
            replica("shop-a", "shop", "n1"),
            replica("blog-a", "blog", "n2"),
            endpoints("shop", None),
            endpoints("blog", None),
            endpoints("front", Some(80)),
        ])
        .await
        .unwrap();
    let hub = Hub::spawn(store.clone());
    let net = ClusterNetwork::default();
    let got = hub.assignment(&store, &net, "n1").await.unwrap();
    let ids: Vec<_> = got.replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["shop-a"]);
    let apps: Vec<_> = got
        .network
        .services
        .iter()
        .map(|s| s.app.as_str())
        .collect();
    assert_eq!(
        apps,
        ["front", "shop"],
        "its app and the public one, not blog"
    );
    assert_eq!(got.generation, store.revision().await.unwrap());
    // Without a hub, the same set is found by reading every endpoints object.
    let slow = read_assignment(&store, &net, "n1", got.generation)
        .await
        .unwrap();
    assert_eq!(slow, got);
}
