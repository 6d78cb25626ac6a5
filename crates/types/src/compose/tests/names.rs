//! Names as Compose accepts them, their DNS names, and the aliases a service answers
//! (its name as written, `container_name`, `links`, network `aliases`): issue 10's refusals of
//! valid Compose, each with a regression test named after it.

use std::collections::BTreeMap;

use super::*;
use crate::spec::NetworkAttachment;

fn service<'a>(app: &'a ComposeApp, name: &str) -> &'a ServiceSpec {
    app.services
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no service {name} in {:?}", app.services))
}

#[track_caller]
fn error_at(source: &str, path: &str) -> String {
    match parse_src(source) {
        Ok(app) => panic!("expected {source:?} to be refused, got {app:?}"),
        Err(e) => match e.at(path) {
            Some(e) => e.to_string(),
            None => panic!("no error at {path:?}: {e}"),
        },
    }
}

#[test]
fn service_name_with_underscore_is_accepted() {
    let app = parse_ok("services:\n  plausible_db: {image: postgres:16}\n  web: {image: a}\n");
    let db = service(&app, "plausible-db");
    // Docker's DNS answers the name as written; so does Hivemind's, through the alias.
    assert_eq!(db.network_aliases(), ["plausible_db"]);
    assert_eq!(db.network_names(), ["default"]);
    // A service whose name needs no mapping stays as it was (no networks entry, same hash).
    assert!(service(&app, "web").networks.is_empty());
}

#[test]
fn service_name_with_capitals_is_accepted() {
    let app = parse_ok("services: {Web: {image: a}}");
    // DNS is case-insensitive: `Web` and `web` are the same name, no alias needed.
    assert!(service(&app, "web").networks.is_empty());
}

#[test]
fn dotted_service_name_is_accepted() {
    let app = parse_ok("services: {meet.jitsi: {image: a}}");
    assert_eq!(
        service(&app, "meet-jitsi").network_aliases(),
        ["meet.jitsi"]
    );
}

#[test]
fn service_name_starting_with_a_digit_is_accepted() {
    let app = parse_ok("services: {\"2048\": {image: a}}");
    assert_eq!(service(&app, "svc-2048").network_aliases(), ["2048"]);
}

#[test]
fn app_name_with_underscore_is_accepted() {
    let app = parse_ok("name: full_example_project_name\nservices: {web: {image: a}}");
    assert_eq!(app.name.as_deref(), Some("full-example-project-name"));
}

#[test]
fn network_name_with_underscore_is_accepted() {
    let app = parse_ok(
        "networks: {internal_network: {internal: true}, Front.Net: {}}\nservices:\n  db: {image: a, networks: [internal_network]}\n  web: {image: a, networks: {Front.Net: {aliases: [www]}, internal_network: }}\n",
    );
    assert_eq!(service(&app, "db").network_names(), ["internal-network"]);
    assert!(service(&app, "db").is_internal());
    assert_eq!(
        service(&app, "web").networks,
        BTreeMap::from([
            (
                "front-net".to_string(),
                NetworkAttachment {
                    aliases: vec!["www".into()],
                    internal: false
                }
            ),
            (
                "internal-network".to_string(),
                NetworkAttachment {
                    aliases: vec![],
                    internal: true
                }
            ),
        ])
    );
}

#[test]
fn names_with_the_same_dns_name_are_refused_naming_both() {
    let e = error_at(
        "services:\n  web_db: {image: a}\n  web.db: {image: a}\n",
        "services.\"web.db\"",
    );
    assert!(e.contains("\"web_db\" and \"web.db\""), "{e}");
    assert!(e.contains("\"web-db\""), "{e}");
    let e = error_at(
        "networks: {back_net: {}, back-net: {}}\nservices: {web: {image: a}}\n",
        "networks.back-net",
    );
    assert!(e.contains("\"back_net\" and \"back-net\""), "{e}");
}

