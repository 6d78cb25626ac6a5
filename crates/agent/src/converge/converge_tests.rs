//! Unit tests of the agent's loop (watcher, converger, actions, reporter) over its fakes:
//! `FakeRuntime`, `FakeDataPlane` and `FakeServer`, with tokio's time paused so that back-offs
//! are stepped through exactly and no test sleeps for real.

use std::time::Duration;

use hivemind_types::{
    Assignment, Meta, NodeNetwork, NodeProblem, NodeReport, ObservedReplica, Replica, ReplicaState,
    RestartCondition, RestartPolicy, ServiceSpec,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::converger::converge_once;
use super::fake::{DataPlaneCall, FakeDataPlane, FakeServer};
use super::*;
use crate::runtime::fake::{Call, FakeRuntime, Op};
use crate::runtime::{labels, TaskState};

/// Unix ms of the agent's clock when a test starts.
const T0: u64 = 1_700_000_000_000;

fn config() -> AgentConfig {
    AgentConfig {
        node: "n1".into(),
        address: "192.0.2.1".into(),
        parallelism: 4,
        report_interval: Duration::from_secs(5),
        network: None,
        agent_url: Some("http://192.0.2.1:7946".into()),
        image_gc: None,
        logs: None,
    }
}

fn spec(image: &str, restart: RestartCondition) -> ServiceSpec {
    ServiceSpec {
        image: image.into(),
        replicas: 1,
        stop_signal: "SIGINT".into(),
        stop_grace_period_ms: 3_000,
        restart: RestartPolicy {
            condition: restart,
            max_attempts: None,
            delay_ms: 0,
        },
        ..Default::default()
    }
}

fn replica_with(id: &str, spec: ServiceSpec) -> Replica {
    Replica {
        id: id.into(),
        namespace: "default".into(),
        app: "hello".into(),
        service: "web".into(),
        node: "n1".into(),
        revision_hash: spec.revision_hash(),
        spec,
        meta: Meta::default(),
    }
}

fn replica(id: &str) -> Replica {
    replica_with(id, spec("busybox", RestartCondition::Always))
}

fn assignment(generation: u64, replicas: &[Replica]) -> Assignment {
    Assignment {
        node: "n1".into(),
        generation,
        replicas: replicas.to_vec(),
        network: NodeNetwork {
            subnet: Some("10.42.1.0/24".into()),
            ..Default::default()
        },
    }
}

fn seams(server: &FakeServer, dataplane: Option<&FakeDataPlane>) -> Seams {
    Seams {
        server: Box::new(server.clone()),
        dataplane: dataplane.map(|d| Box::new(d.clone()) as Box<dyn DataPlane>),
        clock: Clock::Tokio {
            base_ms: T0,
            start: tokio::time::Instant::now(),
        },
    }
}

/// An agent running over fakes (the test keeps a clone of the runtime); dropping it stops the
/// agent.
struct Node {
    server: FakeServer,
    dataplane: FakeDataPlane,
    shutdown: watch::Sender<bool>,
    agent: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts an agent over `runtime` (which may hold containers of an earlier agent), with the
    /// fake data plane.
    fn start(runtime: FakeRuntime) -> Node {
        let server = FakeServer::new();
        let dataplane = FakeDataPlane::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let agent = tokio::spawn(run_with(
            config(),
            runtime,
            seams(&server, Some(&dataplane)),
            shutdown_rx,
        ));
        Node {
            server,
            dataplane,
            shutdown,
            agent: Some(agent),
        }
    }

    async fn report(&self, what: &str, wanted: impl Fn(&NodeReport) -> bool) -> NodeReport {
        self.server.wait_report(what, wanted).await
    }

    /// Waits until every replica of `generation` is reported running.
    async fn running(&self, generation: u64, ids: &[&str]) -> NodeReport {
        self.report(&format!("generation {generation} running {ids:?}"), |r| {
            r.generation == generation
                && r.replicas.len() == ids.len()
                && ids
                    .iter()
                    .all(|id| status(r, id).is_some_and(|s| s.state == ReplicaState::Running))
        })
        .await
    }

    async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(agent) = self.agent.take() {
            agent.await.expect("the agent ends cleanly");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(agent) = self.agent.take() {
            agent.abort();
        }
    }
}

fn status<'a>(report: &'a NodeReport, id: &str) -> Option<&'a ObservedReplica> {
    report.replicas.iter().find(|s| s.id == id)
}

