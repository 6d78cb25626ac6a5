//! The node liveness executor: marks silent nodes down.

use std::time::Duration;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Node};
use serde_json::json;
use tracing::warn;

use crate::exec::replicas::error_chain;
use crate::exec::runner::BackgroundTask;
use crate::exec::{now_millis, ControlError};
use crate::plan::nodes::plan_node_liveness;

pub struct NodeLivenessController {
    store: Store,
    timeout: Duration,
}

impl NodeLivenessController {
    pub fn new(store: Store, timeout: Duration) -> NodeLivenessController {
        NodeLivenessController { store, timeout }
    }

    fn run(&self) -> Result<serde_json::Value, ControlError> {
        let nodes: Vec<Node> = self.store.list(Kind::Node, "")?;
        let down = plan_node_liveness(&nodes, now_millis(), self.timeout.as_millis() as u64);
        let ops = down
            .iter()
            .map(|n| {
                warn!(node = %n.name, "node stopped reporting; marking it down");
                Op::put(
                    Kind::Node,
                    n.name.clone(),
                    n,
                    Expect::Revision(n.meta.revision),
                )
            })
            .collect();
        self.store.txn(ops)?;
        Ok(json!({ "nodes": nodes.len(), "marked_down": down.len() }))
    }
}

impl BackgroundTask for NodeLivenessController {
    fn name(&self) -> &'static str {
        "node-liveness"
    }

    fn watches(&self, _kind: Kind) -> bool {
        false
    }

    fn period(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().map_err(|e| error_chain(&e))
    }
}
