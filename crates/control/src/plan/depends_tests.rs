//! Table tests of the start-ordering planner: each condition, `required: false`, failures for
//! good, stopped and scaled-to-zero dependencies, and `restart: true`.

use std::collections::BTreeMap;

use hivemind_types::{
    Dependency, DependencyCondition, HealthStatus, Meta, ReplicaState, Service, ServiceMode,
    ServiceSpec,
};

use super::*;

fn service(name: &str, replicas: u32, deps: &[(&str, DependencyCondition, bool, bool)]) -> Service {
    Service {
        namespace: "default".into(),
        app: "shop".into(),
        name: name.into(),
        spec: ServiceSpec {
            image: "busybox".into(),
            replicas,
            depends_on: deps
                .iter()
                .map(|(n, condition, required, restart)| {
                    (
                        n.to_string(),
                        Dependency {
                            condition: *condition,
                            required: *required,
                            restart: *restart,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        },
        vip: None,
        meta: Meta::default(),
    }
}

fn r(
    state: Option<ReplicaState>,
    exit_code: Option<i32>,
    health: Option<HealthStatus>,
) -> ReplicaFacts {
    ReplicaFacts {
        current: true,
        created_at: 100,
        state,
        exit_code,
        health,
    }
}

use DependencyCondition::*;
use ReplicaState::*;

fn run(web: &Service, deps: &BTreeMap<&str, (Service, Vec<ReplicaFacts>)>) -> Gate {
    gate(web, &|name| {
        deps.get(name).map(|(s, replicas)| DependencyFacts {
            service: s,
            replicas: replicas.clone(),
        })
    })
}

#[test]
fn each_condition_holds_only_when_every_wanted_replica_is_there() {
    let running = r(Some(Running), None, None);
    let completed = r(Some(Completed), Some(0), None);
    // (condition, wanted replicas, replicas, holds?, reason when waiting or failed)
    let cases: Vec<(DependencyCondition, u32, Vec<ReplicaFacts>, &str)> = vec![
        (ServiceStarted, 1, vec![running.clone()], ""),
        (ServiceStarted, 1, vec![], "waiting: 0/1 replicas running"),
        (
            ServiceStarted,
            1,
            vec![r(None, None, None)],
            "waiting: 0/1 replicas running",
        ),
        (
            ServiceStarted,
            1,
            vec![r(Some(Starting), None, None)],
            "waiting: 0/1 replicas running",
        ),
        (
            ServiceStarted,
            2,
            vec![running.clone()],
            "waiting: 1/2 replicas running",
        ),
        (
            ServiceStarted,
            2,
            vec![running.clone(), r(Some(Restarting), Some(1), None)],
            "waiting: 1/2 replicas running",
        ),
        (ServiceStarted, 1, vec![completed.clone()], ""),
        // A replica of an older revision being replaced does not count.
        (
            ServiceStarted,
            1,
            vec![ReplicaFacts {
                current: false,
                ..running.clone()
            }],
            "waiting: 0/1 replicas running",
        ),
        (
            ServiceStarted,
            1,
            vec![r(Some(Exited), Some(2), None)],
            "failed: exited with code 2",
        ),
        (ServiceStarted, 0, vec![], ""),
        (ServiceHealthy, 1, vec![running.clone()], ""),
        (
            ServiceHealthy,
            1,
            vec![r(Some(Running), None, Some(HealthStatus::Healthy))],
            "",
        ),
        (
            ServiceHealthy,
            1,
            vec![r(Some(Running), None, Some(HealthStatus::Starting))],
            "waiting: 0/1 replicas healthy",
        ),
        (
            ServiceHealthy,
            1,
            vec![r(Some(Running), None, Some(HealthStatus::Unhealthy))],
            "waiting: 0/1 replicas healthy",
        ),
        (
            ServiceHealthy,
            1,
            vec![completed.clone()],
            "failed: completed, so it can never be healthy",
        ),
        (ServiceCompletedSuccessfully, 1, vec![completed.clone()], ""),
        (
            ServiceCompletedSuccessfully,
            1,
            vec![running.clone()],
            "waiting: 0/1 replicas completed",
        ),
        (
            ServiceCompletedSuccessfully,
            1,
            vec![r(Some(Restarting), Some(1), None)],
            "waiting: 0/1 replicas completed",
        ),
        (
            ServiceCompletedSuccessfully,
            1,
            vec![r(Some(Exited), Some(3), None)],
            "failed: exited with code 3",
        ),
        (
            ServiceCompletedSuccessfully,
            2,
            vec![completed.clone(), completed.clone()],
            "",
        ),
    ];
    for (condition, wanted, replicas, want) in cases {
        let web = service("web", 1, &[("migrate", condition, true, false)]);
        let deps = BTreeMap::from([(
            "migrate",
            (service("migrate", wanted, &[]), replicas.clone()),
        )]);
        let g = run(&web, &deps);
        let got = match (g.waiting.first(), g.failed.first()) {
            (None, None) => String::new(),
            (Some(w), None) => format!("waiting: {}", w.reason),
            (_, Some(f)) => format!("failed: {}", f.reason),
        };
        assert_eq!(got, want, "{condition:?} wanting {wanted} of {replicas:?}");
        assert_eq!(g.holds(), !want.is_empty());
        assert!(g.warnings.is_empty());
    }
}

#[test]
fn optional_dependencies_warn_instead_of_holding_when_missing_or_failed() {
    let web = service(
        "web",
        1,
        &[
            ("cache", ServiceStarted, false, false),
            ("migrate", ServiceCompletedSuccessfully, false, false),
        ],
    );
    let deps = BTreeMap::from([(
        "migrate",
        (
            service("migrate", 1, &[]),
            vec![r(Some(Exited), Some(1), None)],
        ),
    )]);
    let g = run(&web, &deps);
    assert!(!g.holds(), "{g:?}");
    let warned: Vec<String> = g.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warned,
        [
            "cache (service_started): no service cache in the app",
            "migrate (service_completed_successfully): exited with code 1"
        ]
    );
    // Still on its way: an optional dependency that exists is waited for.
    let deps = BTreeMap::from([(
        "migrate",
        (
            service("migrate", 1, &[]),
            vec![r(Some(Running), None, None)],
        ),
    )]);
    assert!(run(&web, &deps).holds());
}

#[test]
fn a_required_missing_dependency_holds_and_says_so() {
    let web = service("web", 1, &[("db", ServiceStarted, true, false)]);
    let g = run(&web, &BTreeMap::new());
    assert!(g.holds());
    assert_eq!(
        g.summary().unwrap(),
        "dependency failed: db (service_started): no service db in the app"
    );
}

#[test]
fn summaries_name_every_dependency_waited_for() {
    let web = service(
        "web",
        1,
        &[
            ("db", ServiceHealthy, true, false),
            ("migrate", ServiceCompletedSuccessfully, true, false),
        ],
    );
    let deps = BTreeMap::from([
        (
            "db",
            (service("db", 1, &[]), vec![r(Some(Starting), None, None)]),
        ),
        ("migrate", (service("migrate", 1, &[]), vec![])),
    ]);
    assert_eq!(
        run(&web, &deps).summary().unwrap(),
        "waiting for db (service_healthy): 0/1 replicas healthy; migrate (service_completed_successfully): 0/1 replicas completed"
    );
    assert_eq!(Gate::default().summary(), None);
}

#[test]
fn a_stopped_dependency_holds_its_dependents() {
    let web = service("web", 1, &[("db", ServiceStarted, true, false)]);
    let mut db = service("db", 1, &[]);
    db.spec.stopped = true;
    let deps = BTreeMap::from([("db", (db, vec![r(Some(Stopped), None, None)]))]);
    let g = run(&web, &deps);
    assert_eq!(g.waiting[0].reason, "stopped by the user, 0/1 running");
}

#[test]
fn global_dependencies_need_their_replicas_running() {
    let web = service("web", 1, &[("agent", ServiceStarted, true, false)]);
    let mut agent = service("agent", 0, &[]);
    agent.spec.mode = ServiceMode::Global;
    let none = BTreeMap::from([("agent", (agent.clone(), vec![]))]);
    assert!(run(&web, &none).holds());
    let two = BTreeMap::from([(
        "agent",
        (
            agent,
            vec![r(Some(Running), None, None), r(Some(Running), None, None)],
        ),
    )]);
    assert!(!run(&web, &two).holds());
}

#[test]
fn restart_true_replaces_dependents_older_than_the_dependency() {
    let deps = |created_at: &[u64]| {
        BTreeMap::from([(
            "db",
            (
                service("db", created_at.len() as u32, &[]),
                created_at
                    .iter()
                    .map(|&t| ReplicaFacts {
                        created_at: t,
                        ..r(Some(Running), None, None)
                    })
                    .collect::<Vec<_>>(),
            ),
        )])
    };
    let restarting = service("web", 1, &[("db", ServiceStarted, true, true)]);
    let plain = service("web", 1, &[("db", ServiceStarted, true, false)]);
    assert_eq!(
        run(&restarting, &deps(&[5, 9])).replace_created_before,
        Some(9)
    );
    assert_eq!(run(&plain, &deps(&[5, 9])).replace_created_before, None);
    assert_eq!(run(&restarting, &deps(&[])).replace_created_before, None);
}
