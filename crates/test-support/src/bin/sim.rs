//! `hivemind-sim --server URL --token NODE_TOKEN --nodes N [--name-prefix sim-]`: registers N
//! simulated nodes with a real server and keeps them alive, each fetching its assignment and
//! reporting every replica running (see `hivemind_test_support::sim`), until killed. Benchmarks
//! use it to load the control plane like a cluster of N machines would.

use std::process::ExitCode;
use std::time::Duration;

use hivemind_client::Client;
use hivemind_test_support::sim::{run_node, SimConfig};

const USAGE: &str = "usage: hivemind-sim --server URL --token NODE_TOKEN --nodes N \
[--name-prefix sim-] [--heartbeat-ms 5000]";

struct Args {
    server: String,
    token: String,
    nodes: u32,
    prefix: String,
    heartbeat: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut token = std::env::var("HIVEMIND_TOKEN").ok();
    let mut nodes = None;
    let mut prefix = "sim-".to_string();
    let mut heartbeat = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => server = Some(value()?),
            "--token" => token = Some(value()?),
            "--nodes" => {
                let v = value()?;
                nodes = Some(
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or(format!("--nodes {v:?}: give a count from 1 to 100000"))?,
                );
            }
            "--name-prefix" => prefix = value()?,
            "--heartbeat-ms" => {
                let v = value()?;
                let ms = v
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| (100..=600_000).contains(ms))
                    .ok_or(format!("--heartbeat-ms {v:?}: give 100 to 600000"))?;
                heartbeat = Duration::from_millis(ms);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        server: server.ok_or("--server is required")?,
        token: token.ok_or("--token (or HIVEMIND_TOKEN) is required")?,
        nodes: nodes.ok_or("--nodes is required")?,
        prefix,
        heartbeat,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            if !error.is_empty() {
                eprintln!("error: {error}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let client = Client::new(args.server, args.token);
        let config = SimConfig {
            heartbeat: args.heartbeat,
            ..SimConfig::default()
        };
        let mut tasks = Vec::new();
        for i in 1..=args.nodes {
            let node = format!("{}{i}", args.prefix);
            // Loopback addresses: distinct per node, and never a target outside this machine.
            let address = format!("127.{}.{}.{}", 1 + i / 65_536, (i / 256) % 256, i % 256);
            tasks.push(tokio::spawn(run_node(
                client.clone(),
                node,
                address,
                config.clone(),
            )));
            // Stagger registrations a little so that N first reports do not arrive as one burst.
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        eprintln!("hivemind-sim: {} simulated nodes running", args.nodes);
        let _ = tokio::signal::ctrl_c().await;
        for t in tasks {
            t.abort();
        }
    });
    ExitCode::SUCCESS
}
