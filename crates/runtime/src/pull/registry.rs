//! The registry protocol, over `oci-client`: resolving a reference to this host's manifest,
//! fetching blobs (verified against their digests), and turning registry failures into errors
//! that name the reference and the fix.
//!
//! Authentication: anonymous, or the Docker `config.json` credentials for the registry, sent as
//! HTTP Basic or exchanged for a Bearer token at the realm the registry's `WWW-Authenticate`
//! challenge names (oci-client does the exchange).

use std::net::IpAddr;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use super::{credentials_for, BlobStream, Credentials, RegistryConfig};
use crate::error::RuntimeError;
use crate::image::{
    is_index, pick_platform, Descriptor, Index, Manifest, MEDIA_OCI_INDEX, MEDIA_OCI_MANIFEST,
};
use hivemind_types::error_chain;

/// Manifest media types we accept from a registry.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Whether `registry` (`host[:port]`) is reached over plain HTTP: loopback always (as Docker
/// and containerd treat it), plus `extra` entries matching `host:port` or the bare host.
pub fn is_insecure_registry(registry: &str, extra: &[String]) -> bool {
    let registry = registry.to_ascii_lowercase();
    if extra
        .iter()
        .map(|e| e.trim().to_ascii_lowercase())
        .any(|e| e == registry || e == host_of(&registry))
    {
        return true;
    }
    let host = host_of(&registry);
    if host == "localhost" {
        return true;
    }
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host part of `host[:port]` (`[::1]:5000` → `[::1]`).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    match registry.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => registry,
    }
}

/// A manifest as the registry serves it, ready to be written to containerd.
pub(crate) struct Resolved {
    pub(crate) manifest: Manifest,
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) manifest_desc: Descriptor,
    /// The index the reference named, when it named one (it becomes the image's target).
    pub(crate) index: Option<(Descriptor, Vec<u8>)>,
}

/// One image reference on one registry, with the credentials for it.
pub(crate) struct Registry {
    client: Client,
    reference: Reference,
    /// The normalized reference as the user sees it, for messages.
    name: String,
    /// `host[:port]`, as `hivemind registry login` takes it.
    host: String,
    auth: RegistryAuth,
    /// Where the credentials came from, if any (a 401 then means they were refused).
    credentials_from: Option<String>,
    scheme: &'static str,
}

impl Registry {
    /// Prepares to pull `name` (a normalized reference). Reads credentials, does no I/O else.
    pub(crate) fn new(name: &str, config: &RegistryConfig) -> Result<Registry, RuntimeError> {
        Registry::with_credentials(name, config, None)
    }

