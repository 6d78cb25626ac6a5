//! The OCI mounts of a service's volumes and bind mounts: each is a bind mount of a host path
//! the agent prepared (`HostMount`), read-only when asked, `rprivate` unless a propagation is
//! given. Parents are mounted before what lies under them, whatever the order in the file
//! (as Docker sorts them), so `/data` never hides `/data/cache`.

use oci_spec::runtime::{Mount, MountBuilder};
use oci_spec::OciSpecError;

use crate::HostMount;

/// Appends `volumes` to `out` and orders the service's own mounts (from `user_start`: tmpfs
/// and volumes) by depth, keeping file order among equals.
pub(super) fn add_volume_mounts(
    out: &mut Vec<Mount>,
    user_start: usize,
    volumes: &[HostMount],
) -> Result<(), OciSpecError> {
    for v in volumes {
        out.push(volume_mount(v)?);
    }
    if let Some(user) = out.get_mut(user_start..) {
        user.sort_by_key(|m| depth(&m.destination().to_string_lossy()));
    }
    Ok(())
}

fn volume_mount(v: &HostMount) -> Result<Mount, OciSpecError> {
    let mut options = vec![
        "rbind".to_string(),
        v.propagation.clone().unwrap_or_else(|| "rprivate".into()),
    ];
    if v.read_only {
        options.push("ro".to_string());
    }
    MountBuilder::default()
        .destination(&v.target)
        .typ("bind")
        .source(&v.source)
        .options(options)
        .build()
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn host(source: &str, target: &str, read_only: bool) -> HostMount {
        HostMount {
            source: PathBuf::from(source),
            target: target.into(),
            read_only,
            propagation: None,
            copy_up: false,
        }
    }

    #[test]
    fn volumes_are_rbinds_ordered_parents_first() {
        let tmpfs = MountBuilder::default()
            .destination("/data/tmp")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap();
        let mut out = vec![tmpfs];
        let mut shared = host("/srv/conf", "/etc/app", false);
        shared.propagation = Some("rslave".into());
        add_volume_mounts(
            &mut out,
            0,
            &[
                host("/v/cache/_data", "/data/cache", false),
                host("/v/data/_data", "/data", true),
                shared,
            ],
        )
        .unwrap();
        let json = serde_json::to_value(&out).unwrap();
        let dests: Vec<&str> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        // By depth, file order among equals.
        assert_eq!(dests, ["/data", "/data/tmp", "/data/cache", "/etc/app"]);
        assert_eq!(json[0]["type"], "bind");
        assert_eq!(json[0]["source"], "/v/data/_data");
        assert_eq!(
            json[0]["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
        assert_eq!(json[3]["options"], serde_json::json!(["rbind", "rslave"]));
    }
}
