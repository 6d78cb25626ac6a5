//! Which keys Hivemind reads, which Compose keys it knows but does not honour yet, and the
//! "did you mean" suggestions for the rest.
//!
//! Keeping the tables here, apart from the readers, makes it easy to move a key from "not
//! supported yet" to supported: delete it from one table and read it in `service.rs`.

use super::error::Problems;
use super::value::join;
use super::warnings::Unhonoured;

/// Service keys Hivemind reads (or rejects with a specific message, like `build`).
pub(crate) const SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "labels",
    "ports",
    "expose",
    "restart",
    "stop_signal",
    "stop_grace_period",
    "user",
    "working_dir",
    "deploy",
    "container_name",
    "pull_policy",
    "networks",
    "read_only",
    "cap_add",
    "cap_drop",
    "tmpfs",
    "ulimits",
    "init",
    "hostname",
    "extra_hosts",
    "logging",
    "links",
    "cpus",
    "mem_limit",
    "mem_reservation",
    "pids_limit",
    "profiles",
];

/// Service keys Hivemind accepts without acting on them, because a service works without
/// them; each is a warning saying what happens instead.
const SERVICE_KEYS_WARNED: &[(&str, &str)] = &[
    (
        "annotations",
        "ignored: containers carry the service's labels only",
    ),
    (
        "dns",
        "ignored: replicas use the cluster DNS, which forwards other names to the node's resolvers",
    ),
    (
        "dns_opt",
        "ignored: replicas use the cluster DNS with the node's resolver options",
    ),
    (
        "dns_search",
        "ignored: short names are completed within the app by the cluster DNS",
    ),
    (
        "domainname",
        "ignored: the container's hostname is its replica id, without a domain",
    ),
    (
        "mac_address",
        "ignored: replica interfaces get addresses from the node",
    ),
    (
        "platform",
        "not checked yet: the image is pulled for the node's own platform",
    ),
    (
        "shm_size",
        "ignored: /dev/shm stays 64 MiB (Docker's default); a program that needs more shared memory fails when it runs out",
    ),
    (
        "stdin_open",
        "ignored: the container's stdin is empty, so a program that waits on it (an interactive shell) exits at once",
    ),
    (
        "tty",
        "ignored: the container gets no terminal; its output is still logged",
    ),
];

/// Service keys of the Compose Specification that Hivemind does not honour yet, with advice
/// for the ones where there is something better to say than "remove it".
const SERVICE_KEYS_NOT_YET: &[(&str, &str)] = &[
    ("attach", ""),
    ("blkio_config", ""),
    ("cgroup", ""),
    ("cgroup_parent", ""),
    ("configs", ""),
    ("cpu_count", ""),
    ("cpu_percent", ""),
    ("cpu_period", ""),
    ("cpu_quota", ""),
    ("cpu_rt_period", ""),
    ("cpu_rt_runtime", ""),
    ("cpu_shares", ""),
    ("cpuset", ""),
    ("credential_spec", ""),
    (
        "depends_on",
        "services start in any order, so make the service retry connecting to its dependencies",
    ),
    ("develop", ""),
    ("device_cgroup_rules", ""),
    ("devices", ""),
    ("driver_opts", ""),
    (
        "extends",
        "copy the settings into the service, or share them with a YAML anchor and `<<` merge key",
    ),
    (
        "external_links",
        "services of an app reach each other by service name",
    ),
    ("gpus", ""),
    ("group_add", ""),
    (
        "healthcheck",
        "Hivemind considers a running container healthy for now",
    ),
    ("ipc", ""),
    ("isolation", ""),
    ("label_file", "list the labels under `labels`"),
    ("mem_swappiness", ""),
    ("memswap_limit", ""),
    ("models", ""),
    (
        "network_mode",
        "list the service's app networks under `networks`",
    ),
    ("oom_kill_disable", ""),
    ("oom_score_adj", ""),
    ("pid", ""),
    ("post_start", ""),
    ("pre_stop", ""),
    ("privileged", ""),
    ("provider", ""),
    ("runtime", ""),
    ("scale", "set `deploy.replicas` instead"),
    ("secrets", ""),
    ("security_opt", ""),
    ("storage_opt", ""),
    ("sysctls", ""),
    ("use_api_socket", ""),
    ("userns_mode", ""),
    ("uts", ""),
    ("volumes", ""),
    ("volumes_from", ""),
];

/// Keys under `deploy` that Hivemind reads.
pub(crate) const DEPLOY_KEYS: &[&str] = &["mode", "replicas", "restart_policy", "resources"];

const DEPLOY_KEYS_NOT_YET: &[(&str, &str)] = &[];

