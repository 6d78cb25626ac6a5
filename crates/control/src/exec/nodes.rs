//! The node liveness executor: marks silent nodes down.

use std::time::Duration;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::event::expired_keys;
use hivemind_types::{Event, Kind, Node};
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

    async fn run(&self) -> Result<serde_json::Value, ControlError> {
        let nodes: Vec<Node> = self.store.list(Kind::Node, "").await?;
        let now = now_millis();
        let down = plan_node_liveness(&nodes, now, self.timeout.as_millis() as u64);
        let mut ops: Vec<Op> = down
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
        if !down.is_empty() {
            ops.extend(down_events(&self.store, &down, now).await?);
        }
        self.store.txn(ops).await?;
        Ok(json!({ "nodes": nodes.len(), "marked_down": down.len() }))
    }
}

/// A `Down` event per node, with the pruning that keeps events bounded (the same rule the API
/// applies when it records events from reports).
async fn down_events(store: &Store, down: &[Node], now: u64) -> Result<Vec<Op>, ControlError> {
    let events: Vec<Event> = down
        .iter()
        .map(|n| Event::about_node(&n.name, false, now))
        .collect();
    let keys = store.keys(Kind::Event, "").await?;
    let mut ops: Vec<Op> = expired_keys(&keys, events.len(), now)
        .into_iter()
        .filter(|key| !events.iter().any(|e| e.id == *key))
        .map(|key| Op::delete(Kind::Event, key, Expect::Any))
        .collect();
    ops.extend(
        events
            .iter()
            .map(|e| Op::put(Kind::Event, e.id.clone(), e, Expect::Any)),
    );
    Ok(ops)
}

#[async_trait::async_trait]
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

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}
