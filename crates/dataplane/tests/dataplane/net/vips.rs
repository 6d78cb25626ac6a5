//! Service VIPs on the real kernel: connections spread over the backends and follow their
//! changes, a VIP without backends is refused at once, a backend reaches itself (hairpin), and
//! rules outside the service CIDR are refused.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hivemind_dataplane::net::NetRules;

use super::{chain, fetch, fetch_eventually, system_tests_enabled, vip_rule, Fixture};

/// Counts what `n` connections to `ip:port` from `ns` (or the host) were answered with.
fn tally(ns: Option<&str>, ip: Ipv4Addr, port: u16, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = fetch(ns, ip, port).unwrap_or_else(|e| panic!("connect to {ip}:{port}: {e}"));
        *seen.entry(who).or_default() += 1;
    }
    seen
}

#[tokio::test]
async fn vips_spread_follow_backend_changes_refuse_and_hairpin() {
    if !system_tests_enabled() {
        return;
    }
    let mut f = Fixture::new().await;
    let a = f.net().attach("a").await.unwrap();
    let b = f.net().attach("b").await.unwrap();
    f.net().attach("client").await.unwrap();
    f.listen("a", 8080, "a");
    f.listen("b", 8080, "b");
    let (vip, empty_vip) = (f.vip(10), f.vip(11));
    let client = f.ns("client");

    let t = Instant::now();
    f.net()
        .apply_rules(&NetRules {
            vips: vec![
                vip_rule(vip, 80, &[a.ip, b.ip]),
                vip_rule(empty_vip, 81, &[]),
            ],
            ..NetRules::default()
        })
        .await
        .unwrap_or_else(|e| panic!("apply rules: {}", chain(&e)));
    eprintln!("apply_rules took {:?}", t.elapsed());
    fetch_eventually(Some(&client), a.ip, 8080);
    fetch_eventually(Some(&client), b.ip, 8080);

    let seen = tally(Some(&client), vip, 80, 20);
    eprintln!("20 connections to the vip: {seen:?}");
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["a", "b"],
        "both backends: {seen:?}"
    );

    // From the host too (nat output chain).
    let from_host = tally(None, vip, 80, 6);
    assert!(
        from_host.keys().all(|k| k == "a" || k == "b"),
        "{from_host:?}"
    );

    // A VIP without backends is refused at once, not black-holed.
    let t = Instant::now();
    let refused = fetch(Some(&client), empty_vip, 81);
    let took = t.elapsed();
    eprintln!("empty vip refused after {took:?}: {refused:?}");
    assert!(refused.is_err(), "{refused:?}");
    assert!(
        took < Duration::from_millis(1500),
        "refused promptly, took {took:?}"
    );

    // Removing a backend stops traffic to it.
    f.net()
        .apply_rules(&NetRules {
            vips: vec![vip_rule(vip, 80, &[a.ip])],
            ..NetRules::default()
        })
        .await
        .unwrap();
    let seen = tally(Some(&client), vip, 80, 10);
    assert_eq!(
        seen,
        BTreeMap::from([("a".to_string(), 10)]),
        "only a is left"
    );

    // Hairpin: the only backend reaches itself through its own VIP.
    let own = tally(Some(&f.ns("a")), vip, 80, 5);
    assert_eq!(
        own,
        BTreeMap::from([("a".to_string(), 5)]),
        "a reaches itself through the vip"
    );

    // Rules outside the service cidr are refused.
    let outside = vip_rule("10.1.2.3".parse().unwrap(), 80, &[a.ip]);
    assert!(f
        .net()
        .apply_rules(&NetRules {
            vips: vec![outside],
            ..NetRules::default()
        })
        .await
        .is_err());
    f.teardown().await;
}
