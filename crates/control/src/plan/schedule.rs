//! The first scheduler: spread replicas over ready nodes, fewest replicas first.
//!
//! It is deliberately simple and deterministic (ties broken by node name) so plans are testable.
//! The network-aware scheduler of a later issue replaces `pick_node`'s scoring, not its callers.

use std::collections::BTreeMap;

use hivemind_types::{Node, NodeState};

/// Replica counts per schedulable node; the scheduler's view of the cluster during one plan.
#[derive(Debug, Clone, Default)]
pub struct NodeLoad {
    counts: BTreeMap<String, usize>,
}

impl NodeLoad {
    /// Starts from `nodes` (only ready ones are schedulable) and the nodes of existing replicas.
    pub fn new<'a>(nodes: &[Node], replica_nodes: impl IntoIterator<Item = &'a str>) -> NodeLoad {
        let mut counts: BTreeMap<String, usize> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| (n.name.clone(), 0))
            .collect();
        for node in replica_nodes {
            if let Some(count) = counts.get_mut(node) {
                *count += 1;
            }
        }
        NodeLoad { counts }
    }

    pub fn is_schedulable(&self, node: &str) -> bool {
        self.counts.contains_key(node)
    }

    pub fn schedulable_nodes(&self) -> impl Iterator<Item = &str> {
        self.counts.keys().map(String::as_str)
    }

    /// The least-loaded node, preferring nodes not in `avoid` (nodes already running a replica of
    /// the same service), and records the placement. `None` when no node is schedulable.
    pub fn pick_node(&mut self, avoid: &BTreeMap<String, usize>) -> Option<String> {
        let (name, _) = self.counts.iter().min_by_key(|(name, count)| {
            (
                avoid.get(*name).copied().unwrap_or(0),
                **count,
                name.as_str(),
            )
        })?;
        let name = name.clone();
        *self.counts.get_mut(&name).expect("picked from counts") += 1;
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: NodeState) -> Node {
        Node {
            name: name.into(),
            address: "127.0.0.1".into(),
            state,
            last_seen: 0,
            subnet: None,
            agent_url: None,
            problems: Vec::new(),
            meta: Default::default(),
        }
    }

    #[test]
    fn spreads_over_ready_nodes_only() {
        let nodes = [
            node("a", NodeState::Ready),
            node("b", NodeState::Ready),
            node("c", NodeState::Down),
            node("d", NodeState::Drained),
        ];
        let mut load = NodeLoad::new(&nodes, ["a", "a", "c"]);
        let mut same_service = BTreeMap::new();
        let mut picks = Vec::new();
        for _ in 0..3 {
            let n = load.pick_node(&same_service).unwrap();
            *same_service.entry(n.clone()).or_default() += 1;
            picks.push(n);
        }
        // b is empty; then spreading the service wins over a's load from other services.
        assert_eq!(picks, ["b", "a", "b"]);
        assert!(!load.is_schedulable("c"));
    }

    #[test]
    fn no_ready_node_means_no_placement() {
        let mut load = NodeLoad::new(&[node("a", NodeState::Down)], []);
        assert_eq!(load.pick_node(&BTreeMap::new()), None);
    }
}
