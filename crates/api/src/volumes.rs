//! Volumes: `GET/POST /volumes`, `GET/DELETE /volumes/{name}` (admin), `GET
//! /nodes/{node}/volumes` (that node's agent), and what deploys and app deletions do to them.
//!
//! The volume controller (`control`) creates an app's volumes and deletes those marked for
//! removal; here a deploy names the app's volumes and checks that its external ones exist, an
//! app deletion with `volumes=true` marks its volumes in the same transaction, and `volume rm`
//! deletes at once a volume no replica mounts. The node's agent removes the data of volumes
//! that are gone from its list.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use hivemind_client::volumes::VolumeCreateRequest;
use hivemind_client::wire::ErrorBody;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::compose::{self, ComposeApp};
use hivemind_types::volume::{is_volume_name, volume_key, LOCAL_DRIVER, LOCAL_DRIVER_OPTS};
use hivemind_types::{Kind, Meta, MountSource, Node, Volume};
use serde::Deserialize;

use crate::error::ApiError;
use crate::extract::{JsonBody, Params};

type ApiResult<T> = Result<T, ApiError>;

/// Names the app's volumes (`{app}_{key}`) and fills each external volume's `driver_opts`
/// from the stored volume, which must exist: a deploy that mounts a missing external volume
/// is refused before anything is written.
pub(crate) async fn prepare_deploy(
    store: &Store,
    namespace: &str,
    app: &str,
    parsed: &mut ComposeApp,
) -> ApiResult<()> {
    compose::name_volumes(parsed, app);
    let mut found: BTreeMap<String, Option<Volume>> = BTreeMap::new();
    for (service, spec) in &mut parsed.services {
        for (i, m) in spec.volumes.iter_mut().enumerate() {
            let MountSource::Volume(v) = &mut m.source else {
                continue;
            };
            if !v.external {
                continue;
            }
            let key = volume_key(namespace, &v.name);
            if !found.contains_key(&key) {
                let stored = store.get(Kind::Volume, &key).await?;
                found.insert(key.clone(), stored);
            }
            match found.get(&key).and_then(Option::as_ref) {
                Some(stored) => v.driver_opts = stored.driver_opts.clone(),
                None => {
                    return Err(ApiError::invalid(
                        format!("services.{service}.volumes[{i}]"),
                        format!(
                            "service {service} mounts external volume {}, which does not exist in namespace {namespace}",
                            v.name
                        ),
                        format!(
                            "create it first with `hivemind volume create {}`, or remove `external: true` to let the deploy create it",
                            v.name
                        ),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// The writes that mark `app`'s volumes for removal (`hivemind rm --volumes`): the volume
/// controller deletes them once no replica mounts them. External volumes stay.
pub(crate) async fn removal_ops(store: &Store, namespace: &str, app: &str) -> ApiResult<Vec<Op>> {
    let volumes: Vec<Volume> = store.list(Kind::Volume, &format!("{namespace}/")).await?;
    Ok(volumes
        .into_iter()
        .filter(|v| v.app.as_deref() == Some(app) && !v.external && !v.removing)
        .map(|v| {
            let expect = Expect::Revision(v.meta.revision);
            let marked = Volume {
                removing: true,
                ..v
            };
            Op::put(Kind::Volume, marked.key(), &marked, expect)
        })
        .collect())
}

/// Creates a volume outside any app, on `req.node` or the only node.
pub async fn create(
    store: &Store,
    namespace: &str,
    req: &VolumeCreateRequest,
) -> ApiResult<Volume> {
    if !is_volume_name(&req.name) {
        return Err(ApiError::invalid(
            "name",
            format!("{:?} is not a valid volume name", req.name),
            "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        ));
    }
    for (k, v) in &req.driver_opts {
        if !LOCAL_DRIVER_OPTS.contains(&k.as_str()) {
            return Err(ApiError::invalid(
                format!("driver_opts.{k}"),
                format!("driver option {k:?} is not one the local driver takes"),
                "use --driver-opt type=FS, o=OPTIONS and device=DEVICE, as for mount -t FS -o OPTIONS DEVICE",
            ));
        }
        if v.contains(['\n', '\0']) {
            return Err(ApiError::invalid(
                format!("driver_opts.{k}"),
                "the value has a line break or NUL",
                "write the option on one line",
            ));
        }
    }
    if !req.driver_opts.is_empty() && !req.driver_opts.contains_key("type") {
        return Err(ApiError::invalid(
            "driver_opts.type",
            "driver options without `type` cannot be mounted",
            "add --driver-opt type=FS (bind, tmpfs, nfs, ext4...)",
        ));
    }
    let nodes: Vec<Node> = store.list(Kind::Node, "").await?;
    let node = match &req.node {
        Some(name) if nodes.iter().any(|n| &n.name == name) => name.clone(),
        Some(name) => {
            return Err(ApiError::invalid(
                "node",
                format!("node {name} is not registered"),
                "list the nodes with `hivemind node ls`",
            ))
        }
        None => match nodes.as_slice() {
            [only] => only.name.clone(),
            [] => {
                return Err(ApiError::invalid(
                    "node",
                    "no node is registered to keep the volume on",
                    "start a node (`hivemind up`, or `hivemind agent` joined to this server), then retry",
                ))
            }
            _ => {
                return Err(ApiError::invalid(
                    "node",
                    "the cluster has several nodes: which one keeps the volume?",
                    "pass --node NAME",
                ))
            }
        },
    };
    let volume = Volume {
        namespace: namespace.to_string(),
        app: None,
        name: req.name.clone(),
        driver: LOCAL_DRIVER.to_string(),
        driver_opts: req.driver_opts.clone(),
        labels: req.labels.clone(),
        node,
        external: true,
        removing: false,
        meta: Meta::default(),
    };
    let key = volume.key();
    store
        .txn(vec![Op::put(
            Kind::Volume,
            key.clone(),
            &volume,
            Expect::Absent,
        )])
        .await
        .map_err(|e| match e {
            hivemind_store::StoreError::Conflict { .. } => ApiError::Conflict {
                message: format!("volume {} exists already", req.name),
                fix: "choose another name, or `hivemind volume rm` it first".to_string(),
            },
            other => other.into(),
        })?;
    get(store, namespace, &req.name).await
}

pub async fn get(store: &Store, namespace: &str, name: &str) -> ApiResult<Volume> {
    store
        .get(Kind::Volume, &volume_key(namespace, name))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                format!("volume {name} in namespace {namespace}"),
                "list the volumes with `hivemind volume ls`",
            )
        })
}

/// The part of a replica that says which volumes it mounts.
#[derive(Deserialize)]
struct ReplicaMounts {
    id: String,
    namespace: String,
    spec: SpecMounts,
}

#[derive(Deserialize)]
struct SpecMounts {
    #[serde(default)]
    volumes: Vec<hivemind_types::VolumeMount>,
}

/// Deletes a volume that no replica mounts (409 naming those that do).
pub async fn delete(store: &Store, namespace: &str, name: &str) -> ApiResult<Volume> {
    let volume = get(store, namespace, name).await?;
    let replicas: Vec<ReplicaMounts> = store.list(Kind::Replica, "").await?;
    let users: Vec<&str> = replicas
        .iter()
        .filter(|r| {
            r.namespace == namespace
                && r.spec
                    .volumes
                    .iter()
                    .any(|m| m.named().is_some_and(|v| v.name == name))
        })
        .map(|r| r.id.as_str())
        .collect();
    if let Some(first) = users.first() {
        let more = match users.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        return Err(ApiError::Conflict {
            message: format!("volume {name} is in use by replica {first}{more}"),
            fix: "remove the app that mounts it first (`hivemind rm APP`), or `hivemind rm --volumes APP` to remove both".to_string(),
        });
    }
    store
        .txn(vec![Op::delete(
            Kind::Volume,
            volume.key(),
            Expect::Revision(volume.meta.revision),
        )])
        .await?;
    Ok(volume)
}

#[utoipa::path(
    get, path = "/api/v1/volumes",
    params(("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Vec<Object>))
)]
pub(crate) async fn list_volumes(
    State(store): State<Store>,
    params: Params,
) -> ApiResult<Json<Vec<Volume>>> {
    let namespace = params.namespace()?;
    Ok(Json(
        store.list(Kind::Volume, &format!("{namespace}/")).await?,
    ))
}

#[utoipa::path(
    post, path = "/api/v1/volumes", request_body = VolumeCreateRequest,
    params(("namespace" = Option<String>, Query,)),
    responses(
        (status = 201, description = "volume created", body = Object),
        (status = 409, description = "it exists", body = ErrorBody),
        (status = 422, description = "bad name, driver option or node", body = ErrorBody),
    )
)]
pub(crate) async fn create_volume(
    State(store): State<Store>,
    params: Params,
    JsonBody(req): JsonBody<VolumeCreateRequest>,
) -> ApiResult<impl IntoResponse> {
    let namespace = params.namespace()?;
    let volume = create(&store, &namespace, &req).await?;
    tracing::info!(volume = %volume.name, node = %volume.node, "volume created");
    Ok((StatusCode::CREATED, Json(volume)))
}

#[utoipa::path(
    get, path = "/api/v1/volumes/{name}",
    params(("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_volume(
    State(store): State<Store>,
    params: Params,
    Path(name): Path<String>,
) -> ApiResult<Json<Volume>> {
    let namespace = params.namespace()?;
    Ok(Json(get(&store, &namespace, &name).await?))
}

#[utoipa::path(
    delete, path = "/api/v1/volumes/{name}",
    params(("name" = String, Path,), ("namespace" = Option<String>, Query,)),
    responses(
        (status = 200, description = "the deleted volume", body = Object),
        (status = 404, body = ErrorBody),
        (status = 409, description = "a replica mounts it", body = ErrorBody),
    )
)]
pub(crate) async fn delete_volume(
    State(store): State<Store>,
    params: Params,
    Path(name): Path<String>,
) -> ApiResult<Json<Volume>> {
    let namespace = params.namespace()?;
    let volume = delete(&store, &namespace, &name).await?;
    tracing::info!(volume = %name, "volume deleted");
    Ok(Json(volume))
}

#[utoipa::path(
    get, path = "/api/v1/nodes/{node}/volumes",
    params(("node" = String, Path,)),
    responses((status = 200, description = "the volumes kept on the node, of every namespace", body = Vec<Object>))
)]
pub(crate) async fn node_volumes(
    State(store): State<Store>,
    Path(node): Path<String>,
) -> ApiResult<Json<Vec<Volume>>> {
    let volumes: Vec<Volume> = store.list(Kind::Volume, "").await?;
    Ok(Json(
        volumes.into_iter().filter(|v| v.node == node).collect(),
    ))
}

#[cfg(test)]
mod tests;
