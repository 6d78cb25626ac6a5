//! [`NetConfig`]: names and ranges of the node network, validated once in `NodeNet::setup`.

use std::path::PathBuf;

use ipnet::Ipv4Net;

use super::{ipam, is_name, NetError};

/// Where and how this node's networking lives. Production values are in [`NetConfig::new`];
/// tests change the names so that several runs share a kernel without touching each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Bridge that every replica's veth is plugged into ("hm0").
    pub bridge: String,
    /// Directory of the IPAM state file (`ipam.json`).
    pub state_dir: PathBuf,
    /// Prefix of the namespace names under `/var/run/netns` and of host veth names ("hm-").
    /// Everything with this prefix belongs to us: `reconcile` and `teardown` remove it.
    pub netns_prefix: String,
    /// nftables table (family `inet`) replaced as a whole by `apply_rules`.
    pub nft_table: String,
    /// Replica addresses of the whole cluster: traffic from it to anything outside it is
    /// masqueraded (outbound internet NAT).
    pub cluster_cidr: Ipv4Net,
    /// Where service VIPs come from; `apply_rules` refuses VIPs outside it.
    pub service_cidr: Ipv4Net,
}

impl NetConfig {
    /// SPEC §6 defaults with the IPAM file under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> NetConfig {
        NetConfig {
            bridge: "hm0".into(),
            state_dir: state_dir.into(),
            netns_prefix: "hm-".into(),
            nft_table: "hivemind".into(),
            cluster_cidr: "10.42.0.0/16".parse().expect("valid cidr"),
            service_cidr: "10.43.0.0/16".parse().expect("valid cidr"),
        }
    }

    pub(crate) fn validate(&self, subnet: Ipv4Net) -> Result<(), NetError> {
        let bad = |m: String| Err(NetError::Config(m));
        if self.bridge.is_empty() || self.bridge.len() > ipam::IFNAME_MAX {
            return bad(format!(
                "bridge name {:?} must be 1 to 15 bytes",
                self.bridge
            ));
        }
        let room = ipam::IFNAME_MAX.saturating_sub(self.netns_prefix.len());
        if self.netns_prefix.is_empty()
            || room < ipam::MIN_VETH_HASH_CHARS
            || !is_name(&self.netns_prefix)
        {
            return bad(format!(
                "netns prefix {:?} must be 1 to {} bytes of [A-Za-z0-9_.-]",
                self.netns_prefix,
                ipam::IFNAME_MAX - ipam::MIN_VETH_HASH_CHARS
            ));
        }
        if self.bridge.starts_with(&self.netns_prefix) {
            return bad(format!(
                "bridge {} must not start with the netns prefix {} (teardown would treat it as a replica veth)",
                self.bridge, self.netns_prefix
            ));
        }
        if self.nft_table.is_empty() || !is_name(&self.nft_table) {
            return bad(format!(
                "nft table name {:?} must be [A-Za-z0-9_.-]+",
                self.nft_table
            ));
        }
        if subnet.prefix_len() > 30 {
            return bad(format!(
                "node subnet {subnet} is too small: use a /30 or larger (a /24 is usual)"
            ));
        }
        if !self.cluster_cidr.contains(&subnet) {
            tracing::warn!(%subnet, cluster_cidr = %self.cluster_cidr, "node subnet lies outside the cluster cidr: its outbound traffic will not be masqueraded");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let subnet: Ipv4Net = "10.42.3.0/24".parse().unwrap();
        let ok = NetConfig::new("/tmp/x");
        assert!(ok.validate(subnet).is_ok());
        let cases: Vec<(&str, NetConfig)> = vec![
            (
                "long bridge",
                NetConfig {
                    bridge: "a-very-long-bridge".into(),
                    ..ok.clone()
                },
            ),
            (
                "long prefix",
                NetConfig {
                    netns_prefix: "hm-way-too-long".into(),
                    ..ok.clone()
                },
            ),
            (
                "slash in prefix",
                NetConfig {
                    netns_prefix: "h/".into(),
                    ..ok.clone()
                },
            ),
            (
                "bridge under prefix",
                NetConfig {
                    bridge: "hm-br".into(),
                    ..ok.clone()
                },
            ),
            (
                "table name",
                NetConfig {
                    nft_table: "a b".into(),
                    ..ok.clone()
                },
            ),
        ];
        for (name, config) in cases {
            assert!(
                matches!(config.validate(subnet), Err(NetError::Config(_))),
                "{name}"
            );
        }
        assert!(ok.validate("10.42.3.0/31".parse().unwrap()).is_err());
    }
}
