//! A real `hivemind server` process, for system tests that measure it from outside: its memory
//! (`/proc/PID/status`), its store files, how fast `/healthz` answers. The caller passes the
//! binary (`env!("CARGO_BIN_EXE_hivemind")`): only the hivemind crate's tests know where it is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `hivemind server` on a free loopback port, with its data dir at `{dir}/data` and
/// its log at `{dir}/server.log`. Killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The admin token the server wrote to its data dir.
    pub token: String,
}

impl ServerProcess {
    /// Starts `bin server` and waits (up to 30 s) until `/healthz` answers. `env` is added to the
    /// server's environment (`HIVEMIND_LOG` and the like).
    pub fn start(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let data_dir = dir.join("data");
        let log = dir.join("server.log");
        let log_file = std::fs::File::create(&log).expect("the server log file");
        let child = Command::new(bin)
            .args(["server", "--api-addr", &addr.to_string(), "--log", "warn"])
            .env("HIVEMIND_DATA_DIR", &data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = ServerProcess {
            child,
            addr,
            data_dir,
            log,
            token: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.healthz().is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the server exited ({status}): {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /healthz in 30 s: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server.token = std::fs::read_to_string(server.data_dir.join("admin.token"))
            .expect("the server wrote its admin token")
            .trim()
            .to_string();
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// One `GET /healthz` on a new connection: how long until the whole answer was in, or why
    /// there was none (a status other than 200 included).
    pub fn healthz(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut conn = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("send: {e}"))?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("answer: {answer:?}"));
        }
        Ok(started.elapsed())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone (its files closed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `/proc/PID/status` line's value in KiB (`VmRSS:`, `VmHWM:`), 0 when the process is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}