/// Waits (in tokio time) until `done` holds; fails naming `what` after a minute.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within a minute: {what}");
}

fn ops(calls: &[Call]) -> Vec<(Op, String)> {
    calls.iter().map(|c| (c.op, c.target.clone())).collect()
}

/// Milliseconds between consecutive calls.
fn gaps(calls: &[Call]) -> Vec<u128> {
    calls
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn restarted_agent_adopts_running_containers_and_removes_only_unassigned_ones() {
    let runtime = FakeRuntime::new();
    let (a, b, stale) = (replica("web-a"), replica("web-b"), replica("web-old"));
    runtime.add_container(&a, Some(TaskState::Running { pid: 77 }));
    runtime.add_container(&b, Some(TaskState::Running { pid: 78 }));
    runtime.add_container(&stale, Some(TaskState::Running { pid: 79 }));
    let node = Node::start(runtime.clone());

    // Live restore: a minute without an assignment (the server unreachable) removes nothing,
    // and the node still announces itself.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        runtime.changes(),
        [],
        "nothing is touched before an assignment"
    );
    let announced = node
        .server
        .last_report()
        .expect("heartbeats before the assignment");
    assert_eq!((announced.generation, announced.replicas.len()), (0, 0));

    node.server.assign(assignment(5, &[a.clone(), b.clone()]));
    let report = node.running(5, &["web-a", "web-b"]).await;
    assert_eq!(status(&report, "web-a").unwrap().pid, Some(77));
    assert_eq!(status(&report, "web-b").unwrap().pid, Some(78));
    assert_eq!(status(&report, "web-a").unwrap().restarts, 0);
    eventually("the unassigned container is removed", || {
        runtime.container("web-old").is_none()
    })
    .await;
    assert_eq!(
        ops(&runtime.changes()),
        [
            (Op::Stop, "web-old".to_string()),
            (Op::Remove, "web-old".to_string())
        ],
        "the adopted containers are neither created nor restarted"
    );
    // An adopted container the agent never saw assigned stops with the default signal.
    assert_eq!(
        runtime.calls_of(Op::Stop, "web-old")[0].args,
        "SIGTERM 10000ms"
    );
    assert_eq!(
        runtime.container("web-a").unwrap().labels[labels::REVISION],
        a.revision_hash
    );
    node.stop().await;
    assert_eq!(
        runtime.container_ids().into_iter().collect::<Vec<_>>(),
        ["web-a", "web-b"],
        "containers outlive the agent"
    );
}

