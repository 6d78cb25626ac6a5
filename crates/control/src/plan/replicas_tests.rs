//! Table tests of the service controller's planner.

use std::collections::BTreeMap;

use crate::plan::schedule::NodeLoad;

use hivemind_types::{
    Meta, Node, NodeState, ObservedReplica, Replica, ReplicaState, Service, ServiceMode,
    ServiceSpec,
};

use super::*;

pub(super) fn service(name: &str, replicas: u32, image: &str) -> Service {
    Service {
        namespace: "default".into(),
        app: "shop".into(),
        name: name.into(),
        spec: ServiceSpec {
            image: image.into(),
            replicas,
            ..Default::default()
        },
        vip: None,
        meta: Meta::default(),
    }
}

pub(super) fn node(name: &str) -> Node {
    Node {
        name: name.into(),
        address: "10.0.0.1".into(),
        state: NodeState::Ready,
        last_seen: 0,
        subnet: None,
        agent_url: None,
        problems: Vec::new(),
        meta: Meta::default(),
    }
}

pub(super) fn replica_of(s: &Service, id: &str, node: &str, created_at: u64) -> Replica {
    Replica {
        id: id.into(),
        namespace: s.namespace.clone(),
        app: s.app.clone(),
        service: s.name.clone(),
        node: node.into(),
        spec: s.spec.clone(),
        revision_hash: s.spec.revision_hash(),
        meta: Meta {
            revision: 1,
            created_at,
            updated_at: created_at,
        },
    }
}

pub(super) fn status(id: &str, state: ReplicaState) -> (String, ObservedReplica) {
    (
        id.to_string(),
        ObservedReplica {
            id: id.into(),
            node: "n1".into(),
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
        },
    )
}

pub(super) fn ids() -> impl FnMut(&str, u32) -> String {
    let mut n = 0;
    move |svc: &str, _| {
        n += 1;
        format!("{svc}-{n:05}")
    }
}

fn key_of(r: &Replica) -> String {
    format!("{}/{}/{}", r.namespace, r.app, r.service)
}

/// Plans every service and every group of replicas, as the controller does after a relist.
fn plan_with(
    services: &[Service],
    replicas: &[Replica],
    statuses: &[(String, ObservedReplica)],
    nodes: &[Node],
    budget: usize,
    new_id: &mut dyn FnMut(&str, u32) -> String,
) -> ReplicaPlan {
    let statuses: BTreeMap<_, _> = statuses.iter().cloned().collect();
    let heads: Vec<(String, ReplicaHead)> = replicas
        .iter()
        .map(|r| (key_of(r), ReplicaHead::from(r)))
        .collect();
    let keys: std::collections::BTreeSet<String> = services
        .iter()
        .map(Service::key)
        .chain(heads.iter().map(|(k, _)| k.clone()))
        .collect();
    // The gates as the controller computes them (`plan::depends`), from the same tables.
    let gates: BTreeMap<String, crate::plan::depends::Gate> = services
        .iter()
        .map(|s| {
            let lookup = |name: &str| {
                let dep = services.iter().find(|d| d.app == s.app && d.name == name)?;
                let replicas = replicas
                    .iter()
                    .filter(|r| r.app == dep.app && r.service == dep.name)
                    .map(|r| {
                        let st = statuses.get(&r.id);
                        crate::plan::depends::ReplicaFacts {
                            current: r.revision_hash == dep.spec.revision_hash(),
                            created_at: r.meta.created_at,
                            state: st.map(|st| st.state),
                            exit_code: st.and_then(|st| st.exit_code),
                            health: st.and_then(|st| st.health.as_ref().map(|h| h.status)),
                        }
                    })
                    .collect();
                Some(crate::plan::depends::DependencyFacts {
                    service: dep,
                    replicas,
                })
            };
            (s.key(), crate::plan::depends::gate(s, &lookup))
        })
        .collect();
    let work: Vec<ServiceWork<'_>> = keys
        .iter()
        .map(|k| ServiceWork {
            key: k,
            service: services.iter().find(|s| s.key() == *k),
            replicas: heads
                .iter()
                .filter(|(rk, _)| rk == k)
                .map(|(_, h)| h)
                .collect(),
            held: gates.get(k).is_some_and(|g| g.holds()),
            replace_created_before: gates.get(k).and_then(|g| g.replace_created_before),
        })
        .collect();
    let mut load = NodeLoad::new(nodes, replicas.iter().map(|r| r.node.as_str()));
    let observed = Observed {
        nodes,
        state: &|id| statuses.get(id).map(|s| s.state),
        id_taken: &|id| replicas.iter().any(|r| r.id == id),
    };
    plan_replicas(&work, &mut load, &observed, new_id, budget)
}

