//! Builds a tiny busybox image from the host's `/bin/busybox` (Debian's busybox-static) in the two
//! tarball formats the agent imports: a `docker save` archive and an OCI image layout. Output is
//! deterministic (fixed mtimes, owners and ordering), so building twice gives the same digests.
//!
//! The workload image ([`build_workload_image`]) is the busybox image plus `hm-workload` (the
//! project's test program) with its shared-library closure and what name resolution needs.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

mod owned;
mod workload;
pub use owned::{build_image_with_entries, EntryKind, OwnedEntry};
pub use workload::{
    build_workload_image, build_workload_oci_image, library_closure, WORKLOAD_CMD, WORKLOAD_PATH,
};

/// Where the statically linked busybox is taken from.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Applets linked to `/bin/busybox` inside the image.
pub const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "sleep", "httpd", "nc", "wget", "nslookup", "ps", "kill", "env",
    "id", "hostname", "top", "true", "false", "mkdir", "rm", "printf", "test",
];

const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// Why an image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{} not found: install Debian's busybox-static", HOST_BUSYBOX)]
    BusyboxMissing,
    #[error("workload binary {}: {reason}", path.display())]
    Workload { path: PathBuf, reason: String },
    #[error("writing image {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What was built, for tests that check digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The name as given (the agent normalizes it on import).
    pub name: String,
    /// `sha256:…` of the config blob (the image id Docker shows).
    pub config_digest: String,
    /// `sha256:…` of the uncompressed layer.
    pub diff_id: String,
    /// `sha256:…` of the layer blob as stored (gzipped in the OCI variant).
    pub layer_digest: String,
}

/// Writes a `docker save`-style archive (manifest.json, config, one uncompressed layer.tar).
pub fn build_busybox_image(out: &Path, name: &str) -> Result<BuiltImage, ImageError> {
    let layer = rootfs_layer(&[]).map_err(io_err(out))?;
    write_docker_archive(out, name, &layer, &["sh"])
}

/// [`build_busybox_image`] whose config carries Docker's `Healthcheck` (what a Dockerfile's
/// `HEALTHCHECK` writes), e.g. `{"Test": ["CMD-SHELL", "test -f /tmp/ok"], "Interval": 1e9}`.
pub fn build_busybox_image_with_healthcheck(
    out: &Path,
    name: &str,
    healthcheck: serde_json::Value,
) -> Result<BuiltImage, ImageError> {
    let layer = rootfs_layer(&[]).map_err(io_err(out))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&config_json(&digest(&layer), &["sh"])).expect("json");
    config["config"]["Healthcheck"] = healthcheck;
    write_docker_archive_config(
        out,
        name,
        &layer,
        serde_json::to_vec(&config).expect("json"),
    )
}

/// Writes an OCI image layout tarball (oci-layout, index.json, blobs/sha256/…) with a gzipped
/// layer. The index entry carries containerd's full-name annotation and the OCI ref name (tag).
pub fn build_busybox_oci_image(out: &Path, name: &str) -> Result<BuiltImage, ImageError> {
    let layer = rootfs_layer(&[]).map_err(io_err(out))?;
    write_oci_archive(out, name, &layer, &["sh"])
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A `docker save` archive of one layer whose config runs `cmd`.
fn write_docker_archive(
    out: &Path,
    name: &str,
    layer: &[u8],
    cmd: &[&str],
) -> Result<BuiltImage, ImageError> {
    write_docker_archive_config(out, name, layer, config_json(&digest(layer), cmd))
}

/// A `docker save` archive of one layer with the given config blob.
fn write_docker_archive_config(
    out: &Path,
    name: &str,
    layer: &[u8],
    config: Vec<u8>,
) -> Result<BuiltImage, ImageError> {
    let io_err = io_err(out);
    let diff_id = digest(layer);
    let config_digest = digest(&config);
    let config_name = format!("{}.json", hex_of(&config_digest));
    let layer_name = format!("{}/layer.tar", hex_of(&diff_id));
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": [layer_name],
    }]);
    let mut tar = tar::Builder::new(File::create(out).map_err(&io_err)?);
    append_dir(&mut tar, &format!("{}/", hex_of(&diff_id)), 0o755).map_err(&io_err)?;
    append_file(&mut tar, &layer_name, layer, 0o644).map_err(&io_err)?;
    append_file(&mut tar, &config_name, &config, 0o644).map_err(&io_err)?;
    append_file(
        &mut tar,
        "manifest.json",
        manifest.to_string().as_bytes(),
        0o644,
    )
    .map_err(&io_err)?;
    tar.into_inner()
        .and_then(|mut f| f.flush())
        .map_err(&io_err)?;
    Ok(BuiltImage {
        name: name.to_string(),
        config_digest,
        layer_digest: diff_id.clone(),
        diff_id,
    })
}

