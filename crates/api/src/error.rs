//! The API's typed errors and the one place that maps them to HTTP statuses and the wire body.
//!
//! Core functions (`deploy`, `scale`, `report`, ...) return `ApiError`; handlers only `?` it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use hivemind_client::wire::{ErrorBody, ErrorDetail};
use hivemind_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read: bad JSON, wrong types, bad query parameters (400).
    #[error("{message}")]
    BadRequest {
        field: Option<String>,
        message: String,
        fix: String,
    },
    /// Missing or unknown bearer token (401).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A known principal asked for something it may not do (403).
    #[error("{0}")]
    Forbidden(#[from] crate::principal::Forbidden),
    /// The named object does not exist (404).
    #[error("{what} not found")]
    NotFound { what: String, fix: String },
    /// A stale revision or a concurrent write (409).
    #[error("{message}")]
    Conflict { message: String, fix: String },
    /// Well-formed but meaningless: an invalid Compose file, a bad name, scaling a global
    /// service (422).
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
        fix: String,
    },
    /// A node the request must reach cannot be reached (503).
    #[error("{message}")]
    Unavailable { message: String, fix: String },
    /// A node the request must reach did not answer in time (504).
    #[error("{message}")]
    Timeout { message: String, fix: String },
    /// A handler panicked; caught by the last guard (500). The cause is in the server's log.
    #[error("the server failed while handling this request")]
    Internal,
    /// The body is larger than the server accepts (413).
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("store error")]
    Store(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            // A precondition the core set from what it had just read failed: someone else wrote
            // in between. Retrying reads the new state.
            StoreError::Conflict { kind, key, reason } => ApiError::Conflict {
                message: format!("{kind} {key} changed while this request ran ({reason})"),
                fix: "retry the request".to_string(),
            },
            other => ApiError::Store(other),
        }
    }
}

impl ApiError {
    pub(crate) fn bad_request(
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ApiError {
        ApiError::BadRequest {
            field: Some(field.into()),
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> ApiError {
        ApiError::Invalid {
            field: Some(field.into()),
            message: message.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>, fix: impl Into<String>) -> ApiError {
        ApiError::NotFound {
            what: what.into(),
            fix: fix.into(),
        }
    }

    /// A client-supplied revision that is not the object's current one.
    pub(crate) fn stale(what: &str, expected: u64, current: u64) -> ApiError {
        ApiError::Conflict {
            message: format!(
                "{what} is at revision {current}, not {expected}: someone changed it since you read it"
            ),
            fix: "read it again and retry with the current revision".to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Store(_) | ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { .. } => "not_found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Invalid { .. } => "invalid",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Timeout { .. } => "timeout",
            ApiError::Store(_) | ApiError::Internal => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::BadRequest { field, .. } | ApiError::Invalid { field, .. } => {
                field.as_deref()
            }
            _ => None,
        }
    }

    pub(crate) fn fix(&self) -> Option<String> {
        match self {
            ApiError::BadRequest { fix, .. }
            | ApiError::NotFound { fix, .. }
            | ApiError::Conflict { fix, .. }
            | ApiError::Unavailable { fix, .. }
            | ApiError::Timeout { fix, .. }
            | ApiError::Invalid { fix, .. } => Some(fix.clone()),
            ApiError::Unauthorized => Some(
                "send `Authorization: Bearer TOKEN` with the admin token (the server's data \
                 directory, file admin.token), a join token (`hivemind token create --role \
                 node`) or a node's credential from its join; removed nodes' credentials and \
                 expired join tokens are refused"
                    .to_string(),
            ),
            ApiError::Forbidden(f) => Some(f.may.clone()),
            ApiError::TooLarge { .. } => Some(
                "split the Compose file into several apps, or move large values out of it"
                    .to_string(),
            ),
            ApiError::Store(_) => Some("retry; if it persists, check the server's log".to_string()),
            ApiError::Internal => Some(
                "retry; if it persists, report a bug with the server's log (it names the cause)"
                    .to_string(),
            ),
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                field: self.field().map(str::to_string),
                fix: self.fix().filter(|f| !f.is_empty()),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Store(e) = &self {
            // The client gets a generic message; the operator gets the cause.
            tracing::error!(error = %e, source = ?std::error::Error::source(e), "store error");
        }
        let mut resp = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::Unauthorized) {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The answer of the catch-panic layer: the panic is logged with its message, the client gets
/// the usual error body (500, `internal`) instead of a connection closed without an answer.
pub(crate) fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn no_catch_panic_layer_a_panicking_handler_answers_500_with_the_error_body() {
        let routes = crate::guard(Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("handler bug");
                }
                "never"
            }),
        ));
        let resp = routes
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.code, "internal");
        assert!(body.error.fix.is_some());
    }
}
