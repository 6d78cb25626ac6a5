//! One module per group of subcommands.

pub(crate) mod deploy;
pub(crate) mod down;
pub(crate) mod events;
pub(crate) mod exec;
pub(crate) mod image;
pub(crate) mod lifecycle;
pub(crate) mod logs;
pub(crate) mod query;
pub(crate) mod registry;
pub(crate) mod secret;
pub(crate) mod token;
pub(crate) mod up;
pub(crate) mod volume;
