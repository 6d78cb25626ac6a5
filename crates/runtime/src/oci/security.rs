//! What a service changes in the container's privileges and process: capabilities from
//! `cap_add`/`cap_drop`, rlimits from `ulimits`, tmpfs mounts, and the init wrapper. Pure.
//!
//! Capabilities combine as in Docker: `cap_add: [ALL]` grants every capability except the ones
//! dropped; `cap_drop: [ALL]` leaves exactly the added ones; otherwise the default set minus the
//! dropped plus the added.

use std::collections::BTreeMap;
use std::path::Path;

use hivemind_types::limits::{ALL_CAPABILITIES, KNOWN_CAPABILITIES};
use hivemind_types::{TmpfsMount, Ulimit};
use oci_spec::runtime::{Capability, Mount, MountBuilder, PosixRlimit};
use oci_spec::OciSpecError;

/// Debian's statically linked `tini` (package `tini`), bind-mounted into containers with
/// `init: true`: static, so that it runs in any image.
pub(crate) const INIT_HOST_PATH: &str = "/usr/bin/tini-static";

/// Where the init binary appears inside the container (Docker uses /sbin/docker-init).
pub(crate) const INIT_CONTAINER_PATH: &str = "/sbin/hivemind-init";

/// Parses a `CAP_` name the Compose reader validated; names the kernel headers of oci-spec do
/// not know are skipped rather than failing the replica.
fn capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// The capability set of the process from Docker's `defaults` and the service's lists.
pub(super) fn capabilities(
    defaults: &[Capability],
    add: &[String],
    drop: &[String],
) -> Vec<Capability> {
    let has_all = |list: &[String]| list.iter().any(|c| c == ALL_CAPABILITIES);
    let dropped = |c: &str| drop.iter().any(|d| d == c);
    let names: Vec<String> = if has_all(add) {
        KNOWN_CAPABILITIES
            .iter()
            .filter(|c| !dropped(c))
            .map(|c| c.to_string())
            .collect()
    } else if has_all(drop) {
        add.to_vec()
    } else {
        let defaults = defaults
            .iter()
            .map(|c| serde_json::to_value(c).expect("serializes"))
            .filter_map(|v| v.as_str().map(str::to_string))
            .filter(|c| !dropped(c));
        defaults.chain(add.iter().cloned()).collect()
    };
    let mut out: Vec<Capability> = Vec::new();
    for cap in names.iter().filter_map(|n| capability(n)) {
        if !out.contains(&cap) {
            out.push(cap);
        }
    }
    out
}

/// `ulimits` as OCI rlimits (`nofile` → `RLIMIT_NOFILE`).
pub(super) fn rlimits(ulimits: &BTreeMap<String, Ulimit>) -> Vec<PosixRlimit> {
    ulimits
        .iter()
        .filter_map(|(name, limit)| {
            let json = serde_json::json!({
                "type": format!("RLIMIT_{}", name.to_ascii_uppercase()),
                "soft": limit.soft,
                "hard": limit.hard,
            });
            serde_json::from_value(json).ok()
        })
        .collect()
}

/// A tmpfs mount with Docker's defaults (`noexec`, `nosuid`, `nodev`), each overridden by its
/// opposite when the service gives it (`exec`, `suid`, `dev`).
pub(super) fn tmpfs_mount(tmpfs: &TmpfsMount) -> Result<Mount, OciSpecError> {
    let mut options: Vec<String> = ["noexec", "nosuid", "nodev"].map(String::from).to_vec();
    for opt in &tmpfs.options {
        let opposite = match opt.as_str() {
            "exec" => Some("noexec"),
            "suid" => Some("nosuid"),
            "dev" => Some("nodev"),
            "noexec" => Some("exec"),
            "nosuid" => Some("suid"),
            "nodev" => Some("dev"),
            _ => None,
        };
        options.retain(|o| Some(o.as_str()) != opposite && o != opt);
        options.push(opt.clone());
    }
    MountBuilder::default()
        .destination(&tmpfs.target)
        .typ("tmpfs")
        .source("tmpfs")
        .options(options)
        .build()
}

/// The read-only bind mount of the init binary.
pub(super) fn init_mount() -> Result<Mount, OciSpecError> {
    MountBuilder::default()
        .destination(INIT_CONTAINER_PATH)
        .typ("bind")
        .source(Path::new(INIT_HOST_PATH))
        .options(["rbind", "ro", "rprivate"].map(String::from).to_vec())
        .build()
}

