//! The node's data plane: container networking (`net`: bridge, IPAM, netns, nftables), the node
//! DNS server (`dns`) and the ingress proxy for published ports (`ingress`).
//!
//! **Boundary:** this crate depends on no hivemind crate. It takes plain inputs (addresses,
//! names, [`Proto`]) and the agent converts its own types at the edge, so the data plane can be
//! built, tested and reasoned about without the orchestrator's vocabulary.

pub mod dns;
pub mod ingress;
pub mod net;

use serde::{Deserialize, Serialize};

/// A transport protocol of a VIP rule or a published port. Serialized like the Compose port's
/// `hivemind_types::PortProtocol` (lowercase), which the agent maps onto it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The network a service is on when it lists none (the same name as
/// `hivemind_types::DEFAULT_NETWORK`; the agent's tests check that they agree).
pub const DEFAULT_NETWORK: &str = "default";
