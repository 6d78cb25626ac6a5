//! Deploy and delete against an in-memory store: creation, updates, removed services (their
//! replicas are left to the service controller), optimistic concurrency, and refusals that write nothing.

use std::collections::BTreeMap;

use hivemind_client::wire::DeployRequest;
use hivemind_store::{Expect, Op, Store};
use hivemind_types::{Kind, Replica, Service};

use super::*;

fn req(compose: &str) -> DeployRequest {
    DeployRequest {
        compose: compose.to_string(),
        ..Default::default()
    }
}

const SHOP: &str = "name: shop\nservices:\n  web:\n    image: busybox:1\n    deploy: {replicas: 2}\n  db:\n    image: busybox:2\n";

/// A replica of `service` in app `app`, as the controller would write it.
async fn put_replica(store: &Store, app: &str, service: &str, id: &str) {
    let r = crate::testing::replica(id, app, service, "n1");
    store
        .txn(vec![Op::put(Kind::Replica, id, &r, Expect::Absent)])
        .await
        .unwrap();
}

async fn replica_ids(store: &Store) -> Vec<String> {
    store
        .list::<Replica>(Kind::Replica, "")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

#[tokio::test]
async fn first_deploy_creates_app_and_services_in_file_order() {
    let store = Store::open_in_memory().unwrap();
    let out = deploy(&store, "default", &req(SHOP)).await.unwrap();
    assert!(out.created);
    let resp = out.response;
    assert_eq!(resp.app.name, "shop");
    assert_eq!(resp.app.services, ["web", "db"]);
    assert_eq!(resp.app.source, SHOP);
    let names: Vec<_> = resp.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "db"]);
    assert_eq!(resp.services[0].spec.replicas, 2);
    assert_eq!(resp.revision, store.revision().await.unwrap());
    assert_eq!(resp.revision, 1, "one transaction");
}

