//! Test doubles for the converger's seams other than the runtime (that one is
//! `runtime::fake::FakeRuntime`): [`FakeDataPlane`] records what the converger asks of the data
//! plane and hands out addresses like IPAM would; [`FakeServer`] serves a scripted assignment
//! by long poll and keeps every report and lease renewal it gets.
//!
//! Every recorded call carries a number from `runtime::fake::next_seq`, the order shared with
//! the fake runtime, so a test can check that the data plane converged before a container was
//! stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_client::ClientError;
use hivemind_types::{Assignment, NodeNetwork, NodeProblem, NodeReport, Replica};
use tokio::sync::watch;

use super::dataplane::{DataPlane, DataPlaneError};
use super::dataplane_plan::replica_resolv_conf;
use super::server::ServerLink;
use hivemind_dataplane::net::Ipv4Net;
use hivemind_runtime::fake::next_seq;
use hivemind_runtime::CreateOptions;

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
            mounts: Vec::new(),
            file_binds: Vec::new(),
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

#[derive(Default)]
struct ServerState {
    reports: Vec<Recorded<NodeReport>>,
    /// The `after` of every assignment request, in order.
    polls: Vec<Option<u64>>,
    /// The order numbers of the lease renewals accepted.
    leases: Vec<u64>,
    failing_reports: u32,
    failing_assignments: u32,
    failing_leases: u32,
}

struct ServerInner {
    assignment: watch::Sender<Option<Assignment>>,
    /// Counts the reports received, to wake [`FakeServer::wait_report`].
    received: watch::Sender<usize>,
    state: Mutex<ServerState>,
}

/// The server side of one node: an assignment the test sets, and the reports the agent sent.
/// Clones share the same state.
#[derive(Clone)]
pub struct FakeServer {
    inner: Arc<ServerInner>,
}

impl Default for FakeServer {
    fn default() -> Self {
        FakeServer::new()
    }
}

/// How long [`FakeServer::wait_report`] waits (tokio time; instant when paused) before failing.
const WAIT_REPORT_LIMIT: Duration = Duration::from_secs(3600);

impl FakeServer {
    /// A server with no assignment yet: polls wait (and time out with an error) until
    /// [`FakeServer::assign`], like a server that is not reachable yet.
    pub fn new() -> FakeServer {
        FakeServer {
            inner: Arc::new(ServerInner {
                assignment: watch::channel(None).0,
                received: watch::channel(0).0,
                state: Mutex::new(ServerState::default()),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServerState> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `assignment`, answering the long polls waiting for a newer generation.
    pub fn assign(&self, assignment: Assignment) {
        self.inner.assignment.send_replace(Some(assignment));
    }

    /// The next `n` reports fail (the server is briefly unreachable).
    pub fn fail_reports(&self, n: u32) {
        self.state().failing_reports = n;
    }

    /// How many of the reports scripted to fail are still to come.
    pub fn failing_reports(&self) -> u32 {
        self.state().failing_reports
    }

    /// The next `n` lease renewals are refused.
    pub fn fail_leases(&self, n: u32) {
        self.state().failing_leases = n;
    }

    /// The next `n` assignment requests fail.
    pub fn fail_assignments(&self, n: u32) {
        self.state().failing_assignments = n;
    }

    /// Every report received, in order.
    pub fn reports(&self) -> Vec<Recorded<NodeReport>> {
        self.state().reports.clone()
    }

    pub fn last_report(&self) -> Option<NodeReport> {
        self.state().reports.last().map(|r| r.call.clone())
    }

    /// The order numbers (shared with the other fakes) of the lease renewals accepted.
    pub fn leases(&self) -> Vec<u64> {
        self.state().leases.clone()
    }

    /// The `after` argument of every assignment request so far.
    pub fn polls(&self) -> Vec<Option<u64>> {
        self.state().polls.clone()
    }

    /// Waits for the first report, from the latest one received on, that satisfies `wanted`
    /// (the latest counts: an unchanged node renews its lease rather than report again) and
    /// returns it. Panics, naming `what` and the last report, if none came within an hour of
    /// tokio time (instant under paused time), so a test cannot hang.
    pub async fn wait_report(
        &self,
        what: &str,
        wanted: impl Fn(&NodeReport) -> bool,
    ) -> NodeReport {
        let mut received = self.inner.received.subscribe();
        let mut seen = received.borrow_and_update().saturating_sub(1);
        let mut first = true;
        let waited = tokio::time::timeout(WAIT_REPORT_LIMIT, async {
            loop {
                if !first && received.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                first = false;
                let now = *received.borrow_and_update();
                let state = self.state();
                let found = state.reports[seen..now]
                    .iter()
                    .find(|r| wanted(&r.call))
                    .map(|r| r.call.clone());
                seen = now;
                if let Some(report) = found {
                    return report;
                }
            }
        })
        .await;
        match waited {
            Ok(report) => report,
            Err(_) => panic!(
                "no report with {what} within {WAIT_REPORT_LIMIT:?}; the last one: {:#?}",
                self.last_report()
            ),
        }
    }
}

fn unavailable(what: &str) -> ClientError {
    ClientError::Api {
        status: 503,
        code: "unavailable".to_string(),
        message: format!("{what} failed (scripted)"),
        field: None,
        fix: None,
    }
}

#[async_trait::async_trait]
impl ServerLink for FakeServer {
    async fn assignment(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment, ClientError> {
        {
            let mut state = self.state();
            state.polls.push(after);
            if state.failing_assignments > 0 {
                state.failing_assignments -= 1;
                return Err(unavailable("assignment"));
            }
        }
        let mut current = self.inner.assignment.subscribe();
        let newer = |a: &Option<Assignment>| {
            a.as_ref()
                .filter(|a| after.is_none_or(|g| a.generation > g))
                .cloned()
        };
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(a) = newer(&current.borrow_and_update()) {
                    return a;
                }
                if current.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match waited {
            Ok(assignment) => Ok(assignment),
            // The real server answers a poll that timed out with the current assignment.
            Err(_) => match current.borrow().clone() {
                Some(assignment) => Ok(assignment),
                None => Err(ClientError::Timeout {
                    url: format!("fake:/nodes/{node}/assignment"),
                    after: timeout,
                }),
            },
        }
    }

    async fn report(&self, report: &NodeReport) -> Result<(), ClientError> {
        let mut state = self.state();
        if state.failing_reports > 0 {
            state.failing_reports -= 1;
            return Err(unavailable("report"));
        }
        state.reports.push(Recorded {
            seq: next_seq(),
            call: report.clone(),
        });
        let count = state.reports.len();
        drop(state);
        self.inner.received.send_replace(count);
        Ok(())
    }

    /// The converge tests keep no volumes: the sweep is skipped.
    async fn node_volumes(&self, _node: &str) -> Result<Vec<hivemind_types::Volume>, ClientError> {
        Err(unavailable("volumes"))
    }

    async fn renew_lease(&self, node: &str) -> Result<(), ClientError> {
        let mut state = self.state();
        // Like the server: a node registers with its first report.
        if !state.reports.iter().any(|r| r.call.node == node) {
            return Err(ClientError::Api {
                status: 404,
                code: "not_found".to_string(),
                message: format!("node {node} is not registered"),
                field: None,
                fix: None,
            });
        }
        if state.failing_leases > 0 {
            state.failing_leases -= 1;
            return Err(unavailable("lease renewal"));
        }
        state.leases.push(next_seq());
        Ok(())
    }
}
