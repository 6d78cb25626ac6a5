//! The monitors table: which runs get a monitor, what health each status carries, when an
//! unhealthy run is restarted.

use super::*;
use hivemind_types::healthcheck::Probe;

fn check() -> ResolvedCheck {
    ResolvedCheck {
        probe: Probe::Exec(vec!["true".into()]),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        retries: 2,
        start_period: Duration::ZERO,
        start_interval: Duration::from_millis(500),
    }
}

fn status(id: &str, state: ReplicaState, pid: Option<u32>) -> ObservedReplica {
    ObservedReplica {
        id: id.into(),
        node: "n1".into(),
        state,
        pid,
        exit_code: None,
        restarts: 0,
        message: String::new(),
        started_at: Some(0),
        ip: None,
        exits: Vec::new(),
        failure: None,
        health: None,
        meta: Default::default(),
    }
}

fn fail(at: u64) -> Outcome {
    Outcome {
        passed: false,
        output: format!("no /tmp/ok at {at}"),
        at,
    }
}

fn with_check(id: &str) -> Option<ResolvedCheck> {
    (id != "plain").then(check)
}

#[test]
fn a_running_replica_with_a_check_starts_as_starting_in_the_same_pass() {
    let mut m = Monitors::default();
    let mut statuses = vec![
        status("web-1", ReplicaState::Running, Some(10)),
        status("plain", ReplicaState::Running, Some(11)),
        status("web-2", ReplicaState::Starting, None),
    ];
    let starts = m.sync(&mut statuses, with_check, 100);
    assert_eq!(starts.len(), 1);
    assert_eq!((starts[0].id.as_str(), starts[0].pid), ("web-1", 10));
    // Found running by the agent's first pass (live restore): checked at once.
    assert_eq!(starts[0].first_delay, Duration::ZERO);
    // Never reported running without a health: the endpoints would count it ready.
    assert_eq!(
        statuses[0].health.as_ref().map(|h| h.status),
        Some(HealthStatus::Starting)
    );
    assert_eq!(statuses[1].health, None);
    assert_eq!(statuses[2].health, None);
    // The next pass starts nothing new for the same run; a run that starts later waits an
    // interval before its first check, as in Docker.
    assert!(m.sync(&mut statuses, with_check, 200).is_empty());
    statuses.push(status("web-3", ReplicaState::Running, Some(12)));
    let starts = m.sync(&mut statuses, with_check, 300);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].first_delay, Duration::from_secs(1));
}

#[test]
fn unhealthy_runs_restart_once_traffic_left_or_after_the_drain_wait() {
    let mut m = Monitors::default();
    let mut statuses = vec![
        status("web-1", ReplicaState::Running, Some(10)),
        status("web-2", ReplicaState::Running, Some(20)),
    ];
    m.sync(&mut statuses, with_check, 0);
    for id in ["web-1", "web-2"] {
        let pid = if id == "web-1" { 10 } else { 20 };
        assert_eq!(
            m.observe(id, pid, fail(1_000)),
            Some((false, Duration::from_secs(1)))
        );
        assert_eq!(m.observe(id, pid, fail(2_000)).map(|r| r.0), Some(true));
    }
    // web-1 is still an endpoint, web-2 is not any more: it goes after the drain grace.
    let routed = |id: &str| id == "web-1";
    let (due, next) = m.restarts_due(2_100, routed);
    assert!(due.is_empty());
    assert_eq!(next, Some(2_100 + DRAIN_GRACE_MS));
    let (due, _) = m.restarts_due(2_100 + DRAIN_GRACE_MS, routed);
    assert_eq!(due, ["web-2"]);
    assert!(m.restarts_due(2_200 + DRAIN_GRACE_MS, routed).0.is_empty());
    let (due, next) = m.restarts_due(2_000 + DRAIN_WAIT_MS, routed);
    assert_eq!((due, next), (vec!["web-1".to_string()], None));
    m.sync(&mut statuses, with_check, 5_000);
    assert_eq!(
        statuses[0]
            .health
            .as_ref()
            .map(|h| (h.status, h.last_output.as_str())),
        Some((HealthStatus::Unhealthy, "no /tmp/ok at 2000"))
    );
}

#[test]
fn a_new_run_starts_over_and_an_ended_run_keeps_its_last_health() {
    let mut m = Monitors::default();
    let mut statuses = vec![status("web-1", ReplicaState::Running, Some(10))];
    m.sync(&mut statuses, with_check, 0);
    m.observe("web-1", 10, fail(1));
    m.observe("web-1", 10, fail(2));
    statuses[0] = status("web-1", ReplicaState::Restarting, None);
    assert!(m.sync(&mut statuses, with_check, 3).is_empty());
    assert_eq!(
        statuses[0].health.as_ref().map(|h| h.status),
        Some(HealthStatus::Unhealthy)
    );
    // A check of the old run that finishes late is dropped, and its task told to end.
    statuses[0] = status("web-1", ReplicaState::Running, Some(11));
    assert_eq!(m.sync(&mut statuses, with_check, 4).len(), 1);
    assert_eq!(m.observe("web-1", 10, fail(5)), None);
    assert_eq!(
        statuses[0].health.as_ref().map(|h| h.status),
        Some(HealthStatus::Starting)
    );
    // A replica no longer desired is forgotten.
    statuses.clear();
    m.sync(&mut statuses, with_check, 6);
    assert_eq!(m.observe("web-1", 11, fail(7)), None);
}
