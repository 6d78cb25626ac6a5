//! Health checks in the loop, over the fake runtime (whose exec always fails): the first report
//! of a running replica already says `starting`, failures below `retries` send nothing, and an
//! unhealthy replica is stopped and started again.

use hivemind_types::healthcheck::{HealthCheck, HealthTest};
use hivemind_types::HealthStatus;

use super::*;

#[tokio::test(start_paused = true)]
async fn an_unhealthy_replica_is_reported_on_change_only_and_restarted() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let mut s = spec("busybox", RestartCondition::Always);
    s.healthcheck = Some(HealthCheck {
        test: HealthTest::Cmd {
            args: vec!["true".into()],
        },
        interval_ms: Some(1_000),
        retries: Some(3),
        ..Default::default()
    });
    node.server
        .assign(assignment(1, &[replica_with("web-a", s)]));

    let first = node
        .report("web-a running", |r| {
            status(r, "web-a").is_some_and(|s| s.state == ReplicaState::Running)
        })
        .await;
    let health = status(&first, "web-a").unwrap().health.clone();
    assert_eq!(health.map(|h| h.status), Some(HealthStatus::Starting));

    eventually("stopped for being unhealthy", || {
        !runtime.calls_of(Op::Stop, "web-a").is_empty()
    })
    .await;
    eventually("started again", || {
        runtime.calls_of(Op::Start, "web-a").len() >= 2
    })
    .await;
    let restarted = node
        .report("restarted and starting over", |r| {
            status(r, "web-a").is_some_and(|s| {
                s.state == ReplicaState::Running
                    && s.restarts == 1
                    && s.health.as_ref().map(|h| h.status) == Some(HealthStatus::Starting)
            })
        })
        .await;
    let s = status(&restarted, "web-a").unwrap();
    assert_eq!(s.exits.len(), 1, "the stop is recorded as an exit");

    let healths: Vec<_> = node
        .server
        .reports()
        .iter()
        .filter_map(|r| status(&r.call, "web-a")?.health.clone())
        .collect();
    // Checks 1 and 2 failed without a report; the third made it unhealthy.
    assert!(
        healths
            .iter()
            .all(|h| h.failing_streak == 0 || h.failing_streak == 3),
        "{healths:?}"
    );
    let unhealthy = healths
        .iter()
        .find(|h| h.status == HealthStatus::Unhealthy)
        .expect("the unhealthy status was reported");
    assert!(
        unhealthy.last_output.contains("runs no processes"),
        "{unhealthy:?}"
    );
    node.stop().await;
}
