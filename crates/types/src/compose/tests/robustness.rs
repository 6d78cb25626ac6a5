//! The reader must never panic: truncated and byte-mutated files only produce errors.

use super::*;

const RICH_FILE: &str = r#"version: "3.9"
name: ${APP:-shop}
x-base: &base
  image: busybox:1
  environment: {A: "1", B: "${B:-2}"}
services:
  web:
    <<: *base
    command: sh -c "echo 'hi there' && sleep 5"
    ports: ["8080:80", "127.0.0.1:9000-9001:90-91/udp", {target: 443, published: "8443"}]
    expose: [7000]
    env_file: [web.env]
    labels: [a=1]
    restart: on-failure:3
    stop_signal: SIGINT
    stop_grace_period: 1m30s
    working_dir: /srv
    deploy: {replicas: 3, restart_policy: {condition: any, delay: 1s}}
    x-hivemind:
      strategy: canary
      canary: {steps: [10, 100], pause: 30s}
      ingress: {host: shop.example.com, path: /}
      allow_from: [api]
  api:
    image: api:1
    entrypoint: ["/bin/api", "--port", "$$PORT"]
"#;

#[test]
fn rich_file_parses() {
    let app = parse_ok(RICH_FILE);
    assert_eq!(app.services.len(), 2);
}

#[test]
fn truncated_prefixes_never_panic() {
    for (end, _) in RICH_FILE.char_indices() {
        let _ = parse_src(&RICH_FILE[..end]);
    }
}

#[test]
fn mutated_files_never_panic() {
    // A fixed xorshift sequence keeps the test deterministic while covering many positions.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let replacements = b":-{}[]\"'$&*<>!|#,\n \t0a9\\%@";
    let original = RICH_FILE.as_bytes();
    for _ in 0..2000 {
        let mut bytes = original.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            match next() % 3 {
                0 => bytes[at] = replacements[(next() % replacements.len() as u64) as usize],
                1 => {
                    bytes.remove(at);
                }
                _ => bytes.insert(
                    at,
                    replacements[(next() % replacements.len() as u64) as usize],
                ),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_src(&text);
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let deep = format!("services: {}{}", "[".repeat(500), "]".repeat(500));
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\nservices: {web: {image: a}}\n";
    let inputs = [
        deep.as_str(),
        laughs,
        "\u{0}",
        "services:\n  web:\n    image: a\n    ports: [\"65535-65535:65535\"]\n",
        "services:\n  web:\n    image: a\n    ports: [\"1-65535\"]\n",
        "services: {web: {image: a, stop_grace_period: \"99999999999999999999999999h\"}}",
        "services: {web: {image: a, stop_grace_period: \"1.99999999999999999999999s\"}}",
        "services: {web: {image: !reset null}}",
        "services: {? [a]: b}",
        "services: {web: {image: a, command: \"\\\\\"}}",
        "---\nservices: {}\n---\nservices: {}\n",
        "services: {web: {image: \"$\"}}",
        "services: {web: {image: \"${\"}}",
        "services: {web: {image: \"${A:-${B:-${C\"}}",
    ];
    for input in inputs {
        let _ = parse_src(input);
    }
}

#[test]
fn huge_port_ranges_are_refused_not_allocated() {
    let ranges = vec!["\"1-65535\""; 1000].join(", ");
    let err = parse_src(&super::web(&format!("ports: [{ranges}]"))).unwrap_err();
    assert!(err.at("services.web.ports[2]").is_some(), "{err}");
}
