//! Compose `networks`: top-level definitions, service attachments and aliases, good and bad.

use std::collections::BTreeMap;

use super::*;
use crate::spec::NetworkAttachment;

fn attachment(aliases: &[&str], internal: bool) -> NetworkAttachment {
    NetworkAttachment {
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        internal,
    }
}

fn networks_of(app: &ComposeApp, service: &str) -> BTreeMap<String, NetworkAttachment> {
    app.services
        .iter()
        .find(|(name, _)| name == service)
        .map(|(_, spec)| spec.networks.clone())
        .unwrap_or_else(|| panic!("no service {service}"))
}

#[test]
fn list_and_map_forms_with_aliases() {
    let app = parse_ok(
        "networks:\n  front:\n  back: {driver: overlay, internal: true, labels: {team: shop}, x-note: 1}\n  edge: {driver: bridge, internal: false, external: false}\nservices:\n  web: {image: a, networks: [front, edge]}\n  api: {image: a, networks: {front: , back: {aliases: [service, service]}}}\n  db: {image: a, networks: {back: {aliases: [database]}}}\n  cron: {image: a}\n",
    );
    assert_eq!(
        networks_of(&app, "web"),
        BTreeMap::from([
            ("front".into(), attachment(&[], false)),
            ("edge".into(), attachment(&[], false)),
        ])
    );
    assert_eq!(
        networks_of(&app, "api"),
        BTreeMap::from([
            ("front".into(), attachment(&[], false)),
            ("back".into(), attachment(&["service"], true)),
        ])
    );
    let db = &app.services[2].1;
    assert_eq!(db.network_names(), ["back"]);
    assert_eq!(db.network_aliases(), ["database"]);
    assert!(db.is_internal(), "only on an internal network");
    assert!(!app.services[1].1.is_internal(), "front leads outside");
    // No `networks`: on `default`, stored as nothing so the revision hash is unchanged.
    assert!(networks_of(&app, "cron").is_empty());
    assert_eq!(app.services[3].1.network_names(), ["default"]);
}

#[test]
fn default_is_implicit_and_normalized() {
    let plain = only_service("services: {web: {image: a}}");
    let explicit = only_service("services: {web: {image: a, networks: [default]}}");
    let mapped = only_service("services: {web: {image: a, networks: {default: }}}");
    assert_eq!(plain, explicit);
    assert_eq!(plain, mapped);
    assert_eq!(plain.revision_hash(), explicit.revision_hash());
    let aliased =
        only_service("services: {web: {image: a, networks: {default: {aliases: [www]}}}}");
    assert_eq!(
        aliased.networks,
        BTreeMap::from([("default".into(), attachment(&["www"], false))])
    );
    // `default` may be configured at the top level, e.g. made internal.
    let internal =
        only_service("networks: {default: {internal: true}}\nservices: {web: {image: a}}");
    assert_eq!(
        internal.networks,
        BTreeMap::from([("default".into(), attachment(&[], true))])
    );
    assert!(internal.is_internal());
}

#[test]
fn interpolated_settings() {
    let env = vars(&[("NET", "back"), ("INTERNAL", "true")]);
    let app = parse_env(
        "networks: {back: {internal: \"${INTERNAL}\"}}\nservices: {db: {image: a, networks: [\"${NET}\"]}}",
        &env,
    )
    .unwrap();
    assert_eq!(
        app.services[0].1.networks,
        BTreeMap::from([("back".into(), attachment(&[], true))])
    );
}

#[test]
fn bad_networks_report_path_and_fix() {
    let top = |nets: &str| format!("networks: {{{nets}}}\nservices: {{web: {{image: a}}}}\n");
    let on = |nets: &str, service_networks: &str| {
        format!(
            "networks: {{{nets}}}\nservices: {{web: {{image: a, networks: {service_networks}}}}}\n"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            on("front: {}", "[front, back]"),
            "services.web.networks[1]",
            "network \"back\" is not defined\n  fix: define it under the top-level networks:",
        ),
        (
            on("front: {}", "{back: {}}"),
            "services.web.networks.back",
            "use one of: default, front",
        ),
        (
            "services: {web: {image: a, networks: [front]}}".into(),
            "services.web.networks[0]",
            "network \"front\" is not defined",
        ),
        (
            top("\"-front\": {}"),
            "networks.-front",
            "not a valid network name",
        ),
        (
            top("front: {driver: macvlan}"),
            "networks.front.driver",
            "network driver \"macvlan\" is not supported",
        ),
        (
            top("front: {enable_ipv6: true}"),
            "networks.front.enable_ipv6",
            "not supported yet",
        ),
        (
            top("front: {internal: maybe}"),
            "networks.front.internal",
            "expected a boolean",
        ),
        (
            top("front: {intrenal: true}"),
            "networks.front.intrenal",
            "did you mean `internal`?",
        ),
        (top("front: 3"), "networks.front", "expected a mapping"),
        (
            on("front: {}", "{front: {aliases: [\"bad alias\"]}}"),
            "services.web.networks.front.aliases[0]",
            "\"bad alias\" is not a valid alias",
        ),
        (
            on("front: {}", "{front: {aliases: db}}"),
            "services.web.networks.front.aliases",
            "expected a list",
        ),
        (
            on("front: {}", "{front: {ipv4_address: 172.16.238.10}}"),
            "services.web.networks.front.ipv4_address",
            "`services.web.networks.front.ipv4_address` is not supported yet",
        ),
        (
            on("front: {}", "{front: {alias: [x]}}"),
            "services.web.networks.front.alias",
            "did you mean `aliases`?",
        ),
        (
            on("front: {}", "[front, front]"),
            "services.web.networks[1]",
            "listed twice",
        ),
        (
            on("front: {}", "front"),
            "services.web.networks",
            "expected a list or a mapping",
        ),
        (
            on("front: {}", "[[front]]"),
            "services.web.networks[0]",
            "expected a string",
        ),
        (
            web("network_mode: host"),
            "services.web.network_mode",
            "not supported yet",
        ),
    ];
    let mut failures = Vec::new();
    for (source, path, fragment) in &cases {
        match parse_src(source) {
            Ok(app) => failures.push(format!("{source:?} parsed: {app:?}")),
            Err(err) => match err.at(path) {
                Some(e) if e.to_string().contains(fragment) => {}
                Some(e) => failures.push(format!("{source:?} at {path}: {e:?} lacks {fragment:?}")),
                None => failures.push(format!(
                    "{source:?}: no error at {path:?}, got {:#?}",
                    err.errors
                )),
            },
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
