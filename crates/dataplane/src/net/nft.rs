//! The node's nftables table as one JSON document for `nft -j -f -`, and the `nft` call.
//!
//! The builder is pure (tested by comparing JSON); [`run`] is the only effect. Every change
//! replaces the whole `inet <table>` in one transaction ("add, delete, add" so the delete
//! cannot fail on a missing table) and never names any other table. The model is
//! kube-proxy's nftables mode: a verdict map from `VIP . protocol . port` to one chain per
//! service, and `numgen random` over a map of backends for an equal spread.

use std::net::Ipv4Addr;
use std::process::Stdio;

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::{isolation, NetError, NetRules, Proto, VipRule};

/// Everything the table depends on besides the VIP rules.
#[derive(Debug, Clone)]
pub(crate) struct TableParams<'a> {
    pub(crate) table: &'a str,
    pub(crate) bridge: &'a str,
    /// This node's replica subnet.
    pub(crate) subnet: Ipv4Net,
    pub(crate) cluster_cidr: Ipv4Net,
    /// With `bridge-nf-call-iptables` on, replies between two replicas on the bridge pass
    /// conntrack, so only true hairpin flows (a replica reaching itself through a VIP) need
    /// masquerading. Without it those replies would skip the reverse NAT, so every DNATed flow
    /// inside the subnet is masqueraded instead (the replica then sees the gateway as client).
    pub(crate) br_netfilter: bool,
}

pub(super) const FAMILY: &str = "inet";

pub(super) fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

pub(super) fn matches(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

pub(super) fn prefix(net: Ipv4Net) -> Value {
    json!({"prefix": {"addr": net.network().to_string(), "len": net.prefix_len()}})
}

/// `ip daddr . meta l4proto . th dport`: the key services are looked up by.
fn service_key() -> Value {
    json!({"concat": [payload("ip", "daddr"), meta("l4proto"), payload("th", "dport")]})
}

fn service_element(rule: &VipRule) -> Value {
    json!({"concat": [rule.vip.to_string(), rule.protocol.as_str(), rule.port]})
}

/// Chain name for one service; readable in `nft list ruleset`.
pub(crate) fn service_chain(rule: &VipRule) -> String {
    let vip = rule.vip.to_string().replace('.', "-");
    format!("svc-{vip}-{}-{}", rule.protocol.as_str(), rule.port)
}

pub(super) struct Doc<'a> {
    pub(super) table: &'a str,
    pub(super) commands: Vec<Value>,
}

impl Doc<'_> {
    pub(super) fn chain(&mut self, name: &str, base: Option<(&str, &str, i32)>) {
        let mut chain = json!({"family": FAMILY, "table": self.table, "name": name});
        if let Some((kind, hook, prio)) = base {
            chain["type"] = json!(kind);
            chain["hook"] = json!(hook);
            chain["prio"] = json!(prio);
            chain["policy"] = json!("accept");
        }
        self.commands.push(json!({"add": {"chain": chain}}));
    }

    pub(super) fn rule(&mut self, chain: &str, expr: Vec<Value>) {
        self.commands.push(json!({"add": {"rule": {
            "family": FAMILY, "table": self.table, "chain": chain, "expr": expr
        }}}));
    }
}

fn table_object(table: &str) -> Value {
    json!({"table": {"family": FAMILY, "name": table}})
}

fn document(commands: Vec<Value>) -> Value {
    json!({"nftables": commands})
}

/// Removes the table if present (adding it first makes the delete unconditional).
pub(crate) fn delete_document(table: &str) -> Value {
    document(vec![
        json!({"add": table_object(table)}),
        json!({"delete": table_object(table)}),
    ])
}

