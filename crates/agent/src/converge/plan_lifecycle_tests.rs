//! Table tests of the planner's lifecycle decisions (issue 10): the restart window and
//! `max_attempts`, one-shot replicas that complete, services stopped by the user, and the start
//! order of `depends_on` on the node.

use hivemind_types::{
    Dependency, DependencyCondition, Health, HealthStatus, Replica, ReplicaState, RestartCondition,
};

use super::tests::{container, replica, run};
use super::*;
use hivemind_runtime::TaskState;

const MIN: u64 = 60_000;

fn stopped(id: &str, exit_code: i32) -> hivemind_runtime::ContainerInfo {
    container(id, Some(TaskState::Stopped { exit_code }))
}

fn running(id: &str) -> hivemind_runtime::ContainerInfo {
    container(id, Some(TaskState::Running { pid: 7 }))
}

#[test]
fn window_decides_which_restarts_count_towards_max_attempts() {
    // (window, how long the run that just exited lasted, attempts counted before, restarts?)
    let cases: &[(Option<u64>, u64, u32, bool)] = &[
        // No window: every restart counts, however long the run.
        (None, 30 * MIN, 3, false),
        (None, 1_000, 2, true),
        // A run shorter than the window was a failed restart: it counts.
        (Some(2 * MIN), MIN, 3, false),
        // A run of at least the window was a restart that worked: the count starts afresh.
        (Some(2 * MIN), 2 * MIN, 3, true),
        (Some(2 * MIN), 5 * MIN, 10, true),
    ];
    for &(window, ran_for, attempts, restarts) in cases {
        let mut r = replica("job-a", RestartCondition::OnFailure);
        r.spec.restart.max_attempts = Some(3);
        r.spec.restart.window_ms = window;
        let now = 100 * MIN;
        let mut local = LocalState::new();
        local.insert(
            "job-a".into(),
            LocalReplica {
                attempts,
                restarts: attempts,
                started_at: Some(now - ran_for),
                ..Default::default()
            },
        );
        let pass = run(&[r], &[stopped("job-a", 1)], &mut local, now);
        let case = format!("window {window:?}, ran {ran_for} ms, {attempts} attempts");
        assert_eq!(
            !pass.actions.is_empty() || pass.wake_at.is_some(),
            restarts,
            "{case}"
        );
        let want = if restarts {
            ReplicaState::Restarting
        } else {
            ReplicaState::Exited
        };
        assert_eq!(pass.statuses[0].state, want, "{case}");
        assert_eq!(
            pass.statuses[0]
                .exits
                .last()
                .unwrap()
                .restart_delay_ms
                .is_some(),
            restarts,
            "{case}"
        );
    }
}

#[test]
fn max_attempts_counts_restarts_made_by_the_agent() {
    let mut r = replica("job-a", RestartCondition::Always);
    r.spec.restart.max_attempts = Some(1);
    let mut local = LocalState::new();
    let pass = run(
        std::slice::from_ref(&r),
        &[stopped("job-a", 0)],
        &mut local,
        0,
    );
    assert_eq!(pass.actions, [Action::Start { id: "job-a".into() }]);
    // What the executor records after the restart it did.
    let entry = local.get_mut("job-a").unwrap();
    entry.restarts += 1;
    entry.attempts += 1;
    entry.exit = None;
    entry.started_at = Some(10);
    let pass = run(&[r], &[stopped("job-a", 3)], &mut local, 20);
    assert!(pass.actions.is_empty(), "{pass:?}");
    assert_eq!(pass.statuses[0].state, ReplicaState::Exited);
}

#[test]
fn a_completed_replica_stays_completed_and_keeps_its_container() {
    let r = replica("migrate-a", RestartCondition::Never);
    let c = stopped("migrate-a", 0);
    let mut local = LocalState::new();
    for now in [0, 1_000, 60 * MIN] {
        let pass = run(
            std::slice::from_ref(&r),
            std::slice::from_ref(&c),
            &mut local,
            now,
        );
        // Neither restarted nor removed: its logs stay readable.
        assert!(pass.actions.is_empty(), "{pass:?}");
        assert_eq!(pass.statuses[0].state, ReplicaState::Completed);
        assert_eq!(pass.statuses[0].exit_code, Some(0));
        assert_eq!(pass.statuses[0].message, "completed (exit code 0)");
        // Recorded once, as an exit that is not restarted.
        assert_eq!(pass.statuses[0].exits.len(), 1);
        assert_eq!(pass.statuses[0].exits[0].restart_delay_ms, None);
    }
}

