//! Image reference normalization, as containerd and Docker do it: `busybox` means
//! `docker.io/library/busybox:latest`. Pure string logic, no I/O.

/// The registry host used when a reference names none.
const DEFAULT_DOMAIN: &str = "docker.io";

/// Normalizes an image reference to its fully qualified form.
///
/// - `busybox` → `docker.io/library/busybox:latest`
/// - `user/app:1` → `docker.io/user/app:1`
/// - `127.0.0.1:5000/x` → `127.0.0.1:5000/x:latest`
/// - `x@sha256:…` keeps its digest and gets no tag.
///
/// The first path component is a registry host when it contains `.` or `:` or is `localhost`,
/// which is Docker's rule. Repository names are lowercased only in the host part: Docker rejects
/// uppercase repositories, and refusing them is the caller's job, not normalization's.
pub fn normalize_image_ref(reference: &str) -> String {
    let reference = reference.trim();
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    // A tag is a `:` after the last `/` (a `:` before it belongs to a registry port).
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let repo = match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            repo.to_string()
        }
        Some(_) => format!("{DEFAULT_DOMAIN}/{repo}"),
        None => format!("{DEFAULT_DOMAIN}/library/{repo}"),
    };
    // `docker.io/busybox` is a library image too.
    let repo = match repo.strip_prefix("docker.io/") {
        Some(rest) if !rest.contains('/') => format!("docker.io/library/{rest}"),
        _ => repo,
    };
    match (tag, digest) {
        (Some(tag), Some(digest)) => format!("{repo}:{tag}@{digest}"),
        (None, Some(digest)) => format!("{repo}@{digest}"),
        (Some(tag), None) => format!("{repo}:{tag}"),
        (None, None) => format!("{repo}:latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_image_ref as n;

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(n("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(n("docker.io/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("user/app:v2"), "docker.io/user/app:v2");
    }

    #[test]
    fn registries_with_ports_and_hosts() {
        assert_eq!(n("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(n("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(n("localhost/a/b"), "localhost/a/b:latest");
        assert_eq!(n("ghcr.io/o/r:tag"), "ghcr.io/o/r:tag");
    }

    #[test]
    fn digests_are_kept() {
        let d = "sha256:aaaa";
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn already_normalized_is_unchanged() {
        for r in [
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/x:latest",
        ] {
            assert_eq!(n(r), r);
        }
    }
}
