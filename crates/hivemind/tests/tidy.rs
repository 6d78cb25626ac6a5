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
    for krate in ["types", "control", "api", "client", "agent", "hivemind"] {
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
    for krate in ["types", "store", "control", "api", "client", "agent"] {
        assert!(
            !dependencies(krate).contains(&"anyhow".to_string()),
            "{krate} depends on anyhow"
        );
    }
}
