//! An in-memory [`ContainerRuntime`] for unit tests of the agent's loops: containers, tasks and
//! images live in a map, every call is recorded, and failures, exits and pauses are scripted.
//!
//! It models what the converger relies on from containerd and nothing more: `create` pulls as
//! the replica's `pull_policy` says and fails on a taken id, `start` gives a pid (or a process
//! that exits at once, for crash loops), `stop` and `remove` are idempotent, exits arrive on
//! the `exits` stream. It runs no processes: `exec` and `image_import` fail with a clear error.
//!
//! Built for the crate's tests and, with the `fake` feature, for other crates' (simulated
//! nodes running the real agent loop without containerd).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hivemind_types::spec::PullPolicy;
use hivemind_types::Replica;
use tokio::sync::{mpsc, watch, Semaphore};

use super::{
    labels, normalize_image_ref, ContainerInfo, ContainerRuntime, CreateOptions, ExecInput,
    ExecOutput, ExecSpec, ImageInfo, PullProgress, RuntimeError, TaskExit, TaskState,
};

/// The operations whose calls are recorded and can be scripted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    List,
    Create,
    Start,
    Stop,
    Remove,
    Pull,
    ImageRemove,
}

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Process-wide order of recorded calls, shared with the other fakes of the agent (see
    /// [`next_seq`]), so that a test can tell which of two fakes was called first.
    pub seq: u64,
    /// Tokio time since the fake was made (paused in tests, so exact).
    pub at: Duration,
    pub op: Op,
    /// The container id, or the image reference for `Pull`/`ImageRemove`; empty for `List`.
    pub target: String,
    /// What else the call said: `revision=HASH` for `Create`, `SIGNAL GRACEms` for `Stop`.
    pub args: String,
}

