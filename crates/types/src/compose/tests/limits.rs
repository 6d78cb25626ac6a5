//! Limits and identity: `deploy.resources`, `read_only`, `cap_add`/`cap_drop`, `tmpfs`,
//! `ulimits`, `init`, `hostname` and `extra_hosts`, good and bad. The bad cases run with
//! `bad.rs`'s table.

use super::bad::BadCase;
use super::*;
use crate::limits::{ExtraHost, Resources, TmpfsMount, Ulimit};
use crate::spec::MAX_REPLICAS;

#[test]
fn limits_and_identity_are_normalized() {
    let spec = only_service(
        r#"
services:
  web:
    image: nginx
    deploy:
      resources:
        limits: {cpus: "0.5", memory: 64M, pids: 20}
        reservations: {cpus: 0.25, memory: 32m}
    read_only: true
    cap_add: [net_admin, CAP_SYS_TIME, NET_ADMIN]
    cap_drop: ALL
    tmpfs: ["/run", "/tmp:size=64m,mode=1777"]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
      core: -1
    init: true
    hostname: Front-1.example
    extra_hosts: ["db:10.0.0.5", "v6=::1", "old:[fe80::1]"]
"#,
    );
    assert_eq!(
        spec.resources,
        Resources {
            cpu_limit_nanos: Some(500_000_000),
            memory_limit_bytes: Some(64 << 20),
            pids_limit: Some(20),
            cpu_reservation_nanos: Some(250_000_000),
            memory_reservation_bytes: Some(32 << 20),
        }
    );
    assert!(spec.read_only && spec.init);
    assert_eq!(spec.cap_add, ["CAP_NET_ADMIN", "CAP_SYS_TIME"]);
    assert_eq!(spec.cap_drop, ["ALL"]);
    assert_eq!(
        spec.tmpfs,
        [
            TmpfsMount {
                target: "/run".into(),
                options: vec![]
            },
            TmpfsMount {
                target: "/tmp".into(),
                options: vec!["size=64m".into(), "mode=1777".into()]
            }
        ]
    );
    assert_eq!(
        spec.ulimits["nofile"],
        Ulimit {
            soft: 1024,
            hard: 2048
        }
    );
    assert_eq!(
        spec.ulimits["nproc"],
        Ulimit {
            soft: 512,
            hard: 512
        }
    );
    assert_eq!(spec.ulimits["core"].hard, u64::MAX);
    assert_eq!(spec.hostname.as_deref(), Some("Front-1.example"));
    let host = |name: &str, ip: &str| ExtraHost {
        name: name.into(),
        ip: ip.into(),
    };
    assert_eq!(
        spec.extra_hosts,
        [
            host("db", "10.0.0.5"),
            host("v6", "::1"),
            host("old", "fe80::1")
        ]
    );
}

#[test]
fn other_spellings_read_the_same() {
    let spec = only_service(
        "services:\n  web:\n    image: nginx\n    tmpfs: /run\n    extra_hosts: {db: 10.0.0.5}\n    read_only: \"false\"\n    deploy: {resources: {limits: {memory: 1073741824, pids: -1}}}\n",
    );
    assert_eq!(spec.tmpfs.len(), 1);
    assert_eq!(spec.extra_hosts[0].ip, "10.0.0.5");
    assert!(!spec.read_only);
    assert_eq!(spec.resources.memory_limit_bytes, Some(1 << 30));
    assert_eq!(spec.resources.pids_limit, None);
}

#[test]
fn a_spec_without_the_new_keys_keeps_its_json_and_hash() {
    let spec = only_service("services: {web: {image: nginx}}");
    let json = serde_json::to_value(&spec).unwrap();
    for key in [
        "resources",
        "read_only",
        "cap_add",
        "cap_drop",
        "tmpfs",
        "ulimits",
        "init",
        "hostname",
        "extra_hosts",
    ] {
        assert!(json.get(key).is_none(), "{key} is serialized: {json}");
    }
    // The hash of this spec before these fields existed.
    let old: ServiceSpec = serde_json::from_str(
        r#"{"image":"nginx","environment":{},"labels":{},"ports":[],"mode":"replicated",
            "replicas":1,"restart":{"condition":"always","delay_ms":0},"stop_signal":"SIGTERM",
            "stop_grace_period_ms":10000,"hivemind":{}}"#,
    )
    .unwrap();
    assert_eq!(old, spec);
    assert_eq!(old.revision_hash(), spec.revision_hash());
    let mut limited = spec.clone();
    limited.resources.pids_limit = Some(5);
    assert_ne!(limited.revision_hash(), spec.revision_hash());
}

