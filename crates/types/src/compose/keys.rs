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
    "secrets",
    "configs",
    "cpus",
    "mem_limit",
    "mem_reservation",
    "pids_limit",
    "profiles",
    "healthcheck",
    "depends_on",
    "volumes",
    "volumes_from",
];

/// Service keys Hivemind accepts without acting on them, because a service works without
/// them; each is a warning saying what happens instead.
const SERVICE_KEYS_WARNED: &[(&str, &str)] = &[
    (
        "annotations",
        "ignored: containers carry the service's labels only",
    ),
    ("attach", "ignored: `hivemind logs -f` follows a service's output"),
    (
        "cpu_shares",
        "ignored: replicas get equal CPU weights; limit CPUs with `cpus`",
    ),
    (
        "credential_spec",
        "ignored: it applies to Windows containers only",
    ),
    (
        "develop",
        "ignored: `docker compose watch` settings have no meaning on a cluster",
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
        "isolation",
        "ignored: it applies to Windows containers only",
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
    (
        "blkio_config",
        "disk I/O is shared without weights or limits",
    ),
    ("cgroup", "replicas get a cgroup namespace of their own"),
    (
        "cgroup_parent",
        "replicas run in the cgroup the node's runtime gives them",
    ),
    (
        "cpu_count",
        "limit CPUs with `cpus` or `deploy.resources.limits.cpus`",
    ),
    (
        "cpu_percent",
        "limit CPUs with `cpus` or `deploy.resources.limits.cpus`",
    ),
    (
        "cpu_period",
        "limit CPUs with `cpus` or `deploy.resources.limits.cpus`",
    ),
    (
        "cpu_quota",
        "limit CPUs with `cpus` or `deploy.resources.limits.cpus`",
    ),
    (
        "cpu_rt_period",
        "real-time scheduling is not available to replicas",
    ),
    (
        "cpu_rt_runtime",
        "real-time scheduling is not available to replicas",
    ),
    (
        "cpuset",
        "limit CPUs with `cpus` or `deploy.resources.limits.cpus`",
    ),
    (
        "device_cgroup_rules",
        "replicas get the default devices only",
    ),
    (
        "devices",
        "replicas get the standard devices only (/dev/null, /dev/zero, /dev/urandom...)",
    ),
    ("driver_opts", ""),
    (
        "extends",
        "copy the settings into the service, or share them with a YAML anchor and `<<` merge key",
    ),
    (
        "external_links",
        "services of an app reach each other by service name",
    ),
    ("gpus", "replicas get no GPUs yet"),
    (
        "group_add",
        "run as a user whose groups the image defines, with `user`",
    ),
    (
        "ipc",
        "each replica has its own IPC namespace; share data over the network",
    ),
    ("label_file", "list the labels under `labels`"),
    (
        "mem_swappiness",
        "limit memory with `mem_limit` or `deploy.resources.limits.memory`",
    ),
    (
        "memswap_limit",
        "limit memory with `mem_limit` or `deploy.resources.limits.memory`",
    ),
    ("models", ""),
    (
        "network_mode",
        "list the service's app networks under `networks`",
    ),
    (
        "oom_kill_disable",
        "set a memory limit large enough instead",
    ),
    ("oom_score_adj", ""),
    ("pid", "each replica has its own PID namespace"),
    ("post_start", "run the step in the image's entrypoint"),
    (
        "pre_stop",
        "handle the stop signal (`stop_signal`) in the program",
    ),
    (
        "privileged",
        "grant only the capabilities the program needs with `cap_add`",
    ),
    ("provider", ""),
    (
        "runtime",
        "replicas run with the node's default OCI runtime",
    ),
    ("scale", "set `deploy.replicas` instead"),
    (
        "security_opt",
        "adjust privileges with `cap_add`, `cap_drop` and `read_only` instead",
    ),
    (
        "storage_opt",
        "the container's writable layer has no size quota",
    ),
    ("sysctls", "set the values on the node, or in the program"),
    ("use_api_socket", "Hivemind has no Docker API to share"),
    (
        "userns_mode",
        "replicas share the node's user namespace; choose the user with `user`",
    ),
    ("uts", "the hostname is the replica id, or `hostname`"),
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
    ("include", "merge the included files into one"),
    ("models", ""),
];

/// Top-level keys Hivemind reads.
pub(crate) const TOP_KEYS: &[&str] = &[
    "name", "services", "networks", "version", "volumes", "secrets", "configs",
];

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