/// The next number of the process-wide call order.
pub fn next_seq() -> u64 {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A pause in the next call of one operation: the call blocks (after recording itself, and for
/// `List` after taking its snapshot) until [`Gate::release`]. (A [`Hold`] holds every call.)
#[derive(Clone)]
pub struct Gate {
    reached: Arc<Semaphore>,
    release: Arc<Semaphore>,
}

impl Gate {
    /// Waits until the paused call has arrived at the gate.
    pub async fn reached(&self) {
        if let Ok(permit) = self.reached.acquire().await {
            permit.forget();
        }
    }

    /// Lets the paused call continue.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    async fn pass(&self) {
        self.reached.add_permits(1);
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
    }
}

/// A hold on every call of one operation: each waits (after recording itself) until
/// [`Hold::release`], which lets all of them and every later one through.
#[derive(Clone)]
pub struct Hold {
    open: Arc<watch::Sender<bool>>,
    waiting: Arc<AtomicUsize>,
}

impl Hold {
    /// How many calls are waiting at the hold now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn release(&self) {
        self.open.send_replace(true);
    }

    async fn pass(&self) {
        let mut open = self.open.subscribe();
        if *open.borrow_and_update() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _ = open.wait_for(|o| *o).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a call waits at before it acts: the pause and the hold set for its operation.
#[must_use]
struct Waits {
    gate: Option<Gate>,
    hold: Option<Hold>,
}

impl Waits {
    async fn wait(self) {
        if let Some(gate) = self.gate {
            gate.pass().await;
        }
        if let Some(hold) = self.hold {
            hold.pass().await;
        }
    }
}

struct Container {
    info: ContainerInfo,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Container>,
    images: BTreeMap<String, ImageInfo>,
    calls: Vec<Call>,
    /// (op, target) → failures left (`None`: until healed).
    failures: BTreeMap<(Op, String), Option<u32>>,
    /// Replica id → exit code of every process started for it from now on.
    exit_on_start: BTreeMap<String, i32>,
    gates: BTreeMap<Op, Gate>,
    holds: BTreeMap<Op, Hold>,
    exit_streams: Vec<mpsc::Sender<TaskExit>>,
    next_pid: u32,
}

/// The fake runtime; clones share the same containers (keep one to script and inspect).
#[derive(Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    epoch: tokio::time::Instant,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        FakeRuntime::new()
    }
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        FakeRuntime {
            state: Arc::new(Mutex::new(State {
                next_pid: 1000,
                ..State::default()
            })),
            epoch: tokio::time::Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts image `reference` in the store, as an import would.
    pub fn add_image(&self, reference: &str) {
        let image = fake_image(reference);
        self.state().images.insert(image.name.clone(), image);
    }

    /// A container as an earlier agent process left it: labelled from `replica`, with `task`.
    pub fn add_container(&self, replica: &Replica, task: Option<TaskState>) {
        let mut state = self.state();
        let info = container_info(replica, task);
        state
            .containers
            .insert(replica.id.clone(), Container { info });
    }

    /// The next `times` calls of `op` on `target` fail (`None`: every call until [`heal`]).
    ///
    /// [`heal`]: FakeRuntime::heal
    pub fn fail(&self, op: Op, target: &str, times: Option<u32>) {
        self.state()
            .failures
            .insert((op, target.to_string()), times);
    }

    /// Ends the failures scripted for `op` on `target`.
    pub fn heal(&self, op: Op, target: &str) {
        self.state().failures.remove(&(op, target.to_string()));
    }

    /// Every process started for `id` from now on exits at once with `code` (a crash loop);
    /// `None` lets them run again.
    pub fn exit_on_start(&self, id: &str, code: Option<i32>) {
        let mut state = self.state();
        match code {
            Some(code) => state.exit_on_start.insert(id.to_string(), code),
            None => state.exit_on_start.remove(id),
        };
    }

    /// The running process of `id` exits with `code`: its task turns stopped and the exit is
    /// sent to every `exits` stream (after an OOM event first, if `oom`).
    pub fn exit(&self, id: &str, code: i32, oom: bool) {
        let mut state = self.state();
        if let Some(c) = state.containers.get_mut(id) {
            c.info.task = Some(TaskState::Stopped { exit_code: code });
        }
        if oom {
            send_exit(&mut state, id, code, true);
        }
        send_exit(&mut state, id, code, false);
    }

    /// Holds every call of `op` from now on until the returned hold is released.
    pub fn hold(&self, op: Op) -> Hold {
        let hold = Hold {
            open: Arc::new(watch::channel(false).0),
            waiting: Arc::new(AtomicUsize::new(0)),
        };
        self.state().holds.insert(op, hold.clone());
        hold
    }

    /// Ends every `exits` stream, as a containerd restart does: exits until the next
    /// subscription reach nobody.
    pub fn end_exit_streams(&self) {
        self.state().exit_streams.clear();
    }

    /// How many `exits` streams are open.
    pub fn exit_streams(&self) -> usize {
        let mut state = self.state();
        state.exit_streams.retain(|tx| !tx.is_closed());
        state.exit_streams.len()
    }

    /// Pauses the next call of `op` until the returned gate is released.
    pub fn pause(&self, op: Op) -> Gate {
        let gate = Gate {
            reached: Arc::new(Semaphore::new(0)),
            release: Arc::new(Semaphore::new(0)),
        };
        self.state().gates.insert(op, gate.clone());
        gate
    }

    /// Tokio time since the fake was made: the clock of [`Call::at`].
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of `op` on `target`, in order.
    pub fn calls_of(&self, op: Op, target: &str) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.op == op && c.target == target)
            .cloned()
            .collect()
    }

    /// The calls that change containers (everything but `List`).
    pub fn changes(&self) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.op != Op::List)
            .cloned()
            .collect()
    }

    pub fn container(&self, id: &str) -> Option<ContainerInfo> {
        self.state().containers.get(id).map(|c| c.info.clone())
    }

    pub fn container_ids(&self) -> BTreeSet<String> {
        self.state().containers.keys().cloned().collect()
    }

    /// Records the call, then fails it if a failure is scripted, and returns what it must wait
    /// at (the pause and hold set for `op`).
    fn enter(&self, op: Op, target: &str, args: String) -> Result<Waits, RuntimeError> {
        let mut state = self.state();
        state.calls.push(Call {
            seq: next_seq(),
            at: self.epoch.elapsed(),
            op,
            target: target.to_string(),
            args,
        });
        let key = (op, target.to_string());
        if let Some(left) = state.failures.get_mut(&key) {
            match left {
                Some(0) => {
                    state.failures.remove(&key);
                }
                Some(n) => {
                    *n -= 1;
                    return Err(scripted(op, target));
                }
                None => return Err(scripted(op, target)),
            }
        }
        Ok(Waits {
            gate: state.gates.remove(&op),
            hold: state.holds.get(&op).cloned(),
        })
    }

    async fn pull(&self, reference: &str) -> Result<ImageInfo, RuntimeError> {
        let name = normalize_image_ref(reference);
        match self.enter(Op::Pull, &name, String::new()) {
            Err(RuntimeError::Protocol { reason, .. }) => {
                return Err(RuntimeError::Registry {
                    reference: name,
                    reason,
                    fix: "check the image name and the registry".to_string(),
                })
            }
            Err(other) => return Err(other),
            Ok(waits) => waits.wait().await,
        }
        let image = fake_image(&name);
        self.state().images.insert(name, image.clone());
        Ok(image)
    }
}

