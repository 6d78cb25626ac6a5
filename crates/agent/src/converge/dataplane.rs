//! The node's data plane, converged to the network part of the assignment: the bridge and
//! per-replica network namespaces (`net`), the DNS server on the bridge address (`dns`), and
//! the published-port listeners (`ingress`).
//!
//! [`DataPlane`] is the seam the converger uses (converge the network part, attach and detach
//! replicas, their addresses, leftovers, problems); [`NodeDataPlane`] is the real one, and
//! `converge::fake::FakeDataPlane` records calls for the converger's unit tests.
//!
//! The node network needs the subnet the server allocates at the node's first report, so it is
//! set up lazily on the first assignment that carries one. Until then replicas cannot be
//! attached and their creation is retried like any other failure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use hivemind_types::{NodeNetwork, NodeProblem, Replica};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::converge::dataplane_plan::{plan_data_plane, replica_resolv_conf, DataPlanePlan};
use hivemind_dataplane::dns::{self, DnsConfig, DnsServer, DnsZone};
use hivemind_dataplane::ingress::{Ingress, IngressConfig, IngressError};
use hivemind_dataplane::net::{Ipv4Net, NetConfig, NetError, NodeNet};
use hivemind_runtime::CreateOptions;

/// Node-local networking settings (all flags of `hivemind agent`/`up`).
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    pub bridge: String,
    pub netns_prefix: String,
    pub nft_table: String,
    /// Holds the IPAM state.
    pub state_dir: PathBuf,
    /// DNS port on the bridge address (53; tests may move it).
    pub dns_port: u16,
    /// Address the published ports listen on.
    pub ingress_bind: IpAddr,
}

/// What the converger needs from the node's data plane. Object-safe (`async_trait`), so that
/// the agent holds `Option<Box<dyn DataPlane>>` whatever implements it.
#[async_trait::async_trait]
pub trait DataPlane: Send + Sync + 'static {
    /// Brings the data plane to `network` (the assignment's network part at `generation`).
    async fn converge(&self, network: &NodeNetwork, generation: u64) -> Result<(), DataPlaneError>;

    /// What is wrong on the node's data plane now, for the node's report.
    async fn problems(&self) -> Vec<NodeProblem>;

    /// Attaches `replica` to the node network and returns the options its container is created
    /// with.
    async fn attach(&self, replica: &Replica) -> Result<CreateOptions, DataPlaneError>;

    /// Detaches replica `replica_id` (its container is gone). Detaching what is not attached
    /// succeeds.
    async fn detach(&self, replica_id: &str) -> Result<(), DataPlaneError>;

    /// The replica's address, if attached.
    async fn ip(&self, replica_id: &str) -> Option<Ipv4Addr>;

    /// Removes the networking of replicas not in `live` (crash leftovers).
    async fn reconcile(&self, live: &BTreeSet<String>);

    /// Stops serving (DNS, published ports) when the agent stops; the network itself stays, as
    /// containers keep running without the agent.
    async fn shutdown(&self);
}

