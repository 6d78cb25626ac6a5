//! Building the OCI runtime spec for a replica, deliberately and field by field (oci-spec's
//! defaults are youki's, not Docker's). Pure: the inputs are the image config, the service spec
//! and paths the caller prepared; the output is a `Spec` to serialize.
//!
//! What a container gets matches Docker's defaults: its capability set, masked and read-only
//! /proc and /sys paths, the standard mounts, a deny-all device cgroup with the usual character
//! devices allowed, and fresh pid/ipc/uts/mount/network namespaces. The service's limits and
//! privileges (`resources.rs`, `security.rs`) adjust that.

pub(crate) mod files;
mod resources;
mod security;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hivemind_types::{ExtraHost, ServiceSpec};
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespace, LinuxNamespaceBuilder,
    LinuxNamespaceType, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use oci_spec::OciSpecError;

use super::image::ContainerConfig;
use super::user::ResolvedUser;

pub(crate) use security::INIT_HOST_PATH;

/// `PATH` when neither the image nor the service sets one (Docker's default).
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set (moby `oci/caps/defaults.go`).
const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the spec depends on besides the service spec.
#[derive(Debug, Clone)]
pub(crate) struct SpecInput<'a> {
    /// The replica id: container id, hostname and cgroup name.
    pub(crate) id: &'a str,
    pub(crate) image: &'a ContainerConfig,
    pub(crate) service: &'a ServiceSpec,
    pub(crate) user: ResolvedUser,
    /// Host files bind-mounted over /etc/resolv.conf, /etc/hosts and /etc/hostname.
    pub(crate) resolv_conf: &'a Path,
    pub(crate) hosts: &'a Path,
    pub(crate) hostname: &'a Path,
    /// A network namespace to join (`/var/run/netns/<name>`); `None` makes a fresh, empty one.
    pub(crate) network_ns: Option<&'a Path>,
    /// The service's volumes and bind mounts, prepared on the node.
    pub(crate) volumes: &'a [crate::HostMount],
}

/// The process arguments, merged like Docker: `entrypoint` replaces the image's Entrypoint and
/// resets its Cmd; `command` replaces Cmd. `None` when nothing is left to run.
pub(crate) fn process_args(image: &ContainerConfig, service: &ServiceSpec) -> Option<Vec<String>> {
    let (entrypoint, cmd) = match &service.entrypoint {
        Some(ep) => (ep.clone(), service.command.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            service
                .command
                .clone()
                .or_else(|| image.cmd.clone())
                .unwrap_or_default(),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    (!args.is_empty()).then_some(args)
}

/// The environment: the image's `Env`, overridden and extended by the service's (service wins;
/// image order kept, new keys appended sorted), `HOSTNAME`, and a default `PATH` if none is set.
pub(crate) fn merge_env(
    image_env: &[String],
    service_env: &BTreeMap<String, String>,
    hostname: &str,
) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match out.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => out.push((key.to_string(), value.to_string())),
    };
    // Docker sets HOSTNAME first so that image and service values can override it.
    set("HOSTNAME", hostname);
    for kv in image_env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        set(k, v);
    }
    for (k, v) in service_env {
        set(k, v);
    }
    if !out.iter().any(|(k, _)| k == "PATH") {
        let (k, v) = DEFAULT_PATH.split_once('=').expect("constant has =");
        out.insert(0, (k.to_string(), v.to_string()));
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The working directory: the service's, else the image's, else `/`.
pub(crate) fn working_dir(image: &ContainerConfig, service: &ServiceSpec) -> String {
    [service.working_dir.as_deref(), image.working_dir.as_deref()]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_string()
}

/// The container's hostname: the service's `hostname`, else the replica id.
pub(crate) fn container_hostname<'a>(id: &'a str, service: &'a ServiceSpec) -> &'a str {
    service.hostname.as_deref().unwrap_or(id)
}

/// The generated /etc/hosts: loopback names, the replica's own name, then `extra_hosts`.
pub(crate) fn hosts_file(
    hostname: &str,
    ip: Option<std::net::IpAddr>,
    extra: &[ExtraHost],
) -> String {
    // With an address on the bridge the hostname maps to it (as in Docker), so a replica
    // announcing itself by name gives an address others can reach.
    let own = ip.map_or_else(|| "127.0.1.1".to_string(), |ip| ip.to_string());
    let mut out = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n{own}\t{hostname}\n"
    );
    for host in extra {
        out.push_str(&format!("{}\t{}\n", host.ip, host.name));
    }
    out
}

