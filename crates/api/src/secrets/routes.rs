//! `/api/v1/secrets` and `/api/v1/configs`: create (cluster ones), list, inspect and remove.
//! Admin only (see `principal`). No answer ever carries a value, not even the admin's: the
//! views hold the name, size, a digest prefix, when it was made and which services mount it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use base64::Engine as _;
use hivemind_client::wire::{FileCreateRequest, FileView};
use hivemind_store::{Expect, Op, Store};
use hivemind_types::secret::{file_key, mounts_of, FileKind, StoredFile};
use hivemind_types::Service;

use super::{store_kind, SecretsKey, MAX_VALUE_BYTES};
use crate::error::ApiError;
use crate::extract::{JsonBody, Params};

type ApiResult<T> = Result<T, ApiError>;

/// How much of a digest a view shows: enough to tell versions apart.
const DIGEST_SHOWN: usize = 12;

/// Secret and config names: what Compose accepts, which is also a file name in the container.
fn check_name(kind: FileKind, name: &str) -> ApiResult<()> {
    let ok = name.len() <= 253
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "name",
            format!("{name:?} is not a valid {} name", kind.as_str()),
            "use letters, digits, `_`, `-` and `.`, starting with a letter or digit",
        ))
    }
}

/// The services that mount `key`, as `{namespace}/{app}/{service}`.
fn users(kind: FileKind, key: &str, services: &[Service]) -> Vec<String> {
    services
        .iter()
        .filter(|s| mounts_of(&s.spec).any(|(k, m)| k == kind && m.source == key))
        .map(Service::key)
        .collect()
}

fn view(kind: FileKind, f: StoredFile, services: &[Service]) -> FileView {
    let key = match &f.app {
        Some(app) => format!("{app}/{}", f.name),
        None => f.name.clone(),
    };
    FileView {
        users: users(kind, &key, services),
        digest: f.digest.chars().take(DIGEST_SHOWN).collect(),
        name: f.name,
        app: f.app,
        size: f.size,
        created_at: f.meta.created_at,
    }
}

/// The key `name` (with `?app=`, one of that app's own in `?namespace=`) stands for.
fn key_of(params: &Params, name: &str) -> ApiResult<String> {
    let namespace = params.namespace()?;
    Ok(file_key(&namespace, params.str("app"), name))
}

fn not_found(kind: FileKind, key: &str) -> ApiError {
    ApiError::not_found(
        format!("{} {key}", kind.as_str()),
        format!(
            "list them with `hivemind {} ls`; an app's own need --app APP",
            kind.as_str()
        ),
    )
}

async fn create(
    store: &Store,
    key: &SecretsKey,
    kind: FileKind,
    req: FileCreateRequest,
) -> ApiResult<(StatusCode, Json<FileView>)> {
    check_name(kind, &req.name)?;
    let plain = base64::engine::general_purpose::STANDARD
        .decode(&req.data)
        .map_err(|_| {
            ApiError::bad_request(
                "data",
                "data is not base64",
                "send the value base64-encoded (standard alphabet, padded)",
            )
        })?;
    if plain.len() > MAX_VALUE_BYTES {
        return Err(ApiError::invalid(
            "data",
            format!(
                "the value is {} bytes, more than the {MAX_VALUE_BYTES} a {} may hold",
                plain.len(),
                kind.as_str()
            ),
            "keep large files in the image or a volume",
        ));
    }
    let skind = store_kind(kind);
    if store.get::<StoredFile>(skind, &req.name).await?.is_some() {
        // Values never change in place (as in Swarm): a running replica's file and its
        // template digest would disagree.
        return Err(ApiError::Conflict {
            message: format!("{} {} exists already", kind.as_str(), req.name),
            fix: format!(
                "pick another name, or `hivemind {0} rm {1}` (once no service uses it) and create it again",
                kind.as_str(),
                req.name
            ),
        });
    }
    let stored = key.stored(kind, &req.name, &req.name, None, &plain);
    store
        .txn(vec![Op::put(skind, &req.name, &stored, Expect::Absent)])
        .await?;
    let created: StoredFile = store
        .get(skind, &req.name)
        .await?
        .ok_or_else(|| not_found(kind, &req.name))?;
    tracing::info!(kind = kind.as_str(), name = %req.name, size = plain.len(), "created");
    Ok((StatusCode::CREATED, Json(view(kind, created, &[]))))
}

/// The cluster ones and those of the apps in `?namespace=`.
async fn list(store: &Store, kind: FileKind, params: &Params) -> ApiResult<Json<Vec<FileView>>> {
    let namespace = params.namespace()?;
    let services: Vec<Service> = store.list(hivemind_types::Kind::Service, "").await?;
    let files: Vec<StoredFile> = store.list(store_kind(kind), "").await?;
    let mine = |f: &StoredFile| {
        f.app
            .as_deref()
            .is_none_or(|app| app.split_once('/').is_some_and(|(ns, _)| ns == namespace))
    };
    Ok(Json(
        files
            .into_iter()
            .filter(mine)
            .map(|f| view(kind, f, &services))
            .collect(),
    ))
}

