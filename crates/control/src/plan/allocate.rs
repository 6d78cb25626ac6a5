//! The address allocators as planner state: which node gets which /24 of the cluster CIDR and
//! which service gets which VIP of the service CIDR.
//!
//! An address is handed out by creating its `AddressClaim` (key `{pool}/{address}`) with
//! `Expect::Absent` in the same transaction that writes it into its owner, so two allocators —
//! in this process or another server's — can never both commit the same address; the loser's
//! run fails and the next one plans again. No process-wide lock is involved.
//!
//! [`Pool`] finds the lowest free address in O(log n) amortized (a sorted set of used slots and
//! a hint below which every slot is taken), so one run that allocates for 10,000 new services
//! costs O(n log n), not O(n²).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub use hivemind_types::ClusterNetwork;
use hivemind_types::{AddressClaim, AddressPool};

/// One address space: slots `first..=last`, slot `i` being `base + i * step`.
#[derive(Debug, Clone)]
pub struct Pool {
    kind: AddressPool,
    base: u32,
    step: u32,
    first: u32,
    last: u32,
    used: BTreeSet<u32>,
    /// Every slot below this is used: the search for a free one starts here.
    hint: u32,
}

impl Pool {
    /// VIPs of `net`'s service CIDR. The first two addresses are kept back (the network address
    /// and a conventional gateway/API address), and so is the broadcast.
    pub fn vips(net: &ClusterNetwork) -> Pool {
        let (base, len) = net.service_cidr;
        let size = 1u32 << (32 - len);
        Pool::new(AddressPool::Vip, u32::from(base), 1, 2, size - 2)
    }

    /// The /24s of `net`'s cluster CIDR.
    pub fn subnets(net: &ClusterNetwork) -> Pool {
        let (base, len) = net.cluster_cidr;
        let count = 1u32 << (24 - len);
        Pool::new(AddressPool::Subnet, u32::from(base), 256, 0, count - 1)
    }

    fn new(kind: AddressPool, base: u32, step: u32, first: u32, last: u32) -> Pool {
        Pool {
            kind,
            base,
            step,
            first,
            last,
            used: BTreeSet::new(),
            hint: first,
        }
    }

    pub fn kind(&self) -> AddressPool {
        self.kind
    }

    fn format(&self, slot: u32) -> String {
        let ip = Ipv4Addr::from(self.base + slot * self.step);
        match self.kind {
            AddressPool::Vip => ip.to_string(),
            AddressPool::Subnet => format!("{ip}/24"),
        }
    }

    /// The slot of `address`, when it is one of this pool's.
    fn slot(&self, address: &str) -> Option<u32> {
        let ip = match self.kind {
            AddressPool::Vip => address,
            AddressPool::Subnet => address.strip_suffix("/24")?,
        };
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let offset = ip.checked_sub(self.base)?;
        let slot = offset / self.step;
        (offset % self.step == 0 && (self.first..=self.last).contains(&slot)).then_some(slot)
    }

    /// Records `address` as taken; false when it is not one of this pool's (another CIDR).
    pub fn mark(&mut self, address: &str) -> bool {
        match self.slot(address) {
            Some(slot) => {
                self.used.insert(slot);
                true
            }
            None => false,
        }
    }

    pub fn release(&mut self, address: &str) {
        if let Some(slot) = self.slot(address) {
            self.used.remove(&slot);
            self.hint = self.hint.min(slot);
        }
    }

    /// The lowest free address, now taken; `None` when the pool is full.
    pub fn allocate(&mut self) -> Option<String> {
        let mut slot = self.hint;
        // Used slots at and above the hint, in order: the first gap is the answer.
        for &used in self.used.range(self.hint..) {
            if used != slot {
                break;
            }
            slot += 1;
        }
        if slot > self.last {
            self.hint = slot;
            return None;
        }
        self.used.insert(slot);
        self.hint = slot + 1;
        Some(self.format(slot))
    }
}

/// An object that holds (or wants) one address of a pool: a service (VIP) or a node (subnet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its store key, recorded as the claim's owner.
    pub owner: String,
    pub address: Option<String>,
}

/// What one allocator run writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AllocationPlan {
    /// Owners without an address and the address each gets: claim it and write it into them.
    pub assign: Vec<(String, String)>,
    /// Addresses owners already hold without a claim (stores from before claims, or a claim
    /// lost): claim them, so that nobody else is handed them.
    pub adopt: Vec<AddressClaim>,
    /// Claims whose owner is gone or holds another address: free again.
    pub release: Vec<AddressClaim>,
    /// Owners left without an address because the pool is full.
    pub exhausted: Vec<String>,
}

impl AllocationPlan {
    pub fn is_empty(&self) -> bool {
        self.assign.is_empty()
            && self.adopt.is_empty()
            && self.release.is_empty()
            && self.exhausted.is_empty()
    }
}

/// Plans `pool`'s claims for `holders` given the stored `claims`. Addresses are kept for an
/// owner's life: an owner that holds one keeps it; a new one gets the lowest free address.
/// `pool` comes in empty and leaves with every address in use marked.
pub fn plan_allocations(
    pool: &mut Pool,
    holders: &[Holder],
    claims: &[AddressClaim],
) -> AllocationPlan {
    let mut plan = AllocationPlan::default();
    let held: BTreeMap<&str, &str> = holders
        .iter()
        .filter_map(|h| Some((h.address.as_deref()?, h.owner.as_str())))
        .collect();
    let claimed: BTreeMap<&str, &AddressClaim> = claims
        .iter()
        .filter(|c| c.pool == pool.kind())
        .map(|c| (c.address.as_str(), c))
        .collect();
    for (address, claim) in &claimed {
        // A released address stays marked for this run: its claim's delete and a new claim of
        // it cannot share one transaction. The next run hands it out again.
        pool.mark(address);
        if held.get(address) != Some(&claim.owner.as_str()) {
            plan.release.push((*claim).clone());
        }
    }
    for (address, owner) in &held {
        // Addresses outside the pool (the CIDR flag changed) are kept but never claimed.
        if !claimed.contains_key(address) && pool.mark(address) {
            plan.adopt.push(AddressClaim {
                pool: pool.kind(),
                address: address.to_string(),
                owner: owner.to_string(),
                meta: Default::default(),
            });
        }
    }
    for holder in holders.iter().filter(|h| h.address.is_none()) {
        match pool.allocate() {
            Some(address) => plan.assign.push((holder.owner.clone(), address)),
            None => plan.exhausted.push(holder.owner.clone()),
        }
    }
    plan
}

#[cfg(test)]
mod tests;
