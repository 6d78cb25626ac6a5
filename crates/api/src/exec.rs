//! `POST /api/v1/replicas/{id}/exec`, proxied to the agent of the replica's node like logs.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::StreamExt;
use hivemind_client::exec::ExecRequest;
use hivemind_client::wire::ErrorBody;
use hivemind_store::Store;

use crate::error::ApiError;
use crate::extract::{JsonBody, Params};
use crate::logs::{agent_error, agent_for, replica, AgentToken};

type ApiResult<T> = Result<T, ApiError>;

#[utoipa::path(
    post, path = "/api/v1/replicas/{id}/exec", request_body = Object,
    params(("id" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "JSON lines {stdout}|{stderr}, ending with {exit} or {error}", body = String, content_type = "application/x-ndjson"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody),
    )
)]
pub(crate) async fn replica_exec(
    State(store): State<Store>,
    Extension(token): Extension<AgentToken>,
    params: Params,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<ExecRequest>,
) -> ApiResult<Response> {
    let replica = replica(&store, &params.namespace()?, &id)?;
    let agent = agent_for(&store, &replica, &token)?;
    let frames = agent
        .exec(&replica.id, request.cmd)
        .await
        .map_err(|e| agent_error(&replica, e))?;
    let body = Body::from_stream(frames.map(|f| f.map(|f| Bytes::from(f.encode()))));
    Ok(([("content-type", "application/x-ndjson")], body).into_response())
}
