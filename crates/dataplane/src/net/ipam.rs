//! IP address management for this node's replica subnet: which replica holds which address and
//! which host-side veth name, persisted as one JSON file.
//!
//! The allocator ([`Ipam`]) is pure data so it is table-tested; [`load`] and [`save`] are the only
//! functions here that touch the disk. This module must not touch the kernel: whether a lease
//! still has a network namespace behind it is decided by `net/mod.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::NetError;

/// Version of the on-disk format; bump it when the layout changes incompatibly.
const FILE_VERSION: u32 = 1;

/// Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL).
pub(crate) const IFNAME_MAX: usize = 15;

/// Fewest hash characters a host veth name may carry, so that a short prefix cannot leave
/// too few bits to tell replicas apart.
pub(crate) const MIN_VETH_HASH_CHARS: usize = 6;

/// What one replica holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// Kept with the address because a hash collision can push a replica to a second name,
    /// and detach must find the name that was really used.
    pub host_veth: String,
}

/// The allocator: leases by replica id within one subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ipam {
    subnet: Ipv4Net,
    leases: BTreeMap<String, Lease>,
    /// Allocation continues after the last address handed out instead of reusing the lowest
    /// free one, so a released address rests as long as possible before it is reused (stale
    /// ARP entries and conntrack flows of the old holder fade meanwhile).
    last: Option<Ipv4Addr>,
}

/// Why an allocation or adoption failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} has no free address ({used} in use)")]
    Exhausted { subnet: Ipv4Net, used: usize },
    #[error("address {ip} is outside the usable range of {subnet}")]
    OutOfRange { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("address {ip} is already leased to {holder}")]
    Taken { ip: Ipv4Addr, holder: String },
    #[error("veth name {name} is already used by {holder}")]
    NameTaken { name: String, holder: String },
}

impl Ipam {
    pub(crate) fn new(subnet: Ipv4Net) -> Ipam {
        Ipam {
            subnet: subnet.trunc(),
            leases: BTreeMap::new(),
            last: None,
        }
    }

    /// The bridge's own address: the first host address of the subnet (.1 in a /24).
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        offset(self.subnet.network(), 1)
    }

    pub(crate) fn lease(&self, replica_id: &str) -> Option<&Lease> {
        self.leases.get(replica_id)
    }

    pub(crate) fn leases(&self) -> impl Iterator<Item = (&String, &Lease)> {
        self.leases.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// True for addresses a replica may hold: not the network, the gateway or the broadcast.
    pub(crate) fn usable(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.subnet.network()
            && ip != self.gateway()
            && ip != self.subnet.broadcast()
    }

    /// Returns the replica's lease, allocating one when it has none. `veth_prefix` names the
    /// host side of the veth pair (see [`host_veth_name`]).
    pub(crate) fn allocate(
        &mut self,
        replica_id: &str,
        veth_prefix: &str,
    ) -> Result<Lease, IpamError> {
        if let Some(lease) = self.leases.get(replica_id) {
            return Ok(lease.clone());
        }
        let ip = self.next_free().ok_or(IpamError::Exhausted {
            subnet: self.subnet,
            used: self.leases.len(),
        })?;
        let host_veth = self.free_veth_name(replica_id, veth_prefix);
        let lease = Lease { ip, host_veth };
        self.last = Some(ip);
        self.leases.insert(replica_id.to_string(), lease.clone());
        Ok(lease)
    }

    /// Records a lease found in the kernel (a netns that survived while the state file did
    /// not), refusing anything that would make an address or name appear twice.
    pub(crate) fn adopt(&mut self, replica_id: &str, lease: Lease) -> Result<(), IpamError> {
        if !self.usable(lease.ip) {
            return Err(IpamError::OutOfRange {
                ip: lease.ip,
                subnet: self.subnet,
            });
        }
        for (holder, held) in &self.leases {
            if holder == replica_id {
                continue;
            }
            if held.ip == lease.ip {
                return Err(IpamError::Taken {
                    ip: lease.ip,
                    holder: holder.clone(),
                });
            }
            if held.host_veth == lease.host_veth {
                return Err(IpamError::NameTaken {
                    name: lease.host_veth,
                    holder: holder.clone(),
                });
            }
        }
        self.leases.insert(replica_id.to_string(), lease);
        Ok(())
    }

    pub(crate) fn release(&mut self, replica_id: &str) -> Option<Lease> {
        self.leases.remove(replica_id)
    }

    /// The first free usable address after the last one handed out, wrapping around once.
    fn next_free(&self) -> Option<Ipv4Addr> {
        let first = u32::from(self.subnet.network()) + 2;
        let last = u32::from(self.subnet.broadcast()).checked_sub(1)?;
        if first > last {
            return None;
        }
        let start = match self.last {
            Some(ip) if self.usable(ip) => u32::from(ip) + 1,
            _ => first,
        };
        let taken: std::collections::BTreeSet<u32> =
            self.leases.values().map(|l| u32::from(l.ip)).collect();
        let span = last - first + 1;
        (0..span)
            .map(|i| first + (start - first + i) % span)
            .find(|candidate| !taken.contains(candidate))
            .map(Ipv4Addr::from)
    }

    fn free_veth_name(&self, replica_id: &str, prefix: &str) -> String {
        // A collision of the truncated hash is unlikely but not impossible; the attempt number
        // salts the hash until the name is free.
        (0u32..)
            .map(|attempt| host_veth_name(prefix, replica_id, attempt))
            .find(|name| self.leases.values().all(|l| &l.host_veth != name))
            .expect("an unbounded sequence of salted names yields a free one")
    }
}

