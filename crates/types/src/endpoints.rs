//! What the control plane derives for the data plane: `Endpoints` objects (a service's VIP,
//! routing and replicas, written by the endpoints controller, in slices of at most
//! [`Endpoints::MAX_PER_SLICE`] replicas) and `AddressClaim`s, the allocators' records of which
//! VIP or node subnet belongs to whom.
//!
//! Slices, like Kubernetes' EndpointSlices: one replica's change rewrites (and every reader
//! parses) one small object, not a list of 100,000. Every slice carries the service's routing
//! head (VIP, ports, ingress...); slice 0 always exists while the service does and keeps the
//! service's own key, so a small service is one object exactly as before.
//!
//! Agents never read these directly: the server builds each node's `NodeNetwork` from the
//! `Endpoints` objects that node needs, so the assignment's wire shape stays the same.

use serde::{Deserialize, Serialize};

use crate::object::{Endpoint, Meta, ServiceEndpoints};
use crate::spec::{IngressRule, PortSpec};

/// One slice of a service as the data plane needs it, kept current by the endpoints controller.
/// Key: `{namespace}/{app}/{service}` (the service's key) for slice 0, `…{service}@{slice}`
/// for the others.
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
    /// Which slice of the service this is.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub slice: u32,
    /// This slice's replicas of the service, ready or not, in id order.
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Endpoints {
    /// The most replicas in one slice.
    pub const MAX_PER_SLICE: usize = 100;

    /// This slice's key.
    pub fn key(&self) -> String {
        Self::slice_key(&self.service_key(), self.slice)
    }

    /// The service's key, `{namespace}/{app}/{service}`, whichever slice this is.
    pub fn service_key(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.app, self.service)
    }

    /// The key of `service`'s slice `slice`.
    pub fn slice_key(service: &str, slice: u32) -> String {
        if slice == 0 {
            service.to_string()
        } else {
            format!("{service}@{slice}")
        }
    }

    /// A slice key's service key and slice number; `None` for a malformed number.
    pub fn split_key(key: &str) -> Option<(&str, u32)> {
        match key.rsplit_once('@') {
            None => Some((key, 0)),
            Some((service, n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => Some((service, n)),
                _ => None,
            },
        }
    }

    /// Equal in the routing head every slice carries (everything but the slice's replicas).
    pub fn same_head(&self, other: &Endpoints) -> bool {
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
    }

    /// Whether every node must know this service: it publishes a port or has an ingress route,
    /// and every node proxies those to wherever its replicas run.
    pub fn is_public(&self) -> bool {
        self.ingress.is_some() || self.ports.iter().any(|p| p.published.is_some())
    }

    /// Equal apart from `meta`, which the store rewrites on every put.
    pub fn same_content(&self, other: &Endpoints) -> bool {
        self.same_head(other) && self.slice == other.slice && self.replicas == other.replicas
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
            slice: 0,
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
    fn slice_keys_round_trip_and_slice_zero_keeps_the_service_key() {
        let mut e = endpoints();
        assert_eq!(e.key(), "default/shop/web");
        e.slice = 3;
        assert_eq!(e.key(), "default/shop/web@3");
        assert_eq!(e.service_key(), "default/shop/web");
        assert_eq!(
            Endpoints::split_key("default/shop/web@3"),
            Some(("default/shop/web", 3))
        );
        assert_eq!(
            Endpoints::split_key("default/shop/web"),
            Some(("default/shop/web", 0))
        );
        for bad in [
            "default/shop/web@0",
            "default/shop/web@x",
            "default/shop/web@",
        ] {
            assert_eq!(Endpoints::split_key(bad), None, "{bad}");
        }
        let wire = serde_json::to_value(endpoints()).unwrap();
        assert!(wire.get("slice").is_none(), "slice 0 looks as before");
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
