//! Test fixtures shared by Hivemind's test suites. A dev-dependency only: nothing here ships.
//!
//! - [`image`]: small busybox images built from the host's busybox-static, as `docker save`
//!   archives or OCI layout tarballs, so tests never need a registry or the internet.
//! - [`registry`]: a real local registry (`docker-registry`) to push them to and pull from.
//! - [`sim`]: simulated nodes that load a real server like a cluster (`hivemind-sim`).
//! - [`probe`]: the time one replica's change takes to reach every node (`hivemind-sim --probe`).
//! - [`http`]: a raw HTTP/1.1 request, for hostile paths an HTTP client would not send.
//! - [`server`]: a real `hivemind server` process, measured from outside (RSS, `/healthz`).
//! - [`containerd`]: `ctr` listings and the emptying of a test's containerd namespace.

pub mod containerd;
pub mod http;
pub mod image;
pub mod log_driver;
pub mod probe;
pub mod registry;
pub mod server;
pub mod sim;
