//! Test doubles for the converger's seams other than the runtime (that one is
//! `runtime::fake::FakeRuntime`): [`FakeDataPlane`] records what the converger asks of the data
//! plane and hands out addresses like IPAM would.
//!
//! Every recorded call carries a number from `runtime::fake::next_seq`, the order shared with
//! the fake runtime, so a test can check that the data plane converged before a container was
//! stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hivemind_types::{NodeNetwork, NodeProblem, Replica};

use super::dataplane::{DataPlane, DataPlaneError};
use super::dataplane_plan::replica_resolv_conf;
use crate::net::Ipv4Net;
use crate::runtime::fake::next_seq;
use crate::runtime::CreateOptions;

/// What the converger asked of the data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlaneCall {
    Converge { generation: u64 },
    Attach { id: String },
    Detach { id: String },
    Reconcile { live: BTreeSet<String> },
    Shutdown,
}

/// A recorded call and its place in the order shared with the fake runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<T> {
    pub seq: u64,
    pub call: T,
}

#[derive(Default)]
struct DataPlaneState {
    calls: Vec<Recorded<DataPlaneCall>>,
    /// The subnet of the last converged network; attaching needs one, as on a real node.
    subnet: Option<Ipv4Net>,
    attached: BTreeMap<String, Ipv4Addr>,
    /// Host numbers handed out so far (`.2` first; `.1` is the gateway).
    next_host: u32,
    problems: Vec<NodeProblem>,
    /// Replica ids whose attach fails.
    failing_attach: BTreeSet<String>,
}

/// A data plane that records its calls; clones share the same state.
#[derive(Clone, Default)]
pub struct FakeDataPlane {
    state: Arc<Mutex<DataPlaneState>>,
}

impl FakeDataPlane {
    pub fn new() -> FakeDataPlane {
        FakeDataPlane::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DataPlaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(state: &mut DataPlaneState, call: DataPlaneCall) {
        state.calls.push(Recorded {
            seq: next_seq(),
            call,
        });
    }

    pub fn calls(&self) -> Vec<Recorded<DataPlaneCall>> {
        self.state().calls.clone()
    }

    /// The problems the data plane reports from now on (like a published port held elsewhere).
    pub fn set_problems(&self, problems: Vec<NodeProblem>) {
        self.state().problems = problems;
    }

    /// Attaching replica `id` fails (`false`: succeeds again).
    pub fn fail_attach(&self, id: &str, fail: bool) {
        let mut state = self.state();
        if fail {
            state.failing_attach.insert(id.to_string());
        } else {
            state.failing_attach.remove(id);
        }
    }

    pub fn attached(&self) -> BTreeMap<String, Ipv4Addr> {
        self.state().attached.clone()
    }
}

#[async_trait::async_trait]
impl DataPlane for FakeDataPlane {
    async fn converge(&self, network: &NodeNetwork, generation: u64) -> Result<(), DataPlaneError> {
        let mut state = self.state();
        FakeDataPlane::record(&mut state, DataPlaneCall::Converge { generation });
        let Some(subnet) = &network.subnet else {
            return Err(DataPlaneError::NoSubnet);
        };
        let subnet: Ipv4Net = subnet.parse().map_err(|_| DataPlaneError::BadNetwork {
            what: "subnet",
            value: subnet.clone(),
        })?;
        state.subnet = Some(subnet);
        Ok(())
    }

    async fn problems(&self) -> Vec<NodeProblem> {
        self.state().problems.clone()
    }

    async fn attach(&self, replica: &Replica) -> Result<CreateOptions, DataPlaneError> {
        let mut state = self.state();
        FakeDataPlane::record(
            &mut state,
            DataPlaneCall::Attach {
                id: replica.id.clone(),
            },
        );
        let subnet = state.subnet.ok_or(DataPlaneError::NoSubnet)?;
        if state.failing_attach.contains(&replica.id) {
            return Err(DataPlaneError::BadNetwork {
                what: "attachment (scripted failure)",
                value: replica.id.clone(),
            });
        }
        let ip = match state.attached.get(&replica.id) {
            Some(ip) => *ip,
            None => {
                let ip = Ipv4Addr::from(u32::from(subnet.network()) + 2 + state.next_host);
                state.next_host += 1;
                state.attached.insert(replica.id.clone(), ip);
                ip
            }
        };
        let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        Ok(CreateOptions {
            network_ns: Some(PathBuf::from(format!("/var/run/netns/fake-{}", replica.id))),
            resolv_conf: Some(replica_resolv_conf(
                gateway,
                &replica.namespace,
                &replica.app,
            )),
            ip: Some(IpAddr::V4(ip)),
        })
    }

    async fn detach(&self, replica_id: &str) -> Result<(), DataPlaneError> {
        let mut state = self.state();
        FakeDataPlane::record(
            &mut state,
            DataPlaneCall::Detach {
                id: replica_id.to_string(),
            },
        );
        state.attached.remove(replica_id);
        Ok(())
    }

    async fn ip(&self, replica_id: &str) -> Option<Ipv4Addr> {
        self.state().attached.get(replica_id).copied()
    }

    async fn reconcile(&self, live: &BTreeSet<String>) {
        let mut state = self.state();
        FakeDataPlane::record(&mut state, DataPlaneCall::Reconcile { live: live.clone() });
        state.attached.retain(|id, _| live.contains(id));
    }

    async fn shutdown(&self) {
        FakeDataPlane::record(&mut self.state(), DataPlaneCall::Shutdown);
    }
}
