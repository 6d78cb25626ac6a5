//! Reading image tarballs for import: `docker save` archives (manifest.json) and OCI image layout
//! tarballs (index.json, blobs/sha256/...). This module only parses and hashes; it plans what to
//! write into containerd and leaves the writing to the gRPC side. Blobs are located by offset in
//! the (uncompressed) tarball and read on demand, so large layers are never held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::error::RuntimeError;
use super::image::{
    is_index, is_manifest, pick_platform, sha256_digest, Descriptor, ImageConfigFile, Index,
    Manifest, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, MEDIA_OCI_CONFIG, MEDIA_OCI_LAYER,
    MEDIA_OCI_LAYER_GZIP, MEDIA_OCI_MANIFEST,
};
use super::reference::normalize_image_ref;

/// Where one file's bytes sit inside the tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobRef {
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// One image found in an archive, ready to be written: every blob has its digest.
#[derive(Debug, Clone)]
pub(crate) struct PlannedImage {
    /// Normalized names (one image may carry several tags).
    pub(crate) names: Vec<String>,
    pub(crate) manifest: Manifest,
    pub(crate) manifest_bytes: Vec<u8>,
    pub(crate) config_bytes: Vec<u8>,
    pub(crate) diff_ids: Vec<String>,
    /// Layer blobs in manifest order.
    pub(crate) layers: Vec<BlobRef>,
}

impl PlannedImage {
    pub(crate) fn manifest_descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: MEDIA_OCI_MANIFEST.to_string(),
            digest: sha256_digest(&self.manifest_bytes),
            size: self.manifest_bytes.len() as i64,
            annotations: Default::default(),
            platform: None,
        }
    }
}

/// An opened image tarball: the index of its files.
pub(crate) struct Archive {
    path: PathBuf,
    /// The decompressed copy when the tarball itself was gzipped; deleted on drop.
    _decompressed: Option<tempfile::NamedTempFile>,
    files: HashMap<String, BlobRef>,
    links: HashMap<String, String>,
}

