//! The data-plane planner: the network part of the assignment → nftables VIP rules and app
//! network sets, the DNS zone with its client table, and the ingress routes. Pure,
//! table-tested; `dataplane` applies what it returns.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use hivemind_types::{NodeNetwork, PortProtocol, ServiceEndpoints, DEFAULT_NETWORK};

use hivemind_dataplane::dns::{DnsClient, DnsService, DnsZone};
use hivemind_dataplane::ingress::{self, HttpRule, Route, RouteMode};
use hivemind_dataplane::net::{NetRules, NetworkRule, VipRule};

/// Everything the data plane must look like for one assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct DataPlanePlan {
    pub rules: NetRules,
    pub zone: DnsZone,
    pub routes: Vec<Route>,
}

/// A Compose port's protocol as the data plane's own type (`hivemind-dataplane` knows no
/// hivemind type; this is the edge where the agent converts).
pub fn proto(protocol: PortProtocol) -> hivemind_dataplane::Proto {
    match protocol {
        PortProtocol::Tcp => hivemind_dataplane::Proto::Tcp,
        PortProtocol::Udp => hivemind_dataplane::Proto::Udp,
    }
}

pub fn plan_data_plane(network: &NodeNetwork, generation: u64) -> DataPlanePlan {
    let mut vips = Vec::new();
    let mut zone = Vec::new();
    // (app key, network) → members; replica address → who it is, for the DNS server's view.
    let mut networks: BTreeMap<(String, String), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    let mut clients: BTreeMap<Ipv4Addr, DnsClient> = BTreeMap::new();
    let mut isolated = BTreeSet::new();
    // (published, protocol) → the services publishing it, in order.
    let mut published: BTreeMap<(u16, ingress::Proto), Vec<(&ServiceEndpoints, u16)>> =
        BTreeMap::new();
    for service in &network.services {
        let backends: Vec<Ipv4Addr> = service
            .endpoints
            .iter()
            .filter_map(|e| e.ip.parse().ok())
            .collect();
        let vip: Option<Ipv4Addr> = service.vip.as_deref().and_then(|v| v.parse().ok());
        let service_networks = networks_of(service);
        let app_key = format!("{}/{}", service.namespace, service.app);
        for name in &service_networks {
            networks
                .entry((app_key.clone(), name.clone()))
                .or_default()
                .extend(&backends);
        }
        if service.internal {
            isolated.extend(&backends);
        }
        for ip in &backends {
            let client = clients.entry(*ip).or_insert_with(|| DnsClient {
                namespace: service.namespace.clone(),
                app: service.app.clone(),
                networks: Vec::new(),
            });
            // One address in two services would be an IPAM bug; merging keeps both views.
            client.networks.extend(service_networks.iter().cloned());
            client.networks.sort();
            client.networks.dedup();
        }
        let mut dns_ports = Vec::new();
        for port in &service.ports {
            let (net_proto, ingress_proto, name) = (
                proto(port.protocol),
                proto(port.protocol),
                port.protocol.as_str(),
            );
            // The VIP answers on the container port, as a Kubernetes service's port does by
            // default; the published port is the ingress's.
            if let Some(vip) = vip {
                let rule = VipRule {
                    vip,
                    protocol: net_proto,
                    port: port.target,
                    target_port: port.target,
                    backends: backends.clone(),
                };
                if !vips.iter().any(|v: &VipRule| {
                    (v.vip, v.protocol, v.port) == (rule.vip, rule.protocol, rule.port)
                }) {
                    vips.push(rule);
                }
            }
            dns_ports.push((name.to_string(), port.target));
            if let Some(p) = port.published {
                published
                    .entry((p, ingress_proto))
                    .or_default()
                    .push((service, port.target));
            }
        }
        dns_ports.dedup();
        zone.push(DnsService {
            namespace: service.namespace.clone(),
            app: service.app.clone(),
            name: service.name.clone(),
            vip,
            aliases: service.aliases.clone(),
            networks: service_networks,
            replicas: backends,
            ports: dns_ports,
        });
    }
    let routes = published
        .into_iter()
        .map(|((port, protocol), services)| route(port, protocol, &services))
        .collect();
    DataPlanePlan {
        rules: NetRules {
            vips,
            networks: networks
                .into_iter()
                .map(|((app_key, name), members)| NetworkRule {
                    app_key,
                    name,
                    members: members.into_iter().collect(),
                })
                .collect(),
            isolated: isolated.into_iter().collect(),
        },
        zone: DnsZone {
            generation,
            services: zone,
            clients,
        },
        routes,
    }
}

/// The service's networks; `default` for payloads from servers that predate networks.
fn networks_of(service: &ServiceEndpoints) -> Vec<String> {
    if service.networks.is_empty() {
        vec![DEFAULT_NETWORK.to_string()]
    } else {
        service.networks.clone()
    }
}

