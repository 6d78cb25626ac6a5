//! The control plane's controllers: they read desired state from the store and write the objects
//! that converge it (today: replicas and their placement; node liveness).
//!
//! Each controller is split in two (SPEC §6, STYLE "Controllers"):
//! - `plan/`: pure, synchronous functions from (desired, observed) to a plan. No I/O, no clock
//!   (time comes in as an argument), table-tested.
//! - `exec/`: the effects, which turn a plan into one store transaction, and the background-task
//!   runner that drives every controller on a timer and whenever the objects it watches change.
//!
//! **Invariant:** controllers are not told why they run. A run reads everything afresh, so a
//! failed or skipped run is simply repaired by the next one.

pub mod exec;
pub mod plan;

pub use exec::runner::{spawn_controllers, ControlConfig, ControllerStatus, Controllers};
