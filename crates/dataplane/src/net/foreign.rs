//! The two accept rules the agent keeps in a foreign chain: `ip filter DOCKER-USER`, or else
//! the top of `ip filter FORWARD`, when the host has that chain (Docker, or any iptables-nft
//! firewall with a forward policy of drop).
//!
//! Why: in nftables an accept ends only the base chain it is in, so the accepts in our own
//! table do not stop another table's forward chain from dropping the same packet. Docker's
//! `FORWARD` has `policy drop`, which would silently cut replicas' outbound traffic and every
//! routed flow. flannel/k3s and Docker's own guidance solve it the same way: accept the bridge's
//! traffic in that chain, in `DOCKER-USER` when it exists (Docker rebuilds `FORWARD` on
//! restart but keeps `DOCKER-USER`).
//!
//! This is the only place the agent writes outside its own table. It touches nothing but rules
//! carrying its tag (`hivemind:<table>`, a rule comment), never creates the table or the
//! chains, and never changes a policy. The planner is pure (tested by comparing JSON); the
//! `nft` calls are [`ensure`] and [`remove`].

use serde_json::{json, Value};

use super::{nft, NetError};

/// iptables-nft's IPv4 table; Hivemind is IPv4-only, so `ip6 filter` is left alone.
const FAMILY: &str = "ip";
const TABLE: &str = "filter";
const FORWARD: &str = "FORWARD";
/// Docker's chain for user rules, jumped to first from `FORWARD`.
const DOCKER_USER: &str = "DOCKER-USER";

/// The comment marking our rules in a foreign chain; `table` is our own table's name, so two
/// clusters on one machine each find only their own rules.
pub(crate) fn tag(table: &str) -> String {
    format!("hivemind:{table}")
}

/// One rule of `ip filter` as `nft -j list table ip filter` shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListedRule {
    pub(crate) chain: String,
    pub(crate) handle: u64,
    pub(crate) comment: Option<String>,
    pub(crate) expr: Value,
}

/// What matters of `ip filter`: its chains and rules, in listing order. Empty when the table
/// does not exist.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FilterTable {
    pub(crate) chains: Vec<String>,
    pub(crate) rules: Vec<ListedRule>,
}

/// Reads the JSON listing. Entries of other tables, and anything it does not understand, are
/// skipped: the table belongs to someone else and may hold expressions we never write.
pub(crate) fn parse_listing(listing: &Value) -> FilterTable {
    let mut table = FilterTable::default();
    let Some(entries) = listing.get("nftables").and_then(Value::as_array) else {
        return table;
    };
    let ours = |o: &Value| o["family"] == FAMILY && o["table"] == TABLE;
    for entry in entries {
        if let Some(chain) = entry.get("chain").filter(|c| ours(c)) {
            if let Some(name) = chain["name"].as_str() {
                table.chains.push(name.to_string());
            }
        } else if let Some(rule) = entry.get("rule").filter(|r| ours(r)) {
            let (Some(chain), Some(handle)) = (rule["chain"].as_str(), rule["handle"].as_u64())
            else {
                continue;
            };
            table.rules.push(ListedRule {
                chain: chain.to_string(),
                handle,
                comment: rule["comment"].as_str().map(str::to_string),
                expr: rule.get("expr").cloned().unwrap_or(Value::Null),
            });
        }
    }
    table
}

/// Where our rules belong: `DOCKER-USER` if present, else `FORWARD`, else nowhere.
pub(crate) fn target_chain(table: &FilterTable) -> Option<&'static str> {
    [DOCKER_USER, FORWARD]
        .into_iter()
        .find(|want| table.chains.iter().any(|c| c == want))
}

/// `meta <dir> "<bridge>" accept`: plain enough for `iptables-nft -S` to show as `-i`/`-o`.
fn accept(dir: &str, bridge: &str) -> Value {
    json!([
        {"match": {"op": "==", "left": {"meta": {"key": dir}}, "right": bridge}},
        {"accept": null},
    ])
}

