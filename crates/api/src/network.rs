//! Cluster networking state held by the server: node subnets, service VIPs, and each node's view
//! of every service's endpoints (the network part of its assignment).
//!
//! Allocation is done inside the transactions that create the objects (a node's first report, a
//! service's first deploy), so an address is never handed out twice: a concurrent allocation of
//! the same address fails its `Expect` precondition and is retried by the client.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use hivemind_store::{Change, ChangeOp, Store};
use hivemind_types::{
    Assignment, Endpoint, Kind, Node, NodeNetwork, ObservedReplica, Replica, ReplicaState, Service,
    ServiceEndpoints,
};

use crate::error::ApiError;

/// Serializes read-allocate-write of subnets and VIPs within this server, so two requests never
/// pick the same free address. (Store preconditions guard the objects, not the address space.)
pub(crate) static ALLOCATION: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replica addresses: a /24 per node out of this /16 (SPEC §6).
pub const CLUSTER_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 42, 0, 0), 16);
/// Service VIPs (SPEC §6).
pub const SERVICE_CIDR: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 43, 0, 0), 16);

/// The lowest free /24 of the cluster CIDR, or `None` when all 256 are taken.
pub fn allocate_subnet(nodes: &[Node]) -> Option<String> {
    let used: BTreeSet<String> = nodes.iter().filter_map(|n| n.subnet.clone()).collect();
    let [a, b, _, _] = CLUSTER_CIDR.0.octets();
    (0..=255u8)
        .map(|third| format!("{a}.{b}.{third}.0/24"))
        .find(|s| !used.contains(s))
}

/// The lowest free VIP of the service CIDR not in `used`. `.0.0` and `.0.1` are kept back (the
/// network address, and a conventional gateway/API address).
pub fn allocate_vip(used: &BTreeSet<String>) -> Option<String> {
    let base = u32::from(SERVICE_CIDR.0);
    let size = 1u32 << (32 - SERVICE_CIDR.1);
    (2..size - 1)
        .map(|i| Ipv4Addr::from(base + i).to_string())
        .find(|ip| !used.contains(ip))
}

/// What `node` needs to know about the cluster's services.
pub fn node_network(store: &Store, node: &str) -> Result<NodeNetwork, ApiError> {
    let subnet = store.get::<Node>(Kind::Node, node)?.and_then(|n| n.subnet);
    let services: Vec<Service> = store.list(Kind::Service, "")?;
    let replicas: Vec<Replica> = store.list(Kind::Replica, "")?;
    let statuses: BTreeMap<String, ObservedReplica> = store
        .list::<ObservedReplica>(Kind::ReplicaStatus, "")?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    Ok(NodeNetwork {
        subnet,
        services: service_endpoints(&services, &replicas, &statuses),
    })
}

/// Joins services with their running, attached replicas. Pure, so it is tested with data.
pub fn service_endpoints(
    services: &[Service],
    replicas: &[Replica],
    statuses: &BTreeMap<String, ObservedReplica>,
) -> Vec<ServiceEndpoints> {
    let mut by_service: BTreeMap<(&str, &str, &str), Vec<Endpoint>> = BTreeMap::new();
    for r in replicas {
        let Some(status) = statuses.get(&r.id) else {
            continue;
        };
        let (ReplicaState::Running, Some(ip)) = (status.state, &status.ip) else {
            continue;
        };
        by_service
            .entry((&r.namespace, &r.app, &r.service))
            .or_default()
            .push(Endpoint {
                replica: r.id.clone(),
                node: r.node.clone(),
                ip: ip.clone(),
            });
    }
    services
        .iter()
        .map(|s| {
            let mut endpoints = by_service
                .remove(&(s.namespace.as_str(), s.app.as_str(), s.name.as_str()))
                .unwrap_or_default();
            endpoints.sort_by(|a, b| a.replica.cmp(&b.replica));
            ServiceEndpoints {
                namespace: s.namespace.clone(),
                app: s.app.clone(),
                name: s.name.clone(),
                vip: s.vip.clone(),
                ports: s.spec.ports.clone(),
                ingress: s.spec.hivemind.ingress.clone(),
                endpoints,
            }
        })
        .collect()
}