/// The container's /etc/resolv.conf from the host's: loopback nameservers (systemd-resolved,
/// dnsmasq) are unreachable from a container's network namespace, so they are dropped, and if
/// none is left the public resolvers Docker falls back to are used.
pub(crate) fn container_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            nameservers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if nameservers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Builds the runtime spec. `args` come from [`process_args`] (the caller reports a missing
/// command with the container id).
pub(crate) fn build_spec(input: &SpecInput<'_>, args: Vec<String>) -> Result<Spec, OciSpecError> {
    let image_env = input.image.env.clone().unwrap_or_default();
    let service = input.service;
    let hostname = container_hostname(input.id, service);
    let caps: oci_spec::runtime::Capabilities =
        security::capabilities(&DEFAULT_CAPABILITIES, &service.cap_add, &service.cap_drop)
            .into_iter()
            .collect();
    let args = if service.init {
        security::under_init(args)
    } else {
        args
    };
    let mut user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid);
    if !input.user.additional_gids.is_empty() {
        user = user.additional_gids(input.user.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build()?)
        .args(args)
        .env(merge_env(&image_env, &service.environment, hostname))
        .cwd(working_dir(input.image, input.service))
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        // Only the service's `ulimits`: the rest are inherited from containerd, as Docker does
        // without default-ulimits. A fixed RLIMIT_NOFILE above containerd's hard limit (20000 on
        // Debian's unit) would make runc fail with EPERM.
        .rlimits(security::rlimits(&service.ulimits))
        .no_new_privileges(false)
        .build()?;

    let linux = LinuxBuilder::default()
        .namespaces(namespaces(input.network_ns)?)
        .cgroups_path(PathBuf::from(format!("/hivemind/{}", input.id)))
        .resources(resources::linux_resources(
            &service.resources,
            device_rules()?,
        ))
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .build()?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(service.read_only)
                .build()?,
        )
        .process(process)
        .hostname(hostname)
        .mounts(mounts(input)?)
        .linux(linux)
        .build()
}

fn namespaces(network: Option<&Path>) -> Result<Vec<LinuxNamespace>, OciSpecError> {
    let mut out = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        out.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = network {
        net = net.path(path.to_path_buf());
    }
    out.push(net.build()?);
    Ok(out)
}

