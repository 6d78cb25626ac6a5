//! Join tokens, node credentials and agent secrets: issuing, checking, revoking.
//!
//! - A **join token** (`token create --role node`, role `node`) may only call join; one token
//!   joins any number of nodes (the simulator joins a thousand with one).
//! - **Joining** node N (`POST /api/v1/nodes/N/join`) returns N's own **credential**
//!   (`hm1.n-N.<secret>`, authenticating as `node:N`) and N's **agent secret**, which the server
//!   presents to N's agent endpoint. A join token cannot join a name that already has a
//!   credential or is registered (that would hand its holder an existing node's identity); the admin can, which
//!   replaces the old credential.
//! - Secrets are 32 random bytes; the store keeps only their SHA-256 (`Kind::Token`, keyed by
//!   the public id), so a copy of the store opens nothing.
//! - Agent secrets are never stored: each is HMAC-SHA256 of the node name under the server's
//!   agent key (`agent.key`, mode 0600, in the data dir), so the server can present it to any
//!   node without a lookup and a node learns only its own.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use hivemind_client::wire::{JoinResponse, TokenCreateRequest, TokenCreated, TokenView};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::now_millis;
use hivemind_types::token::{format_token, parse_token};
use hivemind_types::{constant_time_eq, Kind, Meta, Node, Token, TokenRole};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::principal::Principal;

type ApiResult<T> = Result<T, ApiError>;

/// The longest join token lifetime accepted (a year); longer is a typo for "never" (ttl 0).
const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);

/// The server's key for agent secrets. Cheap to clone.
#[derive(Clone)]
pub struct AgentKey(Arc<[u8]>);

impl std::fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key, not even in a debug dump of the config.
        f.write_str("AgentKey(..)")
    }
}

impl Default for AgentKey {
    /// A random key for this process only (tests; agents joined under it fail after a restart).
    fn default() -> AgentKey {
        AgentKey(random_bytes().to_vec().into())
    }
}

impl AgentKey {
    pub fn new(key: &[u8]) -> AgentKey {
        AgentKey(key.to_vec().into())
    }

    /// The secret the server presents to `node`'s agent endpoint.
    pub fn secret_for(&self, node: &str) -> String {
        let mut message = b"hivemind agent v1\0".to_vec();
        message.extend_from_slice(node.as_bytes());
        hex::encode(hmac_sha256(&self.0, &message))
    }
}

/// HMAC-SHA256 (RFC 2104) over the workspace's `sha2`: a keyed hash, so that knowing one
/// node's secret tells nothing about another's, unlike a plain hash of key and name.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The principal `presented` (an `hm1.` token) authenticates as, or `None` when it is unknown,
/// expired or wrong. Errors are the store's.
pub(crate) async fn verify(
    store: &Store,
    presented: &str,
    now_ms: u64,
) -> ApiResult<Option<Principal>> {
    let Some((id, secret)) = parse_token(presented) else {
        return Ok(None);
    };
    let Some(token) = store.get::<Token>(Kind::Token, id).await? else {
        return Ok(None);
    };
    let hash = hash_secret(secret);
    if !constant_time_eq(hash.as_bytes(), token.secret_sha256.as_bytes()) || token.expired(now_ms) {
        return Ok(None);
    }
    Ok(match (token.role, token.node) {
        (TokenRole::Node, _) => Some(Principal::Join(token.id)),
        (TokenRole::NodeCredential, Some(node)) => Some(Principal::Node(node)),
        // A credential without its node is no identity at all.
        (TokenRole::NodeCredential, None) => None,
    })
}

/// Issues `node`'s credential, replacing any earlier one, and returns it with the node's agent
/// secret. `hivemind up` calls this for its in-process agent; joins call it for the rest.
pub async fn issue_node_credential(
    store: &Store,
    key: &AgentKey,
    node: &str,
    issued_by: &str,
) -> Result<JoinResponse, ApiError> {
    issue(store, key, node, issued_by, Expect::Any).await
}

