//! The node's container networking: the bridge, one network namespace and veth pair per
//! replica with an address from the node's subnet, and the nftables table that forwards,
//! masquerades and load-balances service VIPs.
//!
//! [`NodeNet`] is the only entry point; it owns the IPAM state and serializes changes. Pieces:
//! `config` ([`NetConfig`]), `error` ([`NetError`]), `foreign` (our two tagged accepts in a
//! host's `ip filter` forward chain, which would otherwise drop replica traffic),
//! `ipam` (pure allocator + its file), `isolation` (the rules that keep app networks apart),
//! `link` (rtnetlink), `netns` (named namespaces), `nft` (pure JSON table builder + the `nft`
//! call). This module must not touch other tables (`foreign` being the one, narrow exception),
//! other bridges, or namespaces and links without its configured prefix; DNS, proxies and the
//! overlay live elsewhere and only use [`NodeNet::gateway`] and the attachments.

mod config;
mod error;
mod foreign;
mod ipam;
mod isolation;
mod link;
mod netns;
mod nft;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use config::NetConfig;
pub use error::NetError;
pub use ipam::{IpamError, Lease};
pub use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use ipam::{Ipam, LoadOutcome};
use link::Link;

pub(crate) fn is_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A replica's place on the node network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub replica_id: String,
    pub ip: Ipv4Addr,
    /// `/var/run/netns/<prefix><replica id>`: put it in the OCI spec's network namespace path.
    pub netns_path: PathBuf,
    pub host_veth: String,
}

/// A rule's transport protocol (the Compose port's own type).
pub use crate::Proto;

/// The complete set of service rules for this node; each `apply_rules` replaces the last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetRules {
    pub vips: Vec<VipRule>,
    /// App networks with their member replicas (cluster-wide). Two replicas of one app reach
    /// each other only if a network of that app holds both; an address in no network is not
    /// restricted (the host, other clusters' traffic, a replica not yet reported).
    #[serde(default)]
    pub networks: Vec<NetworkRule>,
    /// Replicas whose networks are all `internal`: no route outside the cluster CIDR.
    #[serde(default)]
    pub isolated: Vec<Ipv4Addr>,
}

/// One app network: `name` of the app `app_key` (`namespace/app`), so `shop/back` and
/// `blog/back` are different networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRule {
    pub app_key: String,
    pub name: String,
    pub members: Vec<Ipv4Addr>,
}

/// `vip:port/protocol` spread evenly over `backends:target_port`; no backends means refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipRule {
    pub vip: Ipv4Addr,
    pub protocol: Proto,
    pub port: u16,
    pub target_port: u16,
    pub backends: Vec<Ipv4Addr>,
}

/// The node network. Cheap to clone: clones share the state.
#[derive(Debug, Clone)]
pub struct NodeNet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: NetConfig,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// Never held across an await; `changes` orders the kernel work instead.
    ipam: Mutex<Ipam>,
    /// Serializes attach/detach/reconcile/teardown so that two calls for one replica cannot
    /// race to create the same namespace or veth.
    changes: tokio::sync::Mutex<()>,
}

