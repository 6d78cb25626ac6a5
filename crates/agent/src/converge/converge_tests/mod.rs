//! Unit tests of the agent's loop (watcher, converger, actions, reporter) over its fakes:
//! `FakeRuntime`, `FakeDataPlane` and `FakeServer`, with tokio's time paused so that back-offs
//! are stepped through exactly and no test sleeps for real. This file is the harness (a node
//! over fakes, fixtures, waiting helpers); the tests are grouped by topic in its submodules.

mod backoff;
mod health;
mod lifecycle;
mod report;

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
use hivemind_runtime::fake::{Call, FakeRuntime, Op};
use hivemind_runtime::{labels, TaskState};

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
        volumes: None,
        secrets_dir: None,
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
            window_ms: None,
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
        replica_removes: Vec::new(),
        network: NodeNetwork {
            subnet: Some("10.42.1.0/24".into()),
            ..Default::default()
        },
        delta: false,
        files: Vec::new(),
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
        Node::start_with(runtime, config())
    }

    fn start_with(runtime: FakeRuntime, config: AgentConfig) -> Node {
        let server = FakeServer::new();
        let dataplane = FakeDataPlane::new();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let agent = tokio::spawn(run_with(
            config,
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
