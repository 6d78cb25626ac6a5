//! A service's health check as written (Compose `healthcheck`, `x-hivemind.healthcheck`), the
//! image's own `HEALTHCHECK`, and the one the agent runs once both are combined.
//!
//! The check is part of the container template (`routing`): changing it replaces the replicas,
//! as `docker compose up` recreates a container whose healthcheck changed. Combining follows
//! Docker: the service's test wins over the image's; each timing the service leaves unset (or
//! zero) comes from the image, then from Docker's defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Docker's defaults for a check that does not say.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;
pub const DEFAULT_START_PERIOD_MS: u64 = 0;
pub const DEFAULT_START_INTERVAL_MS: u64 = 5_000;

/// A service's health check as written; unset timings are `None` and left out of the JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "HealthTest::is_image")]
    pub test: HealthTest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval_ms: Option<u64>,
}

/// What a check runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HealthTest {
    /// No test written: the image's `HEALTHCHECK` test (with the service's timings over the
    /// image's). A service whose image has none has no check.
    #[default]
    Image,
    /// Checks are off, the image's too (`disable: true`, `test: [NONE]`).
    Disabled,
    /// `CMD`: run these arguments in the container (exit 0 passes).
    Cmd { args: Vec<String> },
    /// `CMD-SHELL` (and a plain string): run with `/bin/sh -c` in the container.
    Shell { command: String },
    /// `x-hivemind` HTTP probe, sent from the node to the replica's address: passes when the
    /// status is within `status_min..=status_max`.
    Http {
        path: String,
        port: u16,
        status_min: u16,
        status_max: u16,
    },
    /// `x-hivemind` TCP probe from the node: passes when a connection opens.
    Tcp { port: u16 },
}

impl HealthTest {
    pub fn is_image(&self) -> bool {
        *self == HealthTest::Image
    }
}

/// The image config's `Healthcheck` (Docker's shape, durations in nanoseconds), as containerd
/// stores it and as the runtime copies it onto the container's label
/// [`IMAGE_HEALTHCHECK_LABEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ImageHealthcheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: u64,
    #[serde(default, skip_serializing_if = "is_zero_i")]
    pub retries: i64,
}

/// The container label carrying the image's `Healthcheck` (JSON), so that the agent knows it
/// from the container list alone, also after a restart of the agent.
pub const IMAGE_HEALTHCHECK_LABEL: &str = "hivemind.image-healthcheck";

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i(n: &i64) -> bool {
    *n == 0
}

/// What the agent runs: the test and every timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCheck {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
    pub start_interval: Duration,
}

/// How a check is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Through containerd exec, inside the container.
    Exec(Vec<String>),
    /// From the node to the replica's address.
    Http {
        path: String,
        port: u16,
        status_min: u16,
        status_max: u16,
    },
    Tcp {
        port: u16,
    },
}

impl ResolvedCheck {
    /// The check a replica runs: the service's (`spec`) over the image's (`image`), or `None`
    /// when neither has one or it is disabled.
    pub fn resolve(
        spec: Option<&HealthCheck>,
        image: Option<&ImageHealthcheck>,
    ) -> Option<ResolvedCheck> {
        let image_probe = || image.and_then(|i| image_probe(&i.test));
        let probe = match spec.map(|s| &s.test) {
            None | Some(HealthTest::Image) => image_probe()?,
            Some(HealthTest::Disabled) => return None,
            Some(HealthTest::Cmd { args }) => Probe::Exec(args.clone()),
            Some(HealthTest::Shell { command }) => Probe::Exec(shell(command)),
            Some(HealthTest::Http {
                path,
                port,
                status_min,
                status_max,
            }) => Probe::Http {
                path: path.clone(),
                port: *port,
                status_min: *status_min,
                status_max: *status_max,
            },
            Some(HealthTest::Tcp { port }) => Probe::Tcp { port: *port },
        };
        // Zero means "not set" in both, as in Docker.
        let ms = |own: Option<u64>, image_ns: Option<u64>, default: u64| {
            let own = own.filter(|v| *v > 0);
            let image = image_ns.filter(|v| *v > 0).map(|ns| ns / 1_000_000);
            Duration::from_millis(own.or(image).unwrap_or(default).max(1))
        };
        let image = image.cloned().unwrap_or_default();
        Some(ResolvedCheck {
            probe,
            interval: ms(
                spec.and_then(|s| s.interval_ms),
                Some(image.interval),
                DEFAULT_INTERVAL_MS,
            ),
            timeout: ms(
                spec.and_then(|s| s.timeout_ms),
                Some(image.timeout),
                DEFAULT_TIMEOUT_MS,
            ),
            retries: spec
                .and_then(|s| s.retries)
                .filter(|r| *r > 0)
                .or(u32::try_from(image.retries).ok().filter(|r| *r > 0))
                .unwrap_or(DEFAULT_RETRIES),
            start_period: {
                let own = spec.and_then(|s| s.start_period_ms);
                let image = (image.start_period > 0).then_some(image.start_period / 1_000_000);
                Duration::from_millis(own.or(image).unwrap_or(DEFAULT_START_PERIOD_MS))
            },
            start_interval: ms(
                spec.and_then(|s| s.start_interval_ms),
                Some(image.start_interval),
                DEFAULT_START_INTERVAL_MS,
            ),
        })
    }
}

