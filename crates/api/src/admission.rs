//! Admission caps: how much one request may ask of the cluster. Each cap is a documented
//! constant and its refusal is a 422 naming the key at fault and the fix, so that one request can
//! never cost the server (or every node) unbounded work, memory or file descriptors.
//!
//! Why these numbers:
//! - Every node listens on every published port (the routing mesh): each one costs every node a
//!   socket and the server nothing, so the cluster-wide count is also the per-node count. A
//!   published range of 25,000 ports exhausted the process's file descriptors (and did again at
//!   every restart, since the desired state stays); [`MAX_PUBLISHED_PORTS`] keeps the whole
//!   cluster's listeners well under a default `ulimit -n` of 65,536 even with UDP and TCP both.
//! - [`MAX_PORTS_PER_SERVICE`]: a range like `8000-8255` is the largest one service needs.
//! - [`MAX_SERVICES_PER_APP`]: one deploy is one store transaction; 1,000 services is far more
//!   than any Compose file holds and keeps one deploy's transaction and VIP allocation small.
//! - [`MAX_REPLICAS_PER_REPORT`], [`MAX_PROBLEMS_PER_REPORT`]: a report's work (status writes,
//!   events) is bounded; node problems become events, and the event store keeps 1,000, so one
//!   report could otherwise push every earlier event out.

use std::collections::HashSet;

use hivemind_types::{NodeReport, PortProtocol, ServiceSpec};

use crate::error::ApiError;

/// Published ports one service may have.
pub const MAX_PORTS_PER_SERVICE: usize = 256;
/// Published ports (TCP and UDP counted apart) in the whole cluster, i.e. on every node.
pub const MAX_PUBLISHED_PORTS: usize = 4_096;
/// Services one app (one deploy) may have.
pub const MAX_SERVICES_PER_APP: usize = 1_000;
/// Observed replicas one node report may carry (far above what one host runs).
pub const MAX_REPLICAS_PER_REPORT: usize = 20_000;
/// Node problems one report may carry.
pub const MAX_PROBLEMS_PER_REPORT: usize = 100;

/// A published port and its protocol as a map key (`PortProtocol` is not `Hash`).
pub(crate) type PortKey = (u16, bool);

pub(crate) fn port_key(port: u16, protocol: PortProtocol) -> PortKey {
    (port, protocol == PortProtocol::Udp)
}

/// Checks the size of an app about to be deployed: services, and published ports per service.
/// `other_published` is how many ports the cluster's other apps publish (distinct port and
/// protocol).
pub(crate) fn check_app(
    services: &[(String, ServiceSpec)],
    other_published: usize,
) -> Result<(), ApiError> {
    if services.len() > MAX_SERVICES_PER_APP {
        return Err(ApiError::invalid(
            "services",
            format!(
                "services: {} services is more than the {MAX_SERVICES_PER_APP} one app may have",
                services.len()
            ),
            format!("split the file into apps of at most {MAX_SERVICES_PER_APP} services"),
        ));
    }
    let mut total: HashSet<PortKey> = HashSet::new();
    for (name, spec) in services {
        let published = spec.ports.iter().filter(|p| p.published.is_some()).count();
        if published > MAX_PORTS_PER_SERVICE {
            return Err(ApiError::invalid(
                format!("services.{name}.ports"),
                format!(
                    "services.{name}.ports: {published} published ports is more than the \
                     {MAX_PORTS_PER_SERVICE} one service may publish"
                ),
                format!(
                    "publish at most {MAX_PORTS_PER_SERVICE} ports (every node opens each one); \
                     use `expose` or an ingress rule for the rest"
                ),
            ));
        }
        for p in &spec.ports {
            if let Some(port) = p.published {
                total.insert(port_key(port, p.protocol));
            }
        }
    }
    let cluster = total.len().saturating_add(other_published);
    if cluster > MAX_PUBLISHED_PORTS {
        return Err(ApiError::invalid(
            "services",
            format!(
                "services: this deploy would publish {cluster} ports in the cluster, more than \
                 the {MAX_PUBLISHED_PORTS} every node can open"
            ),
            "publish fewer ports (share one through `x-hivemind.ingress` rules), or remove apps \
             you no longer need",
        ));
    }
    Ok(())
}

