//! The agent's side of the server: the [`ServerLink`] seam (the node's assignment in, its
//! report out), its real implementation over `hivemind_client::Client`, and the two tasks that
//! use it: the assignment watcher and the reporter.

use std::sync::Arc;
use std::time::Duration;

use hivemind_client::{Client, ClientError};
use hivemind_types::{Assignment, NodeReport};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::Shared;
use hivemind_runtime::ContainerRuntime;

/// What the agent calls on the server. Object-safe (`async_trait`); the agent holds a
/// `Box<dyn ServerLink>`, `hivemind_client::Client` in production and
/// `converge::fake::FakeServer` in the converger's unit tests.
#[async_trait::async_trait]
pub trait ServerLink: Send + Sync + 'static {
    /// The node's whole assignment: at once when its generation is newer than `after` (or
    /// `after` is `None`), else when it changes or `timeout` passes (long poll).
    async fn assignment(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment, ClientError>;

    /// The node's assignment after generation `after`, to merge into the last whole one
    /// (`Assignment::apply`): as [`ServerLink::assignment`] (a whole answer merges as itself);
    /// the real link asks for a delta.
    async fn assignment_delta(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment, ClientError> {
        self.assignment(node, after, timeout).await
    }

    /// Sends the node's observed state (registering the node at its first one).
    async fn report(&self, report: &NodeReport) -> Result<(), ClientError>;

    /// Renews the node's lease: the cheap liveness call, which writes nothing on the server.
    /// Refused until the node has registered with its first report.
    async fn renew_lease(&self, node: &str) -> Result<(), ClientError>;

    /// The volumes the store keeps on the node (`volume_sweep` removes the data of others).
    async fn node_volumes(&self, node: &str) -> Result<Vec<hivemind_types::Volume>, ClientError>;
}

#[async_trait::async_trait]
impl ServerLink for Client {
    async fn assignment(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment, ClientError> {
        Client::assignment(self, node, after, timeout).await
    }

    async fn assignment_delta(
        &self,
        node: &str,
        after: Option<u64>,
        timeout: Duration,
    ) -> Result<Assignment, ClientError> {
        Client::assignment_delta(self, node, after, timeout).await
    }

    async fn report(&self, report: &NodeReport) -> Result<(), ClientError> {
        Client::report(self, report).await
    }

    async fn renew_lease(&self, node: &str) -> Result<(), ClientError> {
        Client::renew_lease(self, node).await
    }

    async fn node_volumes(&self, node: &str) -> Result<Vec<hivemind_types::Volume>, ClientError> {
        Client::node_volumes(self, node).await
    }
}

/// Long-polls the node's assignment and wakes the converger when it changed.
pub(super) async fn watch_assignment<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    // The last whole assignment, which the next answer (a delta) is merged into.
    let mut base: Option<Assignment> = None;
    let node = &shared.config.node;
    let poll = Duration::from_secs(30);
    loop {
        let after = base.as_ref().map(|b| b.generation);
        match shared.server.assignment_delta(node, after, poll).await {
            Ok(next) => {
                // Merged in place: the merge costs the changes, not the whole assignment.
                let assignment = match &mut base {
                    Some(whole) => {
                        whole.apply(next);
                        whole.clone()
                    }
                    None => base.insert(next).clone(),
                };
                let mut state = shared.state();
                if state.assignment.as_ref() != Some(&assignment) {
                    debug!(
                        generation = assignment.generation,
                        replicas = assignment.replicas.len(),
                        "new assignment"
                    );
                    state.assignment = Some(assignment);
                    drop(state);
                    shared.wake.notify_one();
                }
            }
            Err(error) => {
                warn!(%error, "cannot get the node's assignment; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends the converger's latest report when it changed, and every `report_interval` anyway.
pub(super) async fn send_reports<R: ContainerRuntime>(
    shared: Arc<Shared<R>>,
    mut latest: watch::Receiver<Option<NodeReport>>,
) {
    let mut last_sent: Option<NodeReport> = None;
    let mut heartbeat = tokio::time::interval(shared.config.report_interval);
    loop {
        // The heartbeat keeps the node alive; a report is sent only when it differs from the
        // last one sent, since passes run often and mostly change nothing.
        let beat = tokio::select! {
            _ = heartbeat.tick() => true,
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
        };
        // Before the first assignment the node still announces itself, so it can be scheduled on.
        let report = latest
            .borrow_and_update()
            .clone()
            .unwrap_or_else(|| NodeReport {
                node: shared.config.node.clone(),
                address: shared.config.address.clone(),
                agent_url: shared.config.agent_url.clone(),
                generation: 0,
                replicas: Vec::new(),
                problems: Vec::new(),
            });
        if last_sent.as_ref() == Some(&report) {
            if !beat {
                continue;
            }
            // Nothing changed: the heartbeat is a lease renewal, which writes nothing on the
            // server. A refused renewal (the node is unknown to it) falls back to a report.
            match shared.server.renew_lease(&shared.config.node).await {
                Ok(()) => continue,
                Err(error) => debug!(%error, "lease renewal refused; reporting instead"),
            }
        }
        match shared.server.report(&report).await {
            Ok(()) => last_sent = Some(report),
            Err(error) => warn!(%error, "cannot report to the server; retrying"),
        }
    }
}
