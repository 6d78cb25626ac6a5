//! Bad values of individual keys: ports, restart, durations, deploy, env files, interpolation
//! and `x-hivemind`. Run by `bad.rs` together with its cases.

use super::bad::BadCase;
use super::web;

pub(super) fn cases() -> Vec<BadCase> {
    let s = |x: &str| x.to_string();
    vec![
        // Pull policy.
        (
            web("pull_policy: build"),
            "services.web.pull_policy",
            "pull_policy: build is not supported: Hivemind does not build images",
        ),
        (
            web("pull_policy: sometimes"),
            "services.web.pull_policy",
            "\"sometimes\" is not a pull policy",
        ),
        (
            web("pull_policy: [always]"),
            "services.web.pull_policy",
            "expected a string",
        ),
        // Ports and expose.
        (
            web("ports: [\"8080:80\", \"80:abc\"]"),
            "services.web.ports[1]",
            "\"80:abc\" is not a valid port mapping",
        ),
        (
            web("ports: [\"70000:80\"]"),
            "services.web.ports[0]",
            "out of range 1-65535",
        ),
        (
            web("ports: [\"0:80\"]"),
            "services.web.ports[0]",
            "out of range",
        ),
        (
            web("ports: [\"8080:80/sctp\"]"),
            "services.web.ports[0]",
            "sctp is not supported",
        ),
        (
            web("ports: [\"8080:80/tpc\"]"),
            "services.web.ports[0]",
            "unknown protocol",
        ),
        (
            web("ports: [\"8000-8002:80-81\"]"),
            "services.web.ports[0]",
            "differ in length",
        ),
        (
            web("ports: [\"81-80\"]"),
            "services.web.ports[0]",
            "ends before it starts",
        ),
        (
            web("ports: [\"300.1.1.1:80:80\"]"),
            "services.web.ports[0]",
            "not an IP address",
        ),
        (
            web("ports: [\"::1:80:80\"]"),
            "services.web.ports[0]",
            "in brackets",
        ),
        (
            web("ports: \"80:80\""),
            "services.web.ports",
            "expected a list, got a string",
        ),
        (
            web("ports: [true]"),
            "services.web.ports[0]",
            "expected a string or a mapping",
        ),
        (
            web("ports: [{published: 8080}]"),
            "services.web.ports[0].target",
            "needs `target`",
        ),
        (
            web("ports: [{target: 80, published: abc}]"),
            "services.web.ports[0].published",
            "not a valid port",
        ),
        (
            web("ports: [{target: 80, published: \"8000-8001\"}]"),
            "services.web.ports[0].published",
            "only in the short syntax",
        ),
        (
            web("ports: [{target: 80, protocol: icmp}]"),
            "services.web.ports[0].protocol",
            "use tcp or udp",
        ),
        (
            web("ports: [{target: 80, mode: bridge}]"),
            "services.web.ports[0].mode",
            "not a port mode",
        ),
        (
            web("ports: [{target: 80, pubished: 8080}]"),
            "services.web.ports[0].pubished",
            "did you mean `published`?",
        ),
        (
            web("ports: [{target: 80, host_ip: nowhere}]"),
            "services.web.ports[0].host_ip",
            "not an IP address",
        ),
        (
            web("expose: [\"http\"]"),
            "services.web.expose[0]",
            "not a valid port",
        ),
        // Restart, signals and durations.
        (
            web("restart: sometimes"),
            "services.web.restart",
            "not a restart policy",
        ),
        (
            web("restart: \"on-failure:x\""),
            "services.web.restart",
            "on-failure:N",
        ),
        (
            web("restart: 3"),
            "services.web.restart",
            "expected a string, got a number 3",
        ),
        (
            web("stop_signal: SIGFOO"),
            "services.web.stop_signal",
            "not a known signal",
        ),
        (
            web("stop_signal: 99"),
            "services.web.stop_signal",
            "not a known signal",
        ),
        (
            web("stop_grace_period: 10"),
            "services.web.stop_grace_period",
            "write \"10s\"",
        ),
        (
            web("stop_grace_period: 10x"),
            "services.web.stop_grace_period",
            "unknown unit \"x\"",
        ),
        (
            web("stop_grace_period: 1.2.3s"),
            "services.web.stop_grace_period",
            "not a valid duration",
        ),
        (
            web("stop_grace_period: -5s"),
            "services.web.stop_grace_period",
            "cannot be negative",
        ),
        (
            web("stop_grace_period: 99999999999999h"),
            "services.web.stop_grace_period",
            "too long",
        ),
        (
            web("stop_grace_period: s"),
            "services.web.stop_grace_period",
            "expected a number",
        ),
        // Deploy.
        (
            web("deploy: {mode: global, replicas: 2}"),
            "services.web.deploy.replicas",
            "cannot be set when mode is global",
        ),
        (
            web("deploy: {mode: everywhere}"),
            "services.web.deploy.mode",
            "not a deploy mode",
        ),
        (
            web("deploy: {mode: replicated-job}"),
            "services.web.deploy.mode",
            "not supported yet",
        ),
        (
            web("deploy: {resources: {reservations: {devices: []}}}"),
            "services.web.deploy.resources.reservations.devices",
            "`services.web.deploy.resources.reservations.devices` is not supported yet",
        ),
        (
            web("profiles: debug"),
            "services.web.profiles",
            "expected a list",
        ),
        (
            web("profiles: [debug]"),
            "services",
            "every service has `profiles`",
        ),
        (
            web("mem_limit: lots"),
            "services.web.mem_limit",
            "\"lots\" is not a size",
        ),
        (
            web("deploy: {replica: 2}"),
            "services.web.deploy.replica",
            "did you mean `replicas`?",
        ),
        (
            web("deploy: {restart_policy: {condition: always}}"),
            "services.web.deploy.restart_policy.condition",
            "use none, on-failure or any",
        ),
        (
            web("deploy: {restart_policy: {delay: soon}}"),
            "services.web.deploy.restart_policy.delay",
            "not a valid duration",
        ),
        (
            web("deploy: {restart_policy: {max_attempts: -2}}"),
            "services.web.deploy.restart_policy.max_attempts",
            "negative",
        ),
        (
            web("deploy: {restart_policy: {windows: 5s}}"),
            "services.web.deploy.restart_policy.windows",
            "did you mean `window`?",
        ),
        (
            web("container_name: web, deploy: {replicas: 2}"),
            "services.web.container_name",
            "every replica gets its own name",
        ),
        (
            web("container_name: web, deploy: {mode: global}"),
            "services.web.container_name",
            "more than one replica",
        ),
        // env_file.
        (
            web("env_file: nope.env"),
            "services.web.env_file",
            "cannot read env file \"nope.env\": no such file",
        ),
        (
            web("env_file: [web.env, nope.env]"),
            "services.web.env_file[1]",
            "relative to the compose file",
        ),
        (
            web("env_file: broken.env"),
            "services.web.env_file",
            "broken.env line 2",
        ),
        (
            web("env_file: [{required: false}]"),
            "services.web.env_file[0].path",
            "needs `path`",
        ),
        (
            web("env_file: [{path: web.env, required: maybe}]"),
            "services.web.env_file[0].required",
            "expected a boolean",
        ),
        (
            web("env_file: 5"),
            "services.web.env_file",
            "expected a path",
        ),
        // Interpolation.
        (
            web("environment: {DB: \"${DB_URL:?set the database URL}\"}"),
            "services.web.environment.DB",
            "required variable DB_URL is not set: set the database URL",
        ),
        (
            s("services: {web: {image: \"${TAG?}\"}}"),
            "services.web.image",
            "required variable TAG is not set",
        ),
        (
            web("labels: [\"cost=$5\"]"),
            "services.web.labels[0]",
            "write $$ for a literal $",
        ),
        (
            web("command: \"echo ${HOME\""),
            "services.web.command",
            "never closed",
        ),
        (
            web("command: \"echo ${}\""),
            "services.web.command",
            "not followed by a variable name",
        ),
        (
            web("command: \"echo ${A:x}\""),
            "services.web.command",
            "invalid interpolation",
        ),
        (
            s("name: \"${APP:?give the app a name}\"\nservices: {web: {image: a}}"),
            "name",
            "required variable APP",
        ),
        // x-hivemind.
        (
            web("x-hivemnd: {strategy: canary}"),
            "services.web.x-hivemnd",
            "did you mean `x-hivemind`?",
        ),
        (
            web("x-hivemind: {proxy_protocol: sometimes}"),
            "services.web.x-hivemind.proxy_protocol",
            "expected a boolean",
        ),
        (
            web("x-hivemind: {strategy: yolo}"),
            "services.web.x-hivemind.strategy",
            "not a rollout strategy",
        ),
        (
            web("x-hivemind: {stragety: canary}"),
            "services.web.x-hivemind.stragety",
            "did you mean `strategy`?",
        ),
        (
            web("x-hivemind: {allow_from: [db]}"),
            "services.web.x-hivemind.allow_from[0]",
            "\"db\" is not a service of this file",
        ),
        (
            web("x-hivemind: {allow_from: api}"),
            "services.web.x-hivemind.allow_from",
            "expected a list of service names",
        ),
        (
            web("x-hivemind: {ingress: {host: Shop.Example.com}}"),
            "services.web.x-hivemind.ingress.host",
            "not a valid host name",
        ),
        (
            web("x-hivemind: {ingress: {path: api}}"),
            "services.web.x-hivemind.ingress.path",
            "start the path with `/`",
        ),
        (
            web("x-hivemind: {canary: {steps: [10, 500]}}"),
            "services.web.x-hivemind.canary.steps[1]",
            "percentage from 1 to 100",
        ),
        (
            web("x-hivemind: {canary: {max_error_rate: 2}}"),
            "services.web.x-hivemind.canary.max_error_rate",
            "fraction from 0 to 1",
        ),
        (
            web("x-hivemind: {canary: {pause: forever}}"),
            "services.web.x-hivemind.canary.pause",
            "not a valid duration",
        ),
        (
            web("x-hivemind: {ab: [X-Beta]}"),
            "services.web.x-hivemind.ab",
            "expected a mapping",
        ),
        (
            web("x-hivemind: 1"),
            "services.web.x-hivemind",
            "expected a mapping",
        ),
        // Logging.
        (
            web("logging: {options: {max-size: big}}"),
            "services.web.logging.options.max-size",
            "\"big\" is not a size",
        ),
        (
            web("logging: {options: {max-size: 10}}"),
            "services.web.logging.options.max-size",
            "below the 1k minimum",
        ),
        (
            web("logging: {options: {max-file: \"0\"}}"),
            "services.web.logging.options.max-file",
            "at least 1",
        ),
        (
            web("logging: {options: {max-file: many}}"),
            "services.web.logging.options.max-file",
            "expected a number",
        ),
        (
            web("logging: {options: {compress: \"true\"}}"),
            "services.web.logging.options.compress",
            "not supported",
        ),
        (
            web("logging: {format: json}"),
            "services.web.logging.format",
            "unknown logging key",
        ),
    ]
}
