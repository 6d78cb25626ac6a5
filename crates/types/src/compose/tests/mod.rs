//! Tests of the Compose reader: good files (`good.rs`), tables of bad files (`bad.rs`,
//! `bad_values.rs`), limits and identity (`limits.rs`), networks and aliases (`networks.rs`),
//! keys read but not honoured (`warnings.rs`) and no-panic checks on damaged input
//! (`robustness.rs`, and as property tests in `properties.rs`). Shared helpers live here.

mod bad;
mod bad_values;
mod depends_on;
mod good;
mod healthcheck;
mod limits;
mod names;
mod networks;
mod project;
mod properties;
mod real_world;
mod robustness;
mod spec_example;
mod volumes;
mod warnings;

use std::collections::BTreeMap;

use super::{parse, ComposeApp, ComposeError, ComposeInput};
use crate::spec::ServiceSpec;

/// The env files the fake reader knows, as a project directory would hold them.
fn env_file(path: &str) -> Result<String, String> {
    match path {
        "web.env" => Ok(
            "# shared settings\nLOG_LEVEL=debug\nPORT=8080\nGREETING=\"hello ${PORT}\"\n".into(),
        ),
        "override.env" => Ok("LOG_LEVEL=warn\n".into()),
        "broken.env" => Ok("GOOD=1\nBAD KEY=2\n".into()),
        _ => Err("no such file".into()),
    }
}

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_env(source: &str, env: &BTreeMap<String, String>) -> Result<ComposeApp, ComposeError> {
    parse(&ComposeInput {
        file_name: "compose.yaml",
        source,
        env,
        env_files: &env_file,
    })
}

fn parse_src(source: &str) -> Result<ComposeApp, ComposeError> {
    parse_env(source, &vars(&[]))
}

#[track_caller]
fn parse_ok(source: &str) -> ComposeApp {
    match parse_src(source) {
        Ok(app) => app,
        Err(e) => panic!("expected {source:?} to parse, got:\n{e}"),
    }
}

/// The only service of a file that is expected to parse.
#[track_caller]
fn only_service(source: &str) -> ServiceSpec {
    let app = parse_ok(source);
    assert_eq!(app.services.len(), 1, "{source}");
    app.services
        .into_iter()
        .next()
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// Wraps service fields (a YAML flow mapping body) in a one-service file.
fn web(fields: &str) -> String {
    format!("services:\n  web: {{image: nginx, {fields}}}\n")
}
