//! `down`: the opposite of `up` for one node. Stopping `hivemind up` keeps containers running
//! (live restore); `down` is how an operator takes the node apart: every replica container is
//! stopped and removed, then the bridge, the replicas' namespaces and veths and the nftables
//! table go. The store and the admin token stay, so a later `up` finds the apps and rebuilds.

use std::time::Duration;

use anyhow::{bail, Context};
use hivemind_dataplane::net::{recorded_subnet, NetConfig, NodeNet};
use hivemind_runtime::{ContainerRuntime, Containerd};

use crate::cli::{DownArgs, GlobalArgs};
use crate::cmd::up::runtime_config;

pub(crate) async fn down(global: &GlobalArgs, args: DownArgs) -> anyhow::Result<()> {
    // A running agent would put everything back at once.
    if let Ok(client) = crate::config::client(global) {
        if client.healthz().await.is_ok() {
            bail!(
                "hivemind is still running at {}: stop `hivemind up` (or the agent) first, then run `hivemind down`",
                client.base_url()
            );
        }
    }
    let runtime = Containerd::connect(runtime_config(&global.data_dir, &args.runtime))
        .await
        .with_context(|| {
            format!(
                "cannot reach containerd at {}: start it or pass --containerd-socket",
                args.runtime.containerd_socket.display()
            )
        })?;
    let containers = runtime.list().await?;
    let stops = containers.iter().map(|c| {
        let runtime = runtime.clone();
        let id = c.id.clone();
        async move {
            let _ = runtime.stop(&id, "SIGTERM", Duration::from_secs(10)).await;
            runtime.remove(&id).await.map(|()| id)
        }
    });
    let mut removed = 0;
    for result in futures::future::join_all(stops).await {
        let id = result.context("cannot remove a replica container")?;
        tracing::debug!(replica = %id, "removed");
        removed += 1;
    }

    let state_dir = global.data_dir.join("net");
    let network = match recorded_subnet(&state_dir) {
        Some(subnet) => {
            let mut config = NetConfig::new(state_dir);
            config.bridge = args.network.bridge.clone();
            config.netns_prefix = args.network.netns_prefix.clone();
            config.nft_table = args.network.nft_table.clone();
            // Setup is idempotent and gives the handle teardown needs.
            let net = NodeNet::setup(config, subnet).await?;
            net.teardown().await?;
            format!("the node network ({subnet} on {})", args.network.bridge)
        }
        None => "no node network".to_string(),
    };
    println!("removed {removed} replica container(s) and {network}");
    Ok(())
}
