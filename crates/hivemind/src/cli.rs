//! Command-line flags. Every path and port is a flag with an `HIVEMIND_*` environment variable,
//! so tests run several instances side by side.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "hivemind",
    version,
    about = "Kubernetes-level features with Docker Compose-level simplicity"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args, Clone)]
pub(crate) struct GlobalArgs {
    /// API server URL.
    #[arg(long, global = true, env = "HIVEMIND_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token; by default read from ~/.hivemind/config or the data dir's admin.token.
    #[arg(long, global = true, env = "HIVEMIND_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// Namespace of the objects to act on.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "HIVEMIND_NAMESPACE",
        default_value = "default"
    )]
    pub(crate) namespace: String,
    /// Output format of lists.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) output: OutputFormat,
    /// Data directory (where `up` keeps its store and admin token).
    #[arg(
        long,
        global = true,
        env = "HIVEMIND_DATA_DIR",
        default_value = "/var/lib/hivemind"
    )]
    pub(crate) data_dir: PathBuf,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a single-node cluster: server and agent in one process.
    Up(UpArgs),
    /// Run the control plane only.
    Server(ServerArgs),
    /// Run a node agent that joins a server.
    Agent(AgentArgs),
    /// Stop this node for good: remove every replica container and the node network (bridge,
    /// namespaces, nftables table). Stop `hivemind up`/`agent` first; the store is kept.
    Down(DownArgs),
    /// Deploy (create or update) an app from a Compose file.
    Deploy(DeployArgs),
    /// List apps.
    Apps,
    /// Remove an app and all its replicas (its volumes stay, unless --volumes).
    Rm(RmArgs),
    /// List services.
    Services(ServicesArgs),
    /// List replicas.
    Ps(PsArgs),
    /// Set replica counts: `hivemind scale web=5 [app/api=2 ...]`.
    Scale(ScaleArgs),
    /// Stop an app's services, or one (`hivemind stop shop/web`): their containers stop and
    /// are kept, and stay stopped (across agent and node restarts) until `hivemind start`.
    Stop(RunStateArgs),
    /// Start services stopped with `hivemind stop` again: `hivemind start shop[/web]`.
    Start(RunStateArgs),
    /// List nodes.
    Nodes,
    /// Manage nodes: `hivemind node rm NAME`.
    Node(NodeArgs),
    /// Join tokens for nodes, and the nodes' credentials: create, list, revoke.
    Token(TokenArgs),
    /// Named volumes: list, create, inspect, remove.
    Volume(crate::cmd::volume::VolumeArgs),
    /// Secrets for services (Compose `external`), encrypted at rest, never shown: create, ls,
    /// inspect, rm.
    Secret(crate::cmd::secret::FileArgs),
    /// Configs for services (Compose `external`): create, ls, inspect, rm.
    Config(crate::cmd::secret::FileArgs),
    /// Manage images in the local containerd.
    Image(ImageArgs),
    /// Registry credentials (Docker's config.json, also read by `docker` and `skopeo`).
    Registry(RegistryArgs),
    /// Print the logs of a service (all its replicas, merged) or of one replica.
    Logs(LogsArgs),
    /// Run a command in a running replica: `hivemind exec web-3f9k2 -- sh -c 'echo hi'`.
    Exec(ExecArgs),
    /// Recorded events: exits with their last lines, OOM kills, back-offs, failed starts, nodes.
    Events(EventsArgs),
    /// The per-container log driver containerd's shim runs (not for use by hand).
    #[command(hide = true)]
    LogDriver(LogDriverArgs),
    /// Print shell completions.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Args, Clone)]
pub(crate) struct ServerArgs {
    /// Address the API listens on.
    #[arg(long, env = "HIVEMIND_API_ADDR", default_value = "127.0.0.1:7070")]
    pub(crate) api_addr: SocketAddr,
    /// Log filter (tracing's EnvFilter syntax).
    #[arg(long, env = "HIVEMIND_LOG", default_value = "info")]
    pub(crate) log: String,
    /// Replica addresses: each node gets a /24 of it.
    #[arg(long, env = "HIVEMIND_CLUSTER_CIDR", default_value = "10.42.0.0/16")]
    pub(crate) cluster_cidr: String,
    /// Service virtual IPs.
    #[arg(long, env = "HIVEMIND_SERVICE_CIDR", default_value = "10.43.0.0/16")]
    pub(crate) service_cidr: String,
    /// Most API connections open at once; past it the longest-idle one is closed (keep it
    /// below the process's open files limit).
    #[arg(long, env = "HIVEMIND_MAX_CONNECTIONS", default_value_t = hivemind_api::connections::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub(crate) max_connections: u64,
    /// Store history kept for watchers (agents, `events --follow`, controllers) to resume
    /// from after a reconnect: at most this many revisions; a watcher further behind lists
    /// again.
    #[arg(long, env = "HIVEMIND_HISTORY_REVISIONS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub(crate) history_revisions: u64,
    /// And no history older than this (`5m`, `1h`).
    #[arg(long, env = "HIVEMIND_HISTORY_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) history_age: std::time::Duration,
}

