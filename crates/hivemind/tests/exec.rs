//! System tests of `hivemind exec` sessions through the real binary, server, agent and
//! containerd (see `support`): stdin piped in, a terminal opened by the test, the exit status
//! passed through, refusals, malformed frames and clients that vanish mid-session, which must
//! leave no exec process or FIFO behind.

mod support;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hivemind_client::exec::{read_frame, write_frame, ExecRequest, Frame, TtySize};
use hivemind_client::Client;
use rustix::termios::{tcgetattr, tcsetwinsize, LocalModes, Winsize};
use support::{file_names, require_containerd, TestNode, IMAGE};

/// Deploys `box` (sleeps) and `done` (exits at once and stays exited); returns box's replica.
fn deploy_sleeper(node: &TestNode) -> String {
    let compose = format!(
        r#"
services:
  box:
    image: {IMAGE}
    command: ["sleep", "100000"]
    stop_grace_period: 1s
  done:
    image: {IMAGE}
    command: ["true"]
    restart: "no"
"#
    );
    let file = node.write("compose.yaml", &compose);
    // Not `--wait`: `done` exiting would fail it.
    node.cli_ok(&["deploy", "-f", file.to_str().unwrap(), "--app", "app"]);
    node.wait_for("box running", Duration::from_secs(20), || {
        node.running_tasks()
            .iter()
            .any(|(id, _)| id.starts_with("box-"))
    });
    node.replica_of("box")
}

fn hivemind(node: &TestNode, args: &[&str]) -> Command {
    let mut cmd = Command::new(support::bin());
    cmd.args(args)
        .env("HIVEMIND_SERVER", format!("http://{}", node.addr))
        .env("HIVEMIND_DATA_DIR", node.data_dir())
        .env_remove("HIVEMIND_TOKEN");
    cmd
}

fn client(node: &TestNode) -> Client {
    let token = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap();
    Client::new(format!("http://{}", node.addr), token.trim())
}

/// Exec processes of `replica` (besides its own) and exec FIFOs left in its run directory.
fn leftovers(node: &TestNode, replica: &str) -> (Vec<String>, Vec<String>) {
    let processes = node
        .ctr(&["tasks", "ps", replica])
        .lines()
        // `PID INFO`, INFO of an exec process being `&ProcessDetails{ExecID:exec-…,…}`.
        .filter_map(|l| l.split("ExecID:").nth(1))
        .filter_map(|rest| rest.split(',').next().map(str::to_string))
        .collect();
    let fifos = file_names(&node.data_dir().join("run").join(replica), |n| {
        n.starts_with("exec-")
    });
    (processes, fifos)
}

fn wait_clean(node: &TestNode, replica: &str) {
    node.wait_for(
        "exec process and FIFOs gone",
        Duration::from_secs(15),
        || leftovers(node, replica) == (Vec::new(), Vec::new()),
    );
}

