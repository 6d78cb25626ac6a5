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
/// An async mutex: it is held across the store's (async) reads and writes.
pub(crate) static ALLOCATION: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster's address plan (SPEC §6): replica addresses, a /24 per node out of
/// `cluster_cidr`, and service VIPs out of `service_cidr`. Flags of `hivemind server`/`up`, so
/// that test clusters on one machine do not overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNetwork {
    pub cluster_cidr: (Ipv4Addr, u8),
    pub service_cidr: (Ipv4Addr, u8),
}

impl Default for ClusterNetwork {
    fn default() -> Self {
        ClusterNetwork {
            cluster_cidr: (Ipv4Addr::new(10, 42, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 43, 0, 0), 16),
        }
    }
}

impl ClusterNetwork {
    /// Parses `A.B.C.D/N` pairs; the cluster CIDR must hold /24s (N ≤ 24), the service CIDR
    /// at least a few addresses (N ≤ 30).
    pub fn parse(cluster: &str, service: &str) -> Result<ClusterNetwork, String> {
        let cluster_cidr =
            parse_cidr(cluster, 8, 24).map_err(|e| format!("cluster CIDR {cluster:?}: {e}"))?;
        let service_cidr =
            parse_cidr(service, 8, 30).map_err(|e| format!("service CIDR {service:?}: {e}"))?;
        if overlaps(cluster_cidr, service_cidr) {
            return Err(format!(
                "the cluster CIDR {cluster} and the service CIDR {service} overlap: pick disjoint ranges"
            ));
        }
        Ok(ClusterNetwork {
            cluster_cidr,
            service_cidr,
        })
    }

    pub fn cluster_cidr_string(&self) -> String {
        format!("{}/{}", self.cluster_cidr.0, self.cluster_cidr.1)
    }

    pub fn service_cidr_string(&self) -> String {
        format!("{}/{}", self.service_cidr.0, self.service_cidr.1)
    }
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    // Two prefixes overlap exactly when the shorter one contains the other's base.
    let len = a.1.min(b.1);
    let mask = u32::MAX << (32 - len);
    u32::from(a.0) & mask == u32::from(b.0) & mask
}

fn parse_cidr(text: &str, min: u8, max: u8) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = text
        .split_once('/')
        .ok_or("write it as ADDRESS/PREFIX, e.g. 10.42.0.0/16")?;
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    if !(min..=max).contains(&len) {
        return Err(format!("the prefix length must be between {min} and {max}"));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(ip) & !mask != 0 {
        return Err(format!("{ip} has host bits set for /{len}"));
    }
    Ok((ip, len))
}

/// The lowest free /24 of the cluster CIDR, or `None` when all are taken.
pub fn allocate_subnet(net: &ClusterNetwork, nodes: &[Node]) -> Option<String> {
    let used: BTreeSet<String> = nodes.iter().filter_map(|n| n.subnet.clone()).collect();
    let (base, len) = net.cluster_cidr;
    let count = 1u32 << (24 - len);
    (0..count)
        .map(|i| format!("{}/24", Ipv4Addr::from(u32::from(base) + (i << 8))))
        .find(|s| !used.contains(s))
}

/// The lowest free VIP of the service CIDR not in `used`. The first two addresses are kept back
/// (the network address, and a conventional gateway/API address), and so is the broadcast.
pub fn allocate_vip(net: &ClusterNetwork, used: &BTreeSet<String>) -> Option<String> {
    let (base, len) = net.service_cidr;
    let size = 1u32 << (32 - len);
    (2..size - 1)
        .map(|i| Ipv4Addr::from(u32::from(base) + i).to_string())
        .find(|ip| !used.contains(ip))
}

