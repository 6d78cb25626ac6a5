//! The service controller's executor: reads services, replicas, statuses and nodes, plans, and
//! writes the plan in one transaction.

use std::collections::BTreeMap;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Node, ObservedReplica, Replica, Service};
use serde_json::json;
use tracing::{info, warn};

use crate::exec::runner::BackgroundTask;
use crate::exec::ControlError;
use crate::plan::replicas::plan_replicas;

pub struct ServiceController {
    store: Store,
}

impl ServiceController {
    pub fn new(store: Store) -> ServiceController {
        ServiceController { store }
    }

    async fn run(&self) -> Result<serde_json::Value, ControlError> {
        let services: Vec<Service> = self.store.list(Kind::Service, "").await?;
        let replicas: Vec<Replica> = self.store.list(Kind::Replica, "").await?;
        let nodes: Vec<Node> = self.store.list(Kind::Node, "").await?;
        let statuses: BTreeMap<String, ObservedReplica> = self
            .store
            .list::<ObservedReplica>(Kind::ReplicaStatus, "")
            .await?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let plan = plan_replicas(&services, &replicas, &statuses, &nodes, &mut |name| {
            hivemind_types::id::replica_id(name, 5)
        });
        for (service, missing) in &plan.unschedulable {
            warn!(service, missing, "no ready node to place replicas on");
        }
        if !plan.is_empty() {
            let mut ops = Vec::with_capacity(plan.create.len() + plan.delete.len());
            for r in &plan.create {
                info!(replica = %r.id, node = %r.node, service = %r.service, "placing replica");
                ops.push(Op::put(Kind::Replica, r.id.clone(), r, Expect::Absent));
            }
            for r in &plan.delete {
                info!(replica = %r.id, node = %r.node, service = %r.service, "removing replica");
                // Expect the revision we planned from: if anything changed meanwhile, the whole
                // plan is dropped and the next run plans again from fresh state.
                ops.push(Op::delete(
                    Kind::Replica,
                    r.id.clone(),
                    Expect::Revision(r.meta.revision),
                ));
            }
            self.store.txn(ops).await?;
        }
        Ok(json!({
            "services": services.len(),
            "created": plan.create.len(),
            "deleted": plan.delete.len(),
            "unschedulable": plan.unschedulable,
        }))
    }
}

#[async_trait::async_trait]
impl BackgroundTask for ServiceController {
    fn name(&self) -> &'static str {
        "service-controller"
    }

    fn watches(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Service | Kind::Replica | Kind::Node)
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}

/// An error and its sources on one line, for status reports.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
