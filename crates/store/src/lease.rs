//! Node leases: the cheap heartbeat. An agent renews its node's lease every few seconds
//! (`PUT /api/v1/nodes/{node}/lease`); only node health reads the table, to mark nodes down when
//! their lease expires and ready when it is renewed again.
//!
//! A renewal writes nothing to the store: the table lives in the server process's memory, so
//! idle nodes cost no transaction, fsync or watch event. A restarted server starts with an empty
//! table and gives every node one timeout to renew (see `hivemind_control::plan::nodes`). It lives beside the store because it is cluster state
//! that, like the store, every server process must share: with the etcd backend the
//! table becomes etcd leases (`LeaseGrant` with a TTL, `LeaseKeepAlive` per node, the node's
//! liveness key attached to it), so that every server process sees the same expiries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The last renewal (Unix ms) of each node's lease. Cheap to clone; clones share the table.
#[derive(Debug, Clone, Default)]
pub struct Leases {
    renewed: Arc<Mutex<HashMap<String, u64>>>,
}

impl Leases {
    pub fn new() -> Leases {
        Leases::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        // Only plain inserts and reads happen under the lock: a poisoned table is still whole.
        self.renewed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a renewal of `node`'s lease at `now_ms`. A clock that steps back never moves a
    /// renewal back in time.
    pub fn renew(&self, node: &str, now_ms: u64) {
        let mut table = self.table();
        match table.get_mut(node) {
            Some(at) => *at = (*at).max(now_ms),
            None => {
                table.insert(node.to_string(), now_ms);
            }
        }
    }

    /// When `node` last renewed, if this server saw it renew.
    pub fn renewed_at(&self, node: &str) -> Option<u64> {
        self.table().get(node).copied()
    }

    /// Whether this server has seen `node` renew or report (it is registered).
    pub fn knows(&self, node: &str) -> bool {
        self.table().contains_key(node)
    }

    /// Forgets `node` (it was removed).
    pub fn forget(&self, node: &str) {
        self.table().remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_only_move_forward_and_are_shared_by_clones() {
        let leases = Leases::new();
        let other = leases.clone();
        assert_eq!(leases.renewed_at("n1"), None);
        assert!(!leases.knows("n1"));
        leases.renew("n1", 1_000);
        other.renew("n1", 900);
        assert_eq!(other.renewed_at("n1"), Some(1_000));
        assert!(other.knows("n1"));
        leases.forget("n1");
        assert!(!other.knows("n1"));
    }
}
