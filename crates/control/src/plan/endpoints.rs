//! The endpoints planner: one service, its replicas and what their agents report, to the
//! service's `Endpoints` object (or its removal), written only when its content changes.
//!
//! The executor calls it for the services a change touched, never for all of them.

use hivemind_types::{EndpointReplica, Endpoints, ReplicaState, Service};

/// What to do with one service's `Endpoints` object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointsChange {
    Put(Box<Endpoints>),
    Delete,
    Keep,
}

/// One replica as its endpoints show it: ready when it runs with an address.
pub fn member(
    id: &str,
    node: &str,
    revision_hash: &str,
    state: Option<ReplicaState>,
    ip: Option<&str>,
) -> EndpointReplica {
    EndpointReplica {
        id: id.to_string(),
        node: node.to_string(),
        ip: ip.map(str::to_string),
        ready: state == Some(ReplicaState::Running) && ip.is_some(),
        revision_hash: revision_hash.to_string(),
    }
}

/// The endpoints `service` should have with `members` (any order), against the stored `current`.
/// A service that is gone has none, even while its replicas are still being removed.
pub fn plan_endpoints(
    service: Option<&Service>,
    mut members: Vec<EndpointReplica>,
    current: Option<&Endpoints>,
) -> EndpointsChange {
    let Some(service) = service else {
        return match current {
            Some(_) => EndpointsChange::Delete,
            None => EndpointsChange::Keep,
        };
    };
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let desired = Endpoints {
        namespace: service.namespace.clone(),
        app: service.app.clone(),
        service: service.name.clone(),
        vip: service.vip.clone(),
        ports: service.spec.ports.clone(),
        ingress: service.spec.hivemind.ingress.clone(),
        networks: service.spec.network_names(),
        aliases: service.spec.network_aliases(),
        internal: service.spec.is_internal(),
        proxy_protocol: service.spec.hivemind.proxy_protocol,
        replicas: members,
        meta: Default::default(),
    };
    match current {
        Some(current) if current.same_content(&desired) => EndpointsChange::Keep,
        _ => EndpointsChange::Put(Box::new(desired)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hivemind_types::{Meta, NetworkAttachment, PortSpec, ServiceSpec};

    use super::*;

    fn service() -> Service {
        Service {
            namespace: "default".into(),
            app: "shop".into(),
            name: "web".into(),
            spec: ServiceSpec {
                image: "x".into(),
                ..Default::default()
            },
            vip: Some("10.43.0.2".into()),
            meta: Meta::default(),
        }
    }

    fn put(change: EndpointsChange) -> Endpoints {
        match change {
            EndpointsChange::Put(e) => *e,
            other => panic!("expected a put, got {other:?}"),
        }
    }

    #[test]
    fn members_are_every_replica_ready_when_running_with_an_address() {
        let running = Some(ReplicaState::Running);
        let got = put(plan_endpoints(
            Some(&service()),
            vec![
                member("web-b", "n1", "h1", running, Some("10.42.0.2")),
                member("web-a", "n2", "h1", running, Some("10.42.1.3")),
                member(
                    "web-c",
                    "n1",
                    "h1",
                    Some(ReplicaState::Restarting),
                    Some("10.42.0.4"),
                ),
                member("web-d", "n1", "h2", running, None),
                member("web-e", "n1", "h2", None, None),
            ],
            None,
        ));
        assert_eq!(got.key(), "default/shop/web");
        assert_eq!(got.vip.as_deref(), Some("10.43.0.2"));
        let table: Vec<_> = got
            .replicas
            .iter()
            .map(|r| (r.id.as_str(), r.node.as_str(), r.ready))
            .collect();
        assert_eq!(
            table,
            [
                ("web-a", "n2", true),
                ("web-b", "n1", true),
                ("web-c", "n1", false),
                ("web-d", "n1", false),
                ("web-e", "n1", false),
            ]
        );
        assert_eq!(got.replicas[3].revision_hash, "h2");
        assert_eq!(got.networks, ["default"], "no networks: on default");
    }

    #[test]
    fn written_only_when_the_content_changes() {
        let running = Some(ReplicaState::Running);
        let one = || vec![member("web-a", "n1", "h", running, Some("10.42.0.2"))];
        let mut stored = put(plan_endpoints(Some(&service()), one(), None));
        stored.meta.revision = 7;
        assert_eq!(
            plan_endpoints(Some(&service()), one(), Some(&stored)),
            EndpointsChange::Keep
        );
        let moved = vec![member("web-a", "n1", "h", running, Some("10.42.0.9"))];
        let got = put(plan_endpoints(Some(&service()), moved, Some(&stored)));
        assert_eq!(got.replicas[0].ip.as_deref(), Some("10.42.0.9"));
        let mut published = service();
        published.spec.ports.push(PortSpec {
            target: 80,
            published: Some(8080),
            host_ip: None,
            protocol: Default::default(),
        });
        let got = put(plan_endpoints(Some(&published), one(), Some(&stored)));
        assert!(got.is_public());
    }

    #[test]
    fn a_removed_service_loses_its_endpoints() {
        let stored = put(plan_endpoints(Some(&service()), vec![], None));
        assert_eq!(
            plan_endpoints(
                None,
                vec![member("web-a", "n1", "h", None, None)],
                Some(&stored)
            ),
            EndpointsChange::Delete
        );
        assert_eq!(plan_endpoints(None, vec![], None), EndpointsChange::Keep);
    }

    #[test]
    fn networks_and_aliases_come_from_the_spec() {
        let attachment = |aliases: &[&str], internal| NetworkAttachment {
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            internal,
        };
        let mut s = service();
        s.spec.networks = BTreeMap::from([
            ("front".to_string(), attachment(&["api", "svc"], false)),
            ("back".to_string(), attachment(&["svc", "backend"], true)),
        ]);
        let got = put(plan_endpoints(Some(&s), vec![], None));
        assert_eq!(got.networks, ["back", "front"]);
        assert_eq!(got.aliases, ["api", "backend", "svc"]);
        assert!(!got.internal, "front leads outside");
        s.spec.networks.remove("front");
        assert!(put(plan_endpoints(Some(&s), vec![], None)).internal);
    }
}
