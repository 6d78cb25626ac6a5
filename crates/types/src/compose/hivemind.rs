//! `x-hivemind` on a service (SPEC §3): rollout strategy, ingress rule and network policy.
//!
//! The `canary` and `ab` settings are checked for shape only and not kept yet: the rollout work
//! gives them a home in `HivemindExt`. Checking them now means files written today will not start
//! failing when that happens. `strategy`, `allow_from`, `canary` and `ab` are not acted on yet,
//! so each is noted for a deploy warning.

use std::collections::BTreeMap;

use serde_yaml_ng::Value;

use super::duration::read_duration_ms;
use super::error::Problems;
use super::keys::unknown_key;
use super::value::{
    describe, expect_mapping, expect_scalar, expect_str, index, join, string_entries, type_error,
};
use super::warnings::Unhonoured;
use crate::spec::{HivemindExt, IngressRule};

const KEYS: &[&str] = &[
    "strategy",
    "ingress",
    "allow_from",
    "proxy_protocol",
    "canary",
    "ab",
    "healthcheck",
];
const STRATEGIES: &[&str] = &["rolling", "blue-green", "canary", "ab"];

/// Reads `x-hivemind`; `services` are the names in the file, which `allow_from` must name.
pub(crate) fn read_hivemind(
    p: &mut Problems,
    path: &str,
    value: &Value,
    services: &BTreeMap<String, String>,
) -> HivemindExt {
    let mut ext = HivemindExt::default();
    let Some(map) = expect_mapping(p, path, value, "x-hivemind: {strategy: rolling}") else {
        return ext;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "strategy" => {
                let Some(text) = expect_str(p, &key_path, v, "strategy: rolling") else {
                    continue;
                };
                if STRATEGIES.contains(&text) {
                    ext.strategy = Some(text.to_string());
                    p.note(&key_path, Unhonoured::Strategy);
                } else {
                    p.push(
                        &key_path,
                        format!("{text:?} is not a rollout strategy"),
                        "use rolling (the default), blue-green, canary or ab",
                    );
                }
            }
            "ingress" => ext.ingress = read_ingress(p, &key_path, v),
            "allow_from" => {
                ext.allow_from = read_allow_from(p, &key_path, v, services);
                p.note(&key_path, Unhonoured::AllowFrom);
            }
            "proxy_protocol" => {
                ext.proxy_protocol =
                    super::value::expect_bool(p, &key_path, v, "proxy_protocol: true")
                        .unwrap_or(false)
            }
            "canary" => {
                check_canary(p, &key_path, v);
                p.note(&key_path, Unhonoured::Canary);
            }
            "ab" => {
                check_ab(p, &key_path, v);
                p.note(&key_path, Unhonoured::Ab);
            }
            // Read by `healthcheck::read_probe`: the probe is template, not routing.
            "healthcheck" => {}
            other => unknown_key(p, &key_path, other, KEYS.iter().copied()),
        }
    }
    ext
}

fn read_ingress(p: &mut Problems, path: &str, value: &Value) -> Option<IngressRule> {
    let map = expect_mapping(p, path, value, "ingress: {host: shop.example.com, path: /}")?;
    let mut rule = IngressRule {
        host: None,
        path: "/".to_string(),
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "host" => {
                let Some(host) = expect_str(p, &key_path, v, "host: shop.example.com") else {
                    continue;
                };
                if is_host_name(host) {
                    rule.host = Some(host.to_string());
                } else {
                    p.push(
                        &key_path,
                        format!("{host:?} is not a valid host name"),
                        "use a lowercase DNS name such as shop.example.com, optionally starting with `*.`",
                    );
                }
            }
            "path" => {
                let Some(text) = expect_str(p, &key_path, v, "path: /api") else {
                    continue;
                };
                if text.starts_with('/') && !text.chars().any(char::is_whitespace) {
                    rule.path = text.to_string();
                } else {
                    p.push(
                        &key_path,
                        format!("{text:?} is not a URL path"),
                        "start the path with `/`, like /api",
                    );
                }
            }
            other => unknown_key(p, &key_path, other, ["host", "path"]),
        }
    }
    Some(rule)
}

/// A DNS name of labels, where the first label may be the wildcard `*`.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_prefix("*.").unwrap_or(host);
    host.len() <= 253
        && host.split('.').all(|label| {
            // Labels of a host name may start with a digit, unlike service names.
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

fn read_allow_from(
    p: &mut Problems,
    path: &str,
    value: &Value,
    services: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    let Value::Sequence(items) = value else {
        type_error(
            p,
            path,
            "a list of service names",
            value,
            "allow_from: [api]",
        );
        return None;
    };
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let Some(name) = expect_str(p, &item_path, item, "- api") else {
            continue;
        };
        if let Some(dns) = services.get(name) {
            names.push(dns.clone());
        } else {
            let known: Vec<&str> = services.keys().map(String::as_str).collect();
            p.push(
                &item_path,
                format!("{name:?} is not a service of this file"),
                format!("name one of the services: {}", known.join(", ")),
            );
        }
    }
    Some(names)
}

fn check_canary(p: &mut Problems, path: &str, value: &Value) {
    let example = "canary: {steps: [10, 50, 100], pause: 30s}";
    let Some(map) = expect_mapping(p, path, value, example) else {
        return;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "steps" => {
                let Value::Sequence(steps) = v else {
                    type_error(
                        p,
                        &key_path,
                        "a list of percentages",
                        v,
                        "steps: [10, 50, 100]",
                    );
                    continue;
                };
                for (i, step) in steps.iter().enumerate() {
                    let percent = match step {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse::<f64>().ok(),
                        _ => None,
                    };
                    if !percent.is_some_and(|x| x > 0.0 && x <= 100.0) {
                        p.push(
                            index(&key_path, i),
                            format!(
                                "expected a percentage from 1 to 100, got {}",
                                describe(step)
                            ),
                            "write the share of traffic for each step, like [10, 50, 100]",
                        );
                    }
                }
            }
            "pause" => {
                read_duration_ms(p, &key_path, v);
            }
            "max_error_rate" => {
                let rate = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    _ => None,
                };
                if !rate.is_some_and(|r| (0.0..=1.0).contains(&r)) {
                    p.push(
                        &key_path,
                        format!("expected a fraction from 0 to 1, got {}", describe(v)),
                        "write the tolerated share of failed requests, like 0.01 for 1%",
                    );
                }
            }
            other => unknown_key(p, &key_path, other, ["steps", "pause", "max_error_rate"]),
        }
    }
}

fn check_ab(p: &mut Problems, path: &str, value: &Value) {
    let Some(map) = expect_mapping(p, path, value, "ab: {header: X-Beta, value: \"1\"}") else {
        return;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "header" | "value" => {
                expect_scalar(p, &key_path, v, "header: X-Beta");
            }
            other => unknown_key(p, &key_path, other, ["header", "value"]),
        }
    }
}
