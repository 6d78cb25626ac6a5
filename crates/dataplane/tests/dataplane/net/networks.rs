//! Compose networks on the real kernel: replicas of one app that share no network cannot reach
//! each other, by address or through a VIP; shared networks, other apps and hairpin still work.

use super::*;
use hivemind_dataplane::net::NetworkRule;

fn network(app_key: &str, name: &str, members: &[Ipv4Addr]) -> NetworkRule {
    NetworkRule {
        app_key: app_key.into(),
        name: name.into(),
        members: members.to_vec(),
    }
}

/// A connection that must fail, and fail promptly (rejected, not left to time out).
#[track_caller]
fn refused(ns: &str, ip: Ipv4Addr, port: u16, what: &str) {
    let t = Instant::now();
    let got = fetch(Some(ns), ip, port);
    let took = t.elapsed();
    assert!(got.is_err(), "{what}: expected no connection, got {got:?}");
    assert!(
        took < Duration::from_millis(1500),
        "{what}: refused promptly, took {took:?}"
    );
}

#[tokio::test]
async fn replicas_sharing_no_network_cannot_reach_each_other() {
    if !system_tests_enabled() {
        return;
    }
    let mut f = Fixture::unset();
    let before = host_snapshot(&f.tag);
    f.net = Some(f.setup().await);
    // shop: a on front, b on front and back, c on back. blog: d.
    let a = f.net().attach("a").await.unwrap();
    let b = f.net().attach("b").await.unwrap();
    let c = f.net().attach("c").await.unwrap();
    let d = f.net().attach("d").await.unwrap();
    for (name, reply) in [("a", "a"), ("b", "b"), ("c", "c")] {
        f.listen(name, 8080, reply);
    }
    let (vip_a, vip_b, vip_c) = (f.vip(10), f.vip(11), f.vip(12));
    f.net()
        .apply_rules(&NetRules {
            vips: vec![
                vip_rule(vip_a, 80, &[a.ip]),
                vip_rule(vip_b, 80, &[b.ip]),
                vip_rule(vip_c, 80, &[c.ip]),
            ],
            networks: vec![
                network("default/shop", "front", &[a.ip, b.ip]),
                network("default/shop", "back", &[b.ip, c.ip]),
                network("default/blog", "default", &[d.ip]),
            ],
            isolated: vec![],
        })
        .await
        .unwrap_or_else(|e| panic!("apply rules: {}", chain(&e)));
    let (ns_a, ns_b, ns_c, ns_d) = (f.ns("a"), f.ns("b"), f.ns("c"), f.ns("d"));

    // Shared networks: by address and through the VIPs.
    assert_eq!(fetch_eventually(Some(&ns_b), a.ip, 8080), "a");
    assert_eq!(fetch_eventually(Some(&ns_b), c.ip, 8080), "c");
    assert_eq!(fetch_eventually(Some(&ns_a), b.ip, 8080), "b");
    assert_eq!(fetch_eventually(Some(&ns_c), b.ip, 8080), "b");
    assert_eq!(fetch_eventually(Some(&ns_b), vip_a, 80), "a");
    assert_eq!(fetch_eventually(Some(&ns_b), vip_c, 80), "c");
    assert_eq!(fetch_eventually(Some(&ns_a), vip_b, 80), "b");
    assert_eq!(fetch_eventually(Some(&ns_c), vip_b, 80), "b");
    // Hairpin: a replica through its own VIP.
    assert_eq!(fetch_eventually(Some(&ns_a), vip_a, 80), "a");

    // No shared network: through the VIPs (routed, always filtered) ...
    refused(&ns_a, vip_c, 80, "a to c's vip");
    refused(&ns_c, vip_a, 80, "c to a's vip");
    // ... and by address, which for two replicas of one node needs bridged traffic to pass
    // netfilter.
    let br_netfilter = std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1");
    if br_netfilter {
        refused(&ns_a, c.ip, 8080, "a to c");
        refused(&ns_c, a.ip, 8080, "c to a");
    } else {
        eprintln!("bridge-nf-call-iptables is off: same-node isolation by address not checked");
    }

    // Another app is not restricted by shop's networks.
    assert_eq!(fetch_eventually(Some(&ns_d), a.ip, 8080), "a");
    assert_eq!(fetch_eventually(Some(&ns_d), vip_c, 80), "c");
    // The host (the ingress proxy's side) reaches everyone.
    assert_eq!(fetch_eventually(None, c.ip, 8080), "c");

    // Joining a network takes effect with the next rules.
    f.net()
        .apply_rules(&NetRules {
            vips: vec![vip_rule(vip_c, 80, &[c.ip])],
            networks: vec![network("default/shop", "front", &[a.ip, b.ip, c.ip])],
            isolated: vec![],
        })
        .await
        .unwrap();
    assert_eq!(fetch_eventually(Some(&ns_a), vip_c, 80), "c");

    f.teardown().await;
    assert_eq!(before, host_snapshot(&f.tag), "teardown leaves no trace");
}
