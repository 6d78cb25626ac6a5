//! The agent's control loop: follow the node's assignment, converge containerd to it, report.
//!
//! Three tasks share one `Shared` state:
//! - the **watcher** long-polls the server for the node's whole assignment (with a generation);
//! - the **converger** runs `plan::plan` whenever the assignment changes, a container exits, an
//!   action finishes or a back-off expires, and spawns the actions (at most `parallelism` at once,
//!   never two for one replica);
//! - the **reporter** sends the observed state with the applied generation when it changes, and
//!   as a heartbeat.
//!
//! **Invariant:** nothing is removed before the first assignment has arrived, so a restarted
//! agent adopts the containers it finds instead of killing them (live restore, SPEC §6).

pub mod dataplane;
pub mod dataplane_plan;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod image_gc;
mod leftovers;
pub mod plan;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_client::Client;
use hivemind_types::{Assignment, ExitRecord, NodeReport};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::converge::dataplane::{DataPlane, DataPlaneConfig, NodeDataPlane};
use crate::converge::plan::{failure_delay, Action, LocalState, Pass};
use crate::runtime::{ContainerRuntime, CreateOptions, RuntimeConfig};

/// How the agent identifies itself and paces its work.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name (the hostname by default).
    pub node: String,
    /// Address the server and other nodes reach this node at.
    pub address: String,
    /// Container operations run concurrently (creates and stops are mostly waiting on runc).
    pub parallelism: usize,
    /// Heartbeat: a report is sent at least this often.
    pub report_interval: Duration,
    /// Container networking, DNS and published ports; `None` leaves replicas with loopback
    /// only (runtime tests).
    pub network: Option<DataPlaneConfig>,
    /// The URL of this agent's own HTTP endpoint (`crate::serve`), reported to the server so
    /// that it can proxy logs and exec; `None` when the agent serves none.
    pub agent_url: Option<String>,
    /// Unused images are removed when the disk fills up (`image_gc`); `None` keeps them all.
    pub image_gc: Option<image_gc::ImageGcPolicy>,
    /// Where replica log files are, so that each recorded exit carries the container's last
    /// lines; `None` records exits without them.
    pub logs: Option<RuntimeConfig>,
}

struct State {
    assignment: Option<Assignment>,
    local: LocalState,
    in_flight: BTreeSet<String>,
    /// Counts finished actions; see `converge_once`.
    finished_actions: u64,
    /// The replicas whose networking was last checked for leftovers.
    network_live: Option<BTreeSet<String>>,
}

struct Shared<R> {
    config: AgentConfig,
    runtime: R,
    client: Client,
    state: Mutex<State>,
    /// Wakes the converger.
    wake: Notify,
    /// The latest report, for the reporter.
    report: watch::Sender<Option<NodeReport>>,
    permits: Semaphore,
    dataplane: Option<Box<dyn DataPlane>>,
}

impl<R> Shared<R> {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs the agent until `shutdown` turns true. Containers keep running after it returns.
pub async fn run_agent<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: R,
    client: Client,
    mut shutdown: watch::Receiver<bool>,
) {
    let (report, report_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        permits: Semaphore::new(config.parallelism.max(1)),
        dataplane: config
            .network
            .clone()
            .map(|c| Box::new(NodeDataPlane::new(c)) as Box<dyn DataPlane>),
        config,
        runtime,
        client,
        state: Mutex::new(State {
            assignment: None,
            local: LocalState::new(),
            in_flight: BTreeSet::new(),
            finished_actions: 0,
            network_live: None,
        }),
        wake: Notify::new(),
        report,
    });
    let span = info_span!("agent", node = %shared.config.node);
    let mut tasks = vec![
        tokio::spawn(watch_assignment(shared.clone()).instrument(span.clone())),
        tokio::spawn(watch_exits(shared.clone()).instrument(span.clone())),
        tokio::spawn(send_reports(shared.clone(), report_rx).instrument(span.clone())),
        tokio::spawn(converge(shared.clone()).instrument(span.clone())),
    ];
    tasks.push(tokio::spawn(
        leftovers::run(shared.clone()).instrument(span.clone()),
    ));
    if let Some(policy) = shared.config.image_gc.clone() {
        tasks.push(tokio::spawn(
            image_gc::run(shared.clone(), policy).instrument(span),
        ));
    }
    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    for t in tasks {
        t.abort();
    }
    if let Some(dataplane) = &shared.dataplane {
        dataplane.shutdown().await;
    }
}

