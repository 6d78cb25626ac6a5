//! A busybox image with a second layer of directories and files whose owners, modes and
//! symlinks a test chooses: what the volume tests check copy-up keeps.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{config_json_layers, digest, hex_of, rootfs_layer, ImageError};

/// One entry of the extra layer, at `path` (relative, like `srv/data/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// Writes a `docker save` archive: the busybox root filesystem, then a layer of `entries` in
/// the order given (parents first).
pub fn build_image_with_entries(
    out: &Path,
    name: &str,
    entries: &[OwnedEntry],
) -> Result<(), ImageError> {
    let io_err = |source| ImageError::Io {
        path: out.to_path_buf(),
        source,
    };
    let base = rootfs_layer(&[]).map_err(io_err)?;
    let extra = owned_layer(entries).map_err(io_err)?;
    let blobs = [base, extra];
    let diff_ids: Vec<String> = blobs.iter().map(|b| digest(b)).collect();
    let config = config_json_layers(&diff_ids);
    let config_name = format!("{}.json", hex_of(&digest(&config)));
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("{}/layer.tar", hex_of(d)))
        .collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [name],
        "Layers": layer_names,
    }])
    .to_string();
    let mut tar = tar::Builder::new(File::create(out).map_err(io_err)?);
    for (layer_name, blob) in layer_names.iter().zip(&blobs) {
        append(&mut tar, layer_name, blob).map_err(io_err)?;
    }
    append(&mut tar, &config_name, &config).map_err(io_err)?;
    append(&mut tar, "manifest.json", manifest.as_bytes()).map_err(io_err)?;
    tar.into_inner().and_then(|mut f| f.flush()).map_err(io_err)
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, path, data)
}

fn owned_layer(entries: &[OwnedEntry]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.gid);
        header.set_mtime(0);
        match &e.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                tar.append_data(&mut header, &e.path, io::empty())?;
            }
            EntryKind::File(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                tar.append_data(&mut header, &e.path, data.as_slice())?;
            }
            EntryKind::Symlink(to) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                tar.append_link(&mut header, &e.path, to)?;
            }
        }
    }
    tar.into_inner()
}
