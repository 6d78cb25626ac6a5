//! Times the service controller writing 0 -> N replica objects of one service over M simulated
//! nodes (Node objects only) in a real SQLite store on disk, then the replacement of the
//! replicas of a tenth of the nodes going Down. Prints figures; run by `benches/replicas.sh`.
//!
//! Usage: scale_bench [REPLICAS] [NODES]   (defaults 100000 1000)

use std::time::Instant;

use hivemind_control::exec::replicas::ServiceController;
use hivemind_control::exec::runner::BackgroundTask;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Meta, Node, NodeState, Replica, Service, ServiceSpec};

fn node(name: String) -> Node {
    Node {
        name,
        address: "127.0.0.1".into(),
        state: NodeState::Ready,
        last_seen: 0,
        subnet: None,
        agent_url: None,
        problems: Vec::new(),
        meta: Meta::default(),
    }
}

/// Runs the controller until a run has nothing to do; returns (runs, largest run's writes,
/// slowest run in ms). Panics on a failed run: the benchmark measures steady progress only.
async fn settle(c: &mut ServiceController) -> (usize, u64, u128) {
    let (mut runs, mut largest, mut slowest) = (0, 0, 0);
    loop {
        let started = Instant::now();
        let summary = c.activate().await.expect("a controller run failed");
        if std::env::var_os("VERBOSE").is_some() {
            eprintln!("{summary}");
        }
        slowest = slowest.max(started.elapsed().as_millis());
        let writes =
            summary["created"].as_u64().unwrap_or(0) + summary["deleted"].as_u64().unwrap_or(0);
        largest = largest.max(writes);
        runs += 1;
        let unfinished = summary["unfinished"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        if writes == 0 && !unfinished {
            return (runs, largest, slowest);
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let replicas: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let nodes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let dir = std::env::temp_dir().join(format!("hivemind-scale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Store::open(&dir.join("state.db")).expect("open store");

    let mut all: Vec<Node> = (0..nodes).map(|i| node(format!("sim-{i:04}"))).collect();
    let ops = all
        .iter()
        .map(|n| Op::put(Kind::Node, n.name.clone(), n, Expect::Any))
        .collect();
    store.txn(ops).await.expect("nodes");
    let service = Service {
        namespace: "default".into(),
        app: "bench".into(),
        name: "web".into(),
        spec: ServiceSpec {
            image: "busybox".into(),
            replicas,
            ..Default::default()
        },
        vip: None,
        meta: Meta::default(),
    };
    let mut c = ServiceController::new(store.clone());
    store
        .txn(vec![Op::put(
            Kind::Service,
            service.key(),
            &service,
            Expect::Any,
        )])
        .await
        .expect("service");

    let started = Instant::now();
    let (runs, largest, slowest) = settle(&mut c).await;
    let elapsed = started.elapsed();
    let written: Vec<Replica> = store.list(Kind::Replica, "").await.expect("list");
    let distinct: std::collections::HashSet<&str> = written.iter().map(|r| r.id.as_str()).collect();
    println!(
        "scale 0 -> {replicas} over {nodes} nodes: {:.2} s ({:.0} replicas/s), {runs} runs, \
         largest {largest} writes, slowest run {slowest} ms, {} distinct ids",
        elapsed.as_secs_f64(),
        f64::from(replicas) / elapsed.as_secs_f64(),
        distinct.len()
    );
    assert_eq!(
        distinct.len(),
        replicas as usize,
        "every replica written once"
    );

    // A tenth of the nodes go Down: their replicas move to the others.
    let down = nodes / 10;
    let ops = all
        .iter_mut()
        .take(down)
        .map(|n| {
            n.state = NodeState::Down;
            Op::put(Kind::Node, n.name.clone(), &*n, Expect::Any)
        })
        .collect();
    store.txn(ops).await.expect("down");
    let started = Instant::now();
    let (runs, largest, slowest) = settle(&mut c).await;
    let elapsed = started.elapsed();
    let stranded = store
        .list::<Replica>(Kind::Replica, "")
        .await
        .expect("list")
        .iter()
        .filter(|r| all[..down].iter().any(|n| n.name == r.node))
        .count();
    println!(
        "{down} of {nodes} nodes down: replaced in {:.2} s, {runs} runs, largest {largest} \
         writes, slowest run {slowest} ms, {stranded} replicas left on down nodes",
        elapsed.as_secs_f64()
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
