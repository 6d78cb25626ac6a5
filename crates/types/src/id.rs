//! Short, readable, stable identifiers (SPEC §1): replica `web-3f9k2` = service name + 5 chars.

use rand::Rng;

const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A fresh replica id for `service`: the service name, a dash and five random characters drawn
/// from an alphabet without vowels (no accidental words) and without look-alikes (0/o, 1/l).
pub fn replica_id(service: &str) -> String {
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
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
    use super::*;

    #[test]
    fn replica_ids_are_prefixed_and_short() {
        let id = replica_id("web");
        assert!(id.starts_with("web-"));
        assert_eq!(id.len(), "web-".len() + 5);
        assert_ne!(replica_id("web"), replica_id("web"));
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