#[derive(Args, Clone)]
pub(crate) struct RuntimeArgs {
    #[arg(
        long,
        env = "HIVEMIND_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub(crate) containerd_socket: PathBuf,
    #[arg(
        long,
        env = "HIVEMIND_CONTAINERD_NAMESPACE",
        default_value = "hivemind"
    )]
    pub(crate) containerd_namespace: String,
    /// Node name; the hostname by default.
    #[arg(long, env = "HIVEMIND_NODE_NAME")]
    pub(crate) node_name: Option<String>,
    /// Address other nodes and the server reach this node at.
    #[arg(long, env = "HIVEMIND_NODE_ADDRESS", default_value = "127.0.0.1")]
    pub(crate) node_address: String,
    /// Unused images are removed when containerd's disk is fuller than this percent
    /// (100 turns image GC off).
    #[arg(long, env = "HIVEMIND_IMAGE_GC_HIGH", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_high: u8,
    /// Image GC stops once the disk is at most this percent full.
    #[arg(long, env = "HIVEMIND_IMAGE_GC_LOW", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_low: u8,
    /// A directory on the filesystem holding containerd's images (its `root`).
    #[arg(
        long,
        env = "HIVEMIND_CONTAINERD_ROOT",
        default_value = "/var/lib/containerd"
    )]
    pub(crate) containerd_root: PathBuf,
    /// A replica's log file is rotated before it passes this size (`10m`, `500k`); a service's
    /// `logging.options.max-size` overrides it.
    #[arg(long, env = "HIVEMIND_LOG_MAX_SIZE", default_value = "10m", value_parser = parse_log_size)]
    pub(crate) log_max_size: u64,
    /// Log files kept per replica, the one being written included; a service's
    /// `logging.options.max-file` overrides it.
    #[arg(long, env = "HIVEMIND_LOG_MAX_FILES", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) log_max_files: u32,
}

fn parse_log_size(s: &str) -> Result<u64, String> {
    match hivemind_types::compose::parse_size(s) {
        Some(bytes) if bytes >= 1024 => Ok(bytes),
        _ => Err(format!(
            "{s:?} is not a log file size: use a size like 10m, 500k or 1g (at least 1k)"
        )),
    }
}

/// `hivemind log-driver SETTINGS`, as the shim runs it (see `hivemind_logs::driver`).
#[derive(Args)]
pub(crate) struct LogDriverArgs {
    /// `MAX_SIZE:MAX_FILES:DIR`, from the task's `binary://` log URI.
    pub(crate) settings: String,
}

#[derive(Args, Clone)]
pub(crate) struct NetworkArgs {
    /// The node bridge every replica is plugged into.
    #[arg(long, env = "HIVEMIND_BRIDGE", default_value = "hm0")]
    pub(crate) bridge: String,
    /// Prefix of the replicas' network namespaces and host veths; everything with it is ours.
    #[arg(long, env = "HIVEMIND_NETNS_PREFIX", default_value = "hm-")]
    pub(crate) netns_prefix: String,
    /// The nftables table (family inet) holding service VIP and NAT rules.
    #[arg(long, env = "HIVEMIND_NFT_TABLE", default_value = "hivemind")]
    pub(crate) nft_table: String,
    /// Port of the node's DNS server on the bridge address.
    #[arg(long, env = "HIVEMIND_DNS_PORT", default_value_t = 53)]
    pub(crate) dns_port: u16,
    /// Address published ports listen on.
    #[arg(long, env = "HIVEMIND_INGRESS_BIND", default_value = "0.0.0.0")]
    pub(crate) ingress_bind: std::net::IpAddr,
}

#[derive(Args, Clone)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
    #[command(flatten)]
    pub(crate) endpoint: AgentEndpointArgs,
}

/// The agent's own endpoint (logs, exec), which the server proxies to.
#[derive(Args, Clone)]
pub(crate) struct AgentEndpointArgs {
    /// Address the agent endpoint listens on (bearer token: the agent's own token).
    #[arg(long, env = "HIVEMIND_AGENT_ADDR", default_value = "127.0.0.1:7072")]
    pub(crate) agent_addr: SocketAddr,
}

#[derive(Args, Clone)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
    #[command(flatten)]
    pub(crate) endpoint: AgentEndpointArgs,
    #[arg(long, env = "HIVEMIND_LOG", default_value = "info")]
    pub(crate) log: String,
}

#[derive(Args, Clone)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
    #[command(flatten)]
    pub(crate) network: NetworkArgs,
}

