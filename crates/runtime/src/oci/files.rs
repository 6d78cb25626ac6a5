//! Secret and config files in the runtime spec: each a read-only bind of a host file (on the
//! agent's tmpfs) at its target, after the standard mounts so that a target under `/run` or
//! `/etc` lands on top of them.

use oci_spec::runtime::{MountBuilder, Spec};
use oci_spec::OciSpecError;

use crate::FileBind;

/// `spec` with a read-only bind mount per entry of `binds`.
pub(crate) fn with_file_binds(mut spec: Spec, binds: &[FileBind]) -> Result<Spec, OciSpecError> {
    if binds.is_empty() {
        return Ok(spec);
    }
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for bind in binds {
        mounts.push(
            MountBuilder::default()
                .destination(&bind.target)
                .typ("bind")
                .source(&bind.source)
                // `ro` on a bind is applied by runc with a remount; the others keep the file
                // from being a device or a program.
                .options(
                    ["rbind", "ro", "nosuid", "nodev", "noexec", "rprivate"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn binds_come_last_and_read_only() {
        let spec = Spec::default();
        let before = spec.mounts().as_ref().map_or(0, Vec::len);
        let spec = with_file_binds(
            spec,
            &[FileBind {
                source: PathBuf::from("/run/hivemind/secrets/web-1/0"),
                target: "/run/secrets/db".into(),
            }],
        )
        .unwrap();
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), before + 1);
        let m = mounts.last().unwrap();
        assert_eq!(m.destination(), &PathBuf::from("/run/secrets/db"));
        assert_eq!(m.typ().as_deref(), Some("bind"));
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn no_binds_leave_the_spec_alone() {
        let spec = Spec::default();
        assert_eq!(with_file_binds(spec.clone(), &[]).unwrap(), spec);
    }
}