#[test]
fn an_oom_kill_with_code_0_is_not_a_completion() {
    let r = replica("job-a", RestartCondition::Never);
    let mut local = LocalState::new();
    local.insert(
        "job-a".into(),
        LocalReplica {
            oom_killed: true,
            ..Default::default()
        },
    );
    let pass = run(&[r], &[stopped("job-a", 0)], &mut local, 0);
    assert_eq!(pass.statuses[0].state, ReplicaState::Exited);
}

#[test]
fn a_stopped_service_is_stopped_kept_and_started_again() {
    let mut r = replica("web-a", RestartCondition::UnlessStopped);
    r.spec.stopped = true;
    let mut local = LocalState::new();
    // Running: stop it with its own signal and grace, keeping the container.
    let pass = run(std::slice::from_ref(&r), &[running("web-a")], &mut local, 0);
    assert_eq!(
        pass.actions,
        [Action::Stop {
            id: "web-a".into(),
            signal: "SIGINT".into(),
            grace_ms: 3_000,
        }]
    );
    assert_eq!(pass.statuses[0].state, ReplicaState::Stopped);
    // Stopped (the task is gone, or it shows the stop's exit): nothing to do, no exit recorded,
    // also for an agent that starts afresh (its memory is empty after a restart).
    for (c, mut local) in [
        (container("web-a", None), local.clone()),
        (stopped("web-a", 143), local.clone()),
        (stopped("web-a", 143), LocalState::new()),
    ] {
        for now in [10, 10 * MIN] {
            let pass = run(
                std::slice::from_ref(&r),
                std::slice::from_ref(&c),
                &mut local,
                now,
            );
            assert!(pass.actions.is_empty(), "{pass:?}");
            assert_eq!(pass.statuses[0].state, ReplicaState::Stopped);
            assert!(pass.statuses[0].exits.is_empty(), "{pass:?}");
        }
        // `hivemind start`: started again, not counted as a restart, whatever the policy.
        for condition in [RestartCondition::Never, RestartCondition::UnlessStopped] {
            let mut started = r.clone();
            started.spec.stopped = false;
            started.spec.restart.condition = condition;
            let mut local = local.clone();
            let pass = run(&[started], std::slice::from_ref(&c), &mut local, 20 * MIN);
            assert_eq!(
                pass.actions,
                [Action::Start { id: "web-a".into() }],
                "{c:?}"
            );
            assert_eq!(pass.statuses[0].state, ReplicaState::Starting);
            assert!(pass.statuses[0].exits.is_empty());
        }
    }
    // Stopped before it ever had a container: nothing is created.
    let pass = run(&[r], &[], &mut LocalState::new(), 0);
    assert!(pass.actions.is_empty());
    assert_eq!(pass.statuses[0].state, ReplicaState::Stopped);
}

fn of_service(id: &str, service: &str, condition: RestartCondition) -> Replica {
    let mut r = replica(id, condition);
    r.service = service.into();
    r
}

fn depending(id: &str, deps: &[(&str, DependencyCondition, bool)]) -> Replica {
    let mut r = of_service(id, "web", RestartCondition::Always);
    for (name, condition, required) in deps {
        r.spec.depends_on.insert(
            name.to_string(),
            Dependency {
                condition: *condition,
                required: *required,
                restart: false,
            },
        );
    }
    r
}

