//! The event planner driven as the executor drives it, over an in-memory event table: statuses
//! in, events (aggregated, pruned) out.

use std::collections::{BTreeMap, HashMap};

use hivemind_types::event::{reason, MAX_AGE_MS, MAX_EVENTS};
use hivemind_types::{
    Event, EventType, ExitRecord, FailureRecord, Meta, NodeProblem, ObservedReplica, Replica,
    ReplicaState,
};

use super::*;

const NOW: u64 = 2 * MAX_AGE_MS;

fn replica(id: &str, app: &str, service: &str) -> Replica {
    Replica {
        id: id.into(),
        namespace: "default".into(),
        app: app.into(),
        service: service.into(),
        node: "n1".into(),
        spec: Default::default(),
        revision_hash: String::new(),
        meta: Meta::default(),
    }
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
        health: None,
        meta: Meta::default(),
    }
}

/// What the executor does, without the store: the statuses seen, and the event table.
#[derive(Default)]
struct Recorder {
    replicas: HashMap<String, Replica>,
    seen: HashMap<String, Seen>,
    events: BTreeMap<String, Event>,
}

impl Recorder {
    fn with(replicas: &[Replica]) -> Recorder {
        Recorder {
            replicas: replicas.iter().map(|r| (r.id.clone(), r.clone())).collect(),
            ..Default::default()
        }
    }

    /// A status written (as a report writes it): its events recorded.
    fn send(&mut self, statuses: Vec<ObservedReplica>) {
        let mut events = Vec::new();
        for s in &statuses {
            let old = self.seen.get(&s.id);
            if has_news(old, s) {
                events.extend(replica_events(self.replicas.get(&s.id), old, s));
            }
            self.seen.insert(s.id.clone(), Seen::of(s));
        }
        self.write(events, NOW);
    }

    fn write(&mut self, events: Vec<Event>, now: u64) {
        let keys: Vec<String> = self.events.keys().cloned().collect();
        let stored: HashMap<String, Event> = aggregation_candidates(&events, &keys)
            .into_iter()
            .filter_map(|k| Some((k.clone(), self.events.get(&k)?.clone())))
            .collect();
        let writes = write_plan(events, &keys, &stored, now);
        for key in &writes.delete {
            assert!(
                self.events.remove(key).is_some(),
                "deletes {key}, not stored"
            );
        }
        for e in writes.put {
            self.events.insert(e.id.clone(), e);
        }
    }

    fn replica_events(&self) -> Vec<Event> {
        self.events
            .values()
            .filter(|e| e.object.kind == Kind::Replica)
            .cloned()
            .collect()
    }

    fn by_reason(&self, reason: &str) -> Vec<Event> {
        self.replica_events()
            .into_iter()
            .filter(|e| e.reason == reason)
            .collect()
    }
}

#[test]
fn a_new_exit_is_recorded_once_with_its_lines() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    let report = vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(3, NOW - 5)],
    )];
    r.send(report.clone());
    let events = r.replica_events();
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
    // The same status again (a retry): nothing new.
    r.send(report);
    assert_eq!(r.replica_events().len(), 1);

    // A second exit (the agent reports its latest few): only that one is new.
    let two = vec![exit(3, NOW - 5), exit(0, NOW - 1)];
    r.send(vec![status("web-1", ReplicaState::Exited, two)]);
    let events = r.replica_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].event_type, EventType::Normal, "exit code 0");
}

#[test]
fn more_exits_than_an_agent_keeps_record_only_the_latest() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    let exits = (0..5).map(|i| exit(i, NOW - 100 + i as u64)).collect();
    r.send(vec![status("web-1", ReplicaState::Exited, exits)]);
    let codes: Vec<_> = r.replica_events().iter().map(|e| e.exit_code).collect();
    assert_eq!(codes, [Some(2), Some(3), Some(4)]);
}

#[test]
fn oom_kills_and_back_offs_say_why_and_how_long() {
    let mut web = replica("web-1", "shop", "web");
    web.spec.resources.memory_limit_bytes = Some(64 << 20);
    let mut r = Recorder::with(&[web]);
    let oom = ExitRecord {
        oom: true,
        restarts: 2,
        restart_delay_ms: Some(2_000),
        ..exit(137, NOW - 10)
    };
    r.send(vec![status("web-1", ReplicaState::Restarting, vec![oom])]);
    let events = r.replica_events();
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

#[test]
fn an_exit_found_by_a_restarted_agent_is_not_recorded_twice() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    r.send(vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(3, NOW - 50)],
    )]);
    // The agent restarted: it finds the container stopped and reports it as a new exit.
    let found = ExitRecord {
        adopted: true,
        ..exit(3, NOW - 2)
    };
    r.send(vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![found.clone()],
    )]);
    assert_eq!(r.replica_events().len(), 1);
    // The replica had been running when the old agent last reported: the exit is new.
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    r.send(vec![status("web-1", ReplicaState::Running, vec![])]);
    r.send(vec![status("web-1", ReplicaState::Exited, vec![found])]);
    let events = r.replica_events();
    assert_eq!(events.len(), 1);
    assert!(events[0]
        .message
        .ends_with("(found stopped when the agent started)"));
}

