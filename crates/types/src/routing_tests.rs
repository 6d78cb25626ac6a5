use std::collections::BTreeMap;

use super::*;
use crate::limits::{ExtraHost, Resources, TmpfsMount, Ulimit};
use crate::spec::{
    LogOptions, PortProtocol, PullPolicy, RestartCondition, RestartPolicy, ServiceMode,
};

/// A service with every field set, template and routing.
fn full_service() -> ServiceSpec {
    ServiceSpec {
        image: "registry.example.com/shop/web:1.4".into(),
        command: Some(vec!["serve".into(), "--port=80".into()]),
        entrypoint: Some(vec!["/bin/web".into()]),
        environment: BTreeMap::from([("LOG_LEVEL".into(), "debug".into())]),
        labels: BTreeMap::from([("team".into(), "shop".into())]),
        ports: vec![PortSpec {
            target: 80,
            published: Some(8080),
            host_ip: None,
            protocol: PortProtocol::Tcp,
        }],
        mode: ServiceMode::Replicated,
        replicas: 3,
        restart: RestartPolicy {
            condition: RestartCondition::OnFailure,
            max_attempts: Some(5),
            delay_ms: 2_000,
            window_ms: None,
        },
        stop_signal: "SIGQUIT".into(),
        stop_grace_period_ms: 30_000,
        user: Some("1000:1000".into()),
        working_dir: Some("/app".into()),
        hivemind: HivemindExt {
            strategy: Some("canary".into()),
            ingress: Some(IngressRule {
                host: Some("shop.example.com".into()),
                path: "/".into(),
            }),
            allow_from: Some(vec!["api".into()]),
            proxy_protocol: true,
        },
        pull_policy: PullPolicy::Always,
        networks: BTreeMap::from([(
            "front".into(),
            NetworkAttachment {
                aliases: vec!["www".into()],
                internal: false,
            },
        )]),
        resources: Resources {
            cpu_limit_nanos: Some(500_000_000),
            memory_limit_bytes: Some(256 << 20),
            pids_limit: Some(100),
            cpu_reservation_nanos: Some(250_000_000),
            memory_reservation_bytes: Some(128 << 20),
        },
        read_only: true,
        cap_add: vec!["CAP_NET_ADMIN".into()],
        cap_drop: vec!["CAP_CHOWN".into()],
        tmpfs: vec![TmpfsMount {
            target: "/tmp".into(),
            options: vec!["size=64m".into()],
        }],
        ulimits: BTreeMap::from([(
            "nofile".into(),
            Ulimit {
                soft: 1024,
                hard: 4096,
            },
        )]),
        init: true,
        hostname: Some("web".into()),
        extra_hosts: vec![ExtraHost {
            name: "db".into(),
            ip: "10.0.0.5".into(),
        }],
        logging: LogOptions {
            max_size: Some(10 << 20),
            max_files: Some(3),
        },
        // Left unset so that the golden hash below stays the one pinned before health checks
        // existed; `compose::tests::healthcheck` checks that a check changes the revision.
        healthcheck: None,
        // Empty: a spec without secrets or configs keeps its hash (see `secret`'s tests).
        secrets: Vec::new(),
        configs: Vec::new(),
        depends_on: BTreeMap::new(),
        stopped: false,
        // Empty, so that the golden hash stays that of a service without volumes (the new
        // field is left out of the JSON); `template_changes_replace_replicas` adds one.
        volumes: Vec::new(),
    }
}

/// The hash as it was computed before the split: the whole spec, replica count zeroed.
fn whole_spec_hash(spec: &ServiceSpec) -> String {
    let mut clone = spec.clone();
    clone.replicas = 0;
    let json = serde_json::to_vec(&clone).unwrap();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")[..10].to_string()
}

/// Pins the revision of a fixed service. If this fails, a field that decides restarts was
/// added, removed, renamed or serialized differently: every running replica of every service
/// would be replaced after the upgrade. Make the change hash-neutral (`skip_serializing_if`
/// its default) or, if replacing them is intended, update the value and say so in the notes.
#[test]
fn golden_revision_hash_of_a_fixed_service() {
    assert_eq!(full_service().revision_hash(), "deeaa56864");
}

#[test]
fn a_spec_without_routing_keeps_the_hash_it_had_before_the_split() {
    let (template, _) = full_service().split();
    assert_eq!(template.revision_hash(), whole_spec_hash(&template));
    let minimal = ServiceSpec {
        image: "busybox:1".into(),
        replicas: 1,
        stop_signal: "SIGTERM".into(),
        stop_grace_period_ms: 10_000,
        ..Default::default()
    };
    assert_eq!(minimal.revision_hash(), whole_spec_hash(&minimal));
}

