//! System tests of `hivemind_dataplane::net` against the real kernel: bridge, namespaces, veths,
//! nftables. They need root; `HIVEMIND_SKIP_SYSTEM_TESTS=1` skips them explicitly.
//!
//! Each test owns a bridge `hmt<tag>`, a prefix `hmt<tag>-`, a table `hmt<tag>` and a /24 of
//! 10.199.0.0/16, so tests (and runs) share the kernel without seeing each other; a drop guard
//! tears everything down even when an assertion fails. "Replicas" are bare namespaces with
//! busybox processes started by `ip netns exec`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hivemind_dataplane::net::{Ipv4Net, NetConfig, NetRules, NodeNet, Proto, VipRule};

// App networks (Compose `networks`) have their own file; it uses the fixture below.
#[path = "net/networks.rs"]
mod networks;

/// Service VIPs: spread, backend changes, refusal, hairpin.
#[path = "net/vips.rs"]
mod vips;

/// Docker's FORWARD drop policy, in a network namespace of the test's own.
#[path = "net/foreign.rs"]
mod foreign;

const BUSYBOX: &str = "/bin/busybox";

fn system_tests_enabled() -> bool {
    if std::env::var("HIVEMIND_SKIP_SYSTEM_TESTS").as_deref() == Ok("1") {
        eprintln!("skipping: HIVEMIND_SKIP_SYSTEM_TESTS=1");
        return false;
    }
    assert!(
        effective_uid() == Some(0),
        "net system tests need root (namespaces, veths, nftables); run as root or set HIVEMIND_SKIP_SYSTEM_TESTS=1"
    );
    for (bin, pkg) in [
        ("nft", "nftables"),
        ("ip", "iproute2"),
        (BUSYBOX, "busybox-static"),
    ] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(found, "{bin} is missing: apt-get install -y {pkg}");
    }
    true
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A distinct tag and /24 per test in this process, offset by the pid across processes.
fn next_slot() -> (String, u8) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let seed = std::process::id()
        .wrapping_mul(2654435761)
        .wrapping_add(rand::random::<u16>() as u32);
    let tag = format!("{:04x}", (seed.wrapping_add(n * 7919)) & 0xffff);
    let octet = ((seed >> 8).wrapping_add(n * 37) % 250) as u8 + 2;
    (tag, octet)
}

/// One test's network: config, node net, and teardown on drop.
struct Fixture {
    tag: String,
    config: NetConfig,
    subnet: Ipv4Net,
    net: Option<NodeNet>,
    _state: tempfile::TempDir,
    listeners: Vec<Child>,
}

impl Fixture {
    async fn new() -> Fixture {
        let mut fixture = Fixture::unset();
        fixture.net = Some(fixture.setup().await);
        fixture
    }

    /// Names and addresses picked, nothing created yet.
    fn unset() -> Fixture {
        let (tag, octet) = next_slot();
        let state = tempfile::tempdir().unwrap();
        let config = NetConfig {
            bridge: format!("hmt{tag}"),
            state_dir: state.path().to_path_buf(),
            netns_prefix: format!("hmt{tag}-"),
            nft_table: format!("hmt{tag}"),
            cluster_cidr: "10.199.0.0/16".parse().unwrap(),
            service_cidr: format!("10.198.{octet}.0/24").parse().unwrap(),
        };
        let subnet: Ipv4Net = format!("10.199.{octet}.0/24").parse().unwrap();
        Fixture {
            tag,
            config,
            subnet,
            net: None,
            _state: state,
            listeners: Vec::new(),
        }
    }

    async fn setup(&self) -> NodeNet {
        NodeNet::setup(self.config.clone(), self.subnet)
            .await
            .unwrap_or_else(|e| panic!("setup: {}", chain(&e)))
    }

    fn net(&self) -> &NodeNet {
        self.net.as_ref().expect("node net is set up")
    }

    fn ns(&self, replica: &str) -> String {
        format!("{}{replica}", self.config.netns_prefix)
    }

    fn vip(&self, last: u8) -> Ipv4Addr {
        let base = u32::from(self.config.service_cidr.network());
        Ipv4Addr::from(base + u32::from(last))
    }

