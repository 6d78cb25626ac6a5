//! SPEC acceptance 4, "after an hour idle the store file has not grown (compaction runs)", in
//! seconds: an idle server with heartbeating nodes commits nothing (leases live in memory), and
//! under a steady trickle of writes compaction holds the file to a bounded size. Plus issue 10:
//! the data dir and everything secret in it are private to their owner.
//! No containerd needed: the nodes are simulated (`hivemind_test_support::sim`), as the
//! `hivemind-sim` binary does, against the real `hivemind server` binary.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use hivemind_client::wire::TokenCreateRequest;
use hivemind_client::Client;
use hivemind_control::exec::compaction::{CompactionTask, Retention};
use hivemind_control::exec::runner::BackgroundTask;
use hivemind_store::{Expect, Op, Store};
use hivemind_test_support::server::ServerProcess;
use hivemind_test_support::sim::{run_node, SimConfig};
use hivemind_types::{Kind, NodeState, TokenRole};
use serde_json::json;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hivemind"))
}

/// The store's revision, read as any SQLite reader would (read-only, beside the server).
fn revision(data_dir: &Path) -> u64 {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT value FROM counters WHERE name = 'revision'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .unwrap() as u64
}

/// Size and modification time of the database and its WAL: any commit appends to the WAL and
/// any checkpoint writes the database, so equal figures mean nothing was written.
fn store_files(data_dir: &Path) -> Vec<(String, u64, SystemTime)> {
    ["state.db", "state.db-wal"]
        .iter()
        .map(|name| {
            let meta = std::fs::metadata(data_dir.join(name)).unwrap();
            (name.to_string(), meta.len(), meta.modified().unwrap())
        })
        .collect()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

async fn join_token(admin: &Client) -> String {
    admin
        .create_token(&TokenCreateRequest {
            role: TokenRole::Node,
            ttl_seconds: None,
        })
        .await
        .unwrap()
        .token
}

/// Acceptance 4 (idle): 50 simulated nodes renewing their leases every 200 ms (25 times the
/// agent's rate) for 10 s make no store write at all: the revision, the database and the WAL
/// stay exactly as they were, and a watcher sees no change. Heartbeats used to be writes (the
/// change log grew 127 MB in 27 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_with_heartbeating_nodes_writes_nothing() {
    const NODES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(bin(), dir.path(), &[]);
    let admin = Client::new(server.url(), server.token.clone());
    let joiner = Client::new(server.url(), join_token(&admin).await);
    let config = SimConfig {
        heartbeat: Duration::from_millis(200),
        ..SimConfig::default()
    };
    let nodes: Vec<_> = (1..=NODES)
        .map(|i| {
            tokio::spawn(run_node(
                joiner.clone(),
                format!("idle-{i}"),
                format!("127.0.1.{i}"),
                config.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nodes = admin.nodes().await.unwrap();
        let ready = nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready && n.subnet.is_some())
            .count();
        if ready == NODES {
            break;
        }
        assert!(Instant::now() < deadline, "{ready} of {NODES} nodes ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Registration writes (nodes, subnets, events) settle: wait for 3 s without a change.
    let mut changes = Box::pin(admin.events(None).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(3), changes.next()).await {
        assert!(event.is_some(), "the change stream ended");
        assert!(Instant::now() < deadline, "the store never went quiet");
    }

    let rev0 = revision(&server.data_dir);
    let files0 = store_files(&server.data_dir);
    let quiet = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
    let rev1 = revision(&server.data_dir);
    let files1 = store_files(&server.data_dir);
    assert!(quiet.is_err(), "a change while idle: {:?}", quiet.unwrap());
    assert_eq!(rev1, rev0, "store transactions while idle");
    assert_eq!(files1, files0, "the store files changed while idle");
    // And the nodes were alive all along: the leases were renewed, only not written.
    let ready = admin.nodes().await.unwrap();
    assert!(
        ready.iter().all(|n| n.state == NodeState::Ready),
        "{ready:?}"
    );
    for node in nodes {
        node.abort();
    }
}

/// Acceptance 4 (compaction): the control plane's compaction task, on a real store file, under
/// a steady trickle of single writes (as status reports are), holds the file to a bounded size:
/// after the first rounds set the high mark, later rounds reuse its pages. Without compaction
/// each round adds about 250 KB. The retention is the task's own knob, small so this takes
/// seconds; the server runs the same task with `--history-revisions` (10,000) and `--history-age` (5m) every 30 s.
#[tokio::test]
async fn compaction_bounds_the_store_file_under_a_trickle_of_writes() {
    const RETAINED: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    let mut task = CompactionTask::new(
        store.clone(),
        Retention {
            revisions: RETAINED,
            age: Duration::from_secs(3600),
        },
        CompactionTask::DEFAULT_PERIOD,
    );
    let padding = "x".repeat(1000);
    let mut sizes = Vec::new();
    for round in 0..12 {
        for i in 0..250 {
            let name = format!("n{}", i % 20);
            let node = json!({ "name": name, "round": round, "padding": padding });
            store
                .txn(vec![Op::put(Kind::Node, &name, &node, Expect::Any)])
                .await
                .unwrap();
        }
        let status = task.activate().await.unwrap();
        let current = store.revision().await.unwrap();
        assert_eq!(
            status["compacted"],
            current.saturating_sub(RETAINED),
            "round {round}"
        );
        sizes.push(file_size(&path) + file_size(&dir.path().join("state.db-wal")));
        eprintln!(
            "round {round}: revision {current}, db+wal {} B",
            sizes[round]
        );
    }
    assert!(
        sizes[11] <= sizes[3] + 64 * 1024,
        "the store grew under compaction: {sizes:?}"
    );
    // The history kept is exactly the retention: a watcher from just before it re-lists.
    let mut watch = store.watch(store.revision().await.unwrap() - RETAINED - 1);
    assert!(matches!(
        watch.next().await,
        Some(hivemind_store::WatchEvent::Compacted { .. })
    ));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Issue 10: the server's data dir is 0700 and the store (database, WAL, shared memory), the
/// admin token and the agent key are 0600; an agent's data dir is 0700 and its node credential
/// 0600. They were 0644 in a 0755 directory. A data dir left 0755 by an older version is
/// tightened at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_and_secrets_are_private_to_their_owner() {
    let dir = tempfile::tempdir().unwrap();
    // As an older version left it.
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::set_permissions(
        dir.path().join("data"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let server = ServerProcess::start(bin(), dir.path(), &[]);
    let admin = Client::new(server.url(), server.token.clone());
    let token = join_token(&admin).await;
    let data = &server.data_dir;
    assert_eq!(mode(data), 0o700, "data dir");
    for name in [
        "state.db",
        "state.db-wal",
        "state.db-shm",
        "admin.token",
        "agent.key",
        "secrets.key",
    ] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    // An agent joins (writing its credential) before it needs containerd; a socket that does
    // not exist stops it right after, so no bridge or nftables table is touched.
    let agent_dir = dir.path().join("agent").join("data");
    let out = tokio::process::Command::new(bin())
        .args([
            "agent",
            "--containerd-socket",
            "/nonexistent/containerd.sock",
        ])
        .env("HIVEMIND_SERVER", server.url())
        .env("HIVEMIND_TOKEN", &token)
        .env("HIVEMIND_DATA_DIR", &agent_dir)
        .env("HIVEMIND_NODE_NAME", "perm-1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("the agent stopped on the missing containerd socket")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("containerd"), "{stderr}");
    assert_eq!(mode(&agent_dir), 0o700, "agent data dir");
    assert_eq!(
        mode(&agent_dir.join("node.credential")),
        0o600,
        "node.credential"
    );
}