/// The whole table for `rules`, replacing any previous version atomically.
pub(crate) fn table_document(params: &TableParams<'_>, rules: &NetRules) -> Value {
    let t = params.table;
    let mut doc = Doc {
        table: t,
        commands: vec![
            json!({"add": table_object(t)}),
            json!({"delete": table_object(t)}),
            json!({"add": table_object(t)}),
        ],
    };
    // Priorities: filter - 1 so our accepts come before a default "filter" chain; dstnat and
    // srcnat are the standard NAT priorities.
    doc.chain("forward", Some(("filter", "forward", -1)));
    doc.chain("output", Some(("filter", "output", -1)));
    doc.chain("nat-prerouting", Some(("nat", "prerouting", -100)));
    doc.chain("nat-output", Some(("nat", "output", -100)));
    doc.chain("nat-postrouting", Some(("nat", "postrouting", 100)));
    doc.chain("services", None);

    let mut with_backends: Vec<&VipRule> = rules
        .vips
        .iter()
        .filter(|r| !r.backends.is_empty())
        .collect();
    with_backends.sort_by_key(|r| (r.vip, r.protocol, r.port));
    let mut empty: Vec<&VipRule> = rules
        .vips
        .iter()
        .filter(|r| r.backends.is_empty())
        .collect();
    empty.sort_by_key(|r| (r.vip, r.protocol, r.port));

    // A VIP without backends is refused at once (TCP reset, ICMP port unreachable for UDP)
    // instead of timing out. These come first in the filter chains: a bridge accept below
    // would otherwise let the connection attempt through to nowhere.
    for chain in ["forward", "output"] {
        for proto in [Proto::Tcp, Proto::Udp] {
            let elements: Vec<Value> = empty
                .iter()
                .filter(|r| r.protocol == proto)
                .map(|r| service_element(r))
                .collect();
            if elements.is_empty() {
                continue;
            }
            let reject = match proto {
                Proto::Tcp => json!({"reject": {"type": "tcp reset"}}),
                Proto::Udp => json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}}),
            };
            doc.rule(
                chain,
                vec![
                    matches("==", meta("l4proto"), json!(proto.as_str())),
                    matches("==", service_key(), json!({"set": elements})),
                    reject,
                ],
            );
        }
    }

    // App networks and internal networks: checked on every packet, before the accept of
    // established flows, so that a network change also cuts connections already open.
    isolation::forward_rules(&mut doc, params, rules);

    // Explicit accepts for the bridge: with bridge-nf-call-iptables = 1 bridged traffic
    // passes the forward hook. An accept ends only this base chain, so a drop policy in
    // another table's forward chain (Docker's iptables FORWARD) would still drop the packet;
    // `foreign` adds the matching accepts there, which this module never touches.
    doc.rule(
        "forward",
        vec![
            matches(
                "in",
                json!({"ct": {"key": "state"}}),
                json!(["established", "related"]),
            ),
            json!({"accept": null}),
        ],
    );
    for dir in ["iifname", "oifname"] {
        doc.rule(
            "forward",
            vec![
                matches("==", meta(dir), json!(params.bridge)),
                json!({"accept": null}),
            ],
        );
    }

    // Services: one verdict map lookup, then the service's own chain. The chains must exist
    // before the map that jumps to them.
    for rule in &with_backends {
        doc.chain(&service_chain(rule), None);
    }
    doc.rule(
        "nat-prerouting",
        vec![json!({"jump": {"target": "services"}})],
    );
    doc.rule("nat-output", vec![json!({"jump": {"target": "services"}})]);
    if !with_backends.is_empty() {
        let elements: Vec<Value> = with_backends
            .iter()
            .map(|r| json!([service_element(r), {"goto": {"target": service_chain(r)}}]))
            .collect();
        doc.rule(
            "services",
            vec![json!({"vmap": {"key": service_key(), "data": {"set": elements}}})],
        );
    }
    for rule in &with_backends {
        let chain = service_chain(rule);
        let backends: Vec<Value> = rule
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| json!([i, b.to_string()]))
            .collect();
        let pick = json!({"map": {
            "key": {"numgen": {"mode": "random", "mod": rule.backends.len(), "offset": 0}},
            "data": {"set": backends},
        }});
        doc.rule(
            &chain,
            vec![
                // nft wants the transport protocol pinned before a DNAT that rewrites ports.
                matches("==", meta("l4proto"), json!(rule.protocol.as_str())),
                json!({"dnat": {"family": "ip", "addr": pick, "port": rule.target_port}}),
            ],
        );
    }

    // Hairpin: a replica that reached itself through a VIP must see the reply come from the
    // VIP, which only happens if the flow is masqueraded (source becomes the gateway).
    let dnat = matches("in", json!({"ct": {"key": "status"}}), json!("dnat"));
    if params.br_netfilter {
        let mut selves: Vec<Ipv4Addr> = with_backends
            .iter()
            .flat_map(|r| r.backends.iter().copied())
            .filter(|b| params.subnet.contains(b))
            .collect();
        selves.sort();
        selves.dedup();
        if !selves.is_empty() {
            let pairs: Vec<Value> = selves
                .iter()
                .map(|ip| json!({"concat": [ip.to_string(), ip.to_string()]}))
                .collect();
            let key = json!({"concat": [payload("ip", "saddr"), payload("ip", "daddr")]});
            doc.rule(
                "nat-postrouting",
                vec![
                    dnat,
                    matches("==", key, json!({"set": pairs})),
                    json!({"masquerade": null}),
                ],
            );
        }
    } else {
        doc.rule(
            "nat-postrouting",
            vec![
                dnat,
                matches("==", payload("ip", "saddr"), prefix(params.subnet)),
                matches("==", payload("ip", "daddr"), prefix(params.subnet)),
                json!({"masquerade": null}),
            ],
        );
    }
    // Outbound NAT: replica traffic leaving the cluster network takes the node's address.
    doc.rule(
        "nat-postrouting",
        vec![
            matches("==", payload("ip", "saddr"), prefix(params.cluster_cidr)),
            matches("!=", payload("ip", "daddr"), prefix(params.cluster_cidr)),
            json!({"masquerade": null}),
        ],
    );
    document(doc.commands)
}

