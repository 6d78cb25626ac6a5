//! The Compose Specification reader (SPEC §3). Filled in by the compose work.
