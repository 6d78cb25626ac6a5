//! Events: exits in reports recorded once, the recorded list, and the change stream (backlog,
//! live changes, reset after compaction).

use std::time::Duration;

use futures::StreamExt;
use hivemind_client::wire::{ChangeEvent, ChangeOp, EventFilter};
use hivemind_client::{ClientError, Event};
use hivemind_store::{Expect, Op};
use hivemind_types::{
    EventType, ExitRecord, Kind, Meta, NodeReport, ObservedReplica, ReplicaState,
};

use super::{deploy_req, put_replica, replica, TestServer, SHOP, TOKEN};

/// A report with one exit of `web-11111`, as an agent sends it.
fn exit_report(generation: u64) -> NodeReport {
    NodeReport {
        node: "n1".into(),
        address: "10.0.0.1".into(),
        agent_url: None,
        problems: Vec::new(),
        generation,
        replicas: vec![ObservedReplica {
            id: "web-11111".into(),
            node: "n1".into(),
            state: ReplicaState::Exited,
            pid: None,
            exit_code: Some(3),
            restarts: 0,
            message: "exited with code 3".into(),
            started_at: None,
            ip: None,
            exits: vec![ExitRecord {
                exit_code: 3,
                at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                oom: false,
                restarts: 0,
                restart_delay_ms: None,
                adopted: false,
                last_lines: vec!["hello".into()],
            }],
            failure: None,
            health: None,
            meta: Meta::default(),
        }],
    }
}

#[tokio::test]
async fn exits_become_recorded_events_once() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1")).await;
    // The events controller records what reports store; it runs in the server's process.
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(hivemind_control::exec::events::run_events(
        s.store.clone(),
        stopped,
    ));
    let report = exit_report(s.store.revision().await.unwrap());
    s.client.report(&report).await.unwrap();
    // A retried report records nothing new.
    s.client.report(&report).await.unwrap();
    let recorded = async || -> Vec<hivemind_types::Event> {
        let all = s
            .client
            .recorded_events(&EventFilter::default())
            .await
            .unwrap();
        all.into_iter().filter(|e| e.reason == "Exited").collect()
    };
    // Recorded asynchronously: wait (bounded) for the event, then a little longer for a
    // duplicate that must not come.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while recorded().await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no exit event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let exits = recorded().await;
    assert_eq!(exits.len(), 1, "{exits:?}");
    assert_eq!(exits[0].exit_code, Some(3));
    assert_eq!(exits[0].last_lines, ["hello"]);

    let only = EventFilter {
        replica: Some("web-11111".into()),
        event_type: Some(EventType::Warning),
        limit: Some(5),
        ..Default::default()
    };
    let got = s.client.recorded_events(&only).await.unwrap();
    assert_eq!(got.len(), 1);
    let none = EventFilter {
        replica: Some("web-99999".into()),
        ..Default::default()
    };
    assert!(s.client.recorded_events(&none).await.unwrap().is_empty());
    controller.abort();
}

#[tokio::test]
async fn events_without_the_stream_header_are_the_recorded_list() {
    let s = TestServer::start().await;
    let get = |accept: Option<&'static str>, query: &'static str| {
        let mut req = s
            .http
            .get(format!("{}/api/v1/events{query}", s.base))
            .bearer_auth(TOKEN);
        if let Some(accept) = accept {
            req = req.header("accept", accept);
        }
        req.send()
    };
    let plain = get(None, "").await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(plain.text().await.unwrap(), "[]");
    for (accept, query) in [
        (Some("text/event-stream"), ""),
        (Some("application/json, text/event-stream"), ""),
        (None, "?since=0"),
    ] {
        let resp = get(accept, query).await.unwrap();
        assert_eq!(resp.status(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            kind.starts_with("text/event-stream"),
            "{accept:?} {query}: {kind}"
        );
    }
}

async fn next_change<S>(events: &mut S) -> ChangeEvent
where
    S: futures::Stream<Item = Result<Event, ClientError>> + Unpin,
{
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Ok(Event::Change(c)))) => c,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_deliver_the_backlog_then_live_changes() {
    let s = TestServer::start().await;
    let first = put_replica(&s.store, &replica("web-11111", "n1")).await;
    put_replica(&s.store, &replica("web-22222", "n1")).await;
    let mut events = Box::pin(s.client.events(Some(first - 1)).await.unwrap());
    let a = next_change(&mut events).await;
    let b = next_change(&mut events).await;
    assert_eq!((a.key.as_str(), b.key.as_str()), ("web-11111", "web-22222"));
    assert_eq!(b.revision, first + 1);

    s.store
        .txn(vec![Op::delete(Kind::Replica, "web-11111", Expect::Any)])
        .await
        .unwrap();
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let c = next_change(&mut events).await;
    assert_eq!((c.op, c.key.as_str()), (ChangeOp::Delete, "web-11111"));
    // One deploy is one transaction: every change carries the same revision.
    let deploy: Vec<_> = [
        next_change(&mut events).await,
        next_change(&mut events).await,
        next_change(&mut events).await,
        next_change(&mut events).await,
    ]
    .into_iter()
    .collect();
    assert!(deploy.iter().all(|c| c.revision == deploy[0].revision));
    assert!(deploy.iter().any(|c| c.kind == Kind::App));
    assert_eq!(deploy.iter().filter(|c| c.kind == Kind::Service).count(), 3);
}

#[tokio::test]
async fn events_reset_when_history_was_compacted() {
    let s = TestServer::start().await;
    put_replica(&s.store, &replica("web-11111", "n1")).await;
    let rev = put_replica(&s.store, &replica("web-22222", "n1")).await;
    s.store.compact(rev).await.unwrap();
    let mut events = Box::pin(s.client.events(Some(0)).await.unwrap());
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(Event::Reset))), "{first:?}");
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert!(end.is_none(), "the stream ends after a reset");
}