/// Keys under `deploy` that a service works without; each is a warning.
const DEPLOY_KEYS_WARNED: &[(&str, &str)] = &[
    (
        "endpoint_mode",
        "ignored: services always get a virtual IP, which their DNS name answers",
    ),
    (
        "labels",
        "ignored: put service labels under the service's `labels`",
    ),
    (
        "placement",
        "ignored: the scheduler spreads replicas over all nodes",
    ),
    (
        "rollback_config",
        "ignored: `hivemind rollout undo` rolls back, replacing every replica at once",
    ),
    (
        "update_config",
        "ignored: all replicas are replaced at once; choose a rollout strategy with `x-hivemind.strategy`",
    ),
];

/// Top-level keys of the Compose Specification that Hivemind does not honour yet.
const TOP_KEYS_NOT_YET: &[(&str, &str)] = &[
    ("configs", ""),
    ("include", "merge the included files into one"),
    ("models", ""),
    ("secrets", ""),
    ("volumes", ""),
];

/// Top-level keys Hivemind reads.
pub(crate) const TOP_KEYS: &[&str] = &["name", "services", "networks", "version"];

/// Keys with a message each.
type Table = &'static [(&'static str, &'static str)];

/// Where a key was found, which decides the tables consulted.
#[derive(Clone, Copy)]
pub(crate) enum Section {
    Top,
    Service,
    Deploy,
}

impl Section {
    /// The keys read, the keys refused as not supported yet, the keys warned about.
    fn tables(self) -> (&'static [&'static str], Table, Table) {
        match self {
            Section::Top => (TOP_KEYS, TOP_KEYS_NOT_YET, &[]),
            Section::Service => (SERVICE_KEYS, SERVICE_KEYS_NOT_YET, SERVICE_KEYS_WARNED),
            Section::Deploy => (DEPLOY_KEYS, DEPLOY_KEYS_NOT_YET, DEPLOY_KEYS_WARNED),
        }
    }
}

/// Reports a key that is not read in `section`: a warning for keys a service works without,
/// "not supported yet" for other known Compose keys, an unknown-key error (with a suggestion when one is close) for anything else.
pub(crate) fn reject_key(p: &mut Problems, section: Section, base: &str, key: &str) {
    let (known, not_yet, warned) = section.tables();
    let path = join(base, key);
    if let Some((_, message)) = warned.iter().find(|(k, _)| *k == key) {
        p.note(&path, Unhonoured::Ignored(message));
        return;
    }
    if let Some((_, advice)) = not_yet.iter().find(|(k, _)| *k == key) {
        let fix = if advice.is_empty() {
            "remove it; Hivemind will honour it in a later release".to_string()
        } else {
            format!("remove it; {advice}")
        };
        p.push(&path, format!("`{path}` is not supported yet"), fix);
        return;
    }
    let candidates = known
        .iter()
        .copied()
        .chain(not_yet.iter().chain(warned).map(|(k, _)| *k));
    unknown_key(p, &path, key, candidates);
}

/// Reports `key` at `path` as unknown, suggesting the closest of `candidates` when it is a near
/// miss (edit distance at most 2).
pub(crate) fn unknown_key<'a>(
    p: &mut Problems,
    path: &str,
    key: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) {
    let fix = match suggest(key, candidates) {
        Some(best) => format!("did you mean `{best}`?"),
        None => "remove it, or prefix it with `x-` to keep custom data".to_string(),
    };
    p.push(path, format!("unknown key `{key}`"), fix);
}

/// Whether an `x-` key is probably a misspelt `x-hivemind`: other `x-` keys are the user's own
/// and ignored, but a typo here would silently drop the Hivemind settings.
pub(crate) fn is_near_hivemind(key: &str) -> bool {
    key != "x-hivemind" && edit_distance(&key.to_ascii_lowercase(), "x-hivemind") <= 2
}

fn suggest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lowered = key.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lowered, c), c))
        // A two-letter key is two edits away from any other two-letter key: require the
        // distance to be smaller than the key so that suggestions stay meaningful.
        .filter(|(d, _)| *d <= 2 && *d < key.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, so `imgae`
/// is one edit from `image`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Keys are short; the full table is cheap and keeps the transposition rule simple.
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = SERVICE_KEYS.iter().copied();
        assert_eq!(suggest("enviroment", keys.clone()), Some("environment"));
        assert_eq!(suggest("imgae", keys.clone()), Some("image"));
        assert_eq!(suggest("Image", keys.clone()), Some("image"));
        assert_eq!(suggest("frobnicate", keys), None);
    }
}
