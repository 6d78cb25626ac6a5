//! `hivemind-sim --server URL --token NODE_TOKEN --nodes N [--name-prefix sim-]`: joins N
//! simulated nodes to a real server with one join token (`hivemind token create --role node`;
//! each node then uses the credential its join returned) and keeps them alive, each fetching its assignment and
//! reporting every replica running (see `hivemind_test_support::sim`), until killed. Benchmarks
//! use it to load the control plane like a cluster of N machines would.
//!
//! `hivemind-sim --server URL --token ADMIN_TOKEN --probe APP/SERVICE [--rounds 5]`: measures
//! how long one replica of the service stopping, then running again, takes to reach every node
//! that routes to it (see `hivemind_test_support::probe`), and prints p50/p99.

use std::process::ExitCode;
use std::time::Duration;

use hivemind_client::wire::ReplicaFilter;
use hivemind_client::Client;
use hivemind_test_support::probe;
use hivemind_test_support::sim::{run_node, SimConfig};
use hivemind_types::ReplicaState;

const USAGE: &str = "usage: hivemind-sim --server URL --token NODE_TOKEN --nodes N \
[--name-prefix sim-] [--heartbeat-ms 5000]\n       hivemind-sim --server URL --token ADMIN_TOKEN \
--probe APP/SERVICE [--rounds 5]";

struct Args {
    server: String,
    token: String,
    nodes: u32,
    prefix: String,
    heartbeat: Duration,
    /// `app/service` to probe instead of running nodes.
    probe: Option<String>,
    rounds: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut token = std::env::var("HIVEMIND_TOKEN").ok();
    let mut nodes = None;
    let mut prefix = "sim-".to_string();
    let mut heartbeat = Duration::from_secs(5);
    let mut probe = None;
    let mut rounds = 5;
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
            "--probe" => {
                let v = value()?;
                if v.split('/').count() != 2 || v.split('/').any(str::is_empty) {
                    return Err(format!("--probe {v:?}: give APP/SERVICE, e.g. bench/web"));
                }
                probe = Some(v);
            }
            "--rounds" => {
                let v = value()?;
                rounds = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=1_000).contains(n))
                    .ok_or(format!("--rounds {v:?}: give 1 to 1000"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        server: server.ok_or("--server is required")?,
        token: token.ok_or("--token (or HIVEMIND_TOKEN) is required")?,
        nodes: match (&probe, nodes) {
            (Some(_), _) => nodes.unwrap_or(0),
            (None, n) => n.ok_or("--nodes (or --probe) is required")?,
        },
        prefix,
        heartbeat,
        probe,
        rounds,
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
    if let Some(service) = &args.probe {
        let client = Client::new(args.server.clone(), args.token.clone());
        return match runtime.block_on(run_probe(&client, service, args.rounds)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
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

async fn run_probe(client: &Client, service: &str, rounds: u32) -> Result<(), String> {
    let (app, name) = service.split_once('/').unwrap_or((service, ""));
    let nodes = client.nodes().await.map_err(|e| e.to_string())?;
    let views = client
        .replicas(&ReplicaFilter {
            app: Some(app.to_string()),
            service: Some(name.to_string()),
            node: None,
        })
        .await
        .map_err(|e| e.to_string())?;
    let status = views
        .into_iter()
        .filter_map(|v| v.status)
        .find(|s| s.state == ReplicaState::Running && s.ip.is_some())
        .ok_or(format!("{service} has no running replica to probe with"))?;
    let address = nodes
        .iter()
        .find(|n| n.name == status.node)
        .map(|n| n.address.clone())
        .ok_or(format!(
            "the node {} of {} is unknown",
            status.node, status.id
        ))?;
    let names: Vec<String> = nodes.into_iter().map(|n| n.name).collect();
    let mut all = Vec::new();
    let mut missed = 0;
    for i in 1..=rounds {
        for running in [false, true] {
            let r = probe::round(
                client,
                &names,
                service,
                &status,
                &address,
                running,
                Duration::from_secs(30),
            )
            .await?;
            println!(
                "round {i} ({}): {} nodes, p50 {:?}, p99 {:?}, max {:?}, missed {}",
                if running { "runs again" } else { "stops" },
                r.delays.len(),
                probe::percentile(&r.delays, 50),
                probe::percentile(&r.delays, 99),
                r.delays.last().copied().unwrap_or_default(),
                r.missed,
            );
            missed += r.missed;
            all.extend(r.delays);
        }
    }
    all.sort();
    println!(
        "endpoint change to every node: p50 {} ms, p99 {} ms over {} deliveries, {missed} missed (budget p99 250 ms)",
        probe::percentile(&all, 50).as_millis(),
        probe::percentile(&all, 99).as_millis(),
        all.len(),
    );
    Ok(())
}
