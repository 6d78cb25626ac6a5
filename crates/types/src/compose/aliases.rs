//! The DNS names a service answers besides its own: its name as written when that differs
//! from its DNS name (`plausible_db`), its `container_name`, and the names other services'
//! `links` give it (`db:database`). Network `aliases` are read with the networks.
//!
//! Apps connect to these names, so each becomes a DNS alias on every network of the service.
//! A name that would answer for two services is refused, naming both, since DNS could only
//! pick one at random.

use std::collections::BTreeMap;

use super::error::Problems;
use super::names::{alias_fix, is_alias};
use super::service::ReadService;
use crate::spec::{NetworkAttachment, ServiceSpec, DEFAULT_NETWORK};

/// One service of the file: its name as written, its DNS name (`None` if refused), and what
/// was read (`None` if it is not even a mapping).
pub(crate) struct Entry {
    pub(crate) written: String,
    pub(crate) dns: Option<String>,
    pub(crate) read: Option<ReadService>,
}

/// Adds every alias to the services of `entries` and reports clashes.
pub(crate) fn resolve(p: &mut Problems, entries: &mut [Entry]) {
    // Lowercase name -> index of the service it answers for.
    let mut owners: BTreeMap<String, usize> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if let Some(dns) = &e.dns {
            owners.insert(dns.clone(), i);
        }
    }
    for (i, e) in entries.iter_mut().enumerate() {
        let Some(dns) = &e.dns else { continue };
        let written = e.written.to_ascii_lowercase();
        if written != *dns {
            if let Some(spec) = e.read.as_mut().and_then(|r| r.spec.as_mut()) {
                add_alias(spec, &written);
            }
            owners.entry(written).or_insert(i);
        }
    }

    // Wanted aliases: (path, alias, target index) in file order.
    let mut wanted = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let Some(read) = &e.read else { continue };
        if let Some((path, name)) = &read.container_name {
            wanted.push((path.clone(), name.clone(), i, "container_name"));
        }
        for link in &read.links {
            let target = entries.iter().position(|t| {
                t.written == link.target || t.dns.as_deref() == Some(link.target.as_str())
            });
            let Some(target) = target else {
                let known: Vec<&str> = entries.iter().map(|t| t.written.as_str()).collect();
                p.push(
                    &link.path,
                    format!(
                        "links to {:?}, which is not a service of this file",
                        link.target
                    ),
                    format!(
                        "link one of the services ({}), or remove the link: services of an \
                         app reach each other by service name",
                        known.join(", ")
                    ),
                );
                continue;
            };
            if let Some(alias) = &link.alias {
                wanted.push((link.path.clone(), alias.clone(), target, "link"));
            }
        }
    }

    for (path, alias, target, what) in wanted {
        let lower = alias.to_ascii_lowercase();
        if !is_alias(&lower) {
            p.push(
                &path,
                format!("{alias:?} is not a valid {what} name"),
                alias_fix(),
            );
            continue;
        }
        match owners.get(&lower) {
            Some(&owner) if owner != target => {
                p.push(
                    &path,
                    format!(
                        "{what} {alias:?} would name service {:?}, but {:?} already names \
                         service {:?}",
                        entries[target].written, lower, entries[owner].written
                    ),
                    format!("choose a {what} that is not the name of another service"),
                );
            }
            Some(_) => {}
            None => {
                owners.insert(lower.clone(), target);
                if let Some(spec) = entries[target].read.as_mut().and_then(|r| r.spec.as_mut()) {
                    add_alias(spec, &lower);
                }
            }
        }
    }
}

/// Makes `alias` answer for `spec` on each of its networks (on `default` if it lists none).
fn add_alias(spec: &mut ServiceSpec, alias: &str) {
    if spec.networks.is_empty() {
        // An empty map is `default`, not internal (an internal `default` is written out).
        spec.networks
            .insert(DEFAULT_NETWORK.to_string(), NetworkAttachment::default());
    }
    for attachment in spec.networks.values_mut() {
        if !attachment.aliases.iter().any(|a| a == alias) {
            attachment.aliases.push(alias.to_string());
        }
    }
}
