//! Node health: a node whose lease has not been renewed for a while is marked down, and one
//! whose lease is renewed again is marked ready.
//!
//! A node's liveness is the newest of its lease renewal (held in memory, see `lease`), its
//! last full report (`Node::last_seen`) and, for nodes not yet heard from since this server
//! started, the server's start: a restarted server gives every node one timeout to renew
//! before declaring it down. SWIM failure detection (a later issue) will mark nodes down
//! faster. Down nodes get no new replicas (see `schedule`).

use hivemind_types::{Node, NodeState};

/// What node health knows besides the nodes themselves.
#[derive(Debug, Clone, Copy)]
pub struct Health {
    pub now: u64,
    pub timeout_ms: u64,
    /// Unix ms at which this server began watching leases.
    pub started_at: u64,
}

/// The nodes whose state must change at `health.now`, with their new state. `renewed` gives
/// the last lease renewal of a node (Unix ms), if this server saw one.
pub fn plan_node_health(
    nodes: &[Node],
    renewed: impl Fn(&str) -> Option<u64>,
    health: Health,
) -> Vec<Node> {
    let fresh = |t: u64| health.now.saturating_sub(t) <= health.timeout_ms;
    nodes
        .iter()
        .filter_map(|n| {
            let heard = renewed(&n.name).unwrap_or(0).max(n.last_seen);
            let state = match n.state {
                NodeState::Ready if !fresh(heard.max(health.started_at)) => NodeState::Down,
                // Only a renewal or report brings a node back, never the start-up grace.
                NodeState::Down if fresh(heard) => NodeState::Ready,
                _ => return None,
            };
            Some(Node { state, ..n.clone() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn node(name: &str, state: NodeState, last_seen: u64) -> Node {
        Node {
            name: name.into(),
            address: String::new(),
            state,
            last_seen,
            subnet: None,
            agent_url: None,
            problems: Vec::new(),
            meta: Default::default(),
        }
    }

    #[test]
    fn table() {
        let health = Health {
            now: 100_000,
            timeout_ms: 15_000,
            started_at: 0,
        };
        // (name, state, last full report, last lease renewal, expected new state)
        let cases = [
            ("reported", NodeState::Ready, 95_000, None, None),
            ("renewed", NodeState::Ready, 10_000, Some(99_000), None),
            (
                "silent",
                NodeState::Ready,
                50_000,
                Some(60_000),
                Some(NodeState::Down),
            ),
            (
                "never-renewed",
                NodeState::Ready,
                50_000,
                None,
                Some(NodeState::Down),
            ),
            ("drained", NodeState::Drained, 0, None, None),
            ("still-down", NodeState::Down, 0, Some(70_000), None),
            (
                "back",
                NodeState::Down,
                0,
                Some(98_000),
                Some(NodeState::Ready),
            ),
            (
                "back-by-report",
                NodeState::Down,
                97_000,
                None,
                Some(NodeState::Ready),
            ),
        ];
        let nodes: Vec<Node> = cases
            .iter()
            .map(|(name, state, seen, ..)| node(name, *state, *seen))
            .collect();
        let leases: HashMap<&str, u64> = cases
            .iter()
            .filter_map(|(name, _, _, lease, _)| Some((*name, (*lease)?)))
            .collect();
        let changed = plan_node_health(&nodes, |n| leases.get(n).copied(), health);
        let got: Vec<(&str, NodeState)> =
            changed.iter().map(|n| (n.name.as_str(), n.state)).collect();
        let want: Vec<(&str, NodeState)> = cases
            .iter()
            .filter_map(|(name, _, _, _, new)| Some((*name, (*new)?)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_restarted_server_gives_nodes_one_timeout_to_renew() {
        let nodes = [node("n1", NodeState::Ready, 1_000)];
        let at = |now| Health {
            now,
            timeout_ms: 15_000,
            started_at: 50_000,
        };
        assert!(plan_node_health(&nodes, |_| None, at(60_000)).is_empty());
        let down = plan_node_health(&nodes, |_| None, at(66_000));
        assert_eq!(down[0].state, NodeState::Down);
        assert!(plan_node_health(&nodes, |_| Some(64_000), at(66_000)).is_empty());
    }
}