#[tokio::test]
async fn redeploy_updates_changed_services_only_and_deletes_removed_ones() {
    let store = Store::open_in_memory().unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    put_replica(&store, "shop", "web", "web-aaaaa").await;
    put_replica(&store, "shop", "db", "db-bbbbb").await;
    // Another app's replica of a service with the same name must survive.
    put_replica(&store, "other", "db", "db-ccccc").await;
    let db_rev = store
        .get::<Service>(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .unwrap()
        .meta
        .revision;

    let v2 = "name: shop\nservices:\n  web:\n    image: busybox:1\n    deploy: {replicas: 5}\n";
    let out = deploy(&store, "default", &req(v2)).await.unwrap();
    assert!(!out.created);
    assert_eq!(out.response.app.services, ["web"]);
    assert_eq!(out.response.services.len(), 1);
    assert_eq!(out.response.services[0].spec.replicas, 5);
    assert!(store
        .get::<Service>(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .is_none());
    // Replicas are the service controller's to delete (it removes orphans); the API writes
    // desired state only.
    assert_eq!(
        replica_ids(&store).await,
        ["db-bbbbb", "db-ccccc", "web-aaaaa"]
    );
    assert!(db_rev < out.response.revision);

    // The same file again writes nothing.
    let rev = store.revision().await.unwrap();
    let out = deploy(&store, "default", &req(v2)).await.unwrap();
    assert_eq!(out.response.revision, rev);
    assert_eq!(store.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn unchanged_services_keep_their_revision() {
    let store = Store::open_in_memory().unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    let before: Service = store
        .get(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .unwrap();
    let v2 = SHOP.replace("busybox:1", "busybox:3");
    deploy(&store, "default", &req(&v2)).await.unwrap();
    let after: Service = store
        .get(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(before.meta.revision, after.meta.revision);
    let web: Service = store
        .get(Kind::Service, "default/shop/web")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(web.spec.image, "busybox:3");
}

#[tokio::test]
async fn name_comes_from_request_then_file_and_namespace_from_body_then_query() {
    let store = Store::open_in_memory().unwrap();
    let mut r = req(SHOP);
    r.name = Some("shop2".into());
    assert_eq!(
        deploy(&store, "default", &r)
            .await
            .unwrap()
            .response
            .app
            .name,
        "shop2"
    );
    let r = req("services: {web: {image: a}}");
    let err = deploy(&store, "default", &r).await.unwrap_err();
    assert_eq!(err.status().as_u16(), 422);
    assert_eq!(err.field(), Some("name"));
    assert!(err.to_string().contains("request names no app"), "{err}");

    let mut r = req(SHOP);
    r.namespace = Some("prod".into());
    let out = deploy(&store, "staging", &r).await.unwrap();
    assert_eq!(out.response.app.namespace, "prod");
    let out = deploy(&store, "staging", &req(SHOP)).await.unwrap();
    assert_eq!(out.response.app.namespace, "staging");
}

#[tokio::test]
async fn env_and_env_files_come_from_the_request() {
    let store = Store::open_in_memory().unwrap();
    let mut r = req(
        "name: shop\nservices:\n  web:\n    image: \"busybox:${TAG}\"\n    env_file: web.env\n",
    );
    r.env = BTreeMap::from([("TAG".to_string(), "9".to_string())]);
    r.env_files = BTreeMap::from([("web.env".to_string(), "MODE=prod\n".to_string())]);
    let out = deploy(&store, "default", &r).await.unwrap();
    let spec = &out.response.services[0].spec;
    assert_eq!(spec.image, "busybox:9");
    assert_eq!(
        spec.environment.get("MODE").map(String::as_str),
        Some("prod")
    );

    // An env_file the CLI did not send is a Compose error at that key.
    r.env_files.clear();
    let rev = store.revision().await.unwrap();
    let err = deploy(&store, "default", &r).await.unwrap_err();
    assert_eq!(err.status().as_u16(), 422);
    assert!(
        err.field().unwrap().starts_with("services.web.env_file"),
        "{:?}",
        err.field()
    );
    assert_eq!(store.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn refusals_write_nothing() {
    let store = Store::open_in_memory().unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    let rev = store.revision().await.unwrap();
    let mut stale = req(SHOP);
    stale.revision = Some(rev + 10);
    let mut bad_name = req(SHOP);
    bad_name.name = Some("shop 1".into());
    let mut bad_ns = req(SHOP);
    bad_ns.namespace = Some("-x".into());
    let mut must_be_new = req(SHOP);
    must_be_new.revision = Some(0);
    let cases = [
        (stale, 409, None),
        (must_be_new, 409, None),
        (bad_name, 422, Some("name")),
        (bad_ns, 422, Some("namespace")),
        (req(""), 422, Some("compose")),
        (
            req("services: {web: {build: .}}"),
            422,
            Some("services.web.build"),
        ),
        (
            req("name: shop\nservices: {web: {image: a, ports: [\"x\"]}}"),
            422,
            Some("services.web.ports[0]"),
        ),
        (req("services: ["), 422, Some("compose")),
    ];
    for (r, status, field) in cases {
        let err = deploy(&store, "default", &r).await.unwrap_err();
        assert_eq!(err.status().as_u16(), status, "{r:?}: {err}");
        if let Some(field) = field {
            assert_eq!(err.field(), Some(field), "{r:?}: {err}");
        }
        assert!(err.body().error.fix.is_some());
        assert_eq!(store.revision().await.unwrap(), rev, "{r:?} wrote");
    }
    // The right revision is accepted.
    let mut ok = req(&SHOP.replace("busybox:2", "busybox:4"));
    ok.revision = Some(
        store
            .get::<App>(Kind::App, "default/shop")
            .await
            .unwrap()
            .unwrap()
            .meta
            .revision,
    );
    deploy(&store, "default", &ok).await.unwrap();
}

#[tokio::test]
async fn delete_removes_app_and_services_only_of_that_app_and_leaves_replicas_to_the_controller() {
    let store = Store::open_in_memory().unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    let mut other = req(SHOP);
    other.name = Some("shopper".into());
    deploy(&store, "default", &other).await.unwrap();
    put_replica(&store, "shop", "web", "web-aaaaa").await;
    put_replica(&store, "shopper", "web", "web-bbbbb").await;
    let before = store.revision().await.unwrap();
    let app = delete_app(&store, "default", "shop").await.unwrap();
    assert_eq!(app.name, "shop");
    assert_eq!(
        store.revision().await.unwrap(),
        before + 1,
        "one transaction"
    );
    assert!(store
        .list::<Service>(Kind::Service, "default/shop/")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .list::<Service>(Kind::Service, "default/shopper/")
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(replica_ids(&store).await, ["web-aaaaa", "web-bbbbb"]);
    let err = delete_app(&store, "default", "shop").await.unwrap_err();
    assert_eq!(err.status().as_u16(), 404);
}

#[tokio::test]
async fn compose_names_with_underscores_and_dots_deploy_under_their_dns_names() {
    let store = Store::open_in_memory().unwrap();
    let source = "name: My_Stack\nservices:\n  plausible_db: {image: postgres:16, container_name: plausible-postgres}\n  meet.jitsi: {image: a, links: [\"plausible_db:database\"]}\n";
    let resp = deploy(&store, "default", &req(source))
        .await
        .unwrap()
        .response;
    assert_eq!(resp.app.name, "my-stack");
    assert_eq!(resp.app.services, ["plausible-db", "meet-jitsi"]);
    // The names as written, the container_name and the link answer in DNS: the endpoints
    // controller publishes the spec's network aliases.
    assert_eq!(
        resp.services[0].spec.network_aliases(),
        ["database", "plausible-postgres", "plausible_db"]
    );
    assert_eq!(resp.services[1].spec.network_aliases(), ["meet.jitsi"]);
    let stored: Vec<Service> = store
        .list(Kind::Service, "default/my-stack/")
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
}

#[tokio::test]
async fn app_name_from_the_request_with_underscore_is_accepted() {
    let store = Store::open_in_memory().unwrap();
    let mut r = req("services: {web: {image: a}}");
    r.name = Some("my_app".into());
    let out = deploy(&store, "default", &r).await.unwrap();
    assert_eq!(out.response.app.name, "my-app");
}

#[tokio::test]
async fn a_model_loaded_by_the_cli_deploys_with_its_values_as_loaded() {
    // What the CLI sends: the project loaded with its variables and files, no `env`.
    let env = BTreeMap::from([
        ("DB_PASS".to_string(), "p$ss ${x}".to_string()),
        ("TAG".to_string(), "1".to_string()),
    ]);
    let files = [compose::ComposeFile {
        name: "compose.yaml",
        source: "name: shop\nservices:\n  web:\n    image: \"busybox:${TAG}\"\n    env_file: [{path: raw.env, format: raw}]\n    environment: {DB_PASS: }\n",
    }];
    let raw = |_: &str| Ok("RAW=$HOME \"q\"\n".to_string());
    let project = compose::load_project(&compose::ProjectInput {
        files: &files,
        env: &env,
        read_file: &raw,
        profiles: &[],
        project_dir: None,
    })
    .unwrap();
    let store = Store::open_in_memory().unwrap();
    let out = deploy(&store, "default", &req(&project.source))
        .await
        .unwrap();
    let spec = &out.response.services[0].spec;
    assert_eq!(spec.image, "busybox:1");
    let env: Vec<(&str, &str)> = spec
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, [("DB_PASS", "p$ss ${x}"), ("RAW", "$HOME \"q\"")]);
    assert!(
        out.response.warnings.is_empty(),
        "{:?}",
        out.response.warnings
    );
}