fn shell(command: &str) -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()]
}

/// The probe of an image's `Healthcheck.Test`: `["CMD", args...]`, `["CMD-SHELL", cmd]`, or
/// `NONE`/empty/anything else for none (Docker ignores tests it cannot read too).
fn image_probe(test: &[String]) -> Option<Probe> {
    match test.split_first()? {
        (kind, args) if kind == "CMD" && !args.is_empty() => Some(Probe::Exec(args.to_vec())),
        (kind, [command]) if kind == "CMD-SHELL" => Some(Probe::Exec(shell(command))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn service_test_and_timings_win_over_the_image_and_defaults_fill_the_rest() {
        let image = ImageHealthcheck {
            test: vec!["CMD".into(), "pg_isready".into()],
            interval: 5_000_000_000,
            retries: 7,
            ..Default::default()
        };
        // Only timings written: the image's test, own timeout, image interval and retries.
        let spec = HealthCheck {
            timeout_ms: Some(2_000),
            ..Default::default()
        };
        let check = ResolvedCheck::resolve(Some(&spec), Some(&image)).unwrap();
        assert_eq!(check.probe, Probe::Exec(vec!["pg_isready".into()]));
        assert_eq!(
            (check.interval, check.timeout, check.retries),
            (secs(5), secs(2), 7)
        );
        assert_eq!(
            (check.start_period, check.start_interval),
            (secs(0), secs(5))
        );

        let spec = HealthCheck {
            test: HealthTest::Shell {
                command: "test -f /ok".into(),
            },
            interval_ms: Some(1_000),
            ..Default::default()
        };
        let check = ResolvedCheck::resolve(Some(&spec), None).unwrap();
        assert_eq!(
            check.probe,
            Probe::Exec(vec!["/bin/sh".into(), "-c".into(), "test -f /ok".into()])
        );
        assert_eq!(
            (check.interval, check.timeout, check.retries),
            (secs(1), secs(30), 3)
        );
    }

    #[test]
    fn disabled_turns_off_the_images_check_and_no_check_anywhere_is_none() {
        let image = ImageHealthcheck {
            test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
            ..Default::default()
        };
        let off = HealthCheck {
            test: HealthTest::Disabled,
            ..Default::default()
        };
        assert_eq!(ResolvedCheck::resolve(Some(&off), Some(&image)), None);
        assert!(ResolvedCheck::resolve(None, Some(&image)).is_some());
        assert_eq!(ResolvedCheck::resolve(None, None), None);
        let none = ImageHealthcheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(ResolvedCheck::resolve(None, Some(&none)), None);
        let timings_only = HealthCheck {
            retries: Some(2),
            ..Default::default()
        };
        assert_eq!(ResolvedCheck::resolve(Some(&timings_only), None), None);
    }

    #[test]
    fn image_healthcheck_reads_dockers_json() {
        let json = r#"{"Test":["CMD-SHELL","true"],"Interval":1000000000,"Retries":2}"#;
        let image: ImageHealthcheck = serde_json::from_str(json).unwrap();
        assert_eq!(image.interval, 1_000_000_000);
        assert_eq!(image.retries, 2);
        assert_eq!(serde_json::to_string(&image).unwrap(), json);
    }
}
