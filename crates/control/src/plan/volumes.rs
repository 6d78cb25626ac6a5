//! The volume planner: which `Volume` objects to create, and which to delete.
//!
//! A named volume a deployed service mounts is created on the node its replicas run on (so it
//! waits for the service's first replica to be placed); one the file marks `external` is never
//! created here (the deploy refuses a missing one). Volumes outlive replicas, redeploys and
//! the app: only `hivemind rm --volumes` marks them `removing`, and they are deleted once no
//! replica in the store mounts them. A service that mounts a volume marked for removal again
//! (a redeploy before it went) takes it back. Pure: time comes in as an argument.

use std::collections::{BTreeMap, BTreeSet};

use hivemind_types::volume::{volume_key, LOCAL_DRIVER};
use hivemind_types::{Meta, NamedVolume, Volume};

/// A named volume one service mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted<'a> {
    pub namespace: &'a str,
    pub app: &'a str,
    pub volume: &'a NamedVolume,
    /// The nodes the service's replicas are on, sorted; empty before any is placed.
    pub nodes: Vec<&'a str>,
}

/// What to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumePlan {
    pub create: Vec<Volume>,
    /// Volumes to put again with `removing` cleared (a service mounts them again).
    pub reclaim: Vec<Volume>,
    /// Volumes to delete (with the revision they were read at).
    pub delete: Vec<Volume>,
}

impl VolumePlan {
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.reclaim.is_empty() && self.delete.is_empty()
    }
}

/// Plans the volumes. `in_use` holds the keys of volumes a replica in the store mounts.
pub fn plan_volumes(
    wanted: &[Wanted<'_>],
    existing: &[Volume],
    in_use: &BTreeSet<String>,
    now: u64,
) -> VolumePlan {
    let mut plan = VolumePlan::default();
    let existing_by_key: BTreeMap<String, &Volume> =
        existing.iter().map(|v| (v.key(), v)).collect();
    let mut mounted: BTreeSet<String> = BTreeSet::new();
    for w in wanted {
        let key = volume_key(w.namespace, &w.volume.name);
        mounted.insert(key.clone());
        if w.volume.external || plan.create.iter().any(|v| v.key() == key) {
            continue;
        }
        match existing_by_key.get(&key) {
            Some(v) if v.removing => {
                if !plan.reclaim.iter().any(|r| r.key() == key) {
                    plan.reclaim.push(Volume {
                        removing: false,
                        ..(*v).clone()
                    });
                }
            }
            Some(_) => {}
            None => {
                // Where its first replica went; the next run creates it once one is placed.
                let Some(node) = w.nodes.first() else {
                    continue;
                };
                plan.create.push(Volume {
                    namespace: w.namespace.to_string(),
                    app: Some(w.app.to_string()),
                    name: w.volume.name.clone(),
                    driver: LOCAL_DRIVER.to_string(),
                    driver_opts: w.volume.driver_opts.clone(),
                    labels: w.volume.labels.clone(),
                    node: node.to_string(),
                    external: false,
                    removing: false,
                    meta: Meta {
                        created_at: now,
                        ..Meta::default()
                    },
                });
            }
        }
    }
    for v in existing {
        let key = v.key();
        if v.removing && !mounted.contains(&key) && !in_use.contains(&key) {
            plan.delete.push(v.clone());
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> NamedVolume {
        NamedVolume {
            name: name.into(),
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            external: false,
            nocopy: false,
            subpath: None,
            project_prefix: false,
        }
    }

    fn stored(name: &str, removing: bool) -> Volume {
        Volume {
            namespace: "default".into(),
            app: Some("shop".into()),
            name: name.into(),
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels: BTreeMap::new(),
            node: "n1".into(),
            external: false,
            removing,
            meta: Meta {
                revision: 7,
                ..Meta::default()
            },
        }
    }

    /// One row: what services mount (volume, nodes of their replicas), what is stored, what
    /// replicas use; then the names created (with node), reclaimed and deleted.
    struct Case {
        name: &'static str,
        wanted: Vec<(NamedVolume, Vec<&'static str>)>,
        existing: Vec<Volume>,
        in_use: Vec<&'static str>,
        create: Vec<(&'static str, &'static str)>,
        reclaim: Vec<&'static str>,
        delete: Vec<&'static str>,
    }

    #[test]
    fn the_volume_plan_table() {
        let external = NamedVolume {
            external: true,
            ..named("ext")
        };
        let cases = vec![
            Case {
                name: "a new volume goes where its service's replicas are",
                wanted: vec![(named("shop_data"), vec!["n2", "n3"])],
                existing: vec![],
                in_use: vec![],
                create: vec![("shop_data", "n2")],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "it waits for the first replica to be placed",
                wanted: vec![(named("shop_data"), vec![])],
                existing: vec![],
                in_use: vec![],
                create: vec![],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "two services mounting one volume create it once",
                wanted: vec![(named("v"), vec!["n1"]), (named("v"), vec!["n1"])],
                existing: vec![],
                in_use: vec![],
                create: vec![("v", "n1")],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "an existing volume is left alone",
                wanted: vec![(named("shop_data"), vec!["n1"])],
                existing: vec![stored("shop_data", false)],
                in_use: vec!["default/shop_data"],
                create: vec![],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "an external volume is never created",
                wanted: vec![(external, vec!["n1"])],
                existing: vec![],
                in_use: vec![],
                create: vec![],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "volumes outlive their app unless marked",
                wanted: vec![],
                existing: vec![stored("shop_data", false)],
                in_use: vec![],
                create: vec![],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "a marked volume waits for the replicas that mount it",
                wanted: vec![],
                existing: vec![stored("shop_data", true)],
                in_use: vec!["default/shop_data"],
                create: vec![],
                reclaim: vec![],
                delete: vec![],
            },
            Case {
                name: "a marked volume no replica mounts is deleted",
                wanted: vec![],
                existing: vec![stored("shop_data", true), stored("other", false)],
                in_use: vec![],
                create: vec![],
                reclaim: vec![],
                delete: vec!["shop_data"],
            },
            Case {
                name: "a redeploy takes a marked volume back",
                wanted: vec![(named("shop_data"), vec!["n1"])],
                existing: vec![stored("shop_data", true)],
                in_use: vec![],
                create: vec![],
                reclaim: vec!["shop_data"],
                delete: vec![],
            },
        ];
        for case in cases {
            let wanted: Vec<Wanted<'_>> = case
                .wanted
                .iter()
                .map(|(v, nodes)| Wanted {
                    namespace: "default",
                    app: "shop",
                    volume: v,
                    nodes: nodes.clone(),
                })
                .collect();
            let in_use = case.in_use.iter().map(|s| s.to_string()).collect();
            let plan = plan_volumes(&wanted, &case.existing, &in_use, 1_000);
            let created: Vec<(&str, &str)> = plan
                .create
                .iter()
                .map(|v| (v.name.as_str(), v.node.as_str()))
                .collect();
            assert_eq!(created, case.create, "{}: create", case.name);
            let names = |vs: &[Volume]| vs.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&plan.reclaim), case.reclaim, "{}: reclaim", case.name);
            assert_eq!(names(&plan.delete), case.delete, "{}: delete", case.name);
            for v in &plan.create {
                assert_eq!(v.app.as_deref(), Some("shop"), "{}", case.name);
                assert_eq!(v.meta.created_at, 1_000, "{}", case.name);
                assert_eq!(v.driver, "local");
            }
            for v in &plan.reclaim {
                assert!(!v.removing);
                assert_eq!(
                    v.meta.revision, 7,
                    "reclaim is conditioned on what was read"
                );
            }
        }
    }
}