fn scripted(op: Op, target: &str) -> RuntimeError {
    RuntimeError::Protocol {
        op: match op {
            Op::List => "list",
            Op::Create => "create",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Remove => "remove",
            Op::Pull => "pull",
            Op::ImageRemove => "remove image",
        },
        id: target.to_string(),
        reason: "scripted failure".to_string(),
    }
}

fn send_exit(state: &mut State, id: &str, exit_code: i32, oom: bool) {
    let exit = TaskExit {
        id: id.to_string(),
        exit_code,
        oom,
    };
    state
        .exit_streams
        .retain(|tx| tx.try_send(exit.clone()).is_ok() || !tx.is_closed());
}

fn fake_image(reference: &str) -> ImageInfo {
    let name = normalize_image_ref(reference);
    ImageInfo {
        digest: format!("sha256:fake-{name}"),
        name,
        size: 1 << 20,
        updated_at: None,
    }
}

fn container_info(replica: &Replica, task: Option<TaskState>) -> ContainerInfo {
    let mut labels_out = replica.spec.labels.clone();
    for (k, v) in [
        (labels::REPLICA, &replica.id),
        (labels::SERVICE, &replica.service),
        (labels::APP, &replica.app),
        (labels::NAMESPACE, &replica.namespace),
        (labels::REVISION, &replica.revision_hash),
    ] {
        labels_out.insert(k.to_string(), v.clone());
    }
    ContainerInfo {
        id: replica.id.clone(),
        labels: labels_out,
        image: normalize_image_ref(&replica.spec.image),
        task,
    }
}

