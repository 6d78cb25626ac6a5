//! The agent's control loop: follow the node's assignment, converge containerd to it, report.
//!
//! Tasks that share one `Shared` state:
//! - the **watcher** (`server`) long-polls the server for the node's whole assignment (with a
//!   generation);
//! - the **converger** (`converger`) runs `plan::plan` whenever the assignment changes, a
//!   container exits, an action finishes or a back-off expires, and spawns the actions
//!   (`actions`: at most `parallelism` at once, never two for one replica);
//! - the **reporter** (`server`) sends the observed state with the applied generation when it
//!   changes, and as a heartbeat;
//! - the leftover sweep (`leftovers`) and image GC (`image_gc`) on timers of their own.
//!
//! The converger reaches the outside through three seams: `runtime::ContainerRuntime`,
//! `dataplane::DataPlane` and `server::ServerLink` (fakes of each in `runtime::fake` and
//! `fake`; the loop's unit tests are in `converge_tests/`).
//!
//! **Invariant:** nothing is removed before the first assignment has arrived, so a restarted
//! agent adopts the containers it finds instead of killing them (live restore, SPEC §6).

mod actions;
mod converger;
pub mod dataplane;
pub mod dataplane_plan;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod health_hook;
pub mod image_gc;
mod leftovers;
pub mod plan;
pub mod server;
mod start_order;
mod volume_sweep;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_client::Client;
use hivemind_types::{Assignment, NodeReport};
use tokio::sync::{watch, Notify, Semaphore};
use tracing::{info_span, Instrument};

use crate::converge::dataplane::{DataPlane, DataPlaneConfig, NodeDataPlane};
use crate::converge::plan::LocalState;
use crate::converge::server::ServerLink;
use hivemind_runtime::{ContainerRuntime, RuntimeConfig};
use hivemind_types::error_chain;
use hivemind_types::now_millis;

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
    /// The node's volume directory (`{data-dir}/volumes`, see `crate::volumes`); `None` keeps
    /// none, and a replica that mounts volumes fails saying so.
    pub volumes: Option<std::path::PathBuf>,
    /// Where each replica's secret and config files get a tmpfs of their own
    /// (`{secrets_dir}/{replica}`); `None` fails replicas that mount any.
    pub secrets_dir: Option<std::path::PathBuf>,
}

struct State {
    assignment: Option<Assignment>,
    local: LocalState,
    in_flight: BTreeSet<String>,
    /// Counts finished actions; see `converge_once`.
    finished_actions: u64,
    /// The replicas whose networking was last checked for leftovers.
    network_live: Option<BTreeSet<String>>,
    /// Health checks of the running replicas (`crate::health`).
    health: crate::health::Monitors,
}

struct Shared<R> {
    config: AgentConfig,
    runtime: R,
    server: Box<dyn ServerLink>,
    clock: Clock,
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

    fn now_millis(&self) -> u64 {
        self.clock.now_millis()
    }
}

impl<R: ContainerRuntime> Shared<R> {
    /// The agent's state before its first pass, and the receiver of its reports.
    fn new(
        config: AgentConfig,
        runtime: R,
        seams: Seams,
    ) -> (Arc<Shared<R>>, watch::Receiver<Option<NodeReport>>) {
        let (report, report_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            permits: Semaphore::new(config.parallelism.max(1)),
            dataplane: seams.dataplane,
            config,
            runtime,
            server: seams.server,
            clock: seams.clock,
            state: Mutex::new(State {
                assignment: None,
                local: LocalState::new(),
                in_flight: BTreeSet::new(),
                finished_actions: 0,
                network_live: None,
                health: Default::default(),
            }),
            wake: Notify::new(),
            report,
        });
        (shared, report_rx)
    }
}

/// Where the agent's Unix-ms timestamps (starts, exits, back-off deadlines) come from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Clock {
    /// The wall clock: the timestamps go into reports and events.
    System,
    /// Tokio's clock, counted from `base_ms` at `start`: under paused time a test steps through
    /// back-offs without sleeping, and the converger's deadlines agree with its timers.
    #[cfg(test)]
    Tokio {
        base_ms: u64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    fn now_millis(&self) -> u64 {
        match self {
            Clock::System => now_millis(),
            #[cfg(test)]
            Clock::Tokio { base_ms, start } => base_ms + start.elapsed().as_millis() as u64,
        }
    }
}

/// What the agent talks to besides the container runtime: the server, the data plane (`None`:
/// replicas get loopback only) and the clock.
pub(crate) struct Seams {
    pub server: Box<dyn ServerLink>,
    pub dataplane: Option<Box<dyn DataPlane>>,
    pub clock: Clock,
}

/// Runs the agent until `shutdown` turns true. Containers keep running after it returns.
pub async fn run_agent<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: R,
    client: Client,
    shutdown: watch::Receiver<bool>,
) {
    let seams = Seams {
        server: Box::new(client),
        dataplane: config
            .network
            .clone()
            .map(|c| Box::new(NodeDataPlane::new(c)) as Box<dyn DataPlane>),
        clock: Clock::System,
    };
    run_with(config, runtime, seams, shutdown).await
}

/// [`run_agent`] with its seams given (`config.network` is not looked at: the data plane is
/// `seams.dataplane`).
pub(crate) async fn run_with<R: ContainerRuntime>(
    config: AgentConfig,
    runtime: R,
    seams: Seams,
    mut shutdown: watch::Receiver<bool>,
) {
    let (shared, report_rx) = Shared::new(config, runtime, seams);
    let span = info_span!("agent", node = %shared.config.node);
    let mut tasks = vec![
        tokio::spawn(server::watch_assignment(shared.clone()).instrument(span.clone())),
        tokio::spawn(converger::watch_exits(shared.clone()).instrument(span.clone())),
        tokio::spawn(server::send_reports(shared.clone(), report_rx).instrument(span.clone())),
        tokio::spawn(converger::converge(shared.clone()).instrument(span.clone())),
    ];
    tasks.push(tokio::spawn(
        leftovers::run(shared.clone()).instrument(span.clone()),
    ));
    if shared.config.volumes.is_some() {
        tasks.push(tokio::spawn(
            volume_sweep::run(shared.clone()).instrument(span.clone()),
        ));
    }
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
    shared.state().health.clear();
    if let Some(dataplane) = &shared.dataplane {
        dataplane.shutdown().await;
    }
}

#[cfg(test)]
#[path = "converge_tests/mod.rs"]
mod tests;
