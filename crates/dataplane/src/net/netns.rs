//! Named network namespaces, the `ip netns` way: a namespace is kept alive by bind-mounting it
//! onto an empty file under `/var/run/netns`, so containerd (via the OCI spec path) and
//! `ip netns exec` can join it by name.
//!
//! Everything that changes a thread's namespace runs on a dedicated, short-lived OS thread:
//! `unshare` and `setns` act on the calling thread only, and a pooled thread (tokio's
//! blocking pool) would carry the foreign namespace into unrelated work afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Once;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use super::NetError;

/// Where `ip netns` keeps its names; containerd and `ip netns exec` look here.
pub(crate) const NETNS_DIR: &str = "/var/run/netns";

pub(crate) fn path_of(prefix: &str, replica_id: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(format!("{prefix}{replica_id}"))
}

/// True when `path` is a live namespace mount (not merely a leftover empty file).
pub(crate) fn is_mounted(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Names (file names without the prefix) of the namespaces under [`NETNS_DIR`] that start with
/// `prefix`, mounted or not.
pub(crate) fn list(prefix: &str) -> Result<Vec<String>, NetError> {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::io(format!("list {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| NetError::io(format!("list {NETNS_DIR}"), e))?;
        if let Some(rest) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
        {
            names.push(rest.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Creates the namespace file at `path` unless a live one is already there. A file left
/// unmounted by a crash between "create file" and "mount" is reused.
pub(crate) async fn ensure(path: &Path, what: &str) -> Result<(), NetError> {
    if is_mounted(path) {
        return Ok(());
    }
    let path = path.to_path_buf();
    let what = what.to_string();
    on_own_thread(move || create_blocking(&path, &what)).await
}

fn create_blocking(path: &Path, what: &str) -> Result<(), NetError> {
    let op = || format!("create network namespace {} for {what}", path.display());
    make_run_dir_shared()?;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| NetError::io(op(), e))?;
    // This thread gets the new namespace; the bind mount keeps it alive after the thread ends.
    let result = unshare(CloneFlags::CLONE_NEWNET)
        .and_then(|()| {
            mount(
                Some("/proc/thread-self/ns/net"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .map_err(|e| NetError::sys(op(), e));
    if result.is_err() {
        let _ = fs::remove_file(path);
    }
    result
}

/// Makes [`NETNS_DIR`] a shared mount point, as `ip netns add` does, so that unmounting a name
/// here also unmounts it in mount namespaces copied from ours later (otherwise such a copy
/// would keep a deleted namespace alive). Done once per process.
fn make_run_dir_shared() -> Result<(), NetError> {
    static SHARED: Once = Once::new();
    let mut result = Ok(());
    SHARED.call_once(|| {
        result = (|| {
            let op = || format!("prepare {NETNS_DIR}");
            fs::create_dir_all(NETNS_DIR).map_err(|e| NetError::io(op(), e))?;
            let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
            match mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>) {
                Ok(()) => Ok(()),
                // Not a mount point yet: bind it onto itself first, then share it.
                Err(Errno::EINVAL) => mount(
                    Some(NETNS_DIR),
                    NETNS_DIR,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .and_then(|()| mount(None::<&str>, NETNS_DIR, None::<&str>, shared, None::<&str>))
                .map_err(|e| NetError::sys(op(), e)),
                Err(e) => Err(NetError::sys(op(), e)),
            }
        })();
    });
    result
}

/// Unmounts and removes the namespace file; a missing file or mount is not an error. The
/// namespace itself goes away once no process and no veth keep it alive.
pub(crate) fn remove(path: &Path, what: &str) -> Result<(), NetError> {
    let op = || format!("remove network namespace {} for {what}", path.display());
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(NetError::sys(op(), e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::io(op(), e)),
    }
}

/// Runs `f` on a fresh OS thread that has joined the namespace at `path`. `f` gets the open
/// namespace file too; the thread exits afterwards, so the namespace switch cannot leak.
pub(crate) async fn run_in<T, F>(path: &Path, what: &str, f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    let path = path.to_path_buf();
    let what = what.to_string();
    on_own_thread(move || {
        let op = || format!("enter network namespace {} for {what}", path.display());
        let file = File::open(&path).map_err(|e| NetError::io(op(), e))?;
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetError::sys(op(), e))?;
        f()
    })
    .await
}

/// Runs blocking, namespace-changing work on its own thread and awaits the result without
/// blocking the async runtime.
async fn on_own_thread<T, F>(f: F) -> Result<T, NetError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hm-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetError::io("spawn a network namespace thread".into(), e))?;
    rx.await
        .map_err(|_| NetError::Internal("network namespace thread panicked".into()))?
}