pub(super) fn cases() -> Vec<BadCase> {
    vec![
        (
            web("deploy: {resources: {limits: {memory: lots}}}"),
            "services.web.deploy.resources.limits.memory",
            "\"lots\" is not a size\n  fix: use 512M, 1G or bytes",
        ),
        (
            web("deploy: {resources: {limits: {memory: 1M}}}"),
            "services.web.deploy.resources.limits.memory",
            "below the 6M minimum",
        ),
        (
            web("deploy: {resources: {limits: {cpus: many}}}"),
            "services.web.deploy.resources.limits.cpus",
            "\"many\" is not a number of CPUs",
        ),
        (
            web("deploy: {resources: {limits: {cpus: 0}}}"),
            "services.web.deploy.resources.limits.cpus",
            "no CPU at all",
        ),
        (
            web("deploy: {resources: {reservations: {cpus: \"0.001\"}}}"),
            "services.web.deploy.resources.reservations.cpus",
            "below the 0.01 CPU minimum",
        ),
        (
            web("deploy: {resources: {limits: {pids: 0}}}"),
            "services.web.deploy.resources.limits.pids",
            "is not a pids limit",
        ),
        (
            web("deploy: {resources: {limits: {memroy: 1G}}}"),
            "services.web.deploy.resources.limits.memroy",
            "did you mean `memory`?",
        ),
        (
            web("deploy: {resources: {reservations: {generic_resources: []}}}"),
            "services.web.deploy.resources.reservations.generic_resources",
            "is not supported yet",
        ),
        (
            web("deploy: {resources: {limits: {memory: 64M}, reservations: {memory: 1G}}}"),
            "services.web.deploy.resources.reservations.memory",
            "above the memory limit",
        ),
        (
            web("deploy: {resources: [1]}"),
            "services.web.deploy.resources",
            "expected a mapping, got a list",
        ),
        (
            web("read_only: yes"),
            "services.web.read_only",
            "expected a boolean",
        ),
        (
            web("cap_add: [NET_ADMN]"),
            "services.web.cap_add[0]",
            "unknown capability \"NET_ADMN\"",
        ),
        (
            web("cap_drop: [{name: x}]"),
            "services.web.cap_drop[0]",
            "expected a string",
        ),
        (
            web("tmpfs: [\"tmp\"]"),
            "services.web.tmpfs[0]",
            "not an absolute path",
        ),
        (
            web("tmpfs: [\"/tmp:size=huge\"]"),
            "services.web.tmpfs[0]",
            "tmpfs option \"size=huge\" has an invalid value",
        ),
        (
            web("tmpfs: [\"/tmp:bogus\"]"),
            "services.web.tmpfs[0]",
            "is unknown",
        ),
        (
            web("ulimits: {nofiles: 10}"),
            "services.web.ulimits.nofiles",
            "unknown ulimit \"nofiles\"",
        ),
        (
            web("ulimits: {nofile: {soft: 20, hard: 10}}"),
            "services.web.ulimits.nofile",
            "soft limit 20 is above the hard limit 10",
        ),
        (
            web("ulimits: {nofile: {soft: 20}}"),
            "services.web.ulimits.nofile",
            "needs both soft and hard",
        ),
        (
            web("ulimits: {nproc: many}"),
            "services.web.ulimits.nproc",
            "is not a ulimit value",
        ),
        (web("init: 1"), "services.web.init", "expected a boolean"),
        (
            web("hostname: \"bad_name\""),
            "services.web.hostname",
            "not a valid hostname",
        ),
        (
            web("extra_hosts: [\"db\"]"),
            "services.web.extra_hosts[0]",
            "is not NAME:ADDRESS",
        ),
        (
            web("extra_hosts: [\"db:10.0.0.300\"]"),
            "services.web.extra_hosts[0]",
            "\"10.0.0.300\" is not an IP address",
        ),
        (
            web("extra_hosts: [\"gw:host-gateway\"]"),
            "services.web.extra_hosts[0]",
            "host-gateway is not supported yet",
        ),
    ]
}

#[test]
fn replicas_above_the_shared_limit_are_refused_with_the_scale_message() {
    let ok = only_service(&web(&format!("deploy: {{replicas: {MAX_REPLICAS}}}")));
    assert_eq!(ok.replicas, MAX_REPLICAS);
    let over = MAX_REPLICAS + 1;
    let e = parse_src(&web(&format!("deploy: {{replicas: {over}}}"))).unwrap_err();
    assert_eq!(e.errors.len(), 1, "{e}");
    let limit = crate::spec::TooManyReplicas(over);
    assert_eq!(e.errors[0].path, "services.web.deploy.replicas");
    assert_eq!(e.errors[0].message, limit.to_string());
    assert_eq!(e.errors[0].fix, limit.fix());
}

/// Regression: a service name of 59-63 characters deployed, but its replica ids (the name, `-`
/// and the suffix) were longer than a hostname may be, so no replica could ever start.
#[test]
fn service_name_too_long_for_a_replica_hostname_is_refused() {
    use crate::id::{is_dns_label, replica_id, MAX_SERVICE_NAME_LEN};
    let longest = "a".repeat(MAX_SERVICE_NAME_LEN);
    let app = parse_ok(&format!("services:\n  {longest}: {{image: nginx}}\n"));
    assert!(is_dns_label(&replica_id(&app.services[0].0, MAX_REPLICAS)));
    for len in [MAX_SERVICE_NAME_LEN + 1, 59, 63] {
        let name = "a".repeat(len);
        let e = parse_src(&format!("services:\n  {name}: {{image: nginx}}\n")).unwrap_err();
        assert_eq!(e.errors.len(), 1, "{e}");
        assert_eq!(e.errors[0].path, format!("services.{name}"));
        assert!(
            e.errors[0].message.contains(&name)
                && e.errors[0]
                    .message
                    .contains(&MAX_SERVICE_NAME_LEN.to_string()),
            "{e}"
        );
        assert!(e.errors[0].fix.contains("at most 55 characters"), "{e}");
    }
}
