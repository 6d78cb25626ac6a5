//! Volumes against an in-memory store: deploys name them and refuse missing external ones,
//! `rm --volumes` marks only the app's own, `volume create` picks the only node, `volume rm`
//! refuses a volume a replica mounts.

use hivemind_client::wire::DeployRequest;
use hivemind_types::App;
use hivemind_types::{NamedVolume, NodeState, Replica, VolumeMount};

use super::*;
use crate::deploy::{delete_app_with, deploy};

const SHOP: &str = "name: shop\nvolumes:\n  data: {}\n  ext: {external: true}\nservices:\n  db:\n    image: busybox:1\n    volumes: [\"data:/var/lib/db\", \"ext:/ext\"]\n";

fn req(compose: &str) -> DeployRequest {
    DeployRequest {
        compose: compose.to_string(),
        ..Default::default()
    }
}

async fn put_node(store: &Store, name: &str) {
    let node = Node {
        name: name.into(),
        address: "127.0.0.1".into(),
        state: NodeState::Ready,
        last_seen: 0,
        subnet: None,
        agent_url: None,
        problems: Vec::new(),
        meta: Meta::default(),
    };
    store
        .txn(vec![Op::put(Kind::Node, name, &node, Expect::Absent)])
        .await
        .unwrap();
}

fn create_req(name: &str) -> VolumeCreateRequest {
    VolumeCreateRequest {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_missing_external_volume_is_a_deploy_error_that_writes_nothing() {
    let store = Store::open_in_memory().unwrap();
    let err = deploy(&store, "default", &req(SHOP)).await.unwrap_err();
    match &err {
        ApiError::Invalid {
            field,
            message,
            fix,
        } => {
            assert_eq!(field.as_deref(), Some("services.db.volumes[1]"));
            assert!(message.contains("external volume ext"), "{message}");
            assert!(fix.contains("hivemind volume create ext"), "{fix}");
        }
        other => panic!("expected 422, got {other:?}"),
    }
    assert!(store.list::<App>(Kind::App, "").await.unwrap().is_empty());
}

#[tokio::test]
async fn deploys_name_volumes_by_project_and_copy_external_options() {
    let store = Store::open_in_memory().unwrap();
    put_node(&store, "n1").await;
    let mut create = create_req("ext");
    create.driver_opts = BTreeMap::from([("type".into(), "tmpfs".into())]);
    let made = super::create(&store, "default", &create).await.unwrap();
    assert_eq!(
        (made.node.as_str(), made.external, made.app),
        ("n1", true, None)
    );

    let out = deploy(&store, "default", &req(SHOP)).await.unwrap();
    let mounts: Vec<&NamedVolume> = out.response.services[0]
        .spec
        .volumes
        .iter()
        .filter_map(VolumeMount::named)
        .collect();
    assert_eq!(mounts[0].name, "shop_data");
    assert_eq!(mounts[1].name, "ext");
    assert_eq!(mounts[1].driver_opts, create.driver_opts);
    // The same file again changes nothing.
    let again = deploy(&store, "default", &req(SHOP)).await.unwrap();
    assert_eq!(again.response.services, out.response.services);
}

fn stored(name: &str, app: Option<&str>, external: bool) -> Volume {
    Volume {
        namespace: "default".into(),
        app: app.map(String::from),
        name: name.into(),
        driver: "local".into(),
        driver_opts: BTreeMap::new(),
        labels: BTreeMap::new(),
        node: "n1".into(),
        external,
        removing: false,
        meta: Meta::default(),
    }
}

#[tokio::test]
async fn rm_with_volumes_marks_only_the_apps_own_volumes() {
    let store = Store::open_in_memory().unwrap();
    put_node(&store, "n1").await;
    super::create(&store, "default", &create_req("ext"))
        .await
        .unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    let mut ops = Vec::new();
    for v in [
        stored("shop_data", Some("shop"), false),
        stored("other_data", Some("other"), false),
    ] {
        ops.push(Op::put(Kind::Volume, v.key(), &v, Expect::Absent));
    }
    store.txn(ops).await.unwrap();

    delete_app_with(&store, "default", "shop", true)
        .await
        .unwrap();
    let removing: Vec<(String, bool)> = store
        .list::<Volume>(Kind::Volume, "")
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.name, v.removing))
        .collect();
    assert_eq!(
        removing,
        [
            ("ext".to_string(), false),
            ("other_data".to_string(), false),
            ("shop_data".to_string(), true),
        ]
    );
}

