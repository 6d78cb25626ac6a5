//! One service of a Compose file, read into a `ServiceSpec` with Hivemind's defaults.
//!
//! Keys are read in file order and every problem is collected; the spec is only returned when
//! the service has none. Cross-key rules (replicas with `container_name`, `deploy.restart_policy`
//! over `restart`, `environment` over `env_file`) are applied after all keys are read; names
//! that need the other services (`container_name`, `links`) are returned for `aliases` to check.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::container::{
    read_capabilities, read_extra_hosts, read_flag, read_hostname, read_tmpfs, read_ulimits,
};
use super::depends_on::read_depends_on;
use super::deploy::{read_deploy, read_restart};
use super::dotenv;
use super::duration::read_duration_ms;
use super::error::Problems;
use super::healthcheck::{read_healthcheck, read_probe};
use super::hivemind::read_hivemind;
use super::keys::{is_near_hivemind, reject_key, unknown_key, Section};
use super::logging::read_logging;
use super::networks::{read_service_networks, NetworkDef};
use super::ports::{read_expose, read_ports};
use super::resources::read_service_level;
use super::secrets::read_mounts;
use super::signal::read_signal;
use super::value::{
    expect_mapping, expect_scalar, expect_str, index, join, string_entries, type_error,
};
use super::volumes::{
    merge_volume_tmpfs, read_service_volumes, read_volumes_from, VolumeDef, VolumesFrom,
};
use super::warnings::Unhonoured;
use super::words::split_words;
use crate::limits::Resources;
use crate::secret::FileKind;
use crate::spec::{PullPolicy, RestartPolicy, ServiceMode, ServiceSpec};

/// What every service of a file shares while being read.
pub(crate) struct ServiceContext<'a> {
    /// Interpolation variables, for `environment` entries without a value.
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Reads an `env_file` path relative to the compose file.
    pub(crate) env_files: &'a dyn Fn(&str) -> Result<String, String>,
    /// Every service name in the file as written, with its DNS name, for
    /// `x-hivemind.allow_from`.
    pub(crate) service_names: &'a BTreeMap<String, String>,
    /// The app's networks (top-level `networks` plus the implicit `default`).
    pub(crate) networks: &'a BTreeMap<String, NetworkDef>,
    /// The top-level `volumes`, which named mounts must refer to.
    pub(crate) volumes: &'a BTreeMap<String, VolumeDef>,
    /// The top-level `secrets` and `configs`, by key.
    pub(crate) secrets: &'a BTreeMap<String, super::secrets::FileDef>,
    pub(crate) configs: &'a BTreeMap<String, super::secrets::FileDef>,
}

/// A service read on its own, with the names it gives that the whole app must agree on (also
/// when the service itself is refused, so that they are checked all the same).
pub(crate) struct ReadService {
    /// `None` if the service has a problem (already reported).
    pub(crate) spec: Option<ServiceSpec>,
    /// `container_name`, with its path: a DNS alias of the service.
    pub(crate) container_name: Option<(String, String)>,
    /// `links`, as written.
    pub(crate) links: Vec<Link>,
    /// The service lists `profiles`, so it is not deployed (no profile is enabled).
    pub(crate) profiles: bool,
    /// `volumes_from`, resolved once every service is read (`volumes::resolve_volumes_from`).
    pub(crate) volumes_from: Vec<VolumesFrom>,
}

/// One `links` entry: `db` or `db:database` (`database` then names `db` too).
pub(crate) struct Link {
    pub(crate) path: String,
    pub(crate) target: String,
    pub(crate) alias: Option<String>,
}

