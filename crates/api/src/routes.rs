//! The HTTP handlers: each parses the request into typed values, calls one core function and
//! wraps the result. No decisions are made here; they live in `deploy`, `scale` and `report`.
//!
//! The `#[utoipa::path]` attributes are the OpenAPI document's source (see `openapi`).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hivemind_client::wire::{
    DeployRequest, DeployResponse, ErrorBody, EventFilter, ReplicaFilter, ReplicaView, ScaleRequest,
};
use hivemind_store::Store;
use hivemind_types::{App, ClusterNetwork, Kind, Node, NodeReport, Service};

use crate::assignments::{self, Hub};
use crate::error::ApiError;
use crate::extract::{check_label, JsonBody, Params};
use crate::shutdown::{stopped, Shutdown};
use crate::{deploy, events, lifecycle, recorded, report, scale};
use hivemind_types::now_millis;

type ApiResult<T> = Result<T, ApiError>;

/// Default hold time of an assignment long poll without `timeout_ms`.
const DEFAULT_POLL: Duration = Duration::from_secs(30);

#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "the server is up", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

#[utoipa::path(
    post, path = "/api/v1/apps", request_body = DeployRequest,
    params(
        ("namespace" = Option<String>, Query, description = "default: `default`"),
        ("strict" = Option<bool>, Query, description = "refuse keys read but not honoured (422) instead of warning"),
    ),
    responses(
        (status = 201, description = "app created", body = DeployResponse),
        (status = 200, description = "app updated", body = DeployResponse),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 409, description = "stale revision", body = ErrorBody),
        (status = 422, description = "invalid Compose file or name, or keys not honoured with strict", body = ErrorBody),
    )
)]
pub(crate) async fn deploy_app(
    State(store): State<Store>,
    Extension(secrets_key): Extension<crate::secrets::SecretsKey>,
    params: Params,
    JsonBody(mut req): JsonBody<DeployRequest>,
) -> ApiResult<impl IntoResponse> {
    let namespace = params.namespace()?;
    req.strict |= deploy::strict_param(params.str("strict"))?;
    let outcome = deploy::deploy_with(&store, &namespace, &req, Some(&secrets_key)).await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(app = %outcome.response.app.name, revision = outcome.response.revision, "deployed");
    Ok((status, Json(outcome.response)))
}

#[utoipa::path(
    get, path = "/api/v1/apps",
    params(("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Vec<Object>))
)]
pub(crate) async fn list_apps(
    State(store): State<Store>,
    params: Params,
) -> ApiResult<Json<Vec<App>>> {
    let namespace = params.namespace()?;
    Ok(Json(store.list(Kind::App, &format!("{namespace}/")).await?))
}

#[utoipa::path(
    get, path = "/api/v1/apps/{name}",
    params(("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_app(
    State(store): State<Store>,
    params: Params,
    Path(name): Path<String>,
) -> ApiResult<Json<App>> {
    let namespace = params.namespace()?;
    store
        .get(Kind::App, &format!("{namespace}/{name}"))
        .await?
        .map(Json)
        .ok_or_else(|| deploy::app_not_found(&namespace, &name))
}

#[utoipa::path(
    delete, path = "/api/v1/apps/{name}",
    params(
        ("name" = String, Path,),
        ("namespace" = Option<String>, Query,),
        ("volumes" = Option<bool>, Query, description = "also remove the app's volumes, once its replicas are gone"),
    ),
    responses((status = 200, description = "the deleted app", body = Object), (status = 404, body = ErrorBody))
)]
pub(crate) async fn delete_app(
    State(store): State<Store>,
    params: Params,
    Path(name): Path<String>,
) -> ApiResult<Json<App>> {
    let namespace = params.namespace()?;
    let volumes = deploy::bool_param("volumes", params.str("volumes"))?;
    let app = deploy::delete_app_with(&store, &namespace, &name, volumes).await?;
    tracing::info!(app = %name, "deleted");
    Ok(Json(app))
}

