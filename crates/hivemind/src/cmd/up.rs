//! `up`, `server` and `agent`: the long-running processes.
//!
//! `up` is `server` and `agent` in one process (like `k3s server`). The in-process agent still
//! talks to the API over loopback HTTP through `hivemind-client`, exactly as a remote agent does,
//! so single-node mode exercises the same paths as a cluster.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hivemind_agent::converge::dataplane::DataPlaneConfig;
use hivemind_agent::converge::image_gc::ImageGcPolicy;
use hivemind_agent::runtime::{Containerd, RuntimeConfig};
use hivemind_agent::AgentConfig;
use hivemind_api::ApiConfig;
use hivemind_client::Client;
use hivemind_store::Store;
use tokio::sync::watch;
use tracing::info;

use crate::cli::{
    AgentArgs, AgentEndpointArgs, GlobalArgs, NetworkArgs, RuntimeArgs, ServerArgs, UpArgs,
};

pub(crate) async fn up(global: &GlobalArgs, args: UpArgs) -> anyhow::Result<()> {
    init_tracing(&args.server.log);
    let started = Instant::now();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (addr, token, server) = start_server(global, &args.server, shutdown.clone()).await?;
    info!(%addr, elapsed = ?started.elapsed(), "API ready");
    let client = Client::new(format!("http://{addr}"), token);
    let agent = start_agent(
        global,
        &args.runtime,
        &args.network,
        &args.endpoint,
        client,
        shutdown.clone(),
    )
    .await?;
    wait_for_signal().await;
    info!("shutting down; containers keep running");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = agent.await;
        let _ = server.await;
    })
    .await;
    Ok(())
}

pub(crate) async fn server(global: &GlobalArgs, args: ServerArgs) -> anyhow::Result<()> {
    init_tracing(&args.log);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (addr, _token, server) = start_server(global, &args, shutdown).await?;
    info!(%addr, "API ready");
    wait_for_signal().await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

pub(crate) async fn agent(global: &GlobalArgs, args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(&args.log);
    let client = crate::config::client(global)?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let agent = start_agent(
        global,
        &args.runtime,
        &args.network,
        &args.endpoint,
        client,
        shutdown,
    )
    .await?;
    wait_for_signal().await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    Ok(())
}

async fn start_server(
    global: &GlobalArgs,
    args: &ServerArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, String, tokio::task::JoinHandle<()>)> {
    let data_dir = &global.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let store = Store::open(&data_dir.join("state.db"))
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let token = hivemind_api::load_or_create_admin_token(data_dir)
        .with_context(|| format!("cannot write the admin token in {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}: is another hivemind running? pick another with --api-addr",
                args.api_addr
            )
        })?;
    let addr = listener.local_addr()?;
    let network = hivemind_types::ClusterNetwork::parse(&args.cluster_cidr, &args.service_cidr)
        .map_err(|e| anyhow::anyhow!("{e}: fix --cluster-cidr / --service-cidr"))?;
    let _controllers = hivemind_control::spawn_controllers(
        store.clone(),
        hivemind_control::ControlConfig {
            network,
            ..Default::default()
        },
        shutdown.clone(),
    );
    let router = hivemind_api::router(
        store,
        ApiConfig {
            tokens: vec![token.clone()],
            network,
            agent_token: None,
        },
    );
    let mut stop = shutdown;
    let handle = tokio::spawn(async move {
        let signal = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        if let Err(error) = hivemind_api::serve(listener, router, signal).await {
            tracing::error!(%error, "API server failed");
        }
    });
    Ok((addr, token, handle))
}

async fn start_agent(
    global: &GlobalArgs,
    args: &RuntimeArgs,
    network: &NetworkArgs,
    endpoint: &AgentEndpointArgs,
    client: Client,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let runtime = Containerd::connect(runtime_config(&global.data_dir, args))
        .await
        .with_context(|| {
            format!(
                "cannot reach containerd at {}: start it (`systemctl start containerd`) or pass --containerd-socket",
                args.containerd_socket.display()
            )
        })?;
    let listener = tokio::net::TcpListener::bind(endpoint.agent_addr)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} for the agent endpoint: pick another with --agent-addr",
                endpoint.agent_addr
            )
        })?;
    let agent_url = agent_url(listener.local_addr()?, &args.node_address);
    tokio::spawn(hivemind_agent::serve::serve(
        listener,
        hivemind_agent::serve::ServeConfig {
            token: client.token().to_string(),
            runtime: runtime.config().clone(),
        },
        runtime.clone(),
        shutdown.clone(),
    ));
    let config = AgentConfig {
        node: node_name(args),
        address: args.node_address.clone(),
        parallelism: 8,
        report_interval: Duration::from_secs(5),
        network: Some(DataPlaneConfig {
            bridge: network.bridge.clone(),
            netns_prefix: network.netns_prefix.clone(),
            nft_table: network.nft_table.clone(),
            state_dir: global.data_dir.join("net"),
            dns_port: network.dns_port,
            ingress_bind: network.ingress_bind,
        }),
        agent_url: Some(agent_url),
        image_gc: image_gc_policy(args)?,
        logs: Some(runtime.config().clone()),
    };
    info!(node = %config.node, "agent starting");
    Ok(tokio::spawn(hivemind_agent::run_agent(
        config, runtime, client, shutdown,
    )))
}

/// The image GC policy from the flags; `None` when `--image-gc-high` is 100 (never above).
fn image_gc_policy(args: &RuntimeArgs) -> anyhow::Result<Option<ImageGcPolicy>> {
    if args.image_gc_low > args.image_gc_high {
        anyhow::bail!(
            "--image-gc-low ({}) is above --image-gc-high ({}): pass a low threshold at most the high one",
            args.image_gc_low,
            args.image_gc_high
        );
    }
    if args.image_gc_high == 100 {
        return Ok(None);
    }
    Ok(Some(ImageGcPolicy {
        high_percent: args.image_gc_high,
        low_percent: args.image_gc_low,
        containerd_root: args.containerd_root.clone(),
    }))
}

pub(crate) fn runtime_config(data_dir: &Path, args: &RuntimeArgs) -> RuntimeConfig {
    RuntimeConfig {
        socket: args.containerd_socket.clone(),
        namespace: args.containerd_namespace.clone(),
        log_dir: data_dir.join("logs"),
        log_driver: log_driver_path(),
        log_rotation: hivemind_agent::logs::files::Rotation {
            max_size: args.log_max_size,
            max_files: args.log_max_files,
        },
        run_dir: data_dir.join("run"),
        snapshotter: "overlayfs".to_string(),
    }
}

/// This binary, which is also the log driver (`hivemind log-driver`). A binary replaced while
/// running reads as `PATH (deleted)`; the new file at PATH is used then.
fn log_driver_path() -> std::path::PathBuf {
    match std::env::current_exe() {
        Ok(path) => {
            let text = path.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(live) => std::path::PathBuf::from(live),
                None => path,
            }
        }
        Err(_) => std::path::PathBuf::from("hivemind"),
    }
}

/// The URL the server reaches the agent endpoint at: the bound address, or the node's address
/// when bound to all interfaces.
fn agent_url(bound: std::net::SocketAddr, node_address: &str) -> String {
    if bound.ip().is_unspecified() {
        format!("http://{node_address}:{}", bound.port())
    } else {
        format!("http://{bound}")
    }
}

fn node_name(args: &RuntimeArgs) -> String {
    args.node_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
