//! Change-log compaction: a background task that keeps the store's history bounded.
//!
//! Without it the change log grows forever (127 MB after 27 minutes of heartbeats). History is
//! what lets a watcher resume from a revision; one that asks for compacted history is told so
//! (`WatchEvent::Compacted`) and re-lists, which is always correct, only slower. So the log
//! keeps enough for reconnects and short outages and no more.

use std::collections::VecDeque;
use std::time::Duration;

use hivemind_store::Store;
use hivemind_types::Kind;
use serde_json::json;

use crate::exec::now_millis;
use crate::exec::replicas::error_chain;
use crate::exec::runner::BackgroundTask;

/// How much history the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At most this many revisions.
    pub revisions: u64,
    /// And nothing older than this.
    pub age: Duration,
}

impl Retention {
    /// 10,000 revisions and 5 minutes: an agent or SSE client that reconnects within a few
    /// minutes (a restart, a network blip) resumes from its revision; anything older re-lists.
    /// At 1,000 nodes reporting every 5 s that is about 50 s of history, so the revision bound
    /// is what holds the log (and the file) small under load, and the age bound when idle.
    pub const DEFAULT: Retention = Retention {
        revisions: 10_000,
        age: Duration::from_secs(5 * 60),
    };
}

/// The revision to compact up to, if any. `samples` are `(unix ms, revision)` observations, oldest
/// first; the newest sample at least `age` old marks what is older than `age`. Pure.
pub fn plan_compaction(
    retention: Retention,
    samples: &VecDeque<(u64, u64)>,
    now_ms: u64,
    current: u64,
    compacted: u64,
) -> Option<u64> {
    let by_count = current.saturating_sub(retention.revisions);
    let cutoff = now_ms.saturating_sub(retention.age.as_millis() as u64);
    let by_age = samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= cutoff)
        .map_or(0, |(_, rev)| *rev);
    let target = by_count.max(by_age).min(current);
    (target > compacted).then_some(target)
}

pub struct CompactionTask {
    store: Store,
    retention: Retention,
    /// `(unix ms, revision)` at each run: the store does not record when a revision committed.
    samples: VecDeque<(u64, u64)>,
    compacted: u64,
    period: Duration,
}

impl CompactionTask {
    /// Often enough that the log overshoots its bounds by at most half a minute of writes.
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);

    pub fn new(store: Store, retention: Retention, period: Duration) -> CompactionTask {
        CompactionTask {
            store,
            retention,
            samples: VecDeque::new(),
            compacted: 0,
            period,
        }
    }

    async fn run(&mut self) -> Result<serde_json::Value, hivemind_store::StoreError> {
        let now = now_millis();
        let current = self.store.revision().await?;
        self.samples.push_back((now, current));
        let planned = plan_compaction(self.retention, &self.samples, now, current, self.compacted);
        if let Some(revision) = planned {
            self.store.compact(revision).await?;
            self.compacted = revision;
        }
        // Samples older than the age bound are needed only up to the newest of them.
        let cutoff = now.saturating_sub(self.retention.age.as_millis() as u64);
        while self.samples.len() > 1 && self.samples[1].0 <= cutoff {
            self.samples.pop_front();
        }
        Ok(json!({ "revision": current, "compacted": self.compacted }))
    }
}

#[async_trait::async_trait]
impl BackgroundTask for CompactionTask {
    fn name(&self) -> &'static str {
        "compaction"
    }

    fn watches(&self, _kind: Kind) -> bool {
        false
    }

    fn period(&self) -> Duration {
        self.period
    }

    async fn activate(&mut self) -> Result<serde_json::Value, String> {
        self.run().await.map_err(|e| error_chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compaction_keeps_the_newer_of_the_count_and_age_bounds() {
        let r = Retention {
            revisions: 100,
            age: Duration::from_secs(60),
        };
        let t = 1_700_000_000_000;
        let samples = VecDeque::from([(t, 10), (t + 30_000, 50), (t + 70_000, 120)]);
        // (now, current, compacted, want)
        let cases = [
            // Young history and few revisions: nothing to do.
            (t + 40_000, 60, 0, None),
            // 60 s after the first sample: what was there then goes.
            (t + 60_000, 60, 0, Some(10)),
            (t + 90_000, 130, 0, Some(50)),
            // Many revisions: the count bound is newer.
            (t + 90_000, 500, 0, Some(400)),
            // Already compacted that far.
            (t + 90_000, 130, 50, None),
            // Never past the head.
            (t + 200_000, 120, 0, Some(120)),
        ];
        for (now, current, compacted, want) in cases {
            assert_eq!(
                plan_compaction(r, &samples, now, current, compacted),
                want,
                "now {now} current {current} compacted {compacted}"
            );
        }
    }

    /// After many writes and a run, the log holds at most `revisions` revisions, and a watcher
    /// from before the compacted point is told to re-list.
    #[tokio::test]
    async fn runs_bound_the_change_log_and_old_watchers_relist() {
        use hivemind_store::{Expect, Op, WatchEvent};
        let store = Store::open_in_memory().unwrap();
        let node = json!({ "name": "n1" });
        for _ in 0..500 {
            store
                .txn(vec![Op::put(Kind::Node, "n1", &node, Expect::Any)])
                .await
                .unwrap();
        }
        let mut old = store.watch(10);
        let retention = Retention {
            revisions: 100,
            age: Duration::from_secs(3600),
        };
        let mut task = CompactionTask::new(store.clone(), retention, Duration::from_secs(1));
        let status = task.activate().await.unwrap();
        assert_eq!(status["compacted"], 400);
        // The watcher had read nothing yet: its history is gone.
        assert_eq!(
            old.next().await,
            Some(WatchEvent::Compacted { compacted: 400 })
        );
        assert_eq!(old.next().await, None);
        // What is kept: exactly the last 100 revisions.
        let mut kept = store.watch(400);
        let mut revisions = Vec::new();
        while revisions.len() < 100 {
            match kept.next().await {
                Some(WatchEvent::Txn { revision, .. }) => revisions.push(revision),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(revisions, (401..=500).collect::<Vec<u64>>());
        assert!(matches!(
            store.watch(399).next().await,
            Some(WatchEvent::Compacted { compacted: 400 })
        ));
    }
}