async fn watch_assignment<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    let mut after = None;
    loop {
        match shared
            .client
            .assignment(&shared.config.node, after, Duration::from_secs(30))
            .await
        {
            Ok(assignment) => {
                after = Some(assignment.generation);
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

async fn watch_exits<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    loop {
        match shared.runtime.exits().await {
            Ok(mut exits) => {
                while let Some(exit) = exits.recv().await {
                    if exit.oom {
                        warn!(replica = %exit.id, "container killed for memory (OOM)");
                        if let Some(local) = shared.state().local.get_mut(&exit.id) {
                            local.oom_killed = true;
                        }
                        continue;
                    }
                    debug!(replica = %exit.id, code = exit.exit_code, "container exited");
                    shared.wake.notify_one();
                }
                warn!("containerd event stream ended; resubscribing");
            }
            Err(error) => warn!(%error, "cannot subscribe to containerd events; retrying"),
        }
        // Exits missed meanwhile are still seen: the converger's timer lists tasks anyway.
        tokio::time::sleep(Duration::from_secs(1)).await;
        shared.wake.notify_one();
    }
}

async fn converge<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    let mut wake_at: Option<u64> = None;
    loop {
        let sleep_for = match wake_at {
            Some(at) => Duration::from_millis(at.saturating_sub(now_millis())).min(TICK),
            None => TICK,
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
        }
        wake_at = converge_once(&shared).await;
    }
}

/// The converger also runs on this timer, so that a missed event costs at most this much.
const TICK: Duration = Duration::from_secs(2);

async fn converge_once<R: ContainerRuntime>(shared: &Arc<Shared<R>>) -> Option<u64> {
    // The data plane first: a replica leaving its service must leave DNS, VIPs and the ingress
    // before this pass stops its container.
    if let Some(dataplane) = &shared.dataplane {
        let network = {
            let state = shared.state();
            state
                .assignment
                .as_ref()
                .map(|a| (a.network.clone(), a.generation))
        };
        if let Some((network, generation)) = network {
            if let Err(error) = dataplane.converge(&network, generation).await {
                warn!(error = %error_chain(&error), "cannot converge the node's network");
            }
        }
    }
    // An action that finishes between `list` and planning would be planned again from a stale
    // list (e.g. "no task yet" → start again). So plan only from a list taken while no action
    // finished; the action counter tells.
    let (pass, generation, containers) = loop {
        let finished_before = {
            let state = shared.state();
            // Live restore: do nothing until we know what is desired.
            state.assignment.as_ref()?;
            state.finished_actions
        };
        let containers = match shared.runtime.list().await {
            Ok(c) => c,
            Err(error) => {
                warn!(%error, "cannot list containers");
                return None;
            }
        };
        tracing::trace!(?containers, "observed containers");
        let now = now_millis();
        let mut state = shared.state();
        if state.finished_actions != finished_before {
            continue;
        }
        let State {
            assignment,
            local,
            in_flight,
            ..
        } = &mut *state;
        let assignment = assignment.as_ref().expect("checked above");
        let pass = plan::plan(
            &shared.config.node,
            &assignment.replicas,
            &containers,
            in_flight,
            local,
            now,
        );
        for action in &pass.actions {
            in_flight.insert(action.id().to_string());
        }
        break (pass, assignment.generation, containers);
    };
    let mut pass = pass;
    if !pass.new_exits.is_empty() {
        attach_last_lines(shared, &mut pass).await;
    }
    if let Some(dataplane) = &shared.dataplane {
        for status in &mut pass.statuses {
            status.ip = dataplane.ip(&status.id).await.map(|ip| ip.to_string());
        }
        // Networking of replicas that are neither desired nor have a container is a leftover
        // (a crash, or a replica removed before its container was ever created). Checked when
        // that set changes, so a quiet node does no netlink dumps.
        let mut live: BTreeSet<String> = containers.into_iter().map(|c| c.id).collect();
        live.extend(pass.statuses.iter().map(|s| s.id.clone()));
        let changed = {
            let mut state = shared.state();
            live.extend(state.in_flight.iter().cloned());
            let changed = state.network_live.as_ref() != Some(&live);
            state.network_live = Some(live.clone());
            changed
        };
        if changed {
            dataplane.reconcile(&live).await;
        }
    }
    let problems = match &shared.dataplane {
        Some(dataplane) => dataplane.problems().await,
        None => Vec::new(),
    };
    shared.report.send_replace(Some(NodeReport {
        node: shared.config.node.clone(),
        address: shared.config.address.clone(),
        agent_url: shared.config.agent_url.clone(),
        generation,
        replicas: pass.statuses,
        problems,
    }));
    for action in pass.actions {
        tokio::spawn(execute(shared.clone(), action));
    }
    pass.wake_at
}

/// Reads the last lines of each replica that exited in `pass` and puts them on its newest exit
/// record, in the pass's statuses and in the agent's memory (so later reports carry them too).
/// Done here rather than in the planner, which does no I/O, and before the pass's actions are
/// spawned, so that a restart cannot add lines of the next run.
async fn attach_last_lines<R: ContainerRuntime>(shared: &Arc<Shared<R>>, pass: &mut Pass) {
    let Some(config) = &shared.config.logs else {
        return;
    };
    let mut read = Vec::with_capacity(pass.new_exits.len());
    for id in &pass.new_exits {
        // The run that just ended began after the exit before it was seen: earlier output in
        // the (continuing) files belongs to earlier runs.
        let since = {
            let state = shared.state();
            state
                .local
                .get(id)
                .and_then(|l| l.exits.iter().rev().nth(1))
                .map(|previous| std::time::UNIX_EPOCH + Duration::from_millis(previous.at))
        };
        let lines = crate::logs::recent_lines(config, id, ExitRecord::MAX_LINES, since).await;
        read.push((id.clone(), ExitRecord::bound_lines(lines)));
    }
    let mut state = shared.state();
    for (id, lines) in read {
        let newest =
            |exits: &mut Vec<ExitRecord>| exits.last_mut().map(|e| e.last_lines = lines.clone());
        if let Some(local) = state.local.get_mut(&id) {
            newest(&mut local.exits);
        }
        if let Some(status) = pass.statuses.iter_mut().find(|s| s.id == id) {
            newest(&mut status.exits);
        }
    }
}

async fn execute<R: ContainerRuntime>(shared: Arc<Shared<R>>, action: Action) {
    let id = action.id().to_string();
    let span = info_span!("replica", replica = %id);
    async {
        // Creates and starts are bounded (they load runc and the disk); removals are not, since
        // they mostly wait out grace periods and must not hold up new replicas.
        let _permit = match &action {
            Action::Remove { .. } => None,
            _ => match shared.permits.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            },
        };
        let result = match &action {
            Action::Create(replica) => create_replica(&shared, replica).await,
            Action::Start { id } => shared
                .runtime
                .start(id)
                .await
                .map(|_| ())
                .map_err(|e| error_chain(&e)),
            Action::Remove {
                id,
                signal,
                grace_ms,
            } => {
                let stopped = shared
                    .runtime
                    .stop(id, signal, Duration::from_millis(*grace_ms))
                    .await;
                if let Err(error) = stopped {
                    // Removal kills whatever is left, so a failed graceful stop is not fatal.
                    warn!(%error, "graceful stop failed; removing anyway");
                }
                let removed = shared.runtime.remove(id).await.map_err(|e| error_chain(&e));
                if removed.is_ok() {
                    if let Some(dataplane) = &shared.dataplane {
                        if let Err(error) = dataplane.detach(id).await {
                            warn!(error = %error_chain(&error), "cannot detach the replica's network");
                        }
                    }
                }
                removed
            }
        };
        let now = now_millis();
        let mut state = shared.state();
        state.in_flight.remove(&id);
        state.finished_actions += 1;
        match result {
            Ok(()) => {
                match &action {
                    Action::Create(_) => info!("replica started"),
                    Action::Start { .. } => info!("replica restarted"),
                    Action::Remove { .. } => info!("replica removed"),
                }
                if let Some(local) = state.local.get_mut(&id) {
                    if matches!(action, Action::Start { .. }) && local.exit.is_some() {
                        local.restarts += 1;
                    }
                    local.exit = None;
                    local.oom_killed = false;
                    local.error = None;
                    local.failures = 0;
                    local.next_attempt_at = None;
                    local.started_at = Some(now);
                }
            }
            Err(message) => {
                warn!(error = %message, "container operation failed");
                let local = state.local.entry(id.clone()).or_default();
                local.failures += 1;
                local.error = Some((message, now));
                local.next_attempt_at = Some(now + failure_delay(local.failures));
            }
        }
        drop(state);
        shared.wake.notify_one();
    }
    .instrument(span)
    .await
}

