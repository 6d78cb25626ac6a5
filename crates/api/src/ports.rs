//! Published-port conflicts, found at deploy time rather than when a node fails to bind.
//!
//! Every node listens on every published port (the routing mesh), so a published port belongs to
//! one service cluster-wide. The exception is HTTP ingress: services marked `x-hivemind.ingress`
//! may share a port, told apart by host and path.

use std::collections::HashMap;

use hivemind_types::{Service, ServiceSpec};

use crate::admission::{port_key, PortKey};
use crate::error::ApiError;

/// Who holds a published port: the first owner's label, and whether every owner serves it as
/// HTTP ingress (then more ingress services may share it).
struct Holder {
    owner: String,
    shared: bool,
}

/// Checks the services about to be deployed as app `app` against each other and against every
/// other app's services, and the admission caps on ports and services
/// ([`crate::admission::check_app`]). One map lookup per port: a deploy publishing thousands of
/// ports must not cost their square.
pub(crate) fn check_published_ports(
    new: &[(String, ServiceSpec)],
    existing: &[Service],
    namespace: &str,
    app: &str,
) -> Result<(), ApiError> {
    let mut taken: HashMap<PortKey, Holder> = HashMap::new();
    for s in existing
        .iter()
        .filter(|s| !(s.namespace == namespace && s.app == app))
    {
        let http = s.spec.hivemind.ingress.is_some();
        for p in &s.spec.ports {
            let Some(published) = p.published else {
                continue;
            };
            taken
                .entry(port_key(published, p.protocol))
                .and_modify(|h| h.shared &= http)
                .or_insert_with(|| Holder {
                    owner: format!("{}/{} (namespace {})", s.app, s.name, s.namespace),
                    shared: http,
                });
        }
    }
    crate::admission::check_app(new, taken.len())?;
    for (service, spec) in new {
        let http = spec.hivemind.ingress.is_some();
        for (i, port) in spec.ports.iter().enumerate() {
            let Some(published) = port.published else {
                continue;
            };
            match taken.get_mut(&port_key(published, port.protocol)) {
                Some(holder) if http && holder.shared => {}
                Some(holder) => {
                    return Err(ApiError::invalid(
                        format!("services.{service}.ports[{i}]"),
                        format!(
                            "services.{service}.ports[{i}]: port {published} is already published by {}",
                            holder.owner
                        ),
                        "publish another port, remove the other service, or give both services \
                         `x-hivemind.ingress` rules to share it by host and path",
                    ));
                }
                None => {
                    taken.insert(
                        port_key(published, port.protocol),
                        Holder {
                            owner: format!("{app}/{service}"),
                            shared: http,
                        },
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hivemind_types::spec::IngressRule;
    use hivemind_types::{Meta, PortProtocol, PortSpec};

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
