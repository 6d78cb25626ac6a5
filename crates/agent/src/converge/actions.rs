//! The converger's actions, each spawned on its own task: create (attach the network, create,
//! start), start (a restart), stop (a stopped service: the container is kept) and remove (stop with the replica's signal and grace, remove,
//! detach). Each records its outcome in the agent's per-replica state (failures and their
//! back-off, restarts) and wakes the converger.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, info_span, warn, Instrument};

use super::plan::{failure_delay, Action};
use super::{error_chain, Shared};
use hivemind_runtime::{ContainerRuntime, CreateOptions};

/// Runs `action` (bounded by the parallelism permits, except removals) and records its result.
pub(super) async fn execute<R: ContainerRuntime>(shared: Arc<Shared<R>>, action: Action) {
    let id = action.id().to_string();
    let span = info_span!("replica", replica = %id);
    async {
        // Creates and starts are bounded (they load runc and the disk); removals are not, since
        // they mostly wait out grace periods and must not hold up new replicas.
        let _permit = match &action {
            Action::Remove { .. } | Action::Restart { .. } | Action::Stop { .. } => None,
            _ => match shared.permits.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => return,
            },
        };
        let mut stopped_exit = None;
        let result = match &action {
            Action::Create(replica) => create_replica(&shared, replica).await,
            Action::Restart {
                id,
                signal,
                grace_ms,
            } => shared
                .runtime
                .stop(id, signal, Duration::from_millis(*grace_ms))
                .await
                .map(|code| stopped_exit = Some(code.unwrap_or(137)))
                .map_err(|e| error_chain(&e)),
            Action::Start { id } => start_replica(&shared, id).await,
            Action::Stop {
                id,
                signal,
                grace_ms,
            } => shared
                .runtime
                .stop(id, signal, Duration::from_millis(*grace_ms))
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
                    if let Some(dir) = &shared.config.volumes {
                        crate::volumes::NodeVolumes::new(dir).remove_anonymous(id).await;
                    }
                    if let Err(error) =
                        crate::secrets::remove(shared.config.secrets_dir.as_deref(), id)
                    {
                        warn!(%error, "cannot remove the replica's secrets tmpfs");
                    }
                    if let Some(dataplane) = &shared.dataplane {
                        if let Err(error) = dataplane.detach(id).await {
                            warn!(error = %error_chain(&error), "cannot detach the replica's network");
                        }
                    }
                }
                removed
            }
        };
        let now = shared.now_millis();
        let mut state = shared.state();
        state.in_flight.remove(&id);
        state.finished_actions += 1;
        match result {
            Ok(()) if stopped_exit.is_some() => {
                info!(code = stopped_exit, "unhealthy replica stopped for a restart");
                if let Some(local) = state.local.get_mut(&id) {
                    local.unhealthy = false;
                    local.stopped_exit = stopped_exit;
                }
            }
            Ok(()) => {
                match &action {
                    Action::Create(_) => info!("replica started"),
                    Action::Start { .. } => info!("replica restarted"),
                    Action::Stop { .. } => info!("replica stopped (its service was stopped)"),
                    Action::Remove { .. } => info!("replica removed"),
                    Action::Restart { .. } => {}
                }
                if let Some(local) = state.local.get_mut(&id) {
                    if matches!(action, Action::Start { .. }) && local.exit.is_some() {
                        local.restarts += 1;
                        local.attempts += 1;
                    }
                    local.exit = None;
                    local.stopped_exit = None;
                    local.unhealthy = false;
                    local.oom_killed = false;
                    local.error = None;
                    local.failures = 0;
                    local.next_attempt_at = None;
                    // After a stop nothing runs: no start time to report or back off from.
                    local.started_at = match action {
                        Action::Stop { .. } => None,
                        _ => Some(now),
                    };
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
    let mut options = match &shared.dataplane {
        Some(dataplane) => dataplane
            .attach(replica)
            .await
            .map_err(|e| format!("cannot attach to the node network: {}", error_chain(&e)))?,
        None => CreateOptions::default(),
    };
    options.mounts = prepare_volumes(shared, replica).await?;
    // Two replicas sharing a new volume would both find it empty and both copy the image in,
    // the second over what the first may have written since: copy-ups take turns, and the
    // mounts are prepared again once it is this one's turn.
    let _turn = match options.mounts.iter().any(|m| m.copy_up) {
        true => {
            let turn = COPY_UP_TURN.lock().await;
            options.mounts = prepare_volumes(shared, replica).await?;
            Some(turn)
        }
        false => None,
    };
    let values = shared
        .state()
        .assignment
        .as_ref()
        .map(|a| a.files.clone())
        .unwrap_or_default();
    options.file_binds =
        crate::secrets::prepare(shared.config.secrets_dir.as_deref(), replica, &values)?;
    shared
        .runtime
        .create(replica, &options)
        .await
        .map_err(|e| error_chain(&e))?;
    drop(_turn);
    shared
        .runtime
        .start(&replica.id)
        .await
        .map(|_| ())
        .map_err(|e| error_chain(&e))
}

/// Starts a task for `id`'s existing container. The container names its netns by path, and a
/// host reboot empties `/var/run/netns` while containerd keeps the container: attaching again
/// first is idempotent (the same lease, address and path) and brings the namespace back, where
/// starting alone failed for ever (`namespace path: lstat /var/run/netns/hm-...: no such file`).
async fn start_replica<R: ContainerRuntime>(shared: &Shared<R>, id: &str) -> Result<(), String> {
    if let Some(dataplane) = &shared.dataplane {
        let replica = shared
            .state()
            .assignment
            .as_ref()
            .and_then(|a| a.replicas.iter().find(|r| r.id == id).cloned());
        if let Some(replica) = replica {
            dataplane
                .attach(&replica)
                .await
                .map_err(|e| format!("cannot attach to the node network: {}", error_chain(&e)))?;
        }
    }
    shared
        .runtime
        .start(id)
        .await
        .map(|_| ())
        .map_err(|e| error_chain(&e))
}

/// Held by a create that copies an image's content into a new volume (see `create_replica`).
static COPY_UP_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The replica's volumes and bind mounts, made ready on the node (see `crate::volumes`).
async fn prepare_volumes<R: ContainerRuntime>(
    shared: &Shared<R>,
    replica: &hivemind_types::Replica,
) -> Result<Vec<hivemind_runtime::HostMount>, String> {
    if replica.spec.volumes.is_empty() {
        return Ok(Vec::new());
    }
    let Some(dir) = &shared.config.volumes else {
        return Err("the service mounts volumes, and this agent keeps none (it was started without a volume directory)".to_string());
    };
    crate::volumes::NodeVolumes::new(dir)
        .prepare(replica)
        .await
        .map_err(|e| error_chain(&e))
}
