//! Forwarding of names outside our domain to the host's resolvers: a small stub forwarder.
//!
//! Each question is re-asked with a fresh id from a fresh ephemeral UDP socket (so a forged
//! reply must guess both), to each upstream in `resolv.conf` order with a per-upstream timeout.
//! An upstream answer that comes back truncated is asked again over TCP, so clients get the full
//! answer from us (and are told to retry over TCP only if it does not fit *their* UDP size).
//! This module never answers for our own domain.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// The UDP payload size we advertise upstream (the DNS flag day 2020 value).
const UPSTREAM_UDP_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    #[error("no upstream resolvers are configured")]
    NoUpstreams,
    #[error("no upstream resolver answered ({tried} tried)")]
    AllFailed { tried: usize },
}

#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("timed out")]
    Timeout,
    #[error("i/o")]
    Io(#[from] io::Error),
    #[error("malformed answer")]
    Proto(#[from] hickory_proto::ProtoError),
}

/// Asks the upstream resolvers.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    upstreams: Vec<SocketAddr>,
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>) -> Forwarder {
        Forwarder { upstreams }
    }

    /// Asks `query` upstream and returns the first answer; `over_tcp` asks over TCP from the
    /// start (the client came over TCP, most likely after a truncated UDP answer).
    pub(crate) async fn forward(
        &self,
        query: &Query,
        recursion_desired: bool,
        over_tcp: bool,
    ) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        for upstream in &self.upstreams {
            let message = upstream_query(query, recursion_desired);
            let attempt = async {
                if !over_tcp {
                    let answer = ask_udp(*upstream, &message).await?;
                    if !answer.truncated() {
                        return Ok(answer);
                    }
                }
                ask_tcp(*upstream, &message).await
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => {
                    tracing::debug!(%upstream, name = %query.name(), %error, "upstream failed")
                }
                Err(_) => tracing::debug!(
                    %upstream,
                    name = %query.name(),
                    error = %AttemptError::Timeout,
                    "upstream failed"
                ),
            }
        }
        Err(ForwardError::AllFailed {
            tried: self.upstreams.len(),
        })
    }
}

fn upstream_query(query: &Query, recursion_desired: bool) -> Message {
    let mut message = Message::new();
    message
        .set_id(rand::random())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(recursion_desired)
        .add_query(query.clone());
    let mut edns = Edns::new();
    edns.set_max_payload(UPSTREAM_UDP_PAYLOAD);
    message.set_edns(edns);
    message
}

/// True if `answer` answers `question` (same id, a response, the same question).
fn matches(question: &Message, answer: &Message) -> bool {
    answer.id() == question.id()
        && answer.message_type() == MessageType::Response
        && answer.queries() == question.queries()
}

async fn ask_udp(upstream: SocketAddr, message: &Message) -> Result<Message, AttemptError> {
    let local: IpAddr = match upstream {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind((local, 0)).await?;
    socket.connect(upstream).await?;
    socket.send(&message.to_vec()?).await?;
    let mut buffer = vec![0u8; 4096];
    loop {
        let len = socket.recv(&mut buffer).await?;
        // Stray or forged datagrams are dropped; the timeout bounds the wait.
        if let Ok(answer) = Message::from_vec(&buffer[..len]) {
            if matches(message, &answer) {
                return Ok(answer);
            }
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, message: &Message) -> Result<Message, AttemptError> {
    let bytes = message.to_vec()?;
    let len = u16::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await?;
    let answer_len = stream.read_u16().await?;
    let mut buffer = vec![0u8; usize::from(answer_len)];
    stream.read_exact(&mut buffer).await?;
    let answer = Message::from_vec(&buffer)?;
    if matches(message, &answer) {
        Ok(answer)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "answer does not match the question",
        )
        .into())
    }
}