/// The real data plane: bridge, netns and nftables (`net`), DNS (`dns`), ingress (`ingress`).
pub struct NodeDataPlane {
    config: DataPlaneConfig,
    ingress: Ingress,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    net: Option<NodeNet>,
    dns: Option<DnsServer>,
    applied: Option<DataPlanePlan>,
    /// Replicas attached here, as DNS clients from their attachment on (see `add_dns_client`).
    attached: BTreeMap<String, (Ipv4Addr, dns::DnsClient)>,
    /// Published ports the last pass could not open; while any are left, every pass tries
    /// them again (the host process holding one may let go), and reports carry them.
    port_problems: Vec<NodeProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneError {
    #[error("the node has no subnet yet (the server allocates one at its first report)")]
    NoSubnet,
    #[error("the server sent an invalid {what} {value:?}")]
    BadNetwork { what: &'static str, value: String },
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("cannot start the node's DNS server")]
    Dns(#[from] dns::DnsError),
}

impl NodeDataPlane {
    pub fn new(config: DataPlaneConfig) -> NodeDataPlane {
        NodeDataPlane {
            ingress: Ingress::new(IngressConfig {
                bind_ip: config.ingress_bind,
            }),
            config,
            state: Mutex::new(State::default()),
        }
    }

    async fn net(&self) -> Option<NodeNet> {
        self.state.lock().await.net.clone()
    }

    /// Removes the node network entirely (`hivemind up --cleanup`, tests).
    pub async fn teardown(&self) -> Result<(), DataPlaneError> {
        self.shutdown().await;
        if let Some(net) = self.state.lock().await.net.take() {
            net.teardown().await?;
        }
        Ok(())
    }

    /// The current DNS zone's generation, for tests and status.
    pub async fn dns_generation(&self) -> Option<u64> {
        self.state
            .lock()
            .await
            .dns
            .as_ref()
            .map(|d| d.zone_generation())
    }
}

#[async_trait::async_trait]
impl DataPlane for NodeDataPlane {
    /// Brings the data plane to `network`: sets the node network up on first sight of a subnet,
    /// then applies VIP rules, the DNS zone and ingress routes when they differ from the last.
    async fn converge(&self, network: &NodeNetwork, generation: u64) -> Result<(), DataPlaneError> {
        let mut state = self.state.lock().await;
        let Some(subnet) = &network.subnet else {
            return Err(DataPlaneError::NoSubnet);
        };
        let subnet: Ipv4Net = parse(subnet, "subnet")?;
        let net = match &state.net {
            Some(net) if net.subnet() == subnet => net.clone(),
            _ => {
                let mut config = NetConfig::new(self.config.state_dir.clone());
                config.bridge = self.config.bridge.clone();
                config.netns_prefix = self.config.netns_prefix.clone();
                config.nft_table = self.config.nft_table.clone();
                if let Some(c) = &network.cluster_cidr {
                    config.cluster_cidr = parse(c, "cluster CIDR")?;
                }
                if let Some(c) = &network.service_cidr {
                    config.service_cidr = parse(c, "service CIDR")?;
                }
                let net = NodeNet::setup(config, subnet).await?;
                info!(%subnet, gateway = %net.gateway(), bridge = %self.config.bridge, "node network ready");
                state.net = Some(net.clone());
                state.applied = None;
                if let Some(old) = state.dns.take() {
                    old.stop().await;
                }
                net
            }
        };
        let mut plan = plan_data_plane(network, generation);
        plan.zone.add_clients(state.attached.values().cloned());
        if state.dns.is_none() {
            let server = DnsServer::start(
                DnsConfig {
                    listen: vec![SocketAddr::from((net.gateway(), self.config.dns_port))],
                    upstreams: dns::host_upstreams(),
                    domain: "hivemind".to_string(),
                },
                plan.zone.clone(),
            )
            .await?;
            state.dns = Some(server);
        }
        let applied = state.applied.as_ref();
        if applied.map(|a| &a.rules) != Some(&plan.rules) {
            net.apply_rules(&plan.rules).await?;
        }
        if applied.map(|a| zone_content(&a.zone)) != Some(zone_content(&plan.zone)) {
            if let Some(dns) = &state.dns {
                dns.set_zone(plan.zone.clone());
            }
        }
        let routes_changed = applied.map(|a| &a.routes) != Some(&plan.routes);
        if routes_changed || !state.port_problems.is_empty() {
            let mut problems: Vec<NodeProblem> = self
                .ingress
                .apply(plan.routes.clone())
                .await
                .into_iter()
                .map(|(port, error)| port_problem(network, port, &error))
                .collect();
            problems.sort();
            if problems != state.port_problems {
                for problem in &problems {
                    warn!(message = %problem.message, "published port not served");
                }
                state.port_problems = problems;
            }
        }
        state.applied = Some(plan);
        Ok(())
    }

    /// What is wrong on the node's data plane now, for the node's report.
    async fn problems(&self) -> Vec<NodeProblem> {
        self.state.lock().await.port_problems.clone()
    }

    /// Attaches `replica` to the bridge and returns the options its container is created with.
    async fn attach(&self, replica: &Replica) -> Result<CreateOptions, DataPlaneError> {
        let net = self.net().await.ok_or(DataPlaneError::NoSubnet)?;
        let attachment = net.attach(&replica.id).await?;
        add_dns_client(&mut *self.state.lock().await, replica, attachment.ip);
        Ok(CreateOptions {
            network_ns: Some(attachment.netns_path),
            resolv_conf: Some(replica_resolv_conf(
                net.gateway(),
                &replica.namespace,
                &replica.app,
            )),
            ip: Some(IpAddr::V4(attachment.ip)),
            mounts: Vec::new(),
            file_binds: Vec::new(),
        })
    }

    async fn detach(&self, replica_id: &str) -> Result<(), DataPlaneError> {
        if let Some(net) = self.net().await {
            net.detach(replica_id).await?;
        }
        self.state.lock().await.attached.remove(replica_id);
        Ok(())
    }

    /// The replica's address, if attached.
    async fn ip(&self, replica_id: &str) -> Option<Ipv4Addr> {
        self.net()
            .await
            .and_then(|n| n.attachment(replica_id))
            .map(|a| a.ip)
    }

    /// Removes namespaces, veths and addresses of replicas not in `live` (crash leftovers).
    async fn reconcile(&self, live: &BTreeSet<String>) {
        let Some(net) = self.net().await else { return };
        let mut state = self.state.lock().await;
        state.attached.retain(|id, _| live.contains(id));
        drop(state);
        match net.reconcile(live).await {
            Ok(removed) if !removed.is_empty() => info!(?removed, "removed leftover networking"),
            Ok(_) => {}
            Err(error) => warn!(%error, "cannot clean leftover networking"),
        }
    }

    /// Stops the DNS server and the published ports (the network itself stays, as containers
    /// keep running without the agent).
    async fn shutdown(&self) {
        let mut state = self.state.lock().await;
        if let Some(dns) = state.dns.take() {
            dns.stop().await;
        }
        self.ingress.shutdown().await;
    }
}

/// What a zone answers with, leaving out the generation: a new generation alone needs no swap.
fn zone_content(zone: &DnsZone) -> (&Vec<dns::DnsService>, &BTreeMap<Ipv4Addr, dns::DnsClient>) {
    (&zone.services, &zone.clients)
}

fn parse<T: std::str::FromStr>(value: &str, what: &'static str) -> Result<T, DataPlaneError> {
    value.parse().map_err(|_| DataPlaneError::BadNetwork {
        what,
        value: value.to_string(),
    })
}

/// A published port the ingress cannot open, naming the services that publish it.
fn port_problem(network: &NodeNetwork, port: u16, error: &IngressError) -> NodeProblem {
    let services: Vec<String> = network
        .services
        .iter()
        .filter(|s| s.ports.iter().any(|p| p.published == Some(port)))
        .map(|s| format!("{}/{}", s.app, s.name))
        .collect();
    let mut message = format!(
        "published port {port} ({}) is not served: {error}",
        services.join(", ")
    );
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    NodeProblem {
        reason: hivemind_types::event::reason::PORT_UNAVAILABLE.to_string(),
        message,
    }
}

/// Makes `replica` a known DNS client at once: its short names (`tasks.web`) must answer from
/// its first query, not only after its address went to the server and came back in the
/// endpoints.
fn add_dns_client(state: &mut State, replica: &Replica, ip: Ipv4Addr) {
    let client = dns::DnsClient {
        namespace: replica.namespace.clone(),
        app: replica.app.clone(),
        networks: replica.spec.network_names(),
    };
    state
        .attached
        .insert(replica.id.clone(), (ip, client.clone()));
    if let (Some(dns), Some(applied)) = (&state.dns, &mut state.applied) {
        if applied.zone.clients.get(&ip) != Some(&client) {
            applied.zone.add_clients([(ip, client)]);
            dns.set_zone(applied.zone.clone());
        }
    }
}
