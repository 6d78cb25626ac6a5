//! Table tests of the service controller's planner.

use std::collections::BTreeMap;

use hivemind_types::{
    Meta, Node, NodeState, ObservedReplica, Replica, ReplicaState, Service, ServiceMode,
    ServiceSpec,
};

use super::*;

fn service(name: &str, replicas: u32, image: &str) -> Service {
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

fn node(name: &str) -> Node {
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

fn replica_of(s: &Service, id: &str, node: &str, created_at: u64) -> Replica {
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

fn status(id: &str, state: ReplicaState) -> (String, ObservedReplica) {
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
            meta: Meta::default(),
        },
    )
}

fn ids() -> impl FnMut(&str) -> String {
    let mut n = 0;
    move |svc: &str| {
        n += 1;
        format!("{svc}-{n:05}")
    }
}

fn plan(
    services: &[Service],
    replicas: &[Replica],
    statuses: &[(String, ObservedReplica)],
    nodes: &[Node],
) -> ReplicaPlan {
    let statuses: BTreeMap<_, _> = statuses.iter().cloned().collect();
    plan_replicas(services, replicas, &statuses, nodes, &mut ids())
}

fn created(p: &ReplicaPlan) -> Vec<(String, String)> {
    p.create
        .iter()
        .map(|r| (r.id.clone(), r.node.clone()))
        .collect()
}

fn deleted(p: &ReplicaPlan) -> Vec<&str> {
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
    assert!(p.delete.is_empty() && p.unschedulable.is_empty());
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
    assert_eq!(p.unschedulable, [("default/shop/web".to_string(), 2)]);
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