/// Runs `nft -j -f -` with the document on stdin.
pub(crate) async fn run(doc: &Value, op: &str) -> Result<(), NetError> {
    let out = nft_with_stdin(&["-j", "-f", "-"], doc.to_string().as_bytes(), op).await?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft {
            op: op.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether `inet <table>` exists.
pub(crate) async fn table_exists(table: &str) -> Result<bool, NetError> {
    let op = format!("look up nftables table inet {table}");
    let out = nft_with_stdin(&["-j", "list", "table", FAMILY, table], b"", &op).await?;
    Ok(out.status.success())
}

pub(super) async fn nft_with_stdin(
    args: &[&str],
    stdin: &[u8],
    op: &str,
) -> Result<std::process::Output, NetError> {
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NetError::NftMissing,
            _ => NetError::io(op.to_string(), e),
        })?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin)
        .await
        .map_err(|e| NetError::io(op.to_string(), e))?;
    drop(pipe);
    child
        .wait_with_output()
        .await
        .map_err(|e| NetError::io(op.to_string(), e))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::net) fn params(br_netfilter: bool) -> TableParams<'static> {
        TableParams {
            table: "hivemind",
            bridge: "hm0",
            subnet: "10.42.3.0/24".parse().unwrap(),
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            br_netfilter,
        }
    }

    fn vip(vip: &str, protocol: Proto, port: u16, backends: &[&str]) -> VipRule {
        VipRule {
            vip: vip.parse().unwrap(),
            protocol,
            port,
            target_port: 8080,
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        }
    }

    /// The rules of one chain, as their expression lists.
    pub(in crate::net) fn rules_of(doc: &Value, chain: &str) -> Vec<Value> {
        doc["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("add").and_then(|a| a.get("rule")))
            .filter(|r| r["chain"] == chain)
            .map(|r| r["expr"].clone())
            .collect()
    }

    #[test]
    fn replaces_only_its_own_table() {
        let doc = table_document(&params(true), &NetRules::default());
        let cmds = doc["nftables"].as_array().unwrap();
        let t = json!({"table": {"family": "inet", "name": "hivemind"}});
        assert_eq!(cmds[0], json!({"add": t}));
        assert_eq!(cmds[1], json!({"delete": t}));
        assert_eq!(cmds[2], json!({"add": t}));
        for cmd in &cmds[3..] {
            let obj = cmd["add"].as_object().unwrap().values().next().unwrap();
            assert_eq!(obj["table"], "hivemind", "{cmd}");
            assert_eq!(obj["family"], "inet", "{cmd}");
        }
        assert_eq!(
            delete_document("x"),
            json!({"nftables": [
                {"add": {"table": {"family": "inet", "name": "x"}}},
                {"delete": {"table": {"family": "inet", "name": "x"}}},
            ]})
        );
    }

    #[test]
    fn forward_accepts_the_bridge_and_masquerades_outbound() {
        let doc = table_document(&params(true), &NetRules::default());
        assert_eq!(
            rules_of(&doc, "forward"),
            vec![
                json!([{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]),
                json!([{"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "hm0"}}, {"accept": null}]),
                json!([{"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "hm0"}}, {"accept": null}]),
            ]
        );
        assert_eq!(
            rules_of(&doc, "nat-postrouting"),
            vec![json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
                {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.42.0.0", "len": 16}}}},
                {"masquerade": null},
            ])]
        );
        // No services: no lookup rule (an empty anonymous set is invalid).
        assert!(rules_of(&doc, "services").is_empty());
    }

    #[test]
    fn vip_spreads_over_backends_with_numgen() {
        let rules = NetRules {
            vips: vec![vip(
                "10.43.0.10",
                Proto::Tcp,
                80,
                &["10.42.3.2", "10.42.3.3"],
            )],
            ..NetRules::default()
        };
        let doc = table_document(&params(true), &rules);
        assert_eq!(
            rules_of(&doc, "services"),
            vec![json!([{"vmap": {
                "key": {"concat": [
                    {"payload": {"protocol": "ip", "field": "daddr"}},
                    {"meta": {"key": "l4proto"}},
                    {"payload": {"protocol": "th", "field": "dport"}},
                ]},
                "data": {"set": [[{"concat": ["10.43.0.10", "tcp", 80]}, {"goto": {"target": "svc-10-43-0-10-tcp-80"}}]]},
            }}])]
        );
        assert_eq!(
            rules_of(&doc, "svc-10-43-0-10-tcp-80"),
            vec![json!([
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                {"dnat": {"family": "ip", "port": 8080, "addr": {"map": {
                    "key": {"numgen": {"mode": "random", "mod": 2, "offset": 0}},
                    "data": {"set": [[0, "10.42.3.2"], [1, "10.42.3.3"]]},
                }}}},
            ])]
        );
        // Hairpin masquerade for exactly the backends that could reach themselves.
        assert_eq!(
            rules_of(&doc, "nat-postrouting")[0],
            json!([
                {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
                {"match": {"op": "==",
                    "left": {"concat": [{"payload": {"protocol": "ip", "field": "saddr"}}, {"payload": {"protocol": "ip", "field": "daddr"}}]},
                    "right": {"set": [{"concat": ["10.42.3.2", "10.42.3.2"]}, {"concat": ["10.42.3.3", "10.42.3.3"]}]}}},
                {"masquerade": null},
            ])
        );
    }

    #[test]
    fn vip_without_backends_is_rejected_before_the_bridge_accepts() {
        let rules = NetRules {
            vips: vec![
                vip("10.43.0.11", Proto::Tcp, 81, &[]),
                vip("10.43.0.12", Proto::Udp, 53, &[]),
            ],
            ..NetRules::default()
        };
        let doc = table_document(&params(true), &rules);
        for chain in ["forward", "output"] {
            let rules = rules_of(&doc, chain);
            assert_eq!(
                rules[0],
                json!([
                    {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                    {"match": {"op": "==", "left": service_key(), "right": {"set": [{"concat": ["10.43.0.11", "tcp", 81]}]}}},
                    {"reject": {"type": "tcp reset"}},
                ])
            );
            assert_eq!(
                rules[1][2],
                json!({"reject": {"type": "icmpx", "expr": "port-unreachable"}})
            );
        }
        assert!(rules_of(&doc, "services").is_empty());
    }

    #[test]
    fn without_br_netfilter_all_dnat_inside_the_subnet_is_masqueraded() {
        let rules = NetRules {
            vips: vec![vip("10.43.0.10", Proto::Udp, 53, &["10.42.3.2"])],
            ..NetRules::default()
        };
        let doc = table_document(&params(false), &rules);
        assert_eq!(
            rules_of(&doc, "nat-postrouting")[0],
            json!([
                {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "10.42.3.0", "len": 24}}}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.42.3.0", "len": 24}}}},
                {"masquerade": null},
            ])
        );
    }

    #[test]
    fn output_is_deterministic_whatever_the_input_order() {
        let a = vip("10.43.0.1", Proto::Tcp, 80, &["10.42.3.2"]);
        let b = vip("10.43.0.2", Proto::Udp, 53, &["10.42.3.3"]);
        let one = table_document(
            &params(true),
            &NetRules {
                vips: vec![a.clone(), b.clone()],
                ..NetRules::default()
            },
        );
        let two = table_document(
            &params(true),
            &NetRules {
                vips: vec![b, a],
                ..NetRules::default()
            },
        );
        assert_eq!(one, two);
    }
}