/// Checks the size of a node report.
pub(crate) fn check_report(report: &NodeReport) -> Result<(), ApiError> {
    if report.replicas.len() > MAX_REPLICAS_PER_REPORT {
        return Err(ApiError::invalid(
            "replicas",
            format!(
                "replicas: {} observed replicas is more than the {MAX_REPLICAS_PER_REPORT} one \
                 report may carry",
                report.replicas.len()
            ),
            format!("report at most {MAX_REPLICAS_PER_REPORT} replicas per node"),
        ));
    }
    if report.problems.len() > MAX_PROBLEMS_PER_REPORT {
        return Err(ApiError::invalid(
            "problems",
            format!(
                "problems: {} node problems is more than the {MAX_PROBLEMS_PER_REPORT} one report \
                 may carry",
                report.problems.len()
            ),
            format!(
                "report at most {MAX_PROBLEMS_PER_REPORT} problems (the most important first) and \
                 summarize the rest in one"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hivemind_types::{NodeProblem, PortSpec};

    use super::*;

    fn ports(range: std::ops::Range<u32>) -> ServiceSpec {
        ServiceSpec {
            image: "x".into(),
            ports: range
                .map(|p| PortSpec {
                    target: 80,
                    published: Some(p as u16),
                    host_ip: None,
                    protocol: PortProtocol::Tcp,
                })
                .collect(),
            ..Default::default()
        }
    }

    fn field(r: Result<(), ApiError>) -> Option<String> {
        r.err().map(|e| {
            assert_eq!(e.status(), 422, "{e}");
            e.field().unwrap_or_default().to_string()
        })
    }

    #[test]
    fn deploy_publishing_25000_ports_is_refused_at_admission() {
        // One service with a 25,000-port range.
        let one = vec![("web".to_string(), ports(30_000..55_000))];
        assert_eq!(field(check_app(&one, 0)), Some("services.web.ports".into()));
        // Many services each under the per-service cap, over the cluster's.
        let many: Vec<_> = (0..100u32)
            .map(|i| {
                (
                    format!("s{i}"),
                    ports(10_000 + i * 250..10_000 + (i + 1) * 250),
                )
            })
            .collect();
        assert_eq!(field(check_app(&many, 0)), Some("services".into()));
        // Ports other apps publish count too.
        let small = vec![("web".to_string(), ports(8000..8010))];
        assert_eq!(field(check_app(&small, 0)), None);
        assert_eq!(
            field(check_app(&small, MAX_PUBLISHED_PORTS - 5)),
            Some("services".into())
        );
        // The caps themselves are allowed.
        let at_cap = vec![(
            "web".to_string(),
            ports(8000..8000 + MAX_PORTS_PER_SERVICE as u32),
        )];
        assert_eq!(field(check_app(&at_cap, 0)), None);
    }

    #[test]
    fn deploy_of_10000_services_is_refused_at_admission() {
        let services: Vec<_> = (0..10_000)
            .map(|i| (format!("s{i}"), ServiceSpec::default()))
            .collect();
        assert_eq!(field(check_app(&services, 0)), Some("services".into()));
        assert_eq!(field(check_app(&services[..MAX_SERVICES_PER_APP], 0)), None);
    }

    #[test]
    fn report_with_5000_node_problems_is_refused_at_admission() {
        let mut report = NodeReport {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            agent_url: None,
            generation: 1,
            replicas: Vec::new(),
            problems: (0..5_000)
                .map(|i| NodeProblem {
                    reason: "PortUnavailable".into(),
                    message: format!("port {i}"),
                })
                .collect(),
        };
        assert_eq!(field(check_report(&report)), Some("problems".into()));
        report.problems.truncate(MAX_PROBLEMS_PER_REPORT);
        assert_eq!(field(check_report(&report)), None);
    }
}
