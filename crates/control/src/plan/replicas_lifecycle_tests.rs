//! Table tests of the replica planner's lifecycle rules (issue 10): completed and
//! exited-for-good replicas are not missing, stopped services rewrite their replicas, creations
//! wait for `depends_on`, and `restart: true` replaces dependents.

use hivemind_types::{Dependency, DependencyCondition, NodeState, ReplicaState};

use super::tests::{apply, created, deleted, down, node, plan, replica_of, service, status};

fn depending(
    name: &str,
    on: &str,
    condition: DependencyCondition,
    restart: bool,
) -> hivemind_types::Service {
    let mut s = service(name, 1, "web:1");
    s.spec.depends_on.insert(
        on.into(),
        Dependency {
            condition,
            required: true,
            restart,
        },
    );
    s
}

#[test]
fn completed_and_exited_replicas_are_not_missing() {
    let job = service("migrate", 1, "app:1");
    let replicas = [replica_of(&job, "migrate-00001", "n1", 1)];
    for state in [
        ReplicaState::Completed,
        ReplicaState::Exited,
        ReplicaState::Stopped,
    ] {
        let p = plan(
            std::slice::from_ref(&job),
            &replicas,
            &[status("migrate-00001", state)],
            &[node("n1")],
        );
        assert!(p.is_empty(), "{state:?}: {p:?}");
    }
}

#[test]
fn a_redeploy_with_a_changed_template_runs_a_completed_job_again() {
    let job = service("migrate", 1, "app:1");
    let replicas = [replica_of(&job, "migrate-00001", "n1", 1)];
    let changed = service("migrate", 1, "app:2");
    let p = plan(
        &[changed],
        &replicas,
        &[status("migrate-00001", ReplicaState::Completed)],
        &[node("n1")],
    );
    assert_eq!(deleted(&p), ["migrate-00001"]);
    assert_eq!(created(&p).len(), 1);
}

#[test]
fn a_completed_replica_on_a_lost_node_is_not_run_again() {
    let job = service("migrate", 1, "app:1");
    let replicas = [replica_of(&job, "migrate-00001", "n1", 1)];
    let nodes = [down("n1", NodeState::Down), node("n2")];
    let done = plan(
        std::slice::from_ref(&job),
        &replicas,
        &[status("migrate-00001", ReplicaState::Completed)],
        &nodes,
    );
    assert!(done.is_empty(), "{done:?}");
    // One that had not completed is replaced on a ready node, as before.
    let running = plan(
        &[job],
        &replicas,
        &[status("migrate-00001", ReplicaState::Running)],
        &nodes,
    );
    assert_eq!(deleted(&running), ["migrate-00001"]);
    assert_eq!(created(&running)[0].1, "n2");
}

#[test]
fn stopping_and_starting_a_service_rewrites_its_replicas_only() {
    let web = service("web", 2, "web:1");
    let mut replicas = vec![
        replica_of(&web, "web-00001", "n1", 1),
        replica_of(&web, "web-00002", "n1", 2),
    ];
    let mut stopped = web.clone();
    stopped.spec.stopped = true;
    // Stopping changes no revision: nothing is replaced, each replica is rewritten.
    assert_eq!(stopped.spec.revision_hash(), web.spec.revision_hash());
    let p = plan(
        std::slice::from_ref(&stopped),
        &replicas,
        &[],
        &[node("n1")],
    );
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let set: Vec<(&str, bool)> = p
        .set_stopped
        .iter()
        .map(|(h, s)| (h.id.as_str(), *s))
        .collect();
    assert_eq!(set, [("web-00001", true), ("web-00002", true)]);
    assert_eq!(p.services[0].stop_changed, 2);
    // Once rewritten, nothing more to do, whatever the agents report.
    for r in &mut replicas {
        r.spec.stopped = true;
    }
    let p = plan(
        std::slice::from_ref(&stopped),
        &replicas,
        &[status("web-00001", ReplicaState::Stopped)],
        &[node("n1")],
    );
    assert!(p.is_empty(), "{p:?}");
    // A scale-up of a stopped service creates stopped replicas.
    let mut bigger = stopped.clone();
    bigger.spec.replicas = 3;
    let p = plan(&[bigger], &replicas, &[], &[node("n1")]);
    assert_eq!(p.create.len(), 1);
    assert!(p.create[0].spec.stopped);
    // Started again.
    let p = plan(&[web], &replicas, &[], &[node("n1")]);
    let set: Vec<(&str, bool)> = p
        .set_stopped
        .iter()
        .map(|(h, s)| (h.id.as_str(), *s))
        .collect();
    assert_eq!(set, [("web-00001", false), ("web-00002", false)]);
}

