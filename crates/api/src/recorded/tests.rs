//! Recording events from reports, retention and listing, against an in-memory store.

use hivemind_client::wire::EventFilter;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::event::{reason, MAX_AGE_MS, MAX_EVENTS};
use hivemind_types::{
    Event, EventType, ExitRecord, FailureRecord, Kind, Meta, Node, NodeProblem, NodeReport,
    ObservedReplica, Replica, ReplicaState,
};

use super::*;
use crate::report::report;

const NOW: u64 = 2 * MAX_AGE_MS;

fn replica(id: &str, app: &str, service: &str) -> Replica {
    crate::testing::replica(id, app, service, "n1")
}

async fn store_with(replicas: &[Replica]) -> Store {
    let store = Store::open_in_memory().unwrap();
    let ops = replicas
        .iter()
        .map(|r| Op::put(Kind::Replica, r.id.clone(), r, Expect::Any))
        .collect();
    store.txn(ops).await.unwrap();
    store
}

fn exit(code: i32, at: u64) -> ExitRecord {
    ExitRecord {
        exit_code: code,
        at,
        oom: false,
        restarts: 0,
        restart_delay_ms: None,
        adopted: false,
        last_lines: vec!["starting".into(), format!("bye {code}")],
    }
}

fn status(id: &str, state: ReplicaState, exits: Vec<ExitRecord>) -> ObservedReplica {
    ObservedReplica {
        id: id.into(),
        node: "n1".into(),
        state,
        pid: None,
        exit_code: exits.last().map(|e| e.exit_code),
        restarts: 0,
        message: String::new(),
        started_at: None,
        ip: None,
        exits,
        failure: None,
        meta: Meta::default(),
    }
}

async fn send(store: &Store, statuses: Vec<ObservedReplica>) -> u64 {
    let r = NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems: Vec::new(),
        generation: 0,
        replicas: statuses,
    };
    report(store, "n1", &r, NOW).await.unwrap()
}

async fn replica_events(store: &Store) -> Vec<Event> {
    store
        .list::<Event>(Kind::Event, "")
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.object.kind == Kind::Replica)
        .collect()
}

#[tokio::test]
async fn a_new_exit_is_recorded_once_with_its_lines() {
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    let report = vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(3, NOW - 5)],
    )];
    send(&store, report.clone()).await;
    let events = replica_events(&store).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.reason.as_str(), e.event_type, e.exit_code, e.time),
        (reason::EXITED, EventType::Warning, Some(3), NOW - 5)
    );
    assert_eq!(e.message, "replica web-1 exited with code 3");
    assert_eq!(e.last_lines, ["starting", "bye 3"]);
    assert_eq!(
        (e.object.app.as_deref(), e.object.service.as_deref()),
        (Some("shop"), Some("web"))
    );
    // The status is stored without the lines, which live in the event.
    let stored: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.exits[0].last_lines.is_empty());

    // The same report again (a retry, or a heartbeat): nothing new, and the status is not
    // rewritten either.
    let status_rev = stored.meta.revision;
    send(&store, report).await;
    assert_eq!(replica_events(&store).await.len(), 1);
    let again: ObservedReplica = store
        .get(Kind::ReplicaStatus, "web-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.meta.revision, status_rev);

    // A second exit (the agent reports its latest few): only that one is new.
    let two = vec![exit(3, NOW - 5), exit(0, NOW - 1)];
    send(&store, vec![status("web-1", ReplicaState::Exited, two)]).await;
    let events = replica_events(&store).await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, EventType::Normal, "exit code 0");
}

#[tokio::test]
async fn oom_kills_and_back_offs_say_why_and_how_long() {
    let mut r = replica("web-1", "shop", "web");
    r.spec.resources.memory_limit_bytes = Some(64 << 20);
    let store = store_with(&[r]).await;
    let oom = ExitRecord {
        oom: true,
        restarts: 2,
        restart_delay_ms: Some(2_000),
        ..exit(137, NOW - 10)
    };
    send(
        &store,
        vec![status("web-1", ReplicaState::Restarting, vec![oom])],
    )
    .await;
    let events = replica_events(&store).await;
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.reason.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                reason::OOM_KILLED,
                "replica web-1 killed for memory (limit 64 MiB), exit code 137"
            ),
            (
                reason::BACK_OFF,
                "back-off 2s restarting replica web-1 after exit code 137 (restart 3)"
            ),
        ]
    );
}

