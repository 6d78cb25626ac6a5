//! The agent's own HTTP endpoint: node-local operations the server proxies to (like a kubelet's),
//! namely replica logs and exec (`exec`). Routes under `/v1`, wire format in `hivemind_client`.
//!
//! Authentication: the bearer token must be this node's agent secret, which the server derives
//! per node and handed to the node when it joined (`hivemind_api::tokens`). Nothing else is
//! accepted, the admin token included, so a node's agent never learns a credential that opens
//! anything but itself. Mutual TLS between server and agents comes with clustering; until then
//! the endpoint listens on loopback by default (`--agent-addr`).
//!
//! This module owns no state: logs are read from the files the runtime writes, exec goes
//! through [`ContainerRuntime::exec`].

mod exec;
mod logs;

use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hivemind_types::constant_time_eq;
pub(crate) use hivemind_types::error_chain;
use hivemind_types::id::is_replica_id;
use tokio::sync::watch;
use tracing::warn;

use hivemind_runtime::{ContainerRuntime, RuntimeConfig};

/// Settings of the agent endpoint.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Bearer token every request must carry: the node's agent secret from its join, never the
    /// admin token or the node's own credential.
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
    // Before the first request: sessions of a previous agent process that died mid-way left
    // their exec processes running, and only their FIFOs tell which they are.
    match runtime.exec_sweep().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "killed exec processes left by a previous agent"),
        Err(error) => warn!(%error, "cannot sweep exec processes left by a previous agent"),
    }
    let state = Arc::new(AppState { config, runtime });
    let router = Router::new()
        .route("/v1/replicas/{id}/logs", get(logs::replica_logs::<R>))
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
        .and_then(|v| v.to_str().ok());
    if authorized(&state.config.token, presented) {
        next.run(request).await
    } else {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token",
            "only the server calls this endpoint, with the agent secret it gave the node at join",
        )
    }
}

/// The `{id}` path segment, checked against the replica id syntax before anything touches the
/// file system or the runtime: the log directory is `{log_dir}/{id}`, so an id like `..` or
/// `%2Fetc` would otherwise read any directory's `*.log` files, and its 404-or-not would tell
/// which directories exist.
pub(crate) struct ReplicaId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for ReplicaId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!(
                        "id: the replica id cannot be read: {}",
                        rejection.body_text()
                    ),
                    "percent-encode the replica id as UTF-8",
                )
            })?;
        if !is_replica_id(&id) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("id: {} is not a replica id", shorten(&id)),
                "name the replica as `hivemind ps` shows it: its service, a dash and \
                 lowercase letters and digits, like web-3f9k2",
            ));
        }
        Ok(ReplicaId(id))
    }
}

/// `s` quoted for an error message, cut after 64 characters (request values may be huge).
pub(crate) fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{:?}... ({} bytes)", &s[..at], s.len()),
        None => format!("{s:?}"),
    }
}

/// Whether an `Authorization` header value carries the agent `secret`.
fn authorized(secret: &str, header: Option<&str>) -> bool {
    let presented = header.and_then(|v| v.strip_prefix("Bearer "));
    // An empty secret (a misconfigured agent) must not accept `Bearer ` with nothing after.
    presented
        .is_some_and(|p| !secret.is_empty() && constant_time_eq(p.as_bytes(), secret.as_bytes()))
}

/// An error in the server's JSON shape, so that `hivemind_client` reads it the same way.
pub(crate) fn error(status: StatusCode, code: &str, message: &str, fix: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "fix": fix}
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_agent_secret_is_accepted() {
        let secret = "5e".repeat(32);
        assert!(authorized(&secret, Some(&format!("Bearer {secret}"))));
        for bad in [
            None,
            Some(""),
            Some("Bearer "),
            Some(secret.as_str()),
            Some("Bearer admin-token"),
            Some(&*format!("Bearer {secret}x")),
            Some(&*format!("Basic {secret}")),
        ] {
            assert!(!authorized(&secret, bad), "{bad:?}");
        }
        assert!(!authorized("", Some("Bearer ")));
        assert!(!authorized("", None));
    }
}
