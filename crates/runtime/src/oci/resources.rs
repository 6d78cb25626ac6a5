//! `linux.resources` from a service's `deploy.resources`: CFS quota and shares, memory limit,
//! swap and soft limit, pids limit. Pure; the device rules come from the caller.
//!
//! Units follow Docker: a CPU limit is a quota over a 100 ms period (`cpus * 100000` µs), a CPU
//! reservation becomes shares (`cpus * 1024`, at least 2, the kernel's minimum), and a memory
//! limit without a swap setting allows as much swap again, i.e. the OCI `swap` (memory plus swap)
//! is twice the limit, as `docker run --memory` does when `--memory-swap` is unset. On a host
//! without swap, as ours, that makes no difference: the OOM killer acts at the limit.

use hivemind_types::Resources;
use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxPids, LinuxResources};

/// The CFS period Docker uses, in microseconds.
const CFS_PERIOD_US: u64 = 100_000;

const NANOS_PER_CPU: u128 = 1_000_000_000;

pub(super) fn linux_resources(
    resources: &Resources,
    devices: Vec<LinuxDeviceCgroup>,
) -> LinuxResources {
    let mut out = LinuxResources::default();
    out.set_devices(Some(devices));
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);

    let quota = resources
        .cpu_limit_nanos
        .map(|nanos| u128::from(nanos) * u128::from(CFS_PERIOD_US) / NANOS_PER_CPU);
    let shares = resources
        .cpu_reservation_nanos
        .map(|nanos| (u128::from(nanos) * 1024 / NANOS_PER_CPU).max(2));
    if quota.is_some() || shares.is_some() {
        let mut cpu = LinuxCpu::default();
        if let Some(quota) = quota {
            // The kernel refuses quotas below 1 ms.
            cpu.set_quota(Some(i64::try_from(quota.max(1000)).unwrap_or(i64::MAX)));
            cpu.set_period(Some(CFS_PERIOD_US));
        }
        cpu.set_shares(shares.map(|s| u64::try_from(s).unwrap_or(u64::MAX)));
        out.set_cpu(Some(cpu));
    }

    if resources.memory_limit_bytes.is_some() || resources.memory_reservation_bytes.is_some() {
        let mut memory = LinuxMemory::default();
        if let Some(limit) = resources.memory_limit_bytes {
            memory.set_limit(Some(to_i64(limit)));
            memory.set_swap(Some(to_i64(limit.saturating_mul(2))));
        }
        memory.set_reservation(resources.memory_reservation_bytes.map(to_i64));
        out.set_memory(Some(memory));
    }

    if let Some(pids) = resources.pids_limit {
        let mut limit = LinuxPids::default();
        limit.set_limit(to_i64(pids));
        out.set_pids(Some(limit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn json_of(resources: Resources) -> Value {
        serde_json::to_value(linux_resources(&resources, Vec::new())).unwrap()
    }

    #[test]
    fn resources_map_like_docker() {
        let table = [
            (Resources::default(), json!({"devices": []})),
            (
                Resources {
                    cpu_limit_nanos: Some(500_000_000),
                    ..Default::default()
                },
                json!({"devices": [], "cpu": {"quota": 50000, "period": 100000}}),
            ),
            (
                Resources {
                    cpu_limit_nanos: Some(2_000_000_000),
                    cpu_reservation_nanos: Some(250_000_000),
                    ..Default::default()
                },
                json!({"devices": [], "cpu": {"shares": 256, "quota": 200000, "period": 100000}}),
            ),
            (
                Resources {
                    cpu_limit_nanos: Some(1_000_000),
                    cpu_reservation_nanos: Some(1),
                    ..Default::default()
                },
                json!({"devices": [], "cpu": {"shares": 2, "quota": 1000, "period": 100000}}),
            ),
            (
                Resources {
                    memory_limit_bytes: Some(64 << 20),
                    ..Default::default()
                },
                json!({"devices": [], "memory": {"limit": 67108864, "swap": 134217728}}),
            ),
            (
                Resources {
                    memory_reservation_bytes: Some(32 << 20),
                    ..Default::default()
                },
                json!({"devices": [], "memory": {"reservation": 33554432}}),
            ),
            (
                Resources {
                    pids_limit: Some(20),
                    ..Default::default()
                },
                json!({"devices": [], "pids": {"limit": 20}}),
            ),
        ];
        for (resources, want) in table {
            assert_eq!(json_of(resources.clone()), want, "{resources:?}");
        }
    }
}