#[test]
fn routing_changes_keep_the_revision() {
    let base = full_service();
    type Change = fn(&mut ServiceSpec);
    let changes: &[(&str, Change)] = &[
        ("published port", |s| s.ports[0].published = Some(9090)),
        ("new port", |s| {
            s.ports.push(PortSpec {
                target: 53,
                published: None,
                host_ip: None,
                protocol: PortProtocol::Udp,
            })
        }),
        ("no ports", |s| s.ports.clear()),
        ("ingress host", |s| {
            s.hivemind.ingress.as_mut().unwrap().host = Some("www.example.com".into())
        }),
        ("ingress path", |s| {
            s.hivemind.ingress.as_mut().unwrap().path = "/api".into()
        }),
        ("no ingress", |s| s.hivemind.ingress = None),
        ("strategy", |s| {
            s.hivemind.strategy = Some("blue-green".into())
        }),
        ("allow_from", |s| s.hivemind.allow_from = None),
        ("proxy_protocol", |s| s.hivemind.proxy_protocol = false),
        ("networks", |s| {
            s.networks
                .insert("back".into(), NetworkAttachment::default());
        }),
        ("aliases", |s| {
            s.networks
                .get_mut("front")
                .unwrap()
                .aliases
                .push("w".into())
        }),
        ("replica count", |s| s.replicas = 10),
    ];
    for (what, change) in changes {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(changed, base, "{what}: the change changes nothing");
        assert_eq!(
            changed.revision_hash(),
            base.revision_hash(),
            "{what} must not replace replicas"
        );
        assert_eq!(changed.template(), base.template(), "{what}");
    }
}

#[test]
fn template_changes_replace_replicas() {
    let base = full_service();
    type Change = fn(&mut ServiceSpec);
    let changes: &[(&str, Change)] = &[
        ("image", |s| s.image = "web:1.5".into()),
        ("command", |s| s.command = None),
        ("entrypoint", |s| s.entrypoint = None),
        ("environment", |s| {
            s.environment.insert("X".into(), "1".into());
        }),
        ("labels", |s| s.labels.clear()),
        ("mode", |s| s.mode = ServiceMode::Global),
        ("restart", |s| s.restart.delay_ms = 0),
        ("stop_signal", |s| s.stop_signal = "SIGTERM".into()),
        ("stop_grace_period", |s| s.stop_grace_period_ms = 1),
        ("user", |s| s.user = None),
        ("working_dir", |s| s.working_dir = None),
        ("pull_policy", |s| s.pull_policy = PullPolicy::Never),
        ("resources", |s| s.resources.pids_limit = None),
        ("read_only", |s| s.read_only = false),
        ("cap_add", |s| s.cap_add.clear()),
        ("cap_drop", |s| s.cap_drop.clear()),
        ("tmpfs", |s| s.tmpfs.clear()),
        ("ulimits", |s| s.ulimits.clear()),
        ("init", |s| s.init = false),
        ("hostname", |s| s.hostname = None),
        ("extra_hosts", |s| s.extra_hosts.clear()),
        ("logging", |s| s.logging.max_files = None),
        ("volumes", |s| {
            s.volumes.push(crate::volume::VolumeMount {
                source: crate::volume::MountSource::Anonymous { nocopy: false },
                target: "/data".into(),
                read_only: false,
                propagation: None,
            })
        }),
    ];
    for (what, change) in changes {
        let mut changed = base.clone();
        change(&mut changed);
        assert_ne!(
            changed.revision_hash(),
            base.revision_hash(),
            "{what} must replace replicas"
        );
        assert_eq!(changed.routing(), base.routing(), "{what} is not routing");
    }
}

#[test]
fn split_keeps_every_routing_field() {
    let spec = full_service();
    let (template, routing) = spec.split();
    assert_eq!(routing.ports, spec.ports);
    assert_eq!(routing.networks, spec.networks);
    assert_eq!(routing.ingress, spec.hivemind.ingress);
    assert_eq!(routing.strategy.as_deref(), Some("canary"));
    assert_eq!(routing.allow_from, Some(vec!["api".to_string()]));
    assert!(routing.proxy_protocol);
    assert!(template.ports.is_empty() && template.networks.is_empty());
    assert_eq!(template.hivemind, HivemindExt::default());
    assert_eq!(template.replicas, 0);
    assert_eq!(template.image, spec.image);
}
