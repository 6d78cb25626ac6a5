//! `healthcheck` on a service (Compose) and `x-hivemind.healthcheck` (probes run from the node).
//!
//! Compose: `test` as a list starting with `CMD`, `CMD-SHELL` or `NONE`, or a string (run by
//! the shell, like `CMD-SHELL`); `interval`, `timeout`, `retries`, `start_period`,
//! `start_interval`; `disable: true`. Unset (or zero) timings stay `None`: the agent takes them
//! from the image's `HEALTHCHECK`, then from Docker's defaults (`healthcheck::ResolvedCheck`).
//!
//! `x-hivemind.healthcheck` has the same timing keys and one of `http: {path, port, status}` or
//! `tcp: {port}`; it wins over a Compose `healthcheck`, so one file can give Docker an in-image
//! command and Hivemind a probe that needs no tool in the image.

use serde_yaml_ng::Value;

use super::duration::read_duration_ms;
use super::error::Problems;
use super::keys::unknown_key;
use super::value::{
    expect_bool, expect_mapping, expect_scalar, expect_u32, index, join, string_entries, type_error,
};
use crate::healthcheck::{HealthCheck, HealthTest};

const TIMING_KEYS: &[&str] = &[
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
];
const COMPOSE_KEYS: &[&str] = &[
    "test",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
    "disable",
];
const PROBE_KEYS: &[&str] = &[
    "http",
    "tcp",
    "interval",
    "timeout",
    "retries",
    "start_period",
    "start_interval",
];

/// Reads a Compose `healthcheck`; `None` when it has a problem (reported) or is `null`.
pub(crate) fn read_healthcheck(p: &mut Problems, path: &str, value: &Value) -> Option<HealthCheck> {
    if value.is_null() {
        return None;
    }
    let map = expect_mapping(
        p,
        path,
        value,
        "healthcheck: {test: [CMD, pg_isready], interval: 10s}",
    )?;
    let before = p.len();
    let mut check = HealthCheck::default();
    let mut test_written = false;
    let mut disable = false;
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "test" => {
                test_written = true;
                if let Some(test) = read_test(p, &key_path, v) {
                    check.test = test;
                }
            }
            "disable" => {
                disable = expect_bool(p, &key_path, v, "disable: true").unwrap_or(false);
            }
            k if TIMING_KEYS.contains(&k) => read_timing(p, &key_path, k, v, &mut check),
            other => unknown_key(p, &key_path, other, COMPOSE_KEYS.iter().copied()),
        }
    }
    if disable {
        if test_written && check.test != HealthTest::Disabled {
            p.push(
                join(path, "disable"),
                "disable: true and a test cannot be set together",
                "remove test to turn the check off, or remove disable to run it",
            );
        }
        check.test = HealthTest::Disabled;
    }
    (p.len() == before).then_some(check)
}

/// `test`: `[CMD, arg...]`, `[CMD-SHELL, command]`, `[NONE]` or a string (a shell command).
fn read_test(p: &mut Problems, path: &str, value: &Value) -> Option<HealthTest> {
    const FIX: &str = "write test: [CMD, pg_isready, -U, app], test: [CMD-SHELL, \"curl -f http://localhost/ || exit 1\"] or test: [NONE]";
    match value {
        Value::String(command) if command.trim().is_empty() => {
            p.push(path, "the test command is empty", FIX);
            None
        }
        Value::String(command) => Some(HealthTest::Shell {
            command: command.clone(),
        }),
        Value::Sequence(items) => {
            let mut words = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                words.push(expect_scalar(p, &index(path, i), item, "- CMD")?);
            }
            match words.split_first() {
                None => {
                    p.push(path, "the test list is empty", FIX);
                    None
                }
                Some((kind, [])) if kind == "NONE" => Some(HealthTest::Disabled),
                Some((kind, _)) if kind == "NONE" => {
                    p.push(path, "NONE takes no arguments", "write test: [NONE]");
                    None
                }
                Some((kind, [])) if kind == "CMD" || kind == "CMD-SHELL" => {
                    p.push(path, format!("{kind} needs a command after it"), FIX);
                    None
                }
                Some((kind, args)) if kind == "CMD" => Some(HealthTest::Cmd {
                    args: args.to_vec(),
                }),
                Some((kind, [command])) if kind == "CMD-SHELL" => Some(HealthTest::Shell {
                    command: command.clone(),
                }),
                Some((kind, _)) if kind == "CMD-SHELL" => {
                    p.push(
                        path,
                        "CMD-SHELL takes one command string",
                        "write the command as one string, like [CMD-SHELL, \"pg_isready -U app\"], or use CMD with one argument per item",
                    );
                    None
                }
                Some((kind, _)) => {
                    p.push(
                        index(path, 0),
                        format!("{kind:?} is not a test kind"),
                        "start the list with CMD (arguments), CMD-SHELL (a shell command) or NONE (no check)",
                    );
                    None
                }
            }
        }
        other => {
            type_error(p, path, "a list or a string", other, "test: [CMD, true]");
            None
        }
    }
}