/// The action race guard: a container list taken before an action finished must not be
/// planned from, else the replica whose create just finished is created again.
#[tokio::test(start_paused = true)]
async fn a_list_that_predates_a_finished_action_is_taken_again() {
    let runtime = FakeRuntime::new();
    let server = FakeServer::new();
    let (shared, report) = Shared::new(config(), runtime.clone(), seams(&server, None));
    let r = replica("web-a");
    shared.state().assignment = Some(assignment(1, std::slice::from_ref(&r)));

    // Pass 1 plans the create; the create is held at its start.
    let create = runtime.pause(Op::Create);
    converge_once(&shared).await;
    create.reached().await;

    // Pass 2 lists while the create is still running (no container yet), and is held there
    // while the create finishes.
    let list = runtime.pause(Op::List);
    let second = tokio::spawn({
        let shared = shared.clone();
        async move { converge_once(&shared).await }
    });
    list.reached().await;
    create.release();
    eventually("the create finished", || {
        shared.state().finished_actions == 1
    })
    .await;
    list.release();
    second.await.unwrap();
    // Whatever pass 2 spawned has run by now.
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(
        runtime.calls_of(Op::Create, "web-a").len(),
        1,
        "created once"
    );
    assert_eq!(
        runtime.calls_of(Op::Start, "web-a").len(),
        1,
        "started once"
    );
    assert_eq!(
        runtime.calls_of(Op::List, "").len(),
        3,
        "pass 1's list, pass 2's stale one and its retake"
    );
    let published = report.borrow().clone().expect("pass 2 published a report");
    assert_eq!(
        status(&published, "web-a").unwrap().state,
        ReplicaState::Running,
        "pass 2 planned from the list taken after the create"
    );
    assert!(shared.state().in_flight.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_exponentially() {
    let runtime = FakeRuntime::new();
    runtime.exit_on_start("web-a", Some(1));
    let node = Node::start(runtime.clone());
    node.server.assign(assignment(1, &[replica("web-a")]));

    eventually("six starts", || {
        runtime.calls_of(Op::Start, "web-a").len() >= 6
    })
    .await;
    let starts = runtime.calls_of(Op::Start, "web-a");
    // The first restart is at once (a killed replica is back at once), then 1, 2, 4, 8 s.
    assert_eq!(gaps(&starts[..6]), [0, 1_000, 2_000, 4_000, 8_000]);

    let report = node
        .report("a crash-loop status", |r| {
            status(r, "web-a").is_some_and(|s| s.message.starts_with("crash-loop"))
        })
        .await;
    let s = status(&report, "web-a").unwrap();
    assert_eq!(s.state, ReplicaState::Restarting);
    assert_eq!(s.exit_code, Some(1));
    assert!(
        s.message
            .starts_with("crash-loop: exited with code 1 (restart in "),
        "{}",
        s.message
    );
    let delays: Vec<Option<u64>> = s.exits.iter().map(|e| e.restart_delay_ms).collect();
    assert!(
        delays.ends_with(&[Some(4_000), Some(8_000), Some(16_000)]),
        "{delays:?}"
    );
    assert!(s.exits.iter().all(|e| e.exit_code == 1 && !e.adopted));

    // Once it stays up, the next run is running and no more starts come.
    runtime.exit_on_start("web-a", None);
    let report = node.running(1, &["web-a"]).await;
    let before = runtime.calls_of(Op::Start, "web-a").len();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(runtime.calls_of(Op::Start, "web-a").len(), before);
    assert!(status(&report, "web-a").unwrap().restarts >= 5);
}

fn attempts(report: &NodeReport) -> Option<u32> {
    status(report, "web-a")?
        .failure
        .as_ref()
        .map(|f| f.attempts)
}

#[tokio::test(start_paused = true)]
async fn failed_starts_back_off_and_clear_once_one_succeeds() {
    let runtime = FakeRuntime::new();
    runtime.fail(Op::Start, "web-a", None);
    let node = Node::start(runtime.clone());
    node.server.assign(assignment(1, &[replica("web-a")]));

    eventually("four start attempts", || {
        runtime.calls_of(Op::Start, "web-a").len() >= 4
    })
    .await;
    let starts = runtime.calls_of(Op::Start, "web-a");
    assert_eq!(gaps(&starts[..4]), [1_000, 2_000, 4_000]);
    assert_eq!(
        runtime.calls_of(Op::Create, "web-a").len(),
        1,
        "the container stays"
    );

    // The report of the pass right after the fourth failure (later ones count down).
    node.report("a failure after four attempts", |r| attempts(r) == Some(4))
        .await;
    let report = node
        .server
        .reports()
        .into_iter()
        .map(|r| r.call)
        .find(|r| attempts(r) == Some(4))
        .unwrap();
    let s = status(&report, "web-a").unwrap();
    assert_eq!(s.state, ReplicaState::Failed);
    assert!(
        s.message.contains("scripted failure") && s.message.contains("(retry in 8s)"),
        "{}",
        s.message
    );
    assert_eq!(s.failure.as_ref().unwrap().retry_in_ms, 8_000);

    runtime.heal(Op::Start, "web-a");
    let report = node.running(1, &["web-a"]).await;
    let s = status(&report, "web-a").unwrap();
    assert_eq!((s.failure.as_ref(), s.restarts), (None, 0));
    assert_eq!(runtime.calls_of(Op::Start, "web-a").len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_retried_with_back_off_and_reported() {
    let runtime = FakeRuntime::new();
    runtime.fail(Op::Pull, "docker.io/library/busybox:latest", Some(2));
    let node = Node::start(runtime.clone());
    node.server.assign(assignment(1, &[replica("web-a")]));

    let report = node
        .report("a pull failure", |r| {
            status(r, "web-a").is_some_and(|s| s.state == ReplicaState::Failed)
        })
        .await;
    let message = &status(&report, "web-a").unwrap().message;
    assert!(
        message.starts_with("cannot pull docker.io/library/busybox:latest"),
        "{message}"
    );
    node.running(1, &["web-a"]).await;
    let creates = runtime.calls_of(Op::Create, "web-a");
    assert_eq!(gaps(&creates), [1_000, 2_000]);
}

#[tokio::test(start_paused = true)]
async fn a_new_revision_replaces_the_replica_after_the_data_plane_moved() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let old = replica("web-a");
    node.server
        .assign(assignment(1, std::slice::from_ref(&old)));
    node.running(1, &["web-a"]).await;

    // The control plane replaces a replica on a revision change: a new id, the old one gone.
    let new = replica_with("web-b", spec("busybox:1.36", RestartCondition::Always));
    assert_ne!(new.revision_hash, old.revision_hash);
    node.server
        .assign(assignment(2, std::slice::from_ref(&new)));
    let report = node.running(2, &["web-b"]).await;
    eventually("the old container is removed", || {
        runtime.container("web-a").is_none()
    })
    .await;

    let created = runtime.container("web-b").unwrap();
    assert_eq!(created.labels[labels::REVISION], new.revision_hash);
    assert_eq!(created.image, "docker.io/library/busybox:1.36");
    let stop = &runtime.calls_of(Op::Stop, "web-a")[0];
    assert_eq!(
        stop.args, "SIGINT 3000ms",
        "the replica's own stop settings"
    );
    let calls = node.dataplane.calls();
    let converged = calls
        .iter()
        .find(|c| c.call == DataPlaneCall::Converge { generation: 2 })
        .expect("the data plane converged to generation 2");
    assert!(
        converged.seq < stop.seq,
        "the data plane drops the old replica before its container stops"
    );
    eventually("the old replica is detached", || {
        node.dataplane
            .calls()
            .iter()
            .any(|c| c.call == DataPlaneCall::Detach { id: "web-a".into() })
    })
    .await;
    let detached = node
        .dataplane
        .calls()
        .into_iter()
        .find(|c| c.call == DataPlaneCall::Detach { id: "web-a".into() })
        .unwrap();
    assert!(detached.seq > runtime.calls_of(Op::Remove, "web-a")[0].seq);
    assert_eq!(
        status(&report, "web-b").unwrap().ip.as_deref(),
        Some("10.42.1.3"),
        "the new replica got the next address"
    );
}

#[tokio::test(start_paused = true)]
async fn replicas_no_longer_assigned_are_stopped_and_removed() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let (a, b) = (
        replica("web-a"),
        replica_with("db-b", {
            let mut s = spec("postgres", RestartCondition::Always);
            s.stop_signal = "SIGQUIT".into();
            s.stop_grace_period_ms = 30_000;
            s
        }),
    );
    node.server.assign(assignment(1, &[a.clone(), b]));
    node.running(1, &["web-a", "db-b"]).await;
    let a_started = runtime.calls_of(Op::Start, "web-a").len();

    node.server.assign(assignment(2, &[a]));
    let report = node.running(2, &["web-a"]).await;
    assert!(status(&report, "db-b").is_none());
    eventually("db-b is removed", || runtime.container("db-b").is_none()).await;
    assert_eq!(
        runtime.calls_of(Op::Stop, "db-b")[0].args,
        "SIGQUIT 30000ms"
    );
    assert_eq!(runtime.calls_of(Op::Remove, "db-b").len(), 1);
    assert_eq!(runtime.calls_of(Op::Start, "web-a").len(), a_started);
    assert!(runtime.calls_of(Op::Stop, "web-a").is_empty());
    assert!(!node.dataplane.attached().contains_key("db-b"));
}

#[tokio::test(start_paused = true)]
async fn the_report_carries_the_node_its_replicas_addresses_and_problems() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let problem = NodeProblem {
        reason: hivemind_types::event::reason::PORT_UNAVAILABLE.to_string(),
        message: "published port 80 (hello/web) is not served: address in use".into(),
    };
    node.dataplane.set_problems(vec![problem.clone()]);
    node.server.assign(assignment(7, &[replica("web-a")]));

    let report = node.running(7, &["web-a"]).await;
    assert_eq!(report.node, "n1");
    assert_eq!(report.address, "192.0.2.1");
    assert_eq!(report.agent_url.as_deref(), Some("http://192.0.2.1:7946"));
    assert_eq!(report.problems, [problem]);
    let s = status(&report, "web-a").unwrap();
    assert_eq!(s.node, "n1");
    assert_eq!(s.ip.as_deref(), Some("10.42.1.2"));
    assert!(s.pid.is_some());
    assert_eq!(s.started_at, Some(T0), "the agent's clock");
    assert_eq!((s.restarts, s.exit_code, s.exits.len()), (0, None, 0));

    // Unchanged, the report is sent once per heartbeat; a failed one is sent again next beat.
    // (The heartbeat's phase is the running report's: 21 s hold four beats, not a fifth at
    // the very end.)
    let count = node.server.reports().len();
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(node.server.reports().len() - count, 4, "beats in 21 s");
    node.server.fail_reports(1);
    let count = node.server.reports().len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        node.server.reports().len() - count,
        1,
        "two beats in 10 s, the first refused"
    );
    assert!(node.server.reports().iter().all(|r| r.call.node == "n1"));
}

