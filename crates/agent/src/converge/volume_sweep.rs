//! Removes the data of volumes that are gone: every [`EVERY`], the node's volumes are read
//! from the server, and the data of named volumes not among them (nor mounted by an assigned
//! replica) is removed, as are the anonymous volumes of replicas that are neither assigned nor
//! have a container. Nothing is removed before the first assignment (a restarted agent adopts
//! what runs), when the server cannot be asked, or, for named volumes, while a container that
//! is no longer assigned is still being stopped (its mounts are unknown here).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hivemind_runtime::ContainerRuntime;
use hivemind_types::MountSource;
use tracing::{debug, warn};

use super::Shared;
use crate::volumes::NodeVolumes;

/// Often enough that `rm --volumes` frees the disk within seconds of the replicas going.
const EVERY: Duration = Duration::from_secs(5);

pub(super) async fn run<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    let Some(dir) = shared.config.volumes.clone() else {
        return;
    };
    let volumes = NodeVolumes::new(dir);
    loop {
        tokio::time::sleep(EVERY).await;
        sweep_once(&shared, &volumes).await;
    }
}

async fn sweep_once<R: ContainerRuntime>(shared: &Shared<R>, volumes: &NodeVolumes) {
    // The store's list first: a volume created after it was read belongs to a replica that
    // the assignment read below already holds.
    let stored = match shared.server.node_volumes(&shared.config.node).await {
        Ok(v) => v,
        Err(error) => {
            debug!(%error, "cannot list the node's volumes; not sweeping");
            return;
        }
    };
    let keep: BTreeSet<(String, String)> =
        stored.into_iter().map(|v| (v.namespace, v.name)).collect();
    let (assigned, in_use) = {
        let state = shared.state();
        let Some(assignment) = &state.assignment else {
            return;
        };
        let assigned: BTreeSet<String> = assignment.replicas.iter().map(|r| r.id.clone()).collect();
        let in_use: BTreeSet<(String, String)> = assignment
            .replicas
            .iter()
            .flat_map(|r| {
                r.spec.volumes.iter().filter_map(|m| match &m.source {
                    MountSource::Volume(v) => Some((r.namespace.clone(), v.name.clone())),
                    _ => None,
                })
            })
            .collect();
        (assigned, in_use)
    };
    let containers = match shared.runtime.list().await {
        Ok(c) => c,
        Err(error) => {
            warn!(%error, "cannot list containers; not sweeping volumes");
            return;
        }
    };
    let stopping = containers.iter().any(|c| !assigned.contains(&c.id));
    let mut replicas = assigned;
    replicas.extend(containers.into_iter().map(|c| c.id));
    let removed = volumes
        .sweep((!stopping).then_some(keep), in_use, replicas)
        .await;
    if removed > 0 {
        debug!(removed, "swept volumes");
    }
}