pub(crate) fn read_service(
    p: &mut Problems,
    path: &str,
    value: &Value,
    cx: &ServiceContext<'_>,
) -> Option<ReadService> {
    let map = expect_mapping(p, path, value, "web: {image: nginx:1.27}")?;
    let before = p.len();
    let mut spec = ServiceSpec {
        replicas: 1,
        stop_signal: "SIGTERM".to_string(),
        stop_grace_period_ms: 10_000,
        restart: RestartPolicy::default(),
        ..ServiceSpec::default()
    };
    let mut image = None;
    let mut saw_build = false;
    let mut container_name = None;
    let mut links = Vec::new();
    let mut service_resources = Resources::default();
    let mut profiles = false;
    let mut env_file_vars = BTreeMap::new();
    let mut environment = BTreeMap::new();
    let mut restart = None;
    let mut deploy = None;
    let mut exposed = Vec::new();
    let mut networks = None;
    let mut probe = None;
    let mut volume_tmpfs = Vec::new();
    let mut volumes_from = Vec::new();

    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "image" => image = read_image(p, &key_path, v),
            "build" => {
                saw_build = true;
                p.push(
                    &key_path,
                    "build is not supported: build the image elsewhere, then `hivemind image import FILE.tar` or push it to a registry and set image",
                    "remove build and set image to the built image's reference",
                );
            }
            "command" => spec.command = read_words(p, &key_path, v),
            "entrypoint" => spec.entrypoint = read_words(p, &key_path, v),
            "environment" => environment = read_environment(p, &key_path, v, cx.env),
            "env_file" => env_file_vars = read_env_files(p, &key_path, v, cx),
            "labels" => spec.labels = read_labels(p, &key_path, v),
            "ports" => spec.ports = read_ports(p, &key_path, v),
            "expose" => exposed = read_expose(p, &key_path, v),
            "restart" => restart = read_restart(p, &key_path, v),
            "stop_signal" => {
                if let Some(signal) = read_signal(p, &key_path, v) {
                    spec.stop_signal = signal;
                }
            }
            "stop_grace_period" => {
                if let Some(ms) = read_duration_ms(p, &key_path, v) {
                    spec.stop_grace_period_ms = ms;
                }
            }
            "user" => spec.user = expect_scalar(p, &key_path, v, "user: \"1000:1000\""),
            "working_dir" => spec.working_dir = read_working_dir(p, &key_path, v),
            "deploy" => deploy = Some(read_deploy(p, &key_path, v)),
            "container_name" => {
                container_name = expect_str(p, &key_path, v, "container_name: web")
                    .map(|name| (key_path.clone(), name.to_string()));
            }
            "links" => links = read_links(p, &key_path, v),
            "depends_on" => {
                spec.depends_on = read_depends_on(p, &key_path, v, cx.service_names);
            }
            "cpus" | "mem_limit" | "mem_reservation" | "pids_limit" => {
                read_service_level(p, &key, &key_path, v, &mut service_resources)
            }
            "profiles" => {
                profiles = read_profiles(p, &key_path, v);
                if profiles {
                    p.note(&key_path, Unhonoured::Profiles);
                }
            }
            "pull_policy" => {
                if let Some(policy) = read_pull_policy(p, &key_path, v) {
                    spec.pull_policy = policy;
                }
            }
            "networks" => networks = Some(read_service_networks(p, &key_path, v, cx.networks)),
            "read_only" => spec.read_only = read_flag(p, &key_path, v, "read_only: true"),
            "cap_add" => spec.cap_add = read_capabilities(p, &key_path, v),
            "cap_drop" => spec.cap_drop = read_capabilities(p, &key_path, v),
            "tmpfs" => spec.tmpfs = read_tmpfs(p, &key_path, v),
            "volumes" => {
                (spec.volumes, volume_tmpfs) = read_service_volumes(p, &key_path, v, cx.volumes)
            }
            "volumes_from" => volumes_from = read_volumes_from(p, &key_path, v),
            "ulimits" => spec.ulimits = read_ulimits(p, &key_path, v),
            "init" => spec.init = read_flag(p, &key_path, v, "init: true"),
            "hostname" => spec.hostname = read_hostname(p, &key_path, v),
            "extra_hosts" => spec.extra_hosts = read_extra_hosts(p, &key_path, v),
            "logging" => spec.logging = read_logging(p, &key_path, v),
            "secrets" => spec.secrets = read_mounts(p, FileKind::Secret, &key_path, v, cx.secrets),
            "configs" => spec.configs = read_mounts(p, FileKind::Config, &key_path, v, cx.configs),
            "healthcheck" => spec.healthcheck = read_healthcheck(p, &key_path, v),
            "x-hivemind" => {
                spec.hivemind = read_hivemind(p, &key_path, v, cx.service_names);
                if let Some(v) = v.as_mapping().and_then(|m| m.get("healthcheck")) {
                    probe = read_probe(p, &join(&key_path, "healthcheck"), v);
                }
            }
            _ if is_near_hivemind(&key) => unknown_key(p, &key_path, &key, ["x-hivemind"]),
            _ if key.starts_with("x-") => {}
            other => reject_key(p, Section::Service, path, other),
        }
    }

    if image.is_none() && !saw_build && p.len() == before {
        p.push(
            join(path, "image"),
            "image is required",
            "set image to a reference such as nginx:1.27 or registry.example.com/shop/web:1.4",
        );
    }

    merge_volume_tmpfs(p, path, &mut spec, volume_tmpfs);

    // `environment` wins over `env_file`, key by key.
    spec.environment = env_file_vars;
    spec.environment.extend(environment);

    // A port listed in both `ports` and `expose` is already reachable; keep one entry.
    for port in exposed {
        let covered = spec
            .ports
            .iter()
            .any(|q| q.target == port.target && q.protocol == port.protocol);
        if !covered {
            spec.ports.push(port);
        }
    }

    // A service without `networks` is on `default`; reading nothing normalizes that (and an
    // internal `default`) the same way as an explicit list does.
    spec.networks = match networks {
        Some(networks) => networks,
        None => read_service_networks(p, path, &Value::Null, cx.networks),
    };

    // `x-hivemind.healthcheck` wins: the Compose one may be there for Docker.
    if probe.is_some() {
        spec.healthcheck = probe;
    }
    if let Some(policy) = restart {
        spec.restart = policy;
    }
    if let Some(deploy) = deploy {
        if let Some(mode) = deploy.mode {
            spec.mode = mode;
        }
        if let Some(replicas) = deploy.replicas {
            spec.replicas = replicas;
        }
        if let Some(policy) = deploy.restart {
            spec.restart = policy;
        }
        spec.resources = deploy.resources;
    }
    let r = &mut spec.resources;
    r.cpu_limit_nanos = r.cpu_limit_nanos.or(service_resources.cpu_limit_nanos);
    r.memory_limit_bytes = r
        .memory_limit_bytes
        .or(service_resources.memory_limit_bytes);
    r.memory_reservation_bytes = r
        .memory_reservation_bytes
        .or(service_resources.memory_reservation_bytes);
    r.pids_limit = r.pids_limit.or(service_resources.pids_limit);

    if container_name.is_some() && (spec.mode == ServiceMode::Global || spec.replicas != 1) {
        p.push(
            join(path, "container_name"),
            "container_name cannot be used with more than one replica",
            "remove container_name: every replica gets its own name (like web-3f9k2) and other services reach them by the service name",
        );
    }

    Some(ReadService {
        spec: (p.len() == before).then_some(ServiceSpec {
            image: image.unwrap_or_default(),
            ..spec
        }),
        container_name,
        links,
        profiles,
        volumes_from,
    })
}

