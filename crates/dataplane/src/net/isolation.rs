//! The forward-path rules that keep Compose networks apart on the flat cluster network, as
//! part of the `nft` document.
//!
//! Per app, a named set of its member replicas and one set per network. A packet whose source
//! belongs to an app jumps (through a verdict map on the source address) to that app's chain,
//! which returns at once if source and destination share a network of the app and otherwise
//! rejects it if the destination belongs to the same app. So traffic between different apps,
//! and to or from the host or the outside, is left alone (cross-app policy is a later feature).
//! VIPs need nothing special: DNAT happens before the forward hook, so the check sees the real
//! replica, and a replica reaching itself through its VIP shares all its networks with itself.
//!
//! Replicas whose networks are all `internal` are rejected when they send to anything outside
//! the cluster CIDR. Both checks apply to replica-to-replica traffic on one node only when
//! bridged traffic passes netfilter (`bridge-nf-call-iptables = 1`, see `NodeNet::apply_rules`);
//! routed traffic (VIPs, other nodes, the outside) is always checked.
//!
//! This module only adds rules and sets to the document it is given; it runs nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::nft::{matches, payload, prefix, Doc, TableParams, FAMILY};
use super::NetRules;

/// Set of the replicas with no route out of the cluster.
const INTERNAL_SET: &str = "internal-only";

/// Administratively prohibited: the sender learns at once instead of waiting for a timeout.
fn reject() -> Value {
    json!({"reject": {"type": "icmpx", "expr": "admin-prohibited"}})
}

fn set_ref(name: &str) -> Value {
    json!(format!("@{name}"))
}

fn add_set(doc: &mut Doc<'_>, name: &str, members: &BTreeSet<Ipv4Addr>) {
    let mut set = json!({
        "family": FAMILY, "table": doc.table, "name": name, "type": "ipv4_addr",
    });
    // nft refuses an empty element list; an empty set is simply one without `elem`.
    if !members.is_empty() {
        set["elem"] = json!(members.iter().map(|ip| ip.to_string()).collect::<Vec<_>>());
    }
    doc.commands.push(json!({"add": {"set": set}}));
}

