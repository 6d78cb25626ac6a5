//! What the control plane derives for the data plane: one `Endpoints` object per service (its
//! VIP, routing and replicas, written by the endpoints controller) and `AddressClaim`s, the
//! allocators' records of which VIP or node subnet belongs to whom.
//!
//! Agents never read these directly: the server builds each node's `NodeNetwork` from the
//! `Endpoints` objects that node needs, so the assignment's wire shape stays the same.

use serde::{Deserialize, Serialize};

use crate::object::{Endpoint, Meta, ServiceEndpoints};
use crate::spec::{IngressRule, PortSpec};

/// A service as the data plane needs it, kept current by the endpoints controller.
/// Key: `{namespace}/{app}/{service}` (the service's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    pub namespace: String,
    pub app: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressRule>,
    /// The service's app networks, sorted (see [`ServiceEndpoints::networks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub proxy_protocol: bool,
    /// Every replica of the service, ready or not, in id order.
    #[serde(default)]
    pub replicas: Vec<EndpointReplica>,
    #[serde(default)]
    pub meta: Meta,
}

/// One replica of a service as its endpoints see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointReplica {
    pub id: String,
    pub node: String,
    /// Its address on its node's bridge, once the agent attached it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Running with an address: traffic may be sent to it.
    #[serde(default)]
    pub ready: bool,
    /// The spec revision it runs (rollouts will weigh old and new by it).
    #[serde(default)]
    pub revision_hash: String,
}

impl Endpoints {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.app, self.service)
    }

    /// Whether every node must know this service: it publishes a port or has an ingress route,
    /// and every node proxies those to wherever its replicas run.
    pub fn is_public(&self) -> bool {
        self.ingress.is_some() || self.ports.iter().any(|p| p.published.is_some())
    }

    /// Equal apart from `meta`, which the store rewrites on every put.
    pub fn same_content(&self, other: &Endpoints) -> bool {
        self.namespace == other.namespace
            && self.app == other.app
            && self.service == other.service
            && self.vip == other.vip
            && self.ports == other.ports
            && self.ingress == other.ingress
            && self.networks == other.networks
            && self.aliases == other.aliases
            && self.internal == other.internal
            && self.proxy_protocol == other.proxy_protocol
            && self.replicas == other.replicas
    }

    /// The assignment's form: only ready replicas are endpoints.
    pub fn to_service_endpoints(&self) -> ServiceEndpoints {
        ServiceEndpoints {
            namespace: self.namespace.clone(),
            app: self.app.clone(),
            name: self.service.clone(),
            vip: self.vip.clone(),
            ports: self.ports.clone(),
            ingress: self.ingress.clone(),
            endpoints: self
                .replicas
                .iter()
                .filter(|r| r.ready)
                .filter_map(|r| {
                    Some(Endpoint {
                        replica: r.id.clone(),
                        node: r.node.clone(),
                        ip: r.ip.clone()?,
                    })
                })
                .collect(),
            networks: self.networks.clone(),
            aliases: self.aliases.clone(),
            internal: self.internal,
            proxy_protocol: self.proxy_protocol,
        }
    }
}

/// The address spaces the allocators hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressPool {
    /// Service VIPs, out of the service CIDR.
    Vip,
    /// Node /24s, out of the cluster CIDR.
    Subnet,
}

impl AddressPool {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressPool::Vip => "vip",
            AddressPool::Subnet => "subnet",
        }
    }

    /// The store key prefix of this pool's claims.
    pub fn prefix(self) -> String {
        format!("{}/", self.as_str())
    }
}

/// One address handed out. Key: `{pool}/{address}` (e.g. `vip/10.43.0.7`,
/// `subnet/10.42.3.0/24`), created with `Expect::Absent`: two allocators that pick the same
/// address cannot both commit, whatever process they run in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressClaim {
    pub pool: AddressPool,
    pub address: String,
    /// The key of the object holding it: a service (`ns/app/name`) or a node.
    pub owner: String,
    #[serde(default)]
    pub meta: Meta,
}

impl AddressClaim {
    pub fn key(&self) -> String {
        Self::key_of(self.pool, &self.address)
    }

    pub fn key_of(pool: AddressPool, address: &str) -> String {
        format!("{}/{address}", pool.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PortProtocol;

    fn endpoints() -> Endpoints {
        Endpoints {
            namespace: "default".into(),
            app: "shop".into(),
            service: "web".into(),
            vip: Some("10.43.0.2".into()),
            ports: Vec::new(),
            ingress: None,
            networks: vec!["default".into()],
            aliases: Vec::new(),
            internal: false,
            proxy_protocol: false,
            replicas: vec![
                replica("web-a", Some("10.42.0.2"), true),
                replica("web-b", Some("10.42.0.3"), false),
                replica("web-c", None, false),
            ],
            meta: Meta::default(),
        }
    }

    fn replica(id: &str, ip: Option<&str>, ready: bool) -> EndpointReplica {
        EndpointReplica {
            id: id.into(),
            node: "n1".into(),
            ip: ip.map(String::from),
            ready,
            revision_hash: "h".into(),
        }
    }

    #[test]
    fn only_ready_replicas_become_endpoints() {
        let got = endpoints().to_service_endpoints();
        assert_eq!(got.name, "web");
        assert_eq!(got.vip.as_deref(), Some("10.43.0.2"));
        let ids: Vec<_> = got.endpoints.iter().map(|e| e.replica.as_str()).collect();
        assert_eq!(ids, ["web-a"]);
    }

    #[test]
    fn published_ports_and_ingress_make_a_service_public() {
        let mut e = endpoints();
        assert!(!e.is_public());
        e.ports.push(PortSpec {
            target: 80,
            published: None,
            host_ip: None,
            protocol: PortProtocol::Tcp,
        });
        assert!(!e.is_public(), "an exposed port is not published");
        e.ports[0].published = Some(8080);
        assert!(e.is_public());
    }

    #[test]
    fn content_ignores_meta() {
        let a = endpoints();
        let mut b = a.clone();
        b.meta.revision = 9;
        assert!(a.same_content(&b));
        b.replicas[1].ready = true;
        assert!(!a.same_content(&b));
    }

    #[test]
    fn claim_keys_name_pool_and_address() {
        assert_eq!(
            AddressClaim::key_of(AddressPool::Subnet, "10.42.3.0/24"),
            "subnet/10.42.3.0/24"
        );
        assert_eq!(AddressPool::Vip.prefix(), "vip/");
    }
}