/// `profiles`: a list of names. Whether any is listed is what matters: without `--profile`,
/// Compose leaves such a service out.
fn read_profiles(p: &mut Problems, path: &str, value: &Value) -> bool {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                expect_str(p, &index(path, i), item, "- debug");
            }
            !items.is_empty()
        }
        Value::Null => false,
        other => {
            type_error(p, path, "a list", other, "profiles: [debug]");
            false
        }
    }
}

/// `links`: a list of `SERVICE` or `SERVICE:ALIAS`. The targets are checked by `aliases`,
/// which knows every service.
fn read_links(p: &mut Problems, path: &str, value: &Value) -> Vec<Link> {
    let Value::Sequence(items) = value else {
        if !value.is_null() {
            type_error(p, path, "a list", value, "links: [db, \"db:database\"]");
        }
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(text) = expect_str(p, &item_path, item, "- db:database") else {
            continue;
        };
        let (target, alias) = match text.split_once(':') {
            Some((target, alias)) => (target, Some(alias.to_string())),
            None => (text, None),
        };
        out.push(Link {
            path: item_path,
            target: target.to_string(),
            alias,
        });
    }
    out
}

fn read_image(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let written = expect_str(p, path, value, "image: nginx:1.27")?;
    let image = written.trim();
    if image.is_empty() || image.chars().any(char::is_whitespace) {
        p.push(
            path,
            format!("{written:?} is not an image reference"),
            "set image to a reference such as nginx:1.27 or registry.example.com/shop/web:1.4",
        );
        return None;
    }
    Some(image.to_string())
}

/// `pull_policy`: `always`, `missing` (the default; `if_not_present` is its Kubernetes-style
/// alias) or `never`. `build` needs a builder, which Hivemind does not have.
fn read_pull_policy(p: &mut Problems, path: &str, value: &Value) -> Option<PullPolicy> {
    let written = expect_str(p, path, value, "pull_policy: missing")?;
    match written.trim() {
        "always" => Some(PullPolicy::Always),
        "missing" | "if_not_present" => Some(PullPolicy::Missing),
        "never" => Some(PullPolicy::Never),
        "build" => {
            p.push(
                path,
                "pull_policy: build is not supported: Hivemind does not build images",
                "build the image elsewhere, then `hivemind image import FILE.tar` or push it to a registry, and use pull_policy: missing",
            );
            None
        }
        other => {
            p.push(
                path,
                format!("{other:?} is not a pull policy"),
                "use one of always, missing, if_not_present or never",
            );
            None
        }
    }
}

/// `command` / `entrypoint`: a string split like a shell would, or a list of arguments.
fn read_words(p: &mut Problems, path: &str, value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Null => None,
        Value::String(s) => match split_words(s) {
            Ok(words) => Some(words),
            Err(why) => {
                p.push(
                    path,
                    format!("cannot split {s:?} into arguments: {why}"),
                    "balance the quotes, or write the arguments as a list like [\"sh\", \"-c\", \"echo hi\"]",
                );
                None
            }
        },
        Value::Sequence(items) => {
            let mut words = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                if let Some(word) = expect_scalar(p, &index(path, i), item, "- \"echo\"") {
                    words.push(word);
                }
            }
            Some(words)
        }
        other => {
            type_error(
                p,
                path,
                "a string or a list",
                other,
                "command: [\"echo\", \"hi\"]",
            );
            None
        }
    }
}