#[utoipa::path(
    get, path = "/api/v1/services",
    params(
        ("namespace" = Option<String>, Query,),
        ("app" = Option<String>, Query, description = "only this app's services"),
        ("name" = Option<String>, Query, description = "only services with this name, in any app"),
    ),
    responses((status = 200, body = Vec<Object>))
)]
pub(crate) async fn list_services(
    State(store): State<Store>,
    params: Params,
) -> ApiResult<Json<Vec<Service>>> {
    let namespace = params.namespace()?;
    let query = scale::ServiceQuery {
        app: params.str("app"),
        name: params.str("name"),
    };
    Ok(Json(
        scale::list_services(&store, &namespace, &query).await?,
    ))
}

#[utoipa::path(
    get, path = "/api/v1/services/{app}/{name}",
    params(("app" = String, Path,), ("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_service(
    State(store): State<Store>,
    params: Params,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Json<Service>> {
    let namespace = params.namespace()?;
    Ok(Json(
        scale::get_service(&store, &namespace, &app, &name).await?,
    ))
}

#[utoipa::path(
    post, path = "/api/v1/services/{app}/{name}/scale", request_body = ScaleRequest,
    params(("app" = String, Path,), ("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the service after scaling", body = Object),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
    )
)]
pub(crate) async fn scale_service(
    State(store): State<Store>,
    params: Params,
    Path((app, name)): Path<(String, String)>,
    JsonBody(req): JsonBody<ScaleRequest>,
) -> ApiResult<Json<Service>> {
    let namespace = params.namespace()?;
    let service = scale::scale(&store, &namespace, &app, &name, &req).await?;
    tracing::info!(app = %app, service = %name, replicas = req.replicas, "scaled");
    Ok(Json(service))
}

