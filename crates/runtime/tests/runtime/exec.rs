//! System tests of exec sessions on real containers: stdin forwarded and closed, a terminal
//! with its size and resizes, the plain exec's output and exit codes, and the cleanup of a
//! session whose caller went away (no exec process or FIFO left behind).

use std::time::{Duration, Instant};

use hivemind_runtime::{ContainerRuntime, ExecInput, ExecOutput, ExecSpec, RuntimeError, TtySize};
use tokio::sync::mpsc;

use super::{unique_id, TestEnv};

/// A session running in the background, with its input and collected output.
struct Session {
    input: Option<mpsc::Sender<ExecInput>>,
    output: mpsc::Receiver<ExecOutput>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    result: tokio::task::JoinHandle<Result<i32, RuntimeError>>,
}

impl Session {
    fn start(env: &TestEnv, id: &str, args: &[&str], stdin: bool, tty: Option<TtySize>) -> Self {
        let (input, input_rx) = mpsc::channel(16);
        let (output_tx, output) = mpsc::channel(16);
        let runtime = env.runtime.clone();
        let id = id.to_string();
        let spec = ExecSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            stdin,
            tty,
        };
        let result =
            tokio::spawn(async move { runtime.exec_session(&id, spec, input_rx, output_tx).await });
        Session {
            input: Some(input),
            output,
            stdout: Vec::new(),
            stderr: Vec::new(),
            result,
        }
    }

    async fn send(&self, item: ExecInput) {
        self.input.as_ref().unwrap().send(item).await.unwrap();
    }

    /// Collects output until stdout contains `needle`.
    async fn read_until(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&self.stdout).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.output.recv()).await {
                Ok(Some(chunk)) => self.push(chunk),
                _ => panic!(
                    "no {needle:?} in stdout {:?}",
                    String::from_utf8_lossy(&self.stdout)
                ),
            }
        }
    }

    fn push(&mut self, chunk: ExecOutput) {
        match chunk {
            ExecOutput::Stdout(b) => self.stdout.extend(b),
            ExecOutput::Stderr(b) => self.stderr.extend(b),
        }
    }

    /// Reads the rest of the output and the result.
    async fn finish(mut self) -> (Result<i32, RuntimeError>, String, String) {
        let drain = async {
            while let Some(chunk) = self.output.recv().await {
                self.push(chunk);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), drain)
            .await
            .expect("session output did not end");
        let result = self.result.await.expect("session task");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (result, text(&self.stdout), text(&self.stderr))
    }
}

/// Exec process ids of container `id` (`ctr tasks ps`). The test image links only some busybox
/// applets, so `tty` and `stty` run as `busybox tty`.
fn exec_processes(env: &TestEnv, id: &str) -> Vec<String> {
    env.ctr(&["tasks", "ps", id])
        .lines()
        // `PID INFO`, INFO of an exec process being `&ProcessDetails{ExecID:exec-…,…}`.
        .filter_map(|l| l.split("ExecID:").nth(1))
        .filter_map(|rest| rest.split(',').next().map(str::to_string))
        .collect()
}

/// FIFOs left in the container's run directory.
fn fifos(env: &TestEnv, id: &str) -> Vec<String> {
    let dir = env.config().run_dir.join(id);
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("exec-"))
                .collect()
        })
        .unwrap_or_default()
}

async fn running_container(env: &TestEnv, prefix: &str) -> String {
    env.import_busybox().await;
    let id = unique_id(prefix);
    env.run(&id, &["sleep", "1000"]).await;
    id
}

#[tokio::test]
async fn exec_stdin_is_forwarded_and_its_end_closes_the_process_stdin() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let id = running_container(&env, "exin").await;

    let session = Session::start(&env, &id, &["cat"], true, None);
    session.send(ExecInput::Stdin(b"hello\n".to_vec())).await;
    session.send(ExecInput::Stdin(b"world".to_vec())).await;
    session.send(ExecInput::CloseStdin).await;
    let (result, stdout, stderr) = session.finish().await;
    assert_eq!(result.unwrap(), 0);
    assert_eq!(stdout, "hello\nworld");
    assert_eq!(stderr, "");

    let session = Session::start(&env, &id, &["sh", "-c", "read x; exit $x"], true, None);
    session.send(ExecInput::Stdin(b"5\n".to_vec())).await;
    let (result, _, _) = session.finish().await;
    assert_eq!(result.unwrap(), 5);

    // Without stdin the process reads end-of-file at once.
    let session = Session::start(&env, &id, &["sh", "-c", "cat; echo done"], false, None);
    let (result, stdout, _) = session.finish().await;
    assert_eq!((result.unwrap(), stdout.as_str()), (0, "done\n"));

    assert_eq!(exec_processes(&env, &id), Vec::<String>::new());
    assert_eq!(fifos(&env, &id), Vec::<String>::new());
}

