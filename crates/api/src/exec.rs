//! `POST /api/v1/replicas/{id}/exec`, proxied to the agent of the replica's node like logs.
//!
//! A plain request's NDJSON answer is streamed through. An upgrade request
//! (`Upgrade: hivemind-exec.v1`, for stdin and TTY) is first made to the agent; only when the
//! agent switched protocols does the server answer 101 too, so that the agent's refusals
//! (404 no container, 409 not running) reach the client as such. Then the server splices the
//! two connections with `copy_bidirectional`: it does not parse frames, and holds at most one
//! fixed-size buffer per direction, so a slow side slows the other down. When either side
//! closes, the other is closed, which makes the agent kill a process still running.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use hivemind_client::exec::{wants_upgrade, ExecRequest, UPGRADE_PROTOCOL};
use hivemind_client::wire::ErrorBody;
use hivemind_client::ClientError;
use hivemind_store::Store;
use hivemind_types::Replica;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::{debug, Instrument};

use crate::error::ApiError;
use crate::extract::{JsonBody, Params};
use crate::logs::{agent_error, agent_for, replica, AgentTimeout, AgentToken};

type ApiResult<T> = Result<T, ApiError>;

/// The client's connection, to be taken over after a 101, when it asked for an upgrade.
pub(crate) struct MaybeUpgrade(Option<OnUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(MaybeUpgrade(if wants_upgrade(&parts.headers) {
            parts.extensions.remove::<OnUpgrade>()
        } else {
            None
        }))
    }
}

#[utoipa::path(
    post, path = "/api/v1/replicas/{id}/exec", request_body = Object,
    params(("id" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "JSON lines {stdout}|{stderr}, ending with {exit} or {error}", body = String, content_type = "application/x-ndjson"),
        (status = 101, description = "with `Connection: Upgrade`, `Upgrade: hivemind-exec.v1`: binary frames [channel u8][len u32 BE][payload] both ways (0 stdin, 1 stdout, 2 stderr, 3 resize cols,rows u16, 4 stdin-eof, 5 exit i32, 6 error text); needed for `stdin` and `tty`"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn replica_exec(
    State(store): State<Store>,
    Extension(token): Extension<AgentToken>,
    timeout: Option<Extension<AgentTimeout>>,
    params: Params,
    Path(id): Path<String>,
    MaybeUpgrade(on_upgrade): MaybeUpgrade,
    JsonBody(request): JsonBody<ExecRequest>,
) -> ApiResult<Response> {
    check(&request, on_upgrade.is_some())?;
    let replica = replica(&store, &params.namespace()?, &id).await?;
    let agent = agent_for(&store, &replica, &token, timeout.map(|t| t.0)).await?;
    let Some(on_upgrade) = on_upgrade else {
        let frames = agent
            .exec(&replica.id, request.cmd)
            .await
            .map_err(|e| exec_agent_error(&replica, e))?;
        let body = Body::from_stream(frames.map(|f| f.map(|f| Bytes::from(f.encode()))));
        return Ok(([("content-type", "application/x-ndjson")], body).into_response());
    };
    let mut agent_io = agent
        .exec_session(&replica.id, &request)
        .await
        .map_err(|e| exec_agent_error(&replica, e))?;
    let span = tracing::info_span!("exec_proxy", replica = %replica.id, node = %replica.node);
    tokio::spawn(
        async move {
            let mut client_io = match on_upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                // Dropping the agent's connection ends the process there.
                Err(error) => return debug!(%error, "client connection not upgraded"),
            };
            match tokio::io::copy_bidirectional(&mut client_io, &mut agent_io).await {
                Ok((up, down)) => debug!(up, down, "exec session spliced to its end"),
                Err(error) => debug!(%error, "exec session connection broke"),
            }
        }
        .instrument(span),
    );
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// Refuses, before any node is contacted, a request that cannot run as asked.
fn check(request: &ExecRequest, upgraded: bool) -> ApiResult<()> {
    if request.cmd.is_empty() {
        return Err(ApiError::bad_request(
            "cmd",
            "cmd: no command given",
            "name the command: hivemind exec REPLICA -- CMD ARGS...",
        ));
    }
    if request.is_interactive() && !upgraded {
        let field = if request.stdin { "stdin" } else { "tty" };
        return Err(ApiError::bad_request(
            field,
            format!("{field}: needs an upgraded exec session"),
            format!(
                "send `Connection: Upgrade` and `Upgrade: {UPGRADE_PROTOCOL}` (hivemind exec -i/-t does)"
            ),
        ));
    }
    if request.size.is_some_and(|s| s.cols == 0 || s.rows == 0) {
        return Err(ApiError::bad_request(
            "size",
            "size: cols and rows must be at least 1",
            "send the terminal's size, or leave size out for 80x24",
        ));
    }
    Ok(())
}

/// The agent's refusal as this API's error: 404 (no container there) and 400 stay, other
/// refusals are conflicts (409: not running), failures to reach it are 503.
fn exec_agent_error(replica: &Replica, e: ClientError) -> ApiError {
    match e {
        ClientError::Api {
            status: 404, fix, ..
        } => ApiError::NotFound {
            what: format!(
                "container of replica {} on node {}",
                replica.id, replica.node
            ),
            fix: fix.unwrap_or_default(),
        },
        ClientError::Api {
            status: 400,
            message,
            field,
            fix,
            ..
        } => ApiError::BadRequest {
            field,
            message,
            fix: fix.unwrap_or_default(),
        },
        other => agent_error(replica, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_client::exec::TtySize;

    #[test]
    fn requests_that_cannot_run_are_refused_naming_the_field() {
        let field = |r: &ExecRequest, upgraded| {
            check(r, upgraded)
                .err()
                .map(|e| e.field().map(str::to_string))
        };
        let mut request = ExecRequest::command(Vec::new());
        assert_eq!(field(&request, true), Some(Some("cmd".into())));
        request.cmd = vec!["sh".into()];
        assert_eq!(field(&request, false), None);
        request.stdin = true;
        assert_eq!(field(&request, false), Some(Some("stdin".into())));
        assert_eq!(field(&request, true), None);
        request.tty = true;
        request.size = Some(TtySize { cols: 80, rows: 0 });
        assert_eq!(field(&request, true), Some(Some("size".into())));
    }
}