async fn issue(
    store: &Store,
    key: &AgentKey,
    node: &str,
    issued_by: &str,
    expect: Expect,
) -> ApiResult<JoinResponse> {
    check_node_name(node)?;
    let secret = hex::encode(random_bytes());
    let token = Token {
        id: Token::credential_id(node),
        role: TokenRole::NodeCredential,
        node: Some(node.to_string()),
        secret_sha256: hash_secret(&secret),
        expires_at: None,
        issued_by: issued_by.to_string(),
        meta: Meta::default(),
    };
    store
        .txn(vec![Op::put(Kind::Token, &token.id, &token, expect)])
        .await
        .map_err(|e| {
            if e.is_conflict() {
                already_joined(node)
            } else {
                e.into()
            }
        })?;
    Ok(JoinResponse {
        node: node.to_string(),
        credential: format_token(&token.id, &secret),
        agent_secret: key.secret_for(node),
    })
}

fn already_joined(node: &str) -> ApiError {
    ApiError::Conflict {
        message: format!("node {node} has already joined"),
        fix: format!(
            "use the node's saved credential, or remove the node with `hivemind node rm {node}` \
             and join again"
        ),
    }
}

/// Node names are host names: 1-253 letters, digits, `-`, `_` and `.`, starting with a letter
/// or digit. Anything else could not be a hostname and would make odd token ids.
fn check_node_name(node: &str) -> ApiResult<()> {
    let ok = (1..=253).contains(&node.len())
        && node
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "node",
            format!("node: {node:?} is not a valid node name"),
            "use the node's host name: 1-253 letters, digits, '-', '_' and '.', starting with a \
             letter or digit",
        ))
    }
}

fn view(t: Token) -> TokenView {
    TokenView {
        id: t.id,
        role: t.role,
        node: t.node,
        expires_at: t.expires_at,
        issued_by: t.issued_by,
        created_at: t.meta.created_at,
    }
}

#[utoipa::path(
    post, path = "/api/v1/tokens", request_body = TokenCreateRequest,
    responses(
        (status = 201, description = "the token; its secret is shown only now", body = TokenCreated),
        (status = 400, body = hivemind_client::wire::ErrorBody),
    )
)]
pub(crate) async fn create_token(
    State(store): State<Store>,
    crate::extract::JsonBody(req): crate::extract::JsonBody<TokenCreateRequest>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    if req.role != TokenRole::Node {
        return Err(ApiError::bad_request(
            "role",
            format!(
                "role: {} tokens are not created directly",
                req.role.as_str()
            ),
            "create a join token with role `node`; node credentials come from joining",
        ));
    }
    let ttl = match req.ttl_seconds {
        None | Some(0) => None,
        Some(s) if Duration::from_secs(s) > MAX_TTL => {
            return Err(ApiError::bad_request(
                "ttl_seconds",
                format!("ttl_seconds: {s} is more than a year"),
                "give at most 31622400 seconds, or 0 for a token that never expires",
            ))
        }
        Some(s) => Some(s * 1000),
    };
    let id = hex::encode(&random_bytes()[..6]);
    let secret = hex::encode(random_bytes());
    let token = Token {
        id: id.clone(),
        role: req.role,
        node: None,
        secret_sha256: hash_secret(&secret),
        expires_at: ttl.map(|ttl| now_millis() + ttl),
        issued_by: "admin".to_string(),
        meta: Meta::default(),
    };
    store
        .txn(vec![Op::put(Kind::Token, &id, &token, Expect::Absent)])
        .await?;
    // The id only: the secret never reaches a log.
    tracing::info!(token = %id, role = token.role.as_str(), "token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: format_token(&id, &secret),
            id,
            role: token.role,
            expires_at: token.expires_at,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/tokens", responses((status = 200, description = "join tokens and node credentials, without secrets", body = Vec<TokenView>)))]
pub(crate) async fn list_tokens(State(store): State<Store>) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens: Vec<Token> = store.list(Kind::Token, "").await?;
    Ok(Json(tokens.into_iter().map(view).collect()))
}

#[utoipa::path(
    delete, path = "/api/v1/tokens/{token}", params(("token" = String, Path, description = "a join token id, or n-NODE for a node credential")),
    responses((status = 200, description = "the revoked token", body = TokenView), (status = 404, body = hivemind_client::wire::ErrorBody))
)]
pub(crate) async fn delete_token(
    State(store): State<Store>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<TokenView>> {
    let token: Token = store.get(Kind::Token, &id).await?.ok_or_else(|| {
        ApiError::not_found(
            format!("token {id}"),
            "list tokens with `hivemind token ls`",
        )
    })?;
    store
        .txn(vec![Op::delete(
            Kind::Token,
            &id,
            Expect::Revision(token.meta.revision),
        )])
        .await?;
    tracing::info!(token = %id, "token revoked");
    Ok(Json(view(token)))
}

#[utoipa::path(
    post, path = "/api/v1/nodes/{node}/join", params(("node" = String, Path,)),
    description = "With a join token (or the admin token): issue the node's own credential and agent secret.",
    responses(
        (status = 201, body = JoinResponse),
        (status = 400, body = hivemind_client::wire::ErrorBody),
        (status = 409, description = "the node has joined already", body = hivemind_client::wire::ErrorBody),
    )
)]
pub(crate) async fn join_node(
    State(store): State<Store>,
    Extension(key): Extension<AgentKey>,
    Extension(principal): Extension<Principal>,
    UrlPath(node): UrlPath<String>,
) -> ApiResult<(StatusCode, Json<JoinResponse>)> {
    let (issued_by, expect) = match &principal {
        // Only the admin may take over a name that has a credential already.
        Principal::Admin => ("admin".to_string(), Expect::Any),
        Principal::Join(id) => (format!("join:{id}"), Expect::Absent),
        // `authorize` lets no one else here.
        Principal::Node(_) => return Err(ApiError::Unauthorized),
    };
    // A name that is registered belongs to some machine already, credential or not (one that
    // reported with the admin token before identities existed).
    if expect == Expect::Absent && store.get::<Node>(Kind::Node, &node).await?.is_some() {
        return Err(already_joined(&node));
    }
    let joined = issue(&store, &key, &node, &issued_by, expect).await?;
    tracing::info!(%node, by = %issued_by, "node joined");
    Ok((StatusCode::CREATED, Json(joined)))
}

