//! Architecture rules checked as tests (ARCHITECTURE.md), like rust-analyzer's tidy.

use std::path::Path;

fn manifest(krate: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap()
}

fn dependencies(krate: &str) -> Vec<String> {
    let text = manifest(krate);
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = line.split_once(['.', '=']) {
                out.push(name.trim().to_string());
            }
        }
    }
    out
}

#[test]
fn agent_reaches_the_server_only_through_the_client() {
    let deps = dependencies("agent");
    assert!(deps.contains(&"hivemind-client".to_string()), "{deps:?}");
    for forbidden in [
        "hivemind-store",
        "hivemind-control",
        "hivemind-api",
        "rusqlite",
    ] {
        assert!(
            !deps.contains(&forbidden.to_string()),
            "agent depends on {forbidden}"
        );
    }
}

#[test]
fn only_the_store_knows_sql() {
    for krate in [
        "types",
        "control",
        "api",
        "client",
        "runtime",
        "logs",
        "dataplane",
        "agent",
        "hivemind",
    ] {
        assert!(
            !dependencies(krate).contains(&"rusqlite".to_string()),
            "{krate} depends on rusqlite"
        );
    }
}

#[test]
fn types_stay_free_of_io_runtimes() {
    let deps = dependencies("types");
    for forbidden in ["tokio", "axum", "reqwest", "rusqlite", "tonic"] {
        assert!(
            !deps.contains(&forbidden.to_string()),
            "types depends on {forbidden}"
        );
    }
}

#[test]
fn only_the_binary_uses_anyhow() {
    for krate in [
        "types",
        "store",
        "control",
        "api",
        "client",
        "runtime",
        "logs",
        "dataplane",
        "agent",
    ] {
        assert!(
            !dependencies(krate).contains(&"anyhow".to_string()),
            "{krate} depends on anyhow"
        );
    }
}

/// Fails naming the first dependency of `krate` in `forbidden`.
fn assert_no_dependency(krate: &str, forbidden: &[&str]) {
    let deps = dependencies(krate);
    for f in forbidden {
        assert!(
            !deps.iter().any(|d| d == f),
            "{krate} depends on {f}, which the architecture forbids"
        );
    }
}

#[test]
fn dataplane_depends_on_no_hivemind_crate() {
    let deps = dependencies("dataplane");
    let hivemind: Vec<_> = deps.iter().filter(|d| d.starts_with("hivemind-")).collect();
    assert!(hivemind.is_empty(), "dataplane depends on {hivemind:?}");
}

#[test]
fn runtime_and_logs_stay_below_the_server() {
    for krate in ["runtime", "logs"] {
        assert_no_dependency(
            krate,
            &[
                "hivemind-client",
                "hivemind-store",
                "hivemind-control",
                "hivemind-api",
                "hivemind-agent",
            ],
        );
    }
    // The log driver runs for every container; it must not pull the runtime in.
    assert_no_dependency("logs", &["hivemind-runtime", "hivemind-dataplane"]);
}

#[test]
fn agent_builds_on_runtime_logs_and_dataplane() {
    let deps = dependencies("agent");
    for needed in ["hivemind-runtime", "hivemind-logs", "hivemind-dataplane"] {
        assert!(
            deps.iter().any(|d| d == needed),
            "agent lacks {needed}: {deps:?}"
        );
    }
}

#[test]
fn control_has_no_http() {
    assert_no_dependency(
        "control",
        &["axum", "hyper", "hyper-util", "reqwest", "tower-http"],
    );
}

#[test]
fn api_has_no_node_side_crate() {
    assert_no_dependency(
        "api",
        &[
            "hivemind-runtime",
            "hivemind-dataplane",
            "hivemind-logs",
            "hivemind-agent",
        ],
    );
}
