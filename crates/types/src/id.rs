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
}
