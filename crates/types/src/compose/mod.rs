//! The Compose Specification reader (SPEC §3): a Compose file in, validated `ServiceSpec`s out.
//!
//! The steps are: YAML (with anchors, aliases and `<<` merge keys), interpolation of `${VAR}`
//! references in string values, then one pass over the keys that fills the normalized specs
//! and collects every problem with its key path and a fix. Keys Hivemind cannot honour yet and
//! unknown keys are errors, except those whose absence is harmless: they are read and noted,
//! and [`warnings`] words them for the deploy response. `x-*` keys are ignored except
//! `x-hivemind` on a service.
//!
//! This module does no I/O: the caller passes the file's text, the variables (`.env` merged with
//! the process environment) and a callback that reads `env_file`s. It must never panic, whatever
//! the input.

mod aliases;
mod container;
mod depends_on;
mod deploy;
mod document;
mod dotenv;
mod duration;
mod environment;
mod error;
mod extends;
mod healthcheck;
mod hivemind;
mod include;
mod interpolate;
mod keys;
mod logging;
mod merge;
mod names;
mod networks;
mod ports;
mod profiles;
mod project;
mod resources;
mod secrets;
mod service;
mod signal;
mod value;
mod volumes;
mod warnings;
mod words;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_yaml_ng::{Mapping, Value};

pub use error::{ComposeError, FieldError};
pub use names::{app_dns_name, is_compose_name};
pub use project::{load_project, ComposeFile, Project, ProjectInput};
pub use secrets::{FileDef, FileSource};
pub use volumes::name_volumes;
pub use warnings::{warnings, Note, Unhonoured, Warning};

use crate::id::MAX_SERVICE_NAME_LEN;
use crate::secret::FileKind;
use crate::spec::ServiceSpec;
use error::Problems;
use keys::{reject_key, Section};
use networks::read_networks;
use service::{read_service, ServiceContext};
use value::{expect_mapping, expect_str, join, string_entries};

/// What `parse` reads.
pub struct ComposeInput<'a> {
    /// Used in error messages only, e.g. `compose.yaml`.
    pub file_name: &'a str,
    /// The file's text.
    pub source: &'a str,
    /// Interpolation variables: the `.env` file and the process environment merged by the
    /// caller, the process environment winning.
    pub env: &'a BTreeMap<String, String>,
    /// Reads an `env_file` path relative to the compose file; the caller supplies it so that
    /// this crate does no I/O. `Err` carries a short reason such as "no such file".
    pub env_files: &'a dyn Fn(&str) -> Result<String, String>,
}

/// A Compose file once read and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComposeApp {
    /// The top-level `name:` as a DNS label (`My_App` -> `my-app`), if the file sets one; the
    /// CLI falls back to `--app` or the directory name.
    pub name: Option<String>,
    /// The services in file order, by DNS name (`plausible_db` -> `plausible-db`); a name
    /// written otherwise is among the service's DNS aliases.
    pub services: Vec<(String, ServiceSpec)>,
    /// Keys read but not honoured, in file order; [`warnings`] words them.
    pub unhonoured: Vec<Note>,
    /// The top-level `secrets`, by key: the CLI sends the values of those it reads.
    pub secrets: BTreeMap<String, FileDef>,
    /// The top-level `configs`, by key.
    pub configs: BTreeMap<String, FileDef>,
}

/// Reads and validates a Compose file, reporting every problem found.
pub fn parse(input: &ComposeInput<'_>) -> Result<ComposeApp, ComposeError> {
    let mut p = Problems::default();
    let app = read_document(&mut p, input);
    let unhonoured = p.take_notes();
    p.finish(
        input.file_name,
        app.map_or_else(
            || ComposeApp {
                name: None,
                services: Vec::new(),
                unhonoured: Vec::new(),
                secrets: BTreeMap::new(),
                configs: BTreeMap::new(),
            },
            |app| ComposeApp { unhonoured, ..app },
        ),
    )
}

/// A size as Compose and Docker write it (`10m`, `500k`, `1.5g`, bytes), in bytes; `None` if
/// it is not one. For flags that take sizes the way Compose files do.
pub fn parse_size(text: &str) -> Option<u64> {
    resources::parse_size(text)
}

/// Parses a `.env` file. References to variables defined earlier in the same file are expanded;
/// nothing else is consulted, so a reference to anything else expands to the empty string.
pub fn parse_dotenv(source: &str) -> Result<BTreeMap<String, String>, ComposeError> {
    parse_dotenv_with(".env", source, &|_| None)
}

