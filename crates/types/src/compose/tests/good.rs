//! Files that must parse, one feature at a time.

use super::*;
use crate::compose::dotenv;
use crate::compose::duration::parse_duration_ms;
use crate::compose::interpolate::interpolate;
use crate::compose::parse_dotenv;
use crate::compose::words::split_words;
use crate::spec::{
    HivemindExt, IngressRule, PortProtocol, PortSpec, PullPolicy, RestartCondition, RestartPolicy,
    ServiceMode,
};

fn port(target: u16, published: Option<u16>) -> PortSpec {
    PortSpec {
        target,
        published,
        host_ip: None,
        protocol: PortProtocol::Tcp,
    }
}

#[test]
fn minimal_service_gets_the_defaults() {
    let spec = only_service("services:\n  web:\n    image: nginx:1.27\n");
    assert_eq!(
        spec,
        ServiceSpec {
            image: "nginx:1.27".into(),
            command: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: vec![],
            mode: ServiceMode::Replicated,
            replicas: 1,
            restart: RestartPolicy {
                condition: RestartCondition::Always,
                max_attempts: None,
                delay_ms: 0,
                window_ms: None,
            },
            stop_signal: "SIGTERM".into(),
            stop_grace_period_ms: 10_000,
            user: None,
            working_dir: None,
            hivemind: HivemindExt::default(),
            pull_policy: PullPolicy::Missing,
            networks: BTreeMap::new(),
            // Limits and identity are unset (`limits.rs` tests them).
            ..ServiceSpec::default()
        }
    );
}

#[test]
fn pull_policy_spellings() {
    for (written, policy) in [
        ("always", PullPolicy::Always),
        ("missing", PullPolicy::Missing),
        ("if_not_present", PullPolicy::Missing),
        ("never", PullPolicy::Never),
    ] {
        let spec = only_service(&web(&format!("pull_policy: {written}")));
        assert_eq!(spec.pull_policy, policy, "{written}");
    }
}

#[test]
fn top_level_name_version_and_extensions() {
    let app = parse_ok(
        "version: \"3.8\"\nname: shop\nx-notes: {anything: [1, 2]}\nservices:\n  web: {image: nginx}\n  api: {image: api:1}\n",
    );
    assert_eq!(app.name.as_deref(), Some("shop"));
    let names: Vec<&str> = app.services.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["web", "api"], "services keep file order");
    assert_eq!(parse_ok("services: {web: {image: a}}").name, None);
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let app = parse_ok(
        r#"
x-base: &base
  image: busybox:1
  environment: &env {A: "1", B: "2"}
  restart: on-failure
x-labels: &labels {team: shop}
x-more: &more
  <<: *base
  stop_signal: SIGINT
services:
  one:
    <<: *base
    restart: always
  two:
    <<: [*more, {labels: *labels}]
    environment: *env
  three:
    image: other:2
    labels: *labels
"#,
    );
    let get = |name: &str| &app.services.iter().find(|(n, _)| n == name).unwrap().1;
    let one = get("one");
    assert_eq!(one.image, "busybox:1");
    assert_eq!(
        one.restart.condition,
        RestartCondition::Always,
        "own keys win over merged ones"
    );
    assert_eq!(one.environment, vars(&[("A", "1"), ("B", "2")]));
    let two = get("two");
    assert_eq!(two.image, "busybox:1", "a merge of a merge resolves");
    assert_eq!(two.stop_signal, "SIGINT");
    assert_eq!(two.restart.condition, RestartCondition::OnFailure);
    assert_eq!(two.labels, vars(&[("team", "shop")]));
    assert_eq!(get("three").labels, vars(&[("team", "shop")]));
}

