//! `deploy` (`mode`, `replicas`, `restart_policy`, `resources`) and the service-level `restart`
//! key.
//!
//! Both restart forms map to one `RestartPolicy`; the caller lets `deploy.restart_policy` win,
//! as Docker Compose does. A `max_attempts` (or `on-failure:N`) of 0 means "never give up" in
//! Docker and Swarm, so it becomes `None` rather than a policy that never restarts.

use serde_yaml_ng::Value;

use super::duration::read_duration_ms;
use super::error::Problems;
use super::keys::{reject_key, unknown_key, Section};
use super::resources::read_resources;
use super::value::{expect_mapping, expect_str, expect_u32, join, string_entries};
use crate::limits::Resources;
use crate::spec::{RestartCondition, RestartPolicy, ServiceMode, TooManyReplicas};

/// What `deploy` says; `None` where the file says nothing.
#[derive(Debug, Default)]
pub(crate) struct Deploy {
    pub(crate) mode: Option<ServiceMode>,
    pub(crate) replicas: Option<u32>,
    pub(crate) restart: Option<RestartPolicy>,
    pub(crate) resources: Resources,
}

const RESTART_POLICY_KEYS: &[&str] = &["condition", "delay", "max_attempts", "window"];

pub(crate) fn read_deploy(p: &mut Problems, path: &str, value: &Value) -> Deploy {
    let mut deploy = Deploy::default();
    let Some(map) = expect_mapping(p, path, value, "deploy: {replicas: 3}") else {
        return deploy;
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "mode" => {
                let Some(text) = expect_str(p, &key_path, v, "mode: replicated") else {
                    continue;
                };
                match text {
                    "replicated" => deploy.mode = Some(ServiceMode::Replicated),
                    "global" => deploy.mode = Some(ServiceMode::Global),
                    "replicated-job" | "global-job" => p.push(
                        &key_path,
                        format!("mode {text} is not supported yet"),
                        "use replicated or global; jobs will come in a later release",
                    ),
                    other => p.push(
                        &key_path,
                        format!("{other:?} is not a deploy mode"),
                        "use replicated (the default) or global",
                    ),
                }
            }
            "replicas" => {
                deploy.replicas = expect_u32(p, &key_path, v, "replicas: 3");
                if let Some(Err(e)) = deploy.replicas.map(TooManyReplicas::check) {
                    p.push(&key_path, e.to_string(), e.fix());
                }
            }
            "restart_policy" => deploy.restart = read_restart_policy(p, &key_path, v),
            "resources" => deploy.resources = read_resources(p, &key_path, v),
            _ if key.starts_with("x-") => {}
            other => reject_key(p, Section::Deploy, path, other),
        }
    }
    if deploy.mode == Some(ServiceMode::Global) && deploy.replicas.is_some() {
        p.push(
            join(path, "replicas"),
            "replicas cannot be set when mode is global",
            "remove replicas (a global service runs one replica on every node), or use mode: replicated",
        );
    }
    deploy
}

fn read_restart_policy(p: &mut Problems, path: &str, value: &Value) -> Option<RestartPolicy> {
    let map = expect_mapping(p, path, value, "restart_policy: {condition: on-failure}")?;
    let before = p.len();
    // The Compose Specification's defaults: restart on any exit, at once, forever.
    let mut policy = RestartPolicy {
        condition: RestartCondition::Always,
        max_attempts: None,
        delay_ms: 0,
        window_ms: None,
    };
    for (key, v) in string_entries(p, path, map) {
        let key_path = join(path, &key);
        match key.as_str() {
            "condition" => {
                let Some(text) = expect_str(p, &key_path, v, "condition: on-failure") else {
                    continue;
                };
                match text {
                    "none" => policy.condition = RestartCondition::Never,
                    "on-failure" => policy.condition = RestartCondition::OnFailure,
                    "any" => policy.condition = RestartCondition::Always,
                    other => p.push(
                        &key_path,
                        format!("{other:?} is not a restart condition"),
                        "use none, on-failure or any",
                    ),
                }
            }
            "delay" => {
                if let Some(ms) = read_duration_ms(p, &key_path, v) {
                    policy.delay_ms = ms;
                }
            }
            "max_attempts" => {
                if let Some(n) = expect_u32(p, &key_path, v, "max_attempts: 3") {
                    policy.max_attempts = (n > 0).then_some(n);
                }
            }
            // A run at least this long counts as a successful restart (Swarm's window).
            "window" => {
                if let Some(ms) = read_duration_ms(p, &key_path, v) {
                    policy.window_ms = (ms > 0).then_some(ms);
                }
            }
            _ if key.starts_with("x-") => {}
            other => unknown_key(p, &key_path, other, RESTART_POLICY_KEYS.iter().copied()),
        }
    }
    (p.len() == before).then_some(policy)
}

/// Reads `restart: no|always|on-failure[:N]|unless-stopped`.
pub(crate) fn read_restart(p: &mut Problems, path: &str, value: &Value) -> Option<RestartPolicy> {
    let fix = "use no, always, on-failure, on-failure:N (at most N restarts) or unless-stopped";
    let text = match value {
        Value::String(s) => s.trim(),
        // YAML 1.1 habits: `restart: no` unquoted is a string in YAML 1.2, but `false` is not.
        Value::Bool(false) => "no",
        other => {
            p.push(
                path,
                format!("expected a string, got {}", super::value::describe(other)),
                fix,
            );
            return None;
        }
    };
    let policy = |condition, max_attempts| RestartPolicy {
        condition,
        max_attempts,
        delay_ms: 0,
        window_ms: None,
    };
    match text {
        "no" => Some(policy(RestartCondition::Never, None)),
        "always" => Some(policy(RestartCondition::Always, None)),
        // Kept apart from `always`: a replica the user stopped stays stopped.
        "unless-stopped" => Some(policy(RestartCondition::UnlessStopped, None)),
        "on-failure" => Some(policy(RestartCondition::OnFailure, None)),
        _ => match text
            .strip_prefix("on-failure:")
            .map(|n| n.trim().parse::<u32>())
        {
            Some(Ok(n)) => Some(policy(RestartCondition::OnFailure, (n > 0).then_some(n))),
            _ => {
                p.push(path, format!("{text:?} is not a restart policy"), fix);
                None
            }
        },
    }
}
