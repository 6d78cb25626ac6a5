//! Short, readable, stable identifiers (SPEC §1): replica `web-3f9k2` = service name + a random
//! suffix of 5 characters, longer for large services so that collisions stay improbable.
//!
//! A replica id is its container's hostname, so it must be a DNS label (at most 63 characters):
//! service names are capped at [`MAX_SERVICE_NAME_LEN`] to leave room for the longest suffix.

use rand::Rng;

use crate::spec::MAX_REPLICAS;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The suffix length of small services (SPEC §1's `web-3f9k2`).
pub const MIN_SUFFIX_LEN: usize = 5;

/// The suffix length of a service of [`MAX_REPLICAS`] replicas, the longest there is.
pub const MAX_SUFFIX_LEN: usize = suffix_len(MAX_REPLICAS);

/// The longest service name whose replica ids (`NAME-` + up to [`MAX_SUFFIX_LEN`] characters)
/// are still valid hostnames (DNS labels of at most 63 characters).
pub const MAX_SERVICE_NAME_LEN: usize = 63 - 1 - MAX_SUFFIX_LEN;

/// The suffix length for a service of `replicas` replicas: the shortest (at least 5) whose id
/// space is at least `replicas²`. Then the expected number of colliding pairs among the
/// service's ids stays under one half (birthday bound n²/2N), and a fresh id collides with an
/// existing one with probability at most 1/n. Collisions are still checked (see the service
/// controller); this only keeps the retries rare.
pub const fn suffix_len(replicas: u32) -> usize {
    let need = (replicas as u128) * (replicas as u128);
    let mut len = MIN_SUFFIX_LEN;
    let mut space = (ALPHABET.len() as u128).pow(MIN_SUFFIX_LEN as u32);
    while space < need {
        space *= ALPHABET.len() as u128;
        len += 1;
    }
    len
}

/// A fresh replica id for a service named `service` that wants `replicas` replicas: the service
/// name, a dash and [`suffix_len`] random characters drawn from an alphabet without vowels (no
/// accidental words) and without look-alikes (0/o, 1/l). Uniqueness is the caller's to check.
pub fn replica_id(service: &str, replicas: u32) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..suffix_len(replicas))
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{service}-{suffix}")
}

/// Whether `name` is a valid DNS label as used for app, service, namespace and network names:
/// 1-63 chars of lowercase letters, digits and `-`, starting with a letter, not ending in `-`.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// The longest suffix a replica id may carry after its service name's dash.
const MAX_SUFFIX: usize = 16;

/// Whether `id` has the syntax of a replica id: a service name (a DNS label), a dash and a
/// suffix of 1-16 lowercase letters and digits (`web-3f9k2`). Ids from requests are checked
/// against it before they reach a file path or a store key, so that `..`, `/` or `%00` in a
/// request never name anything else.
pub fn is_replica_id(id: &str) -> bool {
    id.rsplit_once('-').is_some_and(|(service, suffix)| {
        is_dns_label(service)
            && (1..=MAX_SUFFIX).contains(&suffix.len())
            && suffix
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// Whether `name` can be a node's name: a host name of 1-253 ASCII letters, digits, `-`, `.`
/// and `_`, starting and ending with a letter or digit (nodes are named after their host by
/// default, and host names are not always lowercase).
pub fn is_node_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(c))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn replica_ids_are_prefixed_and_short() {
        let id = replica_id("web", 3);
        assert!(id.starts_with("web-"));
        assert_eq!(id.len(), "web-".len() + 5);
        assert_ne!(replica_id("web", 3), replica_id("web", 3));
    }

    #[test]
    fn large_services_get_longer_suffixes() {
        assert_eq!(suffix_len(0), 5);
        assert_eq!(suffix_len(3_000), 5);
        assert_eq!(suffix_len(10_000), 6);
        assert_eq!(suffix_len(MAX_REPLICAS), 7);
        assert_eq!(MAX_SUFFIX_LEN, 7);
        assert_eq!(replica_id("web", MAX_REPLICAS).len(), "web-".len() + 7);
        // 100,000 draws at the largest size: collisions are rare, not absent (the controller
        // checks), and far below the 5-character suffix's hundreds.
        let mut seen = HashSet::new();
        let dups = (0..100_000)
            .filter(|_| !seen.insert(replica_id("web", MAX_REPLICAS)))
            .count();
        assert!(dups < 10, "{dups} collisions");
    }

    #[test]
    fn the_longest_service_name_still_gives_hostname_ids() {
        let name = "a".repeat(MAX_SERVICE_NAME_LEN);
        let id = replica_id(&name, MAX_REPLICAS);
        assert!(is_dns_label(&id), "{id} ({} chars)", id.len());
        assert_eq!(id.len(), 63);
    }

    #[test]
    fn dns_labels() {
        for ok in ["web", "a", "shop-api", "x1"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "Web", "1web", "web-", "we_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn replica_ids() {
        for ok in [
            "web-3f9k2",
            "web-1",
            "shop-api-bcdfg",
            &replica_id("web", 1),
        ] {
            assert!(is_replica_id(ok), "{ok}");
        }
        for bad in [
            "",
            "web",
            "-1",
            "web-",
            "Web-3f9k2",
            "web-3F9K2",
            "..",
            "../etc",
            "%2Fetc",
            "/etc",
            "web-3f9k2/..",
            "web-é",
            "1e30",
            "NaN",
            "web-\0",
            &format!("web-{}", "a".repeat(17)),
        ] {
            assert!(!is_replica_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn node_names() {
        for ok in [
            "n1",
            "node-a",
            "ip-10-0-0-1.ec2.internal",
            "MyHost",
            "sim_0001",
        ] {
            assert!(is_node_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-1",
            "..",
            "../",
            "a/b",
            "a.",
            "é",
            "n\0",
            &"a".repeat(254),
        ] {
            assert!(!is_node_name(bad), "{bad:?}");
        }
    }
}
