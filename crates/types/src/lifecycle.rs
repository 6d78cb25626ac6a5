//! The lifecycle vocabulary of a service: what it waits for before its replicas are created
//! (Compose `depends_on`) and whether the user stopped it (`hivemind stop`).
//!
//! Only shapes live here; the control plane's `plan::depends` decides with them, and the
//! Compose reader (`compose::depends_on`) fills them.

use serde::{Deserialize, Serialize};

/// One entry of a service's `depends_on`, keyed by the dependency's DNS name in
/// `ServiceSpec::depends_on`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    #[serde(default)]
    pub condition: DependencyCondition,
    /// `false`: a dependency that is missing or failed is a warning, not a block (Compose's
    /// `required`, default `true`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub required: bool,
    /// Replace this service's replicas when the dependency's are replaced (Compose's
    /// `restart: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restart: bool,
}

impl Default for Dependency {
    fn default() -> Self {
        Dependency {
            condition: DependencyCondition::default(),
            required: true,
            restart: false,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What a dependency's replicas must have reached before the dependent's are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Every replica running (`service_started`, and the list form).
    #[default]
    ServiceStarted,
    /// Every replica running with a healthy check, or no check (`service_healthy`).
    ServiceHealthy,
    /// Every replica exited with code 0 (`service_completed_successfully`): migrations.
    ServiceCompletedSuccessfully,
}

impl DependencyCondition {
    /// The Compose spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DependencyCondition::ServiceStarted => "service_started",
            DependencyCondition::ServiceHealthy => "service_healthy",
            DependencyCondition::ServiceCompletedSuccessfully => "service_completed_successfully",
        }
    }
}
