//! The workload image: the busybox root filesystem (so tests can still `sh`) plus `hm-workload`
//! at [`WORKLOAD_PATH`], its shared-library closure as `ldd` reports it (libc, libgcc_s, the
//! loader at its absolute path; nothing for a statically linked binary), `/etc/nsswitch.conf`
//! (`hosts: files dns`), a localhost `/etc/hosts` and an empty `/etc/resolv.conf` (runtimes
//! bind-mount their own over both). glibc 2.34+ has the files and dns NSS modules inside libc,
//! so no `libnss_*` is needed, for dynamic and static binaries alike.
//!
//! The binary's debug info is dropped with `strip --strip-debug` when `strip` is installed
//! (binutils, which any machine that links Rust has), keeping a debug build's image small.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{io_err, rootfs_layer, write_docker_archive, write_oci_archive, Extra};
use super::{BuiltImage, ImageError};

/// Where `hm-workload` lives inside the image (on the image's `PATH`).
pub const WORKLOAD_PATH: &str = "/usr/local/bin/hm-workload";

/// The image's default command.
pub const WORKLOAD_CMD: &[&str] = &["hm-workload", "serve", "--port", "80"];

const NSSWITCH: &str = "passwd: files\ngroup: files\nhosts: files dns\n";
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Writes the workload image as a `docker save` archive; `workload_bin` is a built
/// `hm-workload` (static or dynamic).
pub fn build_workload_image(
    out: &Path,
    name: &str,
    workload_bin: &Path,
) -> Result<BuiltImage, ImageError> {
    let layer = workload_layer(out, workload_bin)?;
    write_docker_archive(out, name, &layer, WORKLOAD_CMD)
}

/// Writes the workload image as an OCI layout tarball with a gzipped layer.
pub fn build_workload_oci_image(
    out: &Path,
    name: &str,
    workload_bin: &Path,
) -> Result<BuiltImage, ImageError> {
    let layer = workload_layer(out, workload_bin)?;
    write_oci_archive(out, name, &layer, WORKLOAD_CMD)
}

/// The shared objects `bin` loads at run time, as absolute host paths with the dynamic loader
/// among them, from `ldd`. Empty for a statically linked binary.
pub fn library_closure(bin: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let fail = |reason: String| ImageError::Workload {
        path: bin.to_path_buf(),
        reason,
    };
    let output = Command::new("ldd")
        .arg(bin)
        .output()
        .map_err(|e| fail(format!("running ldd: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if [&stdout, &stderr]
        .iter()
        .any(|s| s.contains("statically linked") || s.contains("not a dynamic executable"))
    {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        return Err(fail(format!("ldd failed: {}", stderr.trim())));
    }
    parse_ldd(&stdout).map_err(fail)
}

/// Paths from `ldd` output: `name => /path (0x…)` and bare `/path (0x…)` lines (the loader);
/// the vDSO has no path and is skipped. A `not found` library is an error.
fn parse_ldd(stdout: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("ldd: {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// The root filesystem layer with the workload and its closure on top of busybox.
fn workload_layer(out: &Path, bin: &Path) -> Result<Vec<u8>, ImageError> {
    if !bin.is_file() {
        return Err(ImageError::Workload {
            path: bin.to_path_buf(),
            reason: "not found (build it: cargo build -p hivemind-workload)".into(),
        });
    }
    let mut extras: Vec<Extra> = vec![
        (relative(WORKLOAD_PATH), stripped(bin)?, 0o755),
        ("etc/nsswitch.conf".into(), NSSWITCH.into(), 0o644),
        ("etc/hosts".into(), HOSTS.into(), 0o644),
        ("etc/resolv.conf".into(), Vec::new(), 0o644),
    ];
    let libs: BTreeSet<PathBuf> = library_closure(bin)?.into_iter().collect();
    for lib in libs {
        let data = std::fs::read(&lib).map_err(io_err(&lib))?;
        extras.push((relative(&lib.to_string_lossy()), data, 0o755));
    }
    rootfs_layer(&extras).map_err(io_err(out))
}

/// `bin`'s bytes without debug info, or as they are when `strip` is not installed.
fn stripped(bin: &Path) -> Result<Vec<u8>, ImageError> {
    let tmp = tempfile::tempdir().map_err(io_err(bin))?;
    let copy = tmp.path().join("hm-workload");
    match Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&copy)
        .arg(bin)
        .output()
    {
        Ok(o) if o.status.success() => std::fs::read(&copy).map_err(io_err(&copy)),
        Ok(o) => Err(ImageError::Workload {
            path: bin.to_path_buf(),
            reason: format!("strip: {}", String::from_utf8_lossy(&o.stderr).trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::read(bin).map_err(io_err(bin))
        }
        Err(e) => Err(io_err(bin)(e)),
    }
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd3a5f2000)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0a1c000000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0a1be00000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0a1c2a0000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
        assert!(parse_ldd("\tlibfoo.so.1 => not found\n").is_err());
        assert!(parse_ldd("").unwrap().is_empty());
    }

    #[test]
    fn closure_of_a_dynamic_binary_has_libc_and_the_loader() {
        // The test executable itself is dynamically linked in an ordinary `cargo test`.
        let me = std::env::current_exe().unwrap();
        let libs = library_closure(&me).unwrap();
        if libs.is_empty() {
            return; // built with +crt-static
        }
        assert!(libs.iter().any(|l| l.ends_with("libc.so.6")), "{libs:?}");
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
    }

    #[test]
    fn closure_of_a_static_binary_is_empty() {
        let busybox = Path::new(super::super::HOST_BUSYBOX);
        if busybox.exists() {
            assert_eq!(library_closure(busybox).unwrap(), Vec::<PathBuf>::new());
        }
    }

    #[test]
    fn workload_image_is_deterministic_and_has_the_layout() {
        // Any dynamic binary exercises the same path as hm-workload; use the test executable.
        let me = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = build_workload_image(&dir.path().join("a.tar"), "wl:1", &me).unwrap();
        let b = build_workload_image(&dir.path().join("b.tar"), "wl:1", &me).unwrap();
        assert_eq!(a, b);
        let layer = workload_layer(&dir.path().join("x"), &me).unwrap();
        let mut paths = Vec::new();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            let entry = entry.unwrap();
            paths.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        for want in [
            "bin/sh",
            "usr/",
            "usr/local/bin/",
            "usr/local/bin/hm-workload",
            "etc/nsswitch.conf",
            "etc/hosts",
        ] {
            assert!(paths.iter().any(|p| p == want), "{want} missing: {paths:?}");
        }
        for lib in library_closure(&me).unwrap() {
            let rel = relative(&lib.to_string_lossy());
            assert!(paths.contains(&rel), "{rel} missing");
        }
        let dirs_before_files = paths.iter().position(|p| p == "usr/").unwrap().lt(&paths
            .iter()
            .position(|p| p == "usr/local/bin/hm-workload")
            .unwrap());
        assert!(dirs_before_files);
        let missing = build_workload_image(&dir.path().join("c.tar"), "wl:1", Path::new("/nope"));
        assert!(matches!(missing, Err(ImageError::Workload { .. })));
    }
}
