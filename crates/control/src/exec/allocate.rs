//! The allocator executor: gives new services a VIP and new nodes a /24, one transaction per
//! run, each address claimed with `Expect::Absent` and written into its owner with
//! `Expect::Revision` (see `plan::allocate`). A run that loses a race to another writer fails
//! whole and the next run plans again from what was committed.

use std::collections::HashMap;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::{AddressClaim, AddressPool, Kind, Node, Service};
use serde_json::json;
use tracing::{info, warn};

use crate::exec::replicas::error_chain;
use crate::exec::runner::BackgroundTask;
use crate::exec::ControlError;
use crate::plan::allocate::{plan_allocations, AllocationPlan, ClusterNetwork, Holder, Pool};

/// Owners given an address per transaction: a deploy of 10,000 services commits in a few
/// bounded transactions, each within one run.
const BATCH: usize = 2_000;

pub struct AllocatorController {
    store: Store,
    net: ClusterNetwork,
    /// The last exhaustion reported, so that a full pool is logged once, not every run.
    exhausted: (usize, usize),
}

impl AllocatorController {
    pub fn new(store: Store, net: ClusterNetwork) -> AllocatorController {
        AllocatorController {
            store,
            net,
            exhausted: (0, 0),
        }
    }

    async fn run(&mut self) -> Result<serde_json::Value, ControlError> {
        // Claims are read before their owners: a claim committed between the two reads then
        // shows up only as an owner's address, whose adoption (`Expect::Absent`) fails the run
        // instead of releasing an address in use.
        let vip_claims: Vec<AddressClaim> = self
            .store
            .list(Kind::Address, &AddressPool::Vip.prefix())
            .await?;
        let subnet_claims: Vec<AddressClaim> = self
            .store
            .list(Kind::Address, &AddressPool::Subnet.prefix())
            .await?;
        let services: Vec<Service> = self.store.list(Kind::Service, "").await?;
        let nodes: Vec<Node> = self.store.list(Kind::Node, "").await?;

        let holders: Vec<Holder> = services
            .iter()
            .map(|s| Holder {
                owner: s.key(),
                address: s.vip.clone(),
            })
            .collect();
        let vips = plan_allocations(&mut Pool::vips(&self.net), &holders, &vip_claims);
        let holders: Vec<Holder> = nodes
            .iter()
            .map(|n| Holder {
                owner: n.name.clone(),
                address: n.subnet.clone(),
            })
            .collect();
        let subnets = plan_allocations(&mut Pool::subnets(&self.net), &holders, &subnet_claims);
        self.report_exhaustion(&vips, &subnets);

        let mut ops = release_and_adopt(&vips);
        ops.extend(release_and_adopt(&subnets));
        let mut assigned = (0, 0);
        let by_key: HashMap<String, &Service> = services.iter().map(|s| (s.key(), s)).collect();
        for (owner, vip) in vips.assign.iter().take(BATCH) {
            let Some(service) = by_key.get(owner) else {
                continue;
            };
            let with_vip = Service {
                vip: Some(vip.clone()),
                ..(*service).clone()
            };
            ops.push(claim(AddressPool::Vip, vip, owner));
            ops.push(Op::put(
                Kind::Service,
                owner.clone(),
                &with_vip,
                Expect::Revision(service.meta.revision),
            ));
            assigned.0 += 1;
        }
        let by_name: HashMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for (owner, subnet) in subnets.assign.iter().take(BATCH) {
            let Some(node) = by_name.get(owner.as_str()) else {
                continue;
            };
            let with_subnet = Node {
                subnet: Some(subnet.clone()),
                ..(*node).clone()
            };
            ops.push(claim(AddressPool::Subnet, subnet, owner));
            ops.push(Op::put(
                Kind::Node,
                owner.clone(),
                &with_subnet,
                Expect::Revision(node.meta.revision),
            ));
            info!(node = %owner, %subnet, "node subnet allocated");
            assigned.1 += 1;
        }
        self.store.txn(ops).await?;
        Ok(json!({
            "vips_assigned": assigned.0,
            "subnets_assigned": assigned.1,
            "released": vips.release.len() + subnets.release.len(),
            "adopted": vips.adopt.len() + subnets.adopt.len(),
            "waiting": (vips.assign.len() - assigned.0) + (subnets.assign.len() - assigned.1),
            "exhausted": vips.exhausted.len() + subnets.exhausted.len(),
        }))
    }

    fn report_exhaustion(&mut self, vips: &AllocationPlan, subnets: &AllocationPlan) {
        let now = (vips.exhausted.len(), subnets.exhausted.len());
        if now != self.exhausted && now != (0, 0) {
            warn!(
                services = now.0,
                nodes = now.1,
                service_cidr = %self.net.service_cidr_string(),
                cluster_cidr = %self.net.cluster_cidr_string(),
                "address pool exhausted: these wait for an address; remove unused apps or nodes, or restart the server with wider --service-cidr / --cluster-cidr"
            );
        }
        self.exhausted = now;
    }
}

fn claim(pool: AddressPool, address: &str, owner: &str) -> Op {
    let claim = AddressClaim {
        pool,
        address: address.to_string(),
        owner: owner.to_string(),
        meta: Default::default(),
    };
    Op::put(Kind::Address, claim.key(), &claim, Expect::Absent)
}

fn release_and_adopt(plan: &AllocationPlan) -> Vec<Op> {
    let release = plan
        .release
        .iter()
        .take(BATCH)
        .map(|c| Op::delete(Kind::Address, c.key(), Expect::Revision(c.meta.revision)));
    let adopt = plan
        .adopt
        .iter()
        .take(BATCH)
        .map(|c| Op::put(Kind::Address, c.key(), c, Expect::Absent));
    release.chain(adopt).collect()
}

#[async_trait::async_trait]
impl BackgroundTask for AllocatorController {
    fn name(&self) -> &'static str {
        "allocator"
    }

    fn watches(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Service | Kind::Node)
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}