#[test]
fn creations_wait_for_dependencies_and_follow_them() {
    use DependencyCondition::*;
    let migrate = service("migrate", 1, "app:1");
    let web = depending("web", "migrate", ServiceCompletedSuccessfully, false);
    let services = [migrate.clone(), web.clone()];
    let nodes = [node("n1")];
    // Nothing yet: only migrate is created.
    let mut replicas = Vec::new();
    let p = plan(&services, &replicas, &[], &nodes);
    assert_eq!(
        created(&p),
        [("migrate-00001".to_string(), "n1".to_string())]
    );
    let web_outcome = p.services.iter().find(|o| o.key.ends_with("/web")).unwrap();
    assert_eq!(web_outcome.held, 1);
    apply(&mut replicas, &p, 1);
    // (migrate's state, whether web's replica is created now)
    let cases = [
        (None, false),
        (Some(ReplicaState::Starting), false),
        (Some(ReplicaState::Running), false),
        (Some(ReplicaState::Exited), false),
        (Some(ReplicaState::Completed), true),
    ];
    for (state, creates) in cases {
        let statuses: Vec<_> = state
            .map(|s| status("migrate-00001", s))
            .into_iter()
            .collect();
        let p = plan(&services, &replicas, &statuses, &nodes);
        let web_created = p.create.iter().any(|r| r.service == "web");
        assert_eq!(web_created, creates, "{state:?}: {p:?}");
        assert!(
            p.create.iter().all(|r| r.service == "web"),
            "migrate is not run again"
        );
    }
}

#[test]
fn a_held_service_still_removes_its_outdated_replicas() {
    let migrate = service("migrate", 1, "app:2");
    let old_web = depending(
        "web",
        "migrate",
        DependencyCondition::ServiceCompletedSuccessfully,
        false,
    );
    let replicas = [replica_of(&old_web, "web-00001", "n1", 1)];
    let mut new_web = old_web.clone();
    new_web.spec.image = "web:2".into();
    let p = plan(&[migrate, new_web], &replicas, &[], &[node("n1")]);
    assert_eq!(deleted(&p), ["web-00001"]);
    assert!(p.create.iter().all(|r| r.service == "migrate"), "{p:?}");
}

#[test]
fn restart_true_replaces_dependents_older_than_their_dependency() {
    let db = service("db", 1, "db:1");
    let web = depending("web", "db", DependencyCondition::ServiceStarted, true);
    let mut replicas = vec![
        replica_of(&db, "db-00001", "n1", 1),
        replica_of(&web, "web-00001", "n1", 2),
    ];
    let statuses = [
        status("db-00001", ReplicaState::Running),
        status("web-00001", ReplicaState::Running),
    ];
    let services = [db.clone(), web.clone()];
    assert!(plan(&services, &replicas, &statuses, &[node("n1")]).is_empty());
    // db was replaced (updated) after web's replica was created.
    replicas[0] = replica_of(&db, "db-00002", "n1", 5);
    let statuses = [
        status("db-00002", ReplicaState::Running),
        status("web-00001", ReplicaState::Running),
    ];
    let p = plan(&services, &replicas, &statuses, &[node("n1")]);
    assert_eq!(deleted(&p), ["web-00001"]);
    assert_eq!(p.create.len(), 1);
    // Without restart: true, web keeps running.
    let plain = depending("web", "db", DependencyCondition::ServiceStarted, false);
    let p = plan(&[db, plain], &replicas, &statuses, &[node("n1")]);
    assert!(p.is_empty(), "{p:?}");
}