/// `prefix` + hex of SHA-256(replica id, salted by `attempt` > 0), cut to 15 bytes. Names
/// are derived rather than taken from the replica id because ids are longer than IFNAMSIZ.
pub(crate) fn host_veth_name(prefix: &str, replica_id: &str, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    hasher.update(replica_id.as_bytes());
    if attempt > 0 {
        hasher.update(format!("#{attempt}").as_bytes());
    }
    let digest = hex::encode(hasher.finalize());
    let room = IFNAME_MAX.saturating_sub(prefix.len());
    format!("{prefix}{}", &digest[..room.min(digest.len())])
}

fn offset(ip: Ipv4Addr, by: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip).wrapping_add(by))
}

#[derive(Debug, Serialize, Deserialize)]
struct IpamFile {
    version: u32,
    subnet: Ipv4Net,
    #[serde(default)]
    last: Option<Ipv4Addr>,
    #[serde(default)]
    leases: BTreeMap<String, Lease>,
}

/// What [`load`] found, so the caller can log it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoadOutcome {
    /// No state file: a first start (or one after teardown).
    Fresh,
    Loaded {
        leases: usize,
    },
    /// The node re-joined with another subnet: every old lease was dropped.
    SubnetChanged {
        old: Ipv4Net,
        dropped: usize,
    },
    /// The file could not be read as state; it was moved aside to `moved_to`.
    Unreadable {
        moved_to: PathBuf,
        reason: String,
    },
}

