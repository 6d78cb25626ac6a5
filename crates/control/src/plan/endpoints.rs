//! The endpoints planner: one service, its replicas and what their agents report, to the
//! service's `Endpoints` slices (or their removal), each written only when its content changes.
//!
//! The executor calls it for the services a change touched, never for all of them.

use std::collections::{BTreeMap, HashMap};

use hivemind_types::{EndpointReplica, Endpoints, HealthStatus, ReplicaState, Service};

/// What to do with one service's `Endpoints` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsChange {
    Put(Box<Endpoints>),
    Delete,
    Keep,
}

/// One replica as its endpoints show it (see [`is_ready`]); `health` is what its check last
/// found (`None`: it has no check).
pub fn member(
    id: &str,
    node: &str,
    revision_hash: &str,
    state: Option<ReplicaState>,
    ip: Option<&str>,
    health: Option<HealthStatus>,
) -> EndpointReplica {
    EndpointReplica {
        id: id.to_string(),
        node: node.to_string(),
        ip: ip.map(str::to_string),
        ready: is_ready(state, ip.is_some(), health),
        revision_hash: revision_hash.to_string(),
    }
}

/// Traffic may go to a replica that runs with an address and is healthy, or has no check: one
/// that is starting (no check passed yet) or unhealthy gets none, like Docker's and
/// Kubernetes' readiness.
pub fn is_ready(state: Option<ReplicaState>, has_ip: bool, health: Option<HealthStatus>) -> bool {
    state == Some(ReplicaState::Running)
        && has_ip
        && matches!(health, None | Some(HealthStatus::Healthy))
}

