//! `GET /v1/replicas/{id}/logs`: a replica's log records, read from the files its log driver
//! writes (`hivemind_logs`), as the wire records of `hivemind_client::logs`.
//!
//! Filters are applied here, on the node: `stream`, `since` (against each record's timestamp)
//! and `tail` (the last N records of both streams, counted back across rotated files). A
//! `cursor` for this replica overrides `tail`: the stream resumes exactly after the last
//! record the caller saw, even if its file was rotated away meanwhile (then at the oldest
//! file left).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use hivemind_client::logs::{parse_since, LogCursor, LogLine, LogStream};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{error, shorten, AppState, ReplicaId};
use hivemind_logs::reader::{Entry, ReplicaLog};
use hivemind_runtime::ContainerRuntime;

/// How often a drained, followed log is checked for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(150);

#[derive(Debug, Deserialize)]
pub(super) struct LogParams {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
    /// RFC 3339 (what the server sends), or anything `parse_since` reads.
    since: Option<String>,
    stream: Option<String>,
    cursor: Option<String>,
}

/// Which records go out.
#[derive(Debug, Clone, Copy)]
struct Filter {
    stream: Option<LogStream>,
    since: Option<SystemTime>,
}

impl Filter {
    fn keeps(&self, e: &Entry) -> bool {
        self.stream.is_none_or(|s| s == e.stream) && self.since.is_none_or(|t| e.time >= t)
    }
}

pub(super) async fn replica_logs<R: ContainerRuntime>(
    State(state): State<Arc<AppState<R>>>,
    ReplicaId(id): ReplicaId,
    params: Result<Query<LogParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        // serde's message names the parameter (`tail: invalid digit found in string`).
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("query: {}", rejection.body_text()),
                "pass follow=true|false, tail as a whole number, since as an RFC 3339 time, \
                 stream=stdout|stderr|both and cursor=REPLICA:SEQ:OFFSET",
            )
        }
    };
    let stream = match params.stream.as_deref() {
        None | Some("both") => None,
        Some("stdout") => Some(LogStream::Stdout),
        Some("stderr") => Some(LogStream::Stderr),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("stream: unknown stream {}", shorten(other)),
                "use stdout, stderr or both",
            )
        }
    };
    let since = match params.since.as_deref() {
        None => None,
        Some(s) => match parse_since(s, SystemTime::now()) {
            Ok(t) => Some(t),
            Err(message) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("since: {message}"),
                    "pass since as an RFC 3339 time like 2026-11-27T07:43:22Z",
                )
            }
        },
    };
    // Every cursor must be well-formed (a caller's bug otherwise); the first for this replica
    // applies.
    let mut cursor = None;
    let words = params.cursor.iter().flat_map(|c| c.split(','));
    for word in words.filter(|w| !w.is_empty()) {
        match word.parse::<LogCursor>() {
            Ok(c) if c.replica == id && cursor.is_none() => cursor = Some(c),
            Ok(_) => {}
            Err(()) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("cursor: {} is not REPLICA:SEQ:OFFSET", shorten(word)),
                    "pass cursors as printed by the log stream",
                )
            }
        }
    }
    let dir = state.config.runtime.replica_log_dir(&id);
    if !dir.is_dir() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("replica {id} has no logs on this node"),
            "check the replica id with `hivemind ps`",
        );
    }
    // Where reading starts: a cursor wins, then a tail, then a time.
    let opened = match (cursor, params.tail, since) {
        (Some(cursor), _, _) => Ok(ReplicaLog::at(dir, cursor.pos)),
        (None, Some(n), _) => ReplicaLog::tail(dir, n).await,
        (None, None, Some(t)) => ReplicaLog::since(dir, t).await,
        (None, None, None) => Ok(ReplicaLog::start(dir)),
    };
    let mut log = match opened {
        Ok(log) => log,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &format!("cannot read the logs of {id}: {e}"),
                "check the agent's log directory",
            )
        }
    };
    if params.follow {
        log.follow();
    }
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(pump_logs(log, Filter { stream, since }, params.follow, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Sends the records of `log` until it is read or, when following, until the receiver is
/// gone. A follower catches up without pausing and only waits once drained.
async fn pump_logs(
    mut log: ReplicaLog,
    filter: Filter,
    follow: bool,
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    loop {
        // A plain read goes chunk by chunk too, so a large log is never held in memory whole;
        // it ends once a poll makes no progress.
        let before = log.pos();
        let entries = log.poll().await;
        let entries = match entries {
            Ok(entries) => entries,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let drained = entries.is_empty();
        let progressed = log.pos() != before;
        let mut chunk = Vec::new();
        for e in entries.into_iter().filter(|e| filter.keeps(e)) {
            chunk.extend(
                LogLine {
                    replica: None,
                    next: e.next,
                    time: e.time,
                    stream: e.stream,
                    partial: e.partial,
                    text: e.text,
                }
                .encode(),
            );
        }
        if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
            return;
        }
        if (!follow && !progressed) || tx.is_closed() {
            return;
        }
        if drained && follow {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}
