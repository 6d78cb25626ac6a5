//! The node health executor: marks nodes whose lease expired down and nodes that renew again
//! ready, each with its `Down`/`Ready` event, in one transaction per run.

use std::time::Duration;

use hivemind_store::{Expect, Leases, Op, Store};
use hivemind_types::{Event, Kind, Node, NodeState};
use serde_json::json;
use tracing::{info, warn};

use crate::exec::events::event_ops;
use crate::exec::replicas::error_chain;
use crate::exec::runner::BackgroundTask;
use crate::exec::{now_millis, ControlError};
use crate::plan::nodes::{plan_node_health, Health};

pub struct NodeLivenessController {
    store: Store,
    leases: Leases,
    timeout: Duration,
    started_at: u64,
}

impl NodeLivenessController {
    /// Node health reading the store's lease table (see `hivemind_store::Leases`), which the
    /// API's lease route renews. Nodes not heard from since now get one `timeout` of grace.
    pub fn new(store: Store, timeout: Duration) -> NodeLivenessController {
        NodeLivenessController {
            leases: store.leases().clone(),
            store,
            timeout,
            started_at: now_millis(),
        }
    }

    async fn run(&self) -> Result<serde_json::Value, ControlError> {
        let nodes: Vec<Node> = self.store.list(Kind::Node, "").await?;
        let now = now_millis();
        let health = Health {
            now,
            timeout_ms: self.timeout.as_millis() as u64,
            started_at: self.started_at,
        };
        let changed = plan_node_health(&nodes, |n| self.leases.renewed_at(n), health);
        if changed.is_empty() {
            return Ok(json!({ "nodes": nodes.len(), "changed": 0 }));
        }
        let mut ops = Vec::new();
        let mut events = Vec::new();
        for n in &changed {
            let ready = n.state == NodeState::Ready;
            if ready {
                info!(node = %n.name, "node renewed its lease; marking it ready");
            } else {
                warn!(node = %n.name, "node stopped renewing its lease; marking it down");
            }
            events.push(Event::about_node(&n.name, ready, now));
            ops.push(Op::put(
                Kind::Node,
                n.name.clone(),
                n,
                Expect::Revision(n.meta.revision),
            ));
        }
        ops.extend(event_ops(&self.store, events, now).await?.0);
        self.store.txn(ops).await?;
        Ok(json!({ "nodes": nodes.len(), "changed": changed.len() }))
    }
}

#[async_trait::async_trait]
impl BackgroundTask for NodeLivenessController {
    fn name(&self) -> &'static str {
        "node-liveness"
    }

    /// Node writes are rare (registration, a changed address or problem list, a subnet), and a
    /// newly registered node must turn ready at once, not on the next tick.
    fn watches(&self, kind: Kind) -> bool {
        kind == Kind::Node
    }

    /// Often enough that a node that renews again is ready within a second; a run that
    /// changes nothing reads the node list and writes nothing.
    fn period(&self) -> Duration {
        Duration::from_secs(1)
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}