/// An OCI layout tarball of one gzipped layer whose config runs `cmd`.
fn write_oci_archive(
    out: &Path,
    name: &str,
    layer: &[u8],
    cmd: &[&str],
) -> Result<BuiltImage, ImageError> {
    let io_err = io_err(out);
    let diff_id = digest(layer);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(layer).map_err(&io_err)?;
    let layer_gz = gz.finish().map_err(&io_err)?;
    let layer_digest = digest(&layer_gz);
    let config = config_json(&diff_id, cmd);
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": layer_digest,
            "size": layer_gz.len(),
        }],
    }))
    .expect("json");
    let manifest_digest = digest(&manifest);
    let tag = name.rsplit_once(':').map_or("latest", |(repo, tag)| {
        if tag.contains('/') || repo.is_empty() {
            "latest"
        } else {
            tag
        }
    });
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let mut tar = tar::Builder::new(File::create(out).map_err(&io_err)?);
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    append_file(&mut tar, "oci-layout", layout, 0o644).map_err(&io_err)?;
    append_dir(&mut tar, "blobs/", 0o755).map_err(&io_err)?;
    append_dir(&mut tar, "blobs/sha256/", 0o755).map_err(&io_err)?;
    for (d, bytes) in [
        (&layer_digest, &layer_gz),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        let path = format!("blobs/sha256/{}", hex_of(d));
        append_file(&mut tar, &path, bytes, 0o644).map_err(&io_err)?;
    }
    append_file(&mut tar, "index.json", index.to_string().as_bytes(), 0o644).map_err(&io_err)?;
    tar.into_inner()
        .and_then(|mut f| f.flush())
        .map_err(&io_err)?;
    Ok(BuiltImage {
        name: name.to_string(),
        config_digest,
        diff_id,
        layer_digest,
    })
}

/// Directories of the busybox root filesystem; extras never re-add these.
const BASE_DIRS: &[&str] = &[
    "bin/", "etc/", "dev/", "proc/", "sys/", "home/", "var/", "run/", "root/", "tmp/",
];

/// A regular file added on top of the busybox root filesystem: path (relative), content, mode.
type Extra = (String, Vec<u8>, u32);

/// A `docker save` archive with several layers, from [`build_layered_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayeredImage {
    pub name: String,
    /// `sha256:…` of each uncompressed layer, bottom first.
    pub diff_ids: Vec<String>,
    /// One file per layer above the busybox base: (absolute path in the image, content), so a
    /// test can `cat` each one to prove that every layer was unpacked.
    pub files: Vec<(String, String)>,
}

/// Writes a `docker save` archive of `layers` layers: the busybox root filesystem, then
/// `layers - 1` layers that each add `/layers/<n>.txt` (the text `layer <n>`) and 256 KiB of
/// filler in `/layers/<n>.bin`, so that pulls move some bytes. The filler is derived from
/// `name`: the same name gives the same digests, another name gives layers no store has yet.
pub fn build_layered_image(
    out: &Path,
    name: &str,
    layers: usize,
) -> Result<LayeredImage, ImageError> {
    let io_err = |source| ImageError::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut blobs = vec![rootfs_layer(&[]).map_err(io_err)?];
    let mut files = Vec::new();
    for n in 1..layers.max(1) {
        let text = format!("layer {n}\n");
        let mut tar = tar::Builder::new(Vec::new());
        append_dir(&mut tar, "layers/", 0o755).map_err(io_err)?;
        append_file(&mut tar, &format!("layers/{n}.txt"), text.as_bytes(), 0o644)
            .map_err(io_err)?;
        append_file(
            &mut tar,
            &format!("layers/{n}.bin"),
            &filler(name, n, 256 << 10),
            0o644,
        )
        .map_err(io_err)?;
        blobs.push(tar.into_inner().map_err(io_err)?);
        files.push((format!("/layers/{n}.txt"), text));
    }
    let diff_ids: Vec<String> = blobs.iter().map(|b| digest(b)).collect();
    let config = config_json_layers(&diff_ids);
    let config_digest = digest(&config);
    let config_name = format!("{}.json", hex_of(&config_digest));
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", hex_of(d)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": layer_names,
    }]);
    let mut tar = tar::Builder::new(File::create(out).map_err(io_err)?);
    for ((d, layer_name), blob) in diff_ids.iter().zip(&layer_names).zip(&blobs) {
        append_dir(&mut tar, &format!("{}/", hex_of(d)), 0o755).map_err(io_err)?;
        append_file(&mut tar, layer_name, blob, 0o644).map_err(io_err)?;
    }
    append_file(&mut tar, &config_name, &config, 0o644).map_err(io_err)?;
    let manifest = manifest.to_string();
    append_file(&mut tar, "manifest.json", manifest.as_bytes(), 0o644).map_err(io_err)?;
    tar.into_inner()
        .and_then(|mut f| f.flush())
        .map_err(io_err)?;
    Ok(LayeredImage {
        name: name.to_string(),
        diff_ids,
        files,
    })
}