/// Adds the sets, per-app chains and `forward` rules for `rules.networks` and
/// `rules.isolated`. Apps are numbered in `app_key` order, so the document is deterministic;
/// names stay short because set names are limited in older kernels.
pub(super) fn forward_rules(doc: &mut Doc<'_>, params: &TableParams<'_>, rules: &NetRules) {
    let isolated: BTreeSet<Ipv4Addr> = rules.isolated.iter().copied().collect();
    if !isolated.is_empty() {
        add_set(doc, INTERNAL_SET, &isolated);
        doc.rule(
            "forward",
            vec![
                matches("==", payload("ip", "saddr"), set_ref(INTERNAL_SET)),
                matches("!=", payload("ip", "daddr"), prefix(params.cluster_cidr)),
                reject(),
            ],
        );
    }

    // app key → network name → members.
    let mut apps: BTreeMap<&str, BTreeMap<&str, BTreeSet<Ipv4Addr>>> = BTreeMap::new();
    for network in &rules.networks {
        apps.entry(&network.app_key)
            .or_default()
            .entry(&network.name)
            .or_default()
            .extend(&network.members);
    }
    let mut jumps: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for (i, networks) in apps.values().enumerate() {
        let chain = format!("app{i}");
        let members_set = format!("app{i}-members");
        let members: BTreeSet<Ipv4Addr> = networks.values().flatten().copied().collect();
        if members.is_empty() {
            continue;
        }
        add_set(doc, &members_set, &members);
        doc.chain(&chain, None);
        for (name, net_members) in networks {
            if net_members.is_empty() {
                continue;
            }
            let set = format!("app{i}-net-{name}");
            add_set(doc, &set, net_members);
            doc.rule(
                &chain,
                vec![
                    matches("==", payload("ip", "saddr"), set_ref(&set)),
                    matches("==", payload("ip", "daddr"), set_ref(&set)),
                    json!({"return": null}),
                ],
            );
        }
        doc.rule(
            &chain,
            vec![
                matches("==", payload("ip", "daddr"), set_ref(&members_set)),
                reject(),
            ],
        );
        for ip in members {
            // An address in two apps would be an IPAM bug; the first app keeps it rather than
            // the whole table failing on a duplicate map key.
            jumps.entry(ip).or_insert_with(|| chain.clone());
        }
    }
    if !jumps.is_empty() {
        let elements: Vec<Value> = jumps
            .iter()
            .map(|(ip, chain)| json!([ip.to_string(), {"jump": {"target": chain}}]))
            .collect();
        doc.rule(
            "forward",
            vec![json!({"vmap": {"key": payload("ip", "saddr"), "data": {"set": elements}}})],
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::net::nft::table_document;
    use crate::net::nft::tests::{params, rules_of};
    use crate::net::NetworkRule;

    fn network(app: &str, name: &str, members: &[&str]) -> NetworkRule {
        NetworkRule {
            app_key: app.into(),
            name: name.into(),
            members: members.iter().map(|m| m.parse().unwrap()).collect(),
        }
    }

    /// The named sets of the document: name → elements.
    fn sets(doc: &Value) -> BTreeMap<String, Value> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("add").and_then(|a| a.get("set")))
            .map(|s| (s["name"].as_str().unwrap().to_string(), s["elem"].clone()))
            .collect()
    }

    fn saddr_in(set: &str) -> Value {
        matches("==", payload("ip", "saddr"), json!(format!("@{set}")))
    }

    fn daddr_in(set: &str) -> Value {
        matches("==", payload("ip", "daddr"), json!(format!("@{set}")))
    }

    #[test]
    fn networks_of_one_app_share_a_chain_and_apps_stay_apart() {
        let rules = NetRules {
            networks: vec![
                network("default/shop", "front", &["10.42.3.2", "10.42.3.3"]),
                network("default/shop", "back", &["10.42.3.3", "10.42.3.4"]),
                network("default/blog", "default", &["10.42.3.9"]),
                network("default/blog", "empty", &[]),
            ],
            ..NetRules::default()
        };
        let doc = table_document(&params(true), &rules);
        let sets = sets(&doc);
        assert_eq!(
            sets,
            BTreeMap::from([
                ("app0-members".to_string(), json!(["10.42.3.9"])),
                ("app0-net-default".to_string(), json!(["10.42.3.9"])),
                (
                    "app1-members".to_string(),
                    json!(["10.42.3.2", "10.42.3.3", "10.42.3.4"])
                ),
                (
                    "app1-net-back".to_string(),
                    json!(["10.42.3.3", "10.42.3.4"])
                ),
                (
                    "app1-net-front".to_string(),
                    json!(["10.42.3.2", "10.42.3.3"])
                ),
            ]),
            "apps in key order (blog before shop); empty networks get nothing"
        );
        assert_eq!(
            rules_of(&doc, "app1"),
            vec![
                json!([saddr_in("app1-net-back"), daddr_in("app1-net-back"), {"return": null}]),
                json!([saddr_in("app1-net-front"), daddr_in("app1-net-front"), {"return": null}]),
                json!([daddr_in("app1-members"), reject()]),
            ]
        );
        let forward = rules_of(&doc, "forward");
        let jump = |ip: &str, chain: &str| json!([ip, {"jump": {"target": chain}}]);
        assert_eq!(
            forward[0],
            json!([{"vmap": {"key": payload("ip", "saddr"), "data": {"set": [
                jump("10.42.3.2", "app1"),
                jump("10.42.3.3", "app1"),
                jump("10.42.3.4", "app1"),
                jump("10.42.3.9", "app0"),
            ]}}}]),
            "checked before the established accept"
        );
        assert_eq!(
            forward[1][0]["match"]["left"],
            json!({"ct": {"key": "state"}})
        );
    }

    #[test]
    fn internal_replicas_get_no_route_out() {
        let rules = NetRules {
            isolated: vec!["10.42.3.5".parse().unwrap()],
            ..NetRules::default()
        };
        let doc = table_document(&params(true), &rules);
        assert_eq!(sets(&doc)["internal-only"], json!(["10.42.3.5"]));
        assert_eq!(
            rules_of(&doc, "forward")[0],
            json!([
                saddr_in("internal-only"),
                {"match": {"op": "!=", "left": payload("ip", "daddr"),
                    "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
                reject(),
            ])
        );
    }

    #[test]
    fn no_networks_no_sets_or_chains() {
        let doc = table_document(&params(true), &NetRules::default());
        assert!(sets(&doc).is_empty());
        assert!(rules_of(&doc, "app0").is_empty());
    }
}
