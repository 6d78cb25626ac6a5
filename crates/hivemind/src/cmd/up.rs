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
use hivemind_agent::AgentConfig;
use hivemind_api::ApiConfig;
use hivemind_client::Client;
use hivemind_runtime::{Containerd, RuntimeConfig};
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
    let (addr, server, handle) = start_server(global, &args.server, shutdown.clone()).await?;
    info!(%addr, elapsed = ?started.elapsed(), "API ready");
    // The in-process agent is a node like any other: its own credential, not the admin token.
    let node = node_name(&args.runtime);
    let joined =
        hivemind_api::tokens::issue_node_credential(&server.store, &server.agent_key, &node, "up")
            .await
            .map_err(|e| anyhow::anyhow!("cannot issue the credential of node {node}: {e}"))?;
    let client = Client::new(format!("http://{addr}"), joined.credential);
    let agent = start_agent(
        global,
        &args.runtime,
        &args.network,
        &args.endpoint,
        (client, joined.agent_secret),
        shutdown.clone(),
    )
    .await?;
    wait_for_signal().await;
    info!("shutting down; containers keep running");
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = agent.await;
        let _ = handle.await;
    })
    .await;
    Ok(())
}

pub(crate) async fn server(global: &GlobalArgs, args: ServerArgs) -> anyhow::Result<()> {
    init_tracing(&args.log);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (addr, _server, handle) = start_server(global, &args, shutdown).await?;
    info!(%addr, "API ready");
    wait_for_signal().await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), handle).await;
    Ok(())
}

pub(crate) async fn agent(global: &GlobalArgs, args: AgentArgs) -> anyhow::Result<()> {
    init_tracing(&args.log);
    let client = crate::config::client(global)?;
    let identity = node_identity(global, client, &node_name(&args.runtime)).await?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let agent = start_agent(
        global,
        &args.runtime,
        &args.network,
        &args.endpoint,
        identity,
        shutdown,
    )
    .await?;
    wait_for_signal().await;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), agent).await;
    Ok(())
}

/// What `up` needs of the server it started to give its agent an identity.
struct StartedServer {
    store: Store,
    agent_key: hivemind_api::tokens::AgentKey,
}

async fn start_server(
    global: &GlobalArgs,
    args: &ServerArgs,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(
    std::net::SocketAddr,
    StartedServer,
    tokio::task::JoinHandle<()>,
)> {
    let data_dir = &global.data_dir;
    private_data_dir(data_dir)?;
    let store = Store::open(&data_dir.join("state.db"))
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let token = hivemind_api::load_or_create_admin_token(data_dir)
        .with_context(|| format!("cannot write the admin token in {}", data_dir.display()))?;
    let agent_key = hivemind_api::tokens::load_or_create_agent_key(data_dir)
        .with_context(|| format!("cannot write the agent key in {}", data_dir.display()))?;
    let secrets_key =
        hivemind_api::secrets::load_or_create_secrets_key(data_dir).with_context(|| {
            format!(
                "cannot read or write the secrets key in {}",
                data_dir.display()
            )
        })?;
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
            retention: hivemind_control::exec::compaction::Retention {
                revisions: args.history_revisions,
                age: args.history_age,
            },
            ..Default::default()
        },
        shutdown.clone(),
    );
    let router = hivemind_api::router(
        store.clone(),
        ApiConfig {
            tokens: vec![token],
            network,
            agent_key: agent_key.clone(),
            secrets_key,
        },
    );
    let mut stop = shutdown;
    let max_connections = args.max_connections;
    let handle = tokio::spawn(async move {
        let signal = async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        };
        let config = hivemind_api::ServeConfig {
            max_connections: max_connections as usize,
            ..Default::default()
        };
        if let Err(error) = hivemind_api::serve_with(listener, router, config, signal).await {
            tracing::error!(%error, "API server failed");
        }
    });
    Ok((addr, StartedServer { store, agent_key }, handle))
}

async fn start_agent(
    global: &GlobalArgs,
    args: &RuntimeArgs,
    network: &NetworkArgs,
    endpoint: &AgentEndpointArgs,
    (client, agent_secret): (Client, String),
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
            token: agent_secret,
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
        volumes: Some(global.data_dir.join("volumes")),
        // Each replica's files get a tmpfs of their own under it; the directory itself holds
        // nothing but mount points.
        secrets_dir: Some(global.data_dir.join("secrets")),
    };
    info!(node = %config.node, "agent starting");
    Ok(tokio::spawn(hivemind_agent::run_agent(
        config, runtime, client, shutdown,
    )))
}

