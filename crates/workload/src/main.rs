//! `hm-workload`: Hivemind's own test program, in the spirit of Kubernetes' agnhost. One small
//! binary packaged into the test image (see `hivemind_test_support::image`) that can serve its
//! name over HTTP and fail on demand, resolve names, drive a bounded request loop, echo TCP and
//! UDP, or just sleep. It runs as PID 1 in containers, so every long-running mode installs its
//! SIGTERM handler explicitly and exits 0 on it.

mod args;
mod client;
mod echo;
mod http;
mod serve;

use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::args::Args;

const USAGE: &str = "\
usage: hm-workload COMMAND [OPTIONS]

  serve [--port 80] [--name NAME] [--bind 0.0.0.0]
      HTTP server. GET / -> NAME (default: hostname); GET /healthz -> ok, or 503 after
      POST /fail-health until POST /heal; POST /fail makes / return 500 until POST /recover;
      GET /headers echoes request headers; GET /clientip the peer address;
      GET /slow?ms=N answers after N ms. Port 0 picks a free port.
  resolve NAME [--type A|AAAA|any]
      Prints the addresses getaddrinfo returns, one per line; exit 1 if none.
  loop --url http://HOST[:PORT]/PATH [--count N] [--duration 10s] [--interval 50ms]
       [--timeout 2s]
      Bounded request loop (default --count 10; with both bounds, whichever comes first);
      resolves HOST every request; prints a JSON summary; exit 0 even with failures.
  tcp-echo --port P [--bind 0.0.0.0]
  udp-echo --port P [--bind 0.0.0.0]
      Echo servers for L4 tests.
  sleep-forever
      Waits for SIGTERM or SIGINT, then exits 0.

Servers print `listening on ADDR` first, then one line per request, on stdout.
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "serve" => cmd_serve(rest),
        "resolve" => cmd_resolve(rest),
        "loop" => cmd_loop(rest),
        "tcp-echo" => cmd_echo(rest, false),
        "udp-echo" => cmd_echo(rest, true),
        "sleep-forever" => cmd_sleep(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Failure::Usage(format!("unknown command {other:?}"))),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            eprintln!("hm-workload: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("hm-workload {command}: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Bad arguments (exit 2, with usage) or a failure while running (exit 1).
enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

type CmdResult = Result<ExitCode, Failure>;

fn parse(rest: &[String], allowed: &[&str], positionals: usize) -> Result<Args, Failure> {
    let args = Args::parse(rest, allowed).map_err(Failure::Usage)?;
    if args.positional.len() != positionals {
        return Err(Failure::Usage(format!(
            "expected {positionals} argument(s), got {:?}",
            args.positional
        )));
    }
    Ok(args)
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Resolves when SIGTERM or SIGINT arrives, to the signal's name. The handlers are installed
/// when this is called (needed as PID 1, where default actions do not apply), so call it before
/// announcing readiness.
fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// One line on stdout; errors (a closed pipe) are ignored rather than fatal.
pub(crate) fn log_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn bind_addr(args: &Args, default_port: Option<u16>) -> Result<SocketAddr, Failure> {
    let port = args.port(default_port).map_err(Failure::Usage)?;
    let ip: IpAddr = match args.get("bind") {
        Some(b) => b
            .parse()
            .map_err(|_| Failure::Usage(format!("bad --bind {b:?} (an IP address)")))?,
        None => IpAddr::from([0, 0, 0, 0]),
    };
    Ok(SocketAddr::new(ip, port))
}

fn cmd_serve(rest: &[String]) -> CmdResult {
    let args = parse(rest, &["port", "name", "bind"], 0)?;
    let addr = bind_addr(&args, Some(80))?;
    let name = args
        .get("name")
        .map_or_else(serve::hostname, str::to_string);
    runtime()?.block_on(async {
        let stop = shutdown_signal()?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        log_line(&format!(
            "listening on {} as {name}",
            listener.local_addr()?
        ));
        serve::run(listener, serve::State::new(name), stop).await;
        Ok(ExitCode::SUCCESS)
    })
}

fn cmd_echo(rest: &[String], udp: bool) -> CmdResult {
    let args = parse(rest, &["port", "bind"], 0)?;
    let addr = bind_addr(&args, None)?;
    runtime()?.block_on(async {
        let stop = shutdown_signal()?;
        if udp {
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            log_line(&format!("listening on {} (udp echo)", socket.local_addr()?));
            echo::udp(socket, stop).await;
        } else {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            log_line(&format!(
                "listening on {} (tcp echo)",
                listener.local_addr()?
            ));
            echo::tcp(listener, stop).await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn cmd_sleep(rest: &[String]) -> CmdResult {
    parse(rest, &[], 0)?;
    runtime()?.block_on(async {
        let stop = shutdown_signal()?;
        log_line("sleeping until SIGTERM");
        let signal = stop.await;
        log_line(&format!("{signal}: exiting"));
        Ok(ExitCode::SUCCESS)
    })
}

fn cmd_resolve(rest: &[String]) -> CmdResult {
    let args = parse(rest, &["type"], 1)?;
    let name = &args.positional[0];
    let want: fn(&IpAddr) -> bool = match args.get("type").map(str::to_ascii_uppercase) {
        None => |_| true,
        Some(t) if t == "ANY" => |_| true,
        Some(t) if t == "A" => IpAddr::is_ipv4,
        Some(t) if t == "AAAA" => IpAddr::is_ipv6,
        Some(t) => return Err(Failure::Usage(format!("bad --type {t:?} (A, AAAA or any)"))),
    };
    let found = (name.as_str(), 0)
        .to_socket_addrs()
        .map_err(|e| Failure::Runtime(format!("{name}: {e}")))?;
    let mut seen: Vec<IpAddr> = Vec::new();
    for ip in found.map(|a| a.ip()).filter(want) {
        if !seen.contains(&ip) {
            println!("{ip}");
            seen.push(ip);
        }
    }
    if seen.is_empty() {
        return Err(Failure::Runtime(format!("{name}: no matching addresses")));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_loop(rest: &[String]) -> CmdResult {
    let args = parse(
        rest,
        &["url", "count", "duration", "interval", "timeout"],
        0,
    )?;
    let usage = Failure::Usage;
    let url = args
        .get("url")
        .ok_or_else(|| usage("--url is required".into()))?;
    let url = http::parse_url(url).map_err(usage)?;
    let count = match args.get("count") {
        Some(c) => Some(
            c.parse::<u64>()
                .map_err(|_| usage(format!("bad --count {c:?}")))?,
        ),
        None => None,
    };
    let duration = match args.get("duration") {
        Some(_) => Some(args.duration("duration", Duration::ZERO).map_err(usage)?),
        None => None,
    };
    let bounds = client::Bounds {
        count: count.or(if duration.is_none() { Some(10) } else { None }),
        duration,
    };
    let interval = args
        .duration("interval", Duration::from_millis(50))
        .map_err(usage)?;
    let timeout = args
        .duration("timeout", Duration::from_secs(2))
        .map_err(usage)?;
    let summary = runtime()?.block_on(client::run(&url, bounds, interval, timeout));
    println!("{}", summary.to_json());
    Ok(ExitCode::SUCCESS)
}
