//! System tests of limits and identity on real containers: cgroup values from
//! `deploy.resources`, an OOM kill at the memory limit, a read-only root with a tmpfs, dropped
//! capabilities, ulimits, hostname and extra hosts, and `init`.
//!
//! Cgroup files are found through `/proc/<pid>/cgroup`, so the tests read the v1 hierarchy on a
//! hybrid host and the unified one on a pure v2 host.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hivemind_runtime::{ContainerRuntime, CreateOptions};
use hivemind_types::{ExtraHost, Replica, Resources, TmpfsMount, Ulimit};

use super::{replica, unique_id, TestEnv};

/// The cgroup directory of `pid` for a v1 `controller`, or its unified directory.
fn cgroup_dir(pid: u32, controller: &str) -> PathBuf {
    let table = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    let mut unified = None;
    for line in table.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next().unwrap_or(""), fields.next());
        let path = path.unwrap_or("").trim_start_matches('/');
        if controllers.split(',').any(|c| c == controller) {
            return PathBuf::from(format!("/sys/fs/cgroup/{controllers}/{path}"));
        }
        if controllers.is_empty() {
            unified = Some(PathBuf::from(format!("/sys/fs/cgroup/{path}")));
        }
    }
    unified.expect("no cgroup for the controller")
}

/// Reads a cgroup file of `pid`: the v1 name, else the v2 name in the unified directory.
fn cgroup_read(pid: u32, controller: &str, v1: &str, v2: &str) -> String {
    let dir = cgroup_dir(pid, controller);
    std::fs::read_to_string(dir.join(v1))
        .or_else(|_| std::fs::read_to_string(dir.join(v2)))
        .unwrap_or_else(|e| panic!("read {v1}/{v2} in {}: {e}", dir.display()))
        .trim()
        .to_string()
}

async fn create_and_start(env: &TestEnv, r: &Replica) -> u32 {
    env.runtime
        .create(r, &CreateOptions::default())
        .await
        .expect("create");
    env.runtime.start(&r.id).await.expect("start")
}

async fn wait_for_log(env: &TestEnv, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = env.log(id, "stdout");
        if out.contains(needle) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in stdout {out:?}, stderr {:?}",
            env.log(id, "stderr")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn resources_set_the_cgroup() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let mut r = replica(&unique_id("lim"), &["sleep", "1000"]);
    r.spec.resources = Resources {
        cpu_limit_nanos: Some(500_000_000),
        memory_limit_bytes: Some(64 << 20),
        pids_limit: Some(20),
        cpu_reservation_nanos: Some(250_000_000),
        memory_reservation_bytes: Some(32 << 20),
    };
    let pid = create_and_start(&env, &r).await;
    let read = |c, v1, v2| cgroup_read(pid, c, v1, v2);
    assert_eq!(
        read("memory", "memory.limit_in_bytes", "memory.max"),
        "67108864"
    );
    assert_eq!(
        read("memory", "memory.soft_limit_in_bytes", "memory.low"),
        "33554432"
    );
    if cgroup_dir(pid, "cpu").join("cpu.cfs_quota_us").exists() {
        assert_eq!(read("cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us", ""), "100000");
        assert_eq!(read("cpu", "cpu.shares", ""), "256");
    } else {
        assert_eq!(read("cpu", "", "cpu.max"), "50000 100000");
    }
    assert_eq!(read("pids", "pids.max", "pids.max"), "20");
    env.runtime.remove(&r.id).await.unwrap();
}

#[tokio::test]
async fn memory_limit_oom_kills_with_137() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    // Doubling a shell variable needs twice its size at each step: past 64 MiB within seconds.
    let mut r = replica(
        &unique_id("oom"),
        &["sh", "-c", "x=a; while true; do x=$x$x; done"],
    );
    r.spec.resources.memory_limit_bytes = Some(64 << 20);
    let pid = create_and_start(&env, &r).await;
    let memory = cgroup_dir(pid, "memory");
    assert_eq!(env.wait_stopped(&r.id).await, 137);
    // The stopped task's cgroup stays until the task is deleted: it records the kill.
    let oom = std::fs::read_to_string(memory.join("memory.oom_control"))
        .or_else(|_| std::fs::read_to_string(memory.join("memory.events")))
        .expect("oom counters");
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .expect("an oom_kill line");
    assert!(kills >= 1, "{oom}");
    env.runtime.remove(&r.id).await.unwrap();
}

