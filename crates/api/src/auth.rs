//! Authentication (who is calling: the admin token, or a token from `tokens`) and the
//! authorization check (`principal::authorize`), applied to every route but `/healthz`.
//!
//! Tokens are compared in constant time (`hivemind_types::constant_time_eq`) so that response
//! timing does not reveal how much of a guessed token was right.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hivemind_store::Store;
use hivemind_types::constant_time_eq;
use rand::RngCore;

use crate::error::ApiError;
use crate::principal::{action_for, authorize, Principal};

/// The accepted admin tokens.
#[derive(Debug)]
pub(crate) struct Tokens(Vec<Vec<u8>>);

impl Tokens {
    pub(crate) fn new(tokens: Vec<String>) -> Tokens {
        // An empty token would match `Authorization: Bearer ` and open the server to anyone.
        Tokens(
            tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(String::into_bytes)
                .collect(),
        )
    }

    /// Whether `given` is one of the tokens. Every token is compared in full, whatever matched.
    pub(crate) fn accepts(&self, given: &[u8]) -> bool {
        self.0
            .iter()
            .fold(false, |found, t| found | constant_time_eq(t, given))
    }
}

/// What the authentication layer needs: the admin tokens and the store holding the others.
pub(crate) struct Authenticator {
    pub(crate) admin: Tokens,
    pub(crate) store: Store,
}

impl Authenticator {
    /// The principal `presented` authenticates as; `None` for no one.
    async fn principal(&self, presented: &str) -> Result<Option<Principal>, ApiError> {
        if self.admin.accepts(presented.as_bytes()) {
            return Ok(Some(Principal::Admin));
        }
        crate::tokens::verify(&self.store, presented, hivemind_types::now_millis()).await
    }
}

/// Authenticates the request, checks that its principal may call the route, and attaches the
/// principal as an extension for handlers that care (join). 401 without a known token, 403
/// naming the principal and what it may do otherwise.
pub(crate) async fn authenticate(
    State(auth): State<Arc<Authenticator>>,
    mut req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let principal = match given {
        Some(token) => match auth.principal(token).await {
            Ok(Some(p)) => p,
            Ok(None) => return ApiError::Unauthorized.into_response(),
            Err(e) => return e.into_response(),
        },
        None => return ApiError::Unauthorized.into_response(),
    };
    // A route layer runs after routing, so the matched pattern is always there.
    let pattern = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let action = action_for(req.method(), &pattern, req.uri().path());
    if let Err(forbidden) = authorize(&principal, &action) {
        tracing::debug!(%principal, %action, "forbidden");
        return ApiError::from(forbidden).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

pub(crate) async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(
        format!("route {} {}", req.method(), req.uri().path()),
        "see /api/v1/openapi.json for the routes this server has",
    )
}

pub(crate) fn load_or_create_admin_token(data_dir: &Path) -> io::Result<String> {
    load_or_create_secret_file(&data_dir.join("admin.token"))
}

/// The secret in the file at `path`, or a new one (32 random bytes, hex) written there with
/// mode 0600 when the file is missing or empty.
pub(crate) fn load_or_create_secret_file(path: &Path) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600 rather than chmod-ed afterwards, so the token is never readable by others.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let t = Tokens::new(vec!["abc".into(), String::new(), "xyz1".into()]);
        assert!(t.accepts(b"abc"));
        assert!(t.accepts(b"xyz1"));
        for bad in [&b""[..], b"ab", b"abcd", b"xyz", b"abd"] {
            assert!(!t.accepts(bad), "{bad:?}");
        }
        assert!(!Tokens::new(vec![]).accepts(b""));
    }

    #[test]
    fn admin_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = load_or_create_admin_token(&data).unwrap();
        assert_eq!(first.len(), 64);
        assert!(first.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(load_or_create_admin_token(&data).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(data.join("admin.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