    /// `busybox nc -ll -p PORT -e echo REPLY` inside the replica's namespace.
    fn listen(&mut self, replica: &str, port: u16, reply: &str) {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns(replica),
                BUSYBOX,
                "nc",
                "-ll",
                "-p",
            ])
            .arg(port.to_string())
            .args(["-e", BUSYBOX, "echo", reply])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn listener");
        self.listeners.push(child);
    }

    async fn teardown(&mut self) {
        for mut child in self.listeners.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(net) = self.net.take() {
            net.teardown()
                .await
                .unwrap_or_else(|e| panic!("teardown: {}", chain(&e)));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.listeners {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The test's runtime may be the one unwinding here, so teardown runs on a runtime of
        // its own on another thread.
        if let Some(net) = self.net.take() {
            let tag = self.tag.clone();
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                if let Err(e) = rt.block_on(net.teardown()) {
                    eprintln!("teardown of test network {tag} failed: {}", chain(&e));
                }
            })
            .join();
        }
    }
}

/// An error with its sources, for panic messages.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run command")
}

fn in_ns(ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    run(&all)
}

fn ping(ns: &str, ip: Ipv4Addr) -> bool {
    in_ns(
        ns,
        &[BUSYBOX, "ping", "-c", "1", "-W", "2", &ip.to_string()],
    )
    .status
    .success()
}