#[test]
fn a_refused_network_name_is_one_error_not_a_cascade() {
    let err = parse_src(
        "networks: {\"-back\": {}}\nservices:\n  a: {image: a, networks: [\"-back\"]}\n  b: {image: a, networks: {\"-back\": {}}}\n",
    )
    .unwrap_err();
    assert_eq!(err.errors.len(), 1, "{err}");
    assert_eq!(err.errors[0].path, "networks.-back");
}

#[test]
fn the_longest_service_name_cap_still_applies_to_the_dns_name() {
    use crate::id::MAX_SERVICE_NAME_LEN;
    let ok = format!("a_{}", "b".repeat(MAX_SERVICE_NAME_LEN - 2));
    parse_ok(&format!("services: {{{ok}: {{image: a}}}}"));
    let long = format!("a_{}", "b".repeat(MAX_SERVICE_NAME_LEN - 1));
    let e = error_at(
        &format!("services: {{{long}: {{image: a}}}}"),
        &format!("services.{long}"),
    );
    assert!(
        e.contains(&format!("at most {MAX_SERVICE_NAME_LEN}")),
        "{e}"
    );
}

#[test]
fn allow_from_names_services_as_written() {
    let app = parse_ok(
        "services:\n  api_gw: {image: a}\n  db: {image: a, x-hivemind: {allow_from: [api_gw]}}\n",
    );
    assert_eq!(
        service(&app, "db").hivemind.allow_from.as_deref(),
        Some(&["api-gw".to_string()][..])
    );
}

#[test]
fn port_with_empty_host_ip_is_accepted() {
    let spec = only_service("services: {web: {image: a, ports: [\":2283:2283\"]}}");
    assert_eq!(spec.ports.len(), 1);
    assert_eq!(spec.ports[0].target, 2283);
    assert_eq!(spec.ports[0].published, Some(2283));
    assert_eq!(spec.ports[0].host_ip, None);
}

#[test]
fn container_name_becomes_a_dns_alias() {
    let app = parse_ok(
        "services:\n  db: {image: a, container_name: immich_postgres}\n  web: {image: a, container_name: web}\n",
    );
    assert_eq!(service(&app, "db").network_aliases(), ["immich_postgres"]);
    // Its own name: nothing to add.
    assert!(service(&app, "web").networks.is_empty());
}

#[test]
fn container_name_is_an_alias_on_every_network_of_the_service() {
    let app = parse_ok(
        "networks: {front: {}, back: {}}\nservices:\n  db: {image: a, container_name: pg, networks: {front: {aliases: [x]}, back: }}\n",
    );
    let db = service(&app, "db");
    assert_eq!(db.networks["front"].aliases, ["x", "pg"]);
    assert_eq!(db.networks["back"].aliases, ["pg"]);
}

#[test]
fn container_name_clashing_with_another_service_is_refused() {
    let e = error_at(
        "services:\n  db: {image: a}\n  cache: {image: a, container_name: db}\n",
        "services.cache.container_name",
    );
    assert!(e.contains("already names service \"db\""), "{e}");
    let e = error_at(
        "services:\n  a: {image: a, container_name: shared}\n  b: {image: a, container_name: Shared}\n",
        "services.b.container_name",
    );
    assert!(e.contains("already names service \"a\""), "{e}");
}

#[test]
fn container_name_with_replicas_is_refused() {
    let e = error_at(
        "services: {web: {image: a, container_name: w, deploy: {replicas: 3}}}",
        "services.web.container_name",
    );
    assert!(e.contains("more than one replica"), "{e}");
}

#[test]
fn links_become_dns_aliases() {
    let app = parse_ok(
        "services:\n  web: {image: a, links: [db, \"plausible_db:database\", \"cache:redis\"]}\n  db: {image: a}\n  plausible_db: {image: a}\n  cache: {image: a}\n",
    );
    assert!(service(&app, "db").networks.is_empty());
    assert_eq!(
        service(&app, "plausible-db").network_aliases(),
        ["database", "plausible_db"]
    );
    assert_eq!(service(&app, "cache").network_aliases(), ["redis"]);
}

