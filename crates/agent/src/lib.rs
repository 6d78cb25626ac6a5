//! The agent: runs on every node and makes the node's containers match its assignment.
//!
//! **API boundary:** the agent reaches the server only through `hivemind-client`, never the
//! store or the controllers, so the same code runs in `hivemind up` (one process) and on a
//! remote node. Effects sit behind traits so the planner in `converge::plan` is tested with data,
//! the converge loop with fakes, and the system tests use real containerd: the container runtime
//! (`runtime::ContainerRuntime`; `runtime::fake::FakeRuntime`), the data plane
//! (`converge::dataplane::DataPlane`; `converge::fake::FakeDataPlane`) and the server
//! (`converge::server::ServerLink`; `converge::fake::FakeServer`). The fakes are built for the
//! crate's tests and, with the `fake` feature, for other crates.

pub mod converge;
pub mod health;
mod secrets;
pub mod serve;
pub mod volumes;

pub use converge::{run_agent, AgentConfig};
