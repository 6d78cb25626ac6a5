//! Small files shaped like real self-hosted apps (`fixtures/real/`, our own writing) for the
//! names, ports and aliases that issue 10 found refused or broken.

use super::*;
use crate::compose::warnings;

fn parse_fixture(source: &str) -> ComposeApp {
    match parse_src(source) {
        Ok(app) => app,
        Err(e) => panic!("the fixture is refused:\n{e}"),
    }
}

fn spec<'a>(app: &'a ComposeApp, name: &str) -> &'a ServiceSpec {
    &app.services
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no service {name}"))
        .1
}

#[test]
fn photos_stack_with_container_names_and_an_empty_host_ip_is_accepted() {
    let app = parse_fixture(include_str!("fixtures/real/photos.yaml"));
    let names: Vec<&str> = app.services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["photos-server", "photos-redis", "photos-postgres"]);
    // The app reaches its database by the container_name, which is also the name as written.
    assert_eq!(
        spec(&app, "photos-postgres").network_aliases(),
        ["photos_postgres"]
    );
    let port = &spec(&app, "photos-server").ports[0];
    assert_eq!((port.published, port.target), (Some(2283), 2283));
    let warned: Vec<String> = warnings(&app).into_iter().map(|w| w.key).collect();
    assert_eq!(warned, ["services.photos_postgres.shm_size"]);
}

#[test]
fn analytics_stack_with_underscored_networks_and_links_is_accepted() {
    let app = parse_fixture(include_str!("fixtures/real/analytics.yaml"));
    let db = spec(&app, "analytics-db");
    assert_eq!(db.network_names(), ["internal-network"]);
    assert!(db.is_internal());
    assert_eq!(db.network_aliases(), ["analytics_db", "db"]);
    assert_eq!(
        spec(&app, "analytics-events-db").network_aliases(),
        ["analytics_events_db"]
    );
    let web = spec(&app, "analytics");
    assert_eq!(web.network_names(), ["internal-network", "public"]);
    assert!(!web.is_internal());
}

#[test]
fn meet_stack_with_dotted_names_and_aliases_is_accepted() {
    let app = parse_fixture(include_str!("fixtures/real/meet.yaml"));
    assert_eq!(spec(&app, "web").network_names(), ["meet-jitsi"]);
    assert_eq!(spec(&app, "web").network_aliases(), ["meet.jitsi"]);
    assert_eq!(spec(&app, "prosody").network_aliases(), ["xmpp.meet.jitsi"]);
    assert!(spec(&app, "jvb").network_aliases().is_empty());
    assert!(warnings(&app).is_empty());
}