pub(super) fn plan(
    services: &[Service],
    replicas: &[Replica],
    statuses: &[(String, ObservedReplica)],
    nodes: &[Node],
) -> ReplicaPlan {
    plan_with(services, replicas, statuses, nodes, usize::MAX, &mut ids())
}

/// What the store holds after `p` committed at `revision`.
pub(super) fn apply(replicas: &mut Vec<Replica>, p: &ReplicaPlan, revision: u64) {
    replicas.retain(|r| !p.delete.iter().any(|d| d.id == r.id));
    for r in &p.create {
        let mut r = r.clone();
        r.meta = Meta {
            revision,
            created_at: revision,
            updated_at: revision,
        };
        replicas.push(r);
    }
}

pub(super) fn down(name: &str, state: NodeState) -> Node {
    Node {
        state,
        ..node(name)
    }
}

pub(super) fn created(p: &ReplicaPlan) -> Vec<(String, String)> {
    p.create
        .iter()
        .map(|r| (r.id.clone(), r.node.clone()))
        .collect()
}

pub(super) fn deleted(p: &ReplicaPlan) -> Vec<&str> {
    p.delete.iter().map(|r| r.id.as_str()).collect()
}

#[test]
fn creates_missing_replicas_spread_over_nodes() {
    let web = service("web", 3, "web:1");
    let p = plan(&[web], &[], &[], &[node("n1"), node("n2")]);
    assert_eq!(
        created(&p),
        [
            ("web-00001", "n1"),
            ("web-00002", "n2"),
            ("web-00003", "n1")
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(p.delete.is_empty() && p.services.iter().all(|o| o.unschedulable == 0));
    assert!(p
        .create
        .iter()
        .all(|r| r.revision_hash == p.create[0].spec.revision_hash()));
}

#[test]
fn converged_service_plans_nothing() {
    let web = service("web", 2, "web:1");
    let rs = [
        replica_of(&web, "web-a", "n1", 1),
        replica_of(&web, "web-b", "n1", 2),
    ];
    let p = plan(&[web], &rs, &[], &[node("n1")]);
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn scale_down_removes_broken_then_newest() {
    let web = service("web", 1, "web:1");
    let rs = [
        replica_of(&web, "web-old", "n1", 1),
        replica_of(&web, "web-new", "n1", 9),
        replica_of(&web, "web-mid", "n1", 5),
        replica_of(&web, "web-bad", "n1", 2),
    ];
    let st = [
        status("web-old", ReplicaState::Running),
        status("web-new", ReplicaState::Running),
        status("web-mid", ReplicaState::Running),
        status("web-bad", ReplicaState::Failed),
    ];
    let p = plan(&[web], &rs, &st, &[node("n1")]);
    assert_eq!(deleted(&p), ["web-bad", "web-new", "web-mid"]);
    assert!(p.create.is_empty());
}

#[test]
fn changed_spec_replaces_every_replica() {
    let old = service("web", 2, "web:1");
    let rs = [
        replica_of(&old, "web-a", "n1", 1),
        replica_of(&old, "web-b", "n1", 2),
    ];
    let new = service("web", 2, "web:2");
    let p = plan(&[new], &rs, &[], &[node("n1")]);
    assert_eq!(deleted(&p), ["web-a", "web-b"]);
    assert_eq!(p.create.len(), 2);
    assert!(p.create.iter().all(|r| r.spec.image == "web:2"));
}

#[test]
fn replica_count_change_alone_does_not_replace() {
    let web = service("web", 1, "web:1");
    let rs = [replica_of(&web, "web-a", "n1", 1)];
    let mut scaled = web.clone();
    scaled.spec.replicas = 3;
    let p = plan(&[scaled], &rs, &[], &[node("n1")]);
    assert!(p.delete.is_empty());
    assert_eq!(p.create.len(), 2);
}

#[test]
fn routing_change_alone_does_not_replace() {
    let web = service("web", 2, "web:1");
    let rs = [
        replica_of(&web, "web-a", "n1", 1),
        replica_of(&web, "web-b", "n1", 2),
    ];
    let mut routed = web.clone();
    routed.spec.ports.push(hivemind_types::PortSpec {
        target: 80,
        published: Some(8080),
        host_ip: None,
        protocol: Default::default(),
    });
    routed.spec.hivemind.strategy = Some("blue-green".into());
    let p = plan(&[routed], &rs, &[], &[node("n1")]);
    assert!(p.delete.is_empty() && p.create.is_empty(), "{p:?}");
}

#[test]
fn orphans_of_removed_services_are_deleted() {
    let web = service("web", 1, "web:1");
    let gone = service("db", 1, "db:1");
    let rs = [
        replica_of(&web, "web-a", "n1", 1),
        replica_of(&gone, "db-a", "n1", 1),
    ];
    let p = plan(&[web], &rs, &[], &[node("n1")]);
    assert_eq!(deleted(&p), ["db-a"]);
}

#[test]
fn no_ready_node_is_reported_unschedulable() {
    let web = service("web", 2, "web:1");
    let mut down = node("n1");
    down.state = NodeState::Down;
    let p = plan(&[web], &[], &[], &[down]);
    assert!(p.create.is_empty());
    assert_eq!(p.services[0].key, "default/shop/web");
    assert_eq!(p.services[0].unschedulable, 2);
}

#[test]
fn global_mode_runs_one_per_ready_node() {
    let mut agent = service("agent", 0, "agent:1");
    agent.spec.mode = ServiceMode::Global;
    let rs = [
        replica_of(&agent, "agent-a", "n1", 1),
        replica_of(&agent, "agent-b", "n1", 2),
    ];
    let st = [
        status("agent-a", ReplicaState::Running),
        status("agent-b", ReplicaState::Failed),
    ];
    let p = plan(&[agent], &rs, &st, &[node("n1"), node("n2")]);
    assert_eq!(deleted(&p), ["agent-b"]);
    assert_eq!(created(&p), [("agent-00001".to_string(), "n2".to_string())]);
}

#[test]
fn services_with_same_name_in_other_apps_are_separate() {
    let a = service("web", 1, "web:1");
    let mut b = service("web", 1, "web:1");
    b.app = "blog".into();
    let rs = [replica_of(&a, "web-a", "n1", 1)];
    let p = plan(&[a, b], &rs, &[], &[node("n1")]);
    assert!(p.delete.is_empty());
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].app, "blog");
}

#[test]
fn fresh_ids_are_unique_against_the_store_and_within_the_plan() {
    // Two apps' `web` services draw from one generator that repeats itself and the store.
    let a = service("web", 2, "web:1");
    let mut b = service("web", 2, "web:1");
    b.app = "blog".into();
    let rs = [replica_of(&a, "web-x", "n1", 1)];
    let mut draws = [
        "web-x", "web-y", "web-y", "web-x", "web-z", "web-y", "web-w",
    ]
    .into_iter();
    let mut new_id = |_: &str, _: u32| draws.next().unwrap_or("web-x").to_string();
    let p = plan_with(&[a, b], &rs, &[], &[node("n1")], usize::MAX, &mut new_id);
    let ids: Vec<&str> = p.create.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["web-y", "web-z", "web-w"]);
    let collisions: usize = p.services.iter().map(|o| o.id_collisions).sum();
    assert_eq!(collisions, 4);
}