/// Reads the state file for `subnet`. Never fails on content: a file for another subnet or one
/// that does not parse starts the allocator over (the caller re-adopts what the kernel shows).
pub(crate) fn load(path: &Path, subnet: Ipv4Net) -> Result<(Ipam, LoadOutcome), NetError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Ipam::new(subnet), LoadOutcome::Fresh))
        }
        Err(e) => {
            return Err(NetError::io(
                format!("read ipam state {}", path.display()),
                e,
            ))
        }
    };
    let file: IpamFile = match serde_json::from_str::<IpamFile>(&text) {
        Ok(file) if file.version == FILE_VERSION => file,
        other => {
            let reason = match other {
                Ok(file) => format!("unknown version {}", file.version),
                Err(e) => e.to_string(),
            };
            let moved_to = path.with_extension("json.unreadable");
            fs::rename(path, &moved_to).map_err(|e| {
                NetError::io(format!("move unreadable ipam state {}", path.display()), e)
            })?;
            return Ok((
                Ipam::new(subnet),
                LoadOutcome::Unreadable { moved_to, reason },
            ));
        }
    };
    if file.subnet.trunc() != subnet.trunc() {
        let outcome = LoadOutcome::SubnetChanged {
            old: file.subnet,
            dropped: file.leases.len(),
        };
        return Ok((Ipam::new(subnet), outcome));
    }
    let mut ipam = Ipam::new(subnet);
    ipam.last = file.last;
    // Go through `adopt` so a hand-edited file cannot smuggle in duplicates or reserved
    // addresses; entries it refuses are simply forgotten.
    for (id, lease) in file.leases {
        if let Err(e) = ipam.adopt(&id, lease) {
            tracing::warn!(replica = %id, error = %e, "dropping invalid ipam entry");
        }
    }
    let leases = ipam.len();
    Ok((ipam, LoadOutcome::Loaded { leases }))
}

