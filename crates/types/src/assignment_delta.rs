//! Delta assignments: how a node turns the server's answer to `after=G&delta=true` back into
//! its whole desired state.
//!
//! A delta answer carries the node's subnet, the replicas added or changed (and the ids of those
//! removed) since the generation asked after, the
//! services that are new to the node or changed other than in their endpoint list in full, the
//! endpoint lists that changed as upserts and removals, and the keys of every service the node
//! routes now. A full answer (`delta: false`) simply replaces what the node had, so the merge
//! is right whichever kind the server chose to send.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::object::{Assignment, Endpoint, ServiceEndpoints};

/// How one service's endpoint list changed since the generation asked after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointChange {
    /// The service's key, `namespace/app/name`.
    pub service: String,
    /// Endpoints added or changed (a replica's node or address), replacing any of the same
    /// replica id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upserts: Vec<Endpoint>,
    /// Replica ids no longer endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removes: Vec<String>,
}

impl ServiceEndpoints {
    /// `namespace/app/name`, the key of its `Endpoints` object.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.app, self.name)
    }
}

impl Assignment {
    /// Brings `self` (the last whole assignment) to `next`: a full answer replaces it, a
    /// delta is merged into it. The result is always whole (`delta: false`), its services in
    /// key order and each service's endpoints in replica id order, as full answers are.
    pub fn apply(&mut self, next: Assignment) {
        if !next.delta {
            *self = next;
            return;
        }
        let mut services: BTreeMap<String, ServiceEndpoints> =
            std::mem::take(&mut self.network.services)
                .into_iter()
                .map(|s| (s.key(), s))
                .collect();
        let net = next.network;
        for service in net.services {
            services.insert(service.key(), service);
        }
        for change in net.endpoint_changes {
            // The server sends a service in full when the node may not have it; a change for
            // one it lacks has nothing to apply to, and the next full answer repairs it.
            let Some(service) = services.get_mut(&change.service) else {
                continue;
            };
            merge_sorted(
                &mut service.endpoints,
                change.upserts,
                &change.removes,
                |e| e.replica.as_str(),
            );
        }
        let keep: std::collections::BTreeSet<&str> =
            net.service_keys.iter().map(String::as_str).collect();
        services.retain(|key, _| keep.contains(key.as_str()));
        self.node = next.node;
        self.generation = next.generation;
        merge_sorted(
            &mut self.replicas,
            next.replicas,
            &next.replica_removes,
            |r| r.id.as_str(),
        );
        self.files = crate::secret::merge_values(
            std::mem::take(&mut self.files),
            next.files,
            &self.replicas,
        );
        self.replica_removes = Vec::new();
        self.network.subnet = net.subnet;
        self.network.cluster_cidr = net.cluster_cidr;
        self.network.service_cidr = net.service_cidr;
        self.network.services = services.into_values().collect();
        self.network.endpoint_changes = Vec::new();
        self.network.service_keys = Vec::new();
        self.delta = false;
    }
}

