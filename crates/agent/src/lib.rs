//! The agent: runs on every node and makes the node's containers match its assignment.
//!
//! **API boundary:** the agent reaches the server only through `hivemind-client`, never the
//! store or the controllers, so the same code runs in `hivemind up` (one process) and on a
//! remote node. Effects sit behind traits (`runtime::ContainerRuntime`) so the planner in
//! `converge::plan` is tested with data and the system tests use real containerd.

pub mod converge;
pub mod dns;
pub mod ingress;
pub mod logs;
pub mod net;
pub mod runtime;
pub mod serve;

pub use converge::{run_agent, AgentConfig};
