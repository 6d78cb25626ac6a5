use super::*;

fn holder(owner: &str, address: Option<&str>) -> Holder {
    Holder {
        owner: owner.into(),
        address: address.map(String::from),
    }
}

fn claim(pool: AddressPool, address: &str, owner: &str) -> AddressClaim {
    AddressClaim {
        pool,
        address: address.into(),
        owner: owner.into(),
        meta: Default::default(),
    }
}

#[test]
fn subnets_are_the_lowest_free_slash_24() {
    let net = ClusterNetwork::default();
    assert_eq!(
        Pool::subnets(&net).allocate().as_deref(),
        Some("10.42.0.0/24")
    );
    let mut pool = Pool::subnets(&net);
    assert!(pool.mark("10.42.0.0/24") && pool.mark("10.42.2.0/24"));
    assert!(!pool.mark("10.99.0.0/24"), "outside the cluster CIDR");
    assert!(!pool.mark("10.42.0.0"), "a subnet is written with its /24");
    assert_eq!(pool.allocate().as_deref(), Some("10.42.1.0/24"));
    assert_eq!(pool.allocate().as_deref(), Some("10.42.3.0/24"));
    let mut full = Pool::subnets(&net);
    for i in 0..=255 {
        assert!(full.mark(&format!("10.42.{i}.0/24")));
    }
    assert_eq!(full.allocate(), None);
    full.release("10.42.7.0/24");
    assert_eq!(full.allocate().as_deref(), Some("10.42.7.0/24"));
}

#[test]
fn vips_skip_reserved_and_used() {
    let net = ClusterNetwork::default();
    let mut pool = Pool::vips(&net);
    assert!(!pool.mark("10.43.0.1"), "reserved");
    assert!(!pool.mark("10.43.255.255"), "broadcast");
    pool.mark("10.43.0.2");
    pool.mark("10.43.0.3");
    assert_eq!(pool.allocate().as_deref(), Some("10.43.0.4"));
    let small = ClusterNetwork::parse("10.100.0.0/23", "10.101.0.0/30").unwrap();
    let mut vips = Pool::vips(&small);
    assert_eq!(vips.allocate().as_deref(), Some("10.101.0.2"));
    assert_eq!(vips.allocate(), None, "a /30 holds one VIP");
    let mut subnets = Pool::subnets(&small);
    subnets.mark("10.100.0.0/24");
    assert_eq!(subnets.allocate().as_deref(), Some("10.100.1.0/24"));
    assert_eq!(subnets.allocate(), None);
}

#[test]
fn allocations_fill_gaps_lowest_first_and_stay_cheap() {
    let mut pool = Pool::vips(&ClusterNetwork::default());
    for i in [2, 3, 5, 9] {
        pool.mark(&format!("10.43.0.{i}"));
    }
    let got: Vec<_> = (0..4).filter_map(|_| pool.allocate()).collect();
    assert_eq!(got, ["10.43.0.4", "10.43.0.6", "10.43.0.7", "10.43.0.8"]);
    assert_eq!(pool.allocate().as_deref(), Some("10.43.0.10"));
    // 60,000 allocations in a row: each resumes where the last stopped (this would take
    // minutes if every allocation scanned from the start, as the old allocator did).
    let mut big = Pool::vips(&ClusterNetwork::default());
    let all: BTreeSet<String> = (0..60_000).filter_map(|_| big.allocate()).collect();
    assert_eq!(all.len(), 60_000);
}

#[test]
fn plan_table() {
    use AddressPool::Vip;
    struct Case {
        name: &'static str,
        holders: Vec<Holder>,
        claims: Vec<AddressClaim>,
        assign: Vec<(&'static str, &'static str)>,
        adopt: Vec<(&'static str, &'static str)>,
        release: Vec<&'static str>,
    }
    let cases = [
        Case {
            name: "new services get the lowest free VIPs, in order",
            holders: vec![holder("d/a/x", None), holder("d/a/y", None)],
            claims: vec![],
            assign: vec![("d/a/x", "10.43.0.2"), ("d/a/y", "10.43.0.3")],
            adopt: vec![],
            release: vec![],
        },
        Case {
            name: "a service keeps its VIP; claimed ones are skipped",
            holders: vec![holder("d/a/x", Some("10.43.0.2")), holder("d/a/y", None)],
            claims: vec![claim(Vip, "10.43.0.2", "d/a/x")],
            assign: vec![("d/a/y", "10.43.0.3")],
            adopt: vec![],
            release: vec![],
        },
        Case {
            name: "VIPs from before claims are adopted, never handed out again",
            holders: vec![holder("d/a/x", Some("10.43.0.2")), holder("d/a/y", None)],
            claims: vec![],
            assign: vec![("d/a/y", "10.43.0.3")],
            adopt: vec![("d/a/x", "10.43.0.2")],
            release: vec![],
        },
        Case {
            name: "a removed service's VIP is released and reused by the next run",
            holders: vec![holder("d/a/y", None)],
            claims: vec![claim(Vip, "10.43.0.2", "d/a/gone")],
            assign: vec![("d/a/y", "10.43.0.3")],
            adopt: vec![],
            release: vec!["10.43.0.2"],
        },
        Case {
            name: "an address outside the pool (CIDR flag changed) is kept unclaimed",
            holders: vec![holder("d/a/x", Some("10.99.0.2"))],
            claims: vec![],
            assign: vec![],
            adopt: vec![],
            release: vec![],
        },
        Case {
            name: "nothing to do",
            holders: vec![holder("d/a/x", Some("10.43.0.2"))],
            claims: vec![claim(Vip, "10.43.0.2", "d/a/x")],
            assign: vec![],
            adopt: vec![],
            release: vec![],
        },
    ];
    for case in cases {
        let mut pool = Pool::vips(&ClusterNetwork::default());
        let plan = plan_allocations(&mut pool, &case.holders, &case.claims);
        let assign: Vec<(&str, &str)> = plan
            .assign
            .iter()
            .map(|(o, a)| (o.as_str(), a.as_str()))
            .collect();
        assert_eq!(assign, case.assign, "{}", case.name);
        let adopt: Vec<(&str, &str)> = plan
            .adopt
            .iter()
            .map(|c| (c.owner.as_str(), c.address.as_str()))
            .collect();
        assert_eq!(adopt, case.adopt, "{}", case.name);
        let release: Vec<&str> = plan.release.iter().map(|c| c.address.as_str()).collect();
        assert_eq!(release, case.release, "{}", case.name);
        assert!(plan.exhausted.is_empty(), "{}", case.name);
    }
}

#[test]
fn a_full_pool_leaves_owners_waiting_with_a_reason() {
    let small = ClusterNetwork::parse("10.100.0.0/23", "10.101.0.0/30").unwrap();
    let mut pool = Pool::vips(&small);
    let plan = plan_allocations(
        &mut pool,
        &[holder("d/a/x", None), holder("d/a/y", None)],
        &[],
    );
    assert_eq!(plan.assign.len(), 1);
    assert_eq!(plan.exhausted, ["d/a/y"]);
}
