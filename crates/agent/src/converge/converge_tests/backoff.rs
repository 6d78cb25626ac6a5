//! Restarts and retries: crash-loop back-off, failed starts, pulls and attaches, OOM kills,
//! exits missed by the event stream.

use std::time::Duration;

use super::*;

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

/// containerd restarting ends the event stream; an exit meanwhile reaches no one, and the
/// converger's own timer still finds it.
#[tokio::test(start_paused = true)]
async fn an_exit_missed_while_the_event_stream_was_down_is_still_restarted() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    node.server.assign(assignment(1, &[replica("web-a")]));
    node.running(1, &["web-a"]).await;
    eventually("the agent subscribed", || runtime.exit_streams() == 1).await;

    runtime.end_exit_streams();
    let exited = runtime.elapsed();
    runtime.exit("web-a", 2, false);
    let report = node
        .report("the restart", |r| {
            status(r, "web-a").is_some_and(|s| s.state == ReplicaState::Running && s.restarts == 1)
        })
        .await;
    let starts = runtime.calls_of(Op::Start, "web-a");
    assert_eq!(starts.len(), 2);
    assert!(
        starts[1].at - exited <= crate::converge::converger::TICK,
        "restarted within one tick of the exit"
    );
    assert_eq!(status(&report, "web-a").unwrap().exits[0].exit_code, 2);
    eventually("the agent subscribed again", || runtime.exit_streams() == 1).await;
}

/// A replica that cannot join the node network is not created: the attach is retried with the
/// failure back-off, and the status says why.
#[tokio::test(start_paused = true)]
async fn a_failed_attach_creates_nothing_and_is_retried() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    node.dataplane.fail_attach("web-a", true);
    node.server.assign(assignment(1, &[replica("web-a")]));

    let report = node
        .report("the attach failure", |r| {
            status(r, "web-a").is_some_and(|s| s.state == ReplicaState::Failed)
        })
        .await;
    let message = &status(&report, "web-a").unwrap().message;
    assert!(
        message.starts_with("cannot attach to the node network: "),
        "{message}"
    );
    assert!(runtime.calls_of(Op::Create, "web-a").is_empty());

    node.dataplane.fail_attach("web-a", false);
    let report = node.running(1, &["web-a"]).await;
    assert_eq!(
        status(&report, "web-a").unwrap().ip.as_deref(),
        Some("10.42.1.2")
    );
    let attaches = node
        .dataplane
        .calls()
        .into_iter()
        .filter(|c| c.call == DataPlaneCall::Attach { id: "web-a".into() })
        .count();
    assert!(attaches >= 2, "{attaches} attaches");
    assert_eq!(runtime.calls_of(Op::Create, "web-a").len(), 1);
}

/// A replica whose secret is not in the assignment (removed meanwhile, or an agent without a
/// secrets directory) fails with the reason and is retried; nothing is created for it.
#[tokio::test(start_paused = true)]
async fn a_replica_whose_secret_was_not_delivered_fails_with_the_reason() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let mut r = replica("web-a");
    r.spec.secrets = vec![hivemind_types::secret::FileMount {
        source: "default/shop/db_password".into(),
        external: false,
        target: "/run/secrets/db_password".into(),
        uid: 0,
        gid: 0,
        mode: 0o444,
        digest: "d".into(),
    }];
    node.server.assign(assignment(1, &[r]));
    let report = node
        .report("the secret failure", |r| {
            status(r, "web-a").is_some_and(|s| s.state == ReplicaState::Failed)
        })
        .await;
    let message = &status(&report, "web-a").unwrap().message;
    assert!(message.contains("secrets and configs"), "{message}");
    assert!(runtime.calls_of(Op::Create, "web-a").is_empty());
}