#[tokio::test]
async fn an_exit_found_by_a_restarted_agent_is_not_recorded_twice() {
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    send(
        &store,
        vec![status(
            "web-1",
            ReplicaState::Exited,
            vec![exit(3, NOW - 50)],
        )],
    )
    .await;
    // The agent restarted: it finds the container stopped and reports it as a new exit.
    let found = ExitRecord {
        adopted: true,
        ..exit(3, NOW - 2)
    };
    send(
        &store,
        vec![status("web-1", ReplicaState::Exited, vec![found.clone()])],
    )
    .await;
    assert_eq!(replica_events(&store).await.len(), 1);
    // The replica had been running when the old agent last reported: the exit is new.
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    send(&store, vec![status("web-1", ReplicaState::Running, vec![])]).await;
    send(
        &store,
        vec![status("web-1", ReplicaState::Exited, vec![found])],
    )
    .await;
    let events = replica_events(&store).await;
    assert_eq!(events.len(), 1);
    assert!(events[0]
        .message
        .ends_with("(found stopped when the agent started)"));
}

#[tokio::test]
async fn failures_are_recorded_once_per_attempt() {
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    let failed = |at| ObservedReplica {
        failure: Some(FailureRecord {
            message: "image not found: nope:1".into(),
            at,
            attempts: 2,
            retry_in_ms: 2_000,
        }),
        ..status("web-1", ReplicaState::Failed, vec![])
    };
    send(&store, vec![failed(NOW - 3)]).await;
    send(&store, vec![failed(NOW - 3)]).await;
    let events = replica_events(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message,
        "replica web-1 failed to start: image not found: nope:1 (attempt 2, retry in 2s)"
    );
    // The next attempt is a repeat: the one event counts it.
    send(&store, vec![failed(NOW - 1)]).await;
    let events = replica_events(&store).await;
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].count, events[0].first_time), (2, Some(NOW - 3)));
    assert_eq!(events[0].time, NOW - 1);
}

#[tokio::test]
async fn a_crash_loop_counts_up_one_event_per_reason() {
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    let minute = 60_000;
    // Three exits with code 1 a minute apart, each reported on its own.
    let mut exits = Vec::new();
    for i in 0..3 {
        exits.push(exit(1, NOW - (3 - i) * minute));
        send(
            &store,
            vec![status("web-1", ReplicaState::Restarting, exits.clone())],
        )
        .await;
    }
    let by_reason = async |store: &Store, reason: &str| -> Vec<Event> {
        replica_events(store)
            .await
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    };
    let exited = by_reason(&store, reason::EXITED).await;
    assert_eq!(exited.len(), 1, "{exited:?}");
    assert_eq!(exited[0].count, 3);
    assert_eq!(exited[0].first_time, Some(NOW - 3 * minute));
    assert_eq!(exited[0].time, NOW - minute);
    // Another exit code is another event; so is a repeat after the window.
    exits.push(exit(2, NOW));
    send(
        &store,
        vec![status("web-1", ReplicaState::Restarting, exits.clone())],
    )
    .await;
    assert_eq!(by_reason(&store, reason::EXITED).await.len(), 2);
    exits.push(exit(
        2,
        NOW + hivemind_types::event::AGGREGATE_WINDOW_MS + 1,
    ));
    send(
        &store,
        vec![status("web-1", ReplicaState::Restarting, exits.clone())],
    )
    .await;
    assert_eq!(by_reason(&store, reason::EXITED).await.len(), 3);
}

#[tokio::test]
async fn node_problems_are_recorded_when_they_appear_and_when_they_go() {
    let store = store_with(&[]).await;
    let problem = |port: u16| NodeProblem {
        reason: reason::PORT_UNAVAILABLE.to_string(),
        message: format!("published port {port} (shop/web) is not served: in use"),
    };
    let with = |problems: Vec<NodeProblem>| NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems,
        generation: 0,
        replicas: vec![],
    };
    let reasons = async |store: &Store| -> Vec<String> {
        store
            .list::<Event>(Kind::Event, "")
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.reason != reason::READY)
            .map(|e| format!("{} {}", e.reason, e.message))
            .collect()
    };
    // Two at once get two events; the same report again adds none.
    report(&store, "n1", &with(vec![problem(80), problem(81)]), NOW)
        .await
        .unwrap();
    report(&store, "n1", &with(vec![problem(80), problem(81)]), NOW + 1)
        .await
        .unwrap();
    assert_eq!(
        reasons(&store).await.len(),
        2,
        "{:?}",
        reasons(&store).await
    );
    let node: Node = store.get(Kind::Node, "n1").await.unwrap().unwrap();
    assert_eq!(node.problems, vec![problem(80), problem(81)]);
    // One goes: `Resolved` names it; the other stays without a new event.
    report(&store, "n1", &with(vec![problem(81)]), NOW + 2)
        .await
        .unwrap();
    let all = reasons(&store).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        all[2].starts_with("Resolved resolved: published port 80 "),
        "{all:?}"
    );
}

