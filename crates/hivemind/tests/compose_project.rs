//! System test of loading a Compose project on the CLI's side: `hivemind deploy` run in a
//! project directory (no `-f`) finds compose.yaml and its compose.override.yaml, interpolates
//! with `.env` and the shell, inlines env_files, and the containers get every value.

mod support;

use std::process::Command;

use support::{bin, require_containerd, TestNode, IMAGE};

#[test]
fn deploy_in_a_project_directory_keeps_every_value() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let project = tempfile::tempdir().unwrap();
    let dir = project.path();
    let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
    write(
        "compose.yaml",
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    command: [\"sleep\", \"600\"]\n    \
             stop_grace_period: 1s\n    env_file: [web.env, {{path: raw.env, format: raw}}, \
             {{path: local.env, required: false}}]\n    environment: {{DB_PASS: }}\n  \
             debug:\n    image: {IMAGE}\n    profiles: [debug]\n"
        ),
    );
    write(
        "compose.override.yaml",
        "services:\n  web:\n    environment: {FROM_OVERRIDE: \"${TAG}\"}\n",
    );
    write(".env", "DB_HOST=db.internal\nTAG=v2\n");
    write("web.env", "DATABASE_URL=postgres://${DB_HOST}/shop\n");
    write("raw.env", "RAW=$HOME'q'\n");
    let out = Command::new(bin())
        .args(["deploy", "--app", "proj", "--wait", "--timeout", "60s"])
        .envs(node.env())
        .env_remove("HIVEMIND_TOKEN")
        .env("DB_PASS", "s3cret$1")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The debug profile is not active: one service.
    let services = node.cli_json(&["services", "--app", "proj"]);
    assert_eq!(services.as_array().map(Vec::len), Some(1), "{services}");
    let replica = node.replica_of("web");
    // Through the product's own exec, as a user would check it.
    let env = node.cli_ok(&["exec", &replica, "--", "env"]);
    for line in [
        "DATABASE_URL=postgres://db.internal/shop",
        "DB_PASS=s3cret$1",
        "RAW=$HOME'q'",
        "FROM_OVERRIDE=v2",
    ] {
        assert!(
            env.lines().any(|l| l == line),
            "{line} missing from:\n{env}"
        );
    }
}