/// Whether `change` may alter the network part of `current`: any service change, a replica
/// becoming or ceasing to be an endpoint, or this node's subnet changing.
pub fn touches_network(change: &Change, node: &str, current: &Assignment) -> bool {
    let is_endpoint = |id: &str| {
        current
            .network
            .services
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.replica == id)
    };
    match change.kind {
        Kind::Service => true,
        Kind::Replica => change.op == ChangeOp::Delete && is_endpoint(&change.key).is_some(),
        Kind::ReplicaStatus => {
            let running = change.op == ChangeOp::Put
                && change.value.get("state").and_then(|v| v.as_str()) == Some("running");
            let ip = change.value.get("ip").and_then(|v| v.as_str());
            match (is_endpoint(&change.key), running, ip) {
                (Some(e), true, Some(ip)) => e.ip != ip,
                (Some(_), _, _) => true,
                (None, true, Some(_)) => true,
                (None, _, _) => false,
            }
        }
        Kind::Node => {
            change.key == node
                && change.value.get("subnet").and_then(|v| v.as_str())
                    != current.network.subnet.as_deref()
        }
        Kind::App => false,
    }
}

#[cfg(test)]
mod tests {
    use hivemind_types::{Meta, NodeState, ServiceSpec};

    use super::*;

    fn node(name: &str, subnet: Option<&str>) -> Node {
        Node {
            name: name.into(),
            address: "127.0.0.1".into(),
            state: NodeState::Ready,
            last_seen: 0,
            subnet: subnet.map(String::from),
            meta: Meta::default(),
        }
    }

    #[test]
    fn subnets_are_the_lowest_free_slash_24() {
        assert_eq!(allocate_subnet(&[]).as_deref(), Some("10.42.0.0/24"));
        let nodes = [
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.2.0/24")),
            node("c", None),
        ];
        assert_eq!(allocate_subnet(&nodes).as_deref(), Some("10.42.1.0/24"));
        let full: Vec<Node> = (0..=255)
            .map(|i| node("n", Some(&format!("10.42.{i}.0/24"))))
            .collect();
        assert_eq!(allocate_subnet(&full), None);
    }

    #[test]
    fn vips_skip_reserved_and_used() {
        let used = BTreeSet::from(["10.43.0.2".to_string(), "10.43.0.3".to_string()]);
        assert_eq!(allocate_vip(&BTreeSet::new()).as_deref(), Some("10.43.0.2"));
        assert_eq!(allocate_vip(&used).as_deref(), Some("10.43.0.4"));
    }

    fn status(id: &str, state: ReplicaState, ip: Option<&str>) -> (String, ObservedReplica) {
        (
            id.into(),
            ObservedReplica {
                id: id.into(),
                node: "n1".into(),
                state,
                pid: None,
                exit_code: None,
                restarts: 0,
                message: String::new(),
                started_at: None,
                ip: ip.map(String::from),
                meta: Meta::default(),
            },
        )
    }

    #[test]
    fn endpoints_are_running_attached_replicas_that_still_exist() {
        let service = Service {
            namespace: "default".into(),
            app: "shop".into(),
            name: "web".into(),
            spec: ServiceSpec {
                image: "x".into(),
                ..Default::default()
            },
            vip: Some("10.43.0.2".into()),
            meta: Meta::default(),
        };
        let replica = |id: &str| Replica {
            id: id.into(),
            namespace: "default".into(),
            app: "shop".into(),
            service: "web".into(),
            node: "n1".into(),
            spec: service.spec.clone(),
            revision_hash: service.spec.revision_hash(),
            meta: Meta::default(),
        };
        let replicas = [
            replica("web-b"),
            replica("web-a"),
            replica("web-c"),
            replica("web-d"),
        ];
        let statuses = BTreeMap::from([
            status("web-a", ReplicaState::Running, Some("10.42.0.3")),
            status("web-b", ReplicaState::Running, Some("10.42.0.2")),
            status("web-c", ReplicaState::Restarting, Some("10.42.0.4")),
            status("web-d", ReplicaState::Running, None),
            // A status whose replica was deleted is not an endpoint.
            status("web-z", ReplicaState::Running, Some("10.42.0.9")),
        ]);
        let got = service_endpoints(&[service], &replicas, &statuses);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].vip.as_deref(), Some("10.43.0.2"));
        let ips: Vec<_> = got[0]
            .endpoints
            .iter()
            .map(|e| (e.replica.as_str(), e.ip.as_str()))
            .collect();
        assert_eq!(ips, [("web-a", "10.42.0.3"), ("web-b", "10.42.0.2")]);
    }
}