impl Archive {
    /// Indexes `path`. A gzipped tarball (`docker save | gzip`) is decompressed to a temporary
    /// file first, because blobs are later read by offset.
    pub(crate) fn open(path: &Path) -> Result<Archive, RuntimeError> {
        let io_err = |e| RuntimeError::io("open image archive", path, e);
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 2];
        let n = file.read(&mut magic).map_err(io_err)?;
        file.seek(SeekFrom::Start(0)).map_err(io_err)?;
        let (tar_path, decompressed) = if n == 2 && magic == [0x1f, 0x8b] {
            let mut tmp = tempfile::NamedTempFile::new().map_err(io_err)?;
            io::copy(
                &mut flate2::read::GzDecoder::new(BufReader::new(file)),
                &mut tmp,
            )
            .map_err(io_err)?;
            (tmp.path().to_path_buf(), Some(tmp))
        } else {
            (path.to_path_buf(), None)
        };
        let mut files = HashMap::new();
        let mut links = HashMap::new();
        let mut tar = tar::Archive::new(File::open(&tar_path).map_err(io_err)?);
        for entry in tar.entries_with_seek().map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let name = clean_path(&entry.path().map_err(io_err)?.to_string_lossy());
            let kind = entry.header().entry_type();
            if kind.is_file() {
                let blob = BlobRef {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                };
                files.insert(name, blob);
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().map_err(io_err)? {
                    let target = target.to_string_lossy().into_owned();
                    // Symlinks are relative to their directory, hard links to the archive root.
                    let resolved = if kind.is_symlink() && !target.starts_with('/') {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        clean_path(&format!("{dir}/{target}"))
                    } else {
                        clean_path(&target)
                    };
                    links.insert(name, resolved);
                }
            }
        }
        Ok(Archive {
            path: tar_path,
            _decompressed: decompressed,
            files,
            links,
        })
    }

    /// The path of the (uncompressed) tarball that `BlobRef` offsets point into.
    pub(crate) fn tar_path(&self) -> &Path {
        &self.path
    }

    fn find(&self, name: &str) -> Option<BlobRef> {
        let mut name = clean_path(name);
        // Follow at most a few links; archives never chain more than one.
        for _ in 0..8 {
            if let Some(blob) = self.files.get(&name) {
                return Some(*blob);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn invalid(&self, reason: impl Into<String>) -> RuntimeError {
        RuntimeError::InvalidArchive {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, RuntimeError> {
        let blob = self
            .find(name)
            .ok_or_else(|| self.invalid(format!("missing file {name}")))?;
        // Metadata files are small; refuse anything silly rather than allocate it.
        if blob.size > 64 << 20 {
            return Err(self.invalid(format!("{name} is too large for a metadata file")));
        }
        let mut buf = vec![0u8; blob.size as usize];
        let mut file = self.open_at(blob)?;
        file.read_exact(&mut buf)
            .map_err(|e| RuntimeError::io("read image archive", &self.path, e))?;
        Ok(buf)
    }

    /// A reader positioned at `blob`'s first byte (read at most `blob.size` bytes from it).
    pub(crate) fn open_at(&self, blob: BlobRef) -> Result<File, RuntimeError> {
        let io_err = |e| RuntimeError::io("read image archive", &self.path, e);
        let mut file = File::open(&self.path).map_err(io_err)?;
        file.seek(SeekFrom::Start(blob.offset)).map_err(io_err)?;
        Ok(file)
    }

    /// Streams a blob once to compute its digest and whether it is gzip-compressed.
    fn hash(&self, blob: BlobRef) -> Result<(String, bool), RuntimeError> {
        let io_err = |e| RuntimeError::io("hash image layer", &self.path, e);
        let mut reader = BufReader::new(self.open_at(blob)?).take(blob.size);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut first = None;
        loop {
            let n = reader.read(&mut buf).map_err(io_err)?;
            if n == 0 {
                break;
            }
            if first.is_none() {
                first = Some(n >= 2 && buf[0] == 0x1f && buf[1] == 0x8b);
            }
            hasher.update(&buf[..n]);
        }
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        Ok((digest, first.unwrap_or(false)))
    }

    /// Every image in the archive. `docker save` archives are recognized by `manifest.json`
    /// (which newer Docker writes next to an OCI layout: the manifest.json view is used then),
    /// OCI layouts by `index.json`.
    pub(crate) fn images(&self) -> Result<Vec<PlannedImage>, RuntimeError> {
        let images = if self.find("manifest.json").is_some() {
            self.docker_images()?
        } else if self.find("index.json").is_some() {
            self.oci_images()?
        } else {
            return Err(self
                .invalid("neither manifest.json (docker save) nor index.json (OCI layout) found"));
        };
        if images.is_empty() {
            return Err(
                self.invalid("no named image in the archive (tag the image before saving it)")
            );
        }
        Ok(images)
    }

    fn docker_images(&self) -> Result<Vec<PlannedImage>, RuntimeError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&self.read("manifest.json")?)
            .map_err(|e| self.invalid(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for entry in entries {
            let names: Vec<String> = entry
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| normalize_image_ref(t))
                .collect();
            if names.is_empty() {
                continue;
            }
            let config_bytes = self.read(&entry.config)?;
            let mut layers = Vec::new();
            let mut descriptors = Vec::new();
            for layer in &entry.layers {
                let blob = self
                    .find(layer)
                    .ok_or_else(|| self.invalid(format!("missing layer {layer}")))?;
                let (digest, gzip) = self.hash(blob)?;
                descriptors.push(Descriptor {
                    media_type: if gzip {
                        MEDIA_OCI_LAYER_GZIP
                    } else {
                        MEDIA_OCI_LAYER
                    }
                    .to_string(),
                    digest,
                    size: blob.size as i64,
                    annotations: Default::default(),
                    platform: None,
                });
                layers.push(blob);
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(MEDIA_OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: MEDIA_OCI_CONFIG.to_string(),
                    digest: sha256_digest(&config_bytes),
                    size: config_bytes.len() as i64,
                    annotations: Default::default(),
                    platform: None,
                },
                layers: descriptors,
            };
            let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
            out.push(self.planned(names, manifest, manifest_bytes, config_bytes, layers)?);
        }
        Ok(out)
    }

    fn oci_images(&self) -> Result<Vec<PlannedImage>, RuntimeError> {
        let index: Index = serde_json::from_slice(&self.read("index.json")?)
            .map_err(|e| self.invalid(format!("index.json: {e}")))?;
        let mut out = Vec::new();
        for top in &index.manifests {
            let Some(name) = oci_entry_name(top) else {
                continue;
            };
            let mut desc = top.clone();
            if is_index(&desc.media_type) {
                let nested: Index = serde_json::from_slice(&self.read_blob(&desc.digest)?)
                    .map_err(|e| self.invalid(format!("index {}: {e}", desc.digest)))?;
                desc = pick_platform(&nested)
                    .ok_or_else(|| self.invalid(format!("{name}: no manifest for this platform")))?
                    .clone();
            }
            if !is_manifest(&desc.media_type) {
                return Err(self.invalid(format!(
                    "{name}: unsupported media type {}",
                    desc.media_type
                )));
            }
            let manifest_bytes = self.read_blob(&desc.digest)?;
            let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
                .map_err(|e| self.invalid(format!("manifest {}: {e}", desc.digest)))?;
            let config_bytes = self.read_blob(&manifest.config.digest)?;
            let layers = manifest
                .layers
                .iter()
                .map(|l| {
                    self.find(&blob_path(&l.digest))
                        .ok_or_else(|| self.invalid(format!("missing layer blob {}", l.digest)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(self.planned(vec![name], manifest, manifest_bytes, config_bytes, layers)?);
        }
        Ok(out)
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        let bytes = self.read(&blob_path(digest))?;
        if sha256_digest(&bytes) != digest {
            return Err(self.invalid(format!("blob {digest} does not match its digest")));
        }
        Ok(bytes)
    }

    fn planned(
        &self,
        names: Vec<String>,
        manifest: Manifest,
        manifest_bytes: Vec<u8>,
        config_bytes: Vec<u8>,
        layers: Vec<BlobRef>,
    ) -> Result<PlannedImage, RuntimeError> {
        let config: ImageConfigFile = serde_json::from_slice(&config_bytes)
            .map_err(|e| self.invalid(format!("{}: image config: {e}", names[0])))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(self.invalid(format!(
                "{}: {} layers but {} diff_ids in the config",
                names[0],
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        Ok(PlannedImage {
            names,
            manifest,
            manifest_bytes,
            config_bytes,
            diff_ids: config.rootfs.diff_ids,
            layers,
        })
    }
}

/// The name of an OCI index entry: containerd's full-name annotation, else the OCI ref name if it
/// is a full reference. A bare tag (`latest`, as skopeo writes) names no repository: skipped.
fn oci_entry_name(desc: &Descriptor) -> Option<String> {
    if let Some(name) = desc.annotations.get(ANNOTATION_CONTAINERD_NAME) {
        return Some(normalize_image_ref(name));
    }
    let r = desc.annotations.get(ANNOTATION_REF_NAME)?;
    (r.contains('/') || r.contains(':')).then(|| normalize_image_ref(r))
}

fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

/// `./a//b/../c` → `a/c`: tar member names come in many spellings.
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("./manifest.json"), "manifest.json");
        assert_eq!(clean_path("abc/../def/layer.tar"), "def/layer.tar");
        assert_eq!(clean_path("/blobs//sha256/x"), "blobs/sha256/x");
    }

    #[test]
    fn oci_names_need_a_repository() {
        let mut d = Descriptor {
            media_type: MEDIA_OCI_MANIFEST.into(),
            digest: "sha256:x".into(),
            size: 1,
            annotations: Default::default(),
            platform: None,
        };
        assert_eq!(oci_entry_name(&d), None);
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "latest".into());
        assert_eq!(oci_entry_name(&d), None);
        d.annotations
            .insert(ANNOTATION_REF_NAME.into(), "busybox:1".into());
        assert_eq!(oci_entry_name(&d).unwrap(), "docker.io/library/busybox:1");
        d.annotations
            .insert(ANNOTATION_CONTAINERD_NAME.into(), "x/y:2".into());
        assert_eq!(oci_entry_name(&d).unwrap(), "docker.io/x/y:2");
    }

    #[test]
    fn reads_a_docker_archive() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("bb.tar");
        hivemind_test_support::image::build_busybox_image(&tar, "hm-busybox:t").unwrap();
        let archive = Archive::open(&tar).unwrap();
        let images = archive.images().unwrap();
        assert_eq!(images.len(), 1);
        let img = &images[0];
        assert_eq!(
            img.names,
            vec!["docker.io/library/hm-busybox:t".to_string()]
        );
        assert_eq!(img.layers.len(), 1);
        // An uncompressed layer's digest is its diff id.
        assert_eq!(img.manifest.layers[0].digest, img.diff_ids[0]);
        assert_eq!(img.manifest.layers[0].media_type, MEDIA_OCI_LAYER);
    }

    #[test]
    fn reads_an_oci_layout_with_gzip_layers() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("bb-oci.tar");
        hivemind_test_support::image::build_busybox_oci_image(&tar, "hm-busybox:oci").unwrap();
        let images = Archive::open(&tar).unwrap().images().unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].names[0], "docker.io/library/hm-busybox:oci");
        assert_eq!(
            images[0].manifest.layers[0].media_type,
            MEDIA_OCI_LAYER_GZIP
        );
        assert_ne!(images[0].manifest.layers[0].digest, images[0].diff_ids[0]);
    }

    #[test]
    fn a_gzipped_archive_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("bb.tar");
        hivemind_test_support::image::build_busybox_image(&tar, "hm-busybox:gz").unwrap();
        let gz = dir.path().join("bb.tar.gz");
        let mut enc =
            flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        io::copy(&mut File::open(&tar).unwrap(), &mut enc).unwrap();
        enc.finish().unwrap();
        let images = Archive::open(&gz).unwrap().images().unwrap();
        assert_eq!(images[0].names[0], "docker.io/library/hm-busybox:gz");
    }

    #[test]
    fn garbage_is_an_invalid_archive() {
        let dir = tempfile::tempdir().unwrap();
        let tar = dir.path().join("x.tar");
        let mut builder = tar::Builder::new(File::create(&tar).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", &b"hi"[..])
            .unwrap();
        builder.finish().unwrap();
        drop(builder);
        let err = Archive::open(&tar).unwrap().images().unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidArchive { .. }), "{err}");
    }
}
