//! The hub's memory of which replicas each node has and which left it lately, so that a delta
//! answer names only the replicas that changed since a generation: a node woken by an
//! endpoint change then reads no replica at all, instead of its whole list.
//!
//! Replica values are not kept here (each holds a copy of its service's spec, and there may be
//! 100,000 of them): the hub keeps each replica's last-change revision in its routes, and the
//! answer reads the few changed values by key.

use std::collections::{BTreeSet, HashSet, VecDeque};

/// The most removals remembered per node. Past it, deltas after the oldest forgotten one are
/// answered in full (which is always right, only bigger).
pub(crate) const MAX_GONE: usize = 2_048;

/// What changed in one node's replica set since a generation.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplicaDelta {
    /// Replicas added or changed, by id, in id order.
    pub(crate) changed: Vec<String>,
    /// Replicas that left the node (deleted or moved away), in id order.
    pub(crate) removes: Vec<String>,
}

#[derive(Debug, Default)]
pub(crate) struct NodeReplicas {
    present: HashSet<String>,
    gone: VecDeque<(u64, String)>,
    /// Deltas after an earlier generation cannot be answered.
    covers_from: u64,
}

impl NodeReplicas {
    pub(crate) fn put(&mut self, id: &str) {
        self.present.insert(id.to_string());
    }

    /// `id` left the node at `revision`.
    pub(crate) fn remove(&mut self, revision: u64, id: &str) {
        if !self.present.remove(id) {
            return;
        }
        self.gone.push_back((revision, id.to_string()));
        while self.gone.len() > MAX_GONE {
            if let Some((forgotten, _)) = self.gone.pop_front() {
                self.covers_from = self.covers_from.max(forgotten);
            }
        }
    }

    /// Nothing before `revision` can be told apart any more (the hub relisted).
    pub(crate) fn forget_before(&mut self, revision: u64) {
        self.gone.clear();
        self.covers_from = revision;
    }

    /// What changed after `after`, given each present replica's last-change revision;
    /// `None` when the removals before it were forgotten.
    pub(crate) fn since(
        &self,
        after: u64,
        revision_of: impl Fn(&str) -> Option<u64>,
    ) -> Option<ReplicaDelta> {
        if after < self.covers_from {
            return None;
        }
        let mut changed: Vec<String> = self
            .present
            .iter()
            .filter(|id| revision_of(id).is_some_and(|r| r > after))
            .cloned()
            .collect();
        changed.sort_unstable();
        let start = self.gone.partition_point(|(r, _)| *r <= after);
        let removes: BTreeSet<&String> = self
            .gone
            .range(start..)
            .map(|(_, id)| id)
            .filter(|id| !self.present.contains(*id))
            .collect();
        Some(ReplicaDelta {
            changed,
            removes: removes.into_iter().cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn changes_and_removals_after_a_generation_table() {
        let mut n = NodeReplicas::default();
        let mut revs: HashMap<&str, u64> = HashMap::new();
        for (rev, id) in [(3, "a"), (4, "b"), (6, "c")] {
            n.put(id);
            revs.insert(id, rev);
        }
        n.remove(7, "b");
        revs.remove("b");
        let since = |after| n.since(after, |id| revs.get(id).copied()).unwrap();
        let cases: [(u64, &[&str], &[&str]); 4] = [
            (2, &["a", "c"], &["b"]),
            (4, &["c"], &["b"]),
            (6, &[], &["b"]),
            (7, &[], &[]),
        ];
        for (after, changed, removes) in cases {
            let d = since(after);
            assert_eq!(d.changed, changed, "changed after {after}");
            assert_eq!(d.removes, removes, "removes after {after}");
        }
    }

    #[test]
    fn a_replica_back_on_the_node_is_no_removal() {
        let mut n = NodeReplicas::default();
        n.put("a");
        n.remove(5, "a");
        n.put("a");
        let d = n.since(1, |_| Some(8)).unwrap();
        assert_eq!(d.changed, ["a"]);
        assert!(d.removes.is_empty());
    }

    #[test]
    fn forgotten_removals_make_older_deltas_full() {
        let mut n = NodeReplicas::default();
        for i in 0..=MAX_GONE as u64 {
            let id = format!("r{i}");
            n.put(&id);
            n.remove(10 + i, &id);
        }
        assert!(
            n.since(9, |_| None).is_none(),
            "the first removal is forgotten"
        );
        assert!(n.since(10, |_| None).is_some());
        n.forget_before(5_000);
        assert!(n.since(4_999, |_| None).is_none());
        assert_eq!(n.since(5_000, |_| None), Some(ReplicaDelta::default()));
    }
}
