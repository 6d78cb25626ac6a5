//! The background-task runner: every controller runs on a timer and whenever an object kind it
//! watches changes, never concurrently with itself, and records its last outcome for the API.
//!
//! Tasks take no input and never retry on their own: the next activation is the retry
//! (STYLE "Controllers"; Omicron's background tasks work this way).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use hivemind_store::{Store, WatchEvent};
use hivemind_types::Kind;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::exec::allocate::AllocatorController;
use crate::exec::compaction::{CompactionTask, Retention};
use crate::exec::endpoints::run_endpoints;
use crate::exec::events::run_events;
use crate::exec::nodes::NodeLivenessController;
use crate::exec::now_millis;
use crate::exec::replicas::ServiceController;
use crate::exec::volumes::VolumeController;
use crate::plan::allocate::ClusterNetwork;

#[async_trait::async_trait]
pub trait BackgroundTask: Send + 'static {
    fn name(&self) -> &'static str;
    /// Whether a change to an object of `kind` should wake the task.
    fn watches(&self, kind: Kind) -> bool;
    /// The timer: the task runs at least this often.
    fn period(&self) -> Duration {
        Duration::from_secs(5)
    }
    /// One run: read, plan, write. Returns a status summary or an error message.
    async fn activate(&mut self) -> Result<serde_json::Value, String>;
}

/// The last outcome of one task, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerStatus {
    pub name: &'static str,
    pub runs: u64,
    /// Unix ms of the last run's end.
    pub last_run: u64,
    pub last_duration_us: u64,
    pub last_result: Result<serde_json::Value, String>,
}

/// Handle to the running controllers.
#[derive(Clone)]
pub struct Controllers {
    statuses: Arc<Mutex<Vec<ControllerStatus>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Controllers {
    pub fn statuses(&self) -> Vec<ControllerStatus> {
        self.statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops every task (also happens when the shutdown signal fires).
    pub fn abort(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Settings of the control plane.
#[derive(Debug, Clone, Copy)]
pub struct ControlConfig {
    /// The address plan node subnets and service VIPs are allocated from.
    pub network: ClusterNetwork,
    /// A node whose lease is not renewed for this long is marked down.
    pub node_timeout: Duration,
    /// How much change history the store keeps (compaction drops the rest).
    pub retention: Retention,
    /// How often compaction runs.
    pub compaction_period: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            network: ClusterNetwork::default(),
            node_timeout: Duration::from_secs(15),
            retention: Retention::DEFAULT,
            compaction_period: CompactionTask::DEFAULT_PERIOD,
        }
    }
}

/// Starts the control plane's controllers on `store` until `shutdown` turns true: the background
/// tasks below, and the endpoints and events controllers, which follow the watch themselves
/// (they work per changed object, so they need the changes, not just a wake-up).
pub fn spawn_controllers(
    store: Store,
    config: ControlConfig,
    shutdown: watch::Receiver<bool>,
) -> Controllers {
    let controllers = Controllers {
        statuses: Arc::default(),
        tasks: Arc::default(),
    };
    let tasks: Vec<Box<dyn BackgroundTask>> = vec![
        Box::new(ServiceController::new(store.clone())),
        Box::new(AllocatorController::new(store.clone(), config.network)),
        Box::new(NodeLivenessController::new(
            store.clone(),
            config.node_timeout,
        )),
        Box::new(CompactionTask::new(
            store.clone(),
            config.retention,
            config.compaction_period,
        )),
        Box::new(VolumeController::new(store.clone())),
    ];
    for (index, task) in tasks.into_iter().enumerate() {
        controllers
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ControllerStatus {
                name: task.name(),
                runs: 0,
                last_run: 0,
                last_duration_us: 0,
                last_result: Ok(serde_json::Value::Null),
            });
        let handle = tokio::spawn(drive(
            task,
            store.clone(),
            shutdown.clone(),
            controllers.statuses.clone(),
            index,
        ));
        controllers
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }
    let events = tokio::spawn(run_events(store.clone(), shutdown.clone()));
    let endpoints = tokio::spawn(run_endpoints(store, shutdown));
    controllers
        .tasks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend([events, endpoints]);
    controllers
}

async fn drive(
    mut task: Box<dyn BackgroundTask>,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
    statuses: Arc<Mutex<Vec<ControllerStatus>>>,
    index: usize,
) {
    let mut feed = watch_from_now(&store).await;
    let mut timer = tokio::time::interval(task.period());
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            changed = feed.next() => match changed {
                Some(WatchEvent::Txn { changes, .. })
                    if changes.iter().any(|c| task.watches(c.kind)) => {}
                Some(WatchEvent::Txn { .. }) => continue,
                // Missed changes are fine: the run reads everything afresh.
                Some(WatchEvent::Compacted { .. }) => feed = watch_from_now(&store).await,
                None => return,
            },
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        // Coalesce a burst of transactions into one run.
        while let Some(Some(event)) = feed.next().now_or_never() {
            if let WatchEvent::Compacted { .. } = event {
                feed = watch_from_now(&store).await;
                break;
            }
        }
        let started = Instant::now();
        let result = task.activate().await;
        let elapsed = started.elapsed();
        match &result {
            Ok(summary) => debug!(task = task.name(), ?elapsed, %summary, "controller ran"),
            Err(error) => {
                warn!(task = task.name(), %error, "controller run failed; next run retries")
            }
        }
        let mut statuses = statuses.lock().unwrap_or_else(|p| p.into_inner());
        let status = &mut statuses[index];
        status.runs += 1;
        status.last_run = now_millis();
        status.last_duration_us = elapsed.as_micros() as u64;
        status.last_result = result;
    }
}

/// A watch of what commits from now on (runs read the current state themselves).
async fn watch_from_now(store: &Store) -> hivemind_store::Watch {
    // The SQLite backend's revision cannot fail; were it to, watching from 0 only costs a
    // replay of the kept history, in bounded pages.
    store.watch(store.revision().await.unwrap_or_default())
}
