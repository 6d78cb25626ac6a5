use std::collections::BTreeMap;

use base64::Engine as _;
use hivemind_client::wire::{DeployRequest, FileValues};
use hivemind_store::Store;
use hivemind_types::secret::StoredFile;
use hivemind_types::{Kind, Service};

use super::*;
use crate::deploy::deploy_with;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn sealed_values_open_only_under_their_key_and_object() {
    let key = SecretsKey::new(&[7; 32]);
    let sealed = key.seal(Kind::Secret, "default/shop/db", b"hunter2");
    assert!(!sealed.contains("hunter2"));
    assert_eq!(
        key.open(Kind::Secret, "default/shop/db", &sealed).unwrap(),
        b"hunter2"
    );
    // A fresh nonce each time: the same value seals differently.
    assert_ne!(
        sealed,
        key.seal(Kind::Secret, "default/shop/db", b"hunter2")
    );
    // Another key, another object, another kind: refused.
    let other = SecretsKey::new(&[8; 32]);
    assert!(other
        .open(Kind::Secret, "default/shop/db", &sealed)
        .is_err());
    assert!(key.open(Kind::Secret, "default/shop/api", &sealed).is_err());
    assert!(key.open(Kind::Config, "default/shop/db", &sealed).is_err());
}

#[test]
fn a_tampered_value_does_not_open() {
    let key = SecretsKey::new(&[7; 32]);
    let sealed = key.seal(Kind::Secret, "s", b"hunter2");
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(&sealed)
        .unwrap();
    for i in [0, 24, bytes.len() - 1] {
        bytes[i] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let err = key.open(Kind::Secret, "s", &tampered).unwrap_err();
        assert!(err.to_string().contains("secret/s"), "{err}");
        bytes[i] ^= 1;
    }
    assert!(key.open(Kind::Secret, "s", "not base64!").is_err());
    assert!(key.open(Kind::Secret, "s", &b64("short")).is_err());
    assert!(key.open(Kind::Secret, "s", "").is_err());
}

#[test]
fn digests_are_keyed() {
    let a = SecretsKey::new(&[1; 32]);
    let b = SecretsKey::new(&[2; 32]);
    assert_eq!(a.digest(b"pw"), a.digest(b"pw"));
    assert_ne!(a.digest(b"pw"), b.digest(b"pw"));
    assert_ne!(a.digest(b"pw"), SecretsKey::config_digest(b"pw"));
}