/// What to run, and where rules are inserted (for the log line).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) commands: Vec<Value>,
    pub(crate) inserted_into: Option<&'static str>,
}

impl Plan {
    pub(crate) fn document(&self) -> Value {
        json!({"nftables": self.commands})
    }
}

/// The commands that bring `table` to the wanted state: with `bridge`, exactly our two
/// accepts as the first two rules of the target chain; without, none of our rules anywhere.
/// Nothing to do gives an empty plan, so a steady state never rewrites the foreign chain.
pub(crate) fn plan(table: &FilterTable, tag: &str, bridge: Option<&str>) -> Plan {
    let ours: Vec<&ListedRule> = table
        .rules
        .iter()
        .filter(|r| r.comment.as_deref() == Some(tag))
        .collect();
    let target = bridge.and_then(|b| target_chain(table).map(|c| (c, b)));
    if let Some((chain, bridge)) = target {
        let wanted = [accept("iifname", bridge), accept("oifname", bridge)];
        let head: Vec<&ListedRule> = table.rules.iter().filter(|r| r.chain == chain).collect();
        let in_place = ours.len() == wanted.len()
            && head.len() >= wanted.len()
            && head
                .iter()
                .zip(&wanted)
                .all(|(r, w)| r.comment.as_deref() == Some(tag) && &r.expr == w);
        if in_place {
            return Plan {
                commands: Vec::new(),
                inserted_into: None,
            };
        }
    }
    // Anything else (missing, moved down, stale bridge name, left in FORWARD after
    // DOCKER-USER appeared) is deleted and inserted again, in one transaction.
    let mut commands: Vec<Value> = ours
        .iter()
        .map(|r| {
            json!({"delete": {"rule": {
                "family": FAMILY, "table": TABLE, "chain": r.chain, "handle": r.handle
            }}})
        })
        .collect();
    let mut inserted_into = None;
    if let Some((chain, bridge)) = target {
        // `insert` without a position puts the rule first, so oifname goes in first and ends
        // second.
        for dir in ["oifname", "iifname"] {
            commands.push(json!({"insert": {"rule": {
                "family": FAMILY, "table": TABLE, "chain": chain,
                "comment": tag, "expr": accept(dir, bridge)
            }}}));
        }
        inserted_into = Some(chain);
    }
    Plan {
        commands,
        inserted_into,
    }
}

/// Puts our two accepts at the top of `DOCKER-USER` or `FORWARD` when `ip filter` has either;
/// touches nothing when it has neither.
pub(crate) async fn ensure(table: &str, bridge: &str) -> Result<(), NetError> {
    let listed = list().await?;
    let plan = plan(&listed, &tag(table), Some(bridge));
    if let Some(chain) = plan.inserted_into {
        tracing::info!(
            chain = %format!("{FAMILY} {TABLE} {chain}"),
            bridge,
            "accepting the bridge's traffic in a foreign forward chain: an accept in our own table does not stop that table's drop policy (Docker's iptables FORWARD) from dropping replica traffic"
        );
    }
    apply(
        &plan,
        &format!("accept bridge {bridge} in {FAMILY} {TABLE}"),
    )
    .await
}

/// Deletes every rule carrying our tag from `ip filter`; for teardown.
pub(crate) async fn remove(table: &str) -> Result<(), NetError> {
    let listed = list().await?;
    let plan = plan(&listed, &tag(table), None);
    apply(
        &plan,
        &format!("remove rules {} from {FAMILY} {TABLE}", tag(table)),
    )
    .await
}

async fn apply(plan: &Plan, op: &str) -> Result<(), NetError> {
    if plan.commands.is_empty() {
        return Ok(());
    }
    nft::run(&plan.document(), op).await
}

