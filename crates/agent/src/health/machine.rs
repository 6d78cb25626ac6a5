//! The health of one run of a replica, from the results of its checks: Docker's rules, pure.
//!
//! `Starting` until a check passes; failures inside `start_period` (before the first pass) do
//! not count; `retries` consecutive failures after it make the run `Unhealthy`; a pass resets
//! the streak and makes it `Healthy`. The *reported* health changes only with the status, so
//! that a check that finds what the last one found sends nothing to the server (reports are
//! the expensive path); the agent keeps the live streak and output here.

use std::time::Duration;

use hivemind_types::healthcheck::ResolvedCheck;
use hivemind_types::{Health, HealthStatus};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub passed: bool,
    /// Its output (or the probe's error), already bounded by the prober.
    pub output: String,
    /// When it finished (Unix ms).
    pub at: u64,
}

/// One run's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    /// When the run started (Unix ms): the start period counts from here.
    started_at: u64,
    status: HealthStatus,
    streak: u32,
    /// A check has passed in this run: the start period is over.
    passed_once: bool,
    /// What the report carries: the values of the check that last changed the status.
    reported: Health,
}

impl HealthMachine {
    pub fn new(started_at: u64) -> HealthMachine {
        HealthMachine {
            started_at,
            status: HealthStatus::Starting,
            streak: 0,
            passed_once: false,
            reported: Health {
                status: HealthStatus::Starting,
                failing_streak: 0,
                last_output: String::new(),
                checked_at: None,
            },
        }
    }

    pub fn status(&self) -> HealthStatus {
        self.status
    }

    /// Consecutive failures that counted so far.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The health to report: changes only when the status does.
    pub fn reported(&self) -> &Health {
        &self.reported
    }

    fn in_start_period(&self, check: &ResolvedCheck, now: u64) -> bool {
        !self.passed_once && now.saturating_sub(self.started_at) < millis(check.start_period)
    }

    /// Takes one check's result; returns whether the status changed (a report is due).
    pub fn observe(&mut self, check: &ResolvedCheck, outcome: Outcome) -> bool {
        let before = self.status;
        if outcome.passed {
            self.passed_once = true;
            self.streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !self.in_start_period(check, outcome.at) {
            self.streak = self.streak.saturating_add(1);
            if self.streak >= check.retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        let changed = self.status != before;
        if changed {
            self.reported = Health {
                status: self.status,
                failing_streak: self.streak,
                last_output: outcome.output,
                checked_at: Some(outcome.at),
            };
        }
        changed
    }

    /// How long to wait before the next check, `now` being when the last one finished (or the
    /// run's start): `start_interval` while in the start period, else `interval`.
    pub fn next_delay(&self, check: &ResolvedCheck, now: u64) -> Duration {
        if self.in_start_period(check, now) {
            check.start_interval
        } else {
            check.interval
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hivemind_types::healthcheck::Probe;

    fn check(retries: u32, start_period_ms: u64) -> ResolvedCheck {
        ResolvedCheck {
            probe: Probe::Tcp { port: 1 },
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(1),
            retries,
            start_period: Duration::from_millis(start_period_ms),
            start_interval: Duration::from_secs(1),
        }
    }

    fn run(m: &mut HealthMachine, c: &ResolvedCheck, results: &[(u64, bool)]) -> Vec<bool> {
        results
            .iter()
            .map(|(at, passed)| {
                m.observe(
                    c,
                    Outcome {
                        passed: *passed,
                        output: format!("check at {at}"),
                        at: *at,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn starting_until_the_first_pass_then_unhealthy_after_retries_failures() {
        let c = check(3, 0);
        let mut m = HealthMachine::new(0);
        assert_eq!(m.status(), HealthStatus::Starting);
        let changes = run(&mut m, &c, &[(10, true), (20, false), (30, false)]);
        assert_eq!(changes, [true, false, false]);
        assert_eq!((m.status(), m.streak()), (HealthStatus::Healthy, 2));
        // The report still says what the passing check found: failures below `retries` are
        // not worth a report.
        assert_eq!(m.reported().failing_streak, 0);
        assert_eq!(m.reported().last_output, "check at 10");
        assert!(run(&mut m, &c, &[(40, false)])[0]);
        assert_eq!(m.status(), HealthStatus::Unhealthy);
        assert_eq!(
            m.reported(),
            &Health {
                status: HealthStatus::Unhealthy,
                failing_streak: 3,
                last_output: "check at 40".into(),
                checked_at: Some(40),
            }
        );
    }

    #[test]
    fn a_pass_resets_the_streak() {
        let c = check(2, 0);
        let mut m = HealthMachine::new(0);
        run(&mut m, &c, &[(1, true), (2, false), (3, true), (4, false)]);
        assert_eq!((m.status(), m.streak()), (HealthStatus::Healthy, 1));
        run(&mut m, &c, &[(5, false)]);
        assert_eq!(m.status(), HealthStatus::Unhealthy);
        // A pass after that makes it healthy again (the agent restarts it before, usually).
        assert!(run(&mut m, &c, &[(6, true)])[0]);
        assert_eq!((m.status(), m.streak()), (HealthStatus::Healthy, 0));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count_until_it_ends() {
        let c = check(1, 5_000);
        let mut m = HealthMachine::new(1_000);
        assert_eq!(m.next_delay(&c, 1_000), Duration::from_secs(1));
        run(&mut m, &c, &[(2_000, false), (5_999, false)]);
        assert_eq!((m.status(), m.streak()), (HealthStatus::Starting, 0));
        // The period is over at 6 000: the next failure counts, and one is `retries`.
        assert_eq!(m.next_delay(&c, 6_000), Duration::from_secs(10));
        assert!(run(&mut m, &c, &[(6_000, false)])[0]);
        assert_eq!(m.status(), HealthStatus::Unhealthy);
    }

    #[test]
    fn a_pass_ends_the_start_period_early() {
        let c = check(1, 60_000);
        let mut m = HealthMachine::new(0);
        run(&mut m, &c, &[(1_000, true)]);
        assert_eq!(m.next_delay(&c, 1_000), Duration::from_secs(10));
        assert!(run(&mut m, &c, &[(2_000, false)])[0]);
        assert_eq!(m.status(), HealthStatus::Unhealthy);
    }

    #[test]
    fn never_passing_after_the_start_period_is_unhealthy_from_starting() {
        let c = check(2, 0);
        let mut m = HealthMachine::new(0);
        assert_eq!(run(&mut m, &c, &[(1, false), (2, false)]), [false, true]);
        assert_eq!(m.reported().status, HealthStatus::Unhealthy);
    }
}