/// The slices `service` should have with `members` (any order), against the stored `current`
/// slices (by slice number): the changes to write, by slice key, in slice order. A service
/// that is gone has none, even while its replicas are still being removed.
///
/// Replicas stay in the slice that holds them, so one replica's change rewrites one slice;
/// new ones fill the lowest slices with room, then new slices. Emptied slices other than 0 go.
/// When scale-downs have left more than twice the slices needed (plus one), everything is
/// packed again from slice 0.
pub fn plan_endpoints(
    service: Option<&Service>,
    mut members: Vec<EndpointReplica>,
    current: &BTreeMap<u32, Endpoints>,
) -> Vec<(String, EndpointsChange)> {
    let Some(service) = service else {
        return current
            .values()
            .map(|e| (e.key(), EndpointsChange::Delete))
            .collect();
    };
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let head = Endpoints {
        namespace: service.namespace.clone(),
        app: service.app.clone(),
        service: service.name.clone(),
        vip: service.vip.clone(),
        ports: service.spec.ports.clone(),
        ingress: service.spec.hivemind.ingress.clone(),
        networks: service.spec.network_names(),
        aliases: service.spec.network_aliases(),
        internal: service.spec.is_internal(),
        proxy_protocol: service.spec.hivemind.proxy_protocol,
        slice: 0,
        replicas: Vec::new(),
        meta: Default::default(),
    };
    let per = Endpoints::MAX_PER_SLICE;
    let needed = members.len().div_ceil(per).max(1);
    let repack = current.len() > 2 * needed + 1;
    let mut slices: BTreeMap<u32, Vec<EndpointReplica>> = BTreeMap::from([(0, Vec::new())]);
    let mut home: HashMap<&str, u32> = HashMap::new();
    if !repack {
        for (n, e) in current {
            slices.entry(*n).or_default();
            home.extend(e.replicas.iter().map(|r| (r.id.as_str(), *n)));
        }
    }
    let mut homeless = Vec::new();
    for m in members {
        match home.get(m.id.as_str()) {
            Some(n) if slices[n].len() < per => slices.get_mut(n).unwrap().push(m),
            _ => homeless.push(m),
        }
    }
    let mut order: Vec<u32> = slices.keys().copied().collect();
    let mut at = 0;
    for m in homeless {
        while at < order.len() && slices[&order[at]].len() >= per {
            at += 1;
        }
        if at == order.len() {
            let next = order.last().map_or(0, |n| n + 1);
            order.push(next);
            slices.insert(next, Vec::new());
        }
        slices.get_mut(&order[at]).unwrap().push(m);
    }
    let mut out = Vec::new();
    for (n, mut replicas) in slices {
        let key = Endpoints::slice_key(&head.service_key(), n);
        if replicas.is_empty() && n != 0 {
            if current.contains_key(&n) {
                out.push((key, EndpointsChange::Delete));
            }
            continue;
        }
        replicas.sort_by(|a, b| a.id.cmp(&b.id));
        let desired = Endpoints {
            slice: n,
            replicas,
            ..head.clone()
        };
        match current.get(&n) {
            Some(stored) if stored.same_content(&desired) => {}
            _ => out.push((key, EndpointsChange::Put(Box::new(desired)))),
        }
    }
    if repack {
        for (n, e) in current {
            // Packed densely: the slices kept are exactly 0..needed.
            if *n >= needed as u32 {
                out.push((e.key(), EndpointsChange::Delete));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hivemind_types::{Meta, NetworkAttachment, PortSpec, ServiceSpec};

    use super::*;

    fn service() -> Service {
        Service {
            namespace: "default".into(),
            app: "shop".into(),
            name: "web".into(),
            spec: ServiceSpec {
                image: "x".into(),
                ..Default::default()
            },
            vip: Some("10.43.0.2".into()),
            meta: Meta::default(),
        }
    }

    /// Plans against at most one stored slice 0, expecting one change or none.
    fn plan_one(
        service: Option<&Service>,
        members: Vec<EndpointReplica>,
        current: Option<&Endpoints>,
    ) -> EndpointsChange {
        let current: BTreeMap<u32, Endpoints> =
            current.map(|e| (e.slice, e.clone())).into_iter().collect();
        let mut out = plan_endpoints(service, members, &current);
        assert!(out.len() <= 1, "{out:?}");
        out.pop()
            .map_or(EndpointsChange::Keep, |(_, change)| change)
    }

    fn put(change: EndpointsChange) -> Endpoints {
        match change {
            EndpointsChange::Put(e) => *e,
            other => panic!("expected a put, got {other:?}"),
        }
    }

    #[test]
    fn members_are_every_replica_ready_when_running_with_an_address() {
        let running = Some(ReplicaState::Running);
        let got = put(plan_one(
            Some(&service()),
            vec![
                member("web-b", "n1", "h1", running, Some("10.42.0.2"), None),
                member("web-a", "n2", "h1", running, Some("10.42.1.3"), None),
                member(
                    "web-c",
                    "n1",
                    "h1",
                    Some(ReplicaState::Restarting),
                    Some("10.42.0.4"),
                    None,
                ),
                member("web-d", "n1", "h2", running, None, None),
                member("web-e", "n1", "h2", None, None, None),
            ],
            None,
        ));
        assert_eq!(got.key(), "default/shop/web");
        assert_eq!(got.vip.as_deref(), Some("10.43.0.2"));
        let table: Vec<_> = got
            .replicas
            .iter()
            .map(|r| (r.id.as_str(), r.node.as_str(), r.ready))
            .collect();
        assert_eq!(
            table,
            [
                ("web-a", "n2", true),
                ("web-b", "n1", true),
                ("web-c", "n1", false),
                ("web-d", "n1", false),
                ("web-e", "n1", false),
            ]
        );
        assert_eq!(got.replicas[3].revision_hash, "h2");
        assert_eq!(got.networks, ["default"], "no networks: on default");
    }

    #[test]
    fn written_only_when_the_content_changes() {
        let running = Some(ReplicaState::Running);
        let one = || vec![member("web-a", "n1", "h", running, Some("10.42.0.2"), None)];
        let mut stored = put(plan_one(Some(&service()), one(), None));
        stored.meta.revision = 7;
        assert_eq!(
            plan_one(Some(&service()), one(), Some(&stored)),
            EndpointsChange::Keep
        );
        let moved = vec![member("web-a", "n1", "h", running, Some("10.42.0.9"), None)];
        let got = put(plan_one(Some(&service()), moved, Some(&stored)));
        assert_eq!(got.replicas[0].ip.as_deref(), Some("10.42.0.9"));
        let mut published = service();
        published.spec.ports.push(PortSpec {
            target: 80,
            published: Some(8080),
            host_ip: None,
            protocol: Default::default(),
        });
        let got = put(plan_one(Some(&published), one(), Some(&stored)));
        assert!(got.is_public());
    }

    #[test]
    fn a_removed_service_loses_its_endpoints() {
        let stored = put(plan_one(Some(&service()), vec![], None));
        assert_eq!(
            plan_one(
                None,
                vec![member("web-a", "n1", "h", None, None, None)],
                Some(&stored)
            ),
            EndpointsChange::Delete
        );
        assert_eq!(plan_one(None, vec![], None), EndpointsChange::Keep);
    }

    #[test]
    fn ready_means_running_with_an_address_and_healthy_or_without_a_check() {
        use HealthStatus::*;
        let running = Some(ReplicaState::Running);
        let table = [
            (running, true, None, true),
            (running, true, Some(Healthy), true),
            (running, true, Some(Starting), false),
            (running, true, Some(Unhealthy), false),
            (running, false, Some(Healthy), false),
            (running, false, None, false),
            (Some(ReplicaState::Restarting), true, Some(Healthy), false),
            (Some(ReplicaState::Starting), true, None, false),
            (None, true, Some(Healthy), false),
        ];
        for (state, has_ip, health, want) in table {
            assert_eq!(
                is_ready(state, has_ip, health),
                want,
                "{state:?} ip={has_ip} {health:?}"
            );
        }
        let unhealthy = member(
            "web-a",
            "n1",
            "h",
            running,
            Some("10.42.0.2"),
            Some(Unhealthy),
        );
        assert!(!unhealthy.ready);
        assert_eq!(unhealthy.ip.as_deref(), Some("10.42.0.2"));
    }

    fn members(ids: std::ops::Range<usize>) -> Vec<EndpointReplica> {
        ids.map(|i| {
            member(
                &format!("web-{i:05}"),
                "n1",
                "h",
                Some(ReplicaState::Running),
                Some("10.42.0.2"),
                None,
            )
        })
        .collect()
    }

    /// Applies planned changes to stored slices, as the store would.
    fn commit(stored: &mut BTreeMap<u32, Endpoints>, out: Vec<(String, EndpointsChange)>) {
        for (key, change) in out {
            let (_, n) = Endpoints::split_key(&key).unwrap();
            match change {
                EndpointsChange::Put(e) => {
                    assert_eq!(e.key(), key);
                    stored.insert(n, *e);
                }
                EndpointsChange::Delete => {
                    stored.remove(&n);
                }
                EndpointsChange::Keep => panic!("keeps are not returned"),
            }
        }
    }

    fn step(
        stored: &mut BTreeMap<u32, Endpoints>,
        service: Option<&Service>,
        members: Vec<EndpointReplica>,
    ) {
        let out = plan_endpoints(service, members, stored);
        commit(stored, out);
    }

    fn sizes(stored: &BTreeMap<u32, Endpoints>) -> Vec<(u32, usize)> {
        stored.iter().map(|(n, e)| (*n, e.replicas.len())).collect()
    }

    #[test]
    fn a_large_service_is_sliced_and_one_change_rewrites_one_slice() {
        let mut stored = BTreeMap::new();
        let out = plan_endpoints(Some(&service()), members(0..250), &stored);
        assert_eq!(out.len(), 3);
        commit(&mut stored, out);
        assert_eq!(sizes(&stored), [(0, 100), (1, 100), (2, 50)]);
        assert_eq!(stored[&2].key(), "default/shop/web@2");
        assert!(
            stored
                .values()
                .all(|e| e.vip.as_deref() == Some("10.43.0.2")),
            "every slice has the head"
        );
        let mut changed = members(0..250);
        changed[120].ready = false;
        let out = plan_endpoints(Some(&service()), changed, &stored);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, "default/shop/web@1");
        let out = plan_endpoints(Some(&service()), members(0..250), &stored);
        commit(&mut stored, out);
        assert!(
            plan_endpoints(Some(&service()), members(0..250), &stored).is_empty(),
            "steady"
        );
    }

    #[test]
    fn replicas_stay_in_their_slice_and_new_ones_fill_the_gaps() {
        let mut stored = BTreeMap::new();
        step(&mut stored, Some(&service()), members(0..300));
        // 20 leave slice 1, then 30 arrive: 20 into slice 1, 10 into a new slice 3.
        let mut now: Vec<_> = members(0..300);
        now.drain(100..120);
        let out = plan_endpoints(Some(&service()), now.clone(), &stored);
        assert_eq!(out.len(), 1);
        commit(&mut stored, out);
        now.extend(members(300..330));
        let out = plan_endpoints(Some(&service()), now, &stored);
        let keys: Vec<_> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["default/shop/web@1", "default/shop/web@3"]);
        commit(&mut stored, out);
        assert_eq!(sizes(&stored), [(0, 100), (1, 100), (2, 100), (3, 10)]);
    }

    #[test]
    fn emptied_slices_go_but_slice_zero_stays_and_fragments_are_packed() {
        let mut stored = BTreeMap::new();
        step(&mut stored, Some(&service()), members(0..1000));
        assert_eq!(stored.len(), 10);
        // Keep one replica of each slice: 10 slices for 10 replicas is fragmented.
        let few: Vec<_> = members(0..1000).into_iter().step_by(100).collect();
        step(&mut stored, Some(&service()), few.clone());
        assert_eq!(sizes(&stored), [(0, 10)], "packed into slice 0");
        assert!(plan_endpoints(Some(&service()), few, &stored).is_empty());
        step(&mut stored, Some(&service()), vec![]);
        assert_eq!(
            sizes(&stored),
            [(0, 0)],
            "slice 0 keeps the VIP without replicas"
        );
        let gone = plan_endpoints(None, vec![], &stored);
        assert_eq!(
            gone,
            [("default/shop/web".to_string(), EndpointsChange::Delete)]
        );
    }

    #[test]
    fn a_scale_down_deletes_the_emptied_slices() {
        let mut stored = BTreeMap::new();
        step(&mut stored, Some(&service()), members(0..500));
        step(&mut stored, Some(&service()), members(0..250));
        assert_eq!(sizes(&stored), [(0, 100), (1, 100), (2, 50)]);
    }

    #[test]
    fn networks_and_aliases_come_from_the_spec() {
        let attachment = |aliases: &[&str], internal| NetworkAttachment {
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            internal,
        };
        let mut s = service();
        s.spec.networks = BTreeMap::from([
            ("front".to_string(), attachment(&["api", "svc"], false)),
            ("back".to_string(), attachment(&["svc", "backend"], true)),
        ]);
        let got = put(plan_one(Some(&s), vec![], None));
        assert_eq!(got.networks, ["back", "front"]);
        assert_eq!(got.aliases, ["api", "backend", "svc"]);
        assert!(!got.internal, "front leads outside");
        s.spec.networks.remove("front");
        assert!(put(plan_one(Some(&s), vec![], None)).internal);
    }
}
