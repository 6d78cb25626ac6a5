//! Resource limits, privileges and identity of a service's containers: the normalized form of
//! Compose `deploy.resources`, `read_only`, `cap_add`/`cap_drop`, `tmpfs`, `ulimits`, `init`,
//! `hostname` and `extra_hosts`.
//!
//! Values are already validated and in the units the kernel takes (bytes, CFS microseconds via
//! nano-CPUs); the agent only maps them onto the OCI spec. Every field is left out of the JSON
//! when unset, so that specs written before these existed keep their revision hash.

use serde::{Deserialize, Serialize};

/// `deploy.resources`: hard limits and soft reservations. CPUs are kept in billionths of a CPU
/// (Docker's `NanoCPUs`), so that the spec needs no floating point and hashes stably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// `limits.cpus`: becomes a CFS quota over a 100 ms period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit_nanos: Option<u64>,
    /// `limits.memory` in bytes: the hard limit; the OOM killer acts beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// `limits.pids`: the most tasks (processes and threads) the container may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
    /// `reservations.cpus`: becomes CPU shares (1024 per CPU), a weight under contention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_reservation_nanos: Option<u64>,
    /// `reservations.memory` in bytes: the soft limit the kernel reclaims towards under pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_reservation_bytes: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }
}

/// A tmpfs mounted in the container (Compose `tmpfs: /tmp:size=64m,mode=1777`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Absolute path inside the container.
    pub target: String,
    /// Mount options as written (`size=64m`, `mode=1777`, `noexec`, ...), validated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// One resource limit of the process (Compose `ulimits`); a single number sets both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub soft: u64,
    pub hard: u64,
}

/// An entry appended to the container's /etc/hosts (Compose `extra_hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    /// An IPv4 or IPv6 address, validated, without brackets.
    pub ip: String,
}

/// The value of `cap_add`/`cap_drop` that means every capability.
pub const ALL_CAPABILITIES: &str = "ALL";

/// Every Linux capability by its `CAP_` name (capabilities(7), up to Linux 5.9).
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
];

/// The `ulimits` names Docker accepts; each is `RLIMIT_<NAME>` in the OCI spec.
pub const ULIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// `64 MiB`, `1.5 GiB`, `512 B`: a size as people write memory limits, for messages.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            return if n.is_multiple_of(size) {
                format!("{} {unit}", n / size)
            } else {
                format!("{:.1} {unit}", n as f64 / size as f64)
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod human_bytes_tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_bytes(512), "512 B");
    }
}