    /// As [`Registry::new`], with `login` instead of the stored credentials.
    fn with_credentials(
        name: &str,
        config: &RegistryConfig,
        login: Option<Credentials>,
    ) -> Result<Registry, RuntimeError> {
        let reference: Reference = name.parse().map_err(|e| RuntimeError::Registry {
            reference: name.to_string(),
            reason: format!("not a valid image reference: {e}"),
            fix: "write it like registry.example.com/team/app:1.2".to_string(),
        })?;
        let host = reference.registry().to_string();
        let (credentials, credentials_from) = match (login, &config.docker_config) {
            (Some(c), _) => (Some(c), Some("the login".to_string())),
            (None, Some(path)) => {
                let found = credentials_for(path, &host).map_err(|e| RuntimeError::Registry {
                    reference: name.to_string(),
                    reason: error_chain(&e),
                    fix: format!(
                        "fix {} or run `hivemind registry login {host}`",
                        path.display()
                    ),
                })?;
                let from = found.as_ref().map(|_| path.display().to_string());
                (found, from)
            }
            (None, None) => (None, None),
        };
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username, c.password),
            None => RegistryAuth::Anonymous,
        };
        let insecure = is_insecure_registry(&host, &config.insecure);
        let client = Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        });
        Ok(Registry {
            client,
            reference,
            name: name.to_string(),
            host,
            auth,
            credentials_from,
            scheme: if insecure { "http" } else { "https" },
        })
    }

    /// Fetches the manifest the reference names; from an index, the one for this host's
    /// platform. Digests are checked by oci-client (against the reference's digest and the
    /// registry's `Docker-Content-Digest`).
    pub(crate) async fn resolve(&self) -> Result<Resolved, RuntimeError> {
        let (bytes, digest) = self
            .client
            .pull_manifest_raw(&self.reference, &self.auth, ACCEPT)
            .await
            .map_err(|e| self.error(e))?;
        let media_type = media_type_of(&bytes, &digest).map_err(|r| self.invalid(r))?;
        if !is_index(&media_type) {
            return self.single(bytes.to_vec(), digest, media_type, None);
        }
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("index {digest}: {e}")))?;
        let entry = pick_platform(&index).ok_or_else(|| RuntimeError::Registry {
            reference: self.name.clone(),
            reason: format!(
                "the index {digest} has no manifest for linux/{}",
                crate::image::host_architecture()
            ),
            fix: "push an image built for this platform".to_string(),
        })?;
        let index_desc = Descriptor {
            media_type,
            digest,
            size: bytes.len() as i64,
            annotations: Default::default(),
            platform: None,
        };
        let by_digest = self.reference.clone_with_digest(entry.digest.clone());
        let (manifest_bytes, manifest_digest) = self
            .client
            .pull_manifest_raw(&by_digest, &self.auth, ACCEPT)
            .await
            .map_err(|e| self.error(e))?;
        let manifest_type =
            media_type_of(&manifest_bytes, &manifest_digest).map_err(|r| self.invalid(r))?;
        self.single(
            manifest_bytes.to_vec(),
            manifest_digest,
            manifest_type,
            Some((index_desc, bytes.to_vec())),
        )
    }

    fn single(
        &self,
        bytes: Vec<u8>,
        digest: String,
        media_type: String,
        index: Option<(Descriptor, Vec<u8>)>,
    ) -> Result<Resolved, RuntimeError> {
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("manifest {digest}: {e}")))?;
        let manifest_desc = Descriptor {
            media_type,
            digest,
            size: bytes.len() as i64,
            annotations: Default::default(),
            platform: None,
        };
        Ok(Resolved {
            manifest,
            manifest_bytes: bytes,
            manifest_desc,
            index,
        })
    }

    /// A small blob (the image config), whole and verified.
    pub(crate) async fn fetch_blob(&self, desc: &Descriptor) -> Result<Vec<u8>, RuntimeError> {
        let mut out = Vec::with_capacity(desc.size.max(0) as usize);
        self.client
            .pull_blob(&self.reference, desc.digest.as_str(), &mut out)
            .await
            .map_err(|e| self.error(e))?;
        Ok(out)
    }

    /// A layer's bytes as they arrive; the stream fails at its end on a digest mismatch.
    pub(crate) async fn blob_stream(&self, desc: &Descriptor) -> Result<BlobStream, RuntimeError> {
        // Blob requests reuse the token the manifest request obtained.
        let stream = self
            .client
            .pull_blob_stream(&self.reference, desc.digest.as_str())
            .await
            .map_err(|e| self.error(e))?;
        let name = self.name.clone();
        let digest = desc.digest.clone();
        Ok(stream
            .map_err(move |e| RuntimeError::Registry {
                reference: name.clone(),
                reason: format!("download of {digest} failed: {}", error_chain(&e)),
                fix: "retry the pull; a digest mismatch means the registry serves damaged content"
                    .to_string(),
            })
            .boxed())
    }

    /// A failure about this reference with our own wording.
    pub(crate) fn failure(&self, reason: String, fix: &str) -> RuntimeError {
        RuntimeError::Registry {
            reference: self.name.clone(),
            reason,
            fix: fix.to_string(),
        }
    }

    fn invalid(&self, reason: String) -> RuntimeError {
        RuntimeError::InvalidImage {
            image: self.name.clone(),
            reason,
        }
    }

    /// Maps an oci-client failure to an error that says what happened and how to fix it.
    pub(crate) fn error(&self, e: OciDistributionError) -> RuntimeError {
        let host = &self.host;
        let login = format!("run `hivemind registry login {host}`");
        let (reason, fix) = match &e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => self.unauthorized(&login),
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|r| {
                    matches!(r.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                self.unauthorized(&login)
            }
            OciDistributionError::RegistryError { envelope, .. }
                if envelope.errors.iter().any(|r| {
                    matches!(
                        r.code,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                            | OciErrorCode::BlobUnknown
                    )
                }) =>
            {
                self.not_found()
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => self.not_found(),
            OciDistributionError::ServerError { code, message, .. } => (
                format!("{host} answered {code}: {}", message.trim()),
                "check the registry's health and retry".to_string(),
            ),
            OciDistributionError::RequestError(_) => (
                format!(
                    "cannot reach {host} over {}: {}",
                    self.scheme,
                    error_chain(&e)
                ),
                format!(
                    "check that the registry is running at {host}; registries other than \
                     localhost are reached over HTTPS unless listed in {}",
                    super::INSECURE_REGISTRIES_ENV
                ),
            ),
            OciDistributionError::DigestError(_) => (
                format!(
                    "content from {host} does not match its digest: {}",
                    error_chain(&e)
                ),
                "the registry serves damaged content; push the image again".to_string(),
            ),
            _ => (
                format!("registry {host}: {}", error_chain(&e)),
                "check the reference and the registry".to_string(),
            ),
        };
        RuntimeError::Registry {
            reference: self.name.clone(),
            reason,
            fix,
        }
    }

    fn unauthorized(&self, login: &str) -> (String, String) {
        let host = &self.host;
        match &self.credentials_from {
            None => (
                format!("401 from {host}: the registry needs credentials"),
                login.to_string(),
            ),
            Some(path) => (
                format!("401 from {host}: the credentials in {path} were refused"),
                format!("{login} again with a user that may pull this repository"),
            ),
        }
    }

    fn not_found(&self) -> (String, String) {
        let what = match (self.reference.tag(), self.reference.digest()) {
            (_, Some(digest)) => format!("digest {digest}"),
            (Some(tag), None) => format!("tag {tag}"),
            (None, None) => "tag latest".to_string(),
        };
        (
            format!(
                "{what} not found in {}/{}",
                self.host,
                self.reference.repository()
            ),
            "check the name and tag, or push the image first".to_string(),
        )
    }
}