/// Attaches the replica's network (when the node has one), then creates and starts it. A
/// failure after attaching leaves the attachment: the retry reuses it, and removal detaches it.
async fn create_replica<R: ContainerRuntime>(
    shared: &Shared<R>,
    replica: &hivemind_types::Replica,
) -> Result<(), String> {
    let options = match &shared.dataplane {
        Some(dataplane) => dataplane
            .attach(replica)
            .await
            .map_err(|e| format!("cannot attach to the node network: {}", error_chain(&e)))?,
        None => CreateOptions::default(),
    };
    shared
        .runtime
        .create(replica, &options)
        .await
        .map_err(|e| error_chain(&e))?;
    shared
        .runtime
        .start(&replica.id)
        .await
        .map(|_| ())
        .map_err(|e| error_chain(&e))
}

async fn send_reports<R: ContainerRuntime>(
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
            match shared.client.renew_lease(&shared.config.node).await {
                Ok(()) => continue,
                Err(error) => debug!(%error, "lease renewal refused; reporting instead"),
            }
        }
        match shared.client.report(&report).await {
            Ok(()) => last_sent = Some(report),
            Err(error) => warn!(%error, "cannot report to the server; retrying"),
        }
    }
}

/// An error with its sources on one line: the replica's status message must say why.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
