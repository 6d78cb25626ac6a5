//! `healthcheck` and `x-hivemind.healthcheck`: what each form reads to, and what is refused.

use super::*;
use crate::healthcheck::{HealthCheck, HealthTest};

fn check_of(fields: &str) -> Option<HealthCheck> {
    only_service(&web(fields)).healthcheck
}

#[test]
fn compose_healthcheck_forms_read_to_their_tests() {
    let shell = |c: &str| HealthTest::Shell { command: c.into() };
    let table: &[(&str, HealthTest)] = &[
        ("healthcheck: {test: \"test -f /ok\"}", shell("test -f /ok")),
        (
            "healthcheck: {test: [CMD-SHELL, \"test -f /ok\"]}",
            shell("test -f /ok"),
        ),
        (
            "healthcheck: {test: [CMD, pg_isready, -U, app]}",
            HealthTest::Cmd {
                args: vec!["pg_isready".into(), "-U".into(), "app".into()],
            },
        ),
        ("healthcheck: {test: [NONE]}", HealthTest::Disabled),
        ("healthcheck: {disable: true}", HealthTest::Disabled),
        ("healthcheck: {interval: 5s}", HealthTest::Image),
    ];
    for (fields, want) in table {
        assert_eq!(&check_of(fields).expect(fields).test, want, "{fields}");
    }
}

#[test]
fn compose_timings_are_kept_and_zero_means_unset() {
    let check = check_of(
        "healthcheck: {test: [CMD, \"true\"], interval: 10s, timeout: 1s, retries: 5, start_period: 15s, start_interval: 500ms}",
    )
    .unwrap();
    assert_eq!(
        (
            check.interval_ms,
            check.timeout_ms,
            check.retries,
            check.start_period_ms,
            check.start_interval_ms
        ),
        (Some(10_000), Some(1_000), Some(5), Some(15_000), Some(500))
    );
    let zero = check_of("healthcheck: {test: [CMD, \"true\"], interval: 0s, retries: 0}").unwrap();
    assert_eq!((zero.interval_ms, zero.retries), (None, None));
    assert_eq!(check_of("healthcheck: null"), None);
}

#[test]
fn x_hivemind_probes_read_and_win_over_compose() {
    let spec = only_service(&web(
        "healthcheck: {test: [CMD, \"true\"]}, x-hivemind: {healthcheck: {http: {path: /healthz, port: 8080, status: 200-299}, interval: 1s, retries: 2}}",
    ));
    let check = spec.healthcheck.unwrap();
    assert_eq!(
        check.test,
        HealthTest::Http {
            path: "/healthz".into(),
            port: 8080,
            status_min: 200,
            status_max: 299
        }
    );
    assert_eq!((check.interval_ms, check.retries), (Some(1_000), Some(2)));
    let tcp = check_of("x-hivemind: {healthcheck: {tcp: {port: 5432}}}").unwrap();
    assert_eq!(tcp.test, HealthTest::Tcp { port: 5432 });
    let http = check_of("x-hivemind: {healthcheck: {http: {port: 80}}}").unwrap();
    assert_eq!(
        http.test,
        HealthTest::Http {
            path: "/".into(),
            port: 80,
            status_min: 200,
            status_max: 399
        }
    );
    // The probe is template, not routing: the x-hivemind extension keeps no copy of it.
    assert_eq!(spec.hivemind, Default::default());
}

#[test]
fn a_changed_check_changes_the_revision_and_none_keeps_the_old_hash() {
    let plain = only_service(&web("command: [sleep, \"1\"]"));
    let with = only_service(&web(
        "command: [sleep, \"1\"], healthcheck: {test: [CMD, \"true\"]}",
    ));
    let other = only_service(&web(
        "command: [sleep, \"1\"], healthcheck: {test: [CMD, \"false\"]}",
    ));
    assert_ne!(plain.revision_hash(), with.revision_hash());
    assert_ne!(with.revision_hash(), other.revision_hash());
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("healthcheck").is_none());
}