#[test]
fn the_key_file_is_0600_kept_across_restarts_and_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = load_or_create_secrets_key(dir.path()).unwrap();
    let sealed = first.seal(Kind::Secret, "s", b"v");
    let again = load_or_create_secrets_key(dir.path()).unwrap();
    assert_eq!(again.open(Kind::Secret, "s", &sealed).unwrap(), b"v");
    let path = dir.path().join("secrets.key");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::write(&path, "not a key\n").unwrap();
    let err = load_or_create_secrets_key(dir.path()).unwrap_err();
    assert!(
        err.to_string().contains("restore it from a backup"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
}

const APP: &str = "name: shop
services:
  db:
    image: busybox:1
    secrets: [db_password]
    configs: [{source: conf, target: /etc/db.conf, mode: \"0400\"}]
  web:
    image: busybox:1
secrets:
  db_password: {file: ./pw.txt}
configs:
  conf: {content: \"max=1\"}
";

fn req(compose: &str, password: &str) -> DeployRequest {
    DeployRequest {
        compose: compose.into(),
        secrets: FileValues(BTreeMap::from([("db_password".into(), b64(password))])),
        ..Default::default()
    }
}

async fn db(store: &Store) -> Service {
    store
        .get(Kind::Service, "default/shop/db")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_deploy_seals_the_apps_secrets_and_puts_their_digests_in_the_template() {
    let store = Store::open_in_memory().unwrap();
    let key = SecretsKey::new(&[3; 32]);
    deploy_with(&store, "default", &req(APP, "hunter2"), Some(&key))
        .await
        .unwrap();
    let stored: StoredFile = store
        .get(Kind::Secret, "default/shop/db_password")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.size, 7);
    assert_eq!(stored.app.as_deref(), Some("default/shop"));
    let json = serde_json::to_string(&stored).unwrap();
    assert!(
        !json.contains("hunter2") && !json.contains(&b64("hunter2")),
        "{json}"
    );
    assert_eq!(
        key.value_of(FileKind::Secret, "default/shop/db_password", &stored)
            .unwrap(),
        b"hunter2"
    );
    let config: StoredFile = store
        .get(Kind::Config, "default/shop/conf")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(config.data, b64("max=1"));

    let service = db(&store).await;
    let m = &service.spec.secrets[0];
    assert_eq!(m.source, "default/shop/db_password");
    assert_eq!(m.target, "/run/secrets/db_password");
    assert_eq!(m.digest, stored.digest);
    assert_eq!(service.spec.configs[0].source, "default/shop/conf");
    assert_eq!(service.spec.configs[0].mode, 0o400);
    let first_hash = service.spec.revision_hash();

    // The same value again writes nothing of it and keeps the template.
    let rev = store.revision().await.unwrap();
    deploy_with(&store, "default", &req(APP, "hunter2"), Some(&key))
        .await
        .unwrap();
    assert_eq!(store.revision().await.unwrap(), rev);

    // A changed value changes the template: its replicas are replaced.
    deploy_with(&store, "default", &req(APP, "correct horse"), Some(&key))
        .await
        .unwrap();
    assert_ne!(db(&store).await.spec.revision_hash(), first_hash);

    // Removing the app removes its own secrets and configs.
    crate::deploy::delete_app(&store, "default", "shop")
        .await
        .unwrap();
    assert!(store
        .list::<StoredFile>(Kind::Secret, "")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list::<StoredFile>(Kind::Config, "")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_secret_dropped_from_the_file_is_deleted() {
    let store = Store::open_in_memory().unwrap();
    let key = SecretsKey::default();
    deploy_with(&store, "default", &req(APP, "pw"), Some(&key))
        .await
        .unwrap();
    let without = "name: shop\nservices:\n  web: {image: busybox:1}\n";
    deploy_with(&store, "default", &req(without, "pw"), Some(&key))
        .await
        .unwrap();
    assert!(store
        .list::<StoredFile>(Kind::Secret, "")
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn missing_values_and_externals_are_refused_naming_the_key() {
    let store = Store::open_in_memory().unwrap();
    let key = SecretsKey::default();
    let no_value = DeployRequest {
        compose: APP.into(),
        ..Default::default()
    };
    let err = deploy_with(&store, "default", &no_value, Some(&key))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("secrets.db_password"), "{err}");
    assert!(err.to_string().contains("was not sent"), "{err}");

    let external =
        "name: shop\nservices:\n  web: {image: busybox:1, secrets: [tls]}\nsecrets:\n  tls: {external: true}\n";
    let err = deploy_with(&store, "default", &req(external, ""), Some(&key))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("secrets.tls"), "{err}");
    assert!(
        err.fix()
            .unwrap_or_default()
            .contains("hivemind secret create tls"),
        "{err:?}"
    );

    let bad = DeployRequest {
        compose: APP.into(),
        secrets: FileValues(BTreeMap::from([("db_password".into(), "%%%".into())])),
        ..Default::default()
    };
    let err = deploy_with(&store, "default", &bad, Some(&key))
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("secrets.db_password"), "{err}");

    // Without the server's key, secrets are refused and nothing is written.
    let err = deploy_with(&store, "default", &req(APP, "pw"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secrets key"), "{err}");
    assert_eq!(store.revision().await.unwrap(), 0);
}

#[tokio::test]
async fn an_external_secret_is_mounted_by_its_cluster_key_and_digest() {
    let store = Store::open_in_memory().unwrap();
    let key = SecretsKey::default();
    let stored = key.stored(FileKind::Secret, "tls", "tls", None, b"cert");
    store
        .txn(vec![hivemind_store::Op::put(
            Kind::Secret,
            "tls",
            &stored,
            hivemind_store::Expect::Absent,
        )])
        .await
        .unwrap();
    let external =
        "name: shop\nservices:\n  web: {image: busybox:1, secrets: [{source: tls, target: tls.pem}]}\nsecrets:\n  tls: {external: true}\n";
    deploy_with(&store, "default", &req(external, ""), Some(&key))
        .await
        .unwrap();
    let web: Service = store
        .get(Kind::Service, "default/shop/web")
        .await
        .unwrap()
        .unwrap();
    let m = &web.spec.secrets[0];
    assert_eq!(
        (m.source.as_str(), m.target.as_str(), m.digest.as_str()),
        ("tls", "/run/secrets/tls.pem", stored.digest.as_str())
    );
}