/// One TCP connection from `ns` (or the host) to `ip:port`; returns what the server said.
fn fetch(ns: Option<&str>, ip: Ipv4Addr, port: u16) -> Result<String, String> {
    let (ip, port) = (ip.to_string(), port.to_string());
    let client = [BUSYBOX, "nc", "-w", "2", ip.as_str(), port.as_str()];
    let out = match ns {
        Some(ns) => in_ns(ns, &client),
        None => run(&client),
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && !text.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "status {}, stderr {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Retries until the listener answers (it starts asynchronously).
fn fetch_eventually(ns: Option<&str>, ip: Ipv4Addr, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fetch(ns, ip, port) {
            Ok(text) => return text,
            Err(e) if Instant::now() > deadline => panic!("no answer from {ip}:{port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn vip_rule(vip: Ipv4Addr, port: u16, backends: &[Ipv4Addr]) -> VipRule {
    VipRule {
        vip,
        protocol: Proto::Tcp,
        port,
        target_port: 8080,
        backends: backends.to_vec(),
    }
}

/// Link names, netns names and nft tables, less other tests' objects (`hmt` with another tag).
fn host_snapshot(own_tag: &str) -> BTreeSet<String> {
    let foreign =
        |name: &str| name.starts_with("hmt") && !name.starts_with(&format!("hmt{own_tag}"));
    let mut snap = BTreeSet::new();
    let links = String::from_utf8(run(&["ip", "-o", "link", "show"]).stdout).unwrap();
    for line in links.lines() {
        let name = line
            .split(':')
            .nth(1)
            .unwrap_or("")
            .trim()
            .split('@')
            .next()
            .unwrap_or("");
        if !foreign(name) {
            snap.insert(format!("link {name}"));
        }
    }
    for name in std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = name.file_name().to_string_lossy().to_string();
        if !foreign(&name) {
            snap.insert(format!("netns {name}"));
        }
    }
    let tables = String::from_utf8(run(&["nft", "list", "tables"]).stdout).unwrap();
    for line in tables.lines() {
        let name = line.split_whitespace().last().unwrap_or("");
        if !foreign(name) {
            snap.insert(line.trim().to_string());
        }
    }
    snap
}

#[tokio::test]
async fn setup_is_idempotent_and_teardown_restores_the_host() {
    if !system_tests_enabled() {
        return;
    }
    let mut f = Fixture::unset();
    let before = host_snapshot(&f.tag);
    f.net = Some(f.setup().await);
    let again = f.setup().await;
    assert_eq!(again.gateway(), f.net().gateway());
    let gw = f.net().gateway();
    assert_eq!(gw, Ipv4Addr::from(u32::from(f.subnet.network()) + 1));
    let addrs =
        String::from_utf8(run(&["ip", "-4", "-o", "addr", "show", "dev", &f.config.bridge]).stdout)
            .unwrap();
    assert_eq!(
        addrs.matches("inet ").count(),
        1,
        "exactly one address on the bridge: {addrs}"
    );
    assert!(addrs.contains(&format!("{gw}/24")), "{addrs}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let ruleset =
        String::from_utf8(run(&["nft", "list", "table", "inet", &f.config.nft_table]).stdout)
            .unwrap();
    assert!(
        ruleset.contains(&format!("iifname \"{}\" accept", f.config.bridge)),
        "{ruleset}"
    );

    let a = f.net().attach("a").await.unwrap();
    let third = f.setup().await;
    assert_eq!(third.attachment("a"), Some(a));
    drop((again, third));

    f.teardown().await;
    let after = host_snapshot(&f.tag);
    assert_eq!(before, after, "teardown leaves the host as it found it");
    let ruleset = String::from_utf8(run(&["nft", "list", "ruleset"]).stdout).unwrap();
    assert!(
        !ruleset.contains(&f.config.nft_table),
        "no trace of the table"
    );
    assert!(!f.config.state_dir.join("ipam.json").exists());
}

#[tokio::test]
async fn replicas_reach_each_other_and_the_gateway() {
    if !system_tests_enabled() {
        return;
    }
    let mut f = Fixture::new().await;
    let t = Instant::now();
    let a = f.net().attach("a").await.unwrap();
    let attach_one = t.elapsed();
    let b = f.net().attach("b").await.unwrap();
    eprintln!("first attach took {attach_one:?}");
    assert_ne!(a.ip, b.ip);
    assert!(f.subnet.contains(&a.ip) && f.subnet.contains(&b.ip));
    assert_ne!(a.ip, f.net().gateway());
    assert_eq!(
        f.net().attach("a").await.unwrap(),
        a,
        "attach is idempotent"
    );
    assert_eq!(f.net().attachment("b"), Some(b.clone()));
    assert!(a.netns_path.exists());

    let gw = f.net().gateway();
    assert!(ping(&f.ns("a"), gw), "a pings the gateway");
    assert!(ping(&f.ns("a"), b.ip), "a pings b");
    assert!(ping(&f.ns("b"), a.ip), "b pings a");

    // Outbound NAT: an "outside" namespace on a /30 outside the cluster cidr, with no route
    // back to the replicas, answers only if the replica's traffic was masqueraded. Its names
    // carry our prefix, so teardown removes it even if the test fails.
    let outside = f.ns("outside");
    let (host_end, far_end) = (format!("{}o", f.config.netns_prefix), "eth0");
    let octet = f.subnet.network().octets()[2];
    let (near_ip, far_ip) = (format!("10.197.{octet}.1"), format!("10.197.{octet}.2"));
    for cmd in [
        vec!["ip", "netns", "add", &outside],
        vec![
            "ip", "link", "add", &host_end, "type", "veth", "peer", "name", far_end, "netns",
            &outside,
        ],
        vec![
            "ip",
            "addr",
            "add",
            &format!("{near_ip}/30"),
            "dev",
            &host_end,
        ],
        vec!["ip", "link", "set", &host_end, "up"],
        vec![
            "ip",
            "-n",
            &outside,
            "addr",
            "add",
            &format!("{far_ip}/30"),
            "dev",
            far_end,
        ],
        vec!["ip", "-n", &outside, "link", "set", far_end, "up"],
    ] {
        let out = run(&cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        ping(&f.ns("a"), far_ip.parse().unwrap()),
        "a reaches outside the cluster (masqueraded)"
    );
    f.net().detach("outside").await.unwrap();

    // Repair: delete the host veth behind the module's back; attach recreates it.
    assert!(run(&["ip", "link", "del", &a.host_veth]).status.success());
    assert_eq!(f.net().attach("a").await.unwrap(), a);
    // (a speaks first: b still has a's old MAC cached until a's ARP request refreshes it.)
    assert!(ping(&f.ns("a"), b.ip), "a pings b after repair");
    assert!(ping(&f.ns("b"), a.ip), "b pings a after repair");

    f.net().detach("a").await.unwrap();
    f.net().detach("a").await.unwrap();
    assert!(!a.netns_path.exists());
    assert!(
        !run(&["ip", "link", "show", &a.host_veth]).status.success(),
        "veth deleted"
    );
    assert_eq!(f.net().attachment("a"), None);
    let c = f.net().attach("c").await.unwrap();
    assert_ne!(
        c.ip, a.ip,
        "a released address is not handed out again at once"
    );
    assert_ne!(c.ip, b.ip);
    let t = Instant::now();
    for i in 0..10 {
        f.net().attach(&format!("r{i}")).await.unwrap();
    }
    eprintln!("10 more attaches took {:?}", t.elapsed());
    let t = Instant::now();
    for i in 0..10 {
        f.net().detach(&format!("r{i}")).await.unwrap();
    }
    eprintln!("10 detaches took {:?}", t.elapsed());
    f.teardown().await;
}

#[tokio::test]
async fn restart_keeps_addresses_and_reconcile_removes_leaks() {
    if !system_tests_enabled() {
        return;
    }
    let mut f = Fixture::new().await;
    let a = f.net().attach("a").await.unwrap();
    let b = f.net().attach("b").await.unwrap();
    let c = f.net().attach("c").await.unwrap();

    // Simulated crash: the agent goes away without cleaning up and starts again.
    drop(f.net.take());
    let net = f.setup().await;
    f.net = Some(net);
    assert_eq!(f.net().attachment("a"), Some(a.clone()));
    assert_eq!(f.net().attach("b").await.unwrap(), b);

    // Lost state file: addresses are re-adopted from the namespaces.
    drop(f.net.take());
    std::fs::remove_file(f.config.state_dir.join("ipam.json")).unwrap();
    let net = f.setup().await;
    f.net = Some(net);
    assert_eq!(f.net().attachment("a"), Some(a.clone()));
    assert_eq!(f.net().attachment("c"), Some(c.clone()));

    // Leaks: an unknown namespace and a stray veth with our prefix.
    let ghost = f.ns("ghost");
    assert!(run(&["ip", "netns", "add", &ghost]).status.success());
    let stray = format!("{}zz", f.config.netns_prefix);
    let peer = format!("{}zy", f.config.netns_prefix);
    assert!(
        run(&["ip", "link", "add", &stray, "type", "veth", "peer", "name", &peer])
            .status
            .success()
    );

    let live = BTreeSet::from(["a".to_string(), "b".to_string()]);
    let removed = f.net().reconcile(&live).await.unwrap();
    eprintln!("reconcile removed {removed:?}");
    assert!(
        removed.contains(&"c".to_string()) && removed.contains(&"ghost".to_string()),
        "{removed:?}"
    );
    assert!(
        removed.iter().any(|r| r.starts_with("veth:")),
        "{removed:?}"
    );
    assert!(!c.netns_path.exists());
    assert!(!std::path::Path::new("/var/run/netns").join(&ghost).exists());
    assert!(!run(&["ip", "link", "show", &stray]).status.success());
    assert_eq!(f.net().attachment("c"), None);
    assert!(ping(&f.ns("a"), b.ip), "survivors still talk");
    assert_eq!(
        f.net().reconcile(&live).await.unwrap(),
        Vec::<String>::new()
    );

    // The node re-joins with another subnet: no crash, addresses start over.
    drop(f.net.take());
    let moved: Ipv4Net = format!(
        "10.199.{}.0/24",
        (f.subnet.network().octets()[2] as u16 + 128) % 250 + 2
    )
    .parse()
    .unwrap();
    f.subnet = moved;
    let net = f.setup().await;
    f.net = Some(net);
    assert_eq!(f.net().attachment("a"), None, "old leases released");
    let a2 = f.net().attach("a").await.unwrap();
    assert!(moved.contains(&a2.ip), "{a2:?} in {moved}");
    assert!(
        ping(&f.ns("a"), f.net().gateway()),
        "re-addressed replica reaches the new gateway"
    );
    f.teardown().await;
}