#[tokio::test]
async fn exec_tty_has_a_terminal_of_the_given_size_and_follows_resizes() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let id = running_container(&env, "extty").await;

    let size = TtySize {
        cols: 100,
        rows: 30,
    };
    let session = Session::start(&env, &id, &["busybox", "tty"], false, Some(size));
    let (result, stdout, stderr) = session.finish().await;
    assert_eq!(result.unwrap(), 0);
    assert!(stdout.starts_with("/dev/pts/"), "{stdout:?}");
    // A terminal turns "\n" into "\r\n" and has no separate stderr.
    assert!(stdout.ends_with("\r\n"), "{stdout:?}");
    assert_eq!(stderr, "");

    let script = "busybox stty size; read x; busybox stty size; exit 7";
    let mut session = Session::start(&env, &id, &["sh", "-c", script], true, Some(size));
    session.read_until("30 100").await;
    session
        .send(ExecInput::Resize(TtySize {
            cols: 120,
            rows: 40,
        }))
        .await;
    // The resize is a call of its own; give it a moment before the shell asks again.
    tokio::time::sleep(Duration::from_millis(200)).await;
    session.send(ExecInput::Stdin(b"\r".to_vec())).await;
    session.read_until("40 120").await;
    let (result, _, _) = session.finish().await;
    assert_eq!(result.unwrap(), 7);

    // ^C is a byte for the terminal: it interrupts the process in the container.
    let mut session = Session::start(
        &env,
        &id,
        &["sh", "-c", "echo ready; sleep 1000"],
        true,
        Some(size),
    );
    session.read_until("ready").await;
    session.send(ExecInput::Stdin(vec![3])).await;
    let (result, _, _) = session.finish().await;
    assert_eq!(result.unwrap(), 130, "sh killed by SIGINT");

    assert_eq!(exec_processes(&env, &id), Vec::<String>::new());
    assert_eq!(fifos(&env, &id), Vec::<String>::new());
}

#[tokio::test]
async fn plain_exec_streams_both_outputs_and_returns_the_exit_status() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let id = running_container(&env, "explain").await;
    let (tx, mut rx) = mpsc::channel(16);
    let args: Vec<String> = ["sh", "-c", "echo out; echo err >&2; exit 3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = env.runtime.exec(&id, &args, tx).await.unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(chunk) = rx.recv().await {
        match chunk {
            ExecOutput::Stdout(b) => out.extend(b),
            ExecOutput::Stderr(b) => err.extend(b),
        }
    }
    assert_eq!(
        (code, &out[..], &err[..]),
        (3, &b"out\n"[..], &b"err\n"[..])
    );

    let (tx, _rx) = mpsc::channel(16);
    let err = env
        .runtime
        .exec(&id, &["no-such-command".to_string()], tx)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Exec { .. }), "{err}");
    assert_eq!(exec_processes(&env, &id), Vec::<String>::new());
    assert_eq!(fifos(&env, &id), Vec::<String>::new());
}

#[tokio::test]
async fn exec_session_whose_caller_left_is_killed_and_deleted() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let id = running_container(&env, "exgone").await;

    // A process that never reads its stdin, with more stdin than a pipe holds: the caller
    // leaves while a write is stuck.
    let mut session = Session::start(
        &env,
        &id,
        &["sh", "-c", "echo started; exec sleep 1000"],
        true,
        None,
    );
    session.read_until("started").await;
    assert_eq!(exec_processes(&env, &id).len(), 1);
    let input = session.input.take().unwrap();
    for _ in 0..4 {
        input
            .send(ExecInput::Stdin(vec![b'x'; 60_000]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    drop(input);
    let (result, _, _) = session.finish().await;
    let err = result.unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(exec_processes(&env, &id), Vec::<String>::new());
    assert_eq!(fifos(&env, &id), Vec::<String>::new());

    // A dropped session future (its task aborted) cleans up the same way.
    let mut session = Session::start(
        &env,
        &id,
        &["sh", "-c", "echo started; exec sleep 1000"],
        false,
        None,
    );
    session.read_until("started").await;
    session.result.abort();
    drop(session.input.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(exec_processes(&env, &id).is_empty() && fifos(&env, &id).is_empty()) {
        assert!(
            Instant::now() < deadline,
            "exec left behind: {:?}",
            exec_processes(&env, &id)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The container itself is untouched.
    assert!(env
        .info(&id)
        .await
        .is_some_and(|c| matches!(c.task, Some(hivemind_runtime::TaskState::Running { .. }))));
}

#[tokio::test]
async fn exec_in_a_missing_container_is_not_found() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let (_input, input_rx) = mpsc::channel(1);
    let (tx, _rx) = mpsc::channel(1);
    let spec = ExecSpec {
        args: vec!["true".into()],
        ..ExecSpec::default()
    };
    let err = env
        .runtime
        .exec_session("no-such-container", spec, input_rx, tx)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn exec_sweep_kills_what_a_dead_agent_left() {
    let Some(env) = TestEnv::new().await else {
        return;
    };
    let id = running_container(&env, "exsweep").await;
    // An agent that dies mid-session: its runtime goes away without running any cleanup.
    let config = env.config();
    let session_id = id.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (input, input_rx) = mpsc::channel(1);
        let (output_tx, mut output) = mpsc::channel(16);
        rt.block_on(async {
            let runtime = hivemind_runtime::Containerd::connect(config).await.unwrap();
            let spec = ExecSpec {
                args: ["sh", "-c", "echo started; exec sleep 1000"]
                    .map(String::from)
                    .to_vec(),
                stdin: true,
                tty: None,
            };
            tokio::spawn(async move {
                runtime
                    .exec_session(&session_id, spec, input_rx, output_tx)
                    .await
            });
            output.recv().await.expect("output of the session");
        });
        rt.shutdown_background();
        // The input sender outlives the runtime, so nothing took the caller for gone.
        drop(input);
    })
    .join()
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        exec_processes(&env, &id).len(),
        1,
        "the exec outlived its agent"
    );
    assert_eq!(fifos(&env, &id).len(), 3, "{:?}", fifos(&env, &id));

    assert_eq!(env.runtime.exec_sweep().await.unwrap(), 1);
    assert_eq!(exec_processes(&env, &id), Vec::<String>::new());
    assert_eq!(fifos(&env, &id), Vec::<String>::new());
    assert_eq!(env.runtime.exec_sweep().await.unwrap(), 0);
}
