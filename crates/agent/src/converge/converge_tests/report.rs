//! What the node tells the server: report contents and heartbeat, and the assignment watcher.

use std::time::Duration;

use super::*;

#[tokio::test(start_paused = true)]
async fn the_report_carries_the_node_its_replicas_addresses_and_problems() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    let problem = NodeProblem {
        reason: hivemind_types::event::reason::PORT_UNAVAILABLE.to_string(),
        message: "published port 80 (hello/web) is not served: address in use".into(),
    };
    node.dataplane.set_problems(vec![problem.clone()]);
    node.server.assign(assignment(7, &[replica("web-a")]));

    let report = node.running(7, &["web-a"]).await;
    assert_eq!(report.node, "n1");
    assert_eq!(report.address, "192.0.2.1");
    assert_eq!(report.agent_url.as_deref(), Some("http://192.0.2.1:7946"));
    assert_eq!(report.problems, [problem]);
    let s = status(&report, "web-a").unwrap();
    assert_eq!(s.node, "n1");
    assert_eq!(s.ip.as_deref(), Some("10.42.1.2"));
    assert!(s.pid.is_some());
    assert_eq!(s.started_at, Some(T0), "the agent's clock");
    assert_eq!((s.restarts, s.exit_code, s.exits.len()), (0, None, 0));

    assert!(node.server.reports().iter().all(|r| r.call.node == "n1"));
}

/// Unchanged, the heartbeat renews the lease instead of sending the report again; a refused
/// renewal falls back to a report, and a refused report is sent again at the next beat.
#[tokio::test(start_paused = true)]
async fn an_unchanged_node_renews_its_lease_and_resends_what_was_refused() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    node.server.assign(assignment(1, &[replica("web-a")]));
    node.running(1, &["web-a"]).await;

    // (The heartbeat's phase is the running report's: 21 s hold four beats, not a fifth at
    // the very end.)
    let (reports, leases) = (node.server.reports().len(), node.server.leases().len());
    tokio::time::sleep(Duration::from_secs(21)).await;
    assert_eq!(node.server.reports().len(), reports, "nothing changed");
    assert_eq!(node.server.leases().len() - leases, 4, "beats in 21 s");

    node.server.fail_leases(1);
    let (reports, leases) = (node.server.reports().len(), node.server.leases().len());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        node.server.reports().len() - reports,
        1,
        "the refused lease's report"
    );
    assert_eq!(node.server.leases().len(), leases);

    // A change whose report is refused goes out at the next beat, as a report.
    node.server.fail_reports(1);
    node.dataplane.set_problems(vec![NodeProblem {
        reason: hivemind_types::event::reason::PORT_UNAVAILABLE.to_string(),
        message: "published port 80 is not served".into(),
    }]);
    let leases = node.server.leases().len();
    let report = node.report("the problem", |r| !r.problems.is_empty()).await;
    assert_eq!(report.problems.len(), 1);
    assert_eq!(
        node.server.failing_reports(),
        0,
        "the first report was refused"
    );
    assert_eq!(
        node.server.leases().len(),
        leases,
        "sent by the beat as a report"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(node.server.leases().len(), leases + 1, "then leases again");
}
#[tokio::test(start_paused = true)]
async fn the_watcher_survives_a_failing_server_and_long_polls_after_the_generation() {
    let runtime = FakeRuntime::new();
    let node = Node::start(runtime.clone());
    node.server.fail_assignments(3);
    node.server.assign(assignment(4, &[replica("web-a")]));
    node.running(4, &["web-a"]).await;
    node.server.assign(assignment(9, &[]));
    node.report("generation 9", |r| {
        r.generation == 9 && r.replicas.is_empty()
    })
    .await;
    let polls = node.server.polls();
    assert_eq!(
        &polls[..4],
        [None, None, None, None],
        "retried from scratch"
    );
    assert!(
        polls.contains(&Some(4)) && polls.contains(&Some(9)),
        "{polls:?}"
    );
    eventually("web-a removed", || runtime.container_ids().is_empty()).await;
}