#[test]
fn failures_are_recorded_once_per_attempt() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    let failed = |at| ObservedReplica {
        failure: Some(FailureRecord {
            message: "image not found: nope:1".into(),
            at,
            attempts: 2,
            retry_in_ms: 2_000,
        }),
        ..status("web-1", ReplicaState::Failed, vec![])
    };
    r.send(vec![failed(NOW - 3)]);
    r.send(vec![failed(NOW - 3)]);
    let events = r.replica_events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message,
        "replica web-1 failed to start: image not found: nope:1 (attempt 2, retry in 2s)"
    );
    // The next attempt is a repeat: the one event counts it.
    r.send(vec![failed(NOW - 1)]);
    let events = r.replica_events();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].count, events[0].first_time), (2, Some(NOW - 3)));
    assert_eq!(events[0].time, NOW - 1);
}

#[test]
fn a_long_failure_message_is_cut() {
    let failed = ObservedReplica {
        failure: Some(FailureRecord {
            message: "é".repeat(MAX_MESSAGE_CHARS + 10),
            at: NOW,
            attempts: 0,
            retry_in_ms: 0,
        }),
        ..status("web-1", ReplicaState::Failed, vec![])
    };
    let events = replica_events(None, None, &failed);
    assert_eq!(events.len(), 1);
    let message = &events[0].message;
    assert!(message.contains(&format!("{}… (attempt 1)", "é".repeat(10))));
    assert_eq!(
        message.chars().filter(|c| *c == 'é').count(),
        MAX_MESSAGE_CHARS
    );
    // Without its replica (already removed) the event still names the replica and node.
    assert_eq!(events[0].object.app, None);
    assert_eq!(events[0].object.node.as_deref(), Some("n1"));
}

#[test]
fn a_crash_loop_counts_up_one_event_per_reason() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    let minute = 60_000;
    // Three exits with code 1 a minute apart, each reported on its own.
    let mut exits = Vec::new();
    for i in 0..3 {
        exits.push(exit(1, NOW - (3 - i) * minute));
        r.send(vec![status(
            "web-1",
            ReplicaState::Restarting,
            exits.clone(),
        )]);
    }
    let exited = r.by_reason(reason::EXITED);
    assert_eq!(exited.len(), 1, "{exited:?}");
    assert_eq!(exited[0].count, 3);
    assert_eq!(exited[0].first_time, Some(NOW - 3 * minute));
    assert_eq!(exited[0].time, NOW - minute);
    // Another exit code is another event; so is a repeat after the window.
    exits.push(exit(2, NOW));
    r.send(vec![status(
        "web-1",
        ReplicaState::Restarting,
        exits.clone(),
    )]);
    assert_eq!(r.by_reason(reason::EXITED).len(), 2);
    exits.push(exit(2, NOW + event::AGGREGATE_WINDOW_MS + 1));
    r.send(vec![status("web-1", ReplicaState::Restarting, exits)]);
    assert_eq!(r.by_reason(reason::EXITED).len(), 3);
}

#[test]
fn repeats_within_one_batch_count_up_one_event() {
    // Two exits with the same code in one status (the agent reported late): one event, two.
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    r.send(vec![status(
        "web-1",
        ReplicaState::Restarting,
        vec![exit(1, NOW - 20), exit(1, NOW - 10)],
    )]);
    let exited = r.by_reason(reason::EXITED);
    assert_eq!(exited.len(), 1, "{exited:?}");
    assert_eq!((exited[0].count, exited[0].first_time), (2, Some(NOW - 20)));
}

#[test]
fn node_problems_are_recorded_when_they_appear_and_when_they_go() {
    let problem = |port: u16| NodeProblem {
        reason: reason::PORT_UNAVAILABLE.to_string(),
        message: format!("published port {port} (shop/web) is not served: in use"),
    };
    let two = [problem(80), problem(81)];
    let appeared = node_problem_events("n1", &[], &two, NOW);
    let got: Vec<_> = appeared
        .iter()
        .map(|e| (e.reason.as_str(), e.time, e.event_type))
        .collect();
    assert_eq!(
        got,
        [
            (reason::PORT_UNAVAILABLE, NOW, EventType::Warning),
            (reason::PORT_UNAVAILABLE, NOW + 1, EventType::Warning)
        ]
    );
    // The same problems again: nothing.
    assert!(node_problem_events("n1", &two, &two, NOW + 5).is_empty());
    // One goes: `Resolved` names it; the other stays without a new event.
    let gone = node_problem_events("n1", &two, &[problem(81)], NOW + 9);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].reason, reason::RESOLVED);
    assert!(
        gone[0].message.starts_with("resolved: published port 80 "),
        "{gone:?}"
    );
    // Node events never aggregate: two of them at once are two events.
    let mut r = Recorder::default();
    r.write(appeared, NOW);
    assert_eq!(r.events.len(), 2);
}