fn socket_addrs(service: &ServiceEndpoints, target: u16) -> Vec<SocketAddr> {
    service
        .endpoints
        .iter()
        .filter_map(|e| e.ip.parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddr::from((ip, target)))
        .collect()
}

/// One listener. HTTP mode when every service on the port has an ingress rule (the deploy-time
/// check allows sharing only then); otherwise the first service's bytes are forwarded as-is.
fn route(port: u16, protocol: ingress::Proto, services: &[(&ServiceEndpoints, u16)]) -> Route {
    let http = protocol == ingress::Proto::Tcp && services.iter().all(|(s, _)| s.ingress.is_some());
    if http {
        let rules = services
            .iter()
            .map(|(s, target)| {
                let rule = s.ingress.as_ref().expect("checked above");
                HttpRule {
                    host: rule.host.clone(),
                    path_prefix: rule.path.clone(),
                    backends: socket_addrs(s, *target),
                }
            })
            .collect();
        return Route {
            published: port,
            protocol,
            mode: RouteMode::Http { rules },
            backends: Vec::new(),
            proxy_protocol: false,
        };
    }
    let (service, target) = services[0];
    Route {
        published: port,
        protocol,
        mode: RouteMode::L4,
        backends: socket_addrs(service, target),
        proxy_protocol: service.proxy_protocol && protocol == ingress::Proto::Tcp,
    }
}

/// The resolv.conf of a replica of `app` in `namespace`: the node's DNS server, and search
/// domains so that `web` and `web.APP` resolve (SPEC §6).
pub fn replica_resolv_conf(nameserver: Ipv4Addr, namespace: &str, app: &str) -> String {
    format!(
        "nameserver {nameserver}\nsearch {app}.{namespace}.hivemind {namespace}.hivemind hivemind\noptions ndots:3\n"
    )
}

#[cfg(test)]
mod tests {
    use hivemind_types::spec::IngressRule;
    use hivemind_types::{Endpoint, PortSpec};

    use super::*;

    fn port(target: u16, published: Option<u16>) -> PortSpec {
        PortSpec {
            target,
            published,
            host_ip: None,
            protocol: hivemind_types::PortProtocol::Tcp,
        }
    }