/// The subnet recorded in `state_dir`'s IPAM file, if any: what a node network set up there
/// used, so that `hivemind down` can find and remove it without the server.
pub fn recorded_subnet(state_dir: &std::path::Path) -> Option<Ipv4Net> {
    let text = std::fs::read_to_string(state_dir.join("ipam.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("subnet")?.as_str()?.parse().ok()
}

impl NodeNet {
    /// Creates or repairs the bridge with the gateway address, enables forwarding, loads the
    /// IPAM state and squares it with the namespaces that exist. Safe on every agent start.
    pub async fn setup(config: NetConfig, subnet: Ipv4Net) -> Result<NodeNet, NetError> {
        let subnet = subnet.trunc();
        config.validate(subnet)?;
        let gateway = Ipam::new(subnet).gateway();
        let handle = link::connect()?;
        link::ensure_bridge(&handle, &config.bridge, gateway, subnet.prefix_len()).await?;
        enable_ip_forward()?;

        let state_path = config.state_dir.join("ipam.json");
        let (mut ipam, outcome) = ipam::load(&state_path, subnet)?;
        match &outcome {
            LoadOutcome::Fresh | LoadOutcome::Loaded { .. } => {
                tracing::info!(%subnet, ?outcome, "ipam state loaded")
            }
            LoadOutcome::SubnetChanged { old, dropped } => tracing::warn!(
                %subnet, %old, dropped, "node subnet changed: released every address, starting over"
            ),
            LoadOutcome::Unreadable { moved_to, reason } => tracing::warn!(
                moved_to = %moved_to.display(), reason, "ipam state unreadable: moved aside, re-adopting from namespaces"
            ),
        }

        // Square the file with the kernel: a lease whose namespace is gone is a leftover of an
        // interrupted attach or detach; a namespace without a lease (state lost, or a crash
        // right after creating it) is adopted when its eth0 address fits, else left for
        // `reconcile` or the next `attach` to repair.
        let present: BTreeSet<String> = netns::list(&config.netns_prefix)?.into_iter().collect();
        let stale: Vec<String> = ipam
            .leases()
            .map(|(id, _)| id.clone())
            .filter(|id| !netns::is_mounted(&netns::path_of(&config.netns_prefix, id)))
            .collect();
        for id in stale {
            tracing::info!(replica = %id, "releasing address of a replica without a namespace");
            ipam.release(&id);
        }
        let unleased: Vec<String> = present
            .into_iter()
            .filter(|id| ipam.lease(id).is_none())
            .collect();
        for id in &unleased {
            let path = netns::path_of(&config.netns_prefix, id);
            if !netns::is_mounted(&path) {
                continue;
            }
            let what = id.clone();
            let found = netns::run_in(&path, id, move || link::inspect_inside(&what)).await;
            let Ok(Some(Some(ip))) = found else { continue };
            let Some(host_veth) = find_host_veth(&handle, &config.netns_prefix, id).await? else {
                continue;
            };
            match ipam.adopt(id, Lease { ip, host_veth }) {
                Ok(()) => {
                    tracing::info!(replica = %id, %ip, "adopted a namespace missing from the ipam state")
                }
                Err(e) => tracing::warn!(replica = %id, error = %e, "not adopting namespace"),
            }
        }
        ipam::save(&state_path, &ipam)?;

        // A missing table gets the base rules now, so forwarding and outbound NAT work before
        // the first service rules arrive. An existing one is kept: rewriting it without the
        // VIPs would cut service traffic until the next `apply_rules` on every agent restart.
        let net = NodeNet {
            inner: Arc::new(Inner {
                config,
                subnet,
                gateway,
                ipam: Mutex::new(ipam),
                changes: tokio::sync::Mutex::new(()),
            }),
        };
        if !nft::table_exists(&net.inner.config.nft_table).await? {
            net.apply_rules(&NetRules::default()).await?;
        }
        Ok(net)
    }

    pub fn config(&self) -> &NetConfig {
        &self.inner.config
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.inner.subnet
    }

    /// The bridge address; DNS listens here and replicas route through it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    pub fn attachment(&self, replica_id: &str) -> Option<Attachment> {
        let ipam = self.inner.ipam.lock().expect("ipam lock");
        ipam.lease(replica_id)
            .map(|lease| self.to_attachment(replica_id, lease))
    }

    /// Every replica holding an address, by id.
    pub fn attachments(&self) -> Vec<Attachment> {
        let ipam = self.inner.ipam.lock().expect("ipam lock");
        ipam.leases()
            .map(|(id, lease)| self.to_attachment(id, lease))
            .collect()
    }

    fn to_attachment(&self, replica_id: &str, lease: &Lease) -> Attachment {
        Attachment {
            replica_id: replica_id.to_string(),
            ip: lease.ip,
            netns_path: netns::path_of(&self.inner.config.netns_prefix, replica_id),
            host_veth: lease.host_veth.clone(),
        }
    }

    fn save_state(&self, ipam: &Ipam) -> Result<(), NetError> {
        ipam::save(&self.inner.config.state_dir.join("ipam.json"), ipam)
    }

    /// Gives the replica its namespace, veth pair, address and default route, repairing
    /// whatever part is missing. Attaching an attached replica returns the same attachment.
    pub async fn attach(&self, replica_id: &str) -> Result<Attachment, NetError> {
        check_replica_id(replica_id)?;
        let _changes = self.inner.changes.lock().await;
        let lease = {
            let mut ipam = self.inner.ipam.lock().expect("ipam lock");
            let known = ipam.lease(replica_id).cloned();
            match known {
                Some(lease) => lease,
                None => {
                    let lease = ipam
                        .allocate(replica_id, &self.inner.config.netns_prefix)
                        .map_err(|source| NetError::Ipam {
                            replica: replica_id.to_string(),
                            source,
                        })?;
                    // Persist before touching the kernel: after a crash the address is known
                    // to be taken, never handed out twice.
                    self.save_state(&ipam)?;
                    lease
                }
            }
        };
        let attachment = self.to_attachment(replica_id, &lease);
        self.ensure_attached(&attachment).await?;
        Ok(attachment)
    }

    async fn ensure_attached(&self, a: &Attachment) -> Result<(), NetError> {
        let what = a.replica_id.clone();
        netns::ensure(&a.netns_path, &what).await?;
        let handle = link::connect()?;
        let bridge = link::get(&handle, &self.inner.config.bridge)
            .await?
            .ok_or_else(|| {
                NetError::Config(format!(
                    "bridge {} is missing: run setup again (did something delete it?)",
                    self.inner.config.bridge
                ))
            })?;
        let veth = match link::get(&handle, &a.host_veth).await? {
            Some(veth) => veth,
            None => {
                // A namespace can still hold an eth0 whose peer had another name (state lost
                // and re-adopted under a new name): clear it so the new pair can take eth0.
                let w = what.clone();
                netns::run_in(&a.netns_path, &what, move || link::delete_inside(&w)).await?;
                let ns = std::fs::File::open(&a.netns_path).map_err(|e| {
                    NetError::io(
                        format!("open network namespace {}", a.netns_path.display()),
                        e,
                    )
                })?;
                link::create_veth(&handle, &a.host_veth, &ns, &what).await?;
                link::get(&handle, &a.host_veth).await?.ok_or_else(|| {
                    NetError::Internal(format!(
                        "veth {} vanished right after creation",
                        a.host_veth
                    ))
                })?
            }
        };
        link::plug_into_bridge(&handle, &veth, &bridge, &what).await?;
        let (ip, len, gw) = (a.ip, self.inner.subnet.prefix_len(), self.inner.gateway);
        let w = what.clone();
        netns::run_in(&a.netns_path, &what, move || {
            link::configure_inside(ip, len, gw, &w)
        })
        .await
    }

    /// Deletes the replica's veth and namespace and releases its address. Idempotent.
    pub async fn detach(&self, replica_id: &str) -> Result<(), NetError> {
        check_replica_id(replica_id)?;
        let _changes = self.inner.changes.lock().await;
        let handle = link::connect()?;
        self.remove_replica(&handle, replica_id).await
    }

    async fn remove_replica(
        &self,
        handle: &rtnetlink::Handle,
        replica_id: &str,
    ) -> Result<(), NetError> {
        let prefix = &self.inner.config.netns_prefix;
        let lease = self
            .inner
            .ipam
            .lock()
            .expect("ipam lock")
            .lease(replica_id)
            .cloned();
        let veth_name = lease
            .map(|l| l.host_veth)
            .unwrap_or_else(|| ipam::host_veth_name(prefix, replica_id, 0));
        // The veth goes first and explicitly: a namespace still used by a process (a container
        // that has not exited yet) outlives its file, and with it the veth pair.
        if let Some(veth) = link::get(handle, &veth_name).await? {
            if veth.kind == Some(link_kind_veth()) {
                link::delete(
                    handle,
                    &veth,
                    format!("delete veth {veth_name} of {replica_id}"),
                )
                .await?;
            }
        }
        netns::remove(&netns::path_of(prefix, replica_id), replica_id)?;
        let mut ipam = self.inner.ipam.lock().expect("ipam lock");
        if ipam.release(replica_id).is_some() {
            self.save_state(&ipam)?;
        }
        Ok(())
    }

    /// Removes the namespaces, veths and addresses of replicas not in `live` (leftovers of
    /// crashes) and returns their ids, sorted. Host veths with our prefix that no lease
    /// explains are deleted too (reported as `veth:<name>`).
    pub async fn reconcile(&self, live: &BTreeSet<String>) -> Result<Vec<String>, NetError> {
        let _changes = self.inner.changes.lock().await;
        let prefix = self.inner.config.netns_prefix.clone();
        let mut known: BTreeSet<String> = netns::list(&prefix)?.into_iter().collect();
        known.extend(
            self.inner
                .ipam
                .lock()
                .expect("ipam lock")
                .leases()
                .map(|(id, _)| id.clone()),
        );
        let handle = link::connect()?;
        let mut removed = Vec::new();
        for id in known.difference(live) {
            tracing::info!(replica = %id, "removing network of a replica that no longer exists");
            self.remove_replica(&handle, id).await?;
            removed.push(id.clone());
        }
        let owned: BTreeSet<String> = {
            let ipam = self.inner.ipam.lock().expect("ipam lock");
            ipam.leases().map(|(_, l)| l.host_veth.clone()).collect()
        };
        for veth in our_veths(&handle, &prefix).await? {
            if !owned.contains(&veth.name) {
                tracing::info!(veth = %veth.name, "removing a veth no replica owns");
                link::delete(&handle, &veth, format!("delete stray veth {}", veth.name)).await?;
                removed.push(format!("veth:{}", veth.name));
            }
        }
        // Last, so that a host firewall we cannot read does not stop the cleanup above. Docker
        // rebuilds its chains when it restarts; this puts our accepts back within a pass.
        foreign::ensure(&self.inner.config.nft_table, &self.inner.config.bridge).await?;
        Ok(removed)
    }

    /// Replaces the whole nftables table with the base rules plus `rules`, and makes sure a
    /// host's `ip filter` forward chain accepts the bridge's traffic (see `foreign`).
    pub async fn apply_rules(&self, rules: &NetRules) -> Result<(), NetError> {
        let config = &self.inner.config;
        let mut seen = BTreeSet::new();
        for rule in &rules.vips {
            if !config.service_cidr.contains(&rule.vip) {
                return Err(NetError::Config(format!(
                    "vip {} is outside the service cidr {}",
                    rule.vip, config.service_cidr
                )));
            }
            if !seen.insert((rule.vip, rule.protocol, rule.port)) {
                return Err(NetError::Config(format!(
                    "vip {}:{}/{:?} appears twice in the rules",
                    rule.vip, rule.port, rule.protocol
                )));
            }
        }
        let br_netfilter = br_netfilter_on();
        if !br_netfilter && !rules.networks.is_empty() {
            // Bridged frames between replicas of this node skip the forward hook then; VIP,
            // cross-node and outbound traffic is still checked.
            tracing::warn!(
                "bridge-nf-call-iptables is off: replicas on this node that share no network can still reach each other by address; enable br_netfilter for full isolation"
            );
        }
        let params = nft::TableParams {
            table: &config.nft_table,
            bridge: &config.bridge,
            subnet: self.inner.subnet,
            cluster_cidr: config.cluster_cidr,
            br_netfilter,
        };
        let doc = nft::table_document(&params, rules);
        nft::run(
            &doc,
            &format!("replace nftables table inet {}", config.nft_table),
        )
        .await?;
        // Our table is in place either way; a foreign chain we cannot fix now is retried by
        // every `reconcile`, so it must not fail (and hold back) the service rules.
        if let Err(error) = foreign::ensure(&config.nft_table, &config.bridge).await {
            tracing::warn!(%error, "cannot add the bridge's accepts to the host's forward chain: replica traffic may be dropped by it");
        }
        Ok(())
    }

    /// Removes our rules in a host's forward chain, the table, every replica namespace and
    /// veth with our prefix, the bridge and the IPAM state. For `hivemind down`,
    /// `hivemind up --cleanup` and tests.
    pub async fn teardown(&self) -> Result<(), NetError> {
        let _changes = self.inner.changes.lock().await;
        let config = &self.inner.config;
        foreign::remove(&config.nft_table).await?;
        nft::run(
            &nft::delete_document(&config.nft_table),
            &format!("delete nftables table inet {}", config.nft_table),
        )
        .await?;
        let handle = link::connect()?;
        let mut ids: BTreeSet<String> = netns::list(&config.netns_prefix)?.into_iter().collect();
        ids.extend(
            self.inner
                .ipam
                .lock()
                .expect("ipam lock")
                .leases()
                .map(|(id, _)| id.clone()),
        );
        for id in &ids {
            self.remove_replica(&handle, id).await?;
        }
        for veth in our_veths(&handle, &config.netns_prefix).await? {
            link::delete(&handle, &veth, format!("delete veth {}", veth.name)).await?;
        }
        if let Some(bridge) = link::get(&handle, &config.bridge).await? {
            link::delete(&handle, &bridge, format!("delete bridge {}", config.bridge)).await?;
        }
        match std::fs::remove_file(config.state_dir.join("ipam.json")) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io("remove ipam state".into(), e)),
        }
    }
}