/// Writes the state atomically: a temporary file in the same directory, fsync, rename, then
/// fsync of the directory so the rename itself survives a power loss.
pub(crate) fn save(path: &Path, ipam: &Ipam) -> Result<(), NetError> {
    let op = || format!("write ipam state {}", path.display());
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| NetError::io(op(), e))?;
    let file = IpamFile {
        version: FILE_VERSION,
        subnet: ipam.subnet,
        last: ipam.last,
        leases: ipam.leases.clone(),
    };
    let body = serde_json::to_vec_pretty(&file).expect("ipam state serializes");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| NetError::io(op(), e))?;
    tmp.write_all(&body).map_err(|e| NetError::io(op(), e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| NetError::io(op(), e))?;
    tmp.persist(path).map_err(|e| NetError::io(op(), e.error))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| NetError::io(op(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocation_skips_reserved_and_wraps() {
        // (subnet, replicas allocated, released before the last allocation, expected last ip)
        let cases: &[(&str, usize, &[usize], Option<&str>)] = &[
            ("10.42.3.0/24", 1, &[], Some("10.42.3.2")),
            ("10.42.3.0/24", 3, &[], Some("10.42.3.4")),
            ("10.42.3.0/24", 253, &[], Some("10.42.3.254")),
            ("10.42.3.0/24", 254, &[], None),
            // After a release the allocator moves on instead of reusing the freed address...
            ("10.42.3.0/24", 4, &[0], Some("10.42.3.5")),
            // ...and comes back to it only after wrapping around.
            ("10.42.3.0/24", 254, &[5], Some("10.42.3.7")),
            ("10.9.0.0/30", 1, &[], Some("10.9.0.2")),
            ("10.9.0.0/30", 2, &[], None),
            ("10.9.0.0/29", 6, &[], None),
        ];
        for &(subnet, count, released, want) in cases {
            let mut ipam = Ipam::new(net(subnet));
            let mut got = None;
            for i in 0..count {
                if i == count - 1 {
                    for r in released {
                        ipam.release(&format!("r{r}"));
                    }
                }
                got = ipam.allocate(&format!("r{i}"), "hm-").ok().map(|l| l.ip);
            }
            assert_eq!(
                got,
                want.map(ip),
                "subnet {subnet}, {count} replicas, released {released:?}"
            );
        }
    }

    #[test]
    fn allocation_is_idempotent_and_unique() {
        let mut ipam = Ipam::new(net("10.42.3.0/24"));
        let a = ipam.allocate("web-1", "hm-").unwrap();
        let b = ipam.allocate("web-2", "hm-").unwrap();
        assert_eq!(ipam.allocate("web-1", "hm-").unwrap(), a);
        assert_ne!(a.ip, b.ip);
        assert_ne!(a.host_veth, b.host_veth);
        assert_eq!(ipam.gateway(), ip("10.42.3.1"));
        for id in 0..300 {
            let _ = ipam.allocate(&format!("x{id}"), "hm-");
        }
        let ips: std::collections::BTreeSet<_> = ipam.leases().map(|(_, l)| l.ip).collect();
        assert_eq!(ips.len(), ipam.len());
        assert_eq!(ipam.len(), 253);
        assert!(matches!(
            ipam.allocate("one-more", "hm-"),
            Err(IpamError::Exhausted { used: 253, .. })
        ));
    }

    #[test]
    fn adopt_refuses_duplicates_and_reserved() {
        let mut ipam = Ipam::new(net("10.42.3.0/24"));
        let a = ipam.allocate("a", "hm-").unwrap();
        let lease = |s: &str, name: &str| Lease {
            ip: ip(s),
            host_veth: name.into(),
        };
        let cases = [
            ("b", lease("10.42.3.0", "hm-x"), false),
            ("b", lease("10.42.3.1", "hm-x"), false),
            ("b", lease("10.42.3.255", "hm-x"), false),
            ("b", lease("10.42.4.9", "hm-x"), false),
            ("b", lease(&a.ip.to_string(), "hm-x"), false),
            ("b", lease("10.42.3.9", &a.host_veth), false),
            ("b", lease("10.42.3.9", "hm-x"), true),
            // Re-adopting a replica's own lease is fine.
            ("a", a.clone(), true),
        ];
        for (id, lease, ok) in cases {
            let res = ipam.adopt(id, lease.clone());
            assert_eq!(res.is_ok(), ok, "adopt {id} {lease:?}: {res:?}");
        }
    }

    #[test]
    fn veth_names_fit_ifnamsiz_and_collisions_are_salted() {
        assert_eq!(host_veth_name("hm-", "web-3f9k2", 0).len(), IFNAME_MAX);
        assert_eq!(host_veth_name("hmt1a2b-", "web-3f9k2", 0).len(), IFNAME_MAX);
        assert_ne!(
            host_veth_name("hm-", "web", 0),
            host_veth_name("hm-", "web", 1)
        );
        // Force a collision: another replica already holds this replica's first-choice name.
        let mut ipam = Ipam::new(net("10.42.3.0/24"));
        ipam.adopt(
            "squatter",
            Lease {
                ip: ip("10.42.3.50"),
                host_veth: host_veth_name("hm-", "web", 0),
            },
        )
        .unwrap();
        let lease = ipam.allocate("web", "hm-").unwrap();
        assert_eq!(lease.host_veth, host_veth_name("hm-", "web", 1));
    }

    #[test]
    fn persistence_round_trip_and_subnet_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        let subnet = net("10.42.3.0/24");
        let (mut ipam, outcome) = load(&path, subnet).unwrap();
        assert_eq!(outcome, LoadOutcome::Fresh);
        ipam.allocate("a", "hm-").unwrap();
        ipam.allocate("b", "hm-").unwrap();
        ipam.release("a");
        save(&path, &ipam).unwrap();

        let (again, outcome) = load(&path, subnet).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { leases: 1 });
        assert_eq!(again, ipam);

        let (other, outcome) = load(&path, net("10.42.7.0/24")).unwrap();
        assert_eq!(
            outcome,
            LoadOutcome::SubnetChanged {
                old: subnet,
                dropped: 1
            }
        );
        assert!(other.is_empty());
    }

    #[test]
    fn unreadable_state_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipam.json");
        fs::write(&path, b"{ not json").unwrap();
        let (ipam, outcome) = load(&path, net("10.42.3.0/24")).unwrap();
        assert!(ipam.is_empty());
        assert!(
            matches!(outcome, LoadOutcome::Unreadable { .. }),
            "{outcome:?}"
        );
        assert!(!path.exists());
        assert!(dir.path().join("ipam.json.unreadable").exists());
    }
}