#[test]
fn retention_keeps_the_newest_and_drops_the_old() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    // Full, with the oldest ten past the age limit.
    for i in 0..MAX_EVENTS as u64 {
        let time = if i < 10 { i } else { NOW - 100_000 + i };
        let e = Event::about_node("old", true, time);
        r.events.insert(e.id.clone(), e);
    }
    r.send(vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(1, NOW)],
    )]);
    // Ten too old went; the new exit came in.
    assert_eq!(r.events.len(), MAX_EVENTS - 10 + 1);
    assert!(r
        .events
        .keys()
        .all(|k| event::key_time(k).unwrap() >= NOW - MAX_AGE_MS));
    // Full of recent ones: each new event pushes out the oldest.
    for i in 0..20u64 {
        let e = Event::about_node("new", true, NOW - 50_000 + i);
        r.events.insert(e.id.clone(), e);
    }
    r.send(vec![status(
        "web-1",
        ReplicaState::Exited,
        vec![exit(1, NOW), exit(2, NOW + 1)],
    )]);
    assert_eq!(r.events.len(), MAX_EVENTS);
    assert!(r.events.keys().last().unwrap().contains("web-1"));
}

#[test]
fn events_past_the_age_limit_are_not_written() {
    let mut r = Recorder::default();
    r.write(
        vec![Event::about_node("n1", true, NOW - MAX_AGE_MS - 1)],
        NOW,
    );
    assert!(r.events.is_empty());
}

#[test]
fn a_flood_of_events_keeps_the_newest_up_to_the_cap() {
    let mut r = Recorder::default();
    let problems: Vec<NodeProblem> = (0..MAX_EVENTS + 500)
        .map(|i| NodeProblem {
            reason: reason::PORT_UNAVAILABLE.to_string(),
            message: format!("port {i}"),
        })
        .collect();
    r.write(node_problem_events("n1", &[], &problems, NOW), NOW);
    assert_eq!(r.events.len(), MAX_EVENTS);
    assert_eq!(
        r.events.values().last().unwrap().message,
        format!("port {}", MAX_EVENTS + 499)
    );
}

#[test]
fn delays_read_as_people_write_them() {
    assert_eq!(duration(800), "800ms");
    assert_eq!(duration(2_000), "2s");
    assert_eq!(duration(300_000), "5m");
    assert_eq!(duration(90_000), "1m30s");
}

fn with_health(
    status: HealthStatus,
    streak: u32,
    output: &str,
    at: Option<u64>,
) -> ObservedReplica {
    let mut s = self::status("web-1", ReplicaState::Running, Vec::new());
    s.health = Some(Health {
        status,
        failing_streak: streak,
        last_output: output.into(),
        checked_at: at,
    });
    s
}

#[test]
fn health_transitions_are_recorded_once_with_the_checks_output() {
    let mut r = Recorder::with(&[replica("web-1", "shop", "web")]);
    // Starting records nothing, not even with a check time.
    r.send(vec![with_health(HealthStatus::Starting, 0, "", None)]);
    assert!(r.replica_events().is_empty());
    r.send(vec![with_health(
        HealthStatus::Healthy,
        0,
        "ok",
        Some(NOW - 30),
    )]);
    r.send(vec![with_health(
        HealthStatus::Healthy,
        0,
        "ok",
        Some(NOW - 30),
    )]);
    let healthy = r.by_reason(reason::HEALTHY);
    assert_eq!(healthy.len(), 1);
    assert_eq!(healthy[0].event_type, EventType::Normal);
    let long = format!("no such file\n{}", "x".repeat(10_000));
    r.send(vec![with_health(
        HealthStatus::Unhealthy,
        3,
        &long,
        Some(NOW - 10),
    )]);
    r.send(vec![with_health(
        HealthStatus::Unhealthy,
        3,
        &long,
        Some(NOW - 10),
    )]);
    let unhealthy = r.by_reason(reason::UNHEALTHY);
    assert_eq!(unhealthy.len(), 1);
    let e = &unhealthy[0];
    assert_eq!(e.event_type, EventType::Warning);
    assert_eq!(e.time, NOW - 10);
    assert!(
        e.message.contains("3 health checks failed"),
        "{}",
        e.message
    );
    assert_eq!(e.object.service.as_deref(), Some("web"));
    assert_eq!(e.last_lines[0], "no such file");
    // The output is bounded: one line cut to the exit lines' width.
    assert!(e.last_lines[1].chars().count() <= ExitRecord::MAX_LINE_CHARS + 1);
}
