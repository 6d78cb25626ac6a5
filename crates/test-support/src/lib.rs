//! Test fixtures shared by Hivemind's test suites. A dev-dependency only: nothing here ships.
//!
//! - [`image`]: small busybox images built from the host's busybox-static, as `docker save`
//!   archives or OCI layout tarballs, so tests never need a registry or the internet.

pub mod image;
