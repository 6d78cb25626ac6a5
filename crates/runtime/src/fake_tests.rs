//! Tests of the fake runtime itself: the behaviour the converger's tests rely on.

use hivemind_types::{Meta, ServiceSpec};

use super::*;

fn replica(id: &str, pull_policy: PullPolicy) -> Replica {
    let spec = ServiceSpec {
        image: "busybox".into(),
        pull_policy,
        ..Default::default()
    };
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

#[tokio::test]
async fn create_pulls_as_the_policy_says_and_refuses_a_taken_id() {
    let rt = FakeRuntime::new();
    let r = replica("web-a", PullPolicy::Missing);
    rt.create(&r, &CreateOptions::default()).await.unwrap();
    assert_eq!(
        rt.calls_of(Op::Pull, "docker.io/library/busybox:latest")
            .len(),
        1
    );
    let again = rt.create(&r, &CreateOptions::default()).await;
    assert!(matches!(again, Err(RuntimeError::AlreadyExists { .. })));
    let c = rt.container("web-a").unwrap();
    assert_eq!(c.labels[labels::REVISION], r.revision_hash);
    assert_eq!(c.task, None);

    let never = replica("web-b", PullPolicy::Never);
    let rt = FakeRuntime::new();
    let refused = rt.create(&never, &CreateOptions::default()).await;
    assert!(matches!(refused, Err(RuntimeError::ImageNotFound { .. })));
}

#[tokio::test]
async fn scripted_failures_run_out_and_pull_failures_are_registry_errors() {
    let rt = FakeRuntime::new();
    let r = replica("web-a", PullPolicy::Always);
    rt.fail(Op::Pull, "docker.io/library/busybox:latest", Some(1));
    let failed = rt.create(&r, &CreateOptions::default()).await;
    assert!(matches!(failed, Err(RuntimeError::Registry { .. })));
    assert!(rt.container("web-a").is_none());
    rt.create(&r, &CreateOptions::default()).await.unwrap();
    rt.fail(Op::Start, "web-a", None);
    assert!(rt.start("web-a").await.is_err());
    assert!(rt.start("web-a").await.is_err());
    rt.heal(Op::Start, "web-a");
    let pid = rt.start("web-a").await.unwrap();
    assert_eq!(
        rt.start("web-a").await.unwrap(),
        pid,
        "a running task keeps its pid"
    );
}

#[tokio::test]
async fn exits_reach_the_stream_and_stop_reports_the_code() {
    let rt = FakeRuntime::new();
    let mut exits = rt.exits().await.unwrap();
    rt.add_container(&replica("web-a", PullPolicy::Missing), None);
    rt.exit_on_start("web-a", Some(3));
    rt.start("web-a").await.unwrap();
    let exit = exits.recv().await.unwrap();
    assert_eq!(
        (exit.id.as_str(), exit.exit_code, exit.oom),
        ("web-a", 3, false)
    );
    assert_eq!(
        rt.container("web-a").unwrap().task,
        Some(TaskState::Stopped { exit_code: 3 })
    );
    assert_eq!(
        rt.stop("web-a", "SIGTERM", Duration::ZERO).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        rt.stop("web-a", "SIGTERM", Duration::ZERO).await.unwrap(),
        None
    );
    rt.remove("web-a").await.unwrap();
    rt.remove("web-a").await.unwrap();
    assert!(rt.container_ids().is_empty());
}

#[tokio::test]
async fn a_paused_list_returns_the_snapshot_taken_before_the_pause() {
    let rt = FakeRuntime::new();
    let gate = rt.pause(Op::List);
    let listing = tokio::spawn({
        let rt = rt.clone();
        async move { rt.list().await.unwrap() }
    });
    gate.reached().await;
    rt.add_container(&replica("web-a", PullPolicy::Missing), None);
    gate.release();
    assert!(listing.await.unwrap().is_empty());
    assert_eq!(rt.list().await.unwrap().len(), 1);
}
