//! Property tests: the reader never panics, whatever the text, and whatever values stand in the
//! keys it knows (at any depth), the variables it interpolates and the env files it reads.
//! Each outcome is a parse or an error with at least one problem, each naming a key path.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Number, Value};

use super::super::keys::{DEPLOY_KEYS, SERVICE_KEYS, TOP_KEYS};
use super::super::{parse, ComposeInput};

/// Keys read below the service level (deploy, restart policy, resources, ports, networks,
/// logging, `x-hivemind`): map keys are drawn from these so that generated values reach the
/// readers of nested keys too.
const NESTED_KEYS: &[&str] = &[
    "condition",
    "delay",
    "max_attempts",
    "window",
    "limits",
    "reservations",
    "cpus",
    "memory",
    "pids",
    "target",
    "published",
    "protocol",
    "host_ip",
    "mode",
    "aliases",
    "driver",
    "options",
    "max-size",
    "max-file",
    "internal",
    "x-hivemind",
    "strategy",
    "ingress",
    "host",
    "path",
    "canary",
    "steps",
    "pause",
    "allow_from",
    "soft",
    "hard",
    "<<",
];

/// Scalars a prober would try, and ones that look like the values the reader expects.
pub(super) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e30".to_string()),
        Just("1e19".to_string()),
        Just("-1".to_string()),
        Just("NaN".to_string()),
        Just("9223372036854775807".to_string()),
        Just("18446744073709551616".to_string()),
        Just("../".to_string()),
        Just("%00".to_string()),
        Just("8080:80".to_string()),
        Just("127.0.0.1:9000-9001:90-91/udp".to_string()),
        Just("65536:0".to_string()),
        Just("1-65535:1-65535".to_string()),
        Just("${X:-1}".to_string()),
        Just("$$".to_string()),
        Just("on-failure:99999999999999999999".to_string()),
        Just("9999999999h".to_string()),
        Just("1.5g".to_string()),
        Just("99999999999999999999t".to_string()),
        "[0-9a-z:/.${}\\-é_ ]{0,16}",
        ".{0,24}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(Number::from(n))),
        any::<u64>().prop_map(|n| Value::Number(Number::from(n))),
        any::<f64>().prop_map(|n| Value::Number(Number::from(n))),
        text().prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(
            [SERVICE_KEYS, DEPLOY_KEYS, TOP_KEYS, NESTED_KEYS].concat()
        )
        .prop_map(str::to_string),
        1 => text(),
    ]
}

/// Any YAML value, up to a few levels deep, its maps keyed mostly by known keys.
fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Sequence),
            prop::collection::vec((key(), inner), 0..6).prop_map(|entries| {
                let mut map = Mapping::new();
                for (k, v) in entries {
                    map.insert(Value::String(k), v);
                }
                Value::Mapping(map)
            }),
        ]
    })
}

/// A file with services whose known keys hold arbitrary values.
pub(super) fn document() -> impl Strategy<Value = String> {
    let service = prop::collection::vec(
        (
            prop::sample::select(SERVICE_KEYS).prop_map(str::to_string),
            value(),
        ),
        0..6,
    );
    let services = prop::collection::vec(("[a-z][a-z0-9-]{0,8}|.{0,6}", service), 0..3);
    (
        services,
        prop::option::of(value()),
        prop::option::of(value()),
    )
        .prop_map(|(services, name, networks)| {
            let mut svcs = Mapping::new();
            for (svc, keys) in services {
                let mut map = Mapping::new();
                map.insert("image".into(), "busybox:1".into());
                for (k, v) in keys {
                    map.insert(Value::String(k), v);
                }
                svcs.insert(Value::String(svc), Value::Mapping(map));
            }
            let mut top = Mapping::new();
            top.insert("services".into(), Value::Mapping(svcs));
            if let Some(name) = name {
                top.insert("name".into(), name);
            }
            if let Some(networks) = networks {
                top.insert("networks".into(), networks);
            }
            serde_yaml_ng::to_string(&Value::Mapping(top)).unwrap_or_default()
        })
}

/// Text that is mostly YAML syntax and Compose words, in any order.
pub(super) fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(vec![
            "services:",
            "\n",
            "  ",
            "    ",
            "web:",
            "image: ",
            "busybox",
            "- ",
            "{",
            "}",
            "[",
            "]",
            ":",
            ": ",
            ", ",
            "&a ",
            "*a",
            "<<: ",
            "${X}",
            "${X:?}",
            "$$",
            "\"",
            "'",
            "é",
            "1e30",
            "# ",
            "|\n",
            ">\n",
            "!!str ",
            "!!binary ",
            "? ",
            "ports:",
            "deploy:",
            "replicas: ",
            "x-hivemind:",
            "networks:",
            "\t",
            "~",
            "null",
            "-1",
            "\\",
        ])
        .prop_map(str::to_string),
        text(),
    ];
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

fn check(source: &str, env: &BTreeMap<String, String>, env_file: &str) {
    let env_files = |_: &str| Ok(env_file.to_string());
    let result = parse(&ComposeInput {
        file_name: "compose.yaml",
        source,
        env,
        env_files: &env_files,
    });
    if let Err(e) = result {
        assert!(
            !e.errors.is_empty(),
            "an error without problems for {source:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_values_in_known_keys_never_panic(source in document()) {
        check(&source, &BTreeMap::new(), "");
    }

    #[test]
    fn yamlish_text_never_panics(source in yamlish()) {
        check(&source, &BTreeMap::new(), "");
    }

    #[test]
    fn arbitrary_text_never_panics(source in ".{0,400}") {
        check(&source, &BTreeMap::new(), "");
    }

    #[test]
    fn arbitrary_variables_and_env_files_never_panic(
        value in text(),
        env_file in "([A-Z_]{1,4}=?[^\n]{0,12}\n?){0,4}|.{0,40}",
    ) {
        let source = "services:\n  web:\n    image: ${IMG:-busybox}\n    ports: [\"${P}\"]\n    \
                      deploy: {replicas: \"${N}\"}\n    env_file: [x.env]\n";
        let env: BTreeMap<String, String> = ["IMG", "P", "N"]
            .iter()
            .map(|k| (k.to_string(), value.clone()))
            .collect();
        check(source, &env, &env_file);
    }
}