/// The node's credential and agent secret: saved in `{data_dir}/node.credential` (mode 0600) by
/// the first start, which joins with the configured token (a join token from `hivemind token
/// create --role node`, or the admin token).
async fn node_identity(
    global: &GlobalArgs,
    client: Client,
    node: &str,
) -> anyhow::Result<(Client, String)> {
    private_data_dir(&global.data_dir)?;
    let path = global.data_dir.join("node.credential");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut lines = text.lines().map(str::trim);
            match (lines.next(), lines.next()) {
                (Some(credential), Some(secret)) if !credential.is_empty() && !secret.is_empty() => {
                    return Ok((client.with_token(credential), secret.to_string()))
                }
                _ => anyhow::bail!(
                    "{} is not a node credential: remove it, and the node with `hivemind node rm {node}`, then start the agent again to join",
                    path.display()
                ),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let joined = client
        .join(node)
        .await
        .with_context(|| format!("cannot join node {node}: pass a join token with --token"))?;
    write_private(
        &path,
        &format!("{}\n{}\n", joined.credential, joined.agent_secret),
    )
    .with_context(|| format!("cannot save the node credential in {}", path.display()))?;
    info!(%node, "joined");
    Ok((client.with_token(joined.credential), joined.agent_secret))
}

/// Creates the data dir mode 0700, or takes group and other access off it if it has any (data
/// dirs made before were 0755). Why: it holds the store, the secrets and the replicas' logs, and
/// a private directory keeps every file in it private, whatever mode a file got.
fn private_data_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read the data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700)).with_context(
            || {
                format!(
                    "cannot make the data dir {} private (mode 0700): run hivemind as its owner, or pick another with --data-dir",
                    dir.display()
                )
            },
        )?;
    }
    Ok(())
}

/// Writes `text` to a new file at `path` created with mode 0600 (never readable by others, not
/// even for a moment).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
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
        log_rotation: hivemind_logs::files::Rotation {
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use hivemind_api::ApiConfig;
    use hivemind_client::wire::TokenCreateRequest;
    use hivemind_types::TokenRole;

    use super::*;

    #[tokio::test]
    async fn an_agent_joins_once_and_then_uses_its_saved_credential() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in_memory().unwrap();
        let key = hivemind_api::tokens::AgentKey::default();
        let app = hivemind_api::router(
            store,
            ApiConfig {
                tokens: vec!["admin-token-for-test".into()],
                agent_key: key.clone(),
                ..Default::default()
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(hivemind_api::serve(listener, app, std::future::pending()));
        let admin = Client::new(base.clone(), "admin-token-for-test");
        let join = admin
            .create_token(&TokenCreateRequest {
                role: TokenRole::Node,
                ttl_seconds: None,
            })
            .await
            .unwrap();
        let data_dir = dir.path().to_str().unwrap();
        let global =
            crate::cli::Cli::parse_from(["hivemind", "--data-dir", data_dir, "nodes"]).global;

        let (client, secret) = node_identity(&global, Client::new(base.clone(), join.token), "n1")
            .await
            .unwrap();
        assert_eq!(secret, key.secret_for("n1"));
        assert!(client.token().starts_with("hm1.n-n1."));
        let path = dir.path().join("node.credential");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A restart reads the file and never joins again (the join token is not even valid).
        let (again, secret_again) =
            node_identity(&global, Client::new(base.clone(), "hm1.gone.00"), "n1")
                .await
                .unwrap();
        assert_eq!((again.token(), secret_again), (client.token(), secret));
        again
            .report(&hivemind_types::NodeReport {
                node: "n1".into(),
                address: "127.0.0.1".into(),
                agent_url: None,
                generation: 0,
                replicas: Vec::new(),
                problems: Vec::new(),
            })
            .await
            .unwrap();

        std::fs::write(&path, "garbage").unwrap();
        let Err(err) = node_identity(&global, admin, "n1").await else {
            panic!("a garbled credential file was accepted");
        };
        assert!(err.to_string().contains("node rm n1"), "{err}");
    }
}