fn read_working_dir(p: &mut Problems, path: &str, value: &Value) -> Option<String> {
    let dir = expect_str(p, path, value, "working_dir: /app")?;
    if !dir.starts_with('/') {
        p.push(
            path,
            format!("{dir:?} is not an absolute path"),
            "start working_dir with `/`, like /app",
        );
        return None;
    }
    Some(dir.to_string())
}

/// `environment` as a list of `KEY=VALUE` / `KEY`, or a mapping. A key without a value takes
/// it from the interpolation variables and is left out when they do not have it (the server's
/// reading of an old request body; the CLI's loader inlines such values).
fn read_environment(
    p: &mut Problems,
    path: &str,
    value: &Value,
    env: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    super::environment::read_environment(p, path, value)
        .into_iter()
        .filter_map(|(key, v)| v.or_else(|| env.get(&key).cloned()).map(|v| (key, v)))
        .collect()
}

/// `env_file`: one path or a list of paths (or `{path, required}` entries), later files
/// overriding earlier ones.
fn read_env_files(
    p: &mut Problems,
    path: &str,
    value: &Value,
    cx: &ServiceContext<'_>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let entries: Vec<(String, &Value)> = match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| (index(path, i), item))
            .collect(),
        other => vec![(path.to_string(), other)],
    };
    for (entry_path, entry) in entries {
        let (file, required) = match entry {
            Value::String(s) => (s.clone(), true),
            Value::Mapping(map) => {
                let mut file = None;
                let mut required = true;
                for (key, v) in string_entries(p, &entry_path, map) {
                    let key_path = join(&entry_path, &key);
                    match key.as_str() {
                        "path" => {
                            file = expect_str(p, &key_path, v, "path: web.env").map(String::from)
                        }
                        "required" => match v {
                            Value::Bool(b) => required = *b,
                            Value::String(s) if s == "true" || s == "false" => {
                                required = s == "true"
                            }
                            other => {
                                type_error(p, &key_path, "a boolean", other, "required: false")
                            }
                        },
                        "format" => {
                            expect_str(p, &key_path, v, "format: raw");
                            p.note(&key_path, Unhonoured::EnvFileFormat);
                        }
                        other => unknown_key(p, &key_path, other, ["path", "required", "format"]),
                    }
                }
                let Some(file) = file else {
                    p.push(
                        join(&entry_path, "path"),
                        "an env_file entry needs `path`",
                        "write it like {path: web.env, required: false}",
                    );
                    continue;
                };
                (file, required)
            }
            other => {
                type_error(p, &entry_path, "a path", other, "env_file: web.env");
                continue;
            }
        };
        let source = match (cx.env_files)(&file) {
            Ok(source) => source,
            Err(_) if !required => continue,
            Err(why) => {
                p.push(
                    &entry_path,
                    format!("cannot read env file {file:?}: {why}"),
                    "check the path, which is relative to the compose file, or mark it {path: FILE, required: false}",
                );
                continue;
            }
        };
        let lookup = |name: &str| cx.env.get(name).cloned();
        match dotenv::parse_with(&source, &lookup) {
            Ok(vars) => out.extend(vars),
            Err(e) => p.push(
                &entry_path,
                format!("{file} line {}: {}", e.line, e.message),
                e.fix,
            ),
        }
    }
    out
}

/// `labels` as a list of `KEY=VALUE` (a bare `KEY` has an empty value) or a mapping.
fn read_labels(p: &mut Problems, path: &str, value: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                let item_path = index(path, i);
                let Some(text) = expect_str(p, &item_path, item, "- com.example.team=shop") else {
                    continue;
                };
                let (k, v) = text.split_once('=').unwrap_or((text, ""));
                if k.trim().is_empty() {
                    p.push(
                        &item_path,
                        format!("{text:?} has no label name"),
                        "write NAME=VALUE",
                    );
                    continue;
                }
                out.insert(k.to_string(), v.to_string());
            }
        }
        Value::Mapping(map) => {
            for (key, v) in string_entries(p, path, map) {
                let key_path = join(path, &key);
                let value = match v {
                    Value::Null => String::new(),
                    other => match expect_scalar(p, &key_path, other, "com.example.team: shop") {
                        Some(s) => s,
                        None => continue,
                    },
                };
                out.insert(key, value);
            }
        }
        Value::Null => {}
        other => type_error(
            p,
            path,
            "a list or a mapping",
            other,
            "labels: {com.example.team: shop}",
        ),
    }
    out
}