#[derive(Args)]
pub(crate) struct DeployArgs {
    /// A Compose file; repeat to merge several, later ones over earlier ones. Without it:
    /// `COMPOSE_FILE`, else compose.yaml (or compose.yml, docker-compose.yaml,
    /// docker-compose.yml) here or in a parent directory, with its compose.override.yaml.
    #[arg(long, short = 'f')]
    pub(crate) file: Vec<PathBuf>,
    /// Variables for interpolation from this file instead of the project's `.env`; repeat to
    /// read several, later ones winning. The process environment wins over all of them.
    #[arg(long = "env-file")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Deploy the services of this profile too; repeat for several (`COMPOSE_PROFILES` adds
    /// a comma-separated list, `*` enables every profile).
    #[arg(long)]
    pub(crate) profile: Vec<String>,
    /// App name; defaults to the file's `name:` or its directory's name.
    #[arg(long)]
    pub(crate) app: Option<String>,
    /// Wait until every replica runs (and is healthy, where it has a health check); exit
    /// non-zero if one fails.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Give up waiting after this long (`90s`, `5m`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// Refuse the file, deploying nothing, if it has keys Hivemind reads but does not honour
    /// (without it they are deployed and printed as warnings).
    #[arg(long)]
    pub(crate) strict: bool,
}

#[derive(Args)]
pub(crate) struct RmArgs {
    pub(crate) app: String,
    /// Also remove the app's named volumes and their data, once its replicas are gone
    /// (external volumes stay).
    #[arg(long)]
    pub(crate) volumes: bool,
}

#[derive(Args)]
pub(crate) struct ServicesArgs {
    #[arg(long)]
    pub(crate) app: Option<String>,
}

#[derive(Args)]
pub(crate) struct PsArgs {
    /// Only replicas of this service (`web` or `app/web`).
    pub(crate) service: Option<String>,
}

#[derive(Args)]
pub(crate) struct LogsArgs {
    /// A service (`web`, `app/web`) or a replica id (`web-3f9k2`).
    pub(crate) target: String,
    /// Keep printing lines as they are written (reconnects if the server restarts).
    #[arg(long, short)]
    pub(crate) follow: bool,
    /// Only the last N lines of each replica (stdout and stderr together); with `--since`,
    /// the last N of those.
    #[arg(long)]
    pub(crate) tail: Option<usize>,
    /// Only lines written since this: a duration (`30s`, `10m`, `2h`), an RFC 3339 time
    /// (`2026-11-27T07:43:22Z`) or Unix seconds.
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// Print each line's timestamp (RFC 3339, UTC, nanoseconds) before it.
    #[arg(long, short)]
    pub(crate) timestamps: bool,
}

#[derive(Args)]
pub(crate) struct ExecArgs {
    /// The replica id (`web-3f9k2`, see `hivemind ps`).
    pub(crate) replica: String,
    /// Forward stdin to the process, and close its stdin at end of input:
    /// `echo hi | hivemind exec -i web-3f9k2 -- cat`.
    #[arg(long, short)]
    pub(crate) interactive: bool,
    /// Give the process a terminal sized like this one (stdin must be a terminal). With `-i`
    /// (`-it`, for a shell) this terminal goes raw: Ctrl-C and Ctrl-D go to the process.
    #[arg(long, short)]
    pub(crate) tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Args)]
pub(crate) struct EventsArgs {
    /// Only events of a service (`web`, `app/web`) or of one replica (`web-3f9k2`).
    pub(crate) target: Option<String>,
    /// Keep printing new events as they are recorded.
    #[arg(long, short)]
    pub(crate) follow: bool,
}

#[derive(Args)]
pub(crate) struct RunStateArgs {
    /// `APP` (every service of it) or `APP/SERVICE`.
    pub(crate) target: String,
}

#[derive(Args)]
pub(crate) struct ScaleArgs {
    /// `SERVICE=N` pairs; SERVICE may be `app/service`.
    #[arg(required = true)]
    pub(crate) targets: Vec<String>,
}

#[derive(Args)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    pub(crate) command: ImageCommand,
    #[command(flatten)]
    pub(crate) runtime: RuntimeArgs,
}

#[derive(Subcommand)]
pub(crate) enum ImageCommand {
    /// Import image tarballs (`docker save` archives or OCI layouts) into this node's containerd.
    Import { files: Vec<PathBuf> },
    /// List images in this node's containerd.
    Ls,
    /// Pull an image from its registry into this node's containerd and print its digest.
    Pull {
        /// Image reference, e.g. `127.0.0.1:5000/web:1` or `busybox:1.36`.
        reference: String,
    },
    /// Remove images from this node's containerd.
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
        /// Remove even while containers use the image.
        #[arg(long, short)]
        force: bool,
    },
    /// The same as `hivemind registry login`.
    Login(LoginArgs),
}