/// A pseudo-terminal: the test holds the master side, the CLI gets the terminal side.
struct Pty {
    master: std::fs::File,
    terminal: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn open(cols: u16, rows: u16) -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let terminal: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(name.to_str().unwrap())
            .unwrap()
            .into();
        let pty = Pty {
            master: std::fs::File::from(master),
            terminal,
            seen: Arc::default(),
        };
        pty.resize(cols, rows);
        let mut reader = pty.master.try_clone().unwrap();
        let seen = pty.seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        pty
    }

    fn resize(&self, cols: u16, rows: u16) {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&self.master, size).unwrap();
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.terminal.try_clone().unwrap())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).unwrap();
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exec_interactive_and_tty_sessions_through_the_cli() {
    if !require_containerd() {
        return;
    }
    let node = TestNode::start();
    let replica = deploy_sleeper(&node);

    // -i: piped stdin reaches the process, its end closes the process's stdin.
    let mut child = hivemind(&node, &["exec", "-i", &replica, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(out.status.code(), Some(0));

    let mut child = hivemind(
        &node,
        &["exec", "-i", &replica, "--", "sh", "-c", "read x; exit $x"],
    )
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"5\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(5));

    // Without -i the process's stdin is empty; output bytes arrive as they are.
    let out = node.cli(&[
        "exec",
        &replica,
        "--",
        "sh",
        "-c",
        "cat; printf '\\377\\n'; exit 4",
    ]);
    assert_eq!(out.stdout, b"\xff\n");
    assert_eq!(out.status.code(), Some(4));

    // -t without a terminal on stdin: docker's error, before anything is sent.
    let out = hivemind(&node, &["exec", "-t", &replica, "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the input device is not a TTY"), "{stderr}");
    assert_eq!(out.status.code(), Some(1));

    // -it under a terminal: the remote terminal has this one's size and follows its resizes,
    // the exit status comes back, and this terminal leaves raw mode again.
    let mut pty = Pty::open(100, 30);
    let before = tcgetattr(&pty.terminal).unwrap();
    let script = "busybox tty; busybox stty size; read x; busybox stty size; exit 7";
    let mut child = hivemind(&node, &["exec", "-it", &replica, "--", "sh", "-c", script])
        .stdin(pty.stdio())
        .stdout(pty.stdio())
        .stderr(pty.stdio())
        .spawn()
        .unwrap();
    pty.wait_for("30 100");
    assert!(pty.text().contains("/dev/pts/"), "{:?}", pty.text());
    let raw = tcgetattr(&pty.terminal).unwrap();
    assert!(
        !raw.local_modes.contains(LocalModes::ECHO),
        "raw mode while running"
    );
    pty.resize(120, 40);
    Command::new("kill")
        .args(["-WINCH", &child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pty.type_in(b"\r");
    pty.wait_for("40 120");
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 7);
    let after = tcgetattr(&pty.terminal).unwrap();
    assert_eq!(after.local_modes, before.local_modes, "terminal restored");
    assert!(after
        .local_modes
        .contains(LocalModes::ECHO | LocalModes::ICANON));

    // Ctrl-C is a byte for the remote terminal: it interrupts the remote process, and the
    // CLI passes on its status (130) instead of dying itself.
    let mut pty = Pty::open(80, 24);
    let mut child = hivemind(
        &node,
        &[
            "exec",
            "-it",
            &replica,
            "--",
            "sh",
            "-c",
            "echo ready; sleep 1000",
        ],
    )
    .stdin(pty.stdio())
    .stdout(pty.stdio())
    .stderr(pty.stdio())
    .spawn()
    .unwrap();
    pty.wait_for("ready");
    pty.type_in(&[3]);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(15)), 130);
    wait_clean(&node, &replica);
}

#[test]
fn exec_session_refusals_malformed_frames_and_vanished_clients_leave_nothing_behind() {
    if !require_containerd() {
        return;
    }
    let mut node = TestNode::start();
    let replica = deploy_sleeper(&node);
    let client = client(&node);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Refusals come back as statuses naming the field, before any upgrade.
    let refused = |r: &str, request: ExecRequest| {
        // (The upgraded connection is not `Debug`, so no `expect_err`.)
        let Err(e) = rt.block_on(client.exec_session(r, &request)) else {
            panic!("{r}: {request:?} was not refused");
        };
        (e.status(), format!("{e}"))
    };
    let (status, message) = refused(&replica, ExecRequest::command(Vec::new()));
    assert_eq!(status, Some(400), "{message}");
    assert!(message.contains("cmd"), "{message}");
    let (status, message) = refused("box-zzzzz", ExecRequest::command(vec!["true".into()]));
    assert_eq!(status, Some(404), "{message}");
    let stranger = Client::new(format!("http://{}", node.addr), "not-the-token");
    let Err(e) =
        rt.block_on(stranger.exec_session(&replica, &ExecRequest::command(vec!["true".into()])))
    else {
        panic!("a wrong token was let in");
    };
    assert_eq!(e.status(), Some(401), "{e}");
    let mut sized = ExecRequest::command(vec!["true".into()]);
    sized.tty = true;
    sized.size = Some(TtySize { cols: 0, rows: 0 });
    assert_eq!(refused(&replica, sized).0, Some(400));
    let mut done = None;
    node.wait_for("done completed", Duration::from_secs(15), || {
        let replicas = node.cli_json(&["ps", "done"]);
        done = replicas
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["status"]["state"] == "completed")
            .and_then(|v| v["replica"]["id"].as_str().map(str::to_string));
        done.is_some()
    });
    let (status, message) = refused(&done.unwrap(), ExecRequest::command(vec!["true".into()]));
    assert_eq!(status, Some(409), "{message}");
    assert!(message.contains("not running"), "{message}");

    // The plain NDJSON form stays for API clients without stdin or TTY.
    let frames: Vec<_> = rt.block_on(async {
        use futures::StreamExt;
        let cmd = vec!["sh".into(), "-c".into(), "echo hi; exit 3".into()];
        client.exec(&replica, cmd).await.unwrap().collect().await
    });
    let frames: Vec<_> = frames.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        frames,
        [
            hivemind_client::exec::ExecFrame::Stdout("hi\n".into()),
            hivemind_client::exec::ExecFrame::Exit(3)
        ]
    );

    // A malformed frame from the client: an error frame naming it, the process killed.
    let request = ExecRequest {
        cmd: vec!["sleep".into(), "1000".into()],
        stdin: true,
        ..ExecRequest::default()
    };
    let last = rt.block_on(async {
        let mut io = client.exec_session(&replica, &request).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::io::AsyncWriteExt::write_all(&mut io, &[42, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut last = None;
        while let Ok(Some(frame)) = read_frame(&mut io).await {
            last = Some(frame);
        }
        last
    });
    match last {
        Some(Frame::Error(message)) => {
            assert!(message.contains("unknown frame channel 42"), "{message}")
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
    wait_clean(&node, &replica);

    // A client that vanishes mid-session (kill -9 of the CLI): the process is killed and
    // deleted, its FIFOs removed.
    let mut child = hivemind(&node, &["exec", "-i", &replica, "--", "sleep", "1000"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    node.wait_for("exec process running", Duration::from_secs(15), || {
        !leftovers(&node, &replica).0.is_empty()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_clean(&node, &replica);

    // The same for a plain (NDJSON) exec whose caller stops listening.
    let stream = rt
        .block_on(client.exec(&replica, vec!["sleep".into(), "1000".into()]))
        .unwrap();
    node.wait_for("plain exec running", Duration::from_secs(15), || {
        !leftovers(&node, &replica).0.is_empty()
    });
    drop(stream);
    wait_clean(&node, &replica);

    // An agent killed mid-session (kill -9 of `up`) cannot end its exec process; the next
    // agent kills and deletes it before it serves anything.
    let child = hivemind(&node, &["exec", "-i", &replica, "--", "sleep", "1000"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    node.wait_for("exec process running", Duration::from_secs(15), || {
        !leftovers(&node, &replica).0.is_empty()
    });
    node.kill9();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        leftovers(&node, &replica).0.len(),
        1,
        "the exec outlived its agent"
    );
    node.spawn();
    wait_clean(&node, &replica);

    // Round trip through CLI-side client, server and agent: a line to `cat` and back.
    let (tx_time, exit) = rt.block_on(async {
        let request = ExecRequest {
            cmd: vec!["cat".into()],
            stdin: true,
            ..ExecRequest::default()
        };
        let mut io = client.exec_session(&replica, &request).await.unwrap();
        let mut times = Vec::new();
        for i in 0..20 {
            let line = format!("ping {i}\n");
            let start = Instant::now();
            write_frame(&mut io, &Frame::Stdin(line.clone().into_bytes()))
                .await
                .unwrap();
            match read_frame(&mut io).await.unwrap() {
                Some(Frame::Stdout(b)) => assert_eq!(b, line.as_bytes()),
                other => panic!("{other:?}"),
            }
            times.push(start.elapsed());
        }
        write_frame(&mut io, &Frame::StdinEof).await.unwrap();
        let exit = read_frame(&mut io).await.unwrap();
        times.sort();
        (times[times.len() / 2], exit)
    });
    assert_eq!(exit, Some(Frame::Exit(0)));
    eprintln!("exec stdin→stdout round trip through server and agent, median of 20: {tx_time:?}");
    // Figures for the record (no assertion): the whole CLI, the session and the plain form
    // without the CLI's process start, and containerd's own exec through `ctr`.
    let median = |mut f: Box<dyn FnMut() + '_>| {
        let mut times: Vec<Duration> = (0..7)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    let cli = median(Box::new(|| {
        node.cli_ok(&["exec", &replica, "--", "true"]);
    }));
    let session = median(Box::new(|| {
        rt.block_on(async {
            let request = ExecRequest::command(vec!["true".into()]);
            let mut io = client.exec_session(&replica, &request).await.unwrap();
            assert_eq!(read_frame(&mut io).await.unwrap(), Some(Frame::Exit(0)));
        })
    }));
    let plain = median(Box::new(|| {
        rt.block_on(async {
            use futures::StreamExt;
            let frames = client.exec(&replica, vec!["true".into()]).await.unwrap();
            assert_eq!(frames.count().await, 1);
        })
    }));
    let mut n = 0;
    let ctr = median(Box::new(|| {
        n += 1;
        let exec_id = format!("bench{n}");
        node.ctr(&["tasks", "exec", "--exec-id", &exec_id, &replica, "true"]);
    }));
    eprintln!(
        "exec of `true`, median of 7: hivemind CLI {cli:?}, session {session:?}, plain {plain:?}, \
         ctr tasks exec {ctr:?}"
    );
    wait_clean(&node, &replica);
}
