//! Table tests of `warnings`: every key that is read but not honoured gives one warning naming
//! the service, the key path and what happens instead; honoured keys give none.

use super::*;
use crate::compose::{warnings, Warning};

#[track_caller]
fn warnings_of(source: &str) -> Vec<Warning> {
    warnings(&parse_ok(source))
}

#[test]
fn every_unhonoured_key_warns_once_with_its_path() {
    // (file, expected key paths, a phrase of the first warning's message)
    let table: &[(String, &[&str], &str)] = &[
        (
            web("x-hivemind: {allow_from: [web]}"),
            &["services.web.x-hivemind.allow_from"],
            "not enforced yet: every service on a network web is on can connect to it",
        ),
        (
            web("x-hivemind: {strategy: blue-green}"),
            &["services.web.x-hivemind.strategy"],
            "rollout strategies are not implemented",
        ),
        (
            web("x-hivemind: {strategy: rolling}"),
            &["services.web.x-hivemind.strategy"],
            "all its replicas are replaced at once",
        ),
        (
            web("x-hivemind: {strategy: canary, canary: {steps: [10, 100]}}"),
            &[
                "services.web.x-hivemind.strategy",
                "services.web.x-hivemind.canary",
            ],
            "rollout strategies",
        ),
        (
            web("x-hivemind: {ab: {header: X-Beta, value: \"1\"}}"),
            &["services.web.x-hivemind.ab"],
            "A/B routing is not implemented",
        ),
        (
            "networks: {back: {name: shop_back, external: true, ipam: {driver: default}}}\nservices: {web: {image: a, networks: [back]}}".into(),
            &[
                "networks.back.name",
                "networks.back.external",
                "networks.back.ipam",
            ],
            "named by its key in the file",
        ),
        (
            web("ports: [\"127.0.0.1:8080:80\", \"8081:81\"]"),
            &["services.web.ports[0]"],
            "the host address is ignored",
        ),
        (
            web("ports: [{target: 80, published: 8080, host_ip: \"::1\"}]"),
            &["services.web.ports[0].host_ip"],
            "--ingress-bind",
        ),
        (
            web("ports: [{target: 80, published: 8080, mode: host}]"),
            &["services.web.ports[0].mode"],
            "through the routing mesh",
        ),
        (
            web("env_file: [{path: web.env, format: raw}]"),
            &["services.web.env_file[0].format"],
            "read as a .env file",
        ),
        (
            "services:\n  web: {image: nginx, networks: [back]}\nnetworks:\n  back: {labels: {team: shop}}\n"
                .to_string(),
            &["networks.back.labels"],
            "networks carry no labels",
        ),
        (
            web("deploy: {placement: {constraints: [node.role==manager]}}"),
            &["services.web.deploy.placement"],
            "spreads replicas over all nodes",
        ),
        (
            web("deploy: {update_config: {parallelism: 1}}"),
            &["services.web.deploy.update_config"],
            "x-hivemind.strategy",
        ),
        (
            web("stdin_open: true, tty: true"),
            &["services.web.stdin_open", "services.web.tty"],
            "stdin is empty",
        ),
        (
            web("platform: linux/amd64"),
            &["services.web.platform"],
            "node's own platform",
        ),
        (
            web("dns: [8.8.8.8], dns_search: [example.com]"),
            &["services.web.dns", "services.web.dns_search"],
            "cluster DNS",
        ),
        (
            "services:\n  web: {image: a}\n  debug: {image: a, profiles: [debug]}\n".into(),
            &["services.debug.profiles"],
            "is not deployed",
        ),
        (
            web("logging: {options: {syslog-address: \"tcp://10.0.0.1:514\"}, driver: syslog}"),
            &["services.web.logging.driver"],
            "kept on their node",
        ),
    ];
    for (source, paths, phrase) in table {
        let got = warnings_of(source);
        let keys: Vec<&str> = got.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(&keys, paths, "{source}");
        assert!(
            got[0].message.contains(phrase),
            "{source}: {:?} lacks {phrase:?}",
            got[0].message
        );
        for w in &got {
            let expected = w
                .key
                .starts_with("services.")
                .then(|| w.key.split('.').nth(1).unwrap_or_default().to_string());
            assert_eq!(w.service, expected, "{source}");
            assert!(!w.message.ends_with('.'), "{w}");
        }
    }
}

#[test]
fn honoured_keys_do_not_warn() {
    let files = [
        web("ports: [\"8080:80\", \"0.0.0.0:8081:81\", {target: 82, published: 8082, mode: ingress, host_ip: 0.0.0.0}]"),
        web("x-hivemind: {ingress: {host: shop.example.com, path: /}, proxy_protocol: true}"),
        web("deploy: {replicas: 2, restart_policy: {condition: on-failure, delay: 5s, max_attempts: 3}}"),
        web("env_file: web.env, restart: unless-stopped, logging: {driver: json-file, options: {max-size: 10m}}"),
        web("read_only: true, init: true, hostname: web, cap_add: [NET_ADMIN], tmpfs: /tmp, ulimits: {nofile: 1024}"),
        "version: \"3.9\"\nservices:\n  web: {image: nginx, networks: {back: {aliases: [www]}}}\nnetworks:\n  back: {driver: overlay, internal: true}\nx-common: {a: 1}\n".to_string(),
    ];
    for source in files {
        assert_eq!(warnings_of(&source), [], "{source}");
    }
}

#[test]
fn warnings_name_each_service_and_list_services_before_the_rest() {
    let source = "\
networks:
  back: {labels: [team=shop]}
services:
  web:
    image: nginx
    networks: [back]
    x-hivemind: {allow_from: [api]}
  api:
    image: api
    networks: [back]
    ports: [\"127.0.0.1:8080:80\"]
";
    let got = warnings_of(source);
    let view: Vec<(Option<&str>, &str)> = got
        .iter()
        .map(|w| (w.service.as_deref(), w.key.as_str()))
        .collect();
    assert_eq!(
        view,
        [
            (Some("web"), "services.web.x-hivemind.allow_from"),
            (Some("api"), "services.api.ports[0]"),
            (None, "networks.back.labels"),
        ]
    );
    assert_eq!(
        got[1].to_string(),
        "services.api.ports[0]: the host address is ignored: published ports listen on the \
         node's ingress address (the agent's --ingress-bind, 0.0.0.0 by default)"
    );
}