#[test]
fn bad_healthchecks_name_the_key_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "healthcheck: [CMD, \"true\"]",
            "services.web.healthcheck",
            "expected a mapping",
        ),
        (
            "healthcheck: {test: []}",
            "services.web.healthcheck.test",
            "the test list is empty",
        ),
        (
            "healthcheck: {test: \"  \"}",
            "services.web.healthcheck.test",
            "empty",
        ),
        (
            "healthcheck: {test: [CMD]}",
            "services.web.healthcheck.test",
            "CMD needs a command",
        ),
        (
            "healthcheck: {test: [CMD-SHELL, a, b]}",
            "services.web.healthcheck.test",
            "one command string",
        ),
        (
            "healthcheck: {test: [RUN, x]}",
            "services.web.healthcheck.test[0]",
            "CMD (arguments)",
        ),
        (
            "healthcheck: {test: [NONE, x]}",
            "services.web.healthcheck.test",
            "NONE takes no arguments",
        ),
        (
            "healthcheck: {test: 3}",
            "services.web.healthcheck.test",
            "a list or a string",
        ),
        (
            "healthcheck: {test: [CMD, {a: 1}]}",
            "services.web.healthcheck.test[1]",
            "expected",
        ),
        (
            "healthcheck: {test: [CMD, \"true\"], disable: true}",
            "services.web.healthcheck.disable",
            "cannot be set together",
        ),
        (
            "healthcheck: {disable: maybe}",
            "services.web.healthcheck.disable",
            "a boolean",
        ),
        (
            "healthcheck: {interval: 10}",
            "services.web.healthcheck.interval",
            "has no unit",
        ),
        (
            "healthcheck: {interval: 10ms}",
            "services.web.healthcheck.interval",
            "at least 100ms",
        ),
        (
            "healthcheck: {timeout: soon}",
            "services.web.healthcheck.timeout",
            "not a valid duration",
        ),
        (
            "healthcheck: {retries: -1}",
            "services.web.healthcheck.retries",
            "negative",
        ),
        (
            "healthcheck: {intervall: 1s}",
            "services.web.healthcheck.intervall",
            "did you mean `interval`?",
        ),
        (
            "x-hivemind: {healthcheck: {}}",
            "services.web.x-hivemind.healthcheck",
            "needs a probe",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 80}, tcp: {port: 80}}}",
            "services.web.x-hivemind.healthcheck",
            "not both",
        ),
        (
            "x-hivemind: {healthcheck: {http: {path: /}}}",
            "services.web.x-hivemind.healthcheck.http.port",
            "needs a port",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 0}}}",
            "services.web.x-hivemind.healthcheck.http.port",
            "not a port",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 70000}}}",
            "services.web.x-hivemind.healthcheck.http.port",
            "not a port",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 80, path: healthz}}}",
            "services.web.x-hivemind.healthcheck.http.path",
            "not a URL path",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 80, status: 399-200}}}",
            "services.web.x-hivemind.healthcheck.http.status",
            "not an HTTP status",
        ),
        (
            "x-hivemind: {healthcheck: {http: {port: 80, status: 9000}}}",
            "services.web.x-hivemind.healthcheck.http.status",
            "not an HTTP status",
        ),
        (
            "x-hivemind: {healthcheck: {tcp: {}}}",
            "services.web.x-hivemind.healthcheck.tcp.port",
            "needs a port",
        ),
        (
            "x-hivemind: {healthcheck: {tcp: {port: 1, host: x}}}",
            "services.web.x-hivemind.healthcheck.tcp.host",
            "unknown key",
        ),
        (
            "x-hivemind: {healthcheck: {grpc: {port: 1}}}",
            "services.web.x-hivemind.healthcheck.grpc",
            "unknown key",
        ),
        (
            "x-hivemind: {healthcheck: 3}",
            "services.web.x-hivemind.healthcheck",
            "expected a mapping",
        ),
    ];
    let mut failures = Vec::new();
    for (fields, path, fragment) in cases {
        let source = web(fields);
        match parse_src(&source) {
            Ok(_) => failures.push(format!("{fields}: parsed")),
            Err(err) => match err.at(path) {
                Some(e) if e.to_string().contains(fragment) && !e.fix.is_empty() => {}
                other => {
                    failures.push(format!("{fields}: at {path}: {other:?} / {:?}", err.errors))
                }
            },
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