#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_reported_and_restarted() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let mut s = spec("busybox", RestartCondition::Always);
    s.resources.memory_limit_bytes = Some(64 << 20);
    node.server
        .assign(assignment(1, &[replica_with("web-a", s)]));
    node.running(1, &["web-a"]).await;

    runtime.exit("web-a", 137, true);
    let report = node
        .report("the OOM exit", |r| {
            status(r, "web-a").is_some_and(|s| s.exits.iter().any(|e| e.oom))
        })
        .await;
    let exit = &status(&report, "web-a").unwrap().exits[0];
    assert_eq!((exit.exit_code, exit.oom, exit.restarts), (137, true, 0));
    let report = node.running(1, &["web-a"]).await;
    assert_eq!(status(&report, "web-a").unwrap().restarts, 1);
    assert_eq!(runtime.calls_of(Op::Start, "web-a").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_watcher_survives_a_failing_server_and_long_polls_after_the_generation() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    node.server.fail_assignments(3);
    node.server.assign(assignment(4, &[replica("web-a")]));
    node.running(4, &["web-a"]).await;
    node.server.assign(assignment(9, &[]));
    node.report("generation 9", |r| {
        r.generation == 9 && r.replicas.is_empty()
    })
    .await;
    let polls = node.server.polls();
    assert_eq!(
        &polls[..4],
        [None, None, None, None],
        "retried from scratch"
    );
    assert!(
        polls.contains(&Some(4)) && polls.contains(&Some(9)),
        "{polls:?}"
    );
    eventually("web-a removed", || runtime.container_ids().is_empty()).await;
}