#[utoipa::path(
    post, path = "/api/v1/services/{app}/{name}/stop",
    params(("app" = String, Path,), ("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the service, stopped: its replicas stop and stay stopped until started", body = Vec<Object>),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn stop_service(
    State(store): State<Store>,
    params: Params,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Service>>> {
    run_state(store, params, app, Some(name), true).await
}

#[utoipa::path(
    post, path = "/api/v1/services/{app}/{name}/start",
    params(("app" = String, Path,), ("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the service, started again", body = Vec<Object>),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn start_service(
    State(store): State<Store>,
    params: Params,
    Path((app, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<Service>>> {
    run_state(store, params, app, Some(name), false).await
}

#[utoipa::path(
    post, path = "/api/v1/apps/{name}/stop",
    params(("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the app's services, stopped", body = Vec<Object>),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn stop_app(
    State(store): State<Store>,
    params: Params,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Service>>> {
    run_state(store, params, app, None, true).await
}

#[utoipa::path(
    post, path = "/api/v1/apps/{name}/start",
    params(("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the app's services, started again", body = Vec<Object>),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
    )
)]
pub(crate) async fn start_app(
    State(store): State<Store>,
    params: Params,
    Path(app): Path<String>,
) -> ApiResult<Json<Vec<Service>>> {
    run_state(store, params, app, None, false).await
}

async fn run_state(
    store: Store,
    params: Params,
    app: String,
    service: Option<String>,
    stopped: bool,
) -> ApiResult<Json<Vec<Service>>> {
    let namespace = params.namespace()?;
    let services =
        lifecycle::set_stopped(&store, &namespace, &app, service.as_deref(), stopped).await?;
    let verb = if stopped { "stopped" } else { "started" };
    tracing::info!(app = %app, service = ?service, "{verb}");
    Ok(Json(services))
}

#[utoipa::path(
    get, path = "/api/v1/replicas",
    params(ReplicaFilter, ("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Vec<ReplicaView>))
)]
pub(crate) async fn list_replicas(
    State(store): State<Store>,
    params: Params,
) -> ApiResult<Json<Vec<ReplicaView>>> {
    let namespace = params.namespace()?;
    let filter = ReplicaFilter {
        app: params.str("app").map(str::to_string),
        service: params.str("service").map(str::to_string),
        node: params.str("node").map(str::to_string),
    };
    Ok(Json(
        report::replica_views(&store, &namespace, &filter).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/nodes", responses((status = 200, body = Vec<Object>)))]
pub(crate) async fn list_nodes(State(store): State<Store>) -> ApiResult<Json<Vec<Node>>> {
    Ok(Json(report::nodes(&store).await?))
}

#[utoipa::path(
    get, path = "/api/v1/nodes/{node}/assignment",
    params(
        ("node" = String, Path,),
        ("after" = Option<u64>, Query, description = "generation the agent has; wait for a newer one"),
        ("timeout_ms" = Option<u64>, Query, description = "longest wait, default 30000, at most 120000"),
        ("delta" = Option<bool>, Query, description = "with after: answer with what changed since it (delta: true) when the server can"),
    ),
    responses((status = 200, description = "the node's whole desired set", body = Object), (status = 400, body = ErrorBody))
)]
// Axum extractors, one per argument.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn get_assignment(
    State(store): State<Store>,
    Extension(net): Extension<ClusterNetwork>,
    Extension(hub): Extension<Hub>,
    Extension(secrets_key): Extension<crate::secrets::SecretsKey>,
    principal: Option<Extension<crate::principal::Principal>>,
    shutdown: Option<Extension<Shutdown>>,
    params: Params,
    Path(node): Path<String>,
) -> ApiResult<assignments::AssignmentAnswer> {
    let after = params.u64("after")?;
    let delta = crate::deploy::bool_param("delta", params.str("delta"))?;
    let timeout = params
        .u64("timeout_ms")?
        .map_or(DEFAULT_POLL, Duration::from_millis);
    let mut assignment = assignments::wait_assignment_delta(
        &hub,
        &store,
        &net,
        &node,
        after,
        delta,
        timeout,
        stopped(shutdown.map(|e| e.0)),
    )
    .await?;
    let principal = principal.map(|e| e.0);
    assignments::secrets::attach(&store, &secrets_key, principal.as_ref(), &mut assignment).await?;
    Ok(assignment)
}

#[utoipa::path(
    put, path = "/api/v1/nodes/{node}/report", request_body = Object,
    params(("node" = String, Path,)),
    responses((status = 204, description = "recorded"), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody))
)]
pub(crate) async fn put_report(
    State(store): State<Store>,
    Path(node): Path<String>,
    JsonBody(body): JsonBody<NodeReport>,
) -> ApiResult<StatusCode> {
    crate::admission::check_report(&body)?;
    report::report(&store, &node, &body, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    put, path = "/api/v1/nodes/{node}/lease",
    description = "The node's heartbeat: renews its lease, writes nothing. A node whose lease is not renewed within the node timeout (15 s) is marked down.",
    params(("node" = String, Path,)),
    responses((status = 204, description = "renewed"), (status = 404, description = "the node has not registered (sent a report) yet", body = ErrorBody))
)]
pub(crate) async fn put_lease(
    State(store): State<Store>,
    Path(node): Path<String>,
) -> ApiResult<StatusCode> {
    report::renew_lease(&store, &node, now_millis()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/api/v1/events",
    description = "Two views. With `Accept: text/event-stream` or a `since` parameter: the store's changes as SSE (`change` events, data: ChangeEvent, id: revision; then `reset` when the client must re-list). Otherwise: the recorded events (exits, OOM kills, back-offs, failed starts, nodes ready or down) as JSON, oldest first.",
    params(
        ("since" = Option<u64>, Query, description = "stream: send changes after this revision first; default: only new ones"),
        EventFilter,
        ("namespace" = Option<String>, Query,),
    ),
    responses(
        (status = 200, description = "recorded events (JSON), or the change stream (SSE)", content(
            (Vec<Object> = "application/json"),
            (String = "text/event-stream"),
        )),
        (status = 400, description = "a malformed parameter, named in `field`", body = ErrorBody),
    )
)]
pub(crate) async fn get_events(
    State(store): State<Store>,
    shutdown: Option<Extension<Shutdown>>,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    let wants_stream = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if wants_stream || params.str("since").is_some() {
        let since = params.u64("since")?;
        return Ok(events::change_stream(&store, since, shutdown.map(|e| e.0))
            .await?
            .into_response());
    }
    let namespace = params.namespace()?;
    let label = |name: &str| -> ApiResult<Option<String>> {
        match params.str(name) {
            Some(v) => {
                check_label(name, v, false)?;
                Ok(Some(v.to_string()))
            }
            None => Ok(None),
        }
    };
    let filter = EventFilter {
        app: label("app")?,
        service: label("service")?,
        replica: label("replica")?,
        event_type: params.str("type").map(recorded::parse_type).transpose()?,
        limit: params
            .u64("limit")?
            .map(recorded::check_limit)
            .transpose()?,
    };
    Ok(Json(recorded::list(&store, &namespace, &filter).await?).into_response())
}
