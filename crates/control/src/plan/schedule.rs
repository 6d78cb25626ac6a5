//! The first scheduler: spread replicas over ready nodes, fewest replicas first.
//!
//! It is deliberately simple and deterministic (ties broken by node name) so plans are testable.
//! The network-aware scheduler of a later issue replaces `pick_node`'s scoring, not its callers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use hivemind_types::{Node, NodeState};

/// Replica counts per schedulable node; the scheduler's view of the cluster during one plan.
#[derive(Debug, Clone, Default)]
pub struct NodeLoad {
    counts: BTreeMap<String, usize>,
}

impl NodeLoad {
    /// Starts from `nodes` (only ready ones are schedulable) and the nodes of existing replicas.
    pub fn new<'a>(nodes: &[Node], replica_nodes: impl IntoIterator<Item = &'a str>) -> NodeLoad {
        let mut load = NodeLoad::from_counts(nodes, &HashMap::new());
        for node in replica_nodes {
            if let Some(count) = load.counts.get_mut(node) {
                *count += 1;
            }
        }
        load
    }

    /// Starts from `nodes` and the replica count of every node (the service controller's cache
    /// keeps these, so a plan need not walk every replica of the cluster).
    pub fn from_counts(nodes: &[Node], counts: &HashMap<String, usize>) -> NodeLoad {
        let counts = nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| (n.name.clone(), counts.get(&n.name).copied().unwrap_or(0)))
            .collect();
        NodeLoad { counts }
    }

    pub fn is_schedulable(&self, node: &str) -> bool {
        self.counts.contains_key(node)
    }

    pub fn schedulable_nodes(&self) -> impl Iterator<Item = &str> {
        self.counts.keys().map(String::as_str)
    }

    /// A placer for one service whose replicas already sit on nodes as `same_service` counts.
    pub fn placer(&mut self, same_service: &HashMap<String, usize>) -> Placer<'_> {
        let heap = self
            .counts
            .iter()
            .map(|(name, count)| {
                let same = same_service.get(name).copied().unwrap_or(0);
                Reverse((same, *count, name.clone()))
            })
            .collect();
        Placer { load: self, heap }
    }

    /// The least-loaded node, preferring nodes not in `avoid` (nodes already running a replica of
    /// the same service), and records the placement. `None` when no node is schedulable.
    pub fn pick_node(&mut self, avoid: &HashMap<String, usize>) -> Option<String> {
        self.placer(avoid).pick()
    }
}

/// Places the replicas of one service: each pick takes the node with the fewest replicas of
/// this service, then the fewest of all, then the first by name, in O(log nodes). Only the
/// picked node's counts change, so the heap stays ordered without rebuilding.
pub struct Placer<'a> {
    load: &'a mut NodeLoad,
    heap: BinaryHeap<Reverse<(usize, usize, String)>>,
}

impl Placer<'_> {
    pub fn pick(&mut self) -> Option<String> {
        let Reverse((same, count, name)) = self.heap.pop()?;
        if let Some(c) = self.load.counts.get_mut(&name) {
            *c += 1;
        }
        self.heap.push(Reverse((same + 1, count + 1, name.clone())));
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
        let mut placer = load.placer(&HashMap::new());
        let picks: Vec<String> = (0..3).map(|_| placer.pick().unwrap()).collect();
        // b is empty; then spreading the service wins over a's load from other services.
        assert_eq!(picks, ["b", "a", "b"]);
        assert!(!load.is_schedulable("c"));
        // The placer recorded its picks: a second service sees a=3, b=2.
        let mut other = load.placer(&HashMap::new());
        assert_eq!(other.pick().as_deref(), Some("b"));
        assert_eq!(other.pick().as_deref(), Some("a"));
    }

    #[test]
    fn counts_from_the_cache_equal_counts_from_replicas() {
        let nodes = [node("a", NodeState::Ready), node("b", NodeState::Ready)];
        let counts = HashMap::from([("a".to_string(), 2), ("z".to_string(), 7)]);
        let mut from_counts = NodeLoad::from_counts(&nodes, &counts);
        let mut from_replicas = NodeLoad::new(&nodes, ["a", "a", "z"]);
        for _ in 0..4 {
            let same = HashMap::new();
            assert_eq!(from_counts.pick_node(&same), from_replicas.pick_node(&same));
        }
    }

    #[test]
    fn no_ready_node_means_no_placement() {
        let mut load = NodeLoad::new(&[node("a", NodeState::Down)], []);
        assert_eq!(load.pick_node(&HashMap::new()), None);
    }
}
