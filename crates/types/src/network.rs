//! The cluster's address plan: the ranges node subnets and service VIPs come from. A plain
//! value shared by the allocators (`control`), the assignments (`api`) and the flags that set it.

use std::net::Ipv4Addr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
