//! A service spec split in two: the container template, whose hash is the revision and decides
//! when replicas are replaced (their containers restarted), and the routing, which the data
//! plane applies to running replicas without touching their containers.
//!
//! The rule deciding which side a field is on: a replica keeps the copy of the spec it was
//! created with, and the agent reads only that copy for its container (image, process, mounts,
//! limits, restart and stop behaviour). Anything read from there is template. Routing reaches the
//! agents through the service's `Endpoints` object instead (written by the endpoints controller
//! from the current service), so a change to it is in every node's next assignment while the
//! replicas stay as they are.
//!
//! [`ServiceSpec::split`] names every field without `..`, so a new field does not compile until
//! it is put on one side; the golden test below fails when a hashed field changes by accident.

use std::collections::BTreeMap;

use crate::spec::{HivemindExt, IngressRule, NetworkAttachment, PortSpec, ServiceSpec};

/// What the data plane needs of a service: applied without restarting its containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// Container ports (VIP rules, DNS SRV) and published ports (the ingress listeners).
    pub ports: Vec<PortSpec>,
    /// App network memberships, aliases and `internal` (nftables sets, the DNS zone).
    pub networks: BTreeMap<String, NetworkAttachment>,
    /// `x-hivemind.ingress`: the HTTP host/path rule on the published port.
    pub ingress: Option<IngressRule>,
    /// `x-hivemind.proxy_protocol`.
    pub proxy_protocol: bool,
    /// `x-hivemind.strategy` (not acted on yet: see `compose::warnings`).
    pub strategy: Option<String>,
    /// `x-hivemind.allow_from` (not acted on yet: see `compose::warnings`).
    pub allow_from: Option<Vec<String>>,
}

impl ServiceSpec {
    /// The container template (the spec with the routing and the replica count left at their
    /// defaults) and the routing.
    ///
    /// The replica count is on neither side: scaling keeps the replicas that exist. Nor is
    /// `depends_on`: it orders creations and starts, and a change to it replaces nothing.
    pub fn split(&self) -> (ServiceSpec, Routing) {
        // Every field by name, on purpose (see the module comment).
        let ServiceSpec {
            image,
            command,
            entrypoint,
            environment,
            labels,
            ports,
            mode,
            replicas: _,
            restart,
            stop_signal,
            stop_grace_period_ms,
            user,
            working_dir,
            hivemind,
            pull_policy,
            networks,
            resources,
            read_only,
            cap_add,
            cap_drop,
            tmpfs,
            ulimits,
            init,
            hostname,
            extra_hosts,
            logging,
            healthcheck,
            secrets,
            configs,
            depends_on: _,
            stopped: _,
            volumes,
        } = self.clone();
        let HivemindExt {
            strategy,
            ingress,
            allow_from,
            proxy_protocol,
        } = hivemind;
        let template = ServiceSpec {
            image,
            command,
            entrypoint,
            environment,
            labels,
            ports: Vec::new(),
            mode,
            replicas: 0,
            restart,
            stop_signal,
            stop_grace_period_ms,
            user,
            working_dir,
            hivemind: HivemindExt::default(),
            pull_policy,
            networks: BTreeMap::new(),
            resources,
            read_only,
            cap_add,
            cap_drop,
            tmpfs,
            ulimits,
            init,
            hostname,
            extra_hosts,
            logging,
            healthcheck,
            secrets,
            configs,
            depends_on: Default::default(),
            stopped: false,
            volumes,
        };
        let routing = Routing {
            ports,
            networks,
            ingress,
            proxy_protocol,
            strategy,
            allow_from,
        };
        (template, routing)
    }

    /// The container template: what replicas are created from (see [`ServiceSpec::split`]).
    pub fn template(&self) -> ServiceSpec {
        self.split().0
    }

    /// The routing: what the data plane applies without restarts (see [`ServiceSpec::split`]).
    pub fn routing(&self) -> Routing {
        self.split().1
    }

    /// A stable content hash of the container template: two specs with the same hash run the
    /// same containers, and a changed hash replaces the replicas. It names a revision (SPEC §1).
    ///
    /// Routing fields are cleared rather than dropped from the JSON, so a spec without routing
    /// hashes exactly as it did when the hash covered the whole spec: upgrading does not restart
    /// such services.
    pub fn revision_hash(&self) -> String {
        let json = serde_json::to_vec(&self.template()).expect("spec serializes");
        // FNV-1a 64: stable across builds and platforms, unlike std's SipHash with random keys.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")[..10].to_string()
    }
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