#[tokio::test]
async fn plain_rm_keeps_the_volumes() {
    let store = Store::open_in_memory().unwrap();
    put_node(&store, "n1").await;
    super::create(&store, "default", &create_req("ext"))
        .await
        .unwrap();
    deploy(&store, "default", &req(SHOP)).await.unwrap();
    let v = stored("shop_data", Some("shop"), false);
    store
        .txn(vec![Op::put(Kind::Volume, v.key(), &v, Expect::Absent)])
        .await
        .unwrap();
    delete_app_with(&store, "default", "shop", false)
        .await
        .unwrap();
    let volumes: Vec<Volume> = store.list(Kind::Volume, "").await.unwrap();
    assert!(volumes.iter().all(|v| !v.removing));
}

#[tokio::test]
async fn volume_rm_refuses_a_volume_in_use_naming_the_replica() {
    let store = Store::open_in_memory().unwrap();
    put_node(&store, "n1").await;
    super::create(&store, "default", &create_req("ext"))
        .await
        .unwrap();
    let mut r: Replica = crate::testing::replica("db-a1b2c", "shop", "db", "n1");
    r.spec.volumes.push(VolumeMount {
        source: MountSource::Volume(NamedVolume {
            name: "ext".into(),
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            external: true,
            nocopy: false,
            subpath: None,
            project_prefix: false,
        }),
        target: "/ext".into(),
        read_only: false,
        propagation: None,
    });
    store
        .txn(vec![Op::put(Kind::Replica, &r.id, &r, Expect::Absent)])
        .await
        .unwrap();
    match delete(&store, "default", "ext").await.unwrap_err() {
        ApiError::Conflict { message, .. } => {
            assert_eq!(message, "volume ext is in use by replica db-a1b2c")
        }
        other => panic!("expected 409, got {other:?}"),
    }
    store
        .txn(vec![Op::delete(Kind::Replica, &r.id, Expect::Any)])
        .await
        .unwrap();
    delete(&store, "default", "ext").await.unwrap();
    assert!(matches!(
        get(&store, "default", "ext").await,
        Err(ApiError::NotFound { .. })
    ));
}

#[tokio::test]
async fn volume_create_refuses_bad_input_naming_the_field() {
    let store = Store::open_in_memory().unwrap();
    let field = |e: ApiError| match e {
        ApiError::Invalid { field, .. } => field.unwrap_or_default(),
        other => panic!("expected 422, got {other:?}"),
    };
    assert_eq!(
        field(
            super::create(&store, "default", &create_req("a/b"))
                .await
                .unwrap_err()
        ),
        "name"
    );
    assert_eq!(
        field(
            super::create(&store, "default", &create_req("ok"))
                .await
                .unwrap_err()
        ),
        "node"
    );
    put_node(&store, "n1").await;
    put_node(&store, "n2").await;
    assert_eq!(
        field(
            super::create(&store, "default", &create_req("ok"))
                .await
                .unwrap_err()
        ),
        "node"
    );
    let mut bad = create_req("ok");
    bad.node = Some("n1".into());
    bad.driver_opts = BTreeMap::from([("size".into(), "1g".into())]);
    assert_eq!(
        field(super::create(&store, "default", &bad).await.unwrap_err()),
        "driver_opts.size"
    );
    bad.driver_opts = BTreeMap::from([("o".into(), "size=1m".into())]);
    assert_eq!(
        field(super::create(&store, "default", &bad).await.unwrap_err()),
        "driver_opts.type"
    );
    bad.driver_opts.clear();
    super::create(&store, "default", &bad).await.unwrap();
    assert!(matches!(
        super::create(&store, "default", &bad).await,
        Err(ApiError::Conflict { .. })
    ));
}