async fn inspect(
    store: &Store,
    kind: FileKind,
    params: &Params,
    name: &str,
) -> ApiResult<Json<FileView>> {
    let key = key_of(params, name)?;
    let found: StoredFile = store
        .get(store_kind(kind), &key)
        .await?
        .ok_or_else(|| not_found(kind, &key))?;
    let services: Vec<Service> = store.list(hivemind_types::Kind::Service, "").await?;
    Ok(Json(view(kind, found, &services)))
}

async fn remove(
    store: &Store,
    kind: FileKind,
    params: &Params,
    name: &str,
) -> ApiResult<Json<FileView>> {
    let key = key_of(params, name)?;
    let skind = store_kind(kind);
    let found: StoredFile = store
        .get(skind, &key)
        .await?
        .ok_or_else(|| not_found(kind, &key))?;
    let services: Vec<Service> = store.list(hivemind_types::Kind::Service, "").await?;
    let shown = view(kind, found.clone(), &services);
    if !shown.users.is_empty() {
        return Err(ApiError::Conflict {
            message: format!(
                "{} {key} is in use by {}",
                kind.as_str(),
                shown.users.join(", ")
            ),
            fix: format!(
                "remove it from those services' `{}:` and deploy them again, or remove their apps",
                match kind {
                    FileKind::Secret => "secrets",
                    FileKind::Config => "configs",
                }
            ),
        });
    }
    // Conditioned on the revision read, so a service that starts using it in between (it
    // cannot: deploys check external ones exist, but an app's own is rewritten) fails this.
    store
        .txn(vec![Op::delete(
            skind,
            key.clone(),
            Expect::Revision(found.meta.revision),
        )])
        .await?;
    tracing::info!(kind = kind.as_str(), key = %key, "removed");
    Ok(Json(shown))
}

macro_rules! handlers {
    ($kind:expr, $create:ident, $list:ident, $inspect:ident, $remove:ident, $route:literal, $item:literal, $param:literal) => {
        #[utoipa::path(post, path = $route, request_body = FileCreateRequest,
            responses((status = 201, body = FileView), (status = 409, body = hivemind_client::wire::ErrorBody),
                      (status = 422, body = hivemind_client::wire::ErrorBody)))]
        pub(crate) async fn $create(
            State(store): State<Store>,
            Extension(key): Extension<SecretsKey>,
            JsonBody(req): JsonBody<FileCreateRequest>,
        ) -> ApiResult<impl IntoResponse> {
            create(&store, &key, $kind, req).await
        }

        #[utoipa::path(get, path = $route,
            params(("namespace" = Option<String>, Query, description = "whose apps' own to list besides the cluster ones; default: `default`")),
            responses((status = 200, body = Vec<FileView>)))]
        pub(crate) async fn $list(
            State(store): State<Store>,
            params: Params,
        ) -> ApiResult<Json<Vec<FileView>>> {
            list(&store, $kind, &params).await
        }

        #[utoipa::path(get, path = $item,
            params(($param = String, Path,), ("app" = Option<String>, Query, description = "one of this app's own")),
            responses((status = 200, body = FileView), (status = 404, body = hivemind_client::wire::ErrorBody)))]
        pub(crate) async fn $inspect(
            State(store): State<Store>,
            params: Params,
            Path(name): Path<String>,
        ) -> ApiResult<Json<FileView>> {
            inspect(&store, $kind, &params, &name).await
        }

        #[utoipa::path(delete, path = $item,
            params(($param = String, Path,), ("app" = Option<String>, Query, description = "one of this app's own")),
            responses((status = 200, body = FileView), (status = 404, body = hivemind_client::wire::ErrorBody),
                      (status = 409, description = "in use by a service", body = hivemind_client::wire::ErrorBody)))]
        pub(crate) async fn $remove(
            State(store): State<Store>,
            params: Params,
            Path(name): Path<String>,
        ) -> ApiResult<Json<FileView>> {
            remove(&store, $kind, &params, &name).await
        }
    };
}

handlers!(
    FileKind::Secret,
    create_secret,
    list_secrets,
    inspect_secret,
    remove_secret,
    "/api/v1/secrets",
    "/api/v1/secrets/{secret}",
    "secret"
);
handlers!(
    FileKind::Config,
    create_config,
    list_configs,
    inspect_config,
    remove_config,
    "/api/v1/configs",
    "/api/v1/configs/{config}",
    "config"
);