#[test]
fn ids_that_never_come_fresh_stop_the_service_not_the_plan() {
    let web = service("web", 3, "web:1");
    let db = service("db", 1, "db:1");
    let rs = [replica_of(&web, "web-x", "n1", 1)];
    let mut new_id = |svc: &str, _: u32| format!("{svc}-x");
    let p = plan_with(&[db, web], &rs, &[], &[node("n1")], usize::MAX, &mut new_id);
    assert_eq!(created(&p), [("db-x".to_string(), "n1".to_string())]);
    let web = p.services.iter().find(|o| o.key.ends_with("/web")).unwrap();
    assert!(web.unfinished);
    assert_eq!(web.id_collisions, ID_ATTEMPTS);
}

#[test]
fn large_scale_ups_are_planned_in_bounded_steps_that_converge() {
    let web = service("web", 1_000, "web:1");
    let nodes: Vec<Node> = (0..7).map(|i| node(&format!("n{i}"))).collect();
    let mut store = Vec::new();
    let mut new_id = ids();
    let mut steps = 0;
    loop {
        let p = plan_with(
            std::slice::from_ref(&web),
            &store,
            &[],
            &nodes,
            128,
            &mut new_id,
        );
        if p.is_empty() {
            break;
        }
        assert!(p.ops() <= 128, "{}", p.ops());
        assert_eq!(
            p.unfinished().count(),
            usize::from(store.len() + 128 < 1_000)
        );
        steps += 1;
        apply(&mut store, &p, steps);
    }
    assert_eq!(steps, 8, "ceil(1000 / 128)");
    assert_eq!(store.len(), 1_000);
    let distinct: std::collections::HashSet<&str> = store.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(distinct.len(), 1_000);
    // Spread evenly: 1000 over 7 nodes is 142 or 143 each.
    for n in &nodes {
        let on = store.iter().filter(|r| r.node == n.name).count();
        assert!((142..=143).contains(&on), "{} has {on}", n.name);
    }
}

