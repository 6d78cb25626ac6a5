//! Issue 10's acceptance 4, as a progress pin: the Compose Specification's reference example
//! (`fixtures/compose-spec/full-example.yml`, from compose-spec/compose-go, Apache-2.0) read
//! key by key. Each key is honoured, warned about or refused today; the table below says which,
//! so that a change in how a key is treated fails here until the table is updated with it.
//! The goal is a table without `Refused`.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::super::error::Problems;
use super::super::warnings::{warnings, Note};
use super::super::{read_document, ComposeApp, ComposeInput};

const FULL_EXAMPLE: &str = include_str!("fixtures/compose-spec/full-example.yml");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T {
    /// Read and acted on (or, for `x-*`, ignored by design).
    Honoured,
    /// Read, and a warning says what happens instead.
    Warned,
    /// An error: the file is refused because of this key.
    Refused,
}
use T::*;

/// Every key of the example down to service keys, `deploy` keys, the keys of each service
/// network entry and of each top-level network; with its treatment today.
const PIN: &[(&str, T)] = &[
    ("name", Honoured),
    ("services.bar.build", Refused),
    ("services.foo.annotations", Warned),
    ("services.foo.build", Refused),
    ("services.foo.cap_add", Honoured),
    ("services.foo.cap_drop", Honoured),
    ("services.foo.cgroup_parent", Refused),
    ("services.foo.command", Honoured),
    ("services.foo.configs", Honoured),
    ("services.foo.container_name", Refused),
    ("services.foo.depends_on", Refused),
    ("services.foo.deploy", Honoured),
    ("services.foo.deploy.mode", Honoured),
    ("services.foo.deploy.replicas", Honoured),
    ("services.foo.deploy.labels", Warned),
    ("services.foo.deploy.rollback_config", Warned),
    ("services.foo.deploy.update_config", Warned),
    ("services.foo.deploy.resources", Refused),
    ("services.foo.deploy.restart_policy", Honoured),
    ("services.foo.deploy.placement", Warned),
    ("services.foo.deploy.endpoint_mode", Warned),
    ("services.foo.device_cgroup_rules", Refused),
    ("services.foo.devices", Refused),
    ("services.foo.dns", Warned),
    ("services.foo.dns_search", Warned),
    ("services.foo.domainname", Warned),
    ("services.foo.entrypoint", Honoured),
    ("services.foo.env_file", Honoured),
    ("services.foo.environment", Honoured),
    ("services.foo.expose", Honoured),
    ("services.foo.external_links", Refused),
    ("services.foo.extra_hosts", Honoured),
    ("services.foo.hostname", Honoured),
    ("services.foo.healthcheck", Honoured),
    ("services.foo.image", Honoured),
    ("services.foo.ipc", Refused),
    ("services.foo.uts", Refused),
    ("services.foo.labels", Honoured),
    ("services.foo.label_file", Refused),
    ("services.foo.links", Refused),
    ("services.foo.logging", Warned),
    ("services.foo.mac_address", Warned),
    ("services.foo.network_mode", Refused),
    ("services.foo.networks", Honoured),
    ("services.foo.networks.some-network", Honoured),
    ("services.foo.networks.some-network.aliases", Honoured),
    ("services.foo.networks.other-network", Honoured),
    ("services.foo.networks.other-network.ipv4_address", Refused),
    ("services.foo.networks.other-network.ipv6_address", Refused),
    ("services.foo.networks.other-network.mac_address", Refused),
    ("services.foo.networks.other-other-network", Refused),
    ("services.foo.pid", Refused),
    ("services.foo.ports", Warned),
    ("services.foo.privileged", Refused),
    ("services.foo.read_only", Honoured),
    ("services.foo.restart", Honoured),
    ("services.foo.secrets", Honoured),
    ("services.foo.security_opt", Refused),
    ("services.foo.stdin_open", Warned),
    ("services.foo.stop_grace_period", Honoured),
    ("services.foo.stop_signal", Honoured),
    ("services.foo.storage_opt", Refused),
    ("services.foo.sysctls", Refused),
    ("services.foo.tmpfs", Honoured),
    ("services.foo.tty", Warned),
    ("services.foo.ulimits", Honoured),
    ("services.foo.user", Honoured),
    // `datavolume` is not defined under the top-level volumes (Docker Compose refuses it too),
    // and `.`/`~` sources read without the CLI's loader have no directory to be relative to.
    ("services.foo.volumes", Refused),
    ("services.foo.working_dir", Honoured),
    ("services.foo.x-bar", Honoured),
    ("services.foo.x-foo", Honoured),
    ("networks.some-network", Honoured),
    ("networks.other-network", Honoured),
    ("networks.other-network.driver", Honoured),
    ("networks.other-network.driver_opts", Warned),
    ("networks.other-network.ipam", Warned),
    ("networks.other-network.labels", Warned),
    ("networks.external-network", Honoured),
    ("networks.external-network.external", Warned),
    ("networks.other-external-network", Honoured),
    ("networks.other-external-network.external", Warned),
    ("networks.other-external-network.x-bar", Honoured),
    ("networks.other-external-network.x-foo", Honoured),
    // Drivers other than `local` (flocker, vsphere) and their driver_opts are refused with
    // advice; the rest of the section is honoured.
    ("volumes.some-volume", Honoured),
    ("volumes.other-volume", Honoured),
    ("volumes.other-volume.driver", Refused),
    ("volumes.other-volume.driver_opts", Refused),
    ("volumes.other-volume.labels", Honoured),
    ("volumes.another-volume", Honoured),
    ("volumes.another-volume.name", Honoured),
    ("volumes.another-volume.driver", Refused),
    ("volumes.another-volume.driver_opts", Refused),
    ("volumes.external-volume", Honoured),
    ("volumes.external-volume.external", Honoured),
    ("volumes.other-external-volume", Honoured),
    ("volumes.other-external-volume.external", Honoured),
    ("volumes.external-volume3", Honoured),
    ("volumes.external-volume3.name", Honoured),
    ("volumes.external-volume3.external", Honoured),
    ("volumes.external-volume3.x-bar", Honoured),
    ("volumes.external-volume3.x-foo", Honoured),
    ("configs", Honoured),
    ("secrets", Honoured),
    ("x-bar", Honoured),
    ("x-foo", Honoured),
    ("x-nested", Honoured),
];