    fn service(name: &str, vip: &str, ports: Vec<PortSpec>, ips: &[&str]) -> ServiceEndpoints {
        ServiceEndpoints {
            namespace: "default".into(),
            app: "shop".into(),
            name: name.into(),
            vip: Some(vip.into()),
            ports,
            ingress: None,
            endpoints: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Endpoint {
                    replica: format!("{name}-{i}"),
                    node: "n1".into(),
                    ip: ip.to_string(),
                })
                .collect(),
            networks: Vec::new(),
            aliases: Vec::new(),
            internal: false,
            proxy_protocol: false,
        }
    }

    #[test]
    fn vips_dns_and_l4_routes() {
        let net = NodeNetwork {
            subnet: Some("10.42.0.0/24".into()),
            cluster_cidr: None,
            service_cidr: None,
            endpoint_changes: Vec::new(),
            service_keys: Vec::new(),
            services: vec![
                service(
                    "web",
                    "10.43.0.2",
                    vec![port(80, Some(8080))],
                    &["10.42.0.2", "10.42.0.3"],
                ),
                service("db", "10.43.0.3", vec![port(5432, None)], &[]),
            ],
        };
        let plan = plan_data_plane(&net, 7);
        assert_eq!(plan.rules.vips.len(), 2);
        assert_eq!(plan.rules.vips[0].port, 80);
        assert_eq!(plan.rules.vips[0].backends.len(), 2);
        assert!(
            plan.rules.vips[1].backends.is_empty(),
            "no backends: refused, still a rule"
        );
        assert_eq!(plan.zone.generation, 7);
        assert_eq!(plan.zone.services[0].ports, [("tcp".to_string(), 80)]);
        assert_eq!(plan.routes.len(), 1);
        assert_eq!(plan.routes[0].published, 8080);
        assert_eq!(plan.routes[0].mode, RouteMode::L4);
        assert!(!plan.routes[0].proxy_protocol);
        assert_eq!(
            plan.routes[0].backends,
            [
                "10.42.0.2:80".parse().unwrap(),
                "10.42.0.3:80".parse::<SocketAddr>().unwrap()
            ]
        );
    }

    #[test]
    fn ingress_services_share_a_port_by_host() {
        let mut a = service("a", "10.43.0.2", vec![port(80, Some(8080))], &["10.42.0.2"]);
        a.ingress = Some(IngressRule {
            host: Some("a.example".into()),
            path: "/".into(),
        });
        let mut b = service(
            "b",
            "10.43.0.3",
            vec![port(8000, Some(8080))],
            &["10.42.0.3"],
        );
        b.ingress = Some(IngressRule {
            host: Some("b.example".into()),
            path: "/api".into(),
        });
        let plan = plan_data_plane(
            &NodeNetwork {
                subnet: None,
                cluster_cidr: None,
                service_cidr: None,
                endpoint_changes: Vec::new(),
                service_keys: Vec::new(),
                services: vec![a, b],
            },
            1,
        );
        assert_eq!(plan.routes.len(), 1);
        let RouteMode::Http { rules } = &plan.routes[0].mode else {
            panic!("expected http mode: {:?}", plan.routes[0]);
        };
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].host.as_deref(), Some("b.example"));
        assert_eq!(rules[1].path_prefix, "/api");
        assert_eq!(
            rules[1].backends,
            ["10.42.0.3:8000".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn networks_become_sets_clients_and_dns_scopes() {
        let on = |mut s: ServiceEndpoints, app: &str, networks: &[&str], aliases: &[&str]| {
            s.app = app.into();
            s.networks = networks.iter().map(|n| n.to_string()).collect();
            s.aliases = aliases.iter().map(|a| a.to_string()).collect();
            s
        };
        let mut db = on(
            service("db", "10.43.0.4", vec![port(5432, None)], &["10.42.0.4"]),
            "shop",
            &["back"],
            &["database"],
        );
        db.internal = true;
        let net = NodeNetwork {
            subnet: Some("10.42.0.0/24".into()),
            cluster_cidr: None,
            service_cidr: None,
            endpoint_changes: Vec::new(),
            service_keys: Vec::new(),
            services: vec![
                on(
                    service("web", "10.43.0.2", vec![], &["10.42.0.2"]),
                    "shop",
                    &["front"],
                    &[],
                ),
                on(
                    service("api", "10.43.0.3", vec![], &["10.42.0.3", "10.42.0.13"]),
                    "shop",
                    &["back", "front"],
                    &[],
                ),
                db,
                // From a server that predates networks: on `default`.
                on(
                    service("web", "10.43.0.5", vec![], &["10.42.0.5"]),
                    "blog",
                    &[],
                    &[],
                ),
            ],
        };
        let plan = plan_data_plane(&net, 3);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let rule = |app: &str, name: &str, members: &[&str]| NetworkRule {
            app_key: app.into(),
            name: name.into(),
            members: members.iter().map(|m| ip(m)).collect(),
        };
        assert_eq!(
            plan.rules.networks,
            [
                rule("default/blog", "default", &["10.42.0.5"]),
                rule(
                    "default/shop",
                    "back",
                    &["10.42.0.3", "10.42.0.4", "10.42.0.13"]
                ),
                rule(
                    "default/shop",
                    "front",
                    &["10.42.0.2", "10.42.0.3", "10.42.0.13"]
                ),
            ]
        );
        assert_eq!(plan.rules.isolated, [ip("10.42.0.4")]);
        let client = |app: &str, networks: &[&str]| DnsClient {
            namespace: "default".into(),
            app: app.into(),
            networks: networks.iter().map(|n| n.to_string()).collect(),
        };
        assert_eq!(
            plan.zone.clients,
            BTreeMap::from([
                (ip("10.42.0.2"), client("shop", &["front"])),
                (ip("10.42.0.3"), client("shop", &["back", "front"])),
                (ip("10.42.0.4"), client("shop", &["back"])),
                (ip("10.42.0.5"), client("blog", &["default"])),
                (ip("10.42.0.13"), client("shop", &["back", "front"])),
            ])
        );
        assert_eq!(plan.zone.services[2].aliases, ["database"]);
        assert_eq!(plan.zone.services[2].networks, ["back"]);
        assert_eq!(plan.zone.services[3].networks, ["default"]);
    }

    #[test]
    fn resolv_conf_searches_the_app_first() {
        let conf = replica_resolv_conf("10.42.0.1".parse().unwrap(), "default", "shop");
        assert!(conf.starts_with("nameserver 10.42.0.1\n"));
        assert!(conf.contains("search shop.default.hivemind default.hivemind hivemind"));
    }
}

#[cfg(test)]
mod edge_tests {
    use super::*;

    /// The data plane's copies of the types' vocabulary must not drift from it.
    #[test]
    fn dataplane_vocabulary_matches_the_types() {
        assert_eq!(hivemind_dataplane::DEFAULT_NETWORK, DEFAULT_NETWORK);
        for p in [PortProtocol::Tcp, PortProtocol::Udp] {
            assert_eq!(proto(p).as_str(), p.as_str());
            assert_eq!(
                serde_json::to_value(proto(p)).unwrap(),
                serde_json::to_value(p).unwrap()
            );
        }
    }
}