#[test]
fn budget_keeps_a_replacement_with_its_stranded_replica() {
    let web = service("web", 3, "web:1");
    let rs = [
        replica_of(&web, "web-a", "gone", 1),
        replica_of(&web, "web-b", "gone", 2),
        replica_of(&web, "web-c", "gone", 3),
    ];
    // 5 writes fit two (delete, create) pairs, not a third create without its delete.
    let p = plan_with(&[web], &rs, &[], &[node("n1")], 5, &mut ids());
    assert_eq!(p.ops(), 4);
    assert_eq!(p.create.len(), 2);
    assert_eq!(p.unfinished().count(), 1);
}

#[test]
fn replicas_on_down_drained_or_unknown_nodes_are_replaced_on_ready_nodes() {
    let web = service("web", 4, "web:1");
    let rs = [
        replica_of(&web, "web-a", "up", 1),
        replica_of(&web, "web-b", "down", 2),
        replica_of(&web, "web-c", "drained", 3),
        replica_of(&web, "web-d", "gone", 4),
    ];
    let nodes = [
        node("up"),
        node("up2"),
        down("down", NodeState::Down),
        down("drained", NodeState::Drained),
    ];
    let p = plan(&[web], &rs, &[], &nodes);
    let mut gone = deleted(&p);
    gone.sort();
    assert_eq!(gone, ["web-b", "web-c", "web-d"]);
    // Replacements spread over the ready nodes, the empty one first.
    let on: Vec<String> = p.create.iter().map(|r| r.node.clone()).collect();
    assert_eq!(on, ["up2", "up", "up2"]);
    assert_eq!(p.services[0].replaced_stranded, 3);
    assert!(p.services[0].unschedulable == 0 && !p.services[0].unfinished);
}

#[test]
fn stranded_replicas_stay_while_no_ready_node_can_take_them() {
    let web = service("web", 2, "web:1");
    let rs = [
        replica_of(&web, "web-a", "down", 1),
        replica_of(&web, "web-b", "down", 2),
    ];
    let p = plan(&[web], &rs, &[], &[down("down", NodeState::Down)]);
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(p.services[0].unschedulable, 2);
}

#[test]
fn a_returning_node_never_takes_the_service_over_its_count() {
    let web = service("web", 3, "web:1");
    let mut store = vec![
        replica_of(&web, "web-a", "n1", 1),
        replica_of(&web, "web-b", "n2", 1),
        replica_of(&web, "web-c", "n2", 1),
    ];
    let mut new_id = ids();
    let mut nodes = vec![node("n1"), down("n2", NodeState::Down)];
    let mut revision = 1;
    let mut converge = |store: &mut Vec<Replica>, nodes: &[Node]| loop {
        let p = plan_with(
            std::slice::from_ref(&web),
            store,
            &[],
            nodes,
            usize::MAX,
            &mut new_id,
        );
        if p.is_empty() {
            break;
        }
        revision += 1;
        apply(store, &p, revision);
        assert_eq!(store.len(), 3, "never more objects than wanted");
    };
    converge(&mut store, &nodes);
    assert!(store.iter().all(|r| r.node == "n1"), "{store:?}");
    // n2 comes back: its stale replicas are gone from the store (so from its assignment, and
    // its agent stops them); nothing more is created.
    nodes[1].state = NodeState::Ready;
    let p = plan(std::slice::from_ref(&web), &store, &[], &nodes);
    assert!(p.is_empty(), "{p:?}");
    converge(&mut store, &nodes);
    assert_eq!(store.len(), 3);
    assert!(!store
        .iter()
        .any(|r| ["web-b", "web-c"].contains(&r.id.as_str())));
}

#[test]
fn global_replicas_stay_on_down_nodes_and_leave_drained_ones() {
    let mut agent = service("agent", 0, "agent:1");
    agent.spec.mode = ServiceMode::Global;
    let rs = [
        replica_of(&agent, "agent-a", "up", 1),
        replica_of(&agent, "agent-b", "down", 1),
        replica_of(&agent, "agent-c", "drained", 1),
    ];
    let nodes = [
        node("up"),
        node("new"),
        down("down", NodeState::Down),
        down("drained", NodeState::Drained),
    ];
    let p = plan(&[agent], &rs, &[], &nodes);
    assert_eq!(deleted(&p), ["agent-c"]);
    assert_eq!(
        created(&p),
        [("agent-00001".to_string(), "new".to_string())]
    );
}
