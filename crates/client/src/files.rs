//! Secrets and configs: `hivemind secret|config create|ls|inspect|rm`.

use base64::Engine as _;
use hivemind_types::secret::FileKind;

use crate::wire::{FileCreateRequest, FileView};
use crate::{seg, Client, Result};

/// `/secrets` or `/configs`.
fn route(kind: FileKind) -> &'static str {
    match kind {
        FileKind::Secret => "/secrets",
        FileKind::Config => "/configs",
    }
}

impl Client {
    /// Creates a cluster secret or config named `name` holding `value`; it is never shown
    /// again (a secret's value not even to the admin).
    pub async fn create_file(&self, kind: FileKind, name: &str, value: &[u8]) -> Result<FileView> {
        let body = FileCreateRequest {
            name: name.to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(value),
        };
        self.call(reqwest::Method::POST, route(kind), &[], Some(&body))
            .await
    }

    /// The cluster's secrets or configs and the own ones of the apps in the client's namespace.
    pub async fn files(&self, kind: FileKind) -> Result<Vec<FileView>> {
        self.get(route(kind), &[]).await
    }

    /// One cluster secret or config, or with `app` one of that app's own.
    pub async fn file(&self, kind: FileKind, name: &str, app: Option<&str>) -> Result<FileView> {
        let query: Vec<(&str, &str)> = app.map(|a| ("app", a)).into_iter().collect();
        self.get(&format!("{}/{}", route(kind), seg(name)), &query)
            .await
    }

    /// Removes one; refused (409) while a service mounts it.
    pub async fn delete_file(
        &self,
        kind: FileKind,
        name: &str,
        app: Option<&str>,
    ) -> Result<FileView> {
        let query: Vec<(&str, &str)> = app.map(|a| ("app", a)).into_iter().collect();
        let path = format!("{}/{}", route(kind), seg(name));
        self.call(reqwest::Method::DELETE, &path, &query, None::<&()>)
            .await
    }
}
