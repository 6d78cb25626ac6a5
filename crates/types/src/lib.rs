//! Hivemind's vocabulary: the objects the store holds, the specs users write, and the Compose model.
//!
//! This crate does no I/O and knows nothing of tokio, SQL or HTTP (like kube-core). Every other
//! crate speaks in these types; a change here is an API change for all of them.

pub mod assignment_delta;
pub mod compose;
pub mod endpoints;
pub mod event;
pub mod exec;
pub mod health;
pub mod healthcheck;
pub mod id;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod network;
pub mod object;
pub mod routing;
pub mod secret;
pub mod spec;
pub mod token;
pub mod util;
pub mod volume;

pub use assignment_delta::EndpointChange;
pub use endpoints::{AddressClaim, AddressPool, EndpointReplica, Endpoints};
pub use event::{Event, EventObject, EventType};
pub use health::{Health, HealthStatus};
pub use lifecycle::{Dependency, DependencyCondition};
pub use limits::{ExtraHost, Resources, TmpfsMount, Ulimit};
pub use network::ClusterNetwork;
pub use object::{
    App, Assignment, Endpoint, ExitRecord, FailureRecord, Kind, Meta, Node, NodeNetwork,
    NodeProblem, NodeReport, NodeState, ObservedReplica, Replica, ReplicaState, Service,
    ServiceEndpoints,
};
pub use routing::Routing;
pub use spec::{
    NetworkAttachment, PortProtocol, PortSpec, RestartCondition, RestartPolicy, ServiceMode,
    ServiceSpec, TooManyReplicas, DEFAULT_NETWORK, MAX_REPLICAS,
};
pub use token::{constant_time_eq, Token, TokenRole};
pub use util::{error_chain, now_millis};
pub use volume::{MountSource, NamedVolume, Volume, VolumeMount};
