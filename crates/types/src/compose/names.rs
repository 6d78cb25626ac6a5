//! Names as Compose writes them (`plausible_db`, `meet.jitsi`, `Web`) and the DNS-safe names
//! Hivemind uses for them in replica ids, store keys and DNS.
//!
//! Compose accepts `[a-zA-Z0-9][a-zA-Z0-9_.-]*` for services, networks and the app; Hivemind's
//! objects are named by DNS labels. Each name is mapped (lowercase, `_` and `.` to `-`), and the
//! service keeps its name as written as a DNS alias, because Docker's DNS answers it and apps
//! connect to it. Two names with the same mapping would be one object, so they are refused.

use std::collections::BTreeMap;

use super::error::Problems;
use crate::id::is_dns_label;

/// Longest DNS alias accepted: with `.APP.NAMESPACE.hivemind.` appended (three labels of up to
/// 63) the name must stay under DNS's 253 characters, or the zone would skip it.
const MAX_ALIAS_LEN: usize = 60;

/// What a name belongs to: decides the wording of errors and the prefix that makes a name that
/// starts with a digit a DNS label (`2048` -> `svc-2048`).
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    App,
    Service,
    Network,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::App => "app",
            Kind::Service => "service",
            Kind::Network => "network",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Kind::App => "app-",
            Kind::Service => "svc-",
            Kind::Network => "net-",
        }
    }
}

/// Whether Compose accepts `name` for a service, network or project.
pub fn is_compose_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// The DNS label Hivemind uses for a Compose name of `kind`: lowercase, `_` and `.` become `-`,
/// trailing `-` are dropped, and a name that does not start with a letter gets a prefix.
/// The result may still be too long; callers check the length they need.
pub(crate) fn dns_name(kind: Kind, name: &str) -> String {
    let mapped: String = name
        .chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let mapped = mapped.trim_end_matches('-');
    if mapped.starts_with(|c: char| c.is_ascii_lowercase()) {
        mapped.to_string()
    } else {
        format!("{}{mapped}", kind.prefix())
    }
}

/// The DNS name for an app name given outside the file (`--app`, the directory's name): the
/// same mapping as the file's `name:`, or `None` if Compose would refuse the name.
pub fn app_dns_name(name: &str) -> Option<String> {
    is_compose_name(name)
        .then(|| dns_name(Kind::App, name))
        .filter(|n| is_dns_label(n))
}

/// Checks a name as written at `path` and maps it; `None` (with a problem) if Compose would
/// refuse it or the mapped name is longer than `max_len`.
pub(crate) fn read_name(
    p: &mut Problems,
    path: &str,
    kind: Kind,
    name: &str,
    max_len: usize,
) -> Option<String> {
    let word = kind.word();
    if !is_compose_name(name) {
        p.push(
            path,
            format!("{name:?} is not a valid {word} name"),
            format!(
                "{word} names start with a letter or digit and hold only letters, digits, \
                 `_`, `.` and `-`, like web_db or meet.jitsi"
            ),
        );
        return None;
    }
    let mapped = dns_name(kind, name);
    if mapped.len() > max_len {
        p.push(
            path,
            format!(
                "{word} name {name:?} is {} characters as a DNS name ({mapped:?}), more than \
                 the {max_len} a {word} name may have",
                mapped.len()
            ),
            format!("shorten the {word} name to at most {max_len} characters"),
        );
        return None;
    }
    Some(mapped)
}

/// Records the mapping of names of one kind and refuses two names that map to the same DNS
/// name (`web_db` and `web.db`), naming both.
#[derive(Default)]
pub(crate) struct Mapped {
    /// DNS name -> the name as first written.
    seen: BTreeMap<String, String>,
}

impl Mapped {
    /// `false` (with a problem at `path`) if `mapped` is already taken by another name.
    pub(crate) fn claim(
        &mut self,
        p: &mut Problems,
        path: &str,
        kind: Kind,
        name: &str,
        mapped: &str,
    ) -> bool {
        match self.seen.get(mapped) {
            Some(first) => {
                let word = kind.word();
                p.push(
                    path,
                    format!(
                        "{word} names {first:?} and {name:?} are the same DNS name {mapped:?} \
                         (names are lowercased and `_`, `.` become `-`)"
                    ),
                    format!("rename one of the two {word}s"),
                );
                false
            }
            None => {
                self.seen.insert(mapped.to_string(), name.to_string());
                true
            }
        }
    }
}

/// Whether `alias` can be a DNS name of a service: dot-separated labels of letters, digits,
/// `-` and `_` (Docker answers names like `xmpp.meet.jitsi` and `db_1`), short enough to stay a
/// valid name under the app's domain.
pub(crate) fn is_alias(alias: &str) -> bool {
    alias.len() <= MAX_ALIAS_LEN
        && alias.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The fix for an alias that [`is_alias`] refuses.
pub(crate) fn alias_fix() -> String {
    format!(
        "aliases are DNS names of at most {MAX_ALIAS_LEN} characters: labels of letters, digits, \
         `-` and `_` separated by `.`, like db or xmpp.meet.jitsi"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_names_map_to_dns_labels() {
        for (name, dns) in [
            ("web", "web"),
            ("plausible_db", "plausible-db"),
            ("internal_network", "internal-network"),
            ("meet.jitsi", "meet-jitsi"),
            ("Web", "web"),
            ("web_", "web"),
            ("2048", "svc-2048"),
            ("9_lives", "svc-9-lives"),
        ] {
            assert!(is_compose_name(name), "{name}");
            let mapped = dns_name(Kind::Service, name);
            assert_eq!(mapped, dns, "{name}");
            assert!(is_dns_label(&mapped), "{mapped}");
        }
        for bad in ["", "_web", ".web", "-web", "a b", "wéb", "web/1", "a:b"] {
            assert!(!is_compose_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn app_names_from_outside_the_file_are_mapped() {
        assert_eq!(app_dns_name("my_app").as_deref(), Some("my-app"));
        assert_eq!(app_dns_name("Shop").as_deref(), Some("shop"));
        assert_eq!(app_dns_name("a b"), None);
        assert_eq!(app_dns_name(&"a".repeat(64)), None);
    }

    #[test]
    fn aliases() {
        for ok in ["db", "db_1", "xmpp.meet.jitsi", "Web", "my-web-container"] {
            assert!(is_alias(ok), "{ok}");
        }
        for bad in [
            "",
            ".db",
            "db.",
            "a..b",
            "-db",
            "db-",
            "a b",
            "d/b",
            &"a".repeat(61),
        ] {
            assert!(!is_alias(bad), "{bad:?}");
        }
    }
}