/// Merges `upserts` (replacing items of the same id) and `removes` into `list`, kept in id
/// order, in one pass: O(list + changes log changes) and no clone of what stays, where
/// rebuilding a map of the list cost a clone of every id at every merge (a node routing a
/// 100,000-replica service merged 100,000 ids per endpoint change). An id both removed and
/// upserted ends upserted, as the server means it.
fn merge_sorted<T>(
    list: &mut Vec<T>,
    mut upserts: Vec<T>,
    removes: &[String],
    id: impl Fn(&T) -> &str,
) {
    if upserts.is_empty() && removes.is_empty() {
        return;
    }
    // Full answers come in id order; anything else is put in order first.
    if !list.is_sorted_by(|a, b| id(a) <= id(b)) {
        list.sort_by(|a, b| id(a).cmp(id(b)));
    }
    // A stable sort keeps upserts of one id in the order sent, and the last one wins.
    upserts.sort_by(|a, b| id(a).cmp(id(b)));
    let mut removes: Vec<&str> = removes.iter().map(String::as_str).collect();
    removes.sort_unstable();
    let old = std::mem::take(list);
    let mut out = Vec::with_capacity(old.len() + upserts.len());
    let mut ups = upserts.into_iter().peekable();
    for item in old {
        let mut replaced = false;
        while let Some(u) = ups.next_if(|u| id(u) <= id(&item)) {
            replaced |= id(&u) == id(&item);
            // Later upserts of the same id replace earlier ones.
            if out.last().is_some_and(|last: &T| id(last) == id(&u)) {
                out.pop();
            }
            out.push(u);
        }
        if !replaced && removes.binary_search(&id(&item)).is_err() {
            out.push(item);
        }
    }
    for u in ups {
        if out.last().is_some_and(|last: &T| id(last) == id(&u)) {
            out.pop();
        }
        out.push(u);
    }
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::NodeNetwork;

    fn ep(id: &str, ip: &str) -> Endpoint {
        Endpoint {
            replica: id.into(),
            node: "n1".into(),
            ip: ip.into(),
        }
    }

    fn service(app: &str, vip: &str, endpoints: &[Endpoint]) -> ServiceEndpoints {
        ServiceEndpoints {
            namespace: "default".into(),
            app: app.into(),
            name: "web".into(),
            vip: Some(vip.into()),
            ports: Vec::new(),
            ingress: None,
            endpoints: endpoints.to_vec(),
            networks: Vec::new(),
            aliases: Vec::new(),
            internal: false,
            proxy_protocol: false,
        }
    }

    fn full(generation: u64, services: Vec<ServiceEndpoints>) -> Assignment {
        Assignment {
            node: "n1".into(),
            generation,
            replicas: Vec::new(),
            replica_removes: Vec::new(),
            network: NodeNetwork {
                subnet: Some("10.42.1.0/24".into()),
                services,
                ..Default::default()
            },
            delta: false,
            files: Vec::new(),
        }
    }

    fn delta(
        generation: u64,
        services: Vec<ServiceEndpoints>,
        changes: Vec<EndpointChange>,
        keys: &[&str],
    ) -> Assignment {
        let mut a = full(generation, services);
        a.delta = true;
        a.network.endpoint_changes = changes;
        a.network.service_keys = keys.iter().map(|k| k.to_string()).collect();
        a
    }

    fn change(key: &str, upserts: &[Endpoint], removes: &[&str]) -> EndpointChange {
        EndpointChange {
            service: key.into(),
            upserts: upserts.to_vec(),
            removes: removes.iter().map(|r| r.to_string()).collect(),
        }
    }

    const SHOP: &str = "default/shop/web";
    const BLOG: &str = "default/blog/web";

    #[test]
    fn merges_deltas_table() {
        let a = ep("shop-a", "10.42.1.2");
        let b = ep("shop-b", "10.42.1.3");
        let c = ep("shop-c", "10.42.1.4");
        let b2 = ep("shop-b", "10.42.1.9");
        let base = full(
            5,
            vec![service("shop", "10.96.0.1", &[a.clone(), b.clone()])],
        );
        let cases: Vec<(&str, Assignment, Assignment)> = vec![
            (
                "upsert adds in id order and replaces by id",
                delta(
                    6,
                    vec![],
                    vec![change(SHOP, &[c.clone(), b2.clone()], &[])],
                    &[SHOP],
                ),
                full(
                    6,
                    vec![service(
                        "shop",
                        "10.96.0.1",
                        &[a.clone(), b2.clone(), c.clone()],
                    )],
                ),
            ),
            (
                "remove",
                delta(7, vec![], vec![change(SHOP, &[], &["shop-a"])], &[SHOP]),
                full(
                    7,
                    vec![service("shop", "10.96.0.1", std::slice::from_ref(&b))],
                ),
            ),
            (
                "service dropped",
                delta(8, vec![], vec![], &[]),
                full(8, vec![]),
            ),
            (
                "service new, in key order",
                delta(
                    9,
                    vec![service("blog", "10.96.0.2", &[])],
                    vec![],
                    &[SHOP, BLOG],
                ),
                full(
                    9,
                    vec![
                        service("blog", "10.96.0.2", &[]),
                        service("shop", "10.96.0.1", &[a.clone(), b.clone()]),
                    ],
                ),
            ),
            (
                "a service sent in full replaces the old one, then its changes apply",
                delta(
                    10,
                    vec![service("shop", "10.96.0.7", std::slice::from_ref(&a))],
                    vec![change(SHOP, std::slice::from_ref(&c), &[])],
                    &[SHOP],
                ),
                full(
                    10,
                    vec![service("shop", "10.96.0.7", &[a.clone(), c.clone()])],
                ),
            ),
            (
                "full answer replaces everything",
                full(11, vec![service("blog", "10.96.0.2", &[])]),
                full(11, vec![service("blog", "10.96.0.2", &[])]),
            ),
            (
                "a change for a service the node lacks is skipped",
                delta(
                    12,
                    vec![],
                    vec![change(BLOG, std::slice::from_ref(&c), &[])],
                    &[SHOP],
                ),
                full(
                    12,
                    vec![service("shop", "10.96.0.1", &[a.clone(), b.clone()])],
                ),
            ),
        ];
        for (name, next, want) in cases {
            let mut got = base.clone();
            got.apply(next);
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn generation_and_subnet_come_from_next() {
        let mut got = full(5, vec![]);
        let mut next = delta(9, vec![], vec![], &[]);
        next.network.subnet = Some("10.42.7.0/24".into());
        next.replicas = Vec::new();
        got.apply(next);
        assert_eq!(got.generation, 9);
        assert_eq!(got.network.subnet.as_deref(), Some("10.42.7.0/24"));
        assert!(!got.delta);
    }

    #[test]
    fn replica_upserts_and_removes_merge_in_id_order() {
        let replica = |id: &str, hash: &str| crate::object::Replica {
            id: id.into(),
            namespace: "default".into(),
            app: "shop".into(),
            service: "web".into(),
            node: "n1".into(),
            spec: Default::default(),
            revision_hash: hash.into(),
            meta: Default::default(),
        };
        let mut got = full(5, vec![]);
        got.replicas = vec![replica("web-a", "1"), replica("web-b", "1")];
        let mut next = delta(6, vec![], vec![], &[]);
        next.replicas = vec![replica("web-c", "1"), replica("web-a", "2")];
        next.replica_removes = vec!["web-b".into(), "web-zz".into()];
        got.apply(next);
        assert_eq!(got.replicas, [replica("web-a", "2"), replica("web-c", "1")]);
        assert!(got.replica_removes.is_empty());
        let mut quiet = delta(7, vec![], vec![], &[]);
        quiet.replicas = Vec::new();
        got.apply(quiet);
        assert_eq!(got.replicas.len(), 2, "a delta without replicas keeps them");
    }

    #[test]
    fn old_payloads_parse_as_full_answers() {
        let old = r#"{"node": "n1", "generation": 3, "replicas": [], "network": {"services": []}}"#;
        let a: Assignment = serde_json::from_str(old).unwrap();
        assert!(!a.delta && a.network.endpoint_changes.is_empty());
        let wire = serde_json::to_value(full(3, vec![])).unwrap();
        assert!(wire.get("delta").is_none(), "full answers look as before");
    }

    proptest::proptest! {
        /// The one-pass merge equals the obvious one (a map of the list, removes, then
        /// upserts in order), whatever the list, the upserts (repeats included) and removes.
        #[test]
        fn merge_sorted_equals_a_map_merge(
            list in proptest::collection::btree_map("[a-f]{1,2}", 0u8..4, 0..20),
            upserts in proptest::collection::vec(("[a-f]{1,2}", 0u8..4), 0..12),
            removes in proptest::collection::vec("[a-f]{1,2}", 0..8),
        ) {
            let as_ep = |(id, n): (String, u8)| ep(&id, &format!("10.0.0.{n}"));
            let mut want: BTreeMap<String, Endpoint> =
                list.clone().into_iter().map(|(id, n)| (id.clone(), as_ep((id, n)))).collect();
            for id in &removes {
                want.remove(id);
            }
            for u in &upserts {
                want.insert(u.0.clone(), as_ep(u.clone()));
            }
            let mut got: Vec<Endpoint> = list.into_iter().map(as_ep).collect();
            merge_sorted(
                &mut got,
                upserts.into_iter().map(as_ep).collect(),
                &removes,
                |e| e.replica.as_str(),
            );
            proptest::prop_assert_eq!(got, want.into_values().collect::<Vec<_>>());
        }
    }
}