/// Parses the project's `.env` file (`file_name` is for errors): references to variables
/// defined earlier in the same file are expanded, then through `lookup` (the CLI passes the
/// process environment, as Docker Compose does).
pub fn parse_dotenv_with(
    file_name: &str,
    source: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ComposeError> {
    dotenv::parse_with(source, lookup).map_err(|e| ComposeError {
        file: file_name.to_string(),
        errors: vec![FieldError {
            path: format!("line {}", e.line),
            message: e.message,
            fix: e.fix,
        }],
    })
}

fn read_document(p: &mut Problems, input: &ComposeInput<'_>) -> Option<ComposeApp> {
    let mut doc = document::load_yaml(p, input.source)?;
    let top = document::top_mapping(p, &mut doc)?;

    let lookup = |name: &str| input.env.get(name).cloned();
    document::interpolate_top(p, top, &lookup);
    // Validating a value whose interpolation failed would only repeat the problem in other
    // words, so stop here, as Docker Compose does.
    if p.len() > 0 {
        return None;
    }

    let mut name = None;
    let mut services = None;
    let mut networks = None;
    let mut volumes = BTreeMap::new();
    let (mut secret_defs, mut config_defs) = (BTreeMap::new(), BTreeMap::new());
    for (key, v) in string_entries(p, "", top) {
        match key.as_str() {
            "name" => name = read_app_name(p, v),
            "secrets" => secret_defs = secrets::read_defs(p, FileKind::Secret, "secrets", v),
            "configs" => config_defs = secrets::read_defs(p, FileKind::Config, "configs", v),
            "services" => services = Some(v),
            "networks" => networks = Some(read_networks(p, v)),
            "volumes" => volumes = volumes::read_volumes(p, v),
            // Obsolete in the Compose Specification and ignored by Docker Compose too.
            "version" => {}
            _ if key.starts_with("x-") => {}
            other => reject_key(p, Section::Top, "", other),
        }
    }
    let Some(services) = services else {
        p.push(
            "services",
            "the file has no services",
            "add a services: section, like services: {web: {image: nginx:1.27}}",
        );
        return None;
    };
    let example = "services: {web: {image: nginx:1.27}}";
    let empty = Mapping::new();
    // `services:` with nothing under it is an empty section, not a type error.
    let services_map = match services {
        Value::Null => &empty,
        other => expect_mapping(p, "services", other, example)?,
    };
    if services_map.is_empty() {
        p.push(
            "services",
            "services is empty",
            format!("add at least one service, like {example}"),
        );
        return None;
    }

    let entries = string_entries(p, "services", services_map);
    // Names are checked first: the services' `x-hivemind.allow_from` and `links` refer to them.
    let mut mapped = names::Mapped::default();
    let dns_names: Vec<Option<String>> = entries
        .iter()
        .map(|(name, _)| {
            let path = join("services", name);
            // The replica id `NAME-SUFFIX` is the container's hostname: a longer name deploys
            // but its replicas could never start (see `id::MAX_SERVICE_NAME_LEN`).
            names::read_name(p, &path, names::Kind::Service, name, MAX_SERVICE_NAME_LEN)
                .filter(|dns| mapped.claim(p, &path, names::Kind::Service, name, dns))
        })
        .collect();
    let service_names: BTreeMap<String, String> = entries
        .iter()
        .zip(&dns_names)
        .filter_map(|((name, _), dns)| Some((name.clone(), dns.clone()?)))
        .collect();
    let networks = networks.unwrap_or_else(|| read_networks(p, &Value::Null));
    let cx = ServiceContext {
        env: input.env,
        env_files: input.env_files,
        service_names: &service_names,
        networks: &networks,
        volumes: &volumes,
        secrets: &secret_defs,
        configs: &config_defs,
    };
    let mut read: Vec<aliases::Entry> = entries
        .into_iter()
        .zip(dns_names)
        .map(|((written, v), dns)| {
            let path = join("services", &written);
            aliases::Entry {
                read: read_service(p, &path, v, &cx),
                written,
                dns,
            }
        })
        .collect();
    aliases::resolve(p, &mut read);
    let graph: Vec<_> = read
        .iter()
        .filter_map(|e| {
            let spec = e.read.as_ref()?.spec.as_ref()?;
            Some((e.written.as_str(), e.dns.as_deref()?, &spec.depends_on))
        })
        .collect();
    depends_on::refuse_cycles(p, &graph);
    volumes::resolve_volumes_from(p, &mut read);
    let profiled = read
        .iter()
        .filter(|e| e.read.as_ref().is_some_and(|r| r.profiles))
        .count();
    if profiled == read.len() {
        p.push(
            "services",
            "every service has `profiles`, so none would be deployed (Hivemind has no --profile yet)",
            "remove `profiles` from the services to deploy",
        );
    }
    let out = read
        .into_iter()
        .filter_map(|e| {
            let read = e.read.filter(|r| !r.profiles)?;
            Some((e.dns?, read.spec?))
        })
        .collect();
    Some(ComposeApp {
        name,
        services: out,
        unhonoured: Vec::new(),
        secrets: secret_defs,
        configs: config_defs,
    })
}

fn read_app_name(p: &mut Problems, value: &Value) -> Option<String> {
    let name = expect_str(p, "name", value, "name: shop")?;
    names::read_name(p, "name", names::Kind::App, name, 63)
}
