//! Published-port conflicts, found at deploy time rather than when a node fails to bind.
//!
//! Every node listens on every published port (the routing mesh), so a published port belongs to
//! one service cluster-wide. The exception is HTTP ingress: services marked `x-hivemind.ingress`
//! may share a port, told apart by host and path.

use hivemind_types::{PortProtocol, Service, ServiceSpec};

use crate::error::ApiError;

/// Checks the services about to be deployed as app `app` against each other and against every
/// other app's services.
pub(crate) fn check_published_ports(
    new: &[(String, ServiceSpec)],
    existing: &[Service],
    namespace: &str,
    app: &str,
) -> Result<(), ApiError> {
    // (port, protocol) -> (owner label, shares via ingress)
    let mut taken: Vec<(u16, PortProtocol, String, bool)> = existing
        .iter()
        .filter(|s| !(s.namespace == namespace && s.app == app))
        .flat_map(|s| {
            let label = format!("{}/{} (namespace {})", s.app, s.name, s.namespace);
            let http = s.spec.hivemind.ingress.is_some();
            s.spec
                .ports
                .iter()
                .filter_map(move |p| Some((p.published?, p.protocol, label.clone(), http)))
        })
        .collect();
    for (service, spec) in new {
        let http = spec.hivemind.ingress.is_some();
        for (i, port) in spec.ports.iter().enumerate() {
            let Some(published) = port.published else {
                continue;
            };
            let clash = taken.iter().find(|(p, proto, _, shares)| {
                *p == published && *proto == port.protocol && !(http && *shares)
            });
            if let Some((_, _, owner, _)) = clash {
                return Err(ApiError::invalid(
                    format!("services.{service}.ports[{i}]"),
                    format!(
                        "services.{service}.ports[{i}]: port {published} is already published by {owner}"
                    ),
                    "publish another port, remove the other service, or give both services \
                     `x-hivemind.ingress` rules to share it by host and path",
                ));
            }
            taken.push((published, port.protocol, format!("{app}/{service}"), http));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hivemind_types::spec::IngressRule;
    use hivemind_types::{Meta, PortSpec};

    use super::*;

    fn spec(published: u16, ingress: bool) -> ServiceSpec {
        let mut s = ServiceSpec {
            image: "x".into(),
            ports: vec![PortSpec {
                target: 80,
                published: Some(published),
                host_ip: None,
                protocol: PortProtocol::Tcp,
            }],
            ..Default::default()
        };
        if ingress {
            s.hivemind.ingress = Some(IngressRule {
                host: Some("a.example".into()),
                path: "/".into(),
            });
        }
        s
    }

    fn service(app: &str, name: &str, spec: ServiceSpec) -> Service {
        Service {
            namespace: "default".into(),
            app: app.into(),
            name: name.into(),
            spec,
            vip: None,
            meta: Meta::default(),
        }
    }

    #[test]
    fn conflicts_table() {
        // (existing, new, ok?)
        let cases = [
            (
                vec![],
                vec![("web", spec(8080, false)), ("api", spec(8081, false))],
                true,
            ),
            (
                vec![],
                vec![("web", spec(8080, false)), ("api", spec(8080, false))],
                false,
            ),
            (
                vec![service("other", "web", spec(8080, false))],
                vec![("web", spec(8080, false))],
                false,
            ),
            // Re-deploying the same app is not a conflict with itself.
            (
                vec![service("shop", "web", spec(8080, false))],
                vec![("web", spec(8080, false))],
                true,
            ),
            (
                vec![service("other", "web", spec(8080, true))],
                vec![("web", spec(8080, true))],
                true,
            ),
            (
                vec![service("other", "web", spec(8080, true))],
                vec![("web", spec(8080, false))],
                false,
            ),
        ];
        for (i, (existing, new, ok)) in cases.into_iter().enumerate() {
            let new: Vec<(String, ServiceSpec)> =
                new.into_iter().map(|(n, s)| (n.to_string(), s)).collect();
            let got = check_published_ports(&new, &existing, "default", "shop");
            assert_eq!(got.is_ok(), ok, "case {i}: {got:?}");
        }
    }
}
