//! System tests of images on real containerd: docker and OCI archives imported idempotently
//! (one snapshot, no lease left), and users resolved from the image's /etc/passwd and /etc/group.

use hivemind_runtime::{ContainerRuntime, CreateOptions};

use super::{ids, replica, unique_id, TestEnv, IMAGE};

/// What makes an image the same image: name, manifest digest and size.
fn identity(images: &[hivemind_runtime::ImageInfo]) -> Vec<(String, String, u64)> {
    images
        .iter()
        .map(|i| (i.name.clone(), i.digest.clone(), i.size))
        .collect()
}

#[tokio::test]
async fn imports_docker_and_oci_archives_idempotently() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let docker = env.dir.path().join("docker.tar");
    let oci = env.dir.path().join("oci.tar");
    hivemind_test_support::image::build_busybox_image(&docker, IMAGE).unwrap();
    hivemind_test_support::image::build_busybox_oci_image(&oci, "hm-test/busybox-oci:2").unwrap();

    let first = env.runtime.image_import(&docker).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].name, "docker.io/hm-test/busybox:1");
    assert!(first[0].size > 1_000_000, "busybox is ~2 MB: {first:?}");
    let again = env.runtime.image_import(&docker).await.unwrap();
    // Same image, same content; only the record's update time moves.
    assert_eq!(
        identity(&first),
        identity(&again),
        "re-import is idempotent"
    );

    let from_oci = env.runtime.image_import(&oci).await.unwrap();
    assert_eq!(from_oci[0].name, "docker.io/hm-test/busybox-oci:2");
    assert_eq!(
        identity(&env.runtime.image_import(&oci).await.unwrap()),
        identity(&from_oci)
    );

    let names: Vec<String> = env
        .runtime
        .image_list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        names,
        vec![
            "docker.io/hm-test/busybox-oci:2",
            "docker.io/hm-test/busybox:1"
        ]
    );
    let got = env.runtime.image_get(IMAGE).await.unwrap().unwrap();
    assert_eq!(identity(&[got]), identity(&first[..1]));
    assert_eq!(env.runtime.image_get("hm-test/nope").await.unwrap(), None);
    // Both layers unpack to the same snapshot (same diff id), committed once.
    let snapshots = ids(&env.ctr(&["snapshots", "ls"]), false);
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert!(
        env.ctr(&["leases", "ls", "-q"]).trim().is_empty(),
        "leases deleted"
    );
    // `ctr` sees them too (the records are standard containerd images).
    assert!(env
        .ctr(&["images", "ls", "-q"])
        .contains("docker.io/hm-test/busybox:1"));
}

#[tokio::test]
async fn users_resolve_from_the_image() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    for (user, expected) in [
        ("nobody", "uid=65534(nobody) gid=65534(nobody)"),
        ("1234:5678", "uid=1234 gid=5678"),
        ("", "uid=0(root) gid=0(root)"),
    ] {
        let id = unique_id("user");
        let mut r = replica(&id, &["id"]);
        r.spec.user = (!user.is_empty()).then(|| user.to_string());
        env.runtime
            .create(&r, &CreateOptions::default())
            .await
            .unwrap();
        env.runtime.start(&id).await.unwrap();
        assert_eq!(env.wait_stopped(&id).await, 0);
        assert!(
            env.log(&id, "stdout").starts_with(expected),
            "user {user:?}: {}",
            env.log(&id, "stdout")
        );
        env.runtime.remove(&id).await.unwrap();
    }
}