fn link_kind_veth() -> rtnetlink::packet_route::link::InfoKind {
    rtnetlink::packet_route::link::InfoKind::Veth
}

/// Host veths carrying our prefix.
async fn our_veths(handle: &rtnetlink::Handle, prefix: &str) -> Result<Vec<Link>, NetError> {
    Ok(link::list(handle)
        .await?
        .into_iter()
        .filter(|l| l.name.starts_with(prefix) && l.kind == Some(link_kind_veth()))
        .collect())
}

/// The host veth of a namespace found without a lease: the first of its possible names that
/// exists (see `ipam::host_veth_name`).
async fn find_host_veth(
    handle: &rtnetlink::Handle,
    prefix: &str,
    replica_id: &str,
) -> Result<Option<String>, NetError> {
    for attempt in 0..4 {
        let name = ipam::host_veth_name(prefix, replica_id, attempt);
        if link::get(handle, &name).await?.is_some() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn check_replica_id(id: &str) -> Result<(), NetError> {
    if id.is_empty() || id.len() > 200 || !is_name(id) || id.starts_with('.') {
        return Err(NetError::ReplicaId(id.to_string()));
    }
    Ok(())
}

fn enable_ip_forward() -> Result<(), NetError> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, b"1").map_err(|e| NetError::io("enable net.ipv4.ip_forward".into(), e))
}

/// Whether bridged IPv4 traffic passes netfilter (see `nft::TableParams::br_netfilter`).
fn br_netfilter_on() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids() {
        for id in ["web-3f9k2", "a", "shop_web.1"] {
            assert!(check_replica_id(id).is_ok(), "{id}");
        }
        for id in ["", "a/b", "..", ".hidden", "a b", &"x".repeat(201)] {
            assert!(check_replica_id(id).is_err(), "{id}");
        }
    }
}