#[tokio::test]
async fn retention_keeps_the_newest_and_drops_the_old() {
    let store = store_with(&[replica("web-1", "shop", "web")]).await;
    // Full, with the oldest ten past the age limit.
    let ops = (0..MAX_EVENTS as u64)
        .map(|i| {
            let time = if i < 10 { i } else { NOW - 100_000 + i };
            let e = Event::about_node("old", true, time);
            Op::put(Kind::Event, e.id.clone(), &e, Expect::Any)
        })
        .collect();
    store.txn(ops).await.unwrap();
    send(
        &store,
        vec![status("web-1", ReplicaState::Exited, vec![exit(1, NOW)])],
    )
    .await;
    let keys = store.keys(Kind::Event, "").await.unwrap();
    // Ten too old went; the new exit came in.
    assert_eq!(keys.len(), MAX_EVENTS - 10 + 1);
    assert!(keys
        .iter()
        .all(|k| hivemind_types::event::key_time(k).unwrap() >= NOW - MAX_AGE_MS));
    // Full of recent ones: each new event pushes out the oldest.
    let ops = (0..20u64)
        .map(|i| {
            let e = Event::about_node("new", true, NOW - 50_000 + i);
            Op::put(Kind::Event, e.id.clone(), &e, Expect::Any)
        })
        .collect();
    store.txn(ops).await.unwrap();
    send(
        &store,
        vec![status(
            "web-1",
            ReplicaState::Exited,
            vec![exit(1, NOW), exit(2, NOW + 1)],
        )],
    )
    .await;
    let keys = store.keys(Kind::Event, "").await.unwrap();
    assert_eq!(keys.len(), MAX_EVENTS);
    assert!(keys.last().unwrap().contains("web-1"));
}

#[tokio::test]
async fn listing_filters_by_object_type_and_limit() {
    let store = store_with(&[
        replica("web-1", "shop", "web"),
        replica("web-2", "blog", "web"),
        replica("db-1", "shop", "db"),
    ])
    .await;
    send(
        &store,
        vec![
            status("web-1", ReplicaState::Exited, vec![exit(1, NOW - 30)]),
            status("web-2", ReplicaState::Exited, vec![exit(0, NOW - 20)]),
            status("db-1", ReplicaState::Exited, vec![exit(2, NOW - 10)]),
        ],
    )
    .await;
    let names = async |filter: EventFilter| -> Vec<String> {
        list(&store, "default", &filter)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.object.name)
            .collect()
    };
    assert_eq!(
        names(EventFilter::default()).await,
        ["web-1", "web-2", "db-1"]
    );
    let only = |app: Option<&str>, service: Option<&str>, replica: Option<&str>| EventFilter {
        app: app.map(String::from),
        service: service.map(String::from),
        replica: replica.map(String::from),
        ..Default::default()
    };
    assert_eq!(
        names(only(Some("shop"), None, None)).await,
        ["web-1", "db-1"]
    );
    assert_eq!(
        names(only(None, Some("web"), None)).await,
        ["web-1", "web-2"]
    );
    assert_eq!(
        names(only(Some("shop"), Some("web"), None)).await,
        ["web-1"]
    );
    assert_eq!(names(only(None, None, Some("db-1"))).await, ["db-1"]);
    let warnings = EventFilter {
        event_type: Some(EventType::Warning),
        ..Default::default()
    };
    assert_eq!(names(warnings).await, ["web-1", "db-1"]);
    let newest = EventFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(names(newest).await, ["web-2", "db-1"]);
    assert!(list(&store, "other", &only(Some("shop"), None, None))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn bad_filter_values_name_the_field() {
    assert_eq!(check_limit(0).unwrap_err().field(), Some("limit"));
    assert_eq!(check_limit(5_000).unwrap_err().field(), Some("limit"));
    assert_eq!(check_limit(7).unwrap(), 7);
    assert_eq!(parse_type("urgent").unwrap_err().field(), Some("type"));
    assert_eq!(parse_type("warning").unwrap(), EventType::Warning);
}

#[tokio::test]
async fn delays_read_as_people_write_them() {
    assert_eq!(duration(800), "800ms");
    assert_eq!(duration(2_000), "2s");
    assert_eq!(duration(300_000), "5m");
    assert_eq!(duration(90_000), "1m30s");
}