/// Checks `credentials` against `registry` as `docker login` does: a Bearer registry must
/// issue a token for them; a Basic one must not answer 401 to a request that carries them.
pub async fn registry_login_check(
    registry: &str,
    credentials: &Credentials,
    config: &RegistryConfig,
) -> Result<(), RuntimeError> {
    // Any repository will do: the check is about the credentials, not about an image.
    let probe = format!("{registry}/hivemind/login-check:latest");
    let target = Registry::with_credentials(&probe, config, Some(credentials.clone()))?;
    let token = target
        .client
        .auth(&target.reference, &target.auth, RegistryOperation::Pull)
        .await
        .map_err(|e| target.error(e))?;
    if token.is_some() {
        return Ok(());
    }
    let result = target
        .client
        .fetch_manifest_digest(&target.reference, &target.auth)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(
            e @ (OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_)
            | OciDistributionError::RequestError(_)),
        ) => Err(target.error(e)),
        // A 404 for the probe repository means the credentials were accepted.
        Err(_) => Ok(()),
    }
}

/// The media type of a manifest or index: its `mediaType`, else guessed from its shape.
fn media_type_of(bytes: &[u8], digest: &str) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest {digest}: {e}"))?;
    Ok(match (probe.media_type, probe.manifests) {
        (Some(t), _) => t,
        (None, Some(_)) => MEDIA_OCI_INDEX.to_string(),
        (None, None) => MEDIA_OCI_MANIFEST.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let none: &[String] = &[];
        for r in [
            "localhost:5000",
            "127.0.0.1:5001",
            "127.8.9.1",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_insecure_registry(r, none), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.5:5000",
            "reg.lan:5000",
            "[fe80::1]:5000",
        ] {
            assert!(!is_insecure_registry(r, none), "{r}");
        }
        let extra = vec!["reg.lan:5000".to_string(), "10.0.0.5".to_string()];
        assert!(is_insecure_registry("reg.lan:5000", &extra));
        assert!(!is_insecure_registry("reg.lan:5001", &extra));
        assert!(is_insecure_registry("10.0.0.5:80", &extra));
    }

    #[test]
    fn media_types_from_manifest_shape() {
        let t = |j: &str| media_type_of(j.as_bytes(), "d").unwrap();
        assert_eq!(t(r#"{"manifests":[]}"#), MEDIA_OCI_INDEX);
        assert_eq!(t(r#"{"layers":[]}"#), MEDIA_OCI_MANIFEST);
        assert_eq!(
            t(r#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert!(media_type_of(b"[", "d").is_err());
    }

    #[test]
    fn errors_name_the_reference_tag_and_fix() {
        let r = Registry::new("127.0.0.1:5001/hello:9", &RegistryConfig::default()).unwrap();
        let e = r.error(OciDistributionError::UnauthorizedError {
            url: "http://127.0.0.1:5001/v2/hello/manifests/9".into(),
        });
        assert_eq!(
            e.to_string(),
            "cannot pull 127.0.0.1:5001/hello:9: 401 from 127.0.0.1:5001: the registry needs \
             credentials: run `hivemind registry login 127.0.0.1:5001`"
        );
        let e = r.error(OciDistributionError::ServerError {
            code: 404,
            url: String::new(),
            message: String::new(),
        });
        assert!(
            e.to_string()
                .contains("tag 9 not found in 127.0.0.1:5001/hello"),
            "{e}"
        );
    }
}
