//! Coexisting with Docker's `FORWARD` drop policy, on the real kernel but inside a network
//! namespace of the test's own: the Docker-shaped `ip filter` table is built there, so the
//! host's firewall (and any agent running on it) is never touched.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::Ipv4Addr;

use hivemind_dataplane::net::NetRules;
use nix::sched::{unshare, CloneFlags};

use super::{fetch, fetch_eventually, ping, run, system_tests_enabled, vip_rule, Fixture};

/// Runs `body` on a thread of its own that has left for a fresh network namespace, on a
/// current-thread runtime built there. Netlink sockets are opened, and `nft`/`ip` children
/// forked, from that thread, so all of them live in the new namespace; threads it spawns
/// (the fixture's drop-time teardown, `netns` helpers) inherit it.
fn in_fresh_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let joined = std::thread::Builder::new()
        .name("fresh-netns".into())
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(body());
        })
        .expect("spawn test thread")
        .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

fn sh(script: &str) -> String {
    let out = run(&["sh", "-c", script]);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Our rules in `ip filter`, as `nft` prints them.
fn tagged(table: &str) -> Vec<String> {
    let tag = format!("comment \"hivemind:{table}\"");
    sh("nft list table ip filter")
        .lines()
        .filter(|l| l.contains(&tag))
        .map(|l| l.trim().to_string())
        .collect()
}

/// An "outside" namespace on a /30 outside the cluster CIDR with no route back to replicas:
/// reaching it needs the node to route and masquerade. The namespace carries the fixture's
/// prefix, so teardown removes it; the node's end of the veth does not, or `reconcile` would
/// delete it as a stray replica veth (it lives and dies with the test's namespace).
fn outside(f: &Fixture) -> Ipv4Addr {
    let (ns, near) = (f.ns("outside"), "uplink0");
    let octet = f.subnet.network().octets()[2];
    sh(&format!(
        "ip netns add {ns} && ip link add {near} type veth peer name eth0 netns {ns} && \
         ip addr add 10.197.{octet}.1/30 dev {near} && ip link set {near} up && \
         ip -n {ns} addr add 10.197.{octet}.2/30 dev eth0 && ip -n {ns} link set eth0 up"
    ));
    format!("10.197.{octet}.2").parse().unwrap()
}

#[test]
fn docker_forward_drop_policy_no_longer_drops_replica_traffic() {
    if !system_tests_enabled() {
        return;
    }
    in_fresh_netns(|| async {
        // Not the host: another namespace than the process's main thread, and nft sees none
        // of the host's tables.
        let host = format!("/proc/{}/ns/net", std::process::id());
        let here = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_ne!(here, std::fs::read_link(&host).unwrap());
        assert_eq!(
            sh("nft list tables"),
            "",
            "nft runs in the test's namespace"
        );

        let mut f = Fixture::new().await;
        let bridge = f.config.bridge.clone();
        let table = f.config.nft_table.clone();
        assert!(run(&["ip", "link", "show", &bridge]).status.success());
        assert!(
            !run(&[
                "nsenter",
                "--net=/proc/1/ns/net",
                "ip",
                "link",
                "show",
                &bridge
            ])
            .status
            .success(),
            "the bridge is not on the host"
        );
        f.net().attach("a").await.unwrap();
        let b = f.net().attach("b").await.unwrap();
        f.listen("b", 8080, "b");
        let vip = f.vip(10);
        let rules = NetRules {
            vips: vec![vip_rule(vip, 80, &[b.ip])],
            ..NetRules::default()
        };
        f.net().apply_rules(&rules).await.unwrap();
        let far = outside(&f);
        let a = f.ns("a");
        let live: BTreeSet<String> = ["a", "b", "outside"].map(String::from).into();

        // Without a foreign table nothing is created or touched.
        assert!(ping(&a, far), "routed out with no host firewall");
        assert_eq!(fetch_eventually(Some(&a), vip, 80), "b");
        assert!(!run(&["nft", "list", "table", "ip", "filter"])
            .status
            .success());

        // Docker's shape (iptables-nft): FORWARD with policy drop jumping to DOCKER-USER, which
        // ends in a return. No counters, so listings compare equal after traffic.
        sh("nft add table ip filter && \
            nft 'add chain ip filter FORWARD { type filter hook forward priority filter; policy drop; }' && \
            nft add chain ip filter DOCKER-USER && \
            nft add rule ip filter FORWARD jump DOCKER-USER && \
            nft add rule ip filter FORWARD oifname docker0 ct state established,related accept && \
            nft add rule ip filter DOCKER-USER return");
        let docker = sh("nft list table ip filter");
        assert!(
            !ping(&a, far),
            "Docker's drop policy cuts routed replica traffic"
        );
        assert!(fetch(Some(&a), vip, 80).is_err(), "and VIP flows");

        // The periodic reconcile puts our accepts on top of DOCKER-USER.
        f.net().reconcile(&live).await.unwrap();
        let user = sh("nft list chain ip filter DOCKER-USER");
        let lines: Vec<&str> = user.lines().map(str::trim).collect();
        let (iif, oif) = (
            format!("iifname \"{bridge}\" accept comment \"hivemind:{table}\""),
            format!("oifname \"{bridge}\" accept comment \"hivemind:{table}\""),
        );
        let first = lines.iter().position(|l| *l == iif).expect(&user);
        assert_eq!(lines[first + 1], oif, "{user}");
        assert_eq!(lines[first + 2], "return", "{user}");
        let untagged = |listing: &str| -> Vec<String> {
            listing
                .lines()
                .filter(|l| !l.contains("hivemind:"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            untagged(&sh("nft list table ip filter")),
            untagged(&docker),
            "Docker's own rules and policy are untouched"
        );
        assert!(
            ping(&a, far),
            "routed replica traffic passes Docker's FORWARD"
        );
        assert_eq!(fetch_eventually(Some(&a), vip, 80), "b");
        if run(&["sh", "-c", "command -v iptables-nft"])
            .status
            .success()
        {
            let shown = sh("iptables-nft -S DOCKER-USER");
            assert!(
                shown.contains(&format!("-A DOCKER-USER -i {bridge} -m comment --comment \"hivemind:{table}\" -j ACCEPT")),
                "iptables-nft shows our rules: {shown}"
            );
        }

        // Steady state: applying and reconciling again neither duplicates nor moves them.
        f.net().apply_rules(&rules).await.unwrap();
        f.net().reconcile(&live).await.unwrap();
        assert_eq!(tagged(&table), vec![iif.clone(), oif.clone()]);
        assert_eq!(sh("nft list chain ip filter DOCKER-USER"), user);

        // Without DOCKER-USER (a plain iptables firewall) the accepts go to the top of FORWARD,
        // above the existing rules; apply_rules does it too.
        sh(
            "nft flush chain ip filter FORWARD && nft delete chain ip filter DOCKER-USER && \
            nft add rule ip filter FORWARD oifname docker0 ct state established,related accept",
        );
        let plain = sh("nft list table ip filter");
        assert!(!ping(&a, far));
        f.net().apply_rules(&rules).await.unwrap();
        let forward = sh("nft list chain ip filter FORWARD");
        let lines: Vec<&str> = forward.lines().map(str::trim).collect();
        let first = lines.iter().position(|l| *l == iif).expect(&forward);
        assert_eq!(
            lines[first - 1],
            "type filter hook forward priority filter; policy drop;"
        );
        assert_eq!(lines[first + 1], oif, "{forward}");
        assert!(
            ping(&a, far),
            "routed replica traffic passes a plain FORWARD drop"
        );
        assert_eq!(fetch_eventually(Some(&a), vip, 80), "b");

        // Teardown removes exactly our rules: the foreign table is as it was, policy included.
        f.teardown().await;
        assert_eq!(sh("nft list table ip filter"), plain);
        assert!(tagged(&table).is_empty());
        assert!(plain.contains("policy drop"));
    });
}
