//! The volume controller's executor: reads the services that mount named volumes, where their
//! replicas are, and the stored volumes; writes `plan::volumes`'s plan in one transaction.
//!
//! It reads replicas only for the services that mount volumes (by the service index), and
//! every replica only while a volume is marked for removal (to know none mounts it), so that
//! a cluster without volumes pays one list of services and one of volumes per run.

use std::collections::BTreeSet;

use hivemind_store::{Expect, Op, Store};
use hivemind_types::volume::volume_key;
use hivemind_types::{Kind, MountSource, Service, Volume};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::exec::runner::BackgroundTask;
use crate::exec::{now_millis, ControlError};
use crate::plan::volumes::{plan_volumes, Wanted};

pub struct VolumeController {
    store: Store,
}

impl VolumeController {
    pub fn new(store: Store) -> VolumeController {
        VolumeController { store }
    }

    async fn run(&self) -> Result<serde_json::Value, ControlError> {
        let services: Vec<Service> = self.store.list(Kind::Service, "").await?;
        let volumes: Vec<Volume> = self.store.list(Kind::Volume, "").await?;
        let mounting: Vec<&Service> = services
            .iter()
            .filter(|s| s.spec.volumes.iter().any(|m| m.named().is_some()))
            .collect();
        if mounting.is_empty() && !volumes.iter().any(|v| v.removing) {
            return Ok(json!({ "volumes": volumes.len() }));
        }
        let mut nodes_of = Vec::with_capacity(mounting.len());
        for s in &mounting {
            let replicas = self
                .store
                .replica_list_by_service(&s.namespace, &s.app, &s.name)
                .await?;
            let mut nodes: Vec<String> = replicas.into_iter().map(|r| r.node).collect();
            nodes.sort();
            nodes.dedup();
            nodes_of.push(nodes);
        }
        let mut wanted = Vec::new();
        for (s, nodes) in mounting.iter().zip(&nodes_of) {
            for v in s.spec.volumes.iter().filter_map(|m| m.named()) {
                wanted.push(Wanted {
                    namespace: &s.namespace,
                    app: &s.app,
                    volume: v,
                    nodes: nodes.iter().map(String::as_str).collect(),
                });
            }
        }
        let in_use = if volumes.iter().any(|v| v.removing) {
            volumes_in_use(&self.store).await?
        } else {
            BTreeSet::new()
        };
        let plan = plan_volumes(&wanted, &volumes, &in_use, now_millis());
        if plan.is_empty() {
            return Ok(json!({ "volumes": volumes.len() }));
        }
        let mut ops = Vec::new();
        for v in &plan.create {
            info!(volume = %v.name, node = %v.node, "creating volume");
            ops.push(Op::put(Kind::Volume, v.key(), v, Expect::Absent));
        }
        for v in &plan.reclaim {
            info!(volume = %v.name, "volume mounted again; no longer removed");
            ops.push(Op::put(
                Kind::Volume,
                v.key(),
                v,
                Expect::Revision(v.meta.revision),
            ));
        }
        for v in &plan.delete {
            info!(volume = %v.name, "removing volume: no replica mounts it any more");
            ops.push(Op::delete(
                Kind::Volume,
                v.key(),
                Expect::Revision(v.meta.revision),
            ));
        }
        self.store.txn(ops).await?;
        Ok(json!({
            "volumes": volumes.len(),
            "created": plan.create.len(),
            "reclaimed": plan.reclaim.len(),
            "deleted": plan.delete.len(),
        }))
    }
}

/// The part of a replica that says which volumes it mounts.
#[derive(Deserialize)]
struct ReplicaMounts {
    namespace: String,
    spec: SpecMounts,
}

#[derive(Deserialize)]
struct SpecMounts {
    #[serde(default)]
    volumes: Vec<hivemind_types::VolumeMount>,
}

/// The keys of the volumes some replica in the store mounts.
pub async fn volumes_in_use(store: &Store) -> Result<BTreeSet<String>, ControlError> {
    let replicas: Vec<ReplicaMounts> = store.list(Kind::Replica, "").await?;
    Ok(replicas
        .iter()
        .flat_map(|r| {
            r.spec.volumes.iter().filter_map(|m| match &m.source {
                MountSource::Volume(v) => Some(volume_key(&r.namespace, &v.name)),
                _ => None,
            })
        })
        .collect())
}

#[async_trait::async_trait]
impl BackgroundTask for VolumeController {
    fn name(&self) -> &'static str {
        "volumes"
    }

    fn watches(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Service | Kind::Replica | Kind::Volume)
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run()
            .await
            .map_err(|e| hivemind_types::error_chain(&e))
    }
}
