//! [`NetError`]: what failed, on which object, and how to fix it when the cause is known.
//! Messages name the operation; the cause is the error's `source()`, never repeated in
//! `Display`.

use super::IpamError;

/// Errors name the operation and object; `Display` does not repeat the source (see `source()`).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("invalid replica id {0:?}: use 1 to 200 characters of [A-Za-z0-9_.-]")]
    ReplicaId(String),
    #[error("{op}{}", hint.map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Netlink {
        op: String,
        hint: Option<&'static str>,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}{}", hint.map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    System {
        op: String,
        hint: Option<&'static str>,
        #[source]
        source: std::io::Error,
    },
    #[error("nft binary not found: install nftables (apt-get install -y nftables)")]
    NftMissing,
    #[error("{op}: nft said: {stderr}")]
    Nft { op: String, stderr: String },
    #[error("allocate an address for {replica}")]
    Ipam {
        replica: String,
        #[source]
        source: IpamError,
    },
    #[error("internal: {0}")]
    Internal(String),
}

impl NetError {
    pub(crate) fn io(op: String, source: std::io::Error) -> NetError {
        let hint = match source.kind() {
            std::io::ErrorKind::PermissionDenied => Some("run the agent as root"),
            _ => None,
        };
        NetError::System { op, hint, source }
    }

    pub(crate) fn sys(op: String, errno: nix::errno::Errno) -> NetError {
        let hint = match errno {
            nix::errno::Errno::EPERM => {
                Some("run the agent as root: it needs CAP_SYS_ADMIN and CAP_NET_ADMIN")
            }
            _ => None,
        };
        NetError::System {
            op,
            hint,
            source: std::io::Error::from(errno),
        }
    }
}