#[derive(Args)]
pub(crate) struct RegistryArgs {
    #[command(subcommand)]
    pub(crate) command: RegistryCommand,
}

#[derive(Subcommand)]
pub(crate) enum RegistryCommand {
    /// Check credentials against a registry and store them in Docker's config.json
    /// ($DOCKER_CONFIG or ~/.docker), where pulls on this node find them.
    Login(LoginArgs),
    /// Forget the stored credentials for a registry.
    Logout {
        /// Registry host[:port], e.g. `127.0.0.1:5001` or `ghcr.io`.
        registry: String,
    },
}

#[derive(Args)]
pub(crate) struct LoginArgs {
    /// Registry host[:port], e.g. `127.0.0.1:5001` or `ghcr.io`.
    pub(crate) registry: String,
    #[arg(long, short)]
    pub(crate) username: String,
    /// Read the password from standard input (the only way: never on the command line).
    #[arg(long, required = true)]
    pub(crate) password_stdin: bool,
}

#[derive(Args)]
pub(crate) struct NodeArgs {
    #[command(subcommand)]
    pub(crate) command: NodeCommand,
}

#[derive(Subcommand)]
pub(crate) enum NodeCommand {
    /// Remove a node and revoke its credential: its agent is refused from then on. To bring
    /// the machine back, join it again (remove its data dir's node.credential first).
    Rm { name: String },
}

#[derive(Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    pub(crate) command: TokenCommand,
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Mint a join token and print it (the only time it is shown). One token joins any number
    /// of nodes: `hivemind agent --token T` on each.
    Create {
        /// What the token is for: `node` (joining nodes) is the only role.
        #[arg(long, value_enum)]
        role: TokenRoleArg,
        /// How long the token joins nodes, e.g. `1h`, `7d`; `0` never expires. Nodes that
        /// joined keep their own credentials when it expires.
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
    /// List join tokens and node credentials (ids only, never secrets).
    Ls,
    /// Revoke a token by id (a node's credential is `n-NODE`; `node rm` also removes the node).
    Rm { id: String },
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub(crate) enum TokenRoleArg {
    Node,
}

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}: give a duration like 30m, 24h or 7d, or 0 for never"))
}

pub(crate) fn print_completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "hivemind", &mut std::io::stdout());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn token_ttls() {
        assert_eq!(parse_ttl("0"), Ok(Duration::ZERO));
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_ttl("soon").unwrap_err().contains("24h"));
        let cli = Cli::try_parse_from(["hivemind", "token", "create", "--role", "node"]).unwrap();
        match cli.command {
            Command::Token(TokenArgs {
                command: TokenCommand::Create { ttl, .. },
            }) => assert_eq!(ttl, Duration::from_secs(86_400)),
            _ => panic!("not token create"),
        }
        assert!(Cli::try_parse_from(["hivemind", "token", "create", "--role", "admin"]).is_err());
    }

    fn server_args(args: &[&str]) -> Result<ServerArgs, String> {
        match Cli::try_parse_from(args)
            .map_err(|e| e.to_string())?
            .command
        {
            Command::Server(a) => Ok(a),
            Command::Up(a) => Ok(a.server),
            _ => Err("not server or up".into()),
        }
    }

    #[test]
    fn history_retention_is_a_flag_of_server_and_up() {
        let kept = |args: &[&str]| server_args(args).map(|a| (a.history_revisions, a.history_age));
        assert_eq!(
            kept(&["hivemind", "server"]),
            Ok((10_000, Duration::from_secs(300)))
        );
        assert_eq!(
            kept(&[
                "hivemind",
                "up",
                "--history-revisions",
                "500",
                "--history-age",
                "1h"
            ]),
            Ok((500, Duration::from_secs(3600)))
        );
        for bad in [
            "--history-revisions=10",
            "--history-revisions=-1",
            "--history-age=soon",
        ] {
            assert!(kept(&["hivemind", "server", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn max_connections_is_a_flag_of_server_and_up() {
        let max = |args: &[&str]| server_args(args).map(|a| a.max_connections);
        assert_eq!(
            max(&["hivemind", "server", "--max-connections", "100"]),
            Ok(100)
        );
        assert_eq!(max(&["hivemind", "up", "--max-connections", "7"]), Ok(7));
        assert_eq!(
            max(&["hivemind", "server"]),
            Ok(hivemind_api::connections::DEFAULT_MAX_CONNECTIONS as u64)
        );
        for bad in ["0", "-1", "1e30", "x"] {
            let flag = format!("--max-connections={bad}");
            let err = max(&["hivemind", "server", &flag]).unwrap_err();
            assert!(err.contains("--max-connections"), "{bad}: {err}");
        }
    }
}