/// The process arguments under init: `hivemind-init -- ARGS...`, so that the service's process
/// is not PID 1 and zombies are reaped and signals forwarded.
pub(super) fn under_init(args: Vec<String>) -> Vec<String> {
    [INIT_CONTAINER_PATH.to_string(), "--".to_string()]
        .into_iter()
        .chain(args)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(caps: Vec<Capability>) -> Vec<String> {
        let mut out: Vec<String> = caps
            .into_iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn capabilities_combine_like_docker() {
        let defaults = [Capability::Chown, Capability::Kill, Capability::NetRaw];
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: [(&[&str], &[&str], Vec<&str>); 5] = [
            (&[], &[], vec!["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"]),
            (
                &["CAP_NET_ADMIN"],
                &["CAP_NET_RAW"],
                vec!["CAP_CHOWN", "CAP_KILL", "CAP_NET_ADMIN"],
            ),
            (&[], &["ALL"], vec![]),
            (&["CAP_KILL"], &["ALL"], vec!["CAP_KILL"]),
            (
                &["CAP_CHOWN"],
                &[],
                vec!["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            ),
        ];
        for (add, drop, want) in table {
            assert_eq!(
                names(capabilities(&defaults, &v(add), &v(drop))),
                want,
                "{add:?} {drop:?}"
            );
        }
        let all = capabilities(&defaults, &v(&["ALL"]), &v(&["CAP_SYS_ADMIN"]));
        assert_eq!(all.len(), KNOWN_CAPABILITIES.len() - 1);
        assert!(!all.contains(&Capability::SysAdmin));
    }

    #[test]
    fn ulimits_become_rlimits() {
        let mut ulimits = BTreeMap::new();
        ulimits.insert(
            "nofile".to_string(),
            Ulimit {
                soft: 1024,
                hard: 2048,
            },
        );
        ulimits.insert("core".to_string(), Ulimit { soft: 0, hard: 0 });
        let json = serde_json::to_value(rlimits(&ulimits)).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 2048},
            ])
        );
    }

    #[test]
    fn tmpfs_options_override_docker_defaults() {
        let table: [(&[&str], &[&str]); 3] = [
            (&[], &["noexec", "nosuid", "nodev"]),
            (
                &["size=64m", "mode=1777"],
                &["noexec", "nosuid", "nodev", "size=64m", "mode=1777"],
            ),
            (&["exec", "nodev"], &["nosuid", "exec", "nodev"]),
        ];
        for (given, want) in table {
            let m = tmpfs_mount(&TmpfsMount {
                target: "/tmp".into(),
                options: given.iter().map(|s| s.to_string()).collect(),
            })
            .unwrap();
            let json = serde_json::to_value(m).unwrap();
            assert_eq!(json["type"], "tmpfs");
            assert_eq!(json["destination"], "/tmp");
            assert_eq!(json["options"], serde_json::json!(want), "{given:?}");
        }
    }

    /// The spec built for a service, as JSON.
    fn spec_for(service: &hivemind_types::ServiceSpec) -> serde_json::Value {
        let image = crate::image::ContainerConfig::default();
        let input = super::super::SpecInput {
            id: "web-abcde",
            image: &image,
            service,
            user: crate::user::ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![],
            },
            resolv_conf: Path::new("/run/x/resolv.conf"),
            hosts: Path::new("/run/x/hosts"),
            hostname: Path::new("/run/x/hostname"),
            network_ns: None,
            volumes: &[],
        };
        let spec = super::super::build_spec(&input, vec!["sleep".into(), "1".into()]).unwrap();
        serde_json::to_value(spec).unwrap()
    }

    #[test]
    fn service_settings_reach_the_spec() {
        use hivemind_types::ServiceSpec;
        type Check = fn(&serde_json::Value) -> bool;
        let table: Vec<(ServiceSpec, Check)> = vec![
            (ServiceSpec::default(), |j| {
                j["root"]["readonly"] == false
                    && j["hostname"] == "web-abcde"
                    && j["process"]["rlimits"].as_array().is_none_or(Vec::is_empty)
                    && j["linux"]["resources"].get("memory").is_none()
            }),
            (
                ServiceSpec {
                    read_only: true,
                    ..Default::default()
                },
                |j| j["root"]["readonly"] == true,
            ),
            (
                ServiceSpec {
                    hostname: Some("front".into()),
                    ..Default::default()
                },
                |j| {
                    j["hostname"] == "front"
                        && j["process"]["env"]
                            .as_array()
                            .unwrap()
                            .contains(&serde_json::json!("HOSTNAME=front"))
                },
            ),
            (
                ServiceSpec {
                    cap_drop: vec!["ALL".into()],
                    ..Default::default()
                },
                |j| {
                    let caps = &j["process"]["capabilities"];
                    ["bounding", "effective", "permitted"]
                        .iter()
                        .all(|k| caps[k].as_array().is_none_or(Vec::is_empty))
                },
            ),
            (
                ServiceSpec {
                    resources: hivemind_types::Resources {
                        memory_limit_bytes: Some(64 << 20),
                        pids_limit: Some(20),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                |j| {
                    let r = &j["linux"]["resources"];
                    r["memory"]["limit"] == 67_108_864
                        && r["pids"]["limit"] == 20
                        && r["devices"][0]["allow"] == false
                },
            ),
            (
                ServiceSpec {
                    tmpfs: vec![TmpfsMount {
                        target: "/tmp".into(),
                        options: vec![],
                    }],
                    init: true,
                    ..Default::default()
                },
                |j| {
                    let dests: Vec<&str> = j["mounts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|m| m["destination"].as_str())
                        .collect();
                    dests.contains(&"/tmp")
                        && dests.contains(&INIT_CONTAINER_PATH)
                        && j["process"]["args"]
                            == serde_json::json!([INIT_CONTAINER_PATH, "--", "sleep", "1"])
                },
            ),
        ];
        for (service, check) in table {
            let json = spec_for(&service);
            assert!(check(&json), "{service:?}\n{json:#}");
        }
    }

    #[test]
    fn init_wraps_the_process() {
        assert_eq!(
            under_init(vec!["sleep".into(), "1".into()]),
            ["/sbin/hivemind-init", "--", "sleep", "1"]
        );
        let m = serde_json::to_value(init_mount().unwrap()).unwrap();
        assert_eq!(m["source"], INIT_HOST_PATH);
    }
}