#[test]
fn a_link_to_an_unknown_service_is_refused() {
    let e = error_at(
        "services: {web: {image: a, links: [db]}}",
        "services.web.links[0]",
    );
    assert!(e.contains("not a service of this file"), "{e}");
}

#[test]
fn a_link_alias_naming_another_service_is_refused() {
    let e = error_at(
        "services:\n  web: {image: a, links: [\"db:cache\"]}\n  db: {image: a}\n  cache: {image: a}\n",
        "services.web.links[0]",
    );
    assert!(e.contains("already names service \"cache\""), "{e}");
}

#[test]
fn dotted_network_aliases_are_accepted() {
    let app = parse_ok(
        "networks: {meet.jitsi: {}}\nservices:\n  prosody: {image: a, networks: {meet.jitsi: {aliases: [xmpp.meet.jitsi, XMPP_Internal]}}}\n",
    );
    assert_eq!(
        service(&app, "prosody").networks["meet-jitsi"].aliases,
        ["xmpp.meet.jitsi", "xmpp_internal"]
    );
}

#[test]
fn service_level_limits_are_honoured() {
    let spec = only_service(
        "services: {web: {image: a, cpus: \"1.5\", mem_limit: 512m, mem_reservation: 128m, pids_limit: 100}}",
    );
    let r = &spec.resources;
    assert_eq!(r.cpu_limit_nanos, Some(1_500_000_000));
    assert_eq!(r.memory_limit_bytes, Some(512 << 20));
    assert_eq!(r.memory_reservation_bytes, Some(128 << 20));
    assert_eq!(r.pids_limit, Some(100));
    // `deploy.resources` wins where both are set.
    let spec = only_service(
        "services: {web: {image: a, mem_limit: 1g, cpus: 2, deploy: {resources: {limits: {memory: 256m}}}}}",
    );
    assert_eq!(spec.resources.memory_limit_bytes, Some(256 << 20));
    assert_eq!(spec.resources.cpu_limit_nanos, Some(2_000_000_000));
}

#[test]
fn services_with_profiles_are_left_out() {
    let app = parse_ok(
        "services:\n  web: {image: a, links: [\"adminer:dbadmin\"]}\n  adminer: {image: a, profiles: [debug]}\n",
    );
    let names: Vec<&str> = app.services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web"]);
}

#[test]
fn key_paths_quote_dotted_names() {
    let err = parse_src("services: {meet.jitsi: {image: 3}}").unwrap_err();
    assert_eq!(err.errors[0].path, "services.\"meet.jitsi\".image");
    // The warning names the service by its DNS name, as `hivemind ps` shows it.
    let app = parse_ok("services: {meet.jitsi: {image: a, tty: true}}");
    let w = &crate::compose::warnings(&app)[0];
    assert_eq!(w.key, "services.\"meet.jitsi\".tty");
    assert_eq!(w.service.as_deref(), Some("meet-jitsi"));
}

#[test]
fn many_problems_end_with_a_tally() {
    let services: String = (0..25)
        .map(|i| format!("  s{i}: {{image: a, frobnicate: 1}}\n"))
        .collect();
    let err = parse_src(&format!("services:\n{services}")).unwrap_err();
    assert_eq!(err.errors.len(), 25);
    let text = err.to_string();
    assert_eq!(text.matches("unknown key").count(), 20, "{text}");
    assert!(
        text.ends_with("compose.yaml: and 5 more problems (25 in all)"),
        "{text}"
    );
}

#[test]
fn quoted_path_keys_read_back() {
    use super::super::value::{first_key, join};
    for key in ["web", "meet.jitsi", "a \"b\" c", "back\\slash", "x[1]"] {
        let path = join(&join("", key), "image");
        let (got, rest) = first_key(&path).unwrap_or_else(|| panic!("{path}"));
        assert_eq!((got.as_str(), rest), (key, ".image"), "{path}");
    }
    assert_eq!(first_key("web[0]"), Some(("web".to_string(), "[0]")));
}