#[test]
fn dependents_start_after_their_local_dependencies() {
    use DependencyCondition::*;
    let db = of_service("db-a", "db", RestartCondition::Always);
    let migrate = of_service("migrate-a", "migrate", RestartCondition::Never);
    let created = |id: &str| container(id, None);
    // (dependencies, db's container, migrate's container, whether web starts, its message)
    type Case<'a> = (
        Vec<(&'a str, DependencyCondition, bool)>,
        hivemind_runtime::ContainerInfo,
        hivemind_runtime::ContainerInfo,
        bool,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (vec![], created("db-a"), created("migrate-a"), true, ""),
        (
            vec![("db", ServiceStarted, true)],
            created("db-a"),
            stopped("migrate-a", 0),
            false,
            "waiting for db (service_started)",
        ),
        (
            vec![("db", ServiceStarted, true)],
            running("db-a"),
            created("migrate-a"),
            true,
            "",
        ),
        // required: false waits for nothing.
        (
            vec![("db", ServiceStarted, false)],
            created("db-a"),
            created("migrate-a"),
            true,
            "",
        ),
        (
            vec![("migrate", ServiceCompletedSuccessfully, true)],
            running("db-a"),
            running("migrate-a"),
            false,
            "waiting for migrate (service_completed_successfully)",
        ),
        (
            vec![("migrate", ServiceCompletedSuccessfully, true)],
            running("db-a"),
            stopped("migrate-a", 1),
            false,
            "waiting for migrate (service_completed_successfully)",
        ),
        (
            vec![("migrate", ServiceCompletedSuccessfully, true)],
            created("db-a"),
            stopped("migrate-a", 0),
            true,
            "",
        ),
        // A completed one-shot has started.
        (
            vec![("migrate", ServiceStarted, true)],
            created("db-a"),
            stopped("migrate-a", 0),
            true,
            "",
        ),
        // A dependency with no replica on this node is the control plane's to wait for.
        (
            vec![("cache", ServiceHealthy, true)],
            created("db-a"),
            created("migrate-a"),
            true,
            "",
        ),
        (
            vec![
                ("db", ServiceStarted, true),
                ("migrate", ServiceCompletedSuccessfully, true),
            ],
            created("db-a"),
            running("migrate-a"),
            false,
            "waiting for db (service_started), migrate (service_completed_successfully)",
        ),
    ];
    for (deps, db_c, migrate_c, starts, message) in cases {
        let web = depending("web-a", &deps);
        let desired = [db.clone(), migrate.clone(), web];
        let containers = [db_c, migrate_c, created("web-a")];
        let pass = run(&desired, &containers, &mut LocalState::new(), 0);
        let web_starts = pass.actions.iter().any(|a| a.id() == "web-a");
        assert_eq!(web_starts, starts, "{deps:?}: {pass:?}");
        let status = pass.statuses.iter().find(|s| s.id == "web-a").unwrap();
        assert_eq!(status.message, message, "{deps:?}");
        assert_eq!(status.state, ReplicaState::Starting);
    }
}

#[test]
fn healthy_dependencies_wait_for_their_check() {
    let db = of_service("db-a", "db", RestartCondition::Always);
    let web = depending(
        "web-a",
        &[("db", DependencyCondition::ServiceHealthy, true)],
    );
    let desired = [db, web];
    let containers = [running("db-a"), container("web-a", None)];
    // No check at all: running is enough.
    let pass = run(&desired, &containers, &mut LocalState::new(), 0);
    assert!(pass.actions.iter().any(|a| a.id() == "web-a"));
    // The check's verdict, as the health checker reports it on the status.
    for (health, starts) in [
        (HealthStatus::Starting, false),
        (HealthStatus::Unhealthy, false),
        (HealthStatus::Healthy, true),
    ] {
        let mut status = pass.statuses[0].clone();
        status.health = Some(Health {
            status: health,
            failing_streak: 0,
            last_output: String::new(),
            checked_at: None,
        });
        assert_eq!(
            super::super::start_order::condition_met(DependencyCondition::ServiceHealthy, &status),
            starts,
            "{health:?}"
        );
    }
}

#[test]
fn crash_restarts_of_dependents_are_not_held() {
    let db = of_service("db-a", "db", RestartCondition::Always);
    let web = depending(
        "web-a",
        &[("db", DependencyCondition::ServiceStarted, true)],
    );
    let pass = run(
        &[db, web],
        &[container("db-a", None), stopped("web-a", 1)],
        &mut LocalState::new(),
        0,
    );
    assert!(
        pass.actions.contains(&Action::Start { id: "web-a".into() }),
        "{pass:?}"
    );
}