#[test]
fn interpolation_forms() {
    let env = vars(&[("SET", "value"), ("EMPTY", ""), ("PORT", "8080")]);
    let lookup = |name: &str| env.get(name).cloned();
    let cases: &[(&str, &str)] = &[
        ("plain", "plain"),
        ("$SET", "value"),
        ("${SET}", "value"),
        ("x${SET}y", "xvaluey"),
        ("$SET.txt", "value.txt"),
        ("$MISSING", ""),
        ("${MISSING}", ""),
        ("${MISSING:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${MISSING-dflt}", "dflt"),
        ("${SET:-dflt}", "value"),
        ("${SET:?needed}", "value"),
        ("${EMPTY?needed}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${MISSING+alt}", ""),
        ("${MISSING:-${PORT}}", "8080"),
        ("${MISSING:-${ALSO_MISSING:-deep}}", "deep"),
        ("${SET:-${NOPE:?not evaluated}}", "value"),
        ("$$SET", "$SET"),
        ("cost: $$5", "cost: $5"),
        ("${MISSING:-a b c}", "a b c"),
    ];
    for (template, expected) in cases {
        assert_eq!(
            interpolate(template, &lookup).as_deref(),
            Ok(*expected),
            "{template}"
        );
    }
}

#[test]
fn interpolation_applies_to_the_file_before_validation() {
    let env = vars(&[("TAG", "1.4"), ("REPLICAS", "3"), ("HOST_PORT", "9090")]);
    let app = parse_env(
        r#"
name: ${APP:-shop}
services:
  web:
    image: "registry.example.com/web:${TAG}"
    ports: ["${HOST_PORT}:80"]
    deploy: {replicas: "${REPLICAS}"}
    command: echo $$HOME
    x-other: ${UNCLOSED
"#,
        &env,
    )
    .unwrap();
    assert_eq!(app.name.as_deref(), Some("shop"));
    let spec = &app.services[0].1;
    assert_eq!(spec.image, "registry.example.com/web:1.4");
    assert_eq!(spec.ports, vec![port(80, Some(9090))]);
    assert_eq!(spec.replicas, 3);
    assert_eq!(spec.command, Some(vec!["echo".into(), "$HOME".into()]));
}

#[test]
fn environment_forms() {
    let env = vars(&[("FROM_SHELL", "shell")]);
    let list = parse_env(
        "services:\n  web:\n    image: a\n    environment: [A=1, B=, \"C=x=y\", FROM_SHELL, NOT_SET]\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        list.services[0].1.environment,
        vars(&[("A", "1"), ("B", ""), ("C", "x=y"), ("FROM_SHELL", "shell")])
    );
    let map = parse_env(
        "services:\n  web:\n    image: a\n    environment: {S: text, N: 3, F: 1.5, T: true, FROM_SHELL: null, NOT_SET: ~}\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        map.services[0].1.environment,
        vars(&[
            ("S", "text"),
            ("N", "3"),
            ("F", "1.5"),
            ("T", "true"),
            ("FROM_SHELL", "shell")
        ])
    );
}

#[test]
fn env_files_merge_in_order_and_environment_wins() {
    let env = vars(&[]);
    let app = parse_env(
        r#"
services:
  web:
    image: a
    env_file: [web.env, override.env, {path: missing.env, required: false}]
    environment: {PORT: "9000"}
  api:
    image: b
    env_file: web.env
"#,
        &env,
    )
    .unwrap();
    assert_eq!(
        app.services[0].1.environment,
        vars(&[
            ("LOG_LEVEL", "warn"),
            ("PORT", "9000"),
            ("GREETING", "hello 8080")
        ])
    );
    assert_eq!(app.services[1].1.environment["LOG_LEVEL"], "debug");
}

#[test]
fn dotenv_format() {
    let source = "\u{feff}# comment\n\nexport A=1\nB = spaced value  # trailing comment\nC='single $A # kept'\nD=\"double\\n$A\"\nE=\"multi\nline\"\nF=${A}-${MISSING:-x}\nG=\nH=a#b\nI=\"\\$A\"\n";
    let parsed = parse_dotenv(source).unwrap();
    assert_eq!(
        parsed,
        vars(&[
            ("A", "1"),
            ("B", "spaced value"),
            ("C", "single $A # kept"),
            ("D", "double\n1"),
            ("E", "multi\nline"),
            ("F", "1-x"),
            ("G", ""),
            ("H", "a#b"),
            ("I", "$A"),
        ])
    );
    // A bare key is taken from the outer variables, and skipped when they lack it.
    let outer = |name: &str| (name == "HOME").then(|| "/root".to_string());
    assert_eq!(
        dotenv::parse_with("HOME\nNOPE\n", &outer).unwrap(),
        vars(&[("HOME", "/root")])
    );
}

#[test]
fn port_forms() {
    let udp = |target, published| PortSpec {
        protocol: PortProtocol::Udp,
        ..port(target, published)
    };
    let on = |ip: &str, target, published| PortSpec {
        host_ip: Some(ip.into()),
        ..port(target, published)
    };
    let cases: Vec<(&str, Vec<PortSpec>)> = vec![
        ("[\"80\"]", vec![port(80, None)]),
        ("[80]", vec![port(80, None)]),
        ("[\"8080:80\"]", vec![port(80, Some(8080))]),
        (
            "[\"127.0.0.1:8080:80\"]",
            vec![on("127.0.0.1", 80, Some(8080))],
        ),
        ("[\"127.0.0.1::80\"]", vec![on("127.0.0.1", 80, None)]),
        ("[\"[::1]:8080:80\"]", vec![on("::1", 80, Some(8080))]),
        ("[\"8080:80/udp\"]", vec![udp(80, Some(8080))]),
        ("[\"53/udp\"]", vec![udp(53, None)]),
        (
            "[\"8000-8001:80-81\"]",
            vec![port(80, Some(8000)), port(81, Some(8001))],
        ),
        (
            "[\"80-82\"]",
            vec![port(80, None), port(81, None), port(82, None)],
        ),
        (
            "[{target: 80, published: 8080}]",
            vec![port(80, Some(8080))],
        ),
        (
            "[{target: 80, published: \"8080\", protocol: udp, mode: ingress}]",
            vec![udp(80, Some(8080))],
        ),
        (
            "[{target: 80, host_ip: 10.0.0.1, mode: host, name: http, app_protocol: http}]",
            vec![on("10.0.0.1", 80, None)],
        ),
        (
            "[\"8080:80\", \"8443:443\"]",
            vec![port(80, Some(8080)), port(443, Some(8443))],
        ),
    ];
    for (ports, expected) in cases {
        let spec = only_service(&web(&format!("ports: {ports}")));
        assert_eq!(spec.ports, expected, "{ports}");
    }
}

#[test]
fn expose_adds_unpublished_ports_once() {
    let spec = only_service(&web(
        "ports: [\"8080:80\"], expose: [\"80\", 9000, \"9100-9101/udp\"]",
    ));
    let udp = |target| PortSpec {
        protocol: PortProtocol::Udp,
        ..port(target, None)
    };
    assert_eq!(
        spec.ports,
        vec![port(80, Some(8080)), port(9000, None), udp(9100), udp(9101)]
    );
}

#[test]
fn restart_forms() {
    let policy = |condition, max_attempts, delay_ms| RestartPolicy {
        condition,
        max_attempts,
        delay_ms,
        window_ms: None,
    };
    use RestartCondition::{Always, Never, OnFailure, UnlessStopped};
    let cases: &[(&str, RestartPolicy)] = &[
        ("restart: \"no\"", policy(Never, None, 0)),
        ("restart: no", policy(Never, None, 0)),
        ("restart: false", policy(Never, None, 0)),
        ("restart: always", policy(Always, None, 0)),
        // Regression (issue 10): `unless-stopped` became `always`, losing what it means.
        ("restart: unless-stopped", policy(UnlessStopped, None, 0)),
        ("restart: on-failure", policy(OnFailure, None, 0)),
        ("restart: \"on-failure:5\"", policy(OnFailure, Some(5), 0)),
        ("restart: \"on-failure:0\"", policy(OnFailure, None, 0)),
        ("deploy: {restart_policy: {}}", policy(Always, None, 0)),
        ("deploy: {restart_policy: {condition: none}}", policy(Never, None, 0)),
        (
            "deploy: {restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3, window: 2m}}",
            RestartPolicy {
                window_ms: Some(120_000),
                ..policy(OnFailure, Some(3), 5000)
            },
        ),
        (
            "deploy: {restart_policy: {window: 0s}}",
            policy(Always, None, 0),
        ),
        (
            "restart: \"no\", deploy: {restart_policy: {condition: any, delay: 500ms}}",
            policy(Always, None, 500),
        ),
    ];
    for (fields, expected) in cases {
        assert_eq!(&only_service(&web(fields)).restart, expected, "{fields}");
    }
}

#[test]
fn durations() {
    let cases: &[(&str, u64)] = &[
        ("0", 0),
        ("10s", 10_000),
        ("1m30s", 90_000),
        ("500ms", 500),
        ("1h", 3_600_000),
        ("1.5s", 1_500),
        ("1h2m3s4ms", 3_723_004),
        ("2500us", 2),
        ("999ns", 0),
        (".5m", 30_000),
    ];
    for (text, ms) in cases {
        assert_eq!(parse_duration_ms(text), Ok(*ms), "{text}");
    }
    let spec = only_service(&web("stop_grace_period: 1m30s"));
    assert_eq!(spec.stop_grace_period_ms, 90_000);
    assert_eq!(
        only_service(&web("stop_grace_period: 0")).stop_grace_period_ms,
        0
    );
}

#[test]
fn stop_signals_normalize_to_sig_names() {
    for (written, expected) in [
        ("SIGTERM", "SIGTERM"),
        ("SIGINT", "SIGINT"),
        ("sigquit", "SIGQUIT"),
        ("KILL", "SIGKILL"),
        ("SIGHUP", "SIGHUP"),
        ("SIGUSR1", "SIGUSR1"),
        ("SIGUSR2", "SIGUSR2"),
        ("9", "SIGKILL"),
        ("\"15\"", "SIGTERM"),
    ] {
        let spec = only_service(&web(&format!("stop_signal: {written}")));
        assert_eq!(spec.stop_signal, expected, "{written}");
    }
}

#[test]
fn command_and_entrypoint_forms() {
    let words = |list: &[&str]| Some(list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let cases: &[(&str, Option<Vec<String>>)] = &[
        ("command: echo hello", words(&["echo", "hello"])),
        (
            r#"command: 'sh -c "echo hi there"'"#,
            words(&["sh", "-c", "echo hi there"]),
        ),
        (
            r#"command: "echo 'a b' c\\ d ''""#,
            words(&["echo", "a b", "c d", ""]),
        ),
        (
            r#"command: [sh, -c, "echo $$HOME"]"#,
            words(&["sh", "-c", "echo $HOME"]),
        ),
        ("command: [sleep, 5]", words(&["sleep", "5"])),
        ("command: []", words(&[])),
        ("command: null", None),
        (
            "entrypoint: /docker-entrypoint.sh --flag",
            words(&["/docker-entrypoint.sh", "--flag"]),
        ),
    ];
    for (fields, expected) in cases {
        let spec = only_service(&web(fields));
        let got = if fields.starts_with("entrypoint") {
            spec.entrypoint
        } else {
            spec.command
        };
        assert_eq!(&got, expected, "{fields}");
    }
    assert_eq!(
        split_words("a  \"b\\\"c\"\td"),
        Ok(vec!["a".to_string(), "b\"c".to_string(), "d".to_string()])
    );
}

#[test]
fn labels_user_working_dir_and_container_name() {
    let spec = only_service(&web(
        "labels: [a=1, b, \"c=x=y\"], user: 1000, working_dir: /srv/app, container_name: web",
    ));
    assert_eq!(spec.labels, vars(&[("a", "1"), ("b", ""), ("c", "x=y")]));
    assert_eq!(spec.user.as_deref(), Some("1000"));
    assert_eq!(spec.working_dir.as_deref(), Some("/srv/app"));
    let spec = only_service(&web(
        "labels: {a: 1, b: true, c: null, d: text}, user: \"app:app\"",
    ));
    assert_eq!(
        spec.labels,
        vars(&[("a", "1"), ("b", "true"), ("c", ""), ("d", "text")])
    );
    assert_eq!(spec.user.as_deref(), Some("app:app"));
}

#[test]
fn deploy_mode_and_replicas() {
    assert_eq!(only_service(&web("deploy: {replicas: 3}")).replicas, 3);
    assert_eq!(only_service(&web("deploy: {replicas: 0}")).replicas, 0);
    let global = only_service(&web("deploy: {mode: global}"));
    assert_eq!((global.mode, global.replicas), (ServiceMode::Global, 1));
    let replicated = only_service(&web("deploy: {mode: replicated, replicas: 2, x-note: hi}"));
    assert_eq!(
        (replicated.mode, replicated.replicas),
        (ServiceMode::Replicated, 2)
    );
}

#[test]
fn hivemind_extension() {
    let app = parse_ok(
        r#"
services:
  web:
    image: registry.example.com/shop/web:1.4
    ports: ["8080:80"]
    x-hivemind:
      strategy: canary
      canary: { steps: [10, 50, 100], pause: 30s, max_error_rate: 0.01 }
      ab: { header: X-Beta, value: "1" }
      ingress: { host: shop.example.com, path: / }
      allow_from: [api]
      proxy_protocol: true
    x-other: {ignored: true}
  api:
    image: api:1
    x-hivemind: {strategy: blue-green, ingress: {path: /api}}
"#,
    );
    assert_eq!(
        app.services[0].1.hivemind,
        HivemindExt {
            strategy: Some("canary".into()),
            ingress: Some(IngressRule {
                host: Some("shop.example.com".into()),
                path: "/".into(),
            }),
            allow_from: Some(vec!["api".into()]),
            proxy_protocol: true,
        }
    );
    assert!(!app.services[1].1.hivemind.proxy_protocol);
    let api = &app.services[1].1.hivemind;
    assert_eq!(api.strategy.as_deref(), Some("blue-green"));
    assert_eq!(
        api.ingress
            .as_ref()
            .map(|i| (i.host.clone(), i.path.as_str())),
        Some((None, "/api"))
    );
}

#[test]
fn error_display_names_file_path_and_fix() {
    let err = parse_src(&web("ports: [\"8080:80\", \"80:abc\"]")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(
            "compose.yaml: services.web.ports[1]: \"80:abc\" is not a valid port mapping"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n  fix: use \"HOST:CONTAINER\" such as \"8080:80\", or the long syntax {target: 80, published: 8080}"),
        "{text}"
    );
}

#[test]
fn several_errors_are_reported_together() {
    let err = parse_src(
        "services:\n  web:\n    image: a\n    deploy: {replicas: three}\n    enviroment: {}\n  db:\n    build: .\n",
    )
    .unwrap_err();
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "services.web.deploy.replicas",
            "services.web.enviroment",
            "services.db.build"
        ]
    );
    assert_eq!(
        err.to_string()
            .lines()
            .filter(|l| l.starts_with("compose.yaml: "))
            .count(),
        3
    );
}