#[tokio::test]
async fn read_only_root_caps_ulimits_hostname_and_extra_hosts() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let script = "touch /probe 2>/dev/null && echo root:writable || echo root:read-only; \
                  echo ok > /tmp/probe && echo tmp:$(cat /tmp/probe); \
                  grep CapEff /proc/1/status; \
                  echo nofile:$(ulimit -n); \
                  echo hostname:$(hostname) file:$(cat /etc/hostname) env:$HOSTNAME; \
                  grep -E 'db|front' /etc/hosts; echo done";
    let mut r = replica(&unique_id("ro"), &["sh", "-c", script]);
    r.spec.read_only = true;
    r.spec.tmpfs = vec![TmpfsMount {
        target: "/tmp".into(),
        options: vec!["size=1m".into()],
    }];
    r.spec.cap_drop = vec!["ALL".into()];
    r.spec.ulimits.insert(
        "nofile".into(),
        Ulimit {
            soft: 1000,
            hard: 1000,
        },
    );
    r.spec.hostname = Some("front".into());
    r.spec.extra_hosts = vec![ExtraHost {
        name: "db".into(),
        ip: "10.0.0.5".into(),
    }];
    create_and_start(&env, &r).await;
    let out = wait_for_log(&env, &r.id, "done").await;
    for want in [
        "root:read-only\n",
        "tmp:ok\n",
        "CapEff:\t0000000000000000\n",
        "nofile:1000\n",
        "hostname:front file:front env:front\n",
        "\tfront\n",
        "10.0.0.5\tdb\n",
    ] {
        assert!(out.contains(want), "{want:?} not in {out:?}");
    }
    assert_eq!(env.wait_stopped(&r.id).await, 0);
    env.runtime.remove(&r.id).await.unwrap();
}

#[tokio::test]
async fn init_forwards_sigterm_to_the_process() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    if !std::path::Path::new("/usr/bin/tini-static").exists() {
        panic!("init needs Debian's tini package: apt-get install tini");
    }
    env.import_busybox().await;
    let mut r = replica(
        &unique_id("init"),
        &[
            "sh",
            "-c",
            "echo pid1:$(cat /proc/1/cmdline | tr '\\0' ' '); exec sleep 1000",
        ],
    );
    r.spec.init = true;
    create_and_start(&env, &r).await;
    let out = wait_for_log(&env, &r.id, "pid1:").await;
    assert!(out.contains("pid1:/sbin/hivemind-init -- sh"), "{out}");
    // Without init, `sleep` as PID 1 ignores SIGTERM (137 after the grace period); under init
    // it gets the signal and dies of it.
    let t = Instant::now();
    let code = env
        .runtime
        .stop(&r.id, "SIGTERM", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(code, Some(143));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    env.runtime.remove(&r.id).await.unwrap();
}

#[tokio::test]
async fn a_ulimit_runc_cannot_set_fails_the_start_with_its_reason() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    env.import_busybox().await;
    let mut r = replica(&unique_id("ulim"), &["sleep", "1"]);
    // Above fs.nr_open (1048576 by default): setrlimit fails even for root.
    r.spec.ulimits.insert(
        "nofile".into(),
        Ulimit {
            soft: 1 << 30,
            hard: 1 << 30,
        },
    );
    env.runtime
        .create(&r, &CreateOptions::default())
        .await
        .expect("create");
    let err = env.runtime.start(&r.id).await.unwrap_err();
    let text = format!("{err} {:?}", std::error::Error::source(&err));
    assert!(text.contains("rlimit"), "{text}");
    env.runtime.remove(&r.id).await.unwrap();
}
