//! The parts of the OCI image format the runtime needs: manifests, indexes, image configs, chain
//! ids, digests. Pure data and hashing, no I/O; tolerant of Docker's media types, which containerd
//! accepts alongside the OCI ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MEDIA_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MEDIA_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Annotation containerd puts on index entries to carry the full image name.
pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation: a full reference or, as skopeo and Docker write it, only a tag.
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor (OCI image spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    pub(crate) schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    pub(crate) config: Descriptor,
    pub(crate) layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Index {
    pub(crate) manifests: Vec<Descriptor>,
}

/// The image config blob: what to run and the layers' uncompressed digests.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ImageConfigFile {
    #[serde(default)]
    pub(crate) config: Option<ContainerConfig>,
    pub(crate) rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub(crate) diff_ids: Vec<String>,
}

/// The `config` object of an image config: the defaults a container of this image runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The image's `HEALTHCHECK` (Docker's `Healthcheck`); OCI images have none.
    #[serde(default)]
    pub healthcheck: Option<hivemind_types::healthcheck::ImageHealthcheck>,
}

/// Whether a media type names a manifest list or OCI index (as opposed to a single manifest).
pub(crate) fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Whether a media type names a single-platform manifest.
pub(crate) fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// The GOARCH name of the machine we run on, as image platforms spell it.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Picks the manifest for this host (linux and our architecture) from an index. Entries without a
/// platform are accepted when no entry matches exactly, as single-platform indexes often omit it.
pub(crate) fn pick_platform(index: &Index) -> Option<&Descriptor> {
    let arch = host_architecture();
    let manifests = || {
        index
            .manifests
            .iter()
            .filter(|d| is_manifest(&d.media_type))
    };
    manifests()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| manifests().find(|d| d.platform.is_none()))
}

/// `sha256:<hex>` of `data`.
pub(crate) fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Chain ids for a list of layer diff ids (OCI image spec `config.md`, "Layer ChainID"):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))`.
/// The last one names the image's unpacked root filesystem snapshot.
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => sha256_digest(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The GC labels containerd expects on a manifest so that its config and layers stay alive.
pub(crate) fn manifest_gc_labels(manifest: &Manifest) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    );
    for (i, layer) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            layer.digest.clone(),
        );
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_id_of_one_layer_is_its_diff_id() {
        let ids = chain_ids(&["sha256:aa".to_string()]);
        assert_eq!(ids, vec!["sha256:aa".to_string()]);
    }

    #[test]
    fn chain_ids_hash_parent_space_diff_id() {
        let diff = vec!["sha256:aa".to_string(), "sha256:bb".to_string()];
        let ids = chain_ids(&diff);
        assert_eq!(ids[1], sha256_digest(b"sha256:aa sha256:bb"));
        assert_eq!(chain_ids(&[]), Vec::<String>::new());
    }

    #[test]
    fn sha256_of_empty_is_the_well_known_value() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn image_config_reads_dockers_healthcheck() {
        let json = r#"{"config":{"Cmd":["sh"],"Healthcheck":{"Test":["CMD-SHELL","pg_isready"],
            "Interval":2000000000,"Timeout":1000000000,"Retries":4}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cfg: ImageConfigFile = serde_json::from_str(json).unwrap();
        let check = cfg.config.unwrap().healthcheck.unwrap();
        assert_eq!(check.test, ["CMD-SHELL", "pg_isready"]);
        assert_eq!(
            (check.interval, check.timeout, check.retries),
            (2_000_000_000, 1_000_000_000, 4)
        );
    }

    #[test]
    fn image_config_parses_docker_fields() {
        let json = r#"{"architecture":"amd64","os":"linux",
            "config":{"User":"1000","Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":"/w","Entrypoint":null},
            "rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let cfg: ImageConfigFile = serde_json::from_str(json).unwrap();
        let c = cfg.config.unwrap();
        assert_eq!(c.user.as_deref(), Some("1000"));
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(c.entrypoint, None);
        assert_eq!(cfg.rootfs.diff_ids, vec!["sha256:aa".to_string()]);
    }

    #[test]
    fn picks_this_hosts_platform() {
        let d = |arch: &str| Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: format!("sha256:{arch}"),
            size: 1,
            annotations: BTreeMap::new(),
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
            }),
        };
        let index = Index {
            manifests: vec![d("mips"), d(host_architecture())],
        };
        assert_eq!(
            pick_platform(&index).unwrap().digest,
            format!("sha256:{}", host_architecture())
        );
    }

    #[test]
    fn manifest_labels_reference_config_and_layers() {
        let desc = |d: &str| Descriptor {
            media_type: MEDIA_OCI_LAYER.into(),
            digest: d.into(),
            size: 1,
            annotations: BTreeMap::new(),
            platform: None,
        };
        let m = Manifest {
            schema_version: 2,
            media_type: None,
            config: desc("sha256:c"),
            layers: vec![desc("sha256:l0"), desc("sha256:l1")],
        };
        let labels = manifest_gc_labels(&m);
        assert_eq!(labels["containerd.io/gc.ref.content.config"], "sha256:c");
        assert_eq!(labels["containerd.io/gc.ref.content.l.1"], "sha256:l1");
    }
}
