//! Listing recorded events with filters, against an in-memory store. (Which events a report
//! brings is tested with the planner, in `hivemind_control::plan::events`.)

use hivemind_client::wire::EventFilter;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::event::MAX_AGE_MS;
use hivemind_types::{Event, EventObject, EventType, Kind, Meta};

use super::*;

const NOW: u64 = 2 * MAX_AGE_MS;

/// An exit event of replica `id` of `app/service` in the default namespace.
fn exited(id: &str, app: &str, service: &str, code: i32, time: u64) -> Event {
    Event {
        id: Event::key(time, id, "Exited"),
        time,
        event_type: if code == 0 {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: "Exited".into(),
        object: EventObject {
            kind: Kind::Replica,
            name: id.into(),
            namespace: Some("default".into()),
            app: Some(app.into()),
            service: Some(service.into()),
            node: Some("n1".into()),
        },
        message: format!("replica {id} exited with code {code}"),
        exit_code: Some(code),
        last_lines: Vec::new(),
        count: 1,
        first_time: None,
        meta: Meta::default(),
    }
}

async fn store_with(events: &[Event]) -> Store {
    let store = Store::open_in_memory().unwrap();
    let ops = events
        .iter()
        .map(|e| Op::put(Kind::Event, e.id.clone(), e, Expect::Any))
        .collect();
    store.txn(ops).await.unwrap();
    store
}

#[tokio::test]
async fn listing_filters_by_object_type_and_limit() {
    let store = store_with(&[
        exited("web-1", "shop", "web", 1, NOW - 30),
        exited("web-2", "blog", "web", 0, NOW - 20),
        exited("db-1", "shop", "db", 2, NOW - 10),
        Event::about_node("n1", true, NOW - 5),
    ])
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
        ["web-1", "web-2", "db-1", "n1"]
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
    assert_eq!(names(newest).await, ["db-1", "n1"]);
    assert!(list(&store, "other", &only(Some("shop"), None, None))
        .await
        .unwrap()
        .is_empty());
    // Node events belong to no namespace: every namespace's listing shows them.
    let other: Vec<_> = list(&store, "other", &EventFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object.name)
        .collect();
    assert_eq!(other, ["n1"]);
}

#[tokio::test]
async fn bad_filter_values_name_the_field() {
    assert_eq!(check_limit(0).unwrap_err().field(), Some("limit"));
    assert_eq!(check_limit(5_000).unwrap_err().field(), Some("limit"));
    assert_eq!(check_limit(7).unwrap(), 7);
    assert_eq!(parse_type("urgent").unwrap_err().field(), Some("type"));
    assert_eq!(parse_type("warning").unwrap(), EventType::Warning);
}
