//! What a replica's health check last found, as the agent reports it.
//!
//! Shared by the agent (which runs the checks), the control plane (endpoints hold only healthy
//! replicas; `depends_on: condition: service_healthy` waits for it) and `ps`.

use serde::{Deserialize, Serialize};

/// A replica's health, like Docker's `State.Health.Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    /// In the start period, or no check has passed yet.
    Starting,
    Healthy,
    /// `retries` consecutive checks failed.
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// The health of one replica that has a check (replicas without one carry none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    /// Consecutive failed checks (reset by a passing one).
    #[serde(default)]
    pub failing_streak: u32,
    /// The last check's output (stdout and stderr, or the probe's error), bounded by the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_output: String,
    /// When the last check finished (Unix ms); `None` before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<u64>,
}

impl Health {
    /// Output kept from a check, like Docker's 4 kB.
    pub const MAX_OUTPUT: usize = 4096;
}