/// `nft -j list table ip filter`; a missing table is an empty one.
async fn list() -> Result<FilterTable, NetError> {
    let op = format!("list nftables table {FAMILY} {TABLE}");
    let out = nft::nft_with_stdin(&["-j", "list", "table", FAMILY, TABLE], b"", &op).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // nft's only way of saying "no such table".
        if stderr.contains("No such file or directory") {
            return Ok(FilterTable::default());
        }
        return Err(NetError::Nft {
            op,
            stderr: stderr.trim().to_string(),
        });
    }
    let listing: Value = serde_json::from_slice(&out.stdout).map_err(|e| NetError::Nft {
        op: op.clone(),
        stderr: format!("unreadable JSON listing: {e}"),
    })?;
    Ok(parse_listing(&listing))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "hivemind:hivemind";

    fn chain(name: &str) -> Value {
        json!({"chain": {"family": "ip", "table": "filter", "name": name, "handle": 1}})
    }

    fn rule(chain: &str, handle: u64, comment: Option<&str>, expr: Value) -> Value {
        let mut r = json!({"family": "ip", "table": "filter", "chain": chain, "handle": handle, "expr": expr});
        if let Some(c) = comment {
            r["comment"] = json!(c);
        }
        json!({"rule": r})
    }

    fn listing(entries: Vec<Value>) -> FilterTable {
        let mut all = vec![json!({"metainfo": {"json_schema_version": 1}})];
        all.extend(entries);
        parse_listing(&json!({"nftables": all}))
    }

    fn docker(extra_user_rules: Vec<Value>) -> FilterTable {
        let mut entries = vec![
            chain("FORWARD"),
            chain("DOCKER-USER"),
            rule(
                "FORWARD",
                3,
                None,
                json!([{"jump": {"target": "DOCKER-USER"}}]),
            ),
        ];
        entries.extend(extra_user_rules);
        entries.push(rule(
            "DOCKER-USER",
            4,
            None,
            json!([{"counter": {"packets": 0, "bytes": 0}}, {"return": null}]),
        ));
        listing(entries)
    }

    fn insert(chain: &str, dir: &str) -> Value {
        json!({"insert": {"rule": {
            "family": "ip", "table": "filter", "chain": chain, "comment": TAG,
            "expr": [
                {"match": {"op": "==", "left": {"meta": {"key": dir}}, "right": "hm0"}},
                {"accept": null},
            ]
        }}})
    }

    fn delete(chain: &str, handle: u64) -> Value {
        json!({"delete": {"rule": {"family": "ip", "table": "filter", "chain": chain, "handle": handle}}})
    }

    #[test]
    fn no_filter_table_touches_nothing() {
        let empty = FilterTable::default();
        assert_eq!(plan(&empty, TAG, Some("hm0")).commands, Vec::<Value>::new());
        assert_eq!(plan(&empty, TAG, None).commands, Vec::<Value>::new());
        // A filter table with other chains only (say ufw's) is not ours to change either.
        let other = listing(vec![chain("INPUT")]);
        assert_eq!(target_chain(&other), None);
        assert!(plan(&other, TAG, Some("hm0")).commands.is_empty());
    }

    #[test]
    fn docker_user_is_preferred_over_forward() {
        let p = plan(&docker(vec![]), TAG, Some("hm0"));
        assert_eq!(p.inserted_into, Some("DOCKER-USER"));
        assert_eq!(
            p.document(),
            json!({"nftables": [insert("DOCKER-USER", "oifname"), insert("DOCKER-USER", "iifname")]})
        );
    }

    #[test]
    fn plain_forward_gets_the_rules_at_its_top() {
        let t = listing(vec![
            chain("FORWARD"),
            rule("FORWARD", 7, None, json!([{"drop": null}])),
        ]);
        let p = plan(&t, TAG, Some("hm0"));
        assert_eq!(p.inserted_into, Some("FORWARD"));
        assert_eq!(
            p.commands,
            vec![insert("FORWARD", "oifname"), insert("FORWARD", "iifname")]
        );
    }

    #[test]
    fn rules_in_place_are_left_alone() {
        let t = docker(vec![
            rule("DOCKER-USER", 9, Some(TAG), accept("iifname", "hm0")),
            rule("DOCKER-USER", 8, Some(TAG), accept("oifname", "hm0")),
        ]);
        let p = plan(&t, TAG, Some("hm0"));
        assert!(p.commands.is_empty(), "{:?}", p.commands);
        assert_eq!(p.inserted_into, None);
    }

    #[test]
    fn misplaced_or_stale_rules_are_replaced_never_duplicated() {
        // Pushed below Docker's return by someone else's insert.
        let below = listing(vec![
            chain("DOCKER-USER"),
            rule("DOCKER-USER", 4, None, json!([{"return": null}])),
            rule("DOCKER-USER", 9, Some(TAG), accept("iifname", "hm0")),
            rule("DOCKER-USER", 8, Some(TAG), accept("oifname", "hm0")),
        ]);
        assert_eq!(
            plan(&below, TAG, Some("hm0")).commands,
            vec![
                delete("DOCKER-USER", 9),
                delete("DOCKER-USER", 8),
                insert("DOCKER-USER", "oifname"),
                insert("DOCKER-USER", "iifname"),
            ]
        );
        // Left in FORWARD from before DOCKER-USER existed, plus a duplicate.
        let moved = listing(vec![
            chain("FORWARD"),
            chain("DOCKER-USER"),
            rule("FORWARD", 5, Some(TAG), accept("iifname", "hm0")),
            rule("FORWARD", 6, Some(TAG), accept("oifname", "hm0")),
            rule("FORWARD", 7, Some(TAG), accept("oifname", "hm0")),
        ]);
        let p = plan(&moved, TAG, Some("hm0"));
        assert_eq!(
            p.commands[..3],
            [
                delete("FORWARD", 5),
                delete("FORWARD", 6),
                delete("FORWARD", 7)
            ]
        );
        assert_eq!(p.inserted_into, Some("DOCKER-USER"));
        // Another bridge name than the one configured now.
        let renamed = docker(vec![
            rule("DOCKER-USER", 9, Some(TAG), accept("iifname", "old0")),
            rule("DOCKER-USER", 8, Some(TAG), accept("oifname", "old0")),
        ]);
        assert_eq!(plan(&renamed, TAG, Some("hm0")).commands.len(), 4);
    }

    #[test]
    fn removal_deletes_only_our_tag() {
        let t = docker(vec![
            rule("DOCKER-USER", 9, Some(TAG), accept("iifname", "hm0")),
            rule(
                "DOCKER-USER",
                10,
                Some("hivemind:other"),
                accept("iifname", "hm1"),
            ),
            rule(
                "DOCKER-USER",
                11,
                Some("a user's rule"),
                json!([{"accept": null}]),
            ),
            rule("FORWARD", 8, Some(TAG), accept("oifname", "hm0")),
        ]);
        let p = plan(&t, TAG, None);
        assert_eq!(
            p.commands,
            vec![delete("DOCKER-USER", 9), delete("FORWARD", 8)]
        );
        assert_eq!(p.inserted_into, None);
    }

    #[test]
    fn listing_of_other_tables_and_odd_entries_is_ignored() {
        let t = parse_listing(&json!({"nftables": [
            {"chain": {"family": "ip6", "table": "filter", "name": "FORWARD"}},
            {"chain": {"family": "inet", "table": "filter", "name": "DOCKER-USER"}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD"}},
            {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD", "handle": "x"}},
            "garbage",
            {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "handle": 1}},
        ]}));
        assert_eq!(t.chains, vec!["FORWARD".to_string()]);
        assert!(t.rules.is_empty());
        assert_eq!(parse_listing(&json!(42)), FilterTable::default());
        assert_eq!(
            parse_listing(&json!({"nftables": {}})),
            FilterTable::default()
        );
    }
}
