//! `tcp-echo` and `udp-echo`: L4 echo servers that return what they receive, until SIGTERM or
//! SIGINT. TCP logs one line per connection, UDP one per datagram.

use std::future::Future;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

use crate::log_line;

pub(crate) async fn tcp(listener: TcpListener, stop: impl Future<Output = &'static str>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            signal = &mut stop => {
                log_line(&format!("{signal}: shutting down"));
                return;
            }
            accepted = listener.accept() => {
                let (mut stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        log_line(&format!("accept: {e}"));
                        continue;
                    }
                };
                tokio::spawn(async move {
                    let mut total = 0u64;
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if stream.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                total += n as u64;
                            }
                        }
                    }
                    log_line(&format!("{peer} tcp closed after {total} bytes"));
                });
            }
        }
    }
}

pub(crate) async fn udp(socket: UdpSocket, stop: impl Future<Output = &'static str>) {
    tokio::pin!(stop);
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            signal = &mut stop => {
                log_line(&format!("{signal}: shutting down"));
                return;
            }
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    if let Err(e) = socket.send_to(&buf[..n], peer).await {
                        log_line(&format!("{peer} udp send: {e}"));
                    } else {
                        log_line(&format!("{peer} udp {n} bytes"));
                    }
                }
                Err(e) => log_line(&format!("udp recv: {e}")),
            },
        }
    }
}
