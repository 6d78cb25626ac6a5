//! The volume routes: `hivemind volume ls|create|inspect|rm`, `rm --volumes`, and the list
//! of a node's volumes its agent reads to remove the data of deleted ones.

use std::collections::BTreeMap;

use hivemind_types::{App, Volume};
use serde::{Deserialize, Serialize};

use crate::{seg, Client, Result};

/// `POST /api/v1/volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeCreateRequest {
    pub name: String,
    /// The local driver's mount(8) options: `type`, `o`, `device`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The node to keep it on; absent: the only ready node (single node), else an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Client {
    /// The namespace's volumes.
    pub async fn volumes(&self) -> Result<Vec<Volume>> {
        self.get("/volumes", &[]).await
    }

    pub async fn volume(&self, name: &str) -> Result<Volume> {
        self.get(&format!("/volumes/{}", seg(name)), &[]).await
    }

    /// Creates a volume outside any app (`external: true` files refer to it).
    pub async fn create_volume(&self, req: &VolumeCreateRequest) -> Result<Volume> {
        self.call(reqwest::Method::POST, "/volumes", &[], Some(req))
            .await
    }

    /// Deletes a volume no replica uses; its node's agent then removes the data.
    pub async fn delete_volume(&self, name: &str) -> Result<Volume> {
        let path = format!("/volumes/{}", seg(name));
        self.call(reqwest::Method::DELETE, &path, &[], None::<&()>)
            .await
    }

    /// Deletes the app like [`Client::delete_app`]; with `volumes`, its volumes too once its
    /// replicas are gone (`hivemind rm --volumes`).
    pub async fn delete_app_with_volumes(&self, name: &str, volumes: bool) -> Result<App> {
        let path = format!("/apps/{}", seg(name));
        let query: &[(&str, &str)] = if volumes { &[("volumes", "true")] } else { &[] };
        self.call(reqwest::Method::DELETE, &path, query, None::<&()>)
            .await
    }

    /// The volumes kept on `node`, of every namespace (its agent's call).
    pub async fn node_volumes(&self, node: &str) -> Result<Vec<Volume>> {
        self.get(&format!("/nodes/{}/volumes", seg(node)), &[])
            .await
    }
}