/// What `node` needs to know about the cluster's services.
pub async fn node_network(
    store: &Store,
    net: &ClusterNetwork,
    node: &str,
) -> Result<NodeNetwork, ApiError> {
    let subnet = store
        .get::<Node>(Kind::Node, node)
        .await?
        .and_then(|n| n.subnet);
    let services: Vec<Service> = store.list(Kind::Service, "").await?;
    let replicas: Vec<Replica> = store.list(Kind::Replica, "").await?;
    let statuses: BTreeMap<String, ObservedReplica> = store
        .list::<ObservedReplica>(Kind::ReplicaStatus, "")
        .await?
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    Ok(NodeNetwork {
        subnet,
        cluster_cidr: Some(net.cluster_cidr_string()),
        service_cidr: Some(net.service_cidr_string()),
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
                networks: s.spec.network_names(),
                aliases: s.spec.network_aliases(),
                internal: s.spec.is_internal(),
                proxy_protocol: s.spec.hivemind.proxy_protocol,
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
        Kind::App | Kind::Event | Kind::Endpoints | Kind::Address => false,
    }
}

#[cfg(test)]
mod tests {
    use hivemind_types::{Meta, NetworkAttachment, NodeState, ServiceSpec};

    use super::*;

    fn node(name: &str, subnet: Option<&str>) -> Node {
        Node {
            name: name.into(),
            address: "127.0.0.1".into(),
            state: NodeState::Ready,
            last_seen: 0,
            subnet: subnet.map(String::from),
            agent_url: None,
            problems: Vec::new(),
            meta: Meta::default(),
        }
    }

    #[test]
    fn subnets_are_the_lowest_free_slash_24() {
        let net = ClusterNetwork::default();
        assert_eq!(allocate_subnet(&net, &[]).as_deref(), Some("10.42.0.0/24"));
        let nodes = [
            node("a", Some("10.42.0.0/24")),
            node("b", Some("10.42.2.0/24")),
            node("c", None),
        ];
        assert_eq!(
            allocate_subnet(&net, &nodes).as_deref(),
            Some("10.42.1.0/24")
        );
        let full: Vec<Node> = (0..=255)
            .map(|i| node("n", Some(&format!("10.42.{i}.0/24"))))
            .collect();
        assert_eq!(allocate_subnet(&net, &full), None);
    }

    #[test]
    fn vips_skip_reserved_and_used() {
        let used = BTreeSet::from(["10.43.0.2".to_string(), "10.43.0.3".to_string()]);
        let net = ClusterNetwork::default();
        assert_eq!(
            allocate_vip(&net, &BTreeSet::new()).as_deref(),
            Some("10.43.0.2")
        );
        assert_eq!(allocate_vip(&net, &used).as_deref(), Some("10.43.0.4"));
        let small = ClusterNetwork::parse("10.100.0.0/23", "10.101.0.0/30").unwrap();
        assert_eq!(
            allocate_vip(&small, &BTreeSet::new()).as_deref(),
            Some("10.101.0.2")
        );
        let taken = BTreeSet::from(["10.101.0.2".to_string()]);
        assert_eq!(allocate_vip(&small, &taken), None);
        let nodes = [node("a", Some("10.100.0.0/24"))];
        assert_eq!(
            allocate_subnet(&small, &nodes).as_deref(),
            Some("10.100.1.0/24")
        );
        assert_eq!(
            allocate_subnet(
                &small,
                &[nodes[0].clone(), node("b", Some("10.100.1.0/24"))]
            ),
            None
        );
    }

    #[test]
    fn cidrs_are_checked() {
        assert!(ClusterNetwork::parse("10.42.0.0/16", "10.43.0.0/16").is_ok());
        for (c, s, needle) in [
            ("10.42.0.0", "10.43.0.0/16", "ADDRESS/PREFIX"),
            ("10.42.0.1/16", "10.43.0.0/16", "host bits"),
            ("10.42.0.0/25", "10.43.0.0/16", "between 8 and 24"),
            ("10.42.0.0/16", "banana/16", "not an IPv4"),
            ("10.42.0.0/16", "10.42.128.0/20", "overlap"),
            ("10.0.0.0/8", "10.43.0.0/16", "overlap"),
        ] {
            let err = ClusterNetwork::parse(c, s).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
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
                exits: Vec::new(),
                failure: None,
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
        assert_eq!(got[0].networks, ["default"], "no networks: on default");
        assert!(got[0].aliases.is_empty());
        assert!(!got[0].internal);
    }

    #[test]
    fn endpoints_carry_networks_and_aliases() {
        let attachment = |aliases: &[&str], internal| NetworkAttachment {
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            internal,
        };
        let mut spec = ServiceSpec {
            image: "x".into(),
            ..Default::default()
        };
        spec.networks = BTreeMap::from([
            ("front".to_string(), attachment(&["api", "svc"], false)),
            ("back".to_string(), attachment(&["svc", "backend"], true)),
        ]);
        let service = Service {
            namespace: "default".into(),
            app: "shop".into(),
            name: "api".into(),
            spec,
            vip: None,
            meta: Meta::default(),
        };
        let got = service_endpoints(std::slice::from_ref(&service), &[], &BTreeMap::new());
        assert_eq!(got[0].networks, ["back", "front"]);
        assert_eq!(got[0].aliases, ["api", "backend", "svc"]);
        assert!(!got[0].internal, "front leads outside");

        let mut internal = service;
        internal.spec.networks.remove("front");
        let got = service_endpoints(&[internal], &[], &BTreeMap::new());
        assert_eq!(got[0].networks, ["back"]);
        assert!(got[0].internal);
        // Older agents and payloads: the new fields have defaults.
        let json = serde_json::json!({"namespace": "default", "app": "shop", "name": "web"});
        let old: ServiceEndpoints = serde_json::from_value(json).unwrap();
        assert!(old.networks.is_empty() && old.aliases.is_empty() && !old.internal);
    }
}
