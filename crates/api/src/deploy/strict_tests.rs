//! Deploy warnings and `strict`: keys read but not honoured are warnings in the response, and a
//! strict deploy refuses them with a 422 that lists every one and writes nothing.

use hivemind_client::wire::DeployRequest;
use hivemind_store::Store;

use super::*;

const POLICY: &str = "name: shop\nservices:\n  web:\n    image: busybox:1\n    x-hivemind: {allow_from: [api], strategy: rolling}\n  api:\n    image: busybox:1\n    ports: [\"127.0.0.1:8080:80\"]\n";

fn req(compose: &str, strict: bool) -> DeployRequest {
    DeployRequest {
        compose: compose.to_string(),
        strict,
        ..Default::default()
    }
}

#[tokio::test]
async fn unhonoured_keys_are_warnings_in_the_response() {
    let store = Store::open_in_memory().unwrap();
    let out = deploy(&store, "default", &req(POLICY, false))
        .await
        .unwrap();
    let keys: Vec<(Option<&str>, &str)> = out
        .response
        .warnings
        .iter()
        .map(|w| (w.service.as_deref(), w.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            (Some("web"), "services.web.x-hivemind.allow_from"),
            (Some("web"), "services.web.x-hivemind.strategy"),
            (Some("api"), "services.api.ports[0]"),
        ]
    );
    // A redeploy that changes nothing still says so.
    let again = deploy(&store, "default", &req(POLICY, false))
        .await
        .unwrap();
    assert_eq!(again.response.warnings, out.response.warnings);
    let json = serde_json::to_value(&again.response).unwrap();
    assert_eq!(
        json["warnings"][0]["key"],
        "services.web.x-hivemind.allow_from"
    );
}

#[tokio::test]
async fn strict_refuses_every_unhonoured_key_and_writes_nothing() {
    let store = Store::open_in_memory().unwrap();
    let err = deploy(&store, "default", &req(POLICY, true))
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 422);
    assert_eq!(err.field(), Some("services.web.x-hivemind.allow_from"));
    let body = err.body().error;
    for key in [
        "services.web.x-hivemind.allow_from: not enforced yet",
        "services.web.x-hivemind.strategy: not honoured yet",
        "services.api.ports[0]: the host address is ignored",
    ] {
        assert!(body.message.contains(key), "{} lacks {key}", body.message);
    }
    assert!(
        body.message.starts_with("compose.yaml has 3 keys"),
        "{}",
        body.message
    );
    assert!(body.fix.unwrap().contains("--strict"));
    assert_eq!(store.revision().await.unwrap(), 0, "a refused deploy wrote");
}

#[tokio::test]
async fn strict_accepts_a_file_without_warnings() {
    let store = Store::open_in_memory().unwrap();
    let clean = "name: shop\nservices:\n  web: {image: busybox:1, ports: [\"8080:80\"]}\n";
    let out = deploy(&store, "default", &req(clean, true)).await.unwrap();
    assert!(out.created);
    assert!(out.response.warnings.is_empty());
    let json = serde_json::to_value(&out.response).unwrap();
    assert!(
        json.get("warnings").is_none(),
        "empty warnings are left out"
    );
}

#[test]
fn strict_param_is_a_boolean() {
    let table = [
        (None, Ok(false)),
        (Some("false"), Ok(false)),
        (Some("true"), Ok(true)),
        (Some("yes"), Err("strict")),
        (Some("TRUE"), Err("strict")),
        (Some("1e30"), Err("strict")),
    ];
    for (value, want) in table {
        let got = strict_param(value);
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{value:?}"),
            (Err(e), Err(field)) => {
                assert_eq!(e.status().as_u16(), 400, "{value:?}");
                assert_eq!(e.field(), Some(field));
            }
            (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
        }
    }
}
