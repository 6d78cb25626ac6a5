//! Node liveness: a node whose agent has not reported for a while is marked down.
//!
//! This is the server-side fallback; SWIM failure detection (a later issue) will mark nodes down
//! faster. Down nodes get no new replicas (see `schedule`).

use hivemind_types::{Node, NodeState};

/// The nodes whose state must change to `Down` at `now` (Unix ms) given `timeout_ms`.
pub fn plan_node_liveness(nodes: &[Node], now: u64, timeout_ms: u64) -> Vec<Node> {
    nodes
        .iter()
        .filter(|n| n.state == NodeState::Ready && now.saturating_sub(n.last_seen) > timeout_ms)
        .map(|n| Node {
            state: NodeState::Down,
            ..n.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
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
    fn only_silent_ready_nodes_go_down() {
        let nodes = [
            node("fresh", NodeState::Ready, 95_000),
            node("silent", NodeState::Ready, 50_000),
            node("drained", NodeState::Drained, 0),
            node("down", NodeState::Down, 0),
        ];
        let changed = plan_node_liveness(&nodes, 100_000, 15_000);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].name, "silent");
        assert_eq!(changed[0].state, NodeState::Down);
    }
}
