//! Requests from the CLI's side: deploy, list, scale and delete; tokens; and bodies that are
//! malformed or odd, which name the field and write nothing.

use hivemind_client::wire::ErrorBody;
use hivemind_client::{Client, ClientError};
use hivemind_types::{Kind, Replica};

use super::{deploy_req, put_replica, replica, TestServer, SHOP};

#[tokio::test]
async fn deploy_list_redeploy_scale_and_delete() {
    let s = TestServer::start().await;
    s.client.healthz().await.unwrap();
    let out = s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    assert_eq!(out.app.services, ["web", "db", "agent"]);
    assert_eq!(out.revision, s.store.revision().await.unwrap());

    let apps = s.client.apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(s.client.app("shop").await.unwrap().source, SHOP);
    let names: Vec<_> = s
        .client
        .services(Some("shop"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["agent", "db", "web"]);

    // Re-deploy a changed file: web changes, db goes, agent stays. (The service controller, not
    // run here, deletes db's replicas; the API writes desired state only.)
    put_replica(
        &s.store,
        &Replica {
            service: "db".into(),
            ..replica("db-aaaaa", "n1")
        },
    )
    .await;
    let v2 = SHOP
        .replace("busybox:1", "busybox:9")
        .replace("  db:\n    image: busybox:2\n", "");
    let out = s.client.deploy(&deploy_req(&v2)).await.unwrap();
    assert_eq!(out.app.services, ["web", "agent"]);
    assert_eq!(
        s.client.service("shop", "web").await.unwrap().spec.image,
        "busybox:9"
    );
    assert!(s
        .client
        .service("shop", "db")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(s
        .store
        .get::<Replica>(Kind::Replica, "db-aaaaa")
        .await
        .unwrap()
        .is_some());

    // Scale by bare name, then by app/name.
    let web = s.client.scale(None, "web", 3).await.unwrap();
    assert_eq!(web.spec.replicas, 3);
    let web = s.client.scale(None, "shop/web", 4).await.unwrap();
    assert_eq!(web.spec.replicas, 4);

    // Stale revisions: 409, nothing written.
    let rev = s.store.revision().await.unwrap();
    let err = s
        .client
        .scale_at("shop", "web", 5, Some(web.meta.revision - 1))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(err.fix().is_some());
    let mut stale = deploy_req(SHOP);
    stale.revision = Some(1);
    assert!(s.client.deploy(&stale).await.unwrap_err().is_conflict());
    assert_eq!(s.store.revision().await.unwrap(), rev);

    // A bare name in two apps is ambiguous.
    let mut other = deploy_req(SHOP);
    other.name = Some("blog".into());
    s.client.deploy(&other).await.unwrap();
    match s.client.scale(None, "web", 2).await.unwrap_err() {
        ClientError::AmbiguousService { apps, .. } => assert_eq!(apps, ["blog", "shop"]),
        e => panic!("{e}"),
    }

    // Namespaces are separate.
    let prod = s.client.clone().with_namespace("prod");
    assert!(prod.apps().await.unwrap().is_empty());
    assert!(prod.app("shop").await.unwrap_err().is_not_found());

    let gone = s.client.delete_app("blog").await.unwrap();
    assert_eq!(gone.name, "blog");
    assert!(s.client.services(Some("blog")).await.unwrap().is_empty());
    assert!(s
        .client
        .delete_app("blog")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn tokens_are_required_except_for_healthz() {
    let s = TestServer::start().await;
    let http = reqwest::Client::new();
    let health = http
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let no_token = http
        .get(format!("{}/api/v1/apps", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    assert_eq!(no_token.headers()["www-authenticate"], "Bearer");
    let body: ErrorBody = no_token.json().await.unwrap();
    assert_eq!(body.error.code, "unauthorized");

    for bad in ["", "test-token", "test-token-01234567890", "Basic abc"] {
        let err = Client::new(s.base.clone(), bad).apps().await.unwrap_err();
        assert_eq!(err.status(), Some(401), "{bad:?}");
    }
    // Unknown routes say 404, even inside /api/v1 (after authentication).
    let (status, body) = s.raw(reqwest::Method::GET, "/api/v1/nope", None).await;
    assert_eq!(
        (status, body.unwrap().error.code.as_str()),
        (404, "not_found")
    );
    assert!(s.client.app("nope").await.unwrap_err().is_not_found());
    assert!(s
        .client
        .service("nope", "web")
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_write_nothing() {
    use reqwest::Method;
    let s = TestServer::start().await;
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let rev = s.store.revision().await.unwrap();

    let scale = "/api/v1/services/shop/web/scale";
    let good = serde_json::to_string(SHOP).unwrap();
    let body = |json: String| Some(json.into_bytes());
    // (method, path, body, expected status, expected field)
    type Case = (Method, String, Option<Vec<u8>>, u16, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (Method::POST, "/api/v1/apps".into(), body("{".into()), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), body("[]".into()), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), Some(vec![b'{', 0xff, b'}']), 400, Some("body")),
        (Method::POST, "/api/v1/apps".into(), body("{}".into()), 400, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": 5}"#.into()), 400, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "env": {{"A": 1}}}}"#)), 400, Some("env.A")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "compse": ""}}"#)), 400, Some("compse")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "revision": -1}}"#)), 400, Some("revision")),
        (Method::POST, "/api/v1/apps?namespace=Bad_NS".into(), body(format!(r#"{{"compose": {good}}}"#)), 400, Some("namespace")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "services: ["}"#.into()), 422, Some("compose")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "name: x\nservices: {web: {build: .}}"}"#.into()), 422, Some("services.web.build")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "services: {web: {image: a}}"}"#.into()), 422, Some("name")),
        (Method::POST, "/api/v1/apps".into(), body(format!(r#"{{"compose": {good}, "name": "Shop 2"}}"#)), 422, Some("name")),
        (Method::POST, "/api/v1/apps".into(), body(r#"{"compose": "name: x\nservices: {web: {image: a, env_file: a.env}}"}"#.into()), 422, Some("services.web.env_file")),
        (Method::POST, scale.into(), body(r#"{"replicas": -1}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 99999999999}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": "3"}"#.into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body("{}".into()), 400, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 1000000}"#.into()), 422, Some("replicas")),
        (Method::POST, scale.into(), body(r#"{"replicas": 2, "revision": "x"}"#.into()), 400, Some("revision")),
        (Method::POST, "/api/v1/services/shop/agent/scale".into(), body(r#"{"replicas": 2}"#.into()), 422, Some("replicas")),
        (Method::POST, "/api/v1/services/shop/nope/scale".into(), body(r#"{"replicas": 2}"#.into()), 404, None),
        (Method::GET, "/api/v1/events?since=abc".into(), None, 400, Some("since")),
        (Method::GET, "/api/v1/events?type=urgent".into(), None, 400, Some("type")),
        (Method::GET, "/api/v1/events?limit=0".into(), None, 400, Some("limit")),
        (Method::GET, "/api/v1/events?limit=ten".into(), None, 400, Some("limit")),
        (Method::GET, "/api/v1/events?replica=Web_1".into(), None, 400, Some("replica")),
        (Method::GET, "/api/v1/events?service=a%2Fb".into(), None, 400, Some("service")),
        (Method::GET, "/api/v1/nodes/n1/assignment?timeout_ms=-5".into(), None, 400, Some("timeout_ms")),
        (Method::GET, "/api/v1/nodes/n1/assignment?after=1.5".into(), None, 400, Some("after")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n2", "address": "a", "generation": 1, "replicas": []}"#.into()), 400, Some("node")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n1", "address": "a", "generation": 1, "replicas": {}}"#.into()), 400, Some("replicas")),
        (Method::PUT, "/api/v1/nodes/n1/report".into(), body(r#"{"node": "n1", "address": "a", "generation": 1, "replicas": [{"id": "x", "node": "n1", "state": "dancing"}]}"#.into()), 400, Some("replicas[0].state")),
        (Method::POST, "/api/v1/apps".into(), Some(vec![b' '; 5 * 1024 * 1024]), 413, None),
    ];
    assert!(cases.len() >= 15);
    for (method, path, body, status, field) in cases {
        let (got, err) = s.raw(method.clone(), &path, body).await;
        let err = err.unwrap_or_else(|| panic!("{method} {path}: no error body"));
        assert_eq!(got, status, "{method} {path}: {err:?}");
        assert_eq!(
            err.error.field.as_deref(),
            field,
            "{method} {path}: {err:?}"
        );
        if let Some(field) = field {
            assert!(
                err.error.message.contains(field),
                "{method} {path}: {err:?}"
            );
        }
        assert!(err.error.fix.is_some(), "{method} {path}: {err:?}");
        assert_eq!(
            s.store.revision().await.unwrap(),
            rev,
            "{method} {path} wrote to the store"
        );
    }
}

#[tokio::test]
async fn odd_bodies_never_cause_a_server_error() {
    use reqwest::Method;
    let s = TestServer::start().await;
    s.client.deploy(&deploy_req(SHOP)).await.unwrap();
    let rev = s.store.revision().await.unwrap();
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(
        r#"{{"compose": {}"x"{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let bodies: Vec<Vec<u8>> = [
        "",
        "null",
        "0",
        "\"\"",
        "true",
        "{}",
        "{\"a\":",
        "{\"compose\": null}",
        "{\"compose\": \"\\u0000\"}",
        "{\"compose\": \"\\ud800\"}",
        "{\"replicas\": 1e400}",
        "{\"replicas\": 18446744073709551616}",
        "{\"env\": []}",
        "{\"compose\": \"a: *x\"}",
        "{\"compose\": \"services: {web: {image: a, deploy: {replicas: -1}}}\", \"name\": \"a\"}",
        &deep,
        &deep_obj,
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .chain([vec![0xff, 0xfe, 0x00], vec![b'{'; 100_000]])
    .collect();
    let routes = [
        (Method::POST, "/api/v1/apps"),
        (Method::POST, "/api/v1/services/shop/web/scale"),
        (Method::PUT, "/api/v1/nodes/n1/report"),
    ];
    for (method, path) in routes {
        for body in &bodies {
            let (status, err) = s.raw(method.clone(), path, Some(body.clone())).await;
            let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).to_string();
            assert!(
                (400..500).contains(&status),
                "{method} {path} {shown:?}: {status}"
            );
            assert!(err.is_some(), "{method} {path} {shown:?}: no error body");
        }
    }
    assert_eq!(s.store.revision().await.unwrap(), rev);
}

#[tokio::test]
async fn strict_query_refuses_keys_read_but_not_honoured() {
    let s = TestServer::start().await;
    let compose = "name: shop\nservices:\n  web:\n    image: busybox:1\n    x-hivemind: {allow_from: [web]}\n";
    let body = serde_json::to_vec(&deploy_req(compose)).unwrap();
    let (status, err) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/apps?strict=true",
            Some(body.clone()),
        )
        .await;
    assert_eq!(status, 422);
    let err = err.unwrap().error;
    assert_eq!(
        err.field.as_deref(),
        Some("services.web.x-hivemind.allow_from")
    );
    assert!(err.message.contains("not enforced yet"), "{}", err.message);
    assert_eq!(
        s.store.revision().await.unwrap(),
        0,
        "a refused deploy wrote"
    );
    let (status, _) = s
        .raw(
            reqwest::Method::POST,
            "/api/v1/apps?strict=maybe",
            Some(body),
        )
        .await;
    assert_eq!(status, 400);
    // Without strict the same file deploys, and the typed client sees the warning.
    let resp = s.client.deploy(&deploy_req(compose)).await.unwrap();
    assert_eq!(resp.warnings.len(), 1);
    assert_eq!(resp.warnings[0].service.as_deref(), Some("web"));
}
