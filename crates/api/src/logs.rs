//! Logs, proxied (exec is proxied the same way, in `exec`): the server finds the node that runs
//! a replica and streams that node agent's answer through (kubelet-style). The server keeps no
//! logs itself; filters (`tail`, `since`, `stream`, cursors) are applied by the agents.
//!
//! A replica's node must have reported an `agent_url`; a node without one, or one that cannot be
//! reached, gives 503. Service logs merge the streams of all its replicas (as they are when the
//! request arrives), each record naming its replica: by timestamp for a plain read (each
//! replica's records are in time order, so a k-way merge streams without buffering), as they
//! come when following.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::{Stream, StreamExt};
use hivemind_client::logs::{parse_since, LogCursor, LogLine, LogQuery, LogStream};
use hivemind_client::wire::{ErrorBody, ReplicaFilter};
use hivemind_client::{AgentClient, ClientError};
use hivemind_store::Store;
use hivemind_types::{Kind, Node, Replica};

use crate::error::ApiError;
use crate::extract::{shorten, Params};
use crate::{report, scale};
use hivemind_types::error_chain;

/// What the server presents to agents: per node, never the admin token (see `tokens`).
pub(crate) use crate::tokens::AgentKey as AgentToken;

/// How long the server waits for a node agent's response head (default
/// [`hivemind_client::AGENT_RESPONSE_TIMEOUT`]); layer it onto the router as an
/// extension to change it.
#[derive(Debug, Clone, Copy)]
pub struct AgentTimeout(pub std::time::Duration);

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(
    get, path = "/api/v1/replicas/{id}/logs",
    params(
        ("id" = String, Path,),
        ("follow" = Option<bool>, Query, description = "keep the stream open for new lines"),
        ("tail" = Option<u64>, Query, description = "only the last N records of each replica (both streams)"),
        ("since" = Option<String>, Query, description = "only records at or after this time: RFC 3339, a duration before now (10m) or Unix seconds"),
        ("stream" = Option<String>, Query, description = "stdout, stderr or both (default)"),
        ("cursor" = Option<String>, Query, description = "REPLICA:SEQ:OFFSET,... to resume from"),
        ("namespace" = Option<String>, Query,),
    ),
    responses(
        (status = 200, description = "records `SEQ:OFFSET TIME STREAM TAG TEXT`, one per line", body = String, content_type = "text/plain"),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn replica_logs(
    State(store): State<Store>,
    Extension(token): Extension<AgentToken>,
    timeout: Option<Extension<AgentTimeout>>,
    params: Params,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let query = log_query(&params)?;
    let replica = replica(&store, &params.namespace()?, &id).await?;
    let agent = agent_for(&store, &replica, &token, timeout.map(|t| t.0)).await?;
    let lines = agent
        .logs(&replica.id, &query)
        .await
        .map_err(|e| agent_error(&replica, e))?;
    Ok(text_body(lines))
}

#[utoipa::path(
    get, path = "/api/v1/services/{app}/{name}/logs",
    params(
        ("app" = String, Path,), ("name" = String, Path,),
        ("follow" = Option<bool>, Query, description = "keep the stream open for new lines"),
        ("tail" = Option<u64>, Query, description = "only the last N records of each replica (both streams)"),
        ("since" = Option<String>, Query, description = "only records at or after this time: RFC 3339, a duration before now (10m) or Unix seconds"),
        ("stream" = Option<String>, Query, description = "stdout, stderr or both (default)"),
        ("cursor" = Option<String>, Query, description = "REPLICA:SEQ:OFFSET,... to resume from"),
        ("namespace" = Option<String>, Query,),
    ),
    responses(
        (status = 200, description = "records `REPLICA:SEQ:OFFSET TIME STREAM TAG TEXT` of all replicas, merged", body = String, content_type = "text/plain"),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn service_logs(
    State(store): State<Store>,
    Extension(token): Extension<AgentToken>,
    timeout: Option<Extension<AgentTimeout>>,
    params: Params,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    let query = log_query(&params)?;
    let namespace = params.namespace()?;
    scale::get_service(&store, &namespace, &app, &name).await?;
    let filter = ReplicaFilter {
        app: Some(app.clone()),
        service: Some(name.clone()),
        node: None,
    };
    let mut streams = Vec::new();
    let mut last_error = None;
    for view in report::replica_views(&store, &namespace, &filter).await? {
        let replica = view.replica;
        let opened = match agent_for(&store, &replica, &token, timeout.map(|t| t.0)).await {
            Ok(agent) => agent
                .logs(&replica.id, &query)
                .await
                .map_err(|e| agent_error(&replica, e)),
            Err(e) => Err(e),
        };
        match opened {
            Ok(lines) => {
                let id = replica.id.clone();
                streams.push(
                    lines
                        .map(move |line| {
                            line.map(|l| LogLine {
                                replica: Some(id.clone()),
                                ..l
                            })
                        })
                        .boxed(),
                );
            }
            // A replica not started yet has no logs; other replicas' logs still come.
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(replica = %replica.id, error = %e, "cannot read replica logs");
                last_error = Some(e);
            }
        }
    }
    if streams.is_empty() {
        if let Some(e) = last_error {
            return Err(e);
        }
    }
    if query.follow {
        Ok(text_body(futures::stream::select_all(streams)))
    } else {
        Ok(text_body(merge_by_time(streams)))
    }
}

type LineStream = futures::stream::BoxStream<'static, Result<LogLine, ClientError>>;

/// Merges streams that are each in time order into one in time order: the earliest head goes
/// first. Each step waits for every stream's head, so this is for streams that end (plain
/// reads), not for following. An error is passed on in place of its stream's record.
fn merge_by_time(streams: Vec<LineStream>) -> impl Stream<Item = Result<LogLine, ClientError>> {
    let heads: Vec<(LineStream, Option<Result<LogLine, ClientError>>)> =
        streams.into_iter().map(|s| (s, None)).collect();
    futures::stream::unfold(heads, |mut heads| async move {
        // Fill every empty head; a stream that ended is dropped.
        let mut i = 0;
        while i < heads.len() {
            if heads[i].1.is_none() {
                match heads[i].0.next().await {
                    Some(item) => heads[i].1 = Some(item),
                    None => {
                        drop(heads.remove(i));
                        continue;
                    }
                }
            }
            i += 1;
        }
        let earliest = heads
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, head))| match head {
                // Errors first, so that they are not held back behind records.
                Some(Err(_)) | None => None,
                Some(Ok(line)) => Some(line.time),
            })
            .map(|(i, _)| i)?;
        let item = heads[earliest].1.take()?;
        Some((item, heads))
    })
}