/// `len` bytes from a xorshift generator seeded by `name` and `n`: incompressible but
/// reproducible.
fn filler(name: &str, n: usize, len: usize) -> Vec<u8> {
    // FNV-1a of the name; never zero, which would stall xorshift.
    let mut x = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn config_json_layers(diff_ids: &[String]) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": ["sh"], "Env": [PATH_ENV] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("json")
}

/// The root filesystem as an uncompressed tar: busybox, applet links, passwd/group, /tmp, then
/// `extras` (sorted by path) with any missing parent directories (0755) before them.
fn rootfs_layer(extras: &[Extra]) -> io::Result<Vec<u8>> {
    let busybox = std::fs::read(HOST_BUSYBOX).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{HOST_BUSYBOX}: {e} (install Debian's busybox-static)"),
        )
    })?;
    let mut tar = tar::Builder::new(Vec::new());
    for dir in [
        "bin/", "etc/", "dev/", "proc/", "sys/", "home/", "var/", "run/",
    ] {
        append_dir(&mut tar, dir, 0o755)?;
    }
    append_dir(&mut tar, "root/", 0o700)?;
    append_dir(&mut tar, "tmp/", 0o1777)?;
    append_file(&mut tar, "bin/busybox", &busybox, 0o755)?;
    for applet in APPLETS {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        header.set_mtime(0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    append_file(&mut tar, "etc/passwd", PASSWD.as_bytes(), 0o644)?;
    append_file(&mut tar, "etc/group", GROUP.as_bytes(), 0o644)?;
    let mut extras: Vec<&Extra> = extras.iter().collect();
    extras.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dirs = std::collections::BTreeSet::new();
    for (path, _, _) in &extras {
        for (i, _) in path.match_indices('/') {
            dirs.insert(&path[..=i]);
        }
    }
    for dir in dirs.into_iter().filter(|d| !BASE_DIRS.contains(d)) {
        append_dir(&mut tar, dir, 0o755)?;
    }
    for (path, data, mode) in extras {
        append_file(&mut tar, path, data, *mode)?;
    }
    tar.into_inner()
}

fn config_json(diff_id: &str, cmd: &[&str]) -> Vec<u8> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": { "Cmd": cmd, "Env": [PATH_ENV] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created_by": "hivemind-mkimage" }],
    }))
    .expect("json")
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, path, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mode: u32) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(mode);
    header.set_mtime(0);
    tar.append_data(&mut header, path, io::empty())
}

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn hex_of(digest: &str) -> &str {
    digest.trim_start_matches("sha256:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let a = build_busybox_image(&dir.path().join("a.tar"), "bb:1").unwrap();
        let b = build_busybox_image(&dir.path().join("b.tar"), "bb:1").unwrap();
        assert_eq!(a, b);
        let bytes = |p: &str| std::fs::read(dir.path().join(p)).unwrap();
        assert_eq!(bytes("a.tar"), bytes("b.tar"));
    }

    #[test]
    fn docker_archive_has_manifest_config_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("bb.tar");
        let built = build_busybox_image(&out, "bb:1").unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            names.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        assert!(names.contains(&"manifest.json".to_string()));
        assert!(names.contains(&format!("{}.json", hex_of(&built.config_digest))));
        assert!(names.contains(&format!("{}/layer.tar", hex_of(&built.diff_id))));
    }

    #[test]
    fn layered_image_has_one_file_per_extra_layer() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("l.tar");
        let built = build_layered_image(&out, "layers:1", 3).unwrap();
        assert_eq!(built.diff_ids.len(), 3);
        assert_eq!(built.files.len(), 2);
        assert_eq!(
            built.files[1],
            ("/layers/2.txt".to_string(), "layer 2\n".to_string())
        );
        let again = build_layered_image(&dir.path().join("m.tar"), "layers:1", 3).unwrap();
        assert_eq!(built, again);
        let other = build_layered_image(&dir.path().join("o.tar"), "other:1", 3).unwrap();
        assert_eq!(other.diff_ids[0], built.diff_ids[0]);
        assert_ne!(other.diff_ids[1], built.diff_ids[1]);
    }

    #[test]
    fn oci_layer_is_gzipped_and_diff_id_is_of_the_plain_tar() {
        let dir = tempfile::tempdir().unwrap();
        let oci = build_busybox_oci_image(&dir.path().join("o.tar"), "bb:1").unwrap();
        let docker = build_busybox_image(&dir.path().join("d.tar"), "bb:1").unwrap();
        assert_eq!(oci.diff_id, docker.diff_id);
        assert_ne!(oci.layer_digest, oci.diff_id);
        assert_eq!(oci.config_digest, docker.config_digest);
    }
}
