//! The converger's side of health checks (`crate::health`): each pass attaches the replicas'
//! health to their statuses and spawns a monitor task for each new run with a check; before
//! planning, unhealthy runs that traffic has left are marked for a restart.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hivemind_runtime::{ContainerInfo, ContainerRuntime};
use hivemind_types::healthcheck::{
    ImageHealthcheck, Probe, ResolvedCheck, IMAGE_HEALTHCHECK_LABEL,
};
use hivemind_types::{Assignment, ObservedReplica, Replica};
use tracing::{info, info_span, warn, Instrument};

use super::plan::LocalState;
use super::Shared;
use crate::health::probe::run_probe;
use crate::health::{Monitors, Outcome, Start};

/// Marks the unhealthy runs that are due a restart in `local`, for the pass about to plan;
/// returns when the next one is due.
pub(super) fn mark_restarts(
    monitors: &mut Monitors,
    local: &mut LocalState,
    assignment: &Assignment,
    now: u64,
) -> Option<u64> {
    let routed = |id: &str| {
        assignment
            .network
            .services
            .iter()
            .any(|s| s.endpoints.iter().any(|e| e.replica == id))
    };
    let (due, next) = monitors.restarts_due(now, routed);
    for id in due {
        info!(replica = %id, "unhealthy and out of traffic: restarting");
        if let Some(l) = local.get_mut(&id) {
            l.unhealthy = true;
        }
    }
    next
}

/// Attaches health to `statuses` and spawns the monitors of new runs.
pub(super) fn sync<R: ContainerRuntime>(
    shared: &Arc<Shared<R>>,
    statuses: &mut [ObservedReplica],
    containers: &[ContainerInfo],
) {
    let now = shared.now_millis();
    let starts = {
        let mut state = shared.state();
        let super::State {
            assignment, health, ..
        } = &mut *state;
        // Built only in a pass that sees a new run: most passes attach health and nothing else.
        let replicas: OnceCell<HashMap<&str, &Replica>> = OnceCell::new();
        let labels: OnceCell<HashMap<&str, &ContainerInfo>> = OnceCell::new();
        let resolve = |id: &str| {
            let replica = replicas
                .get_or_init(|| {
                    assignment
                        .iter()
                        .flat_map(|a| a.replicas.iter())
                        .map(|r| (r.id.as_str(), r))
                        .collect()
                })
                .get(id)?;
            let image = labels
                .get_or_init(|| containers.iter().map(|c| (c.id.as_str(), c)).collect())
                .get(id)
                .and_then(|c| c.labels.get(IMAGE_HEALTHCHECK_LABEL))
                .and_then(
                    |json| match serde_json::from_str::<ImageHealthcheck>(json) {
                        Ok(check) => Some(check),
                        Err(error) => {
                            warn!(replica = %id, %error, "unreadable image healthcheck label");
                            None
                        }
                    },
                );
            ResolvedCheck::resolve(replica.spec.healthcheck.as_ref(), image.as_ref())
        };
        health.sync(statuses, resolve, now)
    };
    for start in starts {
        let (id, pid) = (start.id.clone(), start.pid);
        let span = info_span!("health", replica = %id);
        let task = tokio::spawn(monitor(shared.clone(), start).instrument(span));
        shared
            .state()
            .health
            .set_task(&id, pid, task.abort_handle());
    }
}

/// Runs one run's checks until its entry goes (the run ended or the replica left).
async fn monitor<R: ContainerRuntime>(shared: Arc<Shared<R>>, start: Start) {
    let Start {
        id,
        pid,
        check,
        first_delay,
    } = start;
    let mut delay = first_delay;
    loop {
        tokio::time::sleep(delay).await;
        // Only the node-side probes need the address (an exec runs inside the container).
        let ip = match (&shared.dataplane, &check.probe) {
            (_, Probe::Exec(_)) | (None, _) => None,
            (Some(dataplane), _) => dataplane.ip(&id).await.map(IpAddr::V4),
        };
        let result = run_probe(&shared.runtime, &id, ip, &check).await;
        let outcome = Outcome {
            passed: result.passed,
            output: result.output,
            at: shared.now_millis(),
        };
        let observed = shared.state().health.observe(&id, pid, outcome);
        let Some((changed, next)) = observed else {
            return;
        };
        if changed {
            // A new status is worth a report: the converger publishes it.
            shared.wake.notify_one();
        }
        delay = next;
    }
}
