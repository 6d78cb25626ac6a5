//! The endpoint-change probe: how long one replica's state change takes to reach every node
//! that routes to its service (issue 9's third cluster figure).
//!
//! The probe holds one assignment long poll per node, as each node's agent does, then makes
//! one replica of the service stop (a report from its node saying it exited) and later run
//! again, and records for each node when its assignment first shows the change: the replica
//! leaving, then rejoining, the service's endpoints. All clocks are this process's, so the
//! figures need no synchronized clocks. Only nodes whose assignment carries the service's
//! endpoints count (the nodes of its app, or all for a public service).

use std::time::{Duration, Instant};

use hivemind_client::Client;
use hivemind_types::{Assignment, NodeReport, ObservedReplica, ReplicaState};
use tokio::task::JoinSet;

/// Whether `assignment` routes `service` (`app/name`) and, if so, whether `replica` is one of
/// its endpoints.
pub fn endpoint_state(assignment: &Assignment, service: &str, replica: &str) -> Option<bool> {
    let s = assignment
        .network
        .services
        .iter()
        .find(|s| format!("{}/{}", s.app, s.name) == service)?;
    Some(s.endpoints.iter().any(|e| e.replica == replica))
}

/// The `p`-th percentile (0-100) of sorted `samples`, nearest rank.
pub fn percentile(sorted: &[Duration], p: u32) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p as usize).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// One round's outcome: per node, the delay until its assignment showed the change.
#[derive(Debug, Default)]
pub struct Round {
    pub delays: Vec<Duration>,
    /// Nodes whose assignment had not shown the change when the round gave up.
    pub missed: usize,
}

/// Makes `status` (a replica of `service`, on its node) exited or running again, and waits
/// until every node in `nodes` that routes the service shows it, up to `timeout`.
pub async fn round(
    client: &Client,
    nodes: &[String],
    service: &str,
    status: &ObservedReplica,
    node_address: &str,
    running: bool,
    timeout: Duration,
) -> Result<Round, String> {
    // Every node's current generation first, so that each poll waits from where it is.
    let mut polls = JoinSet::new();
    for node in nodes {
        let now = client
            .assignment(node, None, Duration::ZERO)
            .await
            .map_err(|e| format!("assignment of {node}: {e}"))?;
        if endpoint_state(&now, service, &status.id).is_none() {
            continue;
        }
        let (client, node, service, replica) = (
            client.clone(),
            node.clone(),
            service.to_string(),
            status.id.clone(),
        );
        polls.spawn(async move {
            // This node's whole assignment, which each answer (a delta) is merged into.
            let mut base = Some(now);
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                match client.assignment_since(&node, &mut base, left).await {
                    Ok(()) => {
                        let a = base.as_ref().expect("assignment_since leaves a base");
                        if endpoint_state(a, &service, &replica) == Some(running) {
                            return Some(Instant::now());
                        }
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            None
        });
    }
    // Let the polls reach the server before the change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed = ObservedReplica {
        state: if running {
            ReplicaState::Running
        } else {
            ReplicaState::Exited
        },
        exit_code: (!running).then_some(0),
        ..status.clone()
    };
    let t0 = Instant::now();
    client
        .report(&NodeReport {
            node: status.node.clone(),
            address: node_address.to_string(),
            agent_url: None,
            generation: 0,
            replicas: vec![changed],
            problems: Vec::new(),
        })
        .await
        .map_err(|e| format!("report of {}: {e}", status.node))?;
    let mut out = Round::default();
    while let Some(seen) = polls.join_next().await {
        match seen {
            Ok(Some(at)) => out.delays.push(at.saturating_duration_since(t0)),
            _ => out.missed += 1,
        }
    }
    out.delays.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms =
            |v: &[u64]| -> Vec<Duration> { v.iter().map(|&m| Duration::from_millis(m)).collect() };
        let samples = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&samples, 50), Duration::from_millis(5));
        assert_eq!(percentile(&samples, 99), Duration::from_millis(10));
        assert_eq!(percentile(&samples, 0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }
}