/// The records as a streamed body. Records that are ready together go out as one chunk (one
/// write instead of one per line); a follower's lone record still goes at once.
fn text_body(lines: impl Stream<Item = Result<LogLine, ClientError>> + Send + 'static) -> Response {
    let chunks = lines.ready_chunks(1024).flat_map(|batch| {
        let mut bytes = Vec::new();
        let mut error = None;
        for line in batch {
            match line {
                Ok(line) => bytes.extend(line.encode()),
                Err(e) => {
                    // What came before the error is still sent; the error ends the body.
                    error = Some(e);
                    break;
                }
            }
        }
        let mut out = vec![Ok(Bytes::from(bytes))];
        out.extend(error.map(Err));
        futures::stream::iter(out)
    });
    let body = Body::from_stream(chunks);
    ([("content-type", "text/plain; charset=utf-8")], body).into_response()
}

fn log_query(params: &Params) -> ApiResult<LogQuery> {
    let follow = match params.str("follow") {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "follow",
                format!("follow: {} is not true or false", shorten(other)),
                "pass follow=true or follow=false",
            ))
        }
    };
    let stream = match params.str("stream") {
        None | Some("both") => None,
        Some(s) => Some(s.parse::<LogStream>().map_err(|()| {
            ApiError::bad_request(
                "stream",
                format!("stream: unknown stream {}", shorten(s)),
                "use stdout, stderr or both",
            )
        })?),
    };
    let mut cursors = Vec::new();
    for c in params.str("cursor").into_iter().flat_map(|c| c.split(',')) {
        cursors.push(c.parse::<LogCursor>().map_err(|()| {
            ApiError::bad_request(
                "cursor",
                format!("cursor: {} is not REPLICA:SEQ:OFFSET", shorten(c)),
                "pass cursors as printed by the log stream",
            )
        })?);
    }
    Ok(LogQuery {
        follow,
        tail: params.u64("tail")?.map(|n| n as usize),
        since: since(params)?,
        stream,
        cursors,
    })
}