/// One of the timing keys, shared by both forms. Zero leaves the value unset, as in Docker.
fn read_timing(p: &mut Problems, path: &str, key: &str, value: &Value, check: &mut HealthCheck) {
    if key == "retries" {
        check.retries = expect_u32(p, path, value, "retries: 3").filter(|r| *r > 0);
        return;
    }
    let Some(ms) = read_duration_ms(p, path, value) else {
        return;
    };
    if ms == 0 && key != "start_period" {
        return;
    }
    if key == "timeout" || key == "interval" || key == "start_interval" {
        // Below a millisecond the duration was dropped to 0 above; anything else is a real
        // pace, but a check more often than every 100 ms is a typo that would load the node.
        if ms < 100 {
            p.push(
                path,
                format!("{ms}ms is too short for a health check's {key}"),
                format!("use at least 100ms, like `{key}: 1s`"),
            );
            return;
        }
    }
    let slot = match key {
        "interval" => &mut check.interval_ms,
        "timeout" => &mut check.timeout_ms,
        "start_period" => &mut check.start_period_ms,
        _ => &mut check.start_interval_ms,
    };
    *slot = Some(ms);
}

/// Reads `x-hivemind.healthcheck`: an HTTP or TCP probe from the node.
pub(crate) fn read_probe(p: &mut Problems, path: &str, value: &Value) -> Option<HealthCheck> {
    let example = "healthcheck: {http: {path: /healthz, port: 8080}, interval: 5s}";
    let map = expect_mapping(p, path, value, example)?;
    let before = p.len();
    let mut check = HealthCheck::default();
    let mut probes = 0;
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "http" => {
                probes += 1;
                if let Some(test) = read_http(p, &key_path, v) {
                    check.test = test;
                }
            }
            "tcp" => {
                probes += 1;
                let Some(map) = expect_mapping(p, &key_path, v, "tcp: {port: 5432}") else {
                    continue;
                };
                let mut port = None;
                for (key, v) in string_entries(p, &key_path, map) {
                    let port_path = join(&key_path, &key);
                    match key.as_str() {
                        "port" => port = read_port(p, &port_path, v),
                        other => unknown_key(p, &port_path, other, ["port"]),
                    }
                }
                match port {
                    Some(port) => check.test = HealthTest::Tcp { port },
                    None if p.len() == before => p.push(
                        join(&key_path, "port"),
                        "a tcp probe needs a port",
                        "write tcp: {port: 5432}",
                    ),
                    None => {}
                }
            }
            k if TIMING_KEYS.contains(&k) => read_timing(p, &key_path, k, v, &mut check),
            other => unknown_key(p, &key_path, other, PROBE_KEYS.iter().copied()),
        }
    }
    if probes != 1 && p.len() == before {
        p.push(
            path,
            if probes == 0 {
                "an x-hivemind healthcheck needs a probe"
            } else {
                "an x-hivemind healthcheck has one probe, not both"
            },
            "write either http: {path: /healthz, port: 8080} or tcp: {port: 5432}",
        );
    }
    (p.len() == before).then_some(check)
}

fn read_http(p: &mut Problems, path: &str, value: &Value) -> Option<HealthTest> {
    let map = expect_mapping(p, path, value, "http: {path: /healthz, port: 8080}")?;
    let before = p.len();
    let mut url_path = "/".to_string();
    let mut port = None;
    let mut status = (200, 399);
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "path" => {
                let Some(text) = expect_scalar(p, &key_path, v, "path: /healthz") else {
                    continue;
                };
                if text.starts_with('/')
                    && !text.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    url_path = text;
                } else {
                    p.push(
                        &key_path,
                        format!("{text:?} is not a URL path"),
                        "start the path with `/` and leave out spaces, like /healthz",
                    );
                }
            }
            "port" => port = read_port(p, &key_path, v),
            "status" => {
                if let Some(range) = read_status(p, &key_path, v) {
                    status = range;
                }
            }
            other => unknown_key(p, &key_path, other, ["path", "port", "status"]),
        }
    }
    if port.is_none() && p.len() == before {
        p.push(
            join(path, "port"),
            "an http probe needs a port",
            "write the port the replica serves on, like http: {path: /healthz, port: 8080}",
        );
    }
    (p.len() == before).then_some(HealthTest::Http {
        path: url_path,
        port: port?,
        status_min: status.0,
        status_max: status.1,
    })
}

fn read_port(p: &mut Problems, path: &str, value: &Value) -> Option<u16> {
    let n = expect_u32(p, path, value, "port: 8080")?;
    match u16::try_from(n) {
        Ok(port) if port > 0 => Some(port),
        _ => {
            p.push(
                path,
                format!("{n} is not a port"),
                "use a port from 1 to 65535",
            );
            None
        }
    }
}

/// `status`: one code (`200`) or a range (`200-399`) of HTTP status codes.
fn read_status(p: &mut Problems, path: &str, value: &Value) -> Option<(u16, u16)> {
    let text = expect_scalar(p, path, value, "status: 200-399")?;
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let range = match text.split_once('-') {
        Some((lo, hi)) => code(lo).zip(code(hi)).filter(|(lo, hi)| lo <= hi),
        None => code(&text).map(|c| (c, c)),
    };
    if range.is_none() {
        p.push(
            path,
            format!("{text:?} is not an HTTP status or range"),
            "write one code like 200 or a range like 200-399 (codes 100 to 599)",
        );
    }
    range
}
