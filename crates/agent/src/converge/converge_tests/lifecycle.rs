//! Adoption after restart (live restore), the action race guard, replacement on a new
//! revision and removal of replicas no longer assigned.

use std::time::Duration;

use super::*;

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

/// Creates and starts share the `parallelism` permits (they load runc and the disk); removals
/// do not wait for them, as they mostly wait out grace periods.
#[tokio::test(start_paused = true)]
async fn creates_are_bounded_by_parallelism_and_removals_are_not() {
    let runtime = FakeRuntime::new();
    runtime.add_container(&replica("web-old"), Some(TaskState::Running { pid: 5 }));
    let creates = runtime.hold(Op::Create);
    let config = AgentConfig {
        parallelism: 2,
        ..config()
    };
    let node = Node::start_with(runtime.clone(), config);
    let ids = ["web-a", "web-b", "web-c", "web-d"];
    node.server.assign(assignment(1, &ids.map(replica)));

    eventually("two creates held", || creates.waiting() == 2).await;
    eventually("the unassigned container removed meanwhile", || {
        runtime.container("web-old").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        creates.waiting(),
        2,
        "no third create while two hold the permits"
    );
    let created = |rt: &FakeRuntime| rt.changes().iter().filter(|c| c.op == Op::Create).count();
    assert_eq!(created(&runtime), 2);

    creates.release();
    node.running(1, &ids).await;
    assert_eq!(created(&runtime), 4);
}
