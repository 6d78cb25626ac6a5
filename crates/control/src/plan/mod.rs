//! Pure planners. Each takes the desired and observed objects and returns what to write.

pub mod allocate;
pub mod depends;
pub mod endpoints;
pub mod events;
pub mod nodes;
pub mod replicas;
pub mod schedule;
pub mod volumes;
