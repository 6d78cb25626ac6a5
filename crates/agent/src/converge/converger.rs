//! The converger: one pass plans from the assignment and what the runtime lists
//! (`plan::plan`), spawns the actions (`actions`) and publishes the report; passes run when the
//! assignment changes, a container exits, an action finishes, a back-off expires, or on a
//! [`TICK`].
//!
//! **Invariant (the action race guard):** a pass plans only from a container list taken while
//! no action finished, so a replica whose action just ended is never planned again from a list
//! that predates its result.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hivemind_types::{ExitRecord, NodeReport};
use tracing::{debug, warn};

use super::actions::execute;
use super::health_hook;
use super::plan::{self, Pass};
use super::{error_chain, Shared, State};
use hivemind_runtime::ContainerRuntime;

/// Wakes the converger on every container exit (OOM events mark the replica instead).
pub(super) async fn watch_exits<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
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

/// Runs passes until aborted.
pub(super) async fn converge<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    let mut wake_at: Option<u64> = None;
    loop {
        let sleep_for = match wake_at {
            Some(at) => Duration::from_millis(at.saturating_sub(shared.now_millis())).min(TICK),
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
pub(super) const TICK: Duration = Duration::from_secs(2);

pub(super) async fn converge_once<R: ContainerRuntime>(shared: &Arc<Shared<R>>) -> Option<u64> {
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
        let now = shared.now_millis();
        let mut state = shared.state();
        if state.finished_actions != finished_before {
            continue;
        }
        let State {
            assignment,
            local,
            in_flight,
            health,
            ..
        } = &mut *state;
        let assignment = assignment.as_ref().expect("checked above");
        let restart_at = health_hook::mark_restarts(health, local, assignment, now);
        let mut pass = plan::plan(
            &shared.config.node,
            &assignment.replicas,
            &containers,
            in_flight,
            local,
            now,
        );
        if let Some(at) = restart_at {
            pass.wake_at = Some(pass.wake_at.map_or(at, |w| w.min(at)));
        }
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
        let mut live: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
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
    health_hook::sync(shared, &mut pass.statuses, &containers);
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
        let lines =
            hivemind_logs::recent_lines(config.replica_log_dir(id), ExitRecord::MAX_LINES, since)
                .await;
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
