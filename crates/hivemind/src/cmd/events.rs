//! `events [-f] [SERVICE|app/SERVICE|REPLICA]`: the recorded events (exits with their last
//! lines, OOM kills, back-offs, failed starts, nodes ready or down), like `kubectl events`.
//!
//! `-f` prints the list, then follows the change stream for new events. The stream is opened
//! before the list is read, so nothing falls between them; events already printed (by id) are
//! skipped. When the stream breaks it resumes from the last revision seen, and after a `reset`
//! (the server could not resume without a gap) it lists again.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use hivemind_client::wire::{ChangeOp, EventFilter};
use hivemind_client::{Client, Event as StreamItem};
use hivemind_types::{Event, EventType, Kind};

use crate::cli::{EventsArgs, GlobalArgs, OutputFormat};
use crate::config::client;
use crate::output::{age, span};

/// Wait before reconnecting to a server that went away.
const RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn events(global: &GlobalArgs, args: EventsArgs) -> anyhow::Result<()> {
    let client = client(global)?;
    let filter = resolve(&client, args.target.as_deref()).await?;
    if !args.follow {
        let events = client.recorded_events(&filter).await?;
        return print(global.output, &events);
    }
    follow(&client, global, &filter).await
}

async fn follow(client: &Client, global: &GlobalArgs, filter: &EventFilter) -> anyhow::Result<()> {
    let mut printed: HashSet<String> = HashSet::new();
    let mut header = global.output == OutputFormat::Table;
    // `None`: list first (at the start and after a reset); `Some(rev)`: resume the stream.
    let mut resume: Option<u64> = None;
    loop {
        let stream = match client.events(resume).await {
            Ok(stream) => stream,
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(RECONNECT_DELAY).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut stream = Box::pin(stream);
        if resume.is_none() {
            let listed = match client.recorded_events(filter).await {
                Ok(listed) => listed,
                Err(e) if is_transient(&e) => {
                    tokio::time::sleep(RECONNECT_DELAY).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let fresh: Vec<Event> = listed
                .into_iter()
                .filter(|e| printed.insert(e.id.clone()))
                .collect();
            print_follow(global.output, &fresh, &mut header)?;
        }
        while let Some(item) = stream.next().await {
            match item {
                Ok(StreamItem::Change(change)) => {
                    resume = Some(change.revision);
                    if change.kind != Kind::Event || change.op != ChangeOp::Put {
                        continue;
                    }
                    let Ok(event) = serde_json::from_value::<Event>(change.value) else {
                        continue;
                    };
                    if matches(&event, client.namespace(), filter)
                        && printed.insert(event.id.clone())
                    {
                        print_follow(global.output, &[event], &mut header)?;
                    }
                }
                Ok(StreamItem::Reset) => {
                    resume = None;
                    break;
                }
                Err(_) => break,
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// What the server's filter does, for events that arrive on the change stream.
fn matches(event: &Event, namespace: &str, filter: &EventFilter) -> bool {
    let by_object = filter.app.is_some() || filter.service.is_some() || filter.replica.is_some();
    let is = |want: &Option<String>, have: &Option<String>| {
        want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
    };
    let in_namespace = match &event.object.namespace {
        Some(ns) => ns == namespace,
        None => !by_object,
    };
    in_namespace
        && is(&filter.app, &event.object.app)
        && is(&filter.service, &event.object.service)
        && filter
            .replica
            .as_ref()
            .is_none_or(|r| event.object.kind == Kind::Replica && &event.object.name == r)
        && filter.event_type.is_none_or(|t| t == event.event_type)
}

/// `app/web` and a bare service name are services; anything else is taken as a replica id
/// (which may be gone: its events outlive it).
async fn resolve(client: &Client, target: Option<&str>) -> anyhow::Result<EventFilter> {
    let mut filter = EventFilter::default();
    let Some(target) = target else {
        return Ok(filter);
    };
    if let Some((app, name)) = target.split_once('/') {
        filter.app = Some(app.to_string());
        filter.service = Some(name.to_string());
        return Ok(filter);
    }
    match client.find_service(target).await {
        Ok(service) => {
            filter.app = Some(service.app);
            filter.service = Some(service.name);
        }
        Err(e) if e.is_not_found() => filter.replica = Some(target.to_string()),
        Err(e) => return Err(e.into()),
    }
    Ok(filter)
}

fn is_transient(e: &hivemind_client::ClientError) -> bool {
    match e {
        hivemind_client::ClientError::Transport { .. } => true,
        hivemind_client::ClientError::Api { status, .. } => *status >= 500,
        _ => false,
    }
}

fn print(format: OutputFormat, events: &[Event]) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(events)?),
        OutputFormat::Yaml => print!("{}", serde_yaml_ng::to_string(events)?),
        OutputFormat::Table => print!("{}", table(events, true, false)),
    }
    Ok(())
}

/// While following, JSON is one event per line and YAML one document per event, so that a
/// reader can act on each as it comes.
fn print_follow(format: OutputFormat, events: &[Event], header: &mut bool) -> anyhow::Result<()> {
    match format {
        OutputFormat::Json => {
            for e in events {
                println!("{}", serde_json::to_string(e)?);
            }
        }
        OutputFormat::Yaml => {
            for e in events {
                print!("---\n{}", serde_yaml_ng::to_string(e)?);
            }
        }
        OutputFormat::Table => {
            if *header || !events.is_empty() {
                print!("{}", table(events, *header, true));
                *header = false;
            }
        }
    }
    Ok(())
}

const HEADERS: [&str; 5] = ["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"];
/// Column widths while following, when later rows are not known yet.
const MIN_WIDTHS: [usize; 4] = [4, 7, 10, 24];

/// The events as rows, each exit's last lines indented below it (as `kubectl describe` shows a
/// container's last state). `following`: columns at least [`MIN_WIDTHS`] wide, so that rows
/// printed later line up with earlier ones as far as possible.
fn table(events: &[Event], header: bool, following: bool) -> String {
    let rows: Vec<[String; 5]> = events
        .iter()
        .map(|e| {
            [
                match e.first_time.filter(|_| e.count > 1) {
                    // As kubectl shows repeats: `5s (x3 over 2m)`.
                    Some(first) => format!(
                        "{} (x{} over {})",
                        age(e.time),
                        e.count,
                        span(e.time.saturating_sub(first))
                    ),
                    None => age(e.time),
                },
                match e.event_type {
                    EventType::Normal => "Normal".to_string(),
                    EventType::Warning => "Warning".to_string(),
                },
                e.reason.clone(),
                format!("{}/{}", e.object.kind.as_str(), e.object.name),
                e.message.clone(),
            ]
        })
        .collect();
    let mut widths = if following { MIN_WIDTHS } else { [0; 4] };
    for (i, w) in widths.iter_mut().enumerate() {
        *w = rows
            .iter()
            .map(|r| r[i].chars().count())
            .chain([HEADERS[i].len(), *w])
            .max()
            .unwrap_or(0);
    }
    let line = |cells: [&str; 5]| {
        let mut s = String::new();
        for (cell, width) in cells[..4].iter().zip(widths) {
            s.push_str(&format!("{cell:<width$}   "));
        }
        s.push_str(cells[4]);
        format!("{}\n", s.trim_end())
    };
    let mut out = String::new();
    if header {
        out.push_str(&line(HEADERS));
    }
    for (row, event) in rows.iter().zip(events) {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
        for text in &event.last_lines {
            out.push_str(&format!("    | {text}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use hivemind_types::event::reason;
    use hivemind_types::{EventObject, Meta};

    use super::*;

    fn exited(name: &str, namespace: &str, service: &str) -> Event {
        Event {
            id: Event::key(1, name, reason::EXITED),
            time: 0,
            event_type: EventType::Warning,
            reason: reason::EXITED.into(),
            object: EventObject {
                kind: Kind::Replica,
                name: name.into(),
                namespace: Some(namespace.into()),
                app: Some("shop".into()),
                service: Some(service.into()),
                node: Some("n1".into()),
            },
            message: format!("replica {name} exited with code 3"),
            exit_code: Some(3),
            last_lines: vec!["boom".into()],
            count: 1,
            first_time: None,
            meta: Meta::default(),
        }
    }

    #[test]
    fn exits_show_their_last_lines_below() {
        let t = table(&[exited("web-abcde", "default", "web")], true, false);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("AGE "), "{t}");
        assert!(
            lines[1].contains("Warning   Exited   replica/web-abcde"),
            "{t}"
        );
        assert!(
            lines[1].ends_with("replica web-abcde exited with code 3"),
            "{t}"
        );
        assert_eq!(lines[2], "    | boom");
    }

    #[test]
    fn repeats_show_their_count_and_span() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut e = exited("web-abcde", "default", "web");
        e.time = now - 5_000;
        e.count = 3;
        e.first_time = Some(now - 125_000);
        let t = table(&[e], false, false);
        assert!(t.starts_with("5s (x3 over 2m)   Warning"), "{t}");
    }

    #[test]
    fn streamed_events_are_filtered_like_listed_ones() {
        let e = exited("web-abcde", "default", "web");
        let node = Event::about_node("n1", true, 5);
        let all = EventFilter::default();
        let web = EventFilter {
            service: Some("web".into()),
            ..Default::default()
        };
        assert!(matches(&e, "default", &all));
        assert!(!matches(&e, "other", &all));
        assert!(matches(&e, "default", &web));
        assert!(matches(&node, "default", &all));
        assert!(!matches(&node, "default", &web));
        let warnings = EventFilter {
            event_type: Some(EventType::Warning),
            ..Default::default()
        };
        assert!(!matches(&node, "default", &warnings));
    }
}
