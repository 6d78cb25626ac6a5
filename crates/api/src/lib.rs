//! Hivemind's REST API server (SPEC §5): routes, authentication, and the core functions behind
//! them.
//!
//! **This crate (with `client`) is the only one that knows HTTP routes and status codes.** The
//! handlers in `routes` are thin; the decisions live in `deploy`, `scale`, `report` and `events`,
//! plain functions over `&Store` that tests call without HTTP. The wire types live in
//! `hivemind_client::wire` so that both sides share one definition.

mod auth;
pub mod deploy;
mod error;
mod events;
mod exec;
mod extract;
mod logs;
pub mod network;
mod openapi;
mod ports;
pub mod recorded;
pub mod report;
mod routes;
pub mod scale;
mod shutdown;
#[cfg(test)]
mod testing;

use std::future::{Future, IntoFuture};
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hivemind_store::Store;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
use shutdown::Shutdown;

/// How long in-flight requests (long polls, event streams) may run on after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Settings of the API server.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Bearer tokens accepted on every route but `/healthz` and `/metrics`. Empty means no
    /// request is authorized, never that all are.
    pub tokens: Vec<String>,
    /// The cluster's address plan: node subnets and service VIPs come from it.
    pub network: network::ClusterNetwork,
    /// The bearer token presented to node agents when proxying logs and exec; `None` uses the
    /// first of `tokens` (in `hivemind up`, the token the agent itself uses).
    pub agent_token: Option<String>,
}

/// All routes, with authentication, the body limit and request tracing applied.
pub fn router(store: Store, config: ApiConfig) -> Router {
    let agent_token = logs::AgentToken(
        config
            .agent_token
            .clone()
            .or_else(|| config.tokens.first().cloned())
            .unwrap_or_default(),
    );
    let tokens = Arc::new(auth::Tokens::new(config.tokens));
    let api = Router::new()
        .route("/apps", post(routes::deploy_app).get(routes::list_apps))
        .route(
            "/apps/{name}",
            get(routes::get_app).delete(routes::delete_app),
        )
        .route("/services", get(routes::list_services))
        .route("/services/{app}/{name}", get(routes::get_service))
        .route("/services/{app}/{name}/scale", post(routes::scale_service))
        .route("/services/{app}/{name}/logs", get(logs::service_logs))
        .route("/replicas", get(routes::list_replicas))
        .route("/replicas/{id}/logs", get(logs::replica_logs))
        .route("/replicas/{id}/exec", post(exec::replica_exec))
        .route("/nodes", get(routes::list_nodes))
        .route("/nodes/{node}/assignment", get(routes::get_assignment))
        .route("/nodes/{node}/report", put(routes::put_report))
        .route("/events", get(routes::get_events))
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .fallback(auth::unknown_route)
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ))
        .layer(axum::Extension(config.network))
        .layer(axum::Extension(agent_token))
        .with_state(store);
    Router::new()
        .route("/healthz", get(routes::healthz))
        .nest("/api/v1", api)
        .fallback(auth::unknown_route)
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(TraceLayer::new_for_http())
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// for a short grace period. Event streams end and long polls answer at once when shutdown
/// begins (they would otherwise hold it open for minutes); that is safe because clients
/// reconnect and resume from a revision.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (begun_tx, begun_rx) = tokio::sync::oneshot::channel::<()>();
    let (stopping, stop_signal) = Shutdown::channel();
    // Connections run in their own tasks, which outlive this future; event streams and long
    // polls watch this signal so that they end instead of holding those tasks open.
    let router = router.layer(axum::Extension(stop_signal));
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping.send(true);
        let _ = begun_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async {
            // A dropped sender (the server ended on its own) must not count as shutdown.
            if begun_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            // Connection tasks still running end with the runtime; nothing here waits for them.
            tracing::info!("shutdown grace period over; not waiting for remaining requests");
            Ok(())
        }
    }
}

/// The admin token in `{data_dir}/admin.token`, created (32 random bytes, hex, mode 0600) on
/// first start so that a fresh `hivemind up` is usable at once and never open to the network.
pub fn load_or_create_admin_token(data_dir: &Path) -> io::Result<String> {
    auth::load_or_create_admin_token(data_dir)
}
