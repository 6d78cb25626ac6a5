//! System tests of images from real registries through the binary (issue 3, acceptance 1):
//! `deploy` of an image in a local `docker-registry` pulls and runs it; an auth-protected
//! registry refuses without credentials (the service says why) and works after
//! `hivemind registry login`; a missing tag is a clear error naming it.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use hivemind_test_support::image::build_busybox_image;
use hivemind_test_support::registry::Registry;
use support::{bin, require_containerd, TestNode};

fn compose(image: &str) -> String {
    format!("services:\n  web:\n    image: {image}\n    command: [sleep, \"300\"]\n")
}

/// `hivemind ps -o json` rows of `app`: (state, message).
fn replica_states(node: &TestNode, app: &str) -> Vec<(String, String)> {
    node.cli_json(&["ps"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["replica"]["app"] == app)
        .map(|r| {
            (
                r["status"]["state"].as_str().unwrap_or("").to_string(),
                r["status"]["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn deploy(node: &TestNode, app: &str, image: &str, timeout: &str) -> std::process::Output {
    let file = node.write(&format!("{app}.yaml"), &compose(image));
    node.cli(&[
        "deploy",
        "-f",
        file.to_str().unwrap(),
        "--app",
        app,
        "--wait",
        "--timeout",
        timeout,
    ])
}

#[test]
fn deploys_pull_from_open_and_authenticated_registries() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let open = Registry::start(None);
    let private = Registry::start(Some(("alice", "s3cret")));
    let archive = node.dir.path().join("hello.tar");
    build_busybox_image(&archive, "hello:1").unwrap();
    open.push(&archive, "hello:1");
    private.push(&archive, "private:1");

    // An open registry on loopback: pulled at deploy, running, listed as an image.
    let out = deploy(&node, "open", &open.reference("hello:1"), "60s");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replica_states(&node, "open")[0].0, "running");
    let images = node.cli_ok(&["image", "ls"]);
    assert!(images.contains(&open.reference("hello:1")), "{images}");

    // A missing tag: the wait fails naming the reference, the replica says why.
    let out = deploy(&node, "notag", &open.reference("hello:nope"), "5s");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hello:nope"), "{stderr}");
    let (_, message) = &replica_states(&node, "notag")[0];
    assert!(message.contains("hello:nope"), "{message}");

    // Without credentials: refused, and the message says how to fix it.
    let out = deploy(&node, "private", &private.reference("private:1"), "5s");
    assert!(!out.status.success());
    let (_, message) = &replica_states(&node, "private")[0];
    assert!(message.contains("registry login"), "{message}");

    // A wrong password is refused by `registry login` itself and nothing is stored.
    let login = |password: &str| {
        let mut child = node_command(&node)
            .args(["registry", "login", &private.host, "-u", "alice"])
            .arg("--password-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{password}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let config = node.dir.path().join("docker/config.json");
    assert!(!login("wrong").status.success());
    assert!(!config.exists());
    let out = login("s3cret");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(&private.host));

    // The agent's next attempt finds the credentials: the replica runs without a redeploy.
    node.wait_for("the private image running", Duration::from_secs(60), || {
        replica_states(&node, "private")
            .first()
            .is_some_and(|(state, _)| state == "running")
    });

    let out = node.cli_ok(&["registry", "logout", &private.host]);
    assert!(out.contains("removed"), "{out}");
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains(&private.host));
}

/// The binary with the node's environment (so `registry login` writes the node's config).
fn node_command(node: &TestNode) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.envs(node.env()).env_remove("HIVEMIND_TOKEN");
    cmd
}
