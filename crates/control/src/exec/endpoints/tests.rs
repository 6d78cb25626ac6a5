use hivemind_types::{Meta, ServiceSpec};
use serde_json::json;

use super::*;

fn service(name: &str) -> Service {
    Service {
        namespace: "default".into(),
        app: "shop".into(),
        name: name.into(),
        spec: ServiceSpec {
            image: "x".into(),
            ..Default::default()
        },
        vip: Some("10.43.0.2".into()),
        meta: Meta::default(),
    }
}

fn change(kind: Kind, key: &str, op: ChangeOp, value: serde_json::Value) -> Change {
    Change {
        revision: 1,
        kind,
        key: key.into(),
        op,
        value,
    }
}

fn replica(id: &str, service: &str, node: &str) -> Change {
    let value = json!({
        "id": id, "namespace": "default", "app": "shop", "service": service, "node": node,
        "spec": {"image": "x"}, "revision_hash": "h",
    });
    change(Kind::Replica, id, ChangeOp::Put, value)
}

fn status(id: &str, state: &str, ip: Option<&str>) -> Change {
    let value = json!({"id": id, "node": "n1", "state": state, "ip": ip});
    change(Kind::ReplicaStatus, id, ChangeOp::Put, value)
}

fn ready(planned: &[(String, EndpointsChange)], key: &str) -> Vec<String> {
    let (_, change) = planned.iter().find(|(k, _)| k == key).expect(key);
    let EndpointsChange::Put(e) = change else {
        panic!("{key}: {change:?}");
    };
    e.replicas
        .iter()
        .filter(|r| r.ready)
        .map(|r| r.id.clone())
        .collect()
}

#[test]
fn a_status_change_plans_only_its_service() {
    let mut cache = Cache::from_lists(vec![service("web"), service("db")], vec![], vec![], vec![]);
    let first = cache.plan_dirty(100);
    assert_eq!(first.len(), 2, "every service gets endpoints at start");
    cache.committed(first);
    assert!(cache.plan_dirty(100).is_empty(), "nothing changed");

    cache.apply(&replica("web-a", "web", "n1"));
    cache.apply(&status("web-a", "running", Some("10.42.0.2")));
    let planned = cache.plan_dirty(100);
    assert_eq!(planned.len(), 1);
    assert_eq!(ready(&planned, "default/shop/web"), ["web-a"]);
    cache.committed(planned);

    // A new restart count or message is not an endpoints change.
    let mut again = status("web-a", "running", Some("10.42.0.2"));
    again.value["restarts"] = json!(3);
    cache.apply(&again);
    assert!(cache.plan_dirty(100).is_empty());

    cache.apply(&status("web-a", "restarting", Some("10.42.0.2")));
    let planned = cache.plan_dirty(100);
    assert!(ready(&planned, "default/shop/web").is_empty());
}

#[test]
fn removed_replicas_and_services_leave_the_endpoints() {
    let mut cache = Cache::from_lists(vec![service("web")], vec![], vec![], vec![]);
    cache.apply(&replica("web-a", "web", "n1"));
    cache.apply(&replica("web-b", "web", "n2"));
    cache.apply(&status("web-a", "running", Some("10.42.0.2")));
    cache.apply(&status("web-b", "running", Some("10.42.1.2")));
    let planned = cache.plan_dirty(100);
    assert_eq!(ready(&planned, "default/shop/web"), ["web-a", "web-b"]);
    cache.committed(planned);

    cache.apply(&change(Kind::Replica, "web-a", ChangeOp::Delete, json!({})));
    let planned = cache.plan_dirty(100);
    assert_eq!(ready(&planned, "default/shop/web"), ["web-b"]);
    cache.committed(planned);

    cache.apply(&change(
        Kind::Service,
        "default/shop/web",
        ChangeOp::Delete,
        json!({}),
    ));
    let planned = cache.plan_dirty(100);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].1, EndpointsChange::Delete);
    assert_eq!(ops(&planned).len(), 1);
}

#[test]
fn marked_services_are_planned_in_bounded_batches() {
    let services: Vec<Service> = (0..25).map(|i| service(&format!("s{i}"))).collect();
    let mut cache = Cache::from_lists(services, vec![], vec![], vec![]);
    let mut batches = 0;
    while cache.has_dirty() {
        let planned = cache.plan_dirty(10);
        assert!(planned.len() <= 10);
        cache.committed(planned);
        batches += 1;
    }
    assert_eq!(batches, 3);
}
