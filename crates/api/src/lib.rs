//! Hivemind's REST API server (SPEC §5): routes, authentication, and the core functions behind
//! them.
//!
//! **This crate (with `client`) is the only one that knows HTTP routes and status codes.** The
//! handlers in `routes` are thin; the decisions live in `deploy`, `scale`, `report` and `events`,
//! plain functions over `&Store` that tests call without HTTP. The wire types live in
//! `hivemind_client::wire` so that both sides share one definition.

pub mod admission;
pub mod assignments;
mod auth;
pub mod connections;
pub mod deploy;
mod error;
mod events;
mod exec;
mod extract;
pub mod lifecycle;
mod logs;
mod openapi;
mod ports;
pub mod principal;
pub mod recorded;
pub mod report;
mod routes;
pub mod scale;
pub mod secrets;
mod shutdown;
#[cfg(test)]
mod testing;
pub mod tokens;
pub mod volumes;

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use hivemind_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use connections::ServeConfig;
pub use error::ApiError;
pub use logs::AgentTimeout;
use shutdown::Shutdown;

/// How long in-flight requests (long polls, event streams) may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Settings of the API server.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Bearer tokens accepted on every route but `/healthz` and `/metrics`. Empty means no
    /// request is authorized, never that all are.
    pub tokens: Vec<String>,
    /// The cluster's address plan, which assignments carry (the allocator in `control` hands
    /// out node subnets and service VIPs from it).
    pub network: hivemind_types::ClusterNetwork,
    /// The key of the secrets presented to node agents when proxying logs and exec (one per
    /// node, see `tokens`); the default is random, for this process only.
    pub agent_key: tokens::AgentKey,
    /// The key secrets are sealed with at rest (`secrets`); the default is random, for this
    /// process only.
    pub secrets_key: secrets::SecretsKey,
}

/// All routes, with authentication, the body limit and request tracing applied. Starts the
/// assignment hub's watch of `store`, so it must be called within a tokio runtime.
pub fn router(store: Store, config: ApiConfig) -> Router {
    let hub = assignments::Hub::spawn(store.clone());
    let auth = Arc::new(auth::Authenticator {
        admin: auth::Tokens::new(config.tokens),
        store: store.clone(),
    });
    let api = Router::new()
        .route("/apps", post(routes::deploy_app).get(routes::list_apps))
        .route(
            "/apps/{name}",
            get(routes::get_app).delete(routes::delete_app),
        )
        .route("/services", get(routes::list_services))
        .route("/services/{app}/{name}", get(routes::get_service))
        .route("/services/{app}/{name}/scale", post(routes::scale_service))
        .route("/services/{app}/{name}/stop", post(routes::stop_service))
        .route("/services/{app}/{name}/start", post(routes::start_service))
        .route("/apps/{name}/stop", post(routes::stop_app))
        .route("/apps/{name}/start", post(routes::start_app))
        .route("/services/{app}/{name}/logs", get(logs::service_logs))
        .route("/replicas", get(routes::list_replicas))
        .route("/replicas/{id}/logs", get(logs::replica_logs))
        .route("/replicas/{id}/exec", post(exec::replica_exec))
        .route("/nodes", get(routes::list_nodes))
        .route("/nodes/{node}", delete(tokens::delete_node))
        .route("/nodes/{node}/join", post(tokens::join_node))
        .route(
            "/tokens",
            post(tokens::create_token).get(tokens::list_tokens),
        )
        .route("/tokens/{token}", delete(tokens::delete_token))
        .route(
            "/secrets",
            post(secrets::routes::create_secret).get(secrets::routes::list_secrets),
        )
        .route(
            "/secrets/{secret}",
            get(secrets::routes::inspect_secret).delete(secrets::routes::remove_secret),
        )
        .route(
            "/configs",
            post(secrets::routes::create_config).get(secrets::routes::list_configs),
        )
        .route(
            "/configs/{config}",
            get(secrets::routes::inspect_config).delete(secrets::routes::remove_config),
        )
        .route("/nodes/{node}/assignment", get(routes::get_assignment))
        .route("/nodes/{node}/report", put(routes::put_report))
        .route("/nodes/{node}/lease", put(routes::put_lease))
        .route("/events", get(routes::get_events))
        .route(
            "/volumes",
            get(volumes::list_volumes).post(volumes::create_volume),
        )
        .route(
            "/volumes/{name}",
            get(volumes::get_volume).delete(volumes::delete_volume),
        )
        .route("/nodes/{node}/volumes", get(volumes::node_volumes))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(auth::unknown_route)
        .route_layer(axum::middleware::from_fn(extract::check_path))
        .route_layer(axum::middleware::from_fn_with_state(
            auth,
            auth::authenticate,
        ))
        .layer(axum::Extension(config.network))
        .layer(axum::Extension(hub))
        .layer(axum::Extension(config.agent_key))
        .layer(axum::Extension(config.secrets_key))
        .with_state(store);
    let root = Router::new()
        .route("/healthz", get(routes::healthz))
        .nest("/api/v1", api)
        .fallback(auth::unknown_route);
    guard(root)
}

/// The layers every route gets: the body limit, request tracing and, outermost as the last
/// guard, catching a handler's panic (logged; the client gets a 500 with the usual error body
/// instead of a connection closed without an answer).
pub(crate) fn guard(routes: Router) -> Router {
    routes
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(error::panic_response))
}

/// Serves `router` on `listener` with the default [`ServeConfig`] until `shutdown` resolves;
/// see [`serve_with`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, router, ServeConfig::default(), shutdown).await
}

/// Serves `router` on `listener` (connection cap and header timeout from `config`, see
/// `connections`) until `shutdown` resolves, then lets in-flight requests finish for a short
/// grace period. Event streams end and long polls answer at once when shutdown begins (they
/// would otherwise hold it open for minutes); that is safe because clients reconnect and resume
/// from a revision.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stopping, stop_signal) = Shutdown::channel();
    let stopped = stopping.subscribe();
    // Connections run in their own tasks; event streams and long polls watch this signal so
    // that they end instead of holding those tasks open.
    let router = router.layer(axum::Extension(stop_signal));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping.send(true);
    });
    connections::run(listener, router, config, stopped, SHUTDOWN_GRACE).await;
    Ok(())
}

/// The admin token in `{data_dir}/admin.token`, created (32 random bytes, hex, mode 0600) on
/// first start so that a fresh `hivemind up` is usable at once and never open to the network.
pub fn load_or_create_admin_token(data_dir: &Path) -> io::Result<String> {
    auth::load_or_create_admin_token(data_dir)
}