fn mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>, OciSpecError> {
    let m = |dest: &str, typ: &str, source: &Path, options: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let p = Path::new;
    let mut out = vec![
        m("/proc", "proc", p("proc"), &["nosuid", "noexec", "nodev"])?,
        m(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        m(
            "/dev/pts",
            "devpts",
            p("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        m(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        m(
            "/dev/mqueue",
            "mqueue",
            p("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        m(
            "/sys",
            "sysfs",
            p("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        m(
            "/sys/fs/cgroup",
            "cgroup",
            p("cgroup"),
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        m(
            "/etc/resolv.conf",
            "bind",
            input.resolv_conf,
            &["rbind", "rprivate"],
        )?,
        m("/etc/hosts", "bind", input.hosts, &["rbind", "rprivate"])?,
        m(
            "/etc/hostname",
            "bind",
            input.hostname,
            &["rbind", "rprivate"],
        )?,
    ];
    let user_start = out.len();
    for tmpfs in &input.service.tmpfs {
        out.push(security::tmpfs_mount(tmpfs)?);
    }
    volumes::add_volume_mounts(&mut out, user_start, input.volumes)?;
    if input.service.init {
        out.push(security::init_mount()?);
    }
    Ok(out)
}

/// Deny every device, then allow mknod of any device and read/write of the standard character
/// devices (the list runc and Docker allow).
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>, OciSpecError> {
    let rule =
        |typ: Option<LinuxDeviceType>, major: Option<i64>, minor: Option<i64>, access: &str| {
            let mut b = LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .access(access);
            if let Some(t) = typ {
                b = b.typ(t);
            }
            if let Some(m) = major {
                b = b.major(m);
            }
            if let Some(m) = minor {
                b = b.minor(m);
            }
            b.build()
        };
    let c = Some(LinuxDeviceType::C);
    Ok(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()?,
        rule(c, None, None, "m")?,
        rule(Some(LinuxDeviceType::B), None, None, "m")?,
        rule(c, Some(1), Some(3), "rwm")?, // null
        rule(c, Some(1), Some(5), "rwm")?, // zero
        rule(c, Some(1), Some(7), "rwm")?, // full
        rule(c, Some(1), Some(8), "rwm")?, // random
        rule(c, Some(1), Some(9), "rwm")?, // urandom
        rule(c, Some(5), Some(0), "rwm")?, // tty
        rule(c, Some(5), Some(2), "rwm")?, // ptmx
        rule(c, Some(136), None, "rwm")?,  // pts/*
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ContainerConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ContainerConfig {
            entrypoint: ep.map(v),
            cmd: cmd.map(v),
            ..Default::default()
        }
    }

    fn service(ep: Option<&[&str]>, cmd: Option<&[&str]>) -> ServiceSpec {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ServiceSpec {
            entrypoint: ep.map(v),
            command: cmd.map(v),
            ..Default::default()
        }
    }

    fn args(img: ContainerConfig, svc: ServiceSpec) -> Option<Vec<String>> {
        process_args(&img, &svc)
    }

    #[test]
    fn args_merge_like_docker() {
        let s = |x: &[&str]| Some(x.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // Image only.
        let img = || image(Some(&["/ep"]), Some(&["a"]));
        assert_eq!(args(img(), service(None, None)), s(&["/ep", "a"]));
        // command replaces Cmd, keeps Entrypoint.
        assert_eq!(args(img(), service(None, Some(&["b"]))), s(&["/ep", "b"]));
        // entrypoint resets Cmd.
        assert_eq!(args(img(), service(Some(&["/x"]), None)), s(&["/x"]));
        // both set.
        assert_eq!(
            args(img(), service(Some(&["/x"]), Some(&["c"]))),
            s(&["/x", "c"])
        );
        // No entrypoint in image: Cmd alone.
        assert_eq!(
            args(image(None, Some(&["sh"])), service(None, None)),
            s(&["sh"])
        );
        // Empty entrypoint override with a command runs the command.
        assert_eq!(
            args(img(), service(Some(&[]), Some(&["sleep", "1"]))),
            s(&["sleep", "1"])
        );
        // Nothing to run.
        assert_eq!(args(image(None, None), service(None, None)), None);
    }

    #[test]
    fn env_merges_with_service_winning_and_path_default() {
        let img = vec!["A=1".to_string(), "B=2".to_string()];
        let mut svc = BTreeMap::new();
        svc.insert("B".to_string(), "3".to_string());
        svc.insert("C".to_string(), "4".to_string());
        let env = merge_env(&img, &svc, "web-1");
        assert_eq!(
            env,
            vec![DEFAULT_PATH, "HOSTNAME=web-1", "A=1", "B=3", "C=4"]
        );
        let env = merge_env(&["PATH=/x".to_string()], &BTreeMap::new(), "h");
        assert_eq!(env, vec!["HOSTNAME=h", "PATH=/x"]);
    }

    #[test]
    fn working_dir_falls_back_to_root() {
        let mut img = ContainerConfig::default();
        let mut svc = ServiceSpec::default();
        assert_eq!(working_dir(&img, &svc), "/");
        img.working_dir = Some("/img".into());
        assert_eq!(working_dir(&img, &svc), "/img");
        svc.working_dir = Some("/svc".into());
        assert_eq!(working_dir(&img, &svc), "/svc");
    }

    fn spec_json(network_ns: Option<&Path>) -> serde_json::Value {
        let img = image(None, Some(&["sh"]));
        let svc = ServiceSpec::default();
        let input = SpecInput {
            id: "web-abcde",
            image: &img,
            service: &svc,
            user: ResolvedUser {
                uid: 65534,
                gid: 65534,
                additional_gids: vec![],
            },
            resolv_conf: Path::new("/run/x/resolv.conf"),
            hosts: Path::new("/run/x/hosts"),
            hostname: Path::new("/run/x/hostname"),
            network_ns,
            volumes: &[],
        };
        let spec = build_spec(&input, vec!["sleep".into(), "1".into()]).unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    #[test]
    fn spec_has_docker_defaults_not_youkis() {
        let j = spec_json(None);
        assert_eq!(j["hostname"], "web-abcde");
        assert_eq!(j["root"]["path"], "rootfs");
        assert_eq!(j["root"]["readonly"], false);
        assert_eq!(j["process"]["user"]["uid"], 65534);
        assert_eq!(j["process"]["args"], serde_json::json!(["sleep", "1"]));
        assert_eq!(j["process"]["noNewPrivileges"], false);
        assert_eq!(j["linux"]["cgroupsPath"], "/hivemind/web-abcde");
        let devices = j["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(
            devices[0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        assert!(devices
            .iter()
            .any(|d| d["major"] == 1 && d["minor"] == 3 && d["allow"] == true));
        let caps = j["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&serde_json::json!("CAP_NET_BIND_SERVICE")));
        assert!(!caps.contains(&serde_json::json!("CAP_SYS_ADMIN")));
        let dests: Vec<&str> = j["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        for d in [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/sys",
            "/sys/fs/cgroup",
        ] {
            assert!(dests.contains(&d), "{d}");
        }
        assert!(dests.contains(&"/etc/resolv.conf") && dests.contains(&"/etc/hosts"));
        assert!(j["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("/proc/kcore")));
    }

    #[test]
    fn network_namespace_path_is_joined_when_given() {
        let ns = |j: &serde_json::Value| {
            j["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["type"] == "network")
                .cloned()
                .unwrap()
        };
        assert_eq!(ns(&spec_json(None)).get("path"), None);
        let j = spec_json(Some(Path::new("/var/run/netns/hm-x")));
        assert_eq!(ns(&j)["path"], "/var/run/netns/hm-x");
        let types: Vec<&str> = j["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, vec!["pid", "ipc", "uts", "mount", "network"]);
    }

    #[test]
    fn resolv_conf_drops_loopback_nameservers() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver 10.0.0.1\noptions ndots:1\n";
        assert_eq!(
            container_resolv_conf(host),
            "search lan\nnameserver 10.0.0.1\noptions ndots:1\n"
        );
        assert_eq!(
            container_resolv_conf("nameserver 127.0.0.1\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn hosts_file_names_the_replica() {
        assert!(hosts_file("web-1", None, &[]).contains("127.0.1.1\tweb-1\n"));
        let ip = "10.42.0.7".parse().ok();
        let extra = [ExtraHost {
            name: "db".into(),
            ip: "10.0.0.5".into(),
        }];
        let hosts = hosts_file("web-1", ip, &extra);
        assert!(
            hosts.ends_with("10.42.0.7\tweb-1\n10.0.0.5\tdb\n"),
            "{hosts}"
        );
    }
}
