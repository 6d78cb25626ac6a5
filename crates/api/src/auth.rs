//! Bearer-token authentication and the admin token file.
//!
//! Tokens are compared in constant time so that response timing does not reveal how much of a
//! guessed token was right.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::RngCore;

use crate::error::ApiError;

/// The accepted tokens.
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Lengths are not secret (tokens have a fixed size), but the loop still covers the longer
    // input so that time does not depend on where bytes differ.
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

pub(crate) async fn require_token(
    State(tokens): State<Arc<Tokens>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if tokens.accepts(token.as_bytes()) => next.run(req).await,
        _ => ApiError::Unauthorized.into_response(),
    }
}

pub(crate) async fn unknown_route(req: Request) -> ApiError {
    ApiError::not_found(
        format!("route {} {}", req.method(), req.uri().path()),
        "see /api/v1/openapi.json for the routes this server has",
    )
}

pub(crate) fn load_or_create_admin_token(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join("admin.token");
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
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
    let mut file = options.open(&path)?;
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
