//! The agent's own HTTP endpoint: node-local operations the server proxies to (like a kubelet's),
//! namely replica logs and exec (`exec`). Routes under `/v1`, wire format in `hivemind_client`.
//!
//! Authentication: a bearer token, for now the one the agent itself uses towards the server (in
//! `hivemind up` the admin token). Mutual TLS between server and agents comes with clustering;
//! until then the endpoint listens on loopback by default (`--agent-addr`).
//!
//! This module owns no state: logs are read from the files the runtime writes, exec goes
//! through [`ContainerRuntime::exec`].

mod exec;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hivemind_client::logs::{LogCursor, LogLine, LogStream};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::logs::file::LogFile;
use crate::runtime::{ContainerRuntime, RuntimeConfig};

/// How often a followed log file is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(150);

/// Settings of the agent endpoint.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Bearer token every request must carry.
    pub token: String,
    /// Where the runtime writes replica logs.
    pub runtime: RuntimeConfig,
}

pub(crate) struct AppState<R> {
    config: ServeConfig,
    runtime: R,
}

/// Serves the agent endpoint on `listener` until `shutdown` turns true. Open log streams end
/// with it (their clients resume from their cursors).
pub async fn serve<R: ContainerRuntime>(
    listener: tokio::net::TcpListener,
    config: ServeConfig,
    runtime: R,
    mut shutdown: watch::Receiver<bool>,
) {
    let state = Arc::new(AppState { config, runtime });
    let router = Router::new()
        .route("/v1/replicas/{id}/logs", get(replica_logs::<R>))
        .route("/v1/replicas/{id}/exec", post(exec::replica_exec::<R>))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_token::<R>,
        ))
        .with_state(state);
    let server = axum::serve(listener, router);
    tokio::select! {
        result = server => {
            if let Err(error) = result {
                warn!(%error, "agent endpoint failed");
            }
        }
        _ = async {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        } => {}
    }
}

async fn require_token<R: ContainerRuntime>(
    State(state): State<Arc<AppState<R>>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.config.token.as_bytes()) => {
            next.run(request).await
        }
        _ => error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
            "use the token the node's agent uses towards the server",
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An error in the server's JSON shape, so that `hivemind_client` reads it the same way.
pub(crate) fn error(status: StatusCode, code: &str, message: &str, fix: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "fix": fix}
    });
    (status, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct LogParams {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
    /// Accepted for the API's sake; plain log files have no timestamps to filter by.
    since: Option<u64>,
    stream: Option<String>,
    cursor: Option<String>,
}

async fn replica_logs<R: ContainerRuntime>(
    State(state): State<Arc<AppState<R>>>,
    Path(id): Path<String>,
    Query(params): Query<LogParams>,
) -> Response {
    let streams: &[LogStream] = match params.stream.as_deref() {
        None | Some("both") => &[LogStream::Stdout, LogStream::Stderr],
        Some("stdout") => &[LogStream::Stdout],
        Some("stderr") => &[LogStream::Stderr],
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("stream: unknown stream {other:?}"),
                "use stdout, stderr or both",
            )
        }
    };
    let config = &state.config.runtime;
    let path = |s: LogStream| match s {
        LogStream::Stdout => config.stdout_log(&id),
        LogStream::Stderr => config.stderr_log(&id),
    };
    if !path(LogStream::Stdout).exists() && !path(LogStream::Stderr).exists() {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("replica {id} has no logs on this node"),
            "check the replica id with `hivemind ps`",
        );
    }
    if params.since.is_some() {
        debug!("since ignored: log files carry no timestamps");
    }
    let cursors: HashMap<LogStream, u64> = params
        .cursor
        .iter()
        .flat_map(|c| c.split(','))
        .filter_map(|c| c.parse::<LogCursor>().ok())
        .filter(|c| c.replica == id)
        .map(|c| (c.stream, c.offset))
        .collect();
    let mut files = Vec::new();
    for &stream in streams {
        let file = match (cursors.get(&stream), params.tail) {
            (Some(offset), _) => LogFile::at(path(stream), *offset),
            (None, Some(n)) => match LogFile::tail(path(stream), n).await {
                Ok(f) => f,
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        &format!("cannot read the logs of {id}: {e}"),
                        "check the agent's log directory",
                    )
                }
            },
            (None, None) => LogFile::at(path(stream), 0),
        };
        files.push((stream, file));
    }
    let (tx, rx) = mpsc::channel::<Result<Vec<u8>, std::io::Error>>(64);
    tokio::spawn(pump_logs(files, params.follow, tx));
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// Sends the records of `files` (each stream's lines in order) until the files are read or,
/// when following, until the receiver is gone.
async fn pump_logs(
    mut files: Vec<(LogStream, LogFile)>,
    follow: bool,
    tx: mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    loop {
        for (stream, file) in &mut files {
            let lines = if follow {
                file.poll().await
            } else {
                file.read_to_end().await
            };
            let lines = match lines {
                Ok(lines) => lines,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if lines.is_empty() {
                continue;
            }
            let mut chunk = Vec::new();
            for line in lines {
                chunk.extend(
                    LogLine {
                        replica: None,
                        stream: *stream,
                        next: line.next,
                        text: line.text,
                    }
                    .encode(),
                );
            }
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if !follow || tx.is_closed() {
            return;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
