//! Delta assignments against a real in-memory store and hub: merging every delta a node is
//! sent gives exactly the full assignment it would have been sent.

use hivemind_store::{Expect, Op};
use hivemind_types::EndpointChange;
use serde_json::json;

use super::*;

fn spec() -> serde_json::Value {
    serde_json::to_value(hivemind_types::ServiceSpec {
        image: "x".into(),
        ..Default::default()
    })
    .unwrap()
}

fn replica(id: &str, app: &str, node: &str) -> Op {
    let value = json!({"id": id, "namespace": "default", "app": app, "service": "web",
                       "node": node, "spec": spec(), "revision_hash": "h"});
    Op::put(Kind::Replica, id, &value, Expect::Any)
}

/// `default/{app}/web` with `vip` and `ready` replicas `{app}-{i}` (at 10.42.0.{i}), `i` in
/// `ready`, and one not ready.
fn endpoints(app: &str, vip: &str, published: Option<u16>, ready: &[u32]) -> Op {
    let mut replicas: Vec<_> = ready
        .iter()
        .map(|i| {
            json!({"id": format!("{app}-{i:03}"), "node": format!("n{}", i % 3),
                        "ip": format!("10.42.0.{i}"), "ready": true})
        })
        .collect();
    replicas.push(json!({"id": format!("{app}-zzz"), "node": "n1", "ready": false}));
    let value = json!({"namespace": "default", "app": app, "service": "web", "vip": vip,
                       "ports": [{"target": 80, "published": published}],
                       "replicas": replicas});
    Op::put(
        Kind::Endpoints,
        format!("default/{app}/web"),
        &value,
        Expect::Any,
    )
}

/// Slice `slice` of `default/{app}/web` (as [`endpoints`], without the not-ready one).
fn slice(app: &str, vip: &str, slice: u32, ready: &[u32]) -> Op {
    let replicas: Vec<_> = ready
        .iter()
        .map(|i| {
            json!({"id": format!("{app}-{i:03}"), "node": format!("n{}", i % 3),
                        "ip": format!("10.42.0.{i}"), "ready": true})
        })
        .collect();
    let value = json!({"namespace": "default", "app": app, "service": "web", "vip": vip,
                       "ports": [{"target": 80, "published": null}], "slice": slice,
                       "replicas": replicas});
    Op::put(
        Kind::Endpoints,
        format!("default/{app}/web@{slice}"),
        &value,
        Expect::Any,
    )
}