#[test]
fn logging_options_read_like_docker() {
    let spec = only_service(
        "services:\n  web:\n    image: nginx:1.27\n    logging:\n      driver: json-file\n      options: {max-size: 20k, max-file: \"3\"}\n",
    );
    assert_eq!(
        spec.logging,
        crate::spec::LogOptions {
            max_size: Some(20 * 1024),
            max_files: Some(3),
        }
    );
    let spec = only_service(
        "services:\n  web:\n    image: nginx:1.27\n    logging: {options: {max-size: 10m}}\n",
    );
    assert_eq!(spec.logging.max_size, Some(10 << 20));
    assert_eq!(spec.logging.max_files, None);
    // Unset logging leaves the spec's JSON (and so its revision hash) as before.
    let plain = only_service("services:\n  web:\n    image: nginx:1.27\n");
    assert!(!serde_json::to_string(&plain).unwrap().contains("logging"));
}

/// Issue 10: `restart: unless-stopped` was read as `always`, losing what it means (a replica
/// the user stopped stays stopped). The spec keeps it apart, and both restart after an exit.
#[test]
fn unless_stopped_becomes_always() {
    let spec = only_service(&web("restart: unless-stopped"));
    assert_eq!(spec.restart.condition, RestartCondition::UnlessStopped);
    assert_ne!(spec.restart.condition, RestartCondition::Always);
    assert!(spec.restart.condition.restarts_after(0));
    assert!(spec.restart.condition.restarts_after(1));
    let json = serde_json::to_value(&spec.restart).unwrap();
    assert_eq!(json["condition"], "unless-stopped");
}