impl ContainerRuntime for FakeRuntime {
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let waits = self.enter(Op::List, "", String::new())?;
        let snapshot: Vec<ContainerInfo> = self
            .state()
            .containers
            .values()
            .map(|c| c.info.clone())
            .collect();
        waits.wait().await;
        Ok(snapshot)
    }

    async fn create(
        &self,
        replica: &Replica,
        _options: &CreateOptions,
    ) -> Result<(), RuntimeError> {
        self.enter(
            Op::Create,
            &replica.id,
            format!("revision={}", replica.revision_hash),
        )?
        .wait()
        .await;
        if self.state().containers.contains_key(&replica.id) {
            return Err(RuntimeError::AlreadyExists {
                id: replica.id.clone(),
            });
        }
        let image = normalize_image_ref(&replica.spec.image);
        let present = self.state().images.contains_key(&image);
        match replica.spec.pull_policy {
            PullPolicy::Always => {
                self.pull(&image).await?;
            }
            PullPolicy::Missing if !present => {
                self.pull(&image).await?;
            }
            PullPolicy::Never if !present => return Err(RuntimeError::ImageNotFound { image }),
            _ => {}
        }
        self.add_container(replica, None);
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<u32, RuntimeError> {
        self.enter(Op::Start, id, String::new())?.wait().await;
        let mut state = self.state();
        let exit_code = state.exit_on_start.get(id).copied();
        let pid = state.next_pid;
        let Some(container) = state.containers.get_mut(id) else {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        };
        if let Some(TaskState::Running { pid }) = container.info.task {
            return Ok(pid);
        }
        container.info.task = Some(match exit_code {
            Some(exit_code) => TaskState::Stopped { exit_code },
            None => TaskState::Running { pid },
        });
        state.next_pid += 1;
        if let Some(code) = exit_code {
            send_exit(&mut state, id, code, false);
        }
        Ok(pid)
    }

    async fn stop(
        &self,
        id: &str,
        signal: &str,
        grace: Duration,
    ) -> Result<Option<i32>, RuntimeError> {
        let args = format!("{signal} {}ms", grace.as_millis());
        self.enter(Op::Stop, id, args)?.wait().await;
        let mut state = self.state();
        let Some(container) = state.containers.get_mut(id) else {
            return Ok(None);
        };
        let code = match container.info.task.take() {
            None => return Ok(None),
            Some(TaskState::Stopped { exit_code }) => exit_code,
            // Killed by the signal; the fake's processes all honour it.
            Some(_) => 128 + 15,
        };
        send_exit(&mut state, id, code, false);
        Ok(Some(code))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.enter(Op::Remove, id, String::new())?.wait().await;
        self.state().containers.remove(id);
        Ok(())
    }

    async fn exits(&self) -> Result<mpsc::Receiver<TaskExit>, RuntimeError> {
        let (tx, rx) = mpsc::channel(256);
        self.state().exit_streams.push(tx);
        Ok(rx)
    }

    async fn image_import(&self, tarball: &Path) -> Result<Vec<ImageInfo>, RuntimeError> {
        Err(RuntimeError::InvalidArchive {
            path: tarball.to_path_buf(),
            reason: "the fake runtime reads no archives (use FakeRuntime::add_image)".to_string(),
        })
    }

    async fn image_pull(
        &self,
        reference: &str,
        _progress: Option<mpsc::Sender<PullProgress>>,
    ) -> Result<ImageInfo, RuntimeError> {
        self.pull(reference).await
    }

    async fn image_list(&self) -> Result<Vec<ImageInfo>, RuntimeError> {
        Ok(self.state().images.values().cloned().collect())
    }

    async fn image_remove(&self, reference: &str, force: bool) -> Result<ImageInfo, RuntimeError> {
        let name = normalize_image_ref(reference);
        self.enter(Op::ImageRemove, &name, format!("force={force}"))?
            .wait()
            .await;
        let mut state = self.state();
        let users: Vec<String> = state
            .containers
            .values()
            .filter(|c| c.info.image == name)
            .map(|c| c.info.id.clone())
            .collect();
        if !users.is_empty() && !force {
            return Err(RuntimeError::ImageInUse {
                image: name,
                containers: users,
            });
        }
        state
            .images
            .remove(&name)
            .ok_or(RuntimeError::ImageNotFound { image: name })
    }

    async fn image_get(&self, name: &str) -> Result<Option<ImageInfo>, RuntimeError> {
        Ok(self.state().images.get(&normalize_image_ref(name)).cloned())
    }

    async fn exec(
        &self,
        id: &str,
        args: &[String],
        _output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        Err(no_exec(id, args))
    }

    async fn exec_session(
        &self,
        id: &str,
        spec: ExecSpec,
        _input: mpsc::Receiver<ExecInput>,
        _output: mpsc::Sender<ExecOutput>,
    ) -> Result<i32, RuntimeError> {
        Err(no_exec(id, &spec.args))
    }
}

fn no_exec(id: &str, args: &[String]) -> RuntimeError {
    RuntimeError::Exec {
        id: id.to_string(),
        command: args.join(" "),
        reason: "the fake runtime runs no processes".to_string(),
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;