async fn settle(hub: &Hub, store: &Store) {
    let want = store.revision().await.unwrap();
    for _ in 0..500 {
        if hub.routes().processed() >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the hub did not reach revision {want}");
}

async fn poll(hub: &Hub, store: &Store, node: &str, after: u64) -> Assignment {
    let net = ClusterNetwork::default();
    wait_assignment_delta(
        hub,
        store,
        &net,
        node,
        Some(after),
        true,
        Duration::ZERO,
        std::future::pending(),
    )
    .await
    .unwrap()
    .decode()
}

#[tokio::test]
async fn merged_deltas_equal_the_full_assignment_after_every_step() {
    let store = Store::open_in_memory().unwrap();
    let net = ClusterNetwork::default();
    let many: Vec<u32> = (1..=200).collect();
    store
        .txn(vec![
            replica("shop-a", "shop", "n1"),
            replica("blog-a", "blog", "n2"),
            endpoints("shop", "10.96.0.1", None, &many),
            endpoints("blog", "10.96.0.2", None, &[1]),
            endpoints("front", "10.96.0.3", Some(80), &[4, 5]),
        ])
        .await
        .unwrap();
    let hub = Hub::spawn(store.clone());
    let steps: Vec<Vec<Op>> = vec![
        // One endpoint leaves, one joins, one moves address.
        vec![endpoints(
            "shop",
            "10.96.0.1",
            None,
            &(2..=201).collect::<Vec<_>>(),
        )],
        vec![endpoints("front", "10.96.0.3", Some(80), &[4])],
        // A change other than the endpoint list: sent in full.
        vec![endpoints(
            "shop",
            "10.96.0.9",
            None,
            &(2..=150).collect::<Vec<_>>(),
        )],
        // n1 gains blog: its service is new to n1.
        vec![replica("blog-b", "blog", "n1")],
        vec![endpoints("blog", "10.96.0.2", None, &[1, 2, 3])],
        // n1 loses shop: dropped.
        vec![Op::delete(Kind::Replica, "shop-a", Expect::Any)],
        vec![endpoints("shop", "10.96.0.9", None, &[7])],
        // A public service goes away, another becomes public.
        vec![Op::delete(
            Kind::Endpoints,
            "default/front/web",
            Expect::Any,
        )],
        vec![endpoints("blog", "10.96.0.2", Some(81), &[1, 2])],
        vec![
            replica("shop-b", "shop", "n1"),
            endpoints("shop", "10.96.0.9", None, &[7, 8]),
        ],
        // A replica moves from n1 to n2, another is rewritten in place.
        vec![replica("shop-b", "shop", "n2")],
        vec![replica("blog-b", "blog", "n1")],
        // Many at once (read through the node index, not by key), then most of them go.
        (0..20)
            .map(|i| replica(&format!("shop-m{i:02}"), "shop", "n3"))
            .collect(),
        (0..18)
            .map(|i| Op::delete(Kind::Replica, format!("shop-m{i:02}"), Expect::Any))
            .collect(),
        // Slices: two more of shop, one replica changes in one of them, one goes, then a
        // repack moves slice 2's replicas into slice 0 and deletes slice 2 in one transaction
        // (the delete after the put must not remove the moved ones).
        vec![
            slice("shop", "10.96.0.9", 1, &[20, 21, 22]),
            slice("shop", "10.96.0.9", 2, &[30, 31]),
        ],
        vec![slice("shop", "10.96.0.9", 1, &[20, 22, 23])],
        vec![Op::delete(
            Kind::Endpoints,
            "default/shop/web@1",
            Expect::Any,
        )],
        vec![
            endpoints("shop", "10.96.0.9", None, &[7, 8, 30, 31]),
            Op::delete(Kind::Endpoints, "default/shop/web@2", Expect::Any),
        ],
        // A head change (written to every slice at once) sends the service in full.
        vec![
            endpoints("shop", "10.96.0.10", None, &[7, 8]),
            slice("shop", "10.96.0.10", 3, &[40]),
        ],
        vec![Op::delete(
            Kind::Endpoints,
            "default/shop/web@3",
            Expect::Any,
        )],
    ];
    let nodes = ["n1", "n2", "n3"];
    // Per node: `every` is merged after each step, `sparse` only after every third.
    let mut every = Vec::new();
    for node in nodes {
        every.push(hub.assignment(&store, &net, node).await.unwrap());
    }
    let mut sparse = every.clone();
    for (i, ops) in steps.iter().enumerate() {
        store.txn(ops.clone()).await.unwrap();
        settle(&hub, &store).await;
        for (n, node) in nodes.iter().enumerate() {
            let full = hub.assignment(&store, &net, node).await.unwrap();
            let truth = read_assignment(&store, &net, node, full.generation)
                .await
                .unwrap();
            assert_eq!(
                full, truth,
                "{node} step {i}: the hub's memory is the store's"
            );
            let next = poll(&hub, &store, node, every[n].generation).await;
            assert!(
                next.delta,
                "step {i}: the history covers the last generation"
            );
            every[n].apply(next);
            assert_eq!(every[n], full, "{node} step {i}, merged every step");
            if i % 3 == 2 || i == steps.len() - 1 {
                let next = poll(&hub, &store, node, sparse[n].generation).await;
                assert!(next.delta);
                sparse[n].apply(next);
                assert_eq!(sparse[n], full, "{node} step {i}, merged every third step");
            }
        }
    }
    assert!(
        every[0].network.services.iter().any(|s| s.app == "blog"),
        "the steps did reach n1"
    );
}

#[tokio::test]
async fn one_endpoint_change_sends_one_endpoint() {
    let store = Store::open_in_memory().unwrap();
    let many: Vec<u32> = (1..=300).collect();
    store
        .txn(vec![
            replica("shop-a", "shop", "n1"),
            endpoints("shop", "10.96.0.1", None, &many),
        ])
        .await
        .unwrap();
    let hub = Hub::spawn(store.clone());
    let net = ClusterNetwork::default();
    let base = hub.assignment(&store, &net, "n1").await.unwrap();
    store
        .txn(vec![endpoints("shop", "10.96.0.1", None, &many[1..])])
        .await
        .unwrap();
    settle(&hub, &store).await;
    let next = poll(&hub, &store, "n1", base.generation).await;
    assert!(next.delta);
    assert!(next.network.services.is_empty(), "no service in full");
    assert_eq!(
        next.network.endpoint_changes,
        vec![EndpointChange {
            service: "default/shop/web".into(),
            upserts: vec![],
            removes: vec!["shop-001".into()],
        }]
    );
    assert_eq!(next.network.service_keys, ["default/shop/web"]);
    assert!(
        next.replicas.is_empty() && next.replica_removes.is_empty(),
        "no replica changed: none is sent (or read)"
    );
}

#[tokio::test]
async fn a_generation_older_than_the_history_or_no_delta_asked_gets_a_full_answer() {
    let store = Store::open_in_memory().unwrap();
    store
        .txn(vec![
            replica("shop-a", "shop", "n1"),
            endpoints("shop", "10.96.0.1", None, &[1]),
        ])
        .await
        .unwrap();
    let hub = Hub::spawn(store.clone());
    let net = ClusterNetwork::default();
    let base = hub.assignment(&store, &net, "n1").await.unwrap();
    // The hub listed the store at `base.generation`: nothing before it is in its history.
    let old = poll(&hub, &store, "n1", base.generation - 1).await;
    assert!(!old.delta);
    assert_eq!(old, base);
    let plain = wait_assignment(
        &hub,
        &store,
        &net,
        "n1",
        Some(base.generation),
        Duration::ZERO,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!plain.delta);
    assert_eq!(plain, base);
}

#[test]
fn the_history_is_bounded_and_says_how_far_back_it_reaches() {
    let mut diffs = delta::Diffs::default();
    diffs.reset(10, &[]);
    let put = |ready: std::ops::Range<u32>| {
        let replicas: Vec<_> = ready
            .map(|i| json!({"id": format!("r{i:06}"), "node": "n1", "ip": "10.42.0.2", "ready": true}))
            .collect();
        Change {
            revision: 0,
            kind: Kind::Endpoints,
            key: "default/shop/web".into(),
            op: ChangeOp::Put,
            value: json!({"namespace": "default", "app": "shop", "service": "web",
                          "replicas": replicas}),
        }
    };
    diffs.endpoints(11, &put(0..1));
    assert!(diffs.covers(10, 11));
    // 39,999 ids, then 70,000 more: over the bound, so revisions 11 and 12 are forgotten.
    diffs.endpoints(12, &put(0..40_000));
    diffs.endpoints(13, &put(40_000..70_000));
    assert!(!diffs.covers(11, 13), "revision 12's diff is forgotten");
    assert!(diffs.covers(12, 13));
    assert!(
        !diffs.covers(14, 13),
        "a generation the hub has not reached"
    );
}
