//! Table tests of the agent's planner: starts, restarts with back-off, removals, live restore.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_types::{
    ExitRecord, Meta, Replica, ReplicaState, RestartCondition, RestartPolicy, ServiceSpec,
};

use super::*;
use hivemind_runtime::{ContainerInfo, TaskState};

pub(super) fn replica(id: &str, restart: RestartCondition) -> Replica {
    let spec = ServiceSpec {
        image: "busybox".into(),
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

pub(super) fn container(id: &str, task: Option<TaskState>) -> ContainerInfo {
    ContainerInfo {
        id: id.into(),
        labels: BTreeMap::new(),
        image: "docker.io/library/busybox:latest".into(),
        task,
    }
}

pub(super) fn run(
    desired: &[Replica],
    containers: &[ContainerInfo],
    local: &mut LocalState,
    now: u64,
) -> Pass {
    plan("n1", desired, containers, &BTreeSet::new(), local, now)
}

#[test]
fn absent_replica_is_created() {
    let r = replica("web-a", RestartCondition::Always);
    let pass = run(std::slice::from_ref(&r), &[], &mut LocalState::new(), 0);
    assert_eq!(pass.actions, [Action::Create(Box::new(r))]);
    assert_eq!(pass.statuses[0].state, ReplicaState::Starting);
}

#[test]
fn adopted_running_container_is_left_alone() {
    let r = replica("web-a", RestartCondition::Always);
    let c = container("web-a", Some(TaskState::Running { pid: 42 }));
    let pass = run(&[r], &[c], &mut LocalState::new(), 0);
    assert!(pass.actions.is_empty());
    assert_eq!(pass.statuses[0].state, ReplicaState::Running);
    assert_eq!(pass.statuses[0].pid, Some(42));
}

#[test]
fn created_but_unstarted_container_is_started() {
    let r = replica("web-a", RestartCondition::Always);
    let pass = run(&[r], &[container("web-a", None)], &mut LocalState::new(), 0);
    assert_eq!(pass.actions, [Action::Start { id: "web-a".into() }]);
}

#[test]
fn undesired_container_is_removed_with_its_stop_settings() {
    let r = replica("web-a", RestartCondition::Always);
    let mut local = LocalState::new();
    let running = [container("web-a", Some(TaskState::Running { pid: 1 }))];
    run(&[r], &running, &mut local, 0);
    let pass = run(&[], &running, &mut local, 10);
    assert_eq!(
        pass.actions,
        [Action::Remove {
            id: "web-a".into(),
            signal: "SIGINT".into(),
            grace_ms: 3_000
        }]
    );
    // An unknown container (adopted after a restart, then removed) gets the defaults.
    let pass = run(&[], &[container("db-b", None)], &mut LocalState::new(), 0);
    assert_eq!(
        pass.actions,
        [Action::Remove {
            id: "db-b".into(),
            signal: "SIGTERM".into(),
            grace_ms: 10_000
        }]
    );
}

#[test]
fn first_restart_is_immediate_then_backs_off() {
    let r = replica("web-a", RestartCondition::Always);
    let stopped = [container(
        "web-a",
        Some(TaskState::Stopped { exit_code: 137 }),
    )];
    let mut local = LocalState::new();
    let pass = run(std::slice::from_ref(&r), &stopped, &mut local, 1_000);
    assert_eq!(pass.actions, [Action::Start { id: "web-a".into() }]);
    assert_eq!(pass.statuses[0].state, ReplicaState::Restarting);

    // The executor records the restart; the container crashes again right away.
    let entry = local.get_mut("web-a").unwrap();
    entry.restarts = 1;
    entry.exit = None;
    entry.started_at = Some(1_050);
    let pass = run(std::slice::from_ref(&r), &stopped, &mut local, 1_100);
    assert!(pass.actions.is_empty(), "second restart waits: {pass:?}");
    assert_eq!(pass.wake_at, Some(2_100));
    assert!(
        pass.statuses[0].message.contains("restart in 1s"),
        "{:?}",
        pass.statuses[0]
    );
    let pass = run(&[r], &stopped, &mut local, 2_100);
    assert_eq!(pass.actions, [Action::Start { id: "web-a".into() }]);
}

#[test]
fn restart_conditions_table() {
    // (condition, exit code, the state it leaves): restarted, completed (a one-shot job that
    // is done) or exited for good.
    use ReplicaState::{Completed, Exited, Restarting};
    let cases = [
        (RestartCondition::Always, 0, Restarting),
        (RestartCondition::Always, 1, Restarting),
        (RestartCondition::UnlessStopped, 0, Restarting),
        (RestartCondition::UnlessStopped, 1, Restarting),
        (RestartCondition::OnFailure, 0, Completed),
        (RestartCondition::OnFailure, 2, Restarting),
        (RestartCondition::Never, 0, Completed),
        (RestartCondition::Never, 1, Exited),
    ];
    for (condition, code, want) in cases {
        let r = replica("web-a", condition);
        let c = container("web-a", Some(TaskState::Stopped { exit_code: code }));
        let pass = run(&[r], &[c], &mut LocalState::new(), 0);
        let restarts = want == Restarting;
        assert_eq!(!pass.actions.is_empty(), restarts, "{condition:?} {code}");
        assert_eq!(pass.statuses[0].state, want, "{condition:?} {code}");
        assert_eq!(pass.statuses[0].exit_code, Some(code));
    }
}

#[test]
fn oom_kills_are_named() {
    let r = replica("web-a", RestartCondition::Never);
    let c = container("web-a", Some(TaskState::Stopped { exit_code: 137 }));
    let mut local = LocalState::new();
    local.insert(
        "web-a".into(),
        LocalReplica {
            oom_killed: true,
            ..Default::default()
        },
    );
    let pass = run(
        std::slice::from_ref(&r),
        std::slice::from_ref(&c),
        &mut local,
        0,
    );
    assert_eq!(pass.statuses[0].state, ReplicaState::Exited);
    assert_eq!(
        pass.statuses[0].message,
        "OOM-killed (memory limit), exit code 137"
    );
    // With the limit known, `ps` names it.
    let mut limited = r;
    limited.spec.resources.memory_limit_bytes = Some(64 << 20);
    let pass = run(&[limited], &[c], &mut local, 10);
    assert_eq!(
        pass.statuses[0].message,
        "OOM-killed (memory limit 64 MiB), exit code 137"
    );
}

#[test]
fn max_attempts_stops_restarting() {
    let mut r = replica("web-a", RestartCondition::OnFailure);
    r.spec.restart.max_attempts = Some(2);
    let c = container("web-a", Some(TaskState::Stopped { exit_code: 1 }));
    let mut local = LocalState::new();
    local.insert(
        "web-a".into(),
        LocalReplica {
            restarts: 2,
            attempts: 2,
            ..Default::default()
        },
    );
    let pass = run(&[r], &[c], &mut local, 0);
    assert!(pass.actions.is_empty());
    assert_eq!(pass.statuses[0].state, ReplicaState::Exited);
    assert_eq!(
        pass.statuses[0].message,
        "exited with code 1; gave up after 2 restarts (max_attempts)"
    );
}

#[test]
fn failed_create_waits_for_its_back_off() {
    let r = replica("web-a", RestartCondition::Always);
    let mut local = LocalState::new();
    local.insert(
        "web-a".into(),
        LocalReplica {
            error: Some(("image not found".into(), 0)),
            failures: 1,
            next_attempt_at: Some(1_000),
            ..Default::default()
        },
    );
    let pass = run(std::slice::from_ref(&r), &[], &mut local, 500);
    assert!(pass.actions.is_empty());
    assert_eq!(pass.statuses[0].state, ReplicaState::Failed);
    assert!(pass.statuses[0].message.starts_with("image not found"));
    let pass = run(&[r], &[], &mut local, 1_000);
    assert!(matches!(pass.actions[..], [Action::Create(_)]));
}

#[test]
fn in_flight_replicas_are_not_touched() {
    let r = replica("web-a", RestartCondition::Always);
    let in_flight = BTreeSet::from(["web-a".to_string(), "old-b".to_string()]);
    let pass = plan(
        "n1",
        &[r],
        &[container("old-b", Some(TaskState::Running { pid: 1 }))],
        &in_flight,
        &mut LocalState::new(),
        0,
    );
    assert!(pass.actions.is_empty());
    assert_eq!(pass.statuses[0].state, ReplicaState::Starting);
}

#[test]
fn back_off_is_capped_at_five_minutes() {
    assert_eq!(restart_delay(0, 0), 0);
    assert_eq!(restart_delay(0, 1), 1_000);
    assert_eq!(restart_delay(0, 4), 8_000);
    assert_eq!(restart_delay(0, 30), 300_000);
    assert_eq!(restart_delay(5_000, 1), 5_000);
}

#[test]
fn each_exit_is_recorded_once_with_its_restart_delay() {
    let r = replica("web-a", RestartCondition::Always);
    let stopped = [container(
        "web-a",
        Some(TaskState::Stopped { exit_code: 3 }),
    )];
    let mut local = LocalState::new();
    local.insert(
        "web-a".into(),
        LocalReplica {
            started_at: Some(500),
            ..Default::default()
        },
    );
    let pass = run(std::slice::from_ref(&r), &stopped, &mut local, 1_000);
    assert_eq!(pass.new_exits, ["web-a"]);
    let exit = ExitRecord {
        exit_code: 3,
        at: 1_000,
        oom: false,
        restarts: 0,
        restart_delay_ms: Some(0),
        adopted: false,
        last_lines: Vec::new(),
    };
    assert_eq!(pass.statuses[0].exits, [exit]);

    // Seen again before the restart happened: no new record.
    let pass = run(std::slice::from_ref(&r), &stopped, &mut local, 1_010);
    assert!(pass.new_exits.is_empty());
    assert_eq!(pass.statuses[0].exits.len(), 1);

    // Restarted (as the executor records it), then a second exit: it waits 1s.
    let entry = local.get_mut("web-a").unwrap();
    entry.restarts = 1;
    entry.exit = None;
    entry.started_at = Some(1_050);
    let pass = run(std::slice::from_ref(&r), &stopped, &mut local, 1_100);
    assert_eq!(pass.new_exits, ["web-a"]);
    let second = &pass.statuses[0].exits[1];
    assert_eq!(
        (second.at, second.restarts, second.restart_delay_ms),
        (1_100, 1, Some(1_000))
    );
}

#[test]
fn only_the_latest_exits_are_kept() {
    let r = replica("web-a", RestartCondition::Always);
    let stopped = [container(
        "web-a",
        Some(TaskState::Stopped { exit_code: 1 }),
    )];
    let mut local = LocalState::new();
    for i in 0..5u64 {
        let entry = local.entry("web-a".into()).or_default();
        entry.exit = None;
        entry.started_at = Some(i * 100);
        run(std::slice::from_ref(&r), &stopped, &mut local, i * 100 + 50);
    }
    let kept: Vec<u64> = local["web-a"].exits.iter().map(|e| e.at).collect();
    assert_eq!(kept, [250, 350, 450]);
}

#[test]
fn exits_found_at_adoption_are_marked() {
    let r = replica("web-a", RestartCondition::Never);
    let c = container("web-a", Some(TaskState::Stopped { exit_code: 2 }));
    let pass = run(&[r], &[c], &mut LocalState::new(), 7);
    let exit = &pass.statuses[0].exits[0];
    assert!(exit.adopted);
    // `restart: "no"`: no restart, so no delay.
    assert_eq!(exit.restart_delay_ms, None);
}

#[test]
fn an_oom_event_after_the_exit_still_marks_it() {
    let r = replica("web-a", RestartCondition::Never);
    let c = [container(
        "web-a",
        Some(TaskState::Stopped { exit_code: 137 }),
    )];
    let mut local = LocalState::new();
    let pass = run(std::slice::from_ref(&r), &c, &mut local, 0);
    assert!(!pass.statuses[0].exits[0].oom);
    local.get_mut("web-a").unwrap().oom_killed = true;
    let pass = run(&[r], &c, &mut local, 10);
    assert!(pass.statuses[0].exits[0].oom);
    assert!(pass.new_exits.is_empty());
}

#[test]
fn failures_are_reported_with_their_retry() {
    let r = replica("web-a", RestartCondition::Always);
    let mut local = LocalState::new();
    local.insert(
        "web-a".into(),
        LocalReplica {
            error: Some(("image not found".into(), 100)),
            failures: 2,
            next_attempt_at: Some(2_100),
            ..Default::default()
        },
    );
    let pass = run(&[r], &[], &mut local, 500);
    let failure = pass.statuses[0].failure.clone().unwrap();
    assert_eq!(
        (
            failure.message.as_str(),
            failure.at,
            failure.attempts,
            failure.retry_in_ms
        ),
        ("image not found", 100, 2, 2_000)
    );
}

#[test]
fn unhealthy_replica_is_stopped_then_restarted_with_back_off() {
    let r = replica("web-a", RestartCondition::Always);
    let running = container("web-a", Some(TaskState::Running { pid: 42 }));
    let mut local = LocalState::new();
    run(
        std::slice::from_ref(&r),
        std::slice::from_ref(&running),
        &mut local,
        0,
    );
    local.get_mut("web-a").unwrap().unhealthy = true;
    let pass = run(std::slice::from_ref(&r), &[running], &mut local, 1_000);
    assert_eq!(
        pass.actions,
        [Action::Restart {
            id: "web-a".into(),
            signal: "SIGINT".into(),
            grace_ms: 3_000,
        }]
    );
    assert_eq!(pass.statuses[0].message, "unhealthy, restarting");
    // The stop deleted the task; the exit it returned is recorded like a crash and the first
    // restart is at once (the policy's delay).
    let l = local.get_mut("web-a").unwrap();
    l.unhealthy = false;
    l.stopped_exit = Some(143);
    let stopped = container("web-a", None);
    let pass = run(
        std::slice::from_ref(&r),
        std::slice::from_ref(&stopped),
        &mut local,
        2_000,
    );
    assert_eq!(pass.actions, [Action::Start { id: "web-a".into() }]);
    assert_eq!(pass.statuses[0].state, ReplicaState::Restarting);
    assert_eq!(pass.statuses[0].exits.len(), 1);
    assert_eq!(pass.statuses[0].exits[0].exit_code, 143);
    // A second unhealthy stop soon after waits out the back-off instead of starting at once.
    let l = local.get_mut("web-a").unwrap();
    l.restarts = 1;
    l.exit = None;
    l.started_at = Some(2_100);
    l.stopped_exit = Some(143);
    let pass = run(std::slice::from_ref(&r), &[stopped], &mut local, 3_000);
    assert!(pass.actions.is_empty(), "{:?}", pass.actions);
    assert!(
        pass.statuses[0].message.contains("restart in"),
        "{}",
        pass.statuses[0].message
    );
}
