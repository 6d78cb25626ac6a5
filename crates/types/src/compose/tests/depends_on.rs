//! `depends_on` in both forms: what each entry becomes, and the refusals (unknown services,
//! cycles named by their chain, bad conditions), as tables.

use std::collections::BTreeMap;

use super::{parse_ok, parse_src};
use crate::lifecycle::{Dependency, DependencyCondition};

fn dep(condition: DependencyCondition, required: bool, restart: bool) -> Dependency {
    Dependency {
        condition,
        required,
        restart,
    }
}

/// A file with `db`, `Migrate_Job` and a `web` whose `depends_on` is `deps`.
fn app(deps: &str) -> String {
    format!(
        "services:\n  db: {{image: postgres}}\n  Migrate_Job: {{image: app, restart: \"no\"}}\n  web:\n    image: nginx\n    depends_on: {deps}\n"
    )
}

#[test]
fn depends_on_forms_map_to_dependencies_by_dns_name() {
    use DependencyCondition::*;
    let started = dep(ServiceStarted, true, false);
    let cases: Vec<(&str, Vec<(&str, Dependency)>)> = vec![
        ("[db]", vec![("db", started.clone())]),
        (
            "[db, Migrate_Job]",
            vec![("db", started.clone()), ("migrate-job", started.clone())],
        ),
        ("[]", vec![]),
        ("{db: }", vec![("db", started.clone())]),
        ("{db: {}}", vec![("db", started.clone())]),
        (
            "{db: {condition: service_healthy}}",
            vec![("db", dep(ServiceHealthy, true, false))],
        ),
        (
            "{Migrate_Job: {condition: service_completed_successfully}, db: {condition: service_started, restart: true}}",
            vec![
                ("db", dep(ServiceStarted, true, true)),
                (
                    "migrate-job",
                    dep(ServiceCompletedSuccessfully, true, false),
                ),
            ],
        ),
        (
            "{db: {required: false}}",
            vec![("db", dep(ServiceStarted, false, false))],
        ),
        // Interpolation yields strings: "false" is still a boolean.
        (
            "{db: {required: \"false\"}}",
            vec![("db", dep(ServiceStarted, false, false))],
        ),
        // An optional dependency on a service the file does not have is dropped (a warning).
        ("{cache: {required: false}, db: {}}", vec![("db", started.clone())]),
    ];
    for (deps, expected) in cases {
        let parsed = parse_ok(&app(deps));
        let web = &parsed.services.iter().find(|(n, _)| n == "web").unwrap().1;
        let expected: BTreeMap<String, Dependency> = expected
            .into_iter()
            .map(|(n, d)| (n.to_string(), d))
            .collect();
        assert_eq!(web.depends_on, expected, "depends_on: {deps}");
    }
}

#[test]
fn an_optional_missing_dependency_is_a_warning_naming_it() {
    let parsed = parse_ok(&app("{cache: {required: false}}"));
    let paths: Vec<&str> = parsed.unhonoured.iter().map(|n| n.path.as_str()).collect();
    assert_eq!(paths, ["services.web.depends_on.cache"]);
}

#[test]
fn bad_depends_on_is_refused_with_path_and_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[cache]",
            "services.web.depends_on[0]",
            "service \"cache\" is not defined",
        ),
        (
            "{cache: {}}",
            "services.web.depends_on.cache",
            "not defined",
        ),
        (
            "{db: {condition: service_ready}}",
            "services.web.depends_on.db.condition",
            "not a depends_on condition",
        ),
        (
            "{db: {conditon: service_healthy}}",
            "services.web.depends_on.db.conditon",
            "did you mean `condition`?",
        ),
        (
            "{db: {required: maybe}}",
            "services.web.depends_on.db.required",
            "boolean",
        ),
        (
            "{db: [service_started]}",
            "services.web.depends_on.db",
            "mapping",
        ),
        ("db", "services.web.depends_on", "a list or a mapping"),
        ("[3]", "services.web.depends_on[0]", "string"),
    ];
    for (deps, path, message) in cases {
        let err = parse_src(&app(deps)).expect_err(deps);
        let found = err
            .errors
            .iter()
            .find(|e| e.path == *path)
            .unwrap_or_else(|| panic!("{deps}: no error at {path}, got {:#?}", err.errors));
        assert!(
            found.message.contains(message) || found.fix.contains(message),
            "{deps}: {found:?} does not say {message:?}"
        );
    }
}

#[test]
fn cycles_are_refused_naming_the_chain() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "services:\n  web: {image: a, depends_on: [api]}\n  api: {image: a, depends_on: [web]}\n",
            "services.web.depends_on",
            "cycle web -> api -> web",
        ),
        (
            "services:\n  web: {image: a, depends_on: [web]}\n",
            "services.web.depends_on",
            "cycle web -> web",
        ),
        (
            "services:\n  a: {image: a, depends_on: [b]}\n  b: {image: a, depends_on: {c: {condition: service_healthy}}}\n  c: {image: a, depends_on: [a]}\n  d: {image: a, depends_on: [a]}\n",
            "services.a.depends_on",
            "cycle a -> b -> c -> a",
        ),
        // Names as written, also when they are not DNS names.
        (
            "services:\n  Web_1: {image: a, depends_on: [db.main]}\n  db.main: {image: a, depends_on: [Web_1]}\n",
            "services.Web_1.depends_on",
            "cycle Web_1 -> db.main -> Web_1",
        ),
    ];
    for (source, path, message) in cases {
        let err = parse_src(source).expect_err(source);
        let cycles: Vec<_> = err
            .errors
            .iter()
            .filter(|e| e.message.starts_with("cycle"))
            .collect();
        assert_eq!(
            cycles.len(),
            1,
            "{source}: one error per cycle, got {cycles:#?}"
        );
        assert_eq!(cycles[0].path, *path, "{source}");
        assert_eq!(cycles[0].message, *message, "{source}");
    }
}

#[test]
fn a_diamond_is_not_a_cycle() {
    let parsed = parse_ok(
        "services:\n  web: {image: a, depends_on: [api, worker]}\n  api: {image: a, depends_on: [db]}\n  worker: {image: a, depends_on: [db]}\n  db: {image: a}\n",
    );
    assert_eq!(parsed.services.len(), 4);
}

#[test]
fn depends_on_changes_no_revision() {
    let a = parse_ok(&app("[db]"));
    let b = parse_ok(&app("{db: {condition: service_healthy}}"));
    let web = |p: &super::ComposeApp| {
        p.services
            .iter()
            .find(|(n, _)| n == "web")
            .unwrap()
            .1
            .revision_hash()
    };
    assert_eq!(web(&a), web(&b));
}
