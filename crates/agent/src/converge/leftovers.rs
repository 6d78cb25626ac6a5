//! Periodic sweep of what crashed operations left on the node (see
//! `runtime::containerd::leftovers`): once shortly after start, when a crash is most likely to
//! have left something, then every [`EVERY`].

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::Shared;
use hivemind_runtime::ContainerRuntime;

/// Leftovers younger than this stay: a create under way owns its snapshot before its record.
const MIN_AGE: Duration = Duration::from_secs(120);
/// The first sweep waits for containerd and the first converge pass to settle.
const FIRST: Duration = Duration::from_secs(30);
const EVERY: Duration = Duration::from_secs(600);

pub(super) async fn run<R: ContainerRuntime>(shared: Arc<Shared<R>>) {
    tokio::time::sleep(FIRST).await;
    loop {
        if let Err(error) = shared.runtime.sweep_leftovers(MIN_AGE).await {
            warn!(%error, "cannot sweep leftovers; retrying later");
        }
        // Secrets tmpfs of containers that are gone. A create mounts its tmpfs before its
        // container exists, so young ones stay, as for the runtime's own leftovers.
        if let Ok(containers) = shared.runtime.list().await {
            let mut live: std::collections::BTreeSet<String> =
                containers.into_iter().map(|c| c.id).collect();
            live.extend(shared.state().in_flight.iter().cloned());
            crate::secrets::sweep(shared.config.secrets_dir.as_deref(), &live, MIN_AGE);
        }
        tokio::time::sleep(EVERY).await;
    }
}