#[utoipa::path(
    delete, path = "/api/v1/nodes/{node}", params(("node" = String, Path,)),
    description = "Removes the node and revokes its credential; its agent is refused from then on.",
    responses((status = 204, description = "removed"), (status = 404, body = hivemind_client::wire::ErrorBody))
)]
pub(crate) async fn delete_node(
    State(store): State<Store>,
    UrlPath(node): UrlPath<String>,
) -> ApiResult<StatusCode> {
    let id = Token::credential_id(&node);
    let found_node = store.get::<Node>(Kind::Node, &node).await?;
    let found_token = store.get::<Token>(Kind::Token, &id).await?;
    let mut ops = Vec::new();
    if let Some(n) = &found_node {
        ops.push(Op::delete(
            Kind::Node,
            &node,
            Expect::Revision(n.meta.revision),
        ));
    }
    if let Some(t) = &found_token {
        ops.push(Op::delete(
            Kind::Token,
            &id,
            Expect::Revision(t.meta.revision),
        ));
    }
    // Its statuses go with it: only its agent writes or removes them, and that agent is
    // refused from now on, so they would otherwise stay (and show in `ps`) until their
    // replicas went. Its replicas stay: the service controller replaces them elsewhere.
    if found_node.is_some() {
        for status in store.status_list_by_node(&node).await? {
            ops.push(Op::delete(
                Kind::ReplicaStatus,
                &status.id,
                Expect::Revision(status.meta.revision),
            ));
        }
    }
    if ops.is_empty() {
        return Err(ApiError::not_found(
            format!("node {node}"),
            "list nodes with `hivemind nodes`",
        ));
    }
    // One transaction: a node is never left removed but still able to authenticate, nor
    // removed with statuses that say it runs replicas.
    store.txn(ops).await?;
    tracing::info!(%node, "node removed and its credential revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The agent key in `{data_dir}/agent.key`, created (32 random bytes, hex, mode 0600) on first
/// start. Kept across restarts so that agents' secrets stay valid.
pub fn load_or_create_agent_key(data_dir: &Path) -> io::Result<AgentKey> {
    let text = crate::auth::load_or_create_secret_file(&data_dir.join("agent.key"))?;
    Ok(AgentKey::new(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn agent_secrets_differ_per_node_and_key() {
        let key = AgentKey::new(b"k1");
        assert_eq!(key.secret_for("n1"), AgentKey::new(b"k1").secret_for("n1"));
        assert_ne!(key.secret_for("n1"), key.secret_for("n2"));
        assert_ne!(key.secret_for("n1"), AgentKey::new(b"k2").secret_for("n1"));
        assert_eq!(key.secret_for("n1").len(), 64);
        assert_eq!(format!("{key:?}"), "AgentKey(..)");
    }

    #[tokio::test]
    async fn credentials_verify_as_their_node_until_replaced() {
        let store = Store::open_in_memory().unwrap();
        let key = AgentKey::default();
        let first = issue_node_credential(&store, &key, "n1", "up")
            .await
            .unwrap();
        assert!(first.credential.starts_with("hm1.n-n1."));
        assert_eq!(first.agent_secret, key.secret_for("n1"));
        let got = verify(&store, &first.credential, now_millis())
            .await
            .unwrap();
        assert_eq!(got, Some(Principal::Node("n1".into())));
        // The stored record holds a hash, never the secret.
        let stored: Token = store.get(Kind::Token, "n-n1").await.unwrap().unwrap();
        let secret = first.credential.rsplit_once('.').unwrap().1;
        assert_ne!(stored.secret_sha256, secret);
        assert!(!serde_json::to_string(&stored).unwrap().contains(secret));

        let second = issue_node_credential(&store, &key, "n1", "up")
            .await
            .unwrap();
        assert_eq!(
            verify(&store, &first.credential, now_millis())
                .await
                .unwrap(),
            None
        );
        assert!(verify(&store, &second.credential, now_millis())
            .await
            .unwrap()
            .is_some());
        // A join token cannot take the name over.
        let err = issue(&store, &key, "n1", "join:x", Expect::Absent)
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::CONFLICT);
        assert!(err.to_string().contains("already joined"), "{err}");
    }

    #[tokio::test]
    async fn wrong_unknown_and_expired_tokens_verify_as_no_one() {
        let store = Store::open_in_memory().unwrap();
        let secret = "ab".repeat(32);
        let mut token = Token {
            id: "0a1b2c".into(),
            role: TokenRole::Node,
            node: None,
            secret_sha256: hash_secret(&secret),
            expires_at: Some(1_000),
            issued_by: "admin".into(),
            meta: Meta::default(),
        };
        store
            .txn(vec![Op::put(Kind::Token, "0a1b2c", &token, Expect::Any)])
            .await
            .unwrap();
        let good = format_token("0a1b2c", &secret);
        assert_eq!(
            verify(&store, &good, 999).await.unwrap(),
            Some(Principal::Join("0a1b2c".into()))
        );
        assert_eq!(verify(&store, &good, 1_000).await.unwrap(), None);
        for bad in [
            format_token("0a1b2c", &"ac".repeat(32)),
            format_token("ffffff", &secret),
            secret.clone(),
            String::new(),
        ] {
            assert_eq!(verify(&store, &bad, 0).await.unwrap(), None, "{bad}");
        }
        // A credential record without its node authenticates no one.
        token.role = TokenRole::NodeCredential;
        token.expires_at = None;
        store
            .txn(vec![Op::put(Kind::Token, "0a1b2c", &token, Expect::Any)])
            .await
            .unwrap();
        assert_eq!(verify(&store, &good, 0).await.unwrap(), None);
    }

    #[test]
    fn the_agent_key_outlives_restarts_and_is_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_agent_key(dir.path()).unwrap();
        let again = load_or_create_agent_key(dir.path()).unwrap();
        assert_eq!(first.secret_for("n1"), again.secret_for("n1"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("agent.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        let fresh = load_or_create_agent_key(other.path()).unwrap();
        assert_ne!(first.secret_for("n1"), fresh.secret_for("n1"));
    }

    #[test]
    fn node_names_are_host_names() {
        for good in ["n1", "web.example.com", "Node_7", "a"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-n", ".n", "n/1", "n 1", "é", &"a".repeat(254)] {
            let err = check_node_name(bad).unwrap_err();
            assert_eq!(err.field(), Some("node"), "{bad}");
        }
    }
}