fn env_file(path: &str) -> Result<String, String> {
    match path {
        "./example1.env" => Ok(include_str!("fixtures/compose-spec/example1.env").to_string()),
        "./example2.env" => Ok(include_str!("fixtures/compose-spec/example2.env").to_string()),
        _ => Err("no such file".to_string()),
    }
}

/// The key paths the pin covers, in file order.
fn key_paths(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Value::Mapping(top) = doc else {
        return out;
    };
    let keys = |v: &Value| -> Vec<(String, Value)> {
        match v {
            Value::Mapping(m) => m
                .iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
                .collect(),
            _ => Vec::new(),
        }
    };
    for (key, v) in keys(&Value::Mapping(top.clone())) {
        match key.as_str() {
            "services" => {
                for (service, sv) in keys(&v) {
                    let base = join("services", &service);
                    for (field, fv) in keys(&sv) {
                        let path = join(&base, &field);
                        out.push(path.clone());
                        if field == "deploy" {
                            out.extend(keys(&fv).into_iter().map(|(k, _)| join(&path, &k)));
                        }
                        if field == "networks" {
                            for (net, nv) in keys(&fv) {
                                let net_path = join(&path, &net);
                                out.push(net_path.clone());
                                out.extend(keys(&nv).into_iter().map(|(k, _)| join(&net_path, &k)));
                            }
                        }
                    }
                }
            }
            "networks" | "volumes" => {
                for (net, nv) in keys(&v) {
                    let path = join(&key, &net);
                    out.push(path.clone());
                    out.extend(keys(&nv).into_iter().map(|(k, _)| join(&path, &k)));
                }
            }
            _ => out.push(key),
        }
    }
    out
}

fn join(base: &str, key: &str) -> String {
    super::super::value::join(base, key)
}

/// Whether `problem` (an error or warning path) is at `path` or below it.
fn under(problem: &str, path: &str) -> bool {
    problem == path
        || problem
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

#[test]
fn the_compose_spec_full_example_is_pinned_key_by_key() {
    let env = BTreeMap::from([(
        "COMPOSE_PROJECT_NAME".to_string(),
        "full_example_project_name".to_string(),
    )]);
    let input = ComposeInput {
        file_name: "full-example.yml",
        source: FULL_EXAMPLE,
        env: &env,
        env_files: &env_file,
    };
    let mut p = Problems::default();
    let app = read_document(&mut p, &input);
    let errors: Vec<String> = p.errors().iter().map(|e| e.path.clone()).collect();
    let notes: Vec<Note> = p.notes().to_vec();
    let warned: Vec<String> = warnings(&ComposeApp {
        name: None,
        services: Vec::new(),
        unhonoured: notes,
        secrets: BTreeMap::new(),
        configs: BTreeMap::new(),
    })
    .into_iter()
    .map(|w| w.key)
    .collect();
    assert!(app.is_some(), "the file is read as a whole: {errors:?}");

    let doc: Value = serde_yaml_ng::from_str(FULL_EXAMPLE).expect("the fixture is YAML");
    let paths = key_paths(&doc);
    // Deepest first, so that an error is charged to the most specific key that holds it.
    let mut by_depth: Vec<&String> = paths.iter().collect();
    by_depth.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let owner = |problem: &str| by_depth.iter().find(|p| under(problem, p)).copied();
    let mut got: Vec<(String, T)> = paths.iter().map(|p| (p.clone(), Honoured)).collect();
    let mut mark = |problem: &str, t: T| {
        let path = owner(problem).unwrap_or_else(|| {
            panic!("{problem:?} is not under any key the pin covers; extend key_paths")
        });
        for (p, treatment) in got.iter_mut() {
            if p == path && *treatment != Refused {
                *treatment = t;
            }
        }
    };
    for w in &warned {
        mark(w, Warned);
    }
    for e in &errors {
        mark(e, Refused);
    }

    let table: String = got
        .iter()
        .map(|(p, t)| format!("    ({p:?}, {t:?}),\n"))
        .collect();
    let want: Vec<(String, T)> = PIN.iter().map(|(p, t)| (p.to_string(), *t)).collect();
    assert!(
        got == want,
        "the treatment of the example's keys changed; if on purpose, update PIN to:\n{table}\n\
         errors: {errors:#?}\nwarnings: {warned:#?}"
    );
}