fn since(params: &Params) -> ApiResult<Option<std::time::SystemTime>> {
    let Some(text) = params.str("since") else {
        return Ok(None);
    };
    parse_since(text, std::time::SystemTime::now())
        .map(Some)
        .map_err(|message| {
            ApiError::bad_request(
                "since",
                format!("since: {message}"),
                "pass since as an RFC 3339 time like 2026-11-27T07:43:22Z, a duration like 10m, or Unix seconds",
            )
        })
}

pub(crate) async fn replica(store: &Store, namespace: &str, id: &str) -> ApiResult<Replica> {
    store
        .get::<Replica>(Kind::Replica, id)
        .await?
        .filter(|r| r.namespace == namespace)
        .ok_or_else(|| {
            ApiError::not_found(
                format!("replica {id} in namespace {namespace}"),
                "list replicas with `hivemind ps`",
            )
        })
}

pub(crate) async fn agent_for(
    store: &Store,
    replica: &Replica,
    token: &AgentToken,
    timeout: Option<AgentTimeout>,
) -> ApiResult<AgentClient> {
    let node: Option<Node> = store.get(Kind::Node, &replica.node).await?;
    let url = node
        .and_then(|n| n.agent_url)
        .ok_or_else(|| ApiError::Unavailable {
            message: format!(
                "node {} of replica {} has no agent endpoint",
                replica.node, replica.id
            ),
            fix: "run the node's agent with --agent-addr (and a version that serves logs)"
                .to_string(),
        })?;
    let client = AgentClient::new(url, token.secret_for(&replica.node));
    Ok(match timeout {
        Some(AgentTimeout(t)) => client.with_response_timeout(t),
        None => client,
    })
}

/// The agent's refusal as this API's error: its 404 stays a 404, the rest is "unavailable".
pub(crate) fn agent_error(replica: &Replica, e: ClientError) -> ApiError {
    match e {
        ClientError::Api {
            status: 404, fix, ..
        } => ApiError::NotFound {
            what: format!("logs of replica {} on node {}", replica.id, replica.node),
            fix: fix.unwrap_or_default(),
        },
        ClientError::Api { status, message, fix, .. } if status < 500 && status != 401 => {
            ApiError::Conflict {
                message,
                fix: fix.unwrap_or_default(),
            }
        }
        ClientError::Timeout { after, .. } => ApiError::Timeout {
            message: format!(
                "the agent of node {} (replica {}) did not answer within {}s",
                replica.node,
                replica.id,
                after.as_secs_f64()
            ),
            fix: format!(
                "check the agent on node {}: it accepts connections but does not answer",
                replica.node
            ),
        },
        other => ApiError::Unavailable {
            message: format!(
                "cannot reach the agent of node {} (replica {}): {}",
                replica.node,
                replica.id,
                error_chain(&other)
            ),
            fix: "check that the node's agent runs and that its --agent-addr is reachable from the server"
                .to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_client::logs::LogPos;
    use std::time::{Duration, UNIX_EPOCH};

    fn line(replica: &str, secs: u64) -> Result<LogLine, ClientError> {
        Ok(LogLine {
            replica: Some(replica.to_string()),
            next: LogPos::default(),
            time: UNIX_EPOCH + Duration::from_secs(secs),
            stream: LogStream::Stdout,
            partial: false,
            text: secs.to_string().into_bytes(),
        })
    }

    #[tokio::test]
    async fn plain_reads_of_several_replicas_merge_by_time() {
        let a: LineStream =
            futures::stream::iter(vec![line("a", 1), line("a", 4), line("a", 5)]).boxed();
        let b: LineStream =
            futures::stream::iter(vec![line("b", 2), line("b", 3), line("b", 9)]).boxed();
        let empty: LineStream = futures::stream::iter(vec![]).boxed();
        let merged: Vec<(String, u64)> = merge_by_time(vec![a, empty, b])
            .map(|l| {
                let l = l.unwrap();
                let secs = l.time.duration_since(UNIX_EPOCH).unwrap().as_secs();
                (l.replica.unwrap(), secs)
            })
            .collect()
            .await;
        let want: Vec<(String, u64)> = [("a", 1), ("b", 2), ("b", 3), ("a", 4), ("a", 5), ("b", 9)]
            .into_iter()
            .map(|(r, s)| (r.to_string(), s))
            .collect();
        assert_eq!(merged, want);
    }
}
